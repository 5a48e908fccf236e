//! Issue #36's `kernel` axis: one device measures every packed-kernel tier it has; a tier this
//! host lacks is refused before anything runs, and a phone's cells of a tier it lacks are
//! skipped with the reason.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::adb::{AdbServer, VirtualPhone};
use common::{assert_success, rows, socbench};
use socbench_kernels::qmatmul::{kernel_name, kernel_names};
use socbench_reports::row::Status;

fn args(kernels: &str) -> Vec<String> {
    [
        "run",
        "--model",
        "synthetic:tiny",
        "--quant",
        "f32,q4",
        "--threads",
        "1",
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
        "--kernel",
        kernels,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// A variant of the other architecture: one this CPU never has.
fn foreign() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "arm-neon"
    } else {
        "x86-avx2"
    }
}

#[test]
fn a_kernel_sweep_on_this_host_runs_each_tier_it_has_and_charts_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let tiers = format!("auto,{}", kernel_names().join(","));
    let mut a = args(&tiers);
    a.extend(["--device".into(), "local".into(), "--out".into()]);
    assert_success(&socbench().args(&a).arg(&out).output().unwrap());
    let r = rows(&out);
    // f32 runs no packed kernel: once. q4: auto and each variant.
    assert_eq!(r.len(), 1 + 1 + kernel_names().len(), "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        let want = match (row.quant.as_str(), row.kernel_tier.as_str()) {
            ("f32", "auto") => "burn-flex",
            ("q4", "auto") => kernel_name(),
            ("q4", tier) => tier,
            _ => panic!("unexpected row {row:?}"),
        };
        assert_eq!(row.kernel, want, "{row:?}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("kernel-vs-decode"), "no kernel chart");
    assert!(html.contains("kernel=portable"), "no forced-kernel label");

    // A tier this CPU lacks: one error before anything runs, no results directory.
    let lacking = dir.path().join("lacking");
    let mut a = args(&format!("auto,{}", foreign()));
    a.extend(["--device".into(), "local".into(), "--out".into()]);
    let o = socbench().args(&a).arg(&lacking).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(foreign()) && err.contains("--device local") && err.contains("portable"),
        "{err}"
    );
    assert!(!lacking.join("results.csv").exists());
    // A level the packed kernels do not run: `--kernel` would change nothing.
    let o = socbench()
        .args(["generate", "--model", "synthetic:tiny", "--quant", "f32"])
        .args(["--kernel", "portable", "--prompt", "hi", "-n", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("runs none"), "{err}");
    // A name that is no kernel at all.
    let o = socbench().args(args("avx3")).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`avx3`") && err.contains("arm-i8mm"), "{err}");
}

#[test]
fn a_phones_cells_of_a_tier_it_lacks_are_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let phone = VirtualPhone::start(&dir.path().join("phone"), &[]);
    server.connect(&phone.serial);
    let out = dir.path().join("out");
    let mut a = args(&format!("auto,{}", foreign()));
    a.extend([
        "--device".into(),
        phone.serial.clone(),
        "--adb-server".into(),
        format!("127.0.0.1:{}", server.port),
        "--out".into(),
    ]);
    let o = socbench().args(&a).arg(&out).output().unwrap();
    // Skipped cells are not failures: the sweep passes.
    assert_success(&o);
    let r = rows(&out);
    assert_eq!(r.len(), 3, "{r:?}");
    for row in &r {
        if row.kernel_tier == foreign() {
            assert_eq!(row.status, Status::Skipped, "{row:?}");
            assert!(
                row.note.contains(foreign()) && row.note.contains(&phone.serial),
                "{row:?}"
            );
        } else {
            assert_eq!(row.status, Status::Ok, "{row:?}");
        }
    }
}
