//! Fixed-performance mode (`perf_mode = "fixed"`): Android 11+'s power HAL mode that holds the
//! clocks at a sustainable level (`cmd power set-fixed-performance-mode-enabled true`), on for
//! one cell and restored when it ends: the guard's drop, or [`restore_if_on`] when the agent
//! exits because its controller is gone. A killed agent cannot; the host restores the mode
//! before and after every agent run of a sweep that has fixed cells.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process switched the mode on and has not switched it off: what
/// [`restore_if_on`] undoes on the way out of a `process::exit`, which runs no destructor.
static ON: AtomicBool = AtomicBool::new(false);

/// The command line that switches the mode.
pub const COMMAND: [&str; 3] = ["cmd", "power", "set-fixed-performance-mode-enabled"];

/// Runs `cmd power set-fixed-performance-mode-enabled <on>`; the reason when the device
/// cannot (no `cmd`, an Android before 11, a refusal).
pub fn set(on: bool) -> Result<(), String> {
    let out = Command::new(COMMAND[0])
        .args(&COMMAND[1..])
        .arg(if on { "true" } else { "false" })
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "fixed-performance mode needs Android 11+'s `cmd power`, which this device does \
                 not have ({e})"
            )
        })?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = said.trim();
    // `cmd` answers an unknown command or service with text, sometimes with status 0.
    let refused = [
        "Unknown",
        "Can't find service",
        "Error",
        "Exception",
        "not supported",
    ]
    .iter()
    .any(|w| said.contains(w));
    if out.status.success() && !refused {
        Ok(())
    } else {
        Err(format!(
            "fixed-performance mode: `{} {}` was refused ({}): the device does not support it \
             (Android 11+ with a power HAL that has the mode)",
            COMMAND.join(" "),
            on,
            if said.is_empty() {
                out.status.to_string()
            } else {
                said.lines().next().unwrap_or_default().to_owned()
            }
        ))
    }
}

/// The mode, on while this lives.
#[derive(Debug)]
pub struct FixedPerformance(());

impl FixedPerformance {
    /// Switches the mode on.
    pub fn enable() -> Result<Self, String> {
        set(true)?;
        ON.store(true, Ordering::SeqCst);
        Ok(Self(()))
    }
}

impl Drop for FixedPerformance {
    fn drop(&mut self) {
        ON.store(false, Ordering::SeqCst);
        match set(false) {
            // The clocks take a moment to follow; the next cell should not start under the
            // mode's caps.
            Ok(()) => std::thread::sleep(std::time::Duration::from_millis(250)),
            Err(e) => eprintln!("socbench-agent: restoring the default performance mode: {e}"),
        }
    }
}

/// Switches the mode off if this process left it on: for exits that skip the guard's drop
/// (the agent's `exit_now` when its controller is gone).
pub fn restore_if_on() {
    if ON.swap(false, Ordering::SeqCst) {
        let _ = set(false);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_device_without_cmd_power_is_a_reason_not_a_panic() {
        // This host has no Android `cmd` (or one that does not know the power service).
        if std::process::Command::new("cmd").output().is_ok() {
            return;
        }
        let e = super::set(true).unwrap_err();
        assert!(e.contains("Android 11+"), "{e}");
    }
}
