//! The controller's side of agent supervision (the agent's side is `socbench_agent::supervise`):
//! one agent per device, started only after a stale one is stopped; a heartbeat the agent
//! watches; a silence deadline after which the agent is hung, killed by its pid and its cell
//! failed; and the agent's end classified for the runner ([`AgentEnd`]).

use super::Target;
use super::deploy::{AgentCmd, run_agent};
use socbench_devices::{CommandOutput, Device, DeviceError, Watch};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an agent may go without progress (any event but a sensor sample) before it is
/// declared hung.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HangTimeout {
    /// This long (`--hang-timeout`), plus the silence allowed by design: the longest waits in
    /// the cool-down gate and for the battery (`--require-battery`), a paced repetition's gaps.
    Fixed(Duration),
    /// Five times the longest repetition seen on the device so far, plus the cool-down gate's
    /// longest wait, and never under [`AUTO_FLOOR`] (loading a model and scoring the quality
    /// text come before any repetition).
    Auto,
}

/// The shortest automatic silence limit.
pub const AUTO_FLOOR: Duration = Duration::from_secs(300);

impl HangTimeout {
    /// The silence limit now; `wait_s` is the longest the agent may wait before a cell
    /// (cool-down gate and battery).
    pub fn limit(self, longest_rep_s: f64, wait_s: f64) -> Duration {
        let wait = Duration::from_secs_f64(wait_s.max(0.0));
        match self {
            Self::Fixed(d) => d + wait,
            Self::Auto => {
                AUTO_FLOOR.max(Duration::from_secs_f64(5.0 * longest_rep_s.max(0.0))) + wait
            }
        }
    }
}

/// How an agent run ended.
#[derive(Debug)]
pub enum AgentEnd {
    /// The agent exited by itself (any status).
    Exited(CommandOutput),
    /// It showed no progress for `silent` and was killed.
    Hung {
        /// How long it had been silent.
        silent: Duration,
    },
    /// The device or the link failed.
    Device(DeviceError),
}

/// Touches the heartbeat file while the agent runs, from its own thread and (for a phone) its
/// own device connection, so a slow command on the main link never starves it.
#[derive(Debug)]
pub struct Heartbeat {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// How often the controller touches the heartbeat, and how long the agent waits without one:
/// the local host is cheap to touch; a phone costs one shell command per touch.
pub fn heartbeat_timing(local: bool) -> (Duration, Duration) {
    if local {
        (Duration::from_secs(1), Duration::from_secs(15))
    } else {
        (Duration::from_secs(10), Duration::from_secs(90))
    }
}

impl Heartbeat {
    /// Starts touching `file` (a path on the device) every `every`.
    pub fn start(target: &Target, file: String, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let target = target.clone();
        let touch = move |dev: &mut Option<Box<dyn Device>>| match &target {
            Target::Local => {
                let _ = std::fs::write(&file, b"");
            }
            Target::Adb { .. } => {
                if dev.is_none() {
                    *dev = target.open().ok();
                }
                if let Some(d) = dev.as_mut()
                    && d.run(&["touch", &file], Duration::from_secs(10)).is_err()
                {
                    // Reconnect on the next beat.
                    *dev = None;
                }
            }
        };
        let mut dev = None;
        touch(&mut dev);
        let handle = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= every {
                    touch(&mut dev);
                    last = Instant::now();
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What `stop-stale` found on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// No live agent held the device.
    None,
    /// It stopped one left by an earlier run (the message says which).
    Stopped(String),
    /// A live agent whose controller still beats holds the device: another run is measuring.
    Busy(String),
}

/// Stops an agent left running on the device by an earlier run (the lock's holder, by its pid
/// and start time, once its controller's heartbeat has gone quiet; that can take the heartbeat
/// timeout). An agent without `stop-stale` (an older build) reports nothing.
pub fn stop_stale(dev: &mut Box<dyn Device>, agent: &AgentCmd, lock: &str) -> Stale {
    let Ok(out) = run_agent(dev, agent, &["stop-stale", lock], Duration::from_secs(150)) else {
        return Stale::None;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Stale::None;
    };
    if let Some(pid) = v["busy"].as_u64() {
        return Stale::Busy(format!(
            "another socbench run's agent (pid {pid}) is measuring on this device; two would \
             measure under each other's load. Run again when it is done"
        ));
    }
    if let Some(e) = v["error"].as_str() {
        return Stale::Busy(format!("a stale agent could not be stopped: {e}"));
    }
    match v["stopped"].as_u64() {
        Some(pid) => Stale::Stopped(format!(
            "stopped a stale agent (pid {pid}, {}) left running by an earlier run",
            v["signal"].as_str().unwrap_or("?")
        )),
        None => Stale::None,
    }
}

/// What the runner knows of a running agent's liveness after each of its lines.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// When it last showed progress.
    pub last_progress: Instant,
    /// How long it may stay silent now.
    pub limit: Duration,
    /// Its pid on the device, once it said hello.
    pub pid: Option<u32>,
}

/// Runs the agent's plan, feeding every line to `on_line`, and ends it when it stays silent
/// past its limit (`first_limit` until it says anything, then what `on_line` answers) or
/// runs longer than `cap` in all (`limits = (first_limit, cap)`). The
/// local host kills a hung agent's whole process group; on a device (`remote`) the agent is
/// killed by its pid (from its `hello`), as closing the stream may not end it.
pub fn run_plan(
    dev: &mut Box<dyn Device>,
    agent: &AgentCmd,
    plan_arg: &str,
    remote: bool,
    (first_limit, cap): (Duration, Duration),
    on_line: &mut dyn FnMut(&str) -> Liveness,
) -> AgentEnd {
    let argv = agent.with(&["run", plan_arg]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut silent_for = Duration::ZERO;
    let mut live = Liveness {
        last_progress: Instant::now(),
        limit: first_limit,
        pid: None,
    };
    let result = dev.run_watched(&argv, cap, &mut |line| {
        if let Some(l) = line {
            live = on_line(l);
        }
        silent_for = live.last_progress.elapsed();
        if silent_for > live.limit {
            Watch::Stop
        } else {
            Watch::Continue
        }
    });
    match result {
        Ok(out) => AgentEnd::Exited(out),
        Err(DeviceError::Stopped { .. }) => {
            if let (true, Some(pid)) = (remote, live.pid) {
                // A local agent died with its process group (its pid may be reused by now);
                // a phone's needs a kill.
                let _ = dev.run(&["kill", "-9", &pid.to_string()], Duration::from_secs(10));
            }
            AgentEnd::Hung { silent: silent_for }
        }
        Err(e) => AgentEnd::Device(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_silence_limit_follows_the_longest_repetition() {
        let auto = HangTimeout::Auto;
        assert_eq!(auto.limit(0.0, 0.0), AUTO_FLOOR);
        assert_eq!(auto.limit(100.0, 20.0), Duration::from_secs(520));
        let fixed = HangTimeout::Fixed(Duration::from_secs(3));
        // Waiting to cool down or for the battery is silent by design, under a fixed limit too.
        assert_eq!(fixed.limit(100.0, 20.0), Duration::from_secs(23));
        assert_eq!(fixed.limit(100.0, 0.0), Duration::from_secs(3));
    }
}
