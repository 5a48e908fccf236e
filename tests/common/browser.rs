//! Headless Chromium for the report tests: a fresh profile each time, every console message
//! returned.

use std::path::Path;
use std::process::Command;

/// Chromium, as Debian installs it (`.ci/run` does); `SOCBENCH_CHROMIUM` overrides.
pub fn chromium() -> String {
    let bin = std::env::var("SOCBENCH_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = Command::new(&bin).arg("--version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "this test needs Chromium: `apt-get install -y chromium`, or set SOCBENCH_CHROMIUM ({found:?})"
    );
    bin
}

/// Runs headless Chromium on `page` with `extra` flags; returns (stdout, console lines).
pub fn headless(page: &Path, extra: &[&str]) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every console message (errors, CSP violations, logs) is printed as `…:CONSOLE…`.
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(String::from)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// Renders `page` in headless Chromium and checks that it logs nothing, that every chart
/// figure holds an SVG, and that each of `ids` is one of them; returns the rendered DOM.
pub fn charts_render(page: &Path, ids: &[String]) -> String {
    let (dom, console) = headless(page, &["--dump-dom"]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    for fig in dom.split("<figure class=\"chart\"").skip(1) {
        let body = &fig[..fig.find("</figure>").unwrap()];
        assert!(body.contains("<svg"), "a chart without SVG: {body:.200}");
    }
    for id in ids {
        let at = dom
            .find(&format!("<figure class=\"chart\" id=\"{id}\""))
            .unwrap_or_else(|| panic!("chart {id} missing"));
        let fig = &dom[at..];
        assert!(
            fig[..fig.find("</figure>").unwrap()].contains("<svg"),
            "chart {id} is no SVG"
        );
    }
    dom
}
