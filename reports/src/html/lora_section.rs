//! The report's LoRA adapters section (`lora = ["none", "unmerged", "merged"]`): every
//! adapter cell against the cell that differs from it only in having no adapters, as
//! `adapter ÷ base` for decode throughput, time to first token, peak RAM and (with
//! `quality = true`) perplexity, each with its 95 % bootstrap interval.

use super::Page;
use crate::analysis::{Analysis, CellSummary};
use crate::escape::xml;
use crate::runtimes::samples;
use crate::schema::{CellKey, Metric, ResultSet};
use crate::stats::{RESAMPLES, bootstrap_ratio_ci, median};
use std::fmt::Write as _;

/// The metrics compared, in column order.
const METRICS: [Metric; 4] = [
    Metric::DecodeTokPerS,
    Metric::TtftS,
    Metric::PeakRssBytes,
    Metric::Perplexity,
];

fn has_lora(k: &CellKey) -> bool {
    !k.lora.is_empty() && k.lora != "none"
}

/// Whether `a` has a LoRA cell (the section is left out otherwise).
pub(super) fn any(a: &Analysis) -> bool {
    a.cells.iter().any(|c| has_lora(&c.key))
}

/// The base cell of an adapter cell: the same key without adapters.
fn base_of<'a>(a: &'a Analysis, k: &CellKey) -> Option<&'a CellSummary> {
    let base = CellKey {
        lora: "none".into(),
        lora_rank: 0,
        lora_adapter: String::new(),
        ..k.clone()
    };
    a.cells.iter().find(|c| c.key == base)
}

/// `adapter ÷ base` of `m` as table text: both medians, the ratio and its interval.
fn cell(set: &ResultSet, lora: &CellKey, base: &CellKey, m: Metric) -> String {
    let (new, old) = (samples(set, lora, m), samples(set, base, m));
    if new.is_empty() || old.is_empty() {
        return "–".into();
    }
    let (mn, mo) = (median(&new), median(&old));
    if mo == 0.0 {
        return "–".into();
    }
    let ci = (new.len() >= 2 && old.len() >= 2)
        .then(|| bootstrap_ratio_ci(&old, &new, RESAMPLES, 0.95, crate::analysis::seed_of(lora)))
        .flatten()
        .map_or(String::new(), |(lo, hi)| format!(" [{lo:.3}, {hi:.3}]"));
    format!(
        "{} vs {}: <b>×{:.3}</b>{ci}",
        xml(&m.format(mn)),
        xml(&m.format(mo)),
        mn / mo
    )
}

pub(super) fn render(page: &mut Page, set: &ResultSet, a: &Analysis) {
    page.body.push_str(
        "<p>Rank-r adapters on the query, key, value and output projections of every layer. \
         Unmerged: the base weights as the level stores them, and the adapter's two small \
         products <code>(x A) B</code> in f32 at every step (how adapters ship beside a \
         fixed base model); merged: <code>A B</code> added to each f32 weight before it is \
         quantized (at q8/q4 the file's blocks are decoded, summed and quantized again). Each \
         cell is set against the same cell without adapters: adapter ÷ base, medians over \
         the repetitions, 95 % bootstrap interval in brackets. The <code>lora_adapter</code> \
         column says where the adapters came from: <code>synthetic</code> ones are seeded \
         random matrices (the work of a real adapter, not its quality).</p>\n",
    );
    page.body.push_str(
        "<table class=\"lora\"><thead><tr><th>Device</th><th>Configuration</th>\
         <th>Decode tok/s</th><th>TTFT</th><th>Peak RAM</th><th>Perplexity</th></tr>\
         </thead><tbody>\n",
    );
    let mut missing = 0usize;
    for c in a.cells.iter().filter(|c| has_lora(&c.key)) {
        let Some(base) = base_of(a, &c.key) else {
            missing += 1;
            continue;
        };
        let cols: Vec<String> = METRICS
            .iter()
            .map(|&m| cell(set, &c.key, &base.key, m))
            .collect();
        let _ = writeln!(
            page.body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            xml(&c.key.device),
            xml(&a.label(&c.key)),
            cols.join("</td><td>")
        );
    }
    page.body.push_str("</tbody></table>\n");
    if missing > 0 {
        let _ = writeln!(
            page.body,
            "<p>{missing} adapter cells have no base cell to compare with (add \
             <code>none</code> to the <code>lora</code> axis).</p>"
        );
    }
    page.body.push_str(
        "<p>Perplexity is measured with <code>quality = true</code> (<code>--quality</code>); \
         without it the column is empty. The quality gate compares every variant with the f32 \
         base model, without adapters.</p>\n",
    );
}
