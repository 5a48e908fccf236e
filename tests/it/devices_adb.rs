//! Issue #3 acceptance: a virtual device behind a real adb server on a free port, driven by
//! the `adb` CLI and by socbench's `AdbDevice`.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::adb::{AdbServer, VirtualPhone};
use socbench_devices::info::SensorOrigin;
use socbench_devices::sensors::{Sampler, SensorSet};
use socbench_devices::{AdbDevice, Device, DeviceError, PushOutcome};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn setup() -> (AdbServer, VirtualPhone, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let phone = VirtualPhone::start(&dir.path().join("state"), &["--thermal-tau", "5"]);
    server.connect(&phone.serial);
    (server, phone, dir)
}

#[test]
fn adb_cli_and_adb_device_work_against_the_virtual_phone() {
    let (server, phone, dir) = setup();

    // The real adb CLI.
    let out = server
        .adb()
        .args(["-s", &phone.serial, "shell", "echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n", "{out:?}");
    let out = server
        .adb()
        .args(["-s", &phone.serial, "shell", "exit 7"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "adb shell carries the exit code (shell v2)"
    );

    let mut dev = AdbDevice::new(&phone.serial, server.addr());
    let info = dev.info().unwrap();
    assert_eq!(info.model.as_deref(), Some("socbench virtual phone"));
    assert_eq!(info.sensors, SensorOrigin::Simulated);
    assert_eq!(info.abi, "x86_64");
    assert!(info.cpu_count >= 1 && !info.clusters.is_empty());
    assert!(info.clusters.iter().all(|c| c.max_khz.is_some()));
    assert_eq!(info.battery_design_uah, Some(4_000_000));

    // Exit status, stdout and stderr apart.
    let ok = dev.run(&["sh", "-c", "echo out; echo err >&2"], T).unwrap();
    assert_eq!(
        (ok.status, ok.stdout_text(), ok.stderr_text()),
        (0, "out\n".into(), "err".into())
    );
    let three = dev.run(&["sh", "-c", "printf partial; exit 3"], T).unwrap();
    assert_eq!((three.status, three.stdout_text()), (3, "partial".into()));
    let err = dev.check("exit 3", three).unwrap_err();
    assert!(
        matches!(err, DeviceError::Command { status: 3, .. }),
        "{err}"
    );

    // Streaming delivers lines as they come.
    let mut lines = Vec::new();
    let out = dev
        .run_streaming(&["sh", "-c", "echo a; sleep 0.2; echo b"], T, &mut |l| {
            lines.push(l.to_owned())
        })
        .unwrap();
    assert_eq!(
        (out.status, lines),
        (0, vec!["a".to_owned(), "b".to_owned()])
    );

    // Push (skipped the second time), and a 20 MB file pushed and pulled back identical,
    // through socbench and through the adb CLI.
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..20_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let remote = "/data/local/tmp/socbench-test/big.bin";
    assert_eq!(
        dev.push(&big, remote).unwrap(),
        PushOutcome::Pushed(20_000_000)
    );
    assert_eq!(dev.push(&big, remote).unwrap(), PushOutcome::Skipped);
    let back = dir.path().join("back.bin");
    dev.pull(remote, &back).unwrap();
    assert!(std::fs::read(&back).unwrap() == data, "pulled file differs");
    let back2 = dir.path().join("back2.bin");
    let out = server
        .adb()
        .args(["-s", &phone.serial, "pull", remote])
        .arg(&back2)
        .output()
        .unwrap();
    assert!(out.status.success(), "adb pull: {out:?}");
    assert!(std::fs::read(&back2).unwrap() == data, "adb pull differs");
    let out = server
        .adb()
        .args(["-s", &phone.serial, "push"])
        .arg(&big)
        .arg("/data/local/tmp/socbench-test/by-cli.bin")
        .output()
        .unwrap();
    assert!(out.status.success(), "adb push: {out:?}");
    let ls = dev
        .run(&["ls", "/data/local/tmp/socbench-test"], T)
        .unwrap()
        .stdout_text();
    assert_eq!(ls, "big.bin\nby-cli.bin\n");
    let missing = dev.pull("/data/local/tmp/nope", &dir.path().join("x"));
    assert!(missing.is_err());

    // `socbench devices` lists the local host and the phone.
    let json = common::json(&[
        "devices",
        "--adb-server",
        &format!("127.0.0.1:{}", server.port),
    ]);
    let devices = json["devices"].as_array().unwrap();
    assert_eq!(devices[0]["serial"], "local");
    let vd = devices
        .iter()
        .find(|d| d["serial"] == phone.serial.as_str())
        .unwrap();
    assert_eq!(vd["state"], "device");
    assert_eq!(vd["info"]["sensors"], "simulated");
    drop(phone);
}

#[test]
fn sensors_sampled_at_20_hz_under_load_see_the_phone_heat_up() {
    let (server, phone, dir) = setup();
    let mut dev = AdbDevice::new(&phone.serial, server.addr());
    let root = dir.path().join("state/root");
    let set = SensorSet::discover(&root, None);
    let names: Vec<String> = set.metas().iter().map(|m| m.name.clone()).collect();
    for want in [
        "battery_power_w",
        "thermal_soc-thermal_c",
        "cpu0_freq_mhz",
        "battery_charge_mah",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let sampler = Sampler::start(set.clone(), 20.0, Instant::now(), move |s| {
        let _ = tx.send(s);
    });
    // Two busy loops for 2.5 s on the device.
    let out = dev
        .run(&["sh", "-c", "timeout 2.5 sh -c 'while :; do :; done' & timeout 2.5 sh -c 'while :; do :; done'; wait; true"], T)
        .unwrap();
    assert_eq!(out.status, 0);
    let n = sampler.stop();
    let samples: Vec<_> = rx.try_iter().collect();
    assert!(n >= 30, "{n} samples in 2.5 s at 20 Hz");
    for (i, name) in names.iter().enumerate() {
        let present = samples.iter().filter(|s| s.values[i].is_some()).count();
        assert!(present >= 30, "{name}: {present} readings");
    }
    let t = set.index("thermal_soc-thermal_c").unwrap();
    let first = samples.first().unwrap().values[t].unwrap();
    let last = samples.last().unwrap().values[t].unwrap();
    assert!(
        last > first + 1.0,
        "temperature {first} → {last} under load"
    );
    let p = set.index("battery_power_w").unwrap();
    let max_power = samples
        .iter()
        .filter_map(|s| s.values[p])
        .fold(0.0, f64::max);
    assert!(
        max_power > 1.5,
        "power under load {max_power} W (idle is 0.6 W)"
    );
}

#[test]
fn killing_the_phone_mid_command_is_a_disconnect_within_5_s() {
    let (server, mut phone, _dir) = setup();
    let serial = phone.serial.clone();
    let addr = server.addr();
    let worker = std::thread::spawn(move || {
        let mut dev = AdbDevice::new(&serial, addr);
        let start = Instant::now();
        let r = dev.run(&["sleep", "60"], Duration::from_secs(120));
        (r, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    phone.kill();
    let (r, _) = worker.join().unwrap();
    let after_kill = killed_at.elapsed();
    let err = r.unwrap_err();
    assert!(err.is_disconnect(), "{err}");
    assert!(
        after_kill < Duration::from_secs(5),
        "noticed after {after_kill:?}"
    );
    // And the next operation fails fast too, without hanging.
    let mut dev = AdbDevice::new(&phone.serial, server.addr());
    let start = Instant::now();
    assert!(
        dev.run(&["true"], Duration::from_secs(30))
            .unwrap_err()
            .is_disconnect()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[test]
fn metacharacters_in_serials_and_paths_run_nothing() {
    let (server, phone, dir) = setup();
    let canary = dir.path().join("canary");
    let touch = format!("touch {}", canary.display());
    // A hostile serial: the server refuses it; nothing runs.
    let mut bad = AdbDevice::new(&format!("x;{touch};$({touch})"), server.addr());
    assert!(bad.run(&["true"], T).is_err());
    // A hostile remote path: created verbatim in the sandbox, nothing executed.
    let mut dev = AdbDevice::new(&phone.serial, server.addr());
    let src = dir.path().join("src.txt");
    std::fs::write(&src, "payload").unwrap();
    let name = format!("a b;{touch};$({touch})`{touch}`'\"");
    let remote = format!("/data/local/tmp/{name}");
    assert!(matches!(
        dev.push(&src, &remote).unwrap(),
        PushOutcome::Pushed(7)
    ));
    let out = dev.run(&["cat", &remote], T).unwrap();
    assert_eq!(out.stdout_text(), "payload");
    let local = dir.path().join("state/root/data/local/tmp").join(&name);
    assert_eq!(std::fs::read_to_string(local).unwrap(), "payload");
    dev.remove(&remote).unwrap();
    assert!(!canary.exists(), "a metacharacter was executed");
}

/// Issue #19: the sync service stays in the phone's sandbox, through the real adb client: a
/// push through `..` or to a host path is refused and writes nothing; a pull of a host file is
/// refused.
#[test]
fn push_and_pull_cannot_leave_the_virtual_phone_sandbox() {
    let (server, phone, dir) = setup();
    let src = dir.path().join("payload");
    std::fs::write(&src, b"x").unwrap();
    let escape = dir.path().join("escaped");
    let through_dotdot = format!(
        "/data/{}{}",
        "../".repeat(16),
        escape.display().to_string().trim_start_matches('/')
    );
    for target in [through_dotdot.as_str(), escape.to_str().unwrap()] {
        let out = server
            .adb()
            .args(["-s", &phone.serial, "push"])
            .arg(&src)
            .arg(target)
            .output()
            .unwrap();
        assert!(!out.status.success(), "push to {target} succeeded: {out:?}");
        assert!(
            !escape.exists(),
            "push to {target} wrote {}",
            escape.display()
        );
    }
    let pulled = dir.path().join("pulled");
    let out = server
        .adb()
        .args(["-s", &phone.serial, "pull", "/etc/hostname"])
        .arg(&pulled)
        .output()
        .unwrap();
    assert!(!out.status.success() && !pulled.exists(), "{out:?}");
    // Inside the sandbox, both work.
    let out = server
        .adb()
        .args(["-s", &phone.serial, "push"])
        .arg(&src)
        .arg("/data/local/tmp/payload")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
