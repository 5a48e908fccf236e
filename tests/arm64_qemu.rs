//! Issues #3 and #4: an arm64 virtual phone (`--abi arm64-v8a`) runs aarch64 executables under
//! qemu-aarch64-static, and `socbench run` deploys the static musl agent to it and completes a
//! small sweep through the real adb server. wgpu cells are skipped with the reason (the musl
//! agent has no wgpu), not failed.
//!
//! Needs `rustup target add aarch64-unknown-linux-musl` and `qemu-user-static` (.ci/run
//! installs both); the test cross-builds the agent with `scripts/build-agent` itself.
#![allow(clippy::unwrap_used)]

mod common;

use common::adb::{AdbServer, VirtualPhone};
use common::socbench;
use std::path::PathBuf;
use std::process::Command;

/// Cross-builds the static aarch64 agent (the musl build: the NDK is deliberately not used).
fn musl_agent() -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(format!("{root}/scripts/build-agent"))
        .arg("arm64-v8a")
        .env_remove("ANDROID_NDK_HOME")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/build-agent arm64-v8a failed (needs `rustup target add \
         aarch64-unknown-linux-musl`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.ends_with("aarch64-unknown-linux-musl/debug/socbench-agent") && path.is_file(),
        "{path:?}"
    );
    path
}

#[test]
fn arm64_virtual_phone_runs_a_sweep_with_the_musl_agent_under_qemu() {
    let agent = musl_agent();
    let head = std::fs::read(&agent).unwrap();
    // ELF, 64-bit, e_machine = EM_AARCH64 (183): the agent really is an arm64 binary.
    assert_eq!(&head[..4], b"\x7fELF");
    assert_eq!(u16::from_le_bytes([head[18], head[19]]), 183);

    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let phone = VirtualPhone::start(&dir.path().join("phone"), &["--abi", "arm64-v8a"]);
    server.connect(&phone.serial);

    // The phone runs a pushed aarch64 executable (under qemu) and reports its ABI.
    let adb = |args: &[&str]| {
        let o = server
            .adb()
            .args(["-s", &phone.serial])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "adb {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    assert_eq!(
        adb(&["shell", "getprop", "ro.product.cpu.abi"]),
        "arm64-v8a"
    );
    adb(&[
        "push",
        agent.to_str().unwrap(),
        "/data/local/tmp/probe-agent",
    ]);
    let info: serde_json::Value =
        serde_json::from_str(&adb(&["shell", "/data/local/tmp/probe-agent", "info"])).unwrap();
    assert_eq!(info["arch"], "aarch64", "{info}");
    assert_eq!(info["env"], "musl", "{info}");
    // The NEON kernel against the portable one, on the (emulated) arm64 CPU.
    let selftest: serde_json::Value =
        serde_json::from_str(&adb(&["shell", "/data/local/tmp/probe-agent", "selftest"])).unwrap();
    assert_eq!(selftest["kernel"], "neon", "{selftest}");
    assert_eq!(selftest["ok"], true, "{selftest}");
    let checks = selftest["checks"].as_array().unwrap();
    assert!(
        checks.iter().filter(|c| c["kernel"] == "neon").count() >= 6,
        "both formats at three row counts: {selftest}"
    );
    // The pushed file is byte for byte the ELF (hashing it does not run it).
    let sum = adb(&["shell", "sha256sum", "/data/local/tmp/probe-agent"]);
    assert_eq!(sum.split_whitespace().next().unwrap().len(), 64, "{sum}");

    let out = dir.path().join("res");
    let run = socbench()
        .args([
            "run",
            "--model",
            "synthetic:tiny",
            "--backend",
            "flex,wgpu",
            "--quant",
            "f32",
            "--threads",
            "1,2",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "8",
            "--repetitions",
            "2",
            "--device",
            &phone.serial,
            "--adb-server",
            &format!("127.0.0.1:{}", server.port),
            "--out",
        ])
        .arg(&out)
        .env("SOCBENCH_AGENT_ARM64_V8A", &agent)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");

    let set = socbench_reports::ResultSet::load(&[&out]).unwrap();
    use socbench_reports::schema::Status;
    let by = |backend: &str, status: Status| {
        set.records
            .iter()
            .filter(|r| r.key.backend == backend && r.status == status)
            .count()
    };
    assert_eq!(by("flex", Status::Ok), 4, "{stderr}");
    assert_eq!(by("wgpu", Status::Skipped), 4, "{stderr}");
    assert_eq!(set.records.len(), 8);
    for r in set.records.iter().filter(|r| r.status == Status::Skipped) {
        assert!(
            r.note.contains("aarch64-musl") && r.note.contains("ANDROID_NDK_HOME"),
            "{}",
            r.note
        );
    }
    // Decoding happened on the phone: tokens were timed, and the device is the arm64 one.
    for r in set.records.iter().filter(|r| r.status == Status::Ok) {
        assert!(
            r.get(socbench_reports::schema::Metric::DecodeTokPerS)
                .is_some_and(|v| v > 0.0),
            "{r:?}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let text = manifest.to_string();
    assert!(text.contains("arm64-v8a"), "{text}");
    assert!(
        text.contains("qemu-aarch64"),
        "the SoC names the emulator: {text}"
    );
    // `run` checked the kernels on the phone before measuring, and kept the report.
    let check = &manifest["devices"][0]["outcome"]["kernel_check"];
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["kernel"], "neon", "{check}");
}
