//! Summary exports for machines and pull requests: CSV, JSON, Markdown and JUnit XML.
//!
//! Each has one row / object / test case per cell. Values are medians over the `ok`
//! repetitions with their 95 % bootstrap confidence interval; raw repetitions stay in
//! `results.csv`.

use crate::analysis::{Analysis, CellSummary};
use crate::escape::xml;
use crate::schema::{CELL_COLUMNS, Metric, Status, csv_field};
use serde_json::{Value, json};
use std::fmt::Write as _;

/// Summary formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One row per cell, every metric's median, CI, std and outlier count.
    Csv,
    /// The whole analysis.
    Json,
    /// A table per device, sized for a pull-request comment.
    Markdown,
    /// One test case per cell; failed or lost repetitions fail it.
    Junit,
}

impl Format {
    /// Parses `csv`, `json`, `md`/`markdown`, `junit`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csv" => Some(Self::Csv),
            "json" => Some(Self::Json),
            "md" | "markdown" => Some(Self::Markdown),
            "junit" | "xml" => Some(Self::Junit),
            _ => None,
        }
    }
}

/// Renders `a` as `format`.
pub fn render(a: &Analysis, format: Format) -> String {
    match format {
        Format::Csv => csv(a),
        Format::Json => json(a),
        Format::Markdown => markdown(a),
        Format::Junit => junit(a),
    }
}

fn key_fields(c: &CellSummary) -> [String; CELL_COLUMNS.len()] {
    let k = &c.key;
    [
        k.device.clone(),
        k.runtime.clone(),
        k.backend.clone(),
        k.quant.clone(),
        k.threads.to_string(),
        k.batch.to_string(),
        k.kv_label(),
        k.prompt_tokens.to_string(),
        k.gen_tokens.to_string(),
        k.affinity.clone(),
        k.pacing_ms.to_string(),
        k.perf_mode.clone(),
        k.duration_s.to_string(),
        k.adaptive.clone(),
        k.lora.clone(),
        k.lora_rank.to_string(),
        k.lora_adapter.clone(),
        k.kernel_tier.clone(),
    ]
}

fn num(v: f64) -> String {
    format!("{v}")
}

/// The CSV summary's run-condition columns (see [`crate::conditions`]).
const CONDITION_COLUMNS: [&str; 8] = [
    "governor",
    "freq_limits_mhz",
    "selinux",
    "sched",
    "cpuset",
    "cpus_allowed",
    "thermal_status_start",
    "thermal_status_end",
];

/// A cell's run conditions as [`CONDITION_COLUMNS`]: each field's distinct values over the
/// measured repetitions, ` | `-joined when they changed.
fn condition_fields(c: &CellSummary) -> [String; 8] {
    let join = |f: fn(&crate::conditions::Conditions) -> &str| {
        let mut v: Vec<&str> = Vec::new();
        for cond in &c.conditions {
            if !v.contains(&f(cond)) {
                v.push(f(cond));
            }
        }
        v.join(" | ")
    };
    let level = |s: Option<u8>| s.map_or(String::new(), |s| s.to_string());
    [
        join(|c| &c.governor),
        join(|c| &c.freq_limits_mhz),
        join(|c| &c.selinux),
        join(|c| &c.sched),
        join(|c| &c.cpuset),
        join(|c| &c.cpus_allowed),
        level(c.thermal_status.0),
        level(c.thermal_status.1),
    ]
}

/// CSV summary.
pub fn csv(a: &Analysis) -> String {
    let mut header: Vec<String> = CELL_COLUMNS.iter().map(|s| (*s).to_owned()).collect();
    header.extend(
        Status::ALL
            .iter()
            .map(|s| format!("reps_{}", s.name()))
            .chain([
                "sensors".into(),
                "power_source".into(),
                "energy_source".into(),
                "kernel".into(),
            ])
            .chain(CONDITION_COLUMNS.iter().map(|c| (*c).to_owned())),
    );
    for m in Metric::ALL {
        for suffix in ["median", "ci_low", "ci_high", "std", "n", "outliers"] {
            header.push(format!("{}_{suffix}", m.name()));
        }
    }
    header.extend(
        [
            "throttled_reps",
            "time_to_throttle_s",
            "sustained_to_peak",
            "notes",
            "warnings",
        ]
        .map(String::from),
    );
    let mut out = header.join(",");
    out.push('\n');
    for c in &a.cells {
        let mut row: Vec<String> = key_fields(c).into();
        row.extend(Status::ALL.iter().map(|s| c.count(*s).to_string()));
        row.push(c.sensors.clone());
        row.push(c.power_source.clone());
        row.push(c.energy_source.clone());
        row.push(c.kernel.clone());
        row.extend(condition_fields(c));
        for m in Metric::ALL {
            match c.metric(m) {
                Some(s) => row.extend([
                    num(s.median),
                    num(s.median_ci95.0),
                    num(s.median_ci95.1),
                    num(s.std),
                    s.n.to_string(),
                    s.outliers.to_string(),
                ]),
                None => row.extend(std::iter::repeat_n(String::new(), 6)),
            }
        }
        row.push(if c.throttled_reps.1 > 0 {
            c.throttled_reps.0.to_string()
        } else {
            String::new()
        });
        row.push(c.time_to_throttle_s.map_or(String::new(), num));
        row.push(c.sustained_to_peak.map_or(String::new(), num));
        row.push(c.notes.join("; "));
        row.push(c.warnings.join("; "));
        let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// JSON summary: `{socbench_version, schema_version, devices, cells}`.
pub fn json(a: &Analysis) -> String {
    let cells: Vec<Value> = a
        .cells
        .iter()
        .map(|c| {
            let metrics: serde_json::Map<String, Value> = c
                .metrics
                .iter()
                .map(|(m, s)| {
                    (
                        m.name().to_owned(),
                        json!({"n": s.n, "median": s.median, "ci95": [s.median_ci95.0, s.median_ci95.1],
                               "mean": s.mean, "std": s.std, "min": s.min, "max": s.max, "outliers": s.outliers}),
                    )
                })
                .collect();
            json!({
                "key": c.key,
                "counts": c.counts,
                "notes": c.notes,
                "warnings": c.warnings,
                "sensors": c.sensors,
                "power_source": c.power_source,
                "energy_source": c.energy_source,
                "kernel": c.kernel,
                "conditions": c.conditions,
                "thermal_status_start": c.thermal_status.0,
                "thermal_status_end": c.thermal_status.1,
                "metrics": metrics,
                "throttled_reps": c.throttled_reps.0,
                "throttle_known_reps": c.throttled_reps.1,
                "time_to_throttle_s": c.time_to_throttle_s,
                "sustained_to_peak": c.sustained_to_peak,
                "sessions": c.sessions,
            })
        })
        .collect();
    let v = json!({
        "socbench_version": env!("CARGO_PKG_VERSION"),
        // The result schema the cells were read as (what `power_source` and the condition
        // fields mean).
        "schema_version": crate::row::SCHEMA_VERSION,
        "devices": a.devices,
        "cells": cells,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// `median (low–high)` of `m`, or a dash.
pub fn with_ci(c: &CellSummary, m: Metric) -> String {
    match c.metric(m) {
        Some(s) => {
            let (lo, hi) = (m.format(s.median_ci95.0), m.format(s.median_ci95.1));
            if s.n > 1 && lo != hi {
                format!("{} ({lo} – {hi})", m.format(s.median))
            } else {
                m.format(s.median)
            }
        }
        None => "–".into(),
    }
}

/// Markdown text: markup characters escaped, one line.
pub fn md_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// Markdown code span content (a backtick would end the span).
pub fn md_code(s: &str) -> String {
    s.replace('`', "'")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

fn status_text(c: &CellSummary) -> String {
    let ok = c.count(Status::Ok);
    let mut parts = vec![format!("{ok} ok")];
    for s in [Status::Failed, Status::DeviceLost, Status::Skipped] {
        if c.count(s) > 0 {
            parts.push(format!("{} {}", c.count(s), s.name()));
        }
    }
    parts.join(", ")
}

/// Markdown: a table per device with the headline metrics.
pub fn markdown(a: &Analysis) -> String {
    const COLS: [Metric; 6] = [
        Metric::DecodeTokPerS,
        Metric::TtftS,
        Metric::PeakRssBytes,
        Metric::AvgPowerW,
        Metric::EnergyPerTokenJ,
        Metric::MaxTempC,
    ];
    let mut out = String::from("## socbench results\n\n");
    for d in &a.devices {
        let _ = writeln!(
            out,
            "### {} (`{}`){}\n",
            md_text(&d.name),
            md_code(&d.serial),
            if d.sensors == "simulated" {
                " — simulated sensors"
            } else {
                ""
            }
        );
        out.push_str("| Configuration | ");
        out.push_str(&COLS.map(Metric::label).join(" | "));
        out.push_str(" | Runs |\n|---|");
        out.push_str(&"---:|".repeat(COLS.len()));
        out.push_str("---|\n");
        for c in a.cells_of(&d.serial) {
            let _ = write!(out, "| `{}` |", md_code(&a.label(&c.key)));
            for m in COLS {
                let _ = write!(out, " {} |", md_text(&with_ci(c, m)));
            }
            let _ = writeln!(out, " {} |", status_text(c));
        }
        out.push('\n');
    }
    let failures: Vec<&CellSummary> = a.cells.iter().filter(|c| c.has_failures()).collect();
    if !failures.is_empty() {
        out.push_str("**Failures**\n\n");
        for c in failures {
            let _ = writeln!(
                out,
                "- `{}` `{}`: {} — {}",
                md_code(&c.key.device),
                md_code(&a.label(&c.key)),
                status_text(c),
                md_text(&c.notes.join("; "))
            );
        }
        out.push('\n');
    }
    out.push_str("Medians over repetitions with 95 % bootstrap confidence intervals.\n");
    out
}

/// One JUnit test case.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// `classname`: the suite's device.
    pub class: String,
    /// `name`: the cell.
    pub name: String,
    /// Seconds measured.
    pub time_s: f64,
    /// Failure message, if it failed.
    pub failure: Option<String>,
    /// Skip reason, if skipped.
    pub skipped: Option<String>,
    /// Text for `system-out`.
    pub out: String,
}

/// Writes JUnit XML with one `testsuite` per class.
pub fn junit_xml(suite: &str, cases: &[TestCase]) -> String {
    let mut classes: Vec<&str> = Vec::new();
    for c in cases {
        if !classes.contains(&c.class.as_str()) {
            classes.push(&c.class);
        }
    }
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
        xml(suite),
        cases.len()
    );
    for class in classes {
        let mine: Vec<&TestCase> = cases.iter().filter(|c| c.class == class).collect();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            xml(class),
            mine.len(),
            mine.iter().filter(|c| c.failure.is_some()).count(),
            mine.iter().filter(|c| c.skipped.is_some()).count(),
            mine.iter().map(|c| c.time_s).sum::<f64>()
        );
        for c in mine {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
                xml(&c.class),
                xml(&c.name),
                c.time_s
            );
            if let Some(f) = &c.failure {
                let _ = write!(
                    out,
                    "\n      <failure message=\"{}\">{}</failure>",
                    xml(f),
                    xml(f)
                );
            }
            if let Some(s) = &c.skipped {
                let _ = write!(out, "\n      <skipped message=\"{}\"/>", xml(s));
            }
            if !c.out.is_empty() {
                let _ = write!(out, "\n      <system-out>{}</system-out>", xml(&c.out));
            }
            out.push_str("\n    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Seconds of model time a cell measured over its `ok` repetitions: a sustained session's
/// length each, else prefill plus decode.
fn measured_time(c: &CellSummary) -> f64 {
    if c.key.duration_s > 0 {
        return f64::from(c.key.duration_s) * c.count(Status::Ok) as f64;
    }
    let ttft = c.metric(Metric::TtftS).map_or(0.0, |s| s.median);
    let per_tok = c.metric(Metric::DecodeMsPerToken).map_or(0.0, |s| s.median) / 1e3;
    (ttft + per_tok * f64::from(c.key.gen_tokens)) * c.count(Status::Ok) as f64
}

/// JUnit: one test case per cell; failed or lost repetitions fail it.
pub fn junit(a: &Analysis) -> String {
    let cases: Vec<TestCase> = a
        .cells
        .iter()
        .map(|c| {
            let failure = c.has_failures().then(|| {
                let mut m = status_text(c);
                if !c.notes.is_empty() {
                    m.push_str(": ");
                    m.push_str(&c.notes.join("; "));
                }
                m
            });
            let skipped =
                (c.count(Status::Ok) == 0 && c.count(Status::Skipped) > 0 && failure.is_none())
                    .then(|| c.notes.join("; "));
            let out = [Metric::DecodeTokPerS, Metric::TtftS, Metric::PeakRssBytes]
                .iter()
                .filter(|m| c.metric(**m).is_some())
                .map(|m| format!("{}: {}", m.name(), with_ci(c, *m)))
                .collect::<Vec<_>>()
                .join("\n");
            TestCase {
                class: format!("socbench.{}", c.key.device),
                name: a.label(&c.key),
                time_s: measured_time(c),
                failure,
                skipped,
                out,
            }
        })
        .collect();
    junit_xml("socbench", &cases)
}
