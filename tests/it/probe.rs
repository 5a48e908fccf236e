//! Issue #6: `socbench probe` measures the roofs on the host and, through its agent, on the
//! virtual phone.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::adb::{AdbServer, VirtualPhone};
use common::{assert_success, socbench};

/// Checks one device's probe result: both roofs at every requested thread count, positive,
/// with every repetition's time kept.
fn check(result: &serde_json::Value, device: &str, threads: &[u64]) {
    assert_eq!(result["device"], device, "{result}");
    for kind in ["triad", "gemm"] {
        let pts = result["roofline"][kind].as_array().unwrap();
        let got: Vec<u64> = pts.iter().map(|p| p["threads"].as_u64().unwrap()).collect();
        assert_eq!(got, threads, "{kind}: {result}");
        for p in pts {
            assert!(p["best"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["best"].as_f64() >= p["median"].as_f64(), "{p}");
            assert_eq!(p["samples_s"].as_array().unwrap().len(), 3, "{p}");
        }
    }
}

#[test]
fn probe_on_the_host_and_on_the_virtual_phone() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let phone = VirtualPhone::start(&dir.path().join("phone"), &[]);
    server.connect(&phone.serial);
    let out = socbench()
        .args(["probe", "--device", "local", "--device", &phone.serial])
        .args(["--adb-server", &format!("127.0.0.1:{}", server.port)])
        .args(["--threads", "1,2", "--quick", "--json"])
        .output()
        .unwrap();
    assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), 2, "{v}");
    check(&all[0], "local", &[1, 2]);
    check(&all[1], &phone.serial, &[1, 2]);
    // The phone ran the agent it was given (pushed into its sandbox), not the host's path.
    assert!(
        dir.path()
            .join("phone/root/data/local/tmp/socbench/socbench-agent")
            .is_file()
    );

    // The table form names both devices.
    let out = socbench()
        .args(["probe", "--device", "local", "--threads", "1", "--quick"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("DEVICE") && text.contains("local"),
        "{text}"
    );
}

#[test]
fn a_bad_thread_list_is_one_error_before_any_device() {
    let out = socbench()
        .args(["probe", "--device", "no-such-phone", "--threads", "1,zero"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads") && err.contains("zero"), "{err}");
}
