//! Issue #20, sustained sessions: `--duration-s 60` on the virtual phone (through the real adb
//! server) runs each repetition as one minute of back-to-back generation. The phone's thermal
//! model, with a short time constant, trips its throttle within the minute; the row says when,
//! carries the windows' peak and sustained throughput and the battery drop measured over the
//! session, and the report draws throughput, temperature and frequency over the session
//! (every chart an SVG in headless Chromium).
#![allow(clippy::unwrap_used)]

mod common;

use common::adb::{AdbServer, VirtualPhone};
use common::browser::charts_render;
use common::{assert_success, socbench};
use socbench_reports::row::{ResultRow, Status, parse_results};
use std::path::Path;

fn rows(dir: &Path) -> Vec<ResultRow> {
    let path = dir.join("results.csv");
    let bytes = std::fs::read(&path).unwrap();
    parse_results(&path, &bytes)
        .unwrap()
        .rows
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn a_one_minute_session_on_the_virtual_phone_throttles_and_drains_the_battery_on_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let server = AdbServer::start();
    // A 3 s thermal time constant: one busy core passes the 50 °C trip point within ~10 s.
    let phone = VirtualPhone::start(&dir.path().join("phone"), &["--thermal-tau", "3"]);
    server.connect(&phone.serial);
    let out = dir.path().join("out");
    let port = server.port.to_string();
    let args = [
        "run",
        "--device",
        &phone.serial,
        "--adb-server",
        &format!("127.0.0.1:{port}"),
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
        "--duration-s",
        "60",
        "--repetitions",
        "1",
        "--no-cooldown",
        "--no-probe",
        "--out",
    ];
    assert_success(&socbench().args(args).arg(&out).output().unwrap());
    let r = rows(&out);
    assert_eq!(r.len(), 1, "{r:?}");
    let row = &r[0];
    assert_eq!(row.status, Status::Ok, "{row:?}");
    assert_eq!(row.duration_s, 60);
    assert!(row.run_id.ends_with("|dur60#0"), "{}", row.run_id);
    let generations = row.generations.unwrap();
    assert!(generations >= 2.0, "{row:?}");
    let peak = row.window_peak_tok_s.unwrap();
    let sustained = row.sustained_tok_s.unwrap();
    assert!(
        peak > 0.0 && sustained > 0.0 && sustained <= peak,
        "{row:?}"
    );
    assert!(
        (row.sustained_ratio.unwrap() - sustained / peak).abs() < 1e-9,
        "{row:?}"
    );
    let throttle = row.throttle_after_s.expect("the phone throttled");
    assert!(throttle > 0.0 && throttle < 60.0, "{row:?}");
    assert_eq!(row.throttled, Some(true));
    // ~2.6 W from a ~3.8 V battery for a minute: about 11 mAh, measured by its counter.
    let drop = row.battery_drop_mah.expect("measured on battery");
    assert!(drop > 3.0 && drop < 40.0, "{row:?}");
    assert_eq!(row.power_source, "battery");
    // Every generated step is in the row: the energy per token counts them all.
    let energy = row.energy_j.unwrap();
    let per_token = row.energy_per_token_j.unwrap();
    let steps = (energy / per_token).round();
    assert!(
        steps >= generations * 32.0 - 0.5,
        "{steps} steps for {generations} generations of 32"
    );

    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<h2 id=\"sustained\">Sustained sessions</h2>"));
    let slug = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    let label = "flex f32 t1 b1 kv=full p16 g32 a=all session=60s";
    let id = slug(&format!("{}-{label}", phone.serial));
    let ids: Vec<String> = ["throughput", "temperature", "frequency"]
        .iter()
        .map(|g| format!("sustained-{g}-{id}"))
        .collect();
    let dom = charts_render(&page, &ids);
    // The table names the throttle time and the measured drop beside the extrapolation.
    let table = &dom[dom.find("<table class=\"sustained\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert!(table.contains(&format!("{throttle:.1} s")), "{table}");
    assert!(table.contains(" mAh ("), "{table}");
}
