//! The agent's side of supervision: exactly one measuring agent per device, and no agent
//! outliving the controller that started it.
//!
//! - **Lock**: `run` holds a lock file on the device (`pid start-time`). A live holder (that pid
//!   running, with that start time) means another agent is measuring: this one refuses to run.
//!   A holder that is gone (killed with `-9`, device rebooted) is stale and replaced.
//!   [`stop_stale`] (`socbench-agent stop-stale LOCK`) is how the controller ends a holder left
//!   by an earlier run before it starts a new one: by the pid in the lock, checked against its
//!   start time, never by name.
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

/// Removes the lock (if held) and exits with `code` after one line on stderr.
pub fn exit_now(code: u8, why: &str) -> ! {
    eprintln!("socbench-agent: {why}; exiting");
    release();
    std::process::exit(i32::from(code));
}

/// Removes the lock this process holds.
pub fn release() {
    if let Ok(mut held) = HELD.lock()
        && let Some(p) = held.take()
        && read_lock(&p).is_some_and(|(pid, _)| pid == std::process::id())
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

fn read_lock(path: &Path) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The live holder of `path`, if any: `(pid, start time)`.
pub fn live_holder(path: &Path) -> Option<(u32, u64)> {
    let (pid, start) = read_lock(path)?;
    (start_time(pid) == Some(start)).then_some((pid, start))
}

/// Takes the lock at `path` for this process, replacing a stale one. Errors when a live agent
/// holds it.
pub fn acquire(path: &Path) -> Result<(), String> {
    if let Some((pid, _)) = live_holder(path)
        && pid != std::process::id()
    {
        return Err(format!(
            "another socbench agent (pid {pid}) is measuring on this device ({}); two would \
             measure under each other's load. Stop that run first, or let socbench run stop it \
             (`socbench-agent stop-stale {}`)",
            path.display(),
            path.display()
        ));
    }
    let me = std::process::id();
    let start = start_time(me).ok_or("cannot read this process's start time from /proc")?;
    if let Some(d) = path.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    // Written beside it and renamed: a reader never sees half a lock.
    let tmp = path.with_extension(format!("tmp{me}"));
    std::fs::write(&tmp, format!("{me} {start}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(mut held) = HELD.lock() {
        *held = Some(path.to_path_buf());
    }
    Ok(())
}

/// Ends the agent holding `path`, if one is alive: `SIGTERM`, up to 3 s, then `SIGKILL`, by
/// the pid in the lock after checking its start time. Returns what it did, as JSON.
pub fn stop_stale(path: &Path) -> serde_json::Value {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let Some((pid, start)) = live_holder(path) else {
        let _ = std::fs::remove_file(path);
        return serde_json::json!({"stopped": null});
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
        // A live process that is not this one holds it.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let start = start_time(other.id()).unwrap();
        std::fs::write(&lock, format!("{} {start}\n", other.id())).unwrap();
        let e = acquire(&lock).unwrap_err();
        assert!(e.contains(&other.id().to_string()), "{e}");
        // A wrong start time is a reused pid, not the agent: stale.
        std::fs::write(&lock, format!("{} {}\n", other.id(), start + 1)).unwrap();
        assert_eq!(live_holder(&lock), None);
        // stop-stale ends the live holder by its pid.
        std::fs::write(&lock, format!("{} {start}\n", other.id())).unwrap();
        let v = stop_stale(&lock);
        assert_eq!(v["stopped"].as_u64(), Some(u64::from(other.id())), "{v}");
        let status = other.wait().unwrap();
        assert!(!status.success());
        assert!(!lock.exists());
        acquire(&lock).unwrap();
        assert_eq!(live_holder(&lock).map(|h| h.0), Some(std::process::id()));
        release();
        assert!(!lock.exists());
    }
}
