//! socbench's targets: the local host and Android devices reached through adb servers,
//! the sensors sampled on them, and a virtual ADB device for tests.
//!
//! This crate is the home of issue #3's `Device` abstraction; it holds nothing yet, so that
//! the workspace has its final shape and the dependency direction (harness → devices) is fixed.
#![warn(missing_docs)]
