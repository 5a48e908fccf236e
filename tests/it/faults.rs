//! Issue #15: the run path loses nothing and measures nothing twice. Each test drives the real
//! binary into one fault (the README's fault matrix) and checks what the user sees and that no
//! row is lost or mixed up.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::adb::{AdbServer, VirtualPhone};
use common::{assert_success, socbench};
use socbench_reports::row::{ResultRow, Status, parse_results};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The effective rows of a result directory (a later row for a run id supersedes an earlier
/// non-ok one), by run id; fails on a torn or unreadable file.
fn rows(dir: &Path) -> BTreeMap<String, Vec<ResultRow>> {
    let path = dir.join("results.csv");
    let f = parse_results(&path, &std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(f.torn, None, "{} has a torn row", path.display());
    let mut out: BTreeMap<String, Vec<ResultRow>> = BTreeMap::new();
    for (_, r) in f.rows {
        out.entry(r.run_id.clone()).or_default().push(r);
    }
    out
}

fn final_status(rows: &[ResultRow]) -> Status {
    match rows.iter().find(|r| r.status == Status::Ok) {
        Some(_) => Status::Ok,
        None => rows.last().unwrap().status,
    }
}

fn ok_rows(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("results.csv"))
        .map(|t| t.lines().filter(|l| l.contains(",ok,")).count())
        .unwrap_or(0)
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` is a live process (a zombie has finished).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Pids of measuring agents (`… run …plan-…json`) whose command line mentions `needle`.
fn agents(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_agent = args.iter().any(|a| a == "run")
            && args
                .iter()
                .any(|a| a.contains("plan-") && a.contains(needle));
        if is_agent && alive(pid) {
            out.push(pid);
        }
    }
    out
}

/// The first agent's pid, from its `hello` event.
fn agent_pid(out: &Path) -> Option<u32> {
    let ev = std::fs::read_to_string(out.join("events.jsonl")).unwrap_or_default();
    ev.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "hello")
        .and_then(|v| v["pid"].as_u64())
        .map(|p| p as u32)
}

/// `socbench run --model MODEL` at f32 with 16-token prompts, no probe or cool-down, into
/// `out`, with `extra` flags.
fn run_args(model: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "run",
        "--model",
        model,
        "--no-probe",
        "--no-cooldown",
        "--quant",
        "f32",
        "--prompt-tokens",
        "16",
        "--out",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(out.display().to_string());
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

/// The tiny model on the local host: quick cells.
fn tiny_run(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut more = vec!["--device", "local", "--gen-tokens", "8"];
    more.extend(extra);
    run_args("synthetic:tiny", out, &more)
}

/// The real model on the local host: about a second per repetition, so faults land mid-run.
fn real_run(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut more = vec!["--device", "local"];
    more.extend(extra);
    run_args(&common::real_model().display().to_string(), out, &more)
}

fn spawn(args: &[String], own_group: bool) -> std::process::Child {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("socbench"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    if own_group {
        c.process_group(0);
    }
    c.spawn().unwrap()
}

#[test]
fn a_directory_of_another_model_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let first = socbench()
        .args(tiny_run(&out, &["--repetitions", "1", "--threads", "1"]))
        .output()
        .unwrap();
    assert_success(&first);
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    let results = std::fs::read(out.join("results.csv")).unwrap();
    // The same directory, the real model: refused before anything runs.
    let model = common::real_model().display().to_string();
    let second = socbench()
        .args(["run", "--model", &model, "--device", "local", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("holds results of model synthetic:tiny") && err.contains("--out"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
    assert_eq!(std::fs::read(out.join("results.csv")).unwrap(), results);
    // Another plan of the same model: refused too; the same plan extended: continued.
    let other = socbench()
        .args(tiny_run(&out, &["--repetitions", "1", "--threads", "2"]))
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&other.stderr).contains("outside this run's plan"));
    let more = socbench()
        .args(tiny_run(&out, &["--repetitions", "2", "--threads", "1"]))
        .output()
        .unwrap();
    assert_success(&more);
    let r = rows(&out);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(
        r.values()
            .all(|v| v.len() == 1 && v[0].status == Status::Ok)
    );
    // `--resume` with a setting flag would change the stored sweep: refused.
    let resumed = socbench()
        .args(["run", "--resume"])
        .arg(&out)
        .args(["--threads", "4"])
        .output()
        .unwrap();
    assert_eq!(resumed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("--threads would change it"));
}

#[test]
fn a_torn_last_row_is_set_aside_and_measured_again_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let args = tiny_run(&out, &["--repetitions", "3", "--threads", "1,2"]);
    assert_success(&socbench().args(&args).output().unwrap());
    // Cut the last ok row after its status column: what a crash mid-write leaves.
    let path = out.join("results.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let cut = text.rfind(",ok,").unwrap() + 3;
    std::fs::write(&path, &text[..cut]).unwrap();
    let resumed = socbench()
        .args(["run", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&resumed);
    assert!(
        String::from_utf8_lossy(&resumed.stderr).contains("results.csv.torn"),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let r = rows(&out);
    assert_eq!(r.len(), 6, "{r:?}");
    for (id, v) in &r {
        assert_eq!(v.len(), 1, "{id}: {v:?}");
        assert_eq!(v[0].status, Status::Ok, "{id}");
    }
    let torn = std::fs::read_to_string(out.join("results.csv.torn")).unwrap();
    assert!(torn.trim_end().ends_with(",ok"), "{torn}");
    // The report side sees every cell complete.
    let set = socbench_reports::ResultSet::load(&[&out]).unwrap();
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    for c in socbench_reports::analyze(&set).cells {
        assert_eq!(c.count(Status::Ok), 3, "{c:?}");
    }
}

#[test]
fn a_multi_line_note_from_the_device_round_trips_through_results_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let reason =
        "out of memory, allocating \"kv\":\n  at layer 3\r\nretry with, say, --kv-window 64";
    let run = socbench()
        .args(tiny_run(&out, &["--repetitions", "2", "--threads", "1"]))
        .env("SOCBENCH_TEST_AGENT_FAIL", reason)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1), "nothing ok: exit 1");
    let r = rows(&out);
    assert_eq!(r.len(), 2, "{r:?}");
    for v in r.values() {
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].status, Status::Failed);
        assert_eq!(v[0].note, reason);
    }
    // The report side reads the same text, and a resume appends after it cleanly.
    let set = socbench_reports::ResultSet::load(&[&out]).unwrap();
    assert!(set.records.iter().all(|x| x.note == reason));
    let resumed = socbench()
        .args(["run", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&resumed);
    let r = rows(&out);
    assert!(r.values().all(|v| final_status(v) == Status::Ok), "{r:?}");
    assert!(out.join("report.html").is_file());
}

#[test]
fn kill_9_of_the_controller_takes_the_local_agent_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let args = real_run(
        &out,
        &[
            "--gen-tokens",
            "64",
            "--repetitions",
            "20",
            "--threads",
            "1",
        ],
    );
    let mut child = spawn(&args, false);
    let mut pid = None;
    wait_until(
        "the agent's first repetition",
        Duration::from_secs(120),
        || {
            pid = agent_pid(&out);
            pid.is_some() && ok_rows(&out) >= 1
        },
    );
    let pid = pid.unwrap();
    assert!(alive(pid));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let killed = Instant::now();
    wait_until(
        "the agent to die with its controller",
        Duration::from_secs(5),
        || !alive(pid),
    );
    eprintln!("agent gone {:?} after the controller", killed.elapsed());
    // Nothing written is lost: the directory reads, and resumes to completion.
    let before = ok_rows(&out);
    assert!(before >= 1);
    let _ = rows(&out);
}

#[test]
fn a_resumed_sweep_on_the_virtual_device_never_runs_two_agents() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    let state = dir.path().join("phone");
    let phone = VirtualPhone::start(&state, &[]);
    server.connect(&phone.serial);
    let out = dir.path().join("res");
    let adb = format!("127.0.0.1:{}", server.port);
    let model = common::real_model().display().to_string();
    let args = run_args(
        &model,
        &out,
        &[
            "--device",
            &phone.serial,
            "--adb-server",
            &adb,
            "--gen-tokens",
            "32",
            "--repetitions",
            "4",
            "--threads",
            "1",
        ],
    );
    let needle = state.display().to_string();
    let mut child = spawn(&args, false);
    wait_until("a first result", Duration::from_secs(180), || {
        ok_rows(&out) >= 1
    });
    assert_eq!(agents(&needle).len(), 1, "one agent measures");
    child.kill().unwrap();
    child.wait().unwrap();
    // Resume at once, watching the device's agents all along.
    let resume = [
        "run",
        "--resume",
        &out.display().to_string(),
        "--adb-server",
        &adb,
    ]
    .map(String::from);
    let mut resumed = spawn(&resume, false);
    let mut most = 0;
    let status = loop {
        most = most.max(agents(&needle).len());
        if let Some(s) = resumed.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "{status}");
    assert!(most <= 1, "{most} agents measured at once on the device");
    let finals: BTreeMap<String, Status> = rows(&out)
        .into_iter()
        .map(|(id, v)| (id, final_status(&v)))
        .collect();
    assert_eq!(finals.len(), 4, "{finals:?}");
    assert!(finals.values().all(|s| *s == Status::Ok), "{finals:?}");
}

#[test]
fn ctrl_c_to_the_process_group_finishes_the_repetition_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let args = real_run(
        &out,
        &[
            "--warmup",
            "0",
            "--gen-tokens",
            "48",
            "--repetitions",
            "8",
            "--threads",
            "1",
        ],
    );
    // Its own group, as a shell gives a foreground job: the terminal's Ctrl-C goes to all of it.
    let mut child = spawn(&args, true);
    wait_until("a first result", Duration::from_secs(120), || {
        ok_rows(&out) >= 1
    });
    // A second session on the same directory would measure the same repetitions: refused.
    let second = socbench()
        .args(["run", "--resume"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another socbench run is writing"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // Repetitions run back to back: one is in flight now.
    let before = ok_rows(&out);
    let group = format!("-{}", child.id());
    let sent = Command::new("kill")
        .args(["-s", "INT", "--", &group])
        .status()
        .unwrap();
    assert!(sent.success());
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let r = rows(&out);
    let statuses: Vec<Status> = r.values().flatten().map(|x| x.status).collect();
    assert!(
        statuses.iter().all(|s| *s == Status::Ok),
        "the repetition in flight must finish, not fail: {statuses:?}"
    );
    assert!(
        ok_rows(&out) > before,
        "the repetition in flight was not kept ({before} ok before the signal)"
    );
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert!(
        events.contains("\"event\":\"interrupted\""),
        "the agent stopped by itself"
    );
}

#[test]
fn a_hung_agent_is_killed_its_cell_failed_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("res");
    let args = tiny_run(
        &out,
        &[
            "--repetitions",
            "2",
            "--threads",
            "1,2",
            "--hang-timeout",
            "3",
        ],
    );
    let t0 = Instant::now();
    let run = socbench()
        .args(&args)
        // The test hook: the agent of the one-thread cell stops emitting after it starts.
        .env("SOCBENCH_TEST_AGENT_HANG", "|t1|")
        .output()
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(run.status.code(), Some(1), "a failed cell fails the sweep");
    let r = rows(&out);
    assert_eq!(r.len(), 4, "{r:?}");
    for (id, v) in &r {
        let last = v.last().unwrap();
        if id.contains("|t1|") {
            assert_eq!(last.status, Status::Failed, "{id}");
            assert!(last.note.starts_with("hung"), "{id}: {}", last.note);
        } else {
            assert_eq!(last.status, Status::Ok, "{id}: the sweep went on");
        }
    }
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // Every cell hung: nothing was measured, and the exit status says so.
    let out2 = dir.path().join("res2");
    let run = socbench()
        .args(tiny_run(
            &out2,
            &[
                "--repetitions",
                "1",
                "--threads",
                "1",
                "--hang-timeout",
                "2",
            ],
        ))
        .env("SOCBENCH_TEST_AGENT_HANG", "|")
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
}

#[test]
fn run_needs_nothing_beside_the_socbench_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("socbench");
    std::fs::copy(assert_cmd::cargo::cargo_bin("socbench"), &exe).unwrap();
    let out = dir.path().join("res");
    let run = Command::new(&exe)
        .args(tiny_run(&out, &["--repetitions", "1", "--threads", "1"]))
        .output()
        .unwrap();
    assert_success(&run);
    let r = rows(&out);
    assert_eq!(r.len(), 1);
    assert!(r.values().all(|v| v[0].status == Status::Ok), "{r:?}");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("missing"), "{stderr}");
}
