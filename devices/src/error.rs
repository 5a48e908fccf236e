//! The one error type every device operation returns.

use std::time::Duration;

/// What went wrong talking to a device. Each variant names the device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device went away (unplugged, adb server gone, virtual device killed) or never
    /// answered. A normal event during long sweeps, not a crash.
    #[error("device {serial} disconnected: {detail}")]
    Disconnected {
        /// Device serial.
        serial: String,
        /// What showed it.
        detail: String,
    },
    /// An operation did not finish in time.
    #[error("device {serial}: `{what}` did not finish within {after:?}")]
    Timeout {
        /// Device serial.
        serial: String,
        /// The operation.
        what: String,
        /// The limit that ran out.
        after: Duration,
    },
    /// A command ran and exited unsuccessfully.
    #[error("device {serial}: `{command}` exited with status {status}: {stderr}")]
    Command {
        /// Device serial.
        serial: String,
        /// The command line as sent.
        command: String,
        /// Exit status.
        status: i32,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// No device with that serial on any configured server, or it is not in the `device` state.
    #[error("device {serial} is not available: {detail}")]
    NotFound {
        /// Device serial.
        serial: String,
        /// Its state, or which servers were asked.
        detail: String,
    },
    /// An adb server could not be reached or answered something unexpected.
    #[error("adb server {server}: {detail}")]
    Server {
        /// `host:port`.
        server: String,
        /// What happened.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    LocalIo {
        /// The local path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A watched command was abandoned by its watcher ([`crate::Watch::Stop`]).
    #[error("device {serial}: `{what}` was stopped by its supervisor")]
    Stopped {
        /// Device serial.
        serial: String,
        /// The command.
        what: String,
    },
    /// The device answered something this code cannot interpret.
    #[error("device {serial}: {detail}")]
    Protocol {
        /// Device serial.
        serial: String,
        /// What was wrong.
        detail: String,
    },
}

/// Result of a device operation.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

impl DeviceError {
    /// Whether the device itself is gone (as opposed to one command failing).
    pub fn is_disconnect(&self) -> bool {
        matches!(self, Self::Disconnected { .. } | Self::NotFound { .. })
    }
}
