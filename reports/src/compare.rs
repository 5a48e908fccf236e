//! `socbench compare BASE NEW`: change detection between two result sets.
//!
//! Cells are matched by configuration and device (or by configuration alone when each side
//! holds exactly one device, as when a phone is replaced by another of the same model). For each
//! metric the change is `median(new) / median(base)` with a 95 % percentile-bootstrap interval
//! drawn by resampling both sides. A change is significant only when the whole interval lies
//! beyond the noise threshold (criterion's rule): for a higher-is-better metric a regression is
//! `upper < 1 - threshold`, an improvement `lower > 1 + threshold`, and the reverse for
//! lower-is-better ones. A cell that measured in BASE but has no `ok` repetition in NEW is a
//! regression too.

use crate::analysis::{Analysis, CellSummary, seed_of};
use crate::escape::xml;
use crate::export::{TestCase, junit_xml};
use crate::schema::{CellKey, Metric, ResultSet, Status};
use crate::stats::{RESAMPLES, bootstrap_ratio_ci, median};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Fewest `ok` repetitions per side for a verdict; with fewer, the interval means nothing.
pub const MIN_REPS: usize = 3;

/// What a change amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The interval lies beyond the threshold, on the good side.
    Improved,
    /// The interval lies beyond the threshold, on the bad side.
    Regressed,
    /// The interval lies within the threshold band.
    Unchanged,
    /// The point estimate is beyond the threshold but the interval reaches into the band.
    Inconclusive,
    /// Fewer than [`MIN_REPS`] repetitions on a side.
    TooFewReps,
}

impl Verdict {
    /// Word for tables.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Improved => "improved",
            Verdict::Regressed => "REGRESSED",
            Verdict::Unchanged => "no change",
            Verdict::Inconclusive => "within noise",
            Verdict::TooFewReps => "too few repetitions",
        }
    }
}

/// One metric of one matched cell.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// The cell in NEW.
    pub key: CellKey,
    /// The metric.
    pub metric: Metric,
    /// Median in BASE.
    pub base: f64,
    /// Median in NEW.
    pub new: f64,
    /// `new / base`.
    pub ratio: f64,
    /// 95 % interval of the ratio.
    pub ci95: (f64, f64),
    /// Repetitions `(base, new)`.
    pub n: (usize, usize),
    /// The verdict.
    pub verdict: Verdict,
}

/// Options of a comparison.
#[derive(Debug, Clone)]
pub struct Options {
    /// Noise threshold as a fraction (0.05 for 5 %).
    pub threshold: f64,
    /// Metrics compared.
    pub metrics: Vec<Metric>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            threshold: 0.05,
            metrics: vec![Metric::DecodeTokPerS, Metric::TtftS],
        }
    }
}

/// The result of a comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Threshold used (fraction).
    pub threshold: f64,
    /// Every compared metric of every matched cell.
    pub changes: Vec<Change>,
    /// Cells that measured in BASE and have no `ok` repetition in NEW, with the reason.
    pub newly_failing: Vec<(CellKey, String)>,
    /// Cells only in BASE.
    pub only_base: Vec<CellKey>,
    /// Cells only in NEW.
    pub only_new: Vec<CellKey>,
    /// Whether cells were matched ignoring the device (one device on each side).
    pub matched_without_device: bool,
}

impl Comparison {
    /// Whether anything regressed significantly (the exit status 1 of `compare`).
    pub fn regressed(&self) -> bool {
        !self.newly_failing.is_empty()
            || self.changes.iter().any(|c| c.verdict == Verdict::Regressed)
    }

    /// Number of matched cells.
    pub fn matched(&self) -> usize {
        let mut keys: Vec<&CellKey> = self.changes.iter().map(|c| &c.key).collect();
        keys.extend(self.newly_failing.iter().map(|(k, _)| k));
        keys.sort();
        keys.dedup();
        keys.len()
    }
}

fn values(set: &ResultSet, key: &CellKey, m: Metric, by_config: bool) -> Vec<f64> {
    set.records
        .iter()
        .filter(|r| r.status == Status::Ok)
        .filter(|r| {
            if by_config {
                r.key.config() == key.config()
            } else {
                &r.key == key
            }
        })
        .filter_map(|r| r.get(m))
        .collect()
}

fn verdict(higher_is_better: bool, ci: (f64, f64), t: f64) -> Verdict {
    let (good, bad) = if higher_is_better {
        (ci.0 > 1.0 + t, ci.1 < 1.0 - t)
    } else {
        (ci.1 < 1.0 - t, ci.0 > 1.0 + t)
    };
    if good {
        Verdict::Improved
    } else if bad {
        Verdict::Regressed
    } else if ci.0 >= 1.0 - t && ci.1 <= 1.0 + t {
        Verdict::Unchanged
    } else {
        Verdict::Inconclusive
    }
}

/// Compares NEW against BASE.
pub fn compare(
    base: &ResultSet,
    base_a: &Analysis,
    new: &ResultSet,
    new_a: &Analysis,
    opts: &Options,
) -> Comparison {
    let mut matches: Vec<(&CellSummary, &CellSummary)> = Vec::new();
    let pair = |by_config: bool| -> Vec<(&CellSummary, &CellSummary)> {
        new_a
            .cells
            .iter()
            .filter_map(|n| {
                base_a
                    .cells
                    .iter()
                    .find(|b| {
                        if by_config {
                            b.key.config() == n.key.config()
                        } else {
                            b.key == n.key
                        }
                    })
                    .map(|b| (b, n))
            })
            .collect()
    };
    let mut by_config = false;
    matches.extend(pair(false));
    if matches.is_empty() && base_a.devices.len() == 1 && new_a.devices.len() == 1 {
        by_config = true;
        matches.extend(pair(true));
    }
    let same = |a: &CellKey, b: &CellKey| {
        if by_config {
            a.config() == b.config()
        } else {
            a == b
        }
    };
    let only_base = base_a
        .cells
        .iter()
        .filter(|b| !matches.iter().any(|(m, _)| same(&m.key, &b.key)))
        .map(|b| b.key.clone())
        .collect();
    let only_new = new_a
        .cells
        .iter()
        .filter(|n| !matches.iter().any(|(_, m)| same(&m.key, &n.key)))
        .map(|n| n.key.clone())
        .collect();
    let mut changes = Vec::new();
    let mut newly_failing = Vec::new();
    for (b, n) in &matches {
        if b.count(Status::Ok) > 0 && n.count(Status::Ok) == 0 {
            let mut why: Vec<String> = Status::ALL
                .iter()
                .filter(|s| n.count(**s) > 0)
                .map(|s| format!("{} {}", n.count(*s), s.name()))
                .collect();
            why.extend(n.notes.iter().cloned());
            newly_failing.push((n.key.clone(), why.join("; ")));
            continue;
        }
        for &m in &opts.metrics {
            let Some(hib) = m.higher_is_better() else {
                continue;
            };
            let bv = values(base, &b.key, m, false);
            let nv = values(new, &n.key, m, false);
            if bv.is_empty() || nv.is_empty() {
                continue;
            }
            let (bm, nm) = (median(&bv), median(&nv));
            let ratio = nm / bm;
            let few = bv.len() < MIN_REPS || nv.len() < MIN_REPS;
            let ci = bootstrap_ratio_ci(&bv, &nv, RESAMPLES, 0.95, seed_of(&n.key) ^ m as u64)
                .unwrap_or((ratio, ratio));
            changes.push(Change {
                key: n.key.clone(),
                metric: m,
                base: bm,
                new: nm,
                ratio,
                ci95: ci,
                n: (bv.len(), nv.len()),
                verdict: if few {
                    Verdict::TooFewReps
                } else {
                    verdict(hib, ci, opts.threshold)
                },
            });
        }
    }
    Comparison {
        threshold: opts.threshold,
        changes,
        newly_failing,
        only_base,
        only_new,
        matched_without_device: by_config,
    }
}

fn pct(r: f64) -> String {
    format!("{:+.1} %", (r - 1.0) * 100.0)
}

/// Markdown for a pull-request comment.
pub fn markdown(c: &Comparison) -> String {
    use crate::export::{md_code as md, md_text};
    let mut out = String::from("## socbench compare\n\n");
    let regressions = c
        .changes
        .iter()
        .filter(|x| x.verdict == Verdict::Regressed)
        .count()
        + c.newly_failing.len();
    let _ = writeln!(
        out,
        "{} matched cells, threshold ±{:.1} %: **{}**\n",
        c.matched(),
        c.threshold * 100.0,
        if regressions > 0 {
            format!("{regressions} regression(s)")
        } else {
            "no significant regression".into()
        }
    );
    if c.matched_without_device {
        out.push_str("(one device on each side: cells matched by configuration alone)\n\n");
    }
    if !c.changes.is_empty() {
        out.push_str("| Device | Configuration | Metric | Base | New | Change (95 % CI) | Verdict |\n|---|---|---|---:|---:|---|---|\n");
        for x in &c.changes {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} | {} ({} … {}) | {} |",
                md(&x.key.device),
                md(&x.key.describe()),
                x.metric.label(),
                x.metric.format(x.base),
                x.metric.format(x.new),
                pct(x.ratio),
                pct(x.ci95.0),
                pct(x.ci95.1),
                if x.verdict == Verdict::Regressed {
                    format!("**{}**", x.verdict.word())
                } else {
                    x.verdict.word().into()
                }
            );
        }
        out.push('\n');
    }
    for (k, why) in &c.newly_failing {
        let _ = writeln!(
            out,
            "- **REGRESSED** `{}` `{}`: no successful repetition ({})",
            md(&k.device),
            md(&k.describe()),
            md_text(why)
        );
    }
    for (label, keys) in [("only in BASE", &c.only_base), ("only in NEW", &c.only_new)] {
        if !keys.is_empty() {
            let _ = writeln!(out, "- {} cell(s) {label}", keys.len());
        }
    }
    out
}

/// JSON.
pub fn json(c: &Comparison) -> String {
    let mut s = serde_json::to_string_pretty(c).unwrap_or_default();
    s.push('\n');
    s
}

/// JUnit: one test case per matched cell, failing on a regression.
pub fn junit(c: &Comparison) -> String {
    let mut by_cell: BTreeMap<&CellKey, Vec<&Change>> = BTreeMap::new();
    for x in &c.changes {
        by_cell.entry(&x.key).or_default().push(x);
    }
    let mut cases: Vec<TestCase> = by_cell
        .into_iter()
        .map(|(k, xs)| {
            let bad: Vec<String> = xs
                .iter()
                .filter(|x| x.verdict == Verdict::Regressed)
                .map(|x| {
                    format!(
                        "{} regressed {} (95 % CI {} … {})",
                        x.metric.name(),
                        pct(x.ratio),
                        pct(x.ci95.0),
                        pct(x.ci95.1)
                    )
                })
                .collect();
            TestCase {
                class: format!("socbench.compare.{}", k.device),
                name: k.describe(),
                time_s: 0.0,
                failure: (!bad.is_empty()).then(|| bad.join("; ")),
                skipped: None,
                out: xs
                    .iter()
                    .map(|x| {
                        format!(
                            "{}: {} ({})",
                            x.metric.name(),
                            pct(x.ratio),
                            x.verdict.word()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        })
        .collect();
    cases.extend(c.newly_failing.iter().map(|(k, why)| TestCase {
        class: format!("socbench.compare.{}", k.device),
        name: k.describe(),
        time_s: 0.0,
        failure: Some(format!("no successful repetition: {why}")),
        skipped: None,
        out: String::new(),
    }));
    junit_xml("socbench compare", &cases)
}

/// A self-contained HTML page with the comparison table.
pub fn html(c: &Comparison, base: &str, new: &str) -> String {
    let mut rows = String::new();
    for x in &c.changes {
        let class = match x.verdict {
            Verdict::Regressed => "bad",
            Verdict::Improved => "good",
            _ => "",
        };
        let _ = writeln!(
            rows,
            "<tr class=\"{class}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{} ({} … {})</td><td>{}</td></tr>",
            xml(&x.key.device),
            xml(&x.key.describe()),
            xml(x.metric.label()),
            xml(&x.metric.format(x.base)),
            xml(&x.metric.format(x.new)),
            pct(x.ratio),
            pct(x.ci95.0),
            pct(x.ci95.1),
            x.verdict.word()
        );
    }
    for (k, why) in &c.newly_failing {
        let _ = writeln!(
            rows,
            "<tr class=\"bad\"><td>{}</td><td><code>{}</code></td><td colspan=\"4\">no successful repetition: {}</td><td>REGRESSED</td></tr>",
            xml(&k.device),
            xml(&k.describe()),
            xml(why)
        );
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
<title>socbench compare</title><style>{}</style></head><body>\
<h1>socbench compare</h1><p>Base: <code>{}</code><br>New: <code>{}</code><br>Threshold ±{:.1} %; \
a change counts only when its whole 95 % bootstrap interval lies beyond the threshold.</p>\
<table><thead><tr><th>Device</th><th>Configuration</th><th>Metric</th><th>Base</th><th>New</th><th>Change (95 % CI)</th><th>Verdict</th></tr></thead>\
<tbody>{rows}</tbody></table></body></html>\n",
        crate::html::CSS,
        xml(base),
        xml(new),
        c.threshold * 100.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_follows_the_interval_not_the_point() {
        let t = 0.05;
        assert_eq!(verdict(true, (0.80, 0.90), t), Verdict::Regressed);
        assert_eq!(verdict(true, (0.80, 0.97), t), Verdict::Inconclusive);
        assert_eq!(verdict(true, (0.97, 1.03), t), Verdict::Unchanged);
        assert_eq!(verdict(true, (1.10, 1.20), t), Verdict::Improved);
        // Lower is better (latency): a larger ratio is worse.
        assert_eq!(verdict(false, (1.10, 1.20), t), Verdict::Regressed);
        assert_eq!(verdict(false, (0.80, 0.90), t), Verdict::Improved);
    }
}
