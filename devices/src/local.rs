//! The local host as a [`Device`]: the same operations on this machine, without ADB.

use crate::device::{CommandOutput, Device, PushOutcome, WATCH_TICK, Watch, local_sha256};
use crate::error::{DeviceError, Result};
use crate::info::{DeviceInfo, DeviceKind};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// This machine.
#[derive(Debug, Default, Clone)]
pub struct LocalHost;

impl LocalHost {
    fn io(path: &str, source: std::io::Error) -> DeviceError {
        DeviceError::LocalIo {
            path: path.to_owned(),
            source,
        }
    }
}

/// Kills `child`, the leader of a process group of its own, and everything in that group.
fn kill_tree(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a child (started as the leader of a new process group) to completion with a timeout,
/// streaming stdout lines to `watch` (and `None` every tick); a timeout or a stop kills the
/// whole group.
fn run_child(
    serial: &str,
    mut cmd: Command,
    what: &str,
    timeout: Duration,
    watch: &mut dyn FnMut(Option<&str>) -> Watch,
) -> Result<CommandOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| LocalHost::io(what, e))?;
    let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(LocalHost::io(what, std::io::Error::other("no pipes")));
    };
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let out_thread = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut stdout_all = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = match rx.recv_timeout(left.min(WATCH_TICK)) {
            Ok(line) => {
                let text = String::from_utf8_lossy(&line);
                let next = watch(Some(text.trim_end_matches(['\n', '\r'])));
                stdout_all.extend_from_slice(&line);
                next
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    kill_tree(&mut child);
                    return Err(DeviceError::Timeout {
                        serial: serial.to_owned(),
                        what: what.to_owned(),
                        after: timeout,
                    });
                }
                watch(None)
            }
        };
        if next == Watch::Stop {
            kill_tree(&mut child);
            return Err(DeviceError::Stopped {
                serial: serial.to_owned(),
                what: what.to_owned(),
            });
        }
    }
    let _ = out_thread.join();
    let status = child.wait().map_err(|e| LocalHost::io(what, e))?;
    let stderr = err_thread.join().unwrap_or_default();
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Ok(CommandOutput {
        status: code,
        stdout: stdout_all,
        stderr,
    })
}

impl Device for LocalHost {
    fn serial(&self) -> &str {
        "local"
    }

    fn info(&mut self) -> Result<DeviceInfo> {
        self.probe_info(DeviceKind::Local, None)
    }

    /// Every command starts as the leader of its own process group, so a terminal's Ctrl-C
    /// (sent to the controller's group) does not reach it, and a timeout or a stop ends
    /// everything it started. `SOCBENCH_CONTROLLER_PID` tells the agent whose death it must
    /// not outlive (see the agent's `supervise` module).
    fn run_watched(
        &mut self,
        argv: &[&str],
        timeout: Duration,
        watch: &mut dyn FnMut(Option<&str>) -> Watch,
    ) -> Result<CommandOutput> {
        use std::os::unix::process::CommandExt;
        let Some((prog, args)) = argv.split_first() else {
            return Err(DeviceError::Protocol {
                serial: "local".into(),
                detail: "empty command".into(),
            });
        };
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .process_group(0)
            .env("SOCBENCH_CONTROLLER_PID", std::process::id().to_string());
        run_child("local", cmd, &crate::shell::join(argv), timeout, watch)
    }

    fn push(&mut self, local: &Path, remote: &str) -> Result<PushOutcome> {
        let dest = Path::new(remote);
        if dest.exists() && local_sha256(dest)? == local_sha256(local)? {
            return Ok(PushOutcome::Skipped);
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Self::io(remote, e))?;
        }
        let n = std::fs::copy(local, dest).map_err(|e| Self::io(remote, e))?;
        Ok(PushOutcome::Pushed(n))
    }

    fn pull(&mut self, remote: &str, local: &Path) -> Result<()> {
        std::fs::copy(remote, local)
            .map(drop)
            .map_err(|e| Self::io(remote, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_and_streams_are_kept_apart() {
        let mut h = LocalHost;
        let out = h
            .run(
                &["sh", "-c", "echo out; echo err >&2; exit 3"],
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        let err = h.check("x", out).unwrap_err();
        assert!(matches!(err, DeviceError::Command { status: 3, .. }));
    }

    #[test]
    fn streaming_sees_lines_before_exit_and_timeout_kills() {
        let mut h = LocalHost;
        let mut lines = Vec::new();
        let err = h
            .run_streaming(
                &["sh", "-c", "echo one; echo two; sleep 30"],
                Duration::from_millis(700),
                &mut |l| lines.push(l.to_owned()),
            )
            .unwrap_err();
        assert!(matches!(err, DeviceError::Timeout { .. }), "{err}");
        assert_eq!(lines, ["one", "two"]);
    }

    #[test]
    fn push_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.bin");
        std::fs::write(&src, b"hello").unwrap();
        let dst = dir.path().join("sub/dir/b.bin");
        let dst = dst.to_str().unwrap();
        let mut h = LocalHost;
        assert_eq!(h.push(&src, dst).unwrap(), PushOutcome::Pushed(5));
        assert_eq!(h.push(&src, dst).unwrap(), PushOutcome::Skipped);
        assert_eq!(
            h.sha256(dst).unwrap().as_deref(),
            Some(local_sha256(&src).unwrap().as_str())
        );
        assert_eq!(h.sha256(&format!("{dst}.missing")).unwrap(), None);
    }

    #[test]
    fn local_info_describes_this_machine() {
        let info = LocalHost.info().unwrap();
        assert_eq!(info.kind, DeviceKind::Local);
        assert!(info.cpu_count >= 1);
        assert!(info.total_ram_bytes.unwrap_or(0) > 0);
        assert_eq!(
            info.abi,
            crate::info::abi_from_machine(std::env::consts::ARCH)
        );
    }
}
