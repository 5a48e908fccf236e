//! Issues #3 and #4: an arm64 virtual phone (`--abi arm64-v8a`) runs aarch64 executables under
//! qemu-aarch64-static, and `socbench run` deploys the static musl agent to it and completes a
//! small sweep through the real adb server. wgpu cells are skipped with the reason (the musl
//! agent has no wgpu), not failed.
//!
//! Needs `rustup target add aarch64-unknown-linux-musl` and `qemu-user-static` (.ci/run
//! installs both); the test cross-builds the agent with `scripts/build-agent` itself. Issue
//! #17: the arm64 kernel variants (NEON, dotprod, i8mm) and their run-time dispatch, under qemu
//! CPU models with and without the dot-product instructions. Issue #18: llama.cpp in the
//! static agent (cross-compiled by zig, which `scripts/deps test` installs from PyPI), on CPU
//! models with and without its baseline.
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
        .args(["arm64-v8a", "--profile", "emulated"])
        .env_remove("ANDROID_NDK_HOME")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/build-agent arm64-v8a failed (needs `rustup target add \
         aarch64-unknown-linux-musl` and zig: `pip install ziglang==0.17.1`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("no llama.cpp"),
        "the agent was built without llama.cpp (`pip install ziglang==0.17.1`):\n{stderr}"
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.ends_with("aarch64-unknown-linux-musl/emulated/socbench-agent") && path.is_file(),
        "{path:?}"
    );
    path
}

/// `socbench run` with `axes` on `phone`, through `server`, with `agent` as its arm64 agent,
/// into `out`. The quality text is not scored: its ≈750 tokens take half a minute to minutes
/// per model variant under qemu.
fn run_on_phone(
    agent: &std::path::Path,
    server: &AdbServer,
    phone: &VirtualPhone,
    out: &std::path::Path,
    axes: &[&str],
) -> std::process::Output {
    socbench()
        .arg("run")
        .args(axes)
        .args(["--no-quality", "--device", &phone.serial, "--adb-server"])
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("--out")
        .arg(out)
        .env("SOCBENCH_AGENT_ARM64_V8A", agent)
        .output()
        .unwrap()
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
    // Every kernel variant the (emulated) arm64 CPU has against the portable one; qemu's
    // default CPU model has them all.
    let kernel = info["kernel"].as_str().unwrap().to_owned();
    assert!(kernel.starts_with("arm-"), "{info}");
    let selftest: serde_json::Value =
        serde_json::from_str(&adb(&["shell", "/data/local/tmp/probe-agent", "selftest"])).unwrap();
    assert_eq!(selftest["kernel"], kernel.as_str(), "{selftest}");
    assert_eq!(selftest["ok"], true, "{selftest}");
    let checks = selftest["checks"].as_array().unwrap();
    assert!(
        checks
            .iter()
            .filter(|c| c["kernel"] == kernel.as_str())
            .count()
            >= 15,
        "three formats at five row counts: {selftest}"
    );
    // The pushed file is byte for byte the ELF (hashing it does not run it).
    let sum = adb(&["shell", "sha256sum", "/data/local/tmp/probe-agent"]);
    assert_eq!(sum.split_whitespace().next().unwrap().len(), 64, "{sum}");

    let out = dir.path().join("res");
    let run = run_on_phone(
        &agent,
        &server,
        &phone,
        &out,
        &[
            "--model",
            "synthetic:tiny",
            "--backend",
            "flex,wgpu",
            "--quant",
            "f32,q8",
            "--threads",
            "1,2",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "8",
            "--repetitions",
            "2",
            // The kernel axis on the phone: its best tier and the baseline NEON one.
            "--kernel",
            "auto,arm-neon",
        ],
    );
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
    // f32 once, q8 on both tiers; wgpu runs no packed kernel (once, skipped).
    assert_eq!(by("flex", Status::Ok), 12, "{stderr}");
    assert_eq!(by("wgpu", Status::Skipped), 8, "{stderr}");
    assert_eq!(set.records.len(), 20);
    for r in set.records.iter().filter(|r| r.status == Status::Skipped) {
        assert!(
            r.note.contains("aarch64-musl") && r.note.contains("ANDROID_NDK_HOME"),
            "{}",
            r.note
        );
    }
    // Decoding happened on the phone: tokens were timed, and the device is the arm64 one.
    // Each row names the code that ran its products: the phone's packed kernel at q8.
    for r in set.records.iter().filter(|r| r.status == Status::Ok) {
        assert!(
            r.get(socbench_reports::schema::Metric::DecodeTokPerS)
                .is_some_and(|v| v > 0.0),
            "{r:?}"
        );
        let want = match (r.key.quant.as_str(), r.key.kernel_tier.as_str()) {
            ("q8", "auto") => kernel.as_str(),
            ("q8", tier) => tier,
            _ => "burn-flex",
        };
        assert_eq!(r.kernel, want, "{r:?}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let text = manifest.to_string();
    assert!(text.contains("arm64-v8a"), "{text}");
    assert!(
        text.contains("emulated by qemu-aarch64"),
        "the SoC names the emulator: {text}"
    );
    // `run` checked the kernels on the phone before measuring, and kept the report.
    let check = &manifest["devices"][0]["outcome"]["kernel_check"];
    assert_eq!(check["ok"], true, "{check}");
    assert_eq!(check["kernel"], kernel.as_str(), "{check}");
}

/// Issue #18: the static agent carries llama.cpp, and the arm64 virtual phone (qemu's `max`
/// CPU model, with the dot-product and half-precision instructions its baseline needs) runs a
/// `--runtime llama.cpp` cell of the real model with it. The timings are qemu's, and the
/// device says so. (On a CPU below the baseline the agent does not offer llama.cpp: the
/// Cortex-A53 case of the dispatch test below.)
#[test]
fn arm64_virtual_phone_runs_a_llama_cpp_cell_under_qemu() {
    let agent = musl_agent();
    let model = common::real_model().display().to_string();
    let server = AdbServer::start();
    let dir = tempfile::tempdir().unwrap();
    let phone = VirtualPhone::start_with_env(
        0,
        &dir.path().join("phone"),
        &["--abi", "arm64-v8a"],
        &[("QEMU_CPU", "max")],
    );
    server.connect(&phone.serial);
    let out = dir.path().join("res");
    let run = run_on_phone(
        &agent,
        &server,
        &phone,
        &out,
        &[
            "--model",
            &model,
            "--runtime",
            "llama.cpp",
            "--quant",
            "q4",
            "--threads",
            "2",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "4",
            "--repetitions",
            "1",
            "--warmup",
            "0",
            "--no-probe",
            "--no-cooldown",
        ],
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let set = socbench_reports::ResultSet::load(&[&out]).unwrap();
    use socbench_reports::schema::{Metric, Status};
    assert_eq!(set.records.len(), 1, "{stderr}");
    let r = &set.records[0];
    assert_eq!(
        (r.key.runtime.as_str(), r.status),
        ("llama.cpp", Status::Ok),
        "{r:?}\n{stderr}"
    );
    assert_eq!(r.kernel, "ggml-cpu Q4_1", "{r:?}");
    for m in [Metric::DecodeTokPerS, Metric::TtftS, Metric::PeakRssBytes] {
        assert!(r.get(m).is_some_and(|v| v > 0.0), "{m:?}: {r:?}");
    }
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    assert!(manifest.contains("emulated by qemu-aarch64"), "{manifest}");
    assert!(
        manifest.contains("armv8.2-a+dotprod+fp16"),
        "the agent's llama.cpp build is recorded: {manifest}"
    );
}

/// The agent's dispatch on three CPU models: `-cpu max` (dotprod and i8mm), a Cortex-A76
/// (dotprod, no i8mm) and a Cortex-A53 (neither): the selected variant, and every variant the
/// CPU has checked against the portable loop.
#[test]
fn the_agent_selects_and_checks_every_arm_kernel_the_cpu_has() {
    let agent = musl_agent();
    for (cpu, want, variants) in [
        (
            "max",
            "arm-i8mm",
            &["arm-dotprod", "arm-i8mm", "arm-neon"][..],
        ),
        (
            "cortex-a76",
            "arm-dotprod",
            &["arm-dotprod", "arm-neon"][..],
        ),
        ("cortex-a53", "arm-neon", &["arm-neon"][..]),
    ] {
        let out = Command::new("qemu-aarch64-static")
            .args(["-cpu", cpu])
            .arg(&agent)
            .arg("selftest")
            .output()
            .unwrap();
        assert!(out.status.success(), "{cpu}: {out:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["kernel"], want, "{cpu}: {report}");
        assert_eq!(report["ok"], true, "{cpu}: {report}");
        let mut checked: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["kernel"].as_str().unwrap())
            .collect();
        checked.sort_unstable();
        checked.dedup();
        assert_eq!(checked, variants, "{cpu}: {report}");
        let info = Command::new("qemu-aarch64-static")
            .args(["-cpu", cpu])
            .arg(&agent)
            .arg("info")
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["kernel"], want, "{cpu}: {info}");
        // Issue #18: llama.cpp is offered only on a CPU with its baseline (dotprod, fp16);
        // on the Cortex-A53 the agent names what is missing, which `run` quotes when it skips
        // those cells.
        let runtimes = info["runtimes"].to_string();
        let unavailable = &info["llama_cpp"]["unavailable"];
        if cpu == "cortex-a53" {
            assert_eq!(runtimes, r#"["burn"]"#, "{cpu}: {info}");
            let why = unavailable.as_str().unwrap_or_default();
            assert!(
                why.contains("lacks lse, rdm, dotprod, fp16") && why.contains("GGML_CPU_ARM_ARCH"),
                "{cpu}: {info}"
            );
        } else {
            assert_eq!(runtimes, r#"["burn","llama.cpp"]"#, "{cpu}: {info}");
            assert!(unavailable.is_null(), "{cpu}: {info}");
        }
    }
}

/// The kernels' own unit tests, cross-built for aarch64 (beside the agent, with its features:
/// `scripts/build-agent --kernel-tests`) and run under qemu on a CPU model with every
/// extension and on one with none, so each variant's inner loops (and the NEON fallback) pass
/// the same tests the host's kernels do, and so do the arm64 checks of llama.cpp's baseline and
/// its thread pool.
#[test]
fn the_kernel_unit_tests_pass_on_arm64_with_and_without_the_dot_product_instructions() {
    let root = env!("CARGO_MANIFEST_DIR");
    let build = Command::new(format!("{root}/scripts/build-agent"))
        .args(["arm64-v8a", "--profile", "emulated", "--kernel-tests"])
        .env_remove("ANDROID_NDK_HOME")
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let exe = String::from_utf8_lossy(&build.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "socbench_kernels" && v["profile"]["test"] == true)
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .expect("the kernels' test executable");
    for cpu in ["max", "cortex-a53"] {
        let out = Command::new("qemu-aarch64-static")
            .args(["-cpu", cpu])
            .arg(&exe)
            .args(["qmatmul::", "llamacpp::cpu::", "--test-threads", "2"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cpu}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for name in [
            "qmatmul::tests::every_kernel_variant_this_cpu_has_agrees_with_the_portable_one",
            "qmatmul::tests::simd_and_portable_kernels_agree_for_every_row_count",
            "llamacpp::cpu::tests::arm_architectures_require_their_features",
            "llamacpp::cpu::tests::missing_build_features_are_named",
        ] {
            assert!(
                text.contains(&format!("test {name} ... ok")),
                "{cpu}: {name}: {text}"
            );
        }
        assert!(
            text.contains("test result: ok.") && text.contains(" 0 failed;"),
            "{cpu}: {text}"
        );
    }
    // llama.cpp's graphs run on the workers of the pool attached to their context, on the CPU
    // with its baseline; alone, so that no other test's threads are counted.
    let name = "llamacpp::tests::a_context_runs_its_graphs_on_its_own_workers";
    let out = Command::new("qemu-aarch64-static")
        .args(["-cpu", "max"])
        .arg(&exe)
        .args([name, "--exact", "--ignored", "--test-threads", "1"])
        .env("SOCBENCH_TEST_GGUF", common::real_model())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("test {name} ... ok")),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
