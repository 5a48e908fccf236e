//! The agent binary's small commands. Also what makes `cargo test --workspace` build
//! `target/<profile>/socbench-agent`, which the controller's tests deploy.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_socbench-agent"))
}

#[test]
fn info_names_the_build_and_its_backends() {
    let out = agent().arg("info").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["arch"], std::env::consts::ARCH);
    let backends: Vec<&str> = v["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    // Built with its default features: every backend, wgpu included.
    assert_eq!(backends, ["ndarray", "flex", "wgpu"]);
}

#[test]
fn a_bad_command_is_a_usage_error_with_exit_2() {
    for args in [&["frobnicate"][..], &["probe", "--threads", "0"], &[]] {
        let out = agent().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}");
    }
}
