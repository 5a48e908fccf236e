//! Snapshots of the summary exports, built from the hand-made fixture (no device, no model).
//! The version string is redacted so a release does not churn the snapshots.

use socbench_reports::export::{self, Format};
use socbench_reports::fixture::{Fixture, PHONE};
use socbench_reports::schema::{Metric, Status};
use socbench_reports::{ResultSet, analyze};

fn load(f: &Fixture) -> (tempfile::TempDir, ResultSet) {
    let dir = tempfile::tempdir().expect("tempdir");
    f.write(dir.path()).expect("writing the fixture");
    let set = ResultSet::load(&[dir.path()]).expect("the fixture reads");
    (dir, set)
}

fn redact(s: &str) -> String {
    s.replace(env!("CARGO_PKG_VERSION"), "[version]")
}

#[test]
fn summary_exports_match_their_snapshots() {
    let (_dir, set) = load(&Fixture::default());
    let a = analyze(&set);
    for (name, format) in [
        ("summary.csv", Format::Csv),
        ("summary.json", Format::Json),
        ("summary.md", Format::Markdown),
        ("summary.junit.xml", Format::Junit),
    ] {
        insta::assert_snapshot!(name, redact(&export::render(&a, format)));
    }
}

#[test]
fn the_analysis_counts_what_the_files_hold() {
    let f = Fixture::default();
    let (_dir, set) = load(&f);
    let a = analyze(&set);
    assert_eq!(a.cells.len(), f.cells());
    let t = a.totals();
    assert_eq!(t[&Status::Failed], f.reps as usize);
    assert_eq!(t[&Status::DeviceLost], f.reps as usize);
    // Power only where there is a sensor; battery impact from the design capacity.
    let phone = a.cells.iter().find(|c| c.key.device == PHONE).unwrap();
    assert!(phone.metric(Metric::AvgPowerW).is_some());
    let pct = phone.metric(Metric::Battery30MinPct).unwrap().median;
    let p = phone.metric(Metric::AvgPowerW).unwrap().median;
    // 4000 mAh × 3.9 V = 15.6 Wh; half an hour at p watts.
    assert!((pct - p * 0.5 / 15.6 * 100.0).abs() < 1e-9, "{pct} vs {p}");
    let local = a.cells.iter().find(|c| c.key.device == "local").unwrap();
    assert!(local.metric(Metric::AvgPowerW).is_none());
    // The q8 agent run throttles from 8 s on: seen in the rows and in the samples.
    let q8 = a
        .cells
        .iter()
        .filter(|c| c.key.device == PHONE && c.key.quant == "q8")
        .collect::<Vec<_>>();
    assert!(q8.iter().any(|c| c.throttled_reps.0 > 0));
    assert!(q8.iter().any(|c| c.time_to_throttle_s.is_some()));
}

#[test]
fn rows_superseded_by_a_retry_are_not_counted_twice() {
    let (dir, _) = load(&Fixture::default());
    let path = dir.path().join("results.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    // Retry the failed cell's first repetition successfully, as `--resume` would.
    let failed = text.lines().find(|l| l.contains(",failed,")).unwrap();
    let retried = failed.replace(",failed,", ",ok,");
    std::fs::write(&path, format!("{text}{retried}\n")).unwrap();
    let set = ResultSet::load(&[dir.path()]).unwrap();
    assert_eq!(set.superseded, 1);
    let a = analyze(&set);
    let t = a.totals();
    let f = Fixture::default();
    assert_eq!(t[&Status::Failed], f.reps as usize - 1);
}

#[test]
fn bad_input_names_file_line_and_column() {
    let (dir, _) = load(&Fixture::default());
    let path = dir.path().join("results.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[3] = lines[3].replacen(",ok,", ",fine,", 1);
    std::fs::write(&path, lines.join("\n")).unwrap();
    let e = ResultSet::load(&[dir.path()]).unwrap_err().to_string();
    assert!(e.contains("results.csv:4"), "{e}");
    assert!(
        e.contains("status") && e.contains("ok, failed, device_lost, skipped"),
        "{e}"
    );

    std::fs::write(&path, "a,b\n1,2\n").unwrap();
    let e = ResultSet::load(&[dir.path()]).unwrap_err().to_string();
    assert!(e.contains("missing column(s) run_id"), "{e}");

    let e = ResultSet::load(&[dir.path().join("nope")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope") && e.contains("results.csv"), "{e}");
}

#[test]
fn a_torn_last_row_is_a_warning() {
    let (dir, _) = load(&Fixture::default());
    let path = dir.path().join("results.csv");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("127.0.0.1:45001|flex|f32|t1|b1|kvfull|p16|g16|aall#9,s,m");
    std::fs::write(&path, text).unwrap();
    let set = ResultSet::load(&[dir.path()]).unwrap();
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert!(set.warnings[0].contains("incomplete last row"));
}

#[test]
fn cells_measured_under_other_run_conditions_are_flagged() {
    let (_dir, set) = load(&Fixture::default());
    let a = analyze(&set);
    // The phone's thermal daemon caps the big cluster while it throttles (q8 run, from 8 s).
    let changed: Vec<_> = a.cells.iter().filter(|c| c.conditions.len() > 1).collect();
    assert!(!changed.is_empty(), "some q8 cell straddles the cap");
    for c in &changed {
        assert!(
            c.warnings.iter().any(|w| w.starts_with(
                "run conditions changed between repetitions: frequency limits (MHz) \
                 300-1800/300-2800 → 300-1800/300-2000"
            )),
            "{:?}",
            c.warnings
        );
    }
    let f32_cells = a
        .cells
        .iter()
        .filter(|c| c.key.device == PHONE && c.key.quant == "f32");
    for c in f32_cells {
        assert_eq!(c.conditions.len(), 1, "{:?}", c.key);
        assert_eq!(c.thermal_status, (Some(0), Some(0)));
    }
    let html = socbench_reports::html::render(&set, &a);
    let section = html
        .split("<h2 id=\"conditions\">")
        .nth(1)
        .and_then(|s| s.split("<h2").next())
        .expect("a run conditions section");
    assert!(
        section.contains("cells were measured under 2 different run conditions"),
        "{section}"
    );
    assert!(section.contains("300-1800/300-2000") && section.contains("/user.slice"));
}

/// A sustained session's test case lasts the session: its length × the `ok` repetitions, not
/// one generation's prefill and decode.
#[test]
fn junit_time_of_a_sustained_cell_is_its_sessions() {
    use socbench_reports::fixture::cell_key;
    use socbench_reports::row::{RESULT_COLUMNS, ResultRow};
    let dir = tempfile::tempdir().unwrap();
    let mut key = cell_key("local", "m.gguf@0", "q4");
    key.duration_s = 60;
    key.gen_tokens = 8;
    let mut csv = RESULT_COLUMNS.join(",") + "\n";
    for rep in 0..2u32 {
        let mut row = ResultRow::new(format!("m|session#{rep}"), &key, rep, Status::Ok);
        row.set(Metric::TtftS, Some(0.1));
        row.set(Metric::DecodeMsPerToken, Some(10.0));
        row.set(Metric::DecodeTokPerS, Some(100.0));
        csv.push_str(&String::from_utf8_lossy(&row.to_csv_line().unwrap()));
    }
    std::fs::write(dir.path().join("results.csv"), csv).unwrap();
    let set = ResultSet::load(&[dir.path()]).unwrap();
    let xml = export::render(&analyze(&set), Format::Junit);
    assert!(xml.contains("time=\"120.000\">"), "{xml}");
}
