//! `socbench report` and `socbench compare` on hand-made result directories: the HTML report
//! in headless Chromium, the summary formats, and compare's exit codes.

#![allow(clippy::unwrap_used)]
use crate::common;

use common::browser::headless;
use common::{assert_success, socbench};
use socbench_reports::fixture::{Fixture, PHONE};
use std::path::{Path, PathBuf};

fn fixture(dir: &Path, name: &str, f: &Fixture) -> PathBuf {
    let d = dir.join(name);
    f.write(&d).unwrap();
    d
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::default();
    let dir = fixture(tmp.path(), "res", &f);
    let out = socbench().arg("report").arg(&dir).output().unwrap();
    assert_success(&out);
    let page = dir.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch, no script.
    for banned in ["<script", "src=\"http", "href=\"http", "@import", "url("] {
        assert!(!html.contains(banned), "the page contains {banned}");
    }

    let (dom, console) = headless(&page, &["--dump-dom"]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    // One table row per cell.
    assert_eq!(dom.matches("<tr class=\"cell").count(), f.cells(), "{dom}");
    // Every chart is an SVG, and the expected charts are all there.
    let figures: Vec<&str> = dom.split("<figure class=\"chart\"").skip(1).collect();
    assert!(!figures.is_empty());
    for fig in &figures {
        let body = &fig[..fig.find("</figure>").unwrap()];
        assert!(body.contains("<svg"), "a chart without SVG: {body:.200}");
    }
    let slug: String = PHONE
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    for id in [
        "decode-vs-threads".to_owned(),
        "ttft-vs-prompt".into(),
        "throughput-vs-batch".into(),
        "kv-vs-memory".into(),
        "kv-vs-latency".into(),
        "device-vs-device".into(),
        format!("timeline-power-{slug}"),
        format!("timeline-temperature-{slug}"),
        format!("timeline-frequency-{slug}"),
    ] {
        assert!(dom.contains(&format!("id=\"{id}\"")), "chart {id} missing");
    }
    // The device named `<script>alert(1)</script>` is text, not markup.
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!dom.contains("<script"));
    // Missing and simulated sensors are said where the numbers would be.
    assert!(dom.contains("no sensor"));
    assert!(dom.contains("simulated sensors"));

    let shot = tmp.path().join("shot.png");
    let (_, console) = headless(
        &page,
        &[
            "--window-size=1280,2400",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(console.is_empty(), "console messages: {console:#?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let pixels: Vec<&[u8]> = buf[..info.buffer_size()].chunks(px).collect();
    let inked = pixels
        .iter()
        .filter(|p| p[..3].iter().any(|&c| c < 200))
        .count();
    let mut colours: Vec<[u8; 3]> = pixels.iter().map(|p| [p[0], p[1], p[2]]).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(
        inked * 100 > pixels.len(),
        "the screenshot is blank: {inked} dark pixels of {}",
        pixels.len()
    );
    assert!(colours.len() > 20, "only {} colours", colours.len());
}

/// The console check above can fail: a page that breaks its own policy is caught.
#[test]
fn a_page_that_fetches_is_caught_by_the_console_check() {
    let tmp = tempfile::tempdir().unwrap();
    let page = tmp.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'\"></head>\
         <body><img src=\"http://example.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let (_, console) = headless(&page, &["--dump-dom"]);
    assert!(
        !console.is_empty(),
        "a blocked fetch must show on the console"
    );
}

#[test]
fn summary_formats_go_to_stdout_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture::default();
    let dir = fixture(tmp.path(), "res", &f);
    for (format, probe) in [
        ("csv", "device,runtime,backend,quant"),
        ("json", "\"cells\""),
        ("md", "| Configuration |"),
        ("junit", "<testsuites"),
    ] {
        let out = socbench()
            .args(["report", "--format", format])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{format}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(probe),
            "{format}"
        );
    }
    let out = socbench()
        .args(["report", "--format", "pdf"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pdf") && err.contains("csv, json, md, junit"),
        "{err}"
    );
    // A directory that is not a result directory: one error naming the file.
    let out = socbench().arg("report").arg(tmp.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("results.csv"));
}

fn compare(base: &Path, new: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = socbench()
        .arg("compare")
        .arg(base)
        .arg(new)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn compare_exits_1_only_on_a_significant_regression() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture(tmp.path(), "base", &Fixture::default());
    let same = fixture(tmp.path(), "same", &Fixture::default());
    let faster = fixture(
        tmp.path(),
        "faster",
        &Fixture {
            speed: 1.2,
            ..Fixture::default()
        },
    );
    let slower = fixture(
        tmp.path(),
        "slower",
        &Fixture {
            speed: 0.8,
            ..Fixture::default()
        },
    );
    // 3 % slower in the median, but with ±30 % noise: the interval reaches past the threshold.
    let noisy = fixture(
        tmp.path(),
        "noisy",
        &Fixture {
            speed: 0.97,
            noise: 0.2,
            ..Fixture::default()
        },
    );

    let (code, md, _) = compare(&base, &same, &[]);
    assert_eq!(code, Some(0), "{md}");
    assert!(md.contains("no significant regression"), "{md}");

    let (code, md, _) = compare(&base, &faster, &[]);
    assert_eq!(code, Some(0), "{md}");
    assert!(md.contains("improved"), "{md}");

    let (code, md, _) = compare(&base, &noisy, &[]);
    assert_eq!(code, Some(0), "noise is not a regression:\n{md}");
    assert!(md.contains("within noise"), "{md}");

    let (code, md, _) = compare(&base, &slower, &[]);
    assert_eq!(code, Some(1), "{md}");
    assert!(md.contains("REGRESSED"), "{md}");
    // A 20 % drop passes a 25 % threshold.
    let (code, md, _) = compare(&base, &slower, &["--threshold", "25%"]);
    assert_eq!(code, Some(0), "{md}");

    // JUnit: the regressed cells fail.
    let (code, xml, _) = compare(&base, &slower, &["--format", "junit"]);
    assert_eq!(code, Some(1));
    assert!(
        xml.contains("<failure message=\"decode_tok_per_s regressed"),
        "{xml}"
    );

    // A cell that measured in BASE and only fails in NEW is a regression.
    let broken = fixture(tmp.path(), "broken", &Fixture::default());
    let csv = broken.join("results.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("local|flex|f32|t1|") {
                l.replacen(",ok,", ",failed,", 1)
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&csv, text + "\n").unwrap();
    let (code, md, _) = compare(&base, &broken, &[]);
    assert_eq!(code, Some(1), "{md}");
    assert!(md.contains("no successful repetition"), "{md}");
}

#[test]
fn compare_exits_2_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture(tmp.path(), "base", &Fixture::default());
    let (code, _, err) = compare(&base, &tmp.path().join("missing"), &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("missing") && err.contains("results.csv"),
        "{err}"
    );
    let (code, _, err) = compare(&base, &base, &["--threshold", "lots"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--threshold"), "{err}");
    let (code, _, err) = compare(&base, &base, &["--metric", "speed"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("decode_tok_per_s"), "{err}");
}
