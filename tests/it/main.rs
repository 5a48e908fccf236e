//! The integration tests, one module per area, in one test binary: each file in `tests/`
//! is a program of its own that links all of socbench, so one binary is linked once instead of
//! once per file. Three stay binaries of their own, run alone: `tests/knobs.rs` (it counts
//! the threads that did the work, which tests running beside it starve: seen failing here),
//! `tests/quality.rs` (its scores keep both cores busy for a minute) and `tests/arm64_qemu.rs`
//! (it cross-builds the arm64 agent). `cargo test --test it MODULE::` runs one area.

#[path = "../common/mod.rs"]
mod common;

mod build_features;
mod conditions;
mod devices_adb;
mod errors;
mod faults;
mod footprint;
mod kernels;
mod lora;
mod other_models;
mod probe;
mod reference;
mod reports_cli;
mod run_sweep;
mod runtimes;
mod sustained;
