//! The [`Device`] trait: everything socbench does to a target.

use crate::error::{DeviceError, Result};
use crate::info::DeviceInfo;
use std::path::Path;
use std::time::Duration;

/// Captured result of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status (128 + signal number when killed by a signal, as `sh` reports it).
    pub status: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error, kept apart from stdout.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// Standard error as text (lossy), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// What a [`Device::run_watched`] watcher wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// Keep running.
    Continue,
    /// Abandon the command (and, on the local host, kill it).
    Stop,
}

/// The longest a [`Device::run_watched`] watcher waits between two calls.
pub const WATCH_TICK: Duration = Duration::from_millis(200);

/// What [`Device::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The file was copied; this many bytes.
    Pushed(u64),
    /// The device already had a file with the same SHA-256.
    Skipped,
}

/// A target socbench can deploy to and run on. Implemented by [`crate::LocalHost`] and
/// [`crate::AdbDevice`]; no ADB type appears here.
///
/// Every argument vector is shell-quoted by the implementation: nothing in a path, serial or
/// argument is interpreted by the device's shell.
pub trait Device: Send {
    /// `local` or the adb serial.
    fn serial(&self) -> &str;

    /// Identity, ABI, CPU topology, memory, battery and sensor origin.
    fn info(&mut self) -> Result<DeviceInfo>;

    /// Runs [`PROBE_SCRIPT`](crate::info::PROBE_SCRIPT) and parses its output: how every
    /// implementation answers [`Device::info`].
    fn probe_info(
        &mut self,
        kind: crate::info::DeviceKind,
        adb_server: Option<String>,
    ) -> Result<DeviceInfo> {
        let out = self.run_script(crate::info::PROBE_SCRIPT, Duration::from_secs(30))?;
        let serial = self.serial().to_owned();
        Ok(DeviceInfo::parse(
            &serial,
            kind,
            adb_server,
            &out.stdout_text(),
        ))
    }

    /// Runs `argv` (quoted) and captures its output and exit status.
    fn run(&mut self, argv: &[&str], timeout: Duration) -> Result<CommandOutput> {
        self.run_streaming(argv, timeout, &mut |_| {})
    }

    /// Runs `argv` (quoted), calling `on_line` for every stdout line as it arrives (without the
    /// newline); the output is also captured whole.
    fn run_streaming(
        &mut self,
        argv: &[&str],
        timeout: Duration,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<CommandOutput> {
        self.run_watched(argv, timeout, &mut |l| {
            if let Some(l) = l {
                on_line(l);
            }
            Watch::Continue
        })
    }

    /// Runs `argv` (quoted) under a watcher: `watch` gets every stdout line as it arrives
    /// (`Some`), and `None` at least every [`WATCH_TICK`] while the command is silent, so it can
    /// keep deadlines of its own. When it answers [`Watch::Stop`] the command is abandoned:
    /// on the local host its whole process group is killed; on a device the caller must end
    /// the remote process itself (by its pid), since closing the stream may not. Returns
    /// [`DeviceError::Stopped`] then.
    fn run_watched(
        &mut self,
        argv: &[&str],
        timeout: Duration,
        watch: &mut dyn FnMut(Option<&str>) -> Watch,
    ) -> Result<CommandOutput>;

    /// Runs a shell script as is (no quoting: the caller built it with [`crate::shell::quote`]).
    fn run_script(&mut self, script: &str, timeout: Duration) -> Result<CommandOutput> {
        self.run(&["sh", "-c", script], timeout)
    }

    /// Copies a local file to `remote`, unless the device already has identical content there
    /// (compared by SHA-256). Parent directories are created.
    fn push(&mut self, local: &Path, remote: &str) -> Result<PushOutcome>;

    /// Copies `remote` to the local path.
    fn pull(&mut self, remote: &str, local: &Path) -> Result<()>;

    /// Removes a file or directory tree.
    fn remove(&mut self, remote: &str) -> Result<()> {
        let out = self.run(&["rm", "-rf", remote], Duration::from_secs(60))?;
        self.check(&format!("rm -rf {remote}"), out).map(drop)
    }

    /// Creates a directory and its parents.
    fn mkdir(&mut self, remote: &str) -> Result<()> {
        let out = self.run(&["mkdir", "-p", remote], Duration::from_secs(30))?;
        self.check(&format!("mkdir -p {remote}"), out).map(drop)
    }

    /// The SHA-256 of a remote file, or `None` when it does not exist.
    fn sha256(&mut self, remote: &str) -> Result<Option<String>> {
        let script = format!(
            "[ -f {p} ] || exit 0; sha256sum {p} 2>/dev/null || toybox sha256sum {p}",
            p = crate::shell::quote(remote)
        );
        let out = self.run_script(&script, Duration::from_secs(120))?;
        let out = self.check(&format!("sha256sum {remote}"), out)?;
        Ok(out
            .stdout_text()
            .split_whitespace()
            .next()
            .filter(|h| h.len() == 64)
            .map(str::to_owned))
    }

    /// Turns a non-zero exit status into [`DeviceError::Command`].
    fn check(&self, command: &str, out: CommandOutput) -> Result<CommandOutput> {
        if out.status == 0 {
            Ok(out)
        } else {
            Err(DeviceError::Command {
                serial: self.serial().to_owned(),
                command: command.to_owned(),
                status: out.status,
                stderr: out.stderr_text(),
            })
        }
    }
}

/// SHA-256 of a local file, hex.
#[cfg(feature = "host")]
pub fn local_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).map_err(|source| DeviceError::LocalIo {
        path: path.display().to_string(),
        source,
    })?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|source| DeviceError::LocalIo {
        path: path.display().to_string(),
        source,
    })?;
    Ok(format!("{:x}", h.finalize()))
}
