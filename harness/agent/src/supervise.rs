//! The agent's side of supervision: exactly one measuring agent per device, and no agent
//! outliving the controller that started it.
//!
//! - **Lock**: `run` holds a lock file on the device (`pid start-time`). A live holder (that pid
//!   running, with that start time) means another agent is measuring: this one refuses to run.
//!   A holder that is gone (killed with `-9`, device rebooted) is stale and replaced.
//!   [`stop_stale`] (`socbench-agent stop-stale LOCK`) is how the controller ends a holder left
//!   by an earlier run before it starts a new one: one whose controller's heartbeat has gone
//!   quiet, by the pid in the lock, checked against its start time, never by name.
//! - **Parent**: started by a local controller (`SOCBENCH_CONTROLLER_PID` set), the agent asks
//!   the kernel for `SIGKILL` when its parent dies (`PR_SET_PDEATHSIG`) and exits at once if
//!   the parent is already another process.
//! - **Event stream**: the first failed write to stdout (`EPIPE`: the controller or the link
//!   is gone) ends the agent ([`exit_now`]).
//! - **Heartbeat**: with a heartbeat file in the plan, a watchdog thread ends the agent when
//!   the controller has not touched it for the plan's timeout.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// The lock this process holds, removed by [`exit_now`] and [`release`].
static HELD: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Exit status when the controller is gone (stream closed, heartbeat missing, parent died).
pub const EXIT_CONTROLLER_GONE: u8 = 3;

/// Removes the lock (if held) and exits with `code` after one line on stderr (which may be
/// closed too: a failed write must not turn into a panic that leaves the agent running).
pub fn exit_now(code: u8, why: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "socbench-agent: {why}; exiting");
    crate::perf::restore_if_on();
    release();
    std::process::exit(i32::from(code));
}

/// Removes the lock this process holds.
pub fn release() {
    if let Ok(mut held) = HELD.lock()
        && let Some(p) = held.take()
        && read_lock(&p).is_some_and(|l| l.pid == std::process::id())
    {
        let _ = std::fs::remove_file(p);
    }
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/PID/stat`): with the
/// pid, it names one process even after the pid is reused.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); a zombie has finished.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// What a lock file says: the holder's pid and start time, and the heartbeat it watches (file
/// and timeout in seconds), when it has one.
#[derive(Debug, Clone, PartialEq)]
struct Lock {
    pid: u32,
    start: u64,
    heartbeat: Option<(f64, PathBuf)>,
}

fn read_lock(path: &Path) -> Option<Lock> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.splitn(4, ' ');
    let pid = it.next()?.trim().parse().ok()?;
    let start = it.next()?.trim().parse().ok()?;
    let heartbeat = match (it.next(), it.next()) {
        (Some(t), Some(f)) => t
            .parse()
            .ok()
            .map(|t| (t, PathBuf::from(f.trim_end_matches('\n')))),
        _ => None,
    };
    Some(Lock {
        pid,
        start,
        heartbeat,
    })
}

/// The live holder of `path`, if any: `(pid, start time)`.
pub fn live_holder(path: &Path) -> Option<(u32, u64)> {
    let l = read_lock(path)?;
    (start_time(l.pid) == Some(l.start)).then_some((l.pid, l.start))
}

/// Whether a heartbeat file was touched within `timeout_s`.
fn fresh(file: &Path, timeout_s: f64) -> bool {
    std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .is_some_and(|age| age.as_secs_f64() <= timeout_s)
}

/// Takes the lock at `path` for this process (created exclusively, so two agents starting at
/// once cannot both take it), replacing a stale one, and records the heartbeat it watches.
/// Errors when a live agent holds it.
pub fn acquire(path: &Path, heartbeat: Option<&(PathBuf, Duration)>) -> Result<(), String> {
    let me = std::process::id();
    let start = start_time(me).ok_or("cannot read this process's start time from /proc")?;
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let text = match heartbeat {
        Some((file, timeout)) => format!(
            "{me} {start} {} {}\n",
            timeout.as_secs_f64(),
            file.display()
        ),
        None => format!("{me} {start}\n"),
    };
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(mut f) => {
                use std::io::Write;
                f.write_all(text.as_bytes())
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                if let Ok(mut held) = HELD.lock() {
                    *held = Some(path.to_path_buf());
                }
                return Ok(());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if let Some((pid, _)) = live_holder(path) {
                    return Err(format!(
                        "another socbench agent (pid {pid}) is measuring on this device ({}); \
                         two would measure under each other's load. Let that run finish, or \
                         stop it",
                        path.display()
                    ));
                }
                // Its holder is gone (killed, or the device rebooted): stale.
                let _ = std::fs::remove_file(path);
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Err(format!("{}: could not take the lock", path.display()))
}

/// Ends the agent holding `path` when it is stale: alive, but its controller's heartbeat is
/// older than its timeout (or it watches none). An agent whose heartbeat is fresh belongs to a
/// live controller: it is waited for (up to its timeout and 5 s), then left alone and
/// reported as `busy`. Ending is `SIGTERM`, up to 3 s, then `SIGKILL`, by the pid in the lock
/// after checking its start time, never by name. Returns what it did, as JSON.
pub fn stop_stale(path: &Path) -> serde_json::Value {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let t0 = std::time::Instant::now();
    let (pid, start) = loop {
        let Some(lock) = read_lock(path).filter(|l| start_time(l.pid) == Some(l.start)) else {
            let _ = std::fs::remove_file(path);
            return serde_json::json!({"stopped": null});
        };
        match &lock.heartbeat {
            Some((timeout, file)) if fresh(file, *timeout) => {
                if t0.elapsed().as_secs_f64() > timeout + 5.0 {
                    return serde_json::json!({"stopped": null, "busy": lock.pid});
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            _ => break (lock.pid, lock.start),
        }
    };
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, Signal::SIGTERM);
    let t0 = std::time::Instant::now();
    let mut signal = "SIGTERM";
    while start_time(pid) == Some(start) {
        if t0.elapsed() > Duration::from_secs(3) && signal == "SIGTERM" {
            let _ = kill(target, Signal::SIGKILL);
            signal = "SIGKILL";
        }
        if t0.elapsed() > Duration::from_secs(10) {
            return serde_json::json!({"stopped": null, "error": format!("pid {pid} did not end after SIGKILL")});
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(path);
    serde_json::json!({"stopped": pid, "signal": signal})
}

/// Under a local controller (`SOCBENCH_CONTROLLER_PID`): die with it.
pub fn bind_to_parent() {
    let Some(expected) = std::env::var("SOCBENCH_CONTROLLER_PID")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    }
    // The parent may have died before the request took effect.
    if nix::unistd::getppid().as_raw() != expected {
        exit_now(
            EXIT_CONTROLLER_GONE,
            "the controller that started this agent is gone",
        );
    }
}

/// Starts the heartbeat watchdog: the agent exits when `file` has not been touched for
/// `timeout` (counted from now when it does not exist yet).
pub fn watch_heartbeat(file: PathBuf, timeout: Duration) {
    let started = SystemTime::now();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let last = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .map_or(started, |m| m.max(started));
            let silent = SystemTime::now()
                .duration_since(last)
                .unwrap_or(Duration::ZERO);
            if silent > timeout {
                exit_now(
                    EXIT_CONTROLLER_GONE,
                    &format!(
                        "no heartbeat from the controller for {:.0} s ({})",
                        silent.as_secs_f64(),
                        file.display()
                    ),
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_lock_is_refused_and_a_dead_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("agent.lock");
        let beat = dir.path().join("heartbeat");
        // A live process that is not this one holds it, its controller's heartbeat fresh.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let start = start_time(other.id()).unwrap();
        std::fs::write(&beat, b"").unwrap();
        let held = format!("{} {start} 1 {}\n", other.id(), beat.display());
        std::fs::write(&lock, &held).unwrap();
        let e = acquire(&lock, None).unwrap_err();
        assert!(e.contains(&other.id().to_string()), "{e}");
        // A wrong start time is a reused pid, not the agent: stale.
        std::fs::write(&lock, format!("{} {}\n", other.id(), start + 1)).unwrap();
        assert_eq!(live_holder(&lock), None);
        // stop-stale waits while the heartbeat is fresh, then ends the holder by its pid once
        // it is not (here: one second after the last touch).
        std::fs::write(&lock, &held).unwrap();
        let t0 = std::time::Instant::now();
        let v = stop_stale(&lock);
        assert_eq!(v["stopped"].as_u64(), Some(u64::from(other.id())), "{v}");
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t0.elapsed()
        );
        let status = other.wait().unwrap();
        assert!(!status.success());
        assert!(!lock.exists());
        acquire(&lock, Some(&(beat.clone(), Duration::from_secs(9)))).unwrap();
        let l = read_lock(&lock).unwrap();
        assert_eq!(l.pid, std::process::id());
        assert_eq!(l.heartbeat, Some((9.0, beat)));
        release();
        assert!(!lock.exists());
    }

    #[test]
    fn an_agent_with_a_live_controller_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("agent.lock");
        let beat = dir.path().join("heartbeat");
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let start = start_time(other.id()).unwrap();
        std::fs::write(
            &lock,
            format!("{} {start} 1 {}\n", other.id(), beat.display()),
        )
        .unwrap();
        // Its controller keeps touching the heartbeat (from before stop-stale looks).
        std::fs::write(&beat, b"").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let toucher = {
            let (stop, beat) = (std::sync::Arc::clone(&stop), beat.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::write(&beat, b"");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        let v = stop_stale(&lock);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        toucher.join().unwrap();
        assert_eq!(v["busy"].as_u64(), Some(u64::from(other.id())), "{v}");
        assert!(start_time(other.id()).is_some(), "left running");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
