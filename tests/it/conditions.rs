//! Issue #19: rows say what the device actually gave. A virtual phone on a USB cable
//! (`virtual-device --usb-powered`) gets no energy figure, only `power_source = usb` and the
//! report's "on external power" line; `run --require-battery` waits for the cable to go (the
//! test unplugs it through the device's power file), then measures. A phone that moves pinned
//! threads elsewhere (`virtual-device --ignore-affinity`) gets the row's note and the report's
//! warning. A locked-down phone (`virtual-device --profile locked`: sysfs battery and
//! thermal nodes denied) is read through `dumpsys`, and the samples and report say so.
//! Fixed-performance mode holds the virtual phone's clocks for its cells and is restored.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::adb::{AdbServer, VirtualPhone};
use common::{assert_success, rows, socbench};
use socbench_reports::row::Status;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn run_args(phone: &VirtualPhone, server: &AdbServer, out: &Path) -> Vec<String> {
    let mut v = local_args(out);
    v.extend([
        "--device".into(),
        phone.serial.clone(),
        "--adb-server".into(),
        format!("127.0.0.1:{}", server.port),
    ]);
    v
}

fn local_args(out: &Path) -> Vec<String> {
    [
        "run",
        "--model",
        "synthetic:tiny",
        "--quant",
        "f32",
        "--threads",
        "1",
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "32",
        "--repetitions",
        "2",
        "--no-cooldown",
        "--no-probe",
        "--out",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([out.display().to_string()])
    .collect()
}

#[test]
fn energy_on_a_cable_is_not_reported_and_require_battery_waits_for_the_unplug() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let state = dir.path().join("phone");
    let phone = VirtualPhone::start(&state, &["--usb-powered"]);
    server.connect(&phone.serial);
    assert_eq!(
        std::fs::read_to_string(state.join("power")).unwrap().trim(),
        "usb"
    );

    // On the cable: measured, but no energy figure, and the rows say why.
    let cable = dir.path().join("cable");
    let out = socbench()
        .args(run_args(&phone, &server, &cable))
        .output()
        .unwrap();
    assert_success(&out);
    let r = rows(&cable);
    assert_eq!(r.len(), 2, "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        assert_eq!(row.power_source, "usb", "{row:?}");
        assert_eq!(row.energy_j, None, "{row:?}");
        assert_eq!(row.energy_per_token_j, None);
        assert_eq!(row.avg_power_w, None);
        assert_eq!(row.energy_source, "battery (simulated)");
        assert_eq!(row.charging, Some(true));
    }
    let html = std::fs::read_to_string(cable.join("report.html")).unwrap();
    assert!(
        html.contains("on external power (usb) — not the workload's"),
        "the report says why there is no energy"
    );

    // --require-battery with a short limit: the cells are skipped, with the reason.
    // Two cells: the first waits its second in vain, the second only checks.
    let short = dir.path().join("short");
    let mut args = run_args(&phone, &server, &short);
    let threads = args.iter().position(|a| a == "--threads").unwrap() + 1;
    args[threads] = "1,2".into();
    args.extend([
        "--require-battery".into(),
        "--battery-wait".into(),
        "1".into(),
    ]);
    let out = socbench().args(&args).output().unwrap();
    let r = rows(&short);
    assert_eq!(
        r.len(),
        4,
        "{r:?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in &r {
        assert_eq!(row.status, Status::Skipped, "{row:?}");
        assert!(
            row.note.contains("--require-battery") && row.note.contains("on usb power"),
            "{}",
            row.note
        );
    }
    let notes: Vec<&str> = r.iter().map(|row| row.note.as_str()).collect();
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.contains("for the 1 s it was given"))
            .count(),
        2,
        "the first cell waited: {notes:?}"
    );
    assert_eq!(
        notes
            .iter()
            .filter(|n| n.contains("later cells only check"))
            .count(),
        2,
        "the second did not wait again: {notes:?}"
    );
    // `--resume` keeps the requirement (here with every row to measure again): still skipped,
    // not measured on the cable.
    std::fs::remove_file(short.join("results.csv")).unwrap();
    let out = socbench()
        .args(["run", "--resume"])
        .arg(&short)
        .args(["--adb-server", &format!("127.0.0.1:{}", server.port)])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resuming with --require-battery"),
        "{stderr}"
    );
    let r = rows(&short);
    assert_eq!(r.len(), 4, "{r:?}\n{stderr}");
    assert!(r.iter().all(|row| row.status == Status::Skipped), "{r:?}");

    // --require-battery: the runner waits while the cable is in, and measures once it is out.
    let wait = dir.path().join("wait");
    let mut args = run_args(&phone, &server, &wait);
    args.extend([
        "--require-battery".into(),
        "--battery-wait".into(),
        "120".into(),
    ]);
    let child = Command::new(assert_cmd::cargo::cargo_bin("socbench"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the model is loaded the agent goes to the first cell and waits there.
    let events = wait.join("events.jsonl");
    let start = Instant::now();
    while !std::fs::read_to_string(&events).is_ok_and(|t| t.contains("\"loaded\"")) {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no agent started"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(rows(&wait).is_empty(), "measured while on the cable");
    std::fs::write(state.join("power"), "battery\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("for the device to run on its battery"),
        "{stderr}"
    );
    let r = rows(&wait);
    assert_eq!(r.len(), 2, "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        assert_eq!(row.power_source, "battery", "{row:?}");
        assert!(row.energy_j.is_some_and(|j| j > 0.0), "{row:?}");
        assert_eq!(row.charging, Some(false));
    }
}

#[test]
fn a_pin_the_device_did_not_honour_is_flagged_in_the_rows_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("one CPU: no other CPU to be moved to; nothing to check");
        return;
    }
    // On this host the pin takes: no note.
    let local = dir.path().join("local");
    let mut args = local_args(&local);
    args.extend([
        "--device".into(),
        "local".into(),
        "--affinity".into(),
        "0".into(),
    ]);
    assert_success(&socbench().args(&args).output().unwrap());
    for row in rows(&local) {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        assert_eq!(row.note, "", "{row:?}");
    }

    // A phone that moves the agent to the CPUs it did not ask for.
    let server = AdbServer::start();
    let phone = VirtualPhone::start(&dir.path().join("phone"), &["--ignore-affinity"]);
    server.connect(&phone.serial);
    let moved = dir.path().join("moved");
    let mut args = run_args(&phone, &server, &moved);
    args.extend(["--affinity".into(), "0".into()]);
    assert_success(&socbench().args(&args).output().unwrap());
    let r = rows(&moved);
    assert_eq!(r.len(), 2, "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "measured all the same: {row:?}");
        assert!(
            row.note
                .starts_with("affinity not honoured: asked for CPUs 0, threads ran on ")
                && !row.note.ends_with(" 0"),
            "{}",
            row.note
        );
    }
    let html = std::fs::read_to_string(moved.join("report.html")).unwrap();
    assert!(
        html.contains("affinity not honoured"),
        "the report flags it"
    );
}

/// `(sensor, source)` pairs of a `samples.csv`, with how many samples each has.
fn sample_sources(dir: &Path) -> std::collections::BTreeMap<(String, String), usize> {
    let path = dir.join("samples.csv");
    let bytes = std::fs::read(&path).unwrap();
    let (rows, _) = socbench_reports::row::parse_samples(&path, &bytes).unwrap();
    let mut m = std::collections::BTreeMap::new();
    for (_, r) in rows {
        *m.entry((r.sensor, r.source)).or_insert(0) += 1;
    }
    m
}

#[test]
fn a_locked_phone_is_read_through_its_services_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let phone = VirtualPhone::start(
        &dir.path().join("phone"),
        &["--profile", "locked", "--usb-powered"],
    );
    server.connect(&phone.serial);
    // The nodes are there and denied, to the shell and to adb pull alike.
    let out = server
        .adb()
        .args(["-s", &phone.serial, "shell"])
        .arg("cat /sys/class/thermal/thermal_zone0/temp /sys/class/power_supply/usb/online")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.matches("Permission denied").count(), 2, "{text}");
    let pulled = dir.path().join("temp");
    let out = server
        .adb()
        .args([
            "-s",
            &phone.serial,
            "pull",
            "/sys/class/thermal/thermal_zone0/temp",
        ])
        .arg(&pulled)
        .output()
        .unwrap();
    assert!(!out.status.success() && !pulled.exists());

    let locked = dir.path().join("locked");
    assert_success(
        &socbench()
            .args(run_args(&phone, &server, &locked))
            .output()
            .unwrap(),
    );
    let sources = sample_sources(&locked);
    let has = |sensor: &str, source: &str| {
        sources
            .get(&(sensor.to_owned(), source.to_owned()))
            .is_some_and(|n| *n > 0)
    };
    for s in ["battery_temp_c", "battery_capacity_pct", "power_source"] {
        assert!(has(s, "dumpsys"), "{s} from dumpsys battery: {sources:?}");
    }
    for s in ["thermal_skin_c", "thermal_cpu_c"] {
        assert!(has(s, "hal"), "{s} from the thermal HAL: {sources:?}");
    }
    assert!(has("android_thermal_status", "dumpsys"), "{sources:?}");
    assert!(
        !sources
            .keys()
            .any(|(n, s)| s == "sysfs" && (n.starts_with("thermal_") || n.starts_with("battery_"))),
        "nothing read from the denied nodes: {sources:?}"
    );
    assert!(has("cpu0_freq_mhz", "sysfs"), "cpufreq stays readable");
    // What powers it comes from `USB powered: true`: no energy, and the rows say why.
    for row in rows(&locked) {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        assert_eq!(row.power_source, "usb", "{row:?}");
        assert_eq!(row.energy_j, None, "{row:?}");
        // Run conditions, on every row: cpufreq policy, SELinux, the agent's scheduling and
        // cpuset, Android's thermal status and the battery level (from dumpsys here).
        assert_eq!(row.governor.split('/').next(), Some("schedutil"), "{row:?}");
        assert!(row.freq_limits_mhz.starts_with("300-"), "{row:?}");
        assert_eq!(row.selinux, "enforcing");
        assert!(row.sched.starts_with("SCHED_"), "{row:?}");
        assert!(
            !row.cpuset.is_empty() && !row.cpus_allowed.is_empty(),
            "{row:?}"
        );
        assert_eq!(row.thermal_status_start, Some(0), "{row:?}");
        assert!(row.thermal_status_end.is_some(), "{row:?}");
        assert!(row.battery_pct_start.is_some_and(|p| p > 0.0 && p <= 100.0));
    }
    let html = std::fs::read_to_string(locked.join("report.html")).unwrap();
    for s in [
        "Sensor sources",
        "<b>dumpsys</b>",
        "<b>hal</b>",
        "thermal_skin_c",
    ] {
        assert!(html.contains(s), "the report names the sources: {s}");
    }
}

#[test]
fn fixed_performance_mode_holds_the_clocks_for_its_cells_and_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let state = dir.path().join("phone");
    let phone = VirtualPhone::start(&state, &[]);
    server.connect(&phone.serial);
    let out = dir.path().join("perf");
    let mut args = run_args(&phone, &server, &out);
    // Paced, so each repetition spans several sensor samples (throttling can be judged).
    args.extend([
        "--perf-mode".into(),
        "default,fixed".into(),
        "--pacing-ms".into(),
        "20".into(),
    ]);
    assert_success(&socbench().args(&args).output().unwrap());
    let r = rows(&out);
    assert_eq!(r.len(), 4, "{r:?}");
    for row in &r {
        assert_eq!(row.status, Status::Ok, "{row:?}");
        // The virtual phone holds both clusters at 70 % of their top in the mode.
        let limits = match row.perf_mode.as_str() {
            "fixed" => "300-1260/300-1960",
            _ => "300-1800/300-2800",
        };
        assert_eq!(row.freq_limits_mhz, limits, "{row:?}");
        // Deliberate caps are not throttling; the default cells are judged (and cool).
        let judged = if row.perf_mode == "fixed" {
            None
        } else {
            Some(false)
        };
        assert_eq!(row.throttled, judged, "{row:?}");
    }
    assert_eq!(r.iter().filter(|x| x.perf_mode == "fixed").count(), 2);
    assert_eq!(
        std::fs::read_to_string(state.join("perf_mode"))
            .unwrap()
            .trim(),
        "default",
        "restored after the cell"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"perf-mode-vs-decode\""), "charted");

    // This host has no such mode: the cell is skipped with the reason, the rest measured.
    let local = dir.path().join("local");
    let mut args = local_args(&local);
    args.extend([
        "--device".into(),
        "local".into(),
        "--perf-mode".into(),
        "fixed,default".into(),
    ]);
    assert_success(&socbench().args(&args).output().unwrap());
    let r = rows(&local);
    assert_eq!(r.len(), 4, "{r:?}");
    for row in &r {
        match row.perf_mode.as_str() {
            "fixed" => {
                assert_eq!(row.status, Status::Skipped, "{row:?}");
                assert!(row.note.contains("cmd power"), "{}", row.note);
            }
            _ => assert_eq!(row.status, Status::Ok, "{row:?}"),
        }
    }
}
