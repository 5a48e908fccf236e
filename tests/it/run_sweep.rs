//! Issue #4: `socbench run` end to end on the host and on the virtual device, with faults.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::adb::{AdbServer, VirtualPhone};
use common::{assert_success, socbench};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (run_id → statuses in file order) and the header, read with the results' own reader.
fn results(dir: &Path) -> (Vec<String>, HashMap<String, Vec<String>>) {
    let path = dir.join("results.csv");
    let f = socbench_reports::row::parse_results(&path, &std::fs::read(&path).unwrap()).unwrap();
    let mut rows: HashMap<String, Vec<String>> = HashMap::new();
    for (_, r) in f.rows {
        rows.entry(r.run_id)
            .or_default()
            .push(r.status.name().to_owned());
    }
    (f.header, rows)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn ok_rows(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("results.csv"))
        .map(|t| t.lines().filter(|l| l.contains(",ok,")).count())
        .unwrap_or(0)
}

#[test]
fn default_sweep_on_this_host_writes_every_file() {
    common::real_model();
    let dir = tempfile::tempdir().unwrap();
    // No arguments at all: the embedded sweep, the default model, this host.
    let out = socbench()
        .arg("run")
        .current_dir(dir.path())
        .env(
            "ANDROID_ADB_SERVER_PORT",
            common::adb::free_port().to_string(),
        )
        .output()
        .unwrap();
    assert_success(&out);
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("socbench-results"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
    let res = runs[0].as_ref().unwrap().path();
    for f in [
        "results.csv",
        "samples.csv",
        "events.jsonl",
        "manifest.json",
        "report.html",
    ] {
        assert!(res.join(f).is_file(), "{f} missing");
    }
    let (header, rows) = results(&res);
    for col in [
        "run_id",
        "ttft_s",
        "decode_tok_per_s",
        "peak_rss_bytes",
        "energy_per_token_j",
        "throttled",
        "charging",
        "session",
        "model",
    ] {
        assert!(header.iter().any(|h| h == col), "no column {col}");
    }
    // The embedded sweep's size, as the dry run counts it.
    let plan = socbench().args(["run", "--dry-run"]).output().unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let cells = plan["cells_per_device"].as_u64().unwrap() as usize;
    let reps = plan["sweep"]["repetitions"].as_u64().unwrap() as usize;
    // Both runtimes × threads 1 and all cores × f32, q8, q4 × prompts, and the extra grids
    // (ndarray, batch 4, a KV window); one thread is all cores on a one-core machine.
    let cores = std::thread::available_parallelism().unwrap().get();
    assert!(cells >= 24, "{plan}");
    // The report at the end of the run holds one table row per cell.
    let html = std::fs::read_to_string(res.join("report.html")).unwrap();
    let drawn = html.matches("<tr class=\"cell").count();
    if cores > 1 {
        assert_eq!(drawn, cells);
    }
    assert_eq!(rows.len(), drawn * reps);
    assert!(rows.values().all(|s| s == &["ok"]));
    // What socbench is for, on a first run (issue #34): Burn beside llama.cpp, and the batch
    // and KV-window charts drawn.
    let section = &html[html.find("id=\"runtimes\"").unwrap()..];
    let table = &section[..section.find("</table>").unwrap()];
    assert!(table.matches("<tr><td>").count() >= 12, "{table}");
    for id in ["throughput-vs-batch", "kv-vs-memory", "kv-vs-latency"] {
        assert!(html.contains(&format!("id=\"{id}\"")), "{id} not drawn");
    }
    // The run says where its report is.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("report.html"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(res.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["finished"], true);
    assert_eq!(m["devices"][0]["target"]["kind"], "local");
    assert!(m["git_hash"].as_str().is_some_and(|h| !h.is_empty()));
    // The host was probed once; every row is placed against its roofs.
    let roof = &m["devices"][0]["outcome"]["roofline"];
    for kind in ["triad", "gemm"] {
        let pts = roof[kind].as_array().unwrap();
        assert_eq!(pts.len(), if cores > 1 { 2 } else { 1 }, "{roof}");
        assert!(
            pts.iter().all(|p| p["best"].as_f64().unwrap() > 0.0),
            "{roof}"
        );
    }
    let set = socbench_reports::ResultSet::load(&[&res]).unwrap();
    use socbench_reports::schema::Metric;
    for r in &set.records {
        let bytes = r.get(Metric::WeightBytesPerStep).unwrap();
        // SmolLM2: 30 blocks of projections plus the tied output, about 0.54 GB at f32,
        // 0.15 GB at q8 and 0.11 GB at q4.
        let expected = match r.key.quant.as_str() {
            "f32" => 4.0e8..7.0e8,
            "q8" => 1.2e8..1.8e8,
            _ => 0.8e8..1.4e8,
        };
        assert!(expected.contains(&bytes), "{} {bytes}", r.key.quant);
        let bw = r.get(Metric::DecodeBwFraction).unwrap();
        let gemm = r.get(Metric::PrefillGemmFraction).unwrap();
        assert!(bw > 0.0 && gemm > 0.0, "{}: {bw} {gemm}", r.run_id);
        // The spread of the step times (issue #19): ordered, around the mean step, the
        // longest step at least the mean.
        let q: Vec<f64> = [
            Metric::DecodeP50Ms,
            Metric::DecodeP90Ms,
            Metric::DecodeP99Ms,
            Metric::DecodeMaxMs,
        ]
        .map(|m| r.get(m).unwrap())
        .to_vec();
        let mean = r.get(Metric::DecodeMsPerToken).unwrap();
        assert!(
            q.windows(2).all(|w| w[0] <= w[1]) && q[0] > 0.0 && q[3] >= mean && q[0] < 2.0 * mean,
            "{}: steps {q:?}, mean {mean}",
            r.run_id
        );
    }
    assert!(html.contains("id=\"roofline\"") && html.contains("Decode, % of triad"));
    assert!(html.contains("id=\"token-latency\"") && html.contains("Longest step"));
}

#[test]
fn a_malformed_sweep_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sweep.toml");
    std::fs::write(
        &cfg,
        "backend = [\"flex\"]\nquant = [\"f32\"]\nthreads = [2, \"many\"]\n",
    )
    .unwrap();
    let out = socbench()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sweep.toml:3") && err.contains("threads") && err.contains("cores"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Dry run prints the plan size and touches nothing.
    let out = socbench()
        .args([
            "run",
            "--dry-run",
            "--threads",
            "1,2",
            "--quant",
            "f32,q8",
            "--prompt-tokens",
            "32",
            "--out",
        ])
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["cells_per_device"], 4);
    assert!(!dir.path().join("never").exists());
}

/// `socbench ARGS` in the background, output discarded (the tests read the result files).
fn spawn_socbench(args: &[String]) -> std::process::Child {
    Command::new(assert_cmd::cargo::cargo_bin("socbench"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_args(out: &Path) -> Vec<String> {
    // The real model: about a second per repetition here, so faults land mid-sweep.
    let model = common::real_model().display().to_string();
    let mut v: Vec<String> = [
        "run",
        "--model",
        &model,
        "--quant",
        "f32",
        "--gen-tokens",
        "16",
        "--prompt-tokens",
        "16",
        "--repetitions",
        "3",
        "--threads",
        "1,2",
        "--device-wait",
        "1",
        "--out",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(out.display().to_string());
    v
}

#[test]
fn virtual_device_lost_midway_then_resume_completes_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let state = dir.path().join("phone");
    let mut phone = VirtualPhone::start(&state, &[]);
    server.connect(&phone.serial);
    let out = dir.path().join("res");
    let mut args = run_args(&out);
    args.extend([
        "--device".into(),
        phone.serial.clone(),
        "--adb-server".into(),
        format!("127.0.0.1:{}", server.port),
    ]);
    let mut child = spawn_socbench(&args);
    wait_until("a first result", Duration::from_secs(120), || {
        ok_rows(&out) >= 1
    });
    let port = phone.port();
    phone.kill();
    let status = child.wait().unwrap();
    // A lost device is a normal event (no panic, every other row kept), and an incomplete
    // sweep: exit 1, so CI cannot take it for a pass.
    assert_eq!(status.code(), Some(1), "{status}");
    let (_, rows) = results(&out);
    let lost = rows
        .values()
        .filter(|s| s.last().is_some_and(|x| x == "device_lost"))
        .count();
    assert!(lost >= 1, "{rows:?}");

    let phone = VirtualPhone::start_on(port, &state, &[]);
    server.connect(&phone.serial);
    let resumed = socbench()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--adb-server", &format!("127.0.0.1:{}", server.port)])
        .output()
        .unwrap();
    assert_success(&resumed);
    let (_, rows) = results(&out);
    assert_eq!(rows.len(), 6, "{rows:?}");
    for (id, statuses) in &rows {
        let oks = statuses.iter().filter(|s| *s == "ok").count();
        assert_eq!(oks, 1, "{id}: {statuses:?}");
        assert_eq!(statuses.last().unwrap(), "ok", "{id}: {statuses:?}");
    }
    // The virtual phone's sensors are labelled simulated.
    let text = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert!(
        text.lines()
            .filter(|l| l.contains(",ok,"))
            .all(|l| l.contains("simulated"))
    );
    // Two sessions wrote into the directory; the report side sees every cell complete once.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["sessions"].as_array().map(Vec::len), Some(2), "{m}");
    let set = socbench_reports::ResultSet::load(&[&out]).unwrap();
    let a = socbench_reports::analyze(&set);
    assert_eq!(a.cells.len(), 2);
    for c in &a.cells {
        assert_eq!(c.count(socbench_reports::schema::Status::Ok), 3, "{c:?}");
        assert_eq!(c.sensors, "simulated");
    }
    assert!(out.join("report.html").is_file());
    // Energy by phase: prefill and decode split the repetition's integral at the first token.
    use socbench_reports::schema::Metric;
    let measured: Vec<_> = set
        .records
        .iter()
        .filter(|r| r.get(Metric::EnergyJ).is_some())
        .collect();
    assert_eq!(measured.len(), 6, "every repetition has a battery integral");
    for r in measured {
        let (p, d, e) = (
            r.get(Metric::PrefillEnergyJ).unwrap(),
            r.get(Metric::DecodeEnergyJ).unwrap(),
            r.get(Metric::EnergyJ).unwrap(),
        );
        assert!(p > 0.0 && d > 0.0, "{}: {p} {d}", r.run_id);
        assert!(
            (p + d - e).abs() <= 1e-6 * e,
            "{}: {p} + {d} != {e}",
            r.run_id
        );
    }
}

#[test]
fn kill_9_of_the_agent_fails_its_cell_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let mut args = run_args(&out);
    args.extend(["--device".into(), "local".into()]);
    let mut child = spawn_socbench(&args);
    let mut pid = None;
    wait_until(
        "the first agent's first repetition",
        Duration::from_secs(120),
        || {
            let ev = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
            pid = ev
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["event"] == "hello")
                .and_then(|v| v["pid"].as_u64());
            pid.is_some() && ok_rows(&out) >= 1
        },
    );
    let killed = Command::new("kill")
        .args(["-9", &pid.unwrap().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The sweep went on, and ends with exit 1: a cell failed.
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let text = std::fs::read_to_string(out.join("results.csv")).unwrap();
    let failed: Vec<&str> = text.lines().filter(|l| l.contains(",failed,")).collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|l| l.contains("signal 9")),
        "{text}"
    );
    // The other cell (the second agent) completed.
    let (_, rows) = results(&out);
    let t2_ok = rows
        .iter()
        .filter(|(k, s)| k.contains("|t2|") && s == &&vec!["ok".to_owned()])
        .count();
    assert_eq!(t2_ok, 3, "{rows:?}");
}

#[test]
fn sigint_exits_130_and_leaves_a_resumable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let mut args = run_args(&out);
    args.extend(["--device".into(), "local".into()]);
    let mut child = spawn_socbench(&args);
    wait_until("a first result", Duration::from_secs(120), || {
        ok_rows(&out) >= 1
    });
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let before = ok_rows(&out);
    assert!(before < 6, "interrupted after everything ran");
    let resumed = socbench()
        .args(["run", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&resumed);
    let (_, rows) = results(&out);
    assert_eq!(rows.len(), 6);
    assert!(rows.values().all(|s| s == &["ok"]), "{rows:?}");
}

#[test]
fn quality_scores_each_variant_and_the_report_sets_it_beside_speed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let run = socbench()
        .args([
            "run",
            "--model",
            "synthetic:tiny",
            "--device",
            "local",
            "--quant",
            "f32,q8",
            "--prompt-tokens",
            "16",
            "--threads",
            "1",
            "--repetitions",
            "2",
            "--no-probe",
            "--quality",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&run);
    let set = socbench_reports::ResultSet::load(&[&out]).unwrap();
    use socbench_reports::schema::Metric;
    let ppl = |quant: &str| -> Vec<f64> {
        set.records
            .iter()
            .filter(|r| r.key.quant == quant)
            .map(|r| r.get(Metric::Perplexity).unwrap())
            .collect()
    };
    let (f, q) = (ppl("f32"), ppl("q8"));
    assert_eq!((f.len(), q.len()), (2, 2));
    // Once per variant: every repetition of a variant carries the same figure.
    assert_eq!(f[0], f[1]);
    assert_eq!(q[0], q[1]);
    // q8 changes the weights, so the figure moves, but not far.
    assert_ne!(f[0], q[0]);
    assert!((q[0] / f[0] - 1.0).abs() < 0.05, "{f:?} {q:?}");
    // Without the probe there is no roofline, and the report says so.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<table class=\"quality\">"),
        "no quality table"
    );
    // And the chart beside it, with both levels in its legend.
    let chart = html
        .split("<figure class=\"chart\" id=\"quality-vs-speed\">")
        .nth(1)
        .and_then(|rest| rest.split("</figure>").next())
        .expect("no quality-vs-speed chart");
    assert!(chart.contains("<svg"), "{chart:.300}");
    let texts: Vec<&str> = chart
        .split("</text>")
        .filter_map(|t| t.rsplit('>').next())
        .map(str::trim)
        .collect();
    for quant in ["f32", "q8"] {
        assert!(
            texts.contains(&quant),
            "{quant} not in the legend: {texts:?}"
        );
    }
    assert!(html.contains("no device was probed"));
}
