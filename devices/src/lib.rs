//! socbench's targets: the local host and Android devices reached through adb servers, the
//! sensors sampled on them, and a virtual ADB device for tests and first-time users.
//!
//! - [`Device`]: what socbench does to a target (info, run with exit status, push with
//!   skip-if-identical, pull), implemented by [`LocalHost`] and [`AdbDevice`]; errors are
//!   [`DeviceError`].
//! - [`sensors`]: the sampler that runs on the target inside the agent (no ADB, no Burn);
//!   [`services`]: Android services (`dumpsys`) it falls back on where sysfs is denied;
//!   [`conditions`]: governor, frequency limits, SELinux, scheduling and cpuset.
//! - [`virtual_device`]: a loopback adbd with a simulated phone sysfs.
//!
//! Without the default `host` feature only [`info`], [`sensors`], [`services`], [`conditions`], [`shell`] and
//! [`error`] are built: that is what the on-device agent links.
#![warn(missing_docs)]

pub mod conditions;
pub mod error;
pub mod info;
pub mod sensors;
pub mod services;
pub mod shell;

#[cfg(feature = "host")]
pub mod adb;
#[cfg(feature = "host")]
pub mod device;
#[cfg(feature = "host")]
pub mod local;
#[cfg(feature = "host")]
pub mod virtual_device;

#[cfg(feature = "host")]
pub use adb::AdbDevice;
#[cfg(feature = "host")]
pub use device::{CommandOutput, Device, PushOutcome, WATCH_TICK, Watch};
pub use error::DeviceError;
pub use info::DeviceInfo;
#[cfg(feature = "host")]
pub use local::LocalHost;
