//! The report's Runtimes section: Burn ÷ llama.cpp per configuration ([`crate::runtimes`]),
//! and both runtimes' decode throughput across the thread axis, one chart per level.

use super::Page;
use super::sweep_charts::{Axis, CI_CAPTION, axis_chart, omitted};
use crate::analysis::Analysis;
use crate::charts;
use crate::escape::xml;
use crate::runtimes::{RUNTIME_METRICS, higher_is_better, paired_cells, pairs};
use crate::schema::{Metric, ResultSet};
use std::fmt::Write as _;

pub(super) fn render(page: &mut Page, set: &ResultSet, a: &Analysis) {
    let pairs = pairs(set, a);
    if pairs.is_empty() {
        page.na(
            "Burn beside llama.cpp",
            "not shown: no configuration was measured on both runtimes (run the sweep with \
             `--runtime burn,llama.cpp`)",
        );
        return;
    }
    page.body.push_str(
        "<p>Each Burn CPU cell against the llama.cpp cell of the same device, model and \
         configuration (llama.cpp runs the level in its own format: q8 as Q8_0, q4 as Q4_1, \
         f16 as F16, f32 as F32). Ratio = Burn's median ÷ llama.cpp's, with its 95 % bootstrap \
         interval. Throughput above 1 and time, memory or energy below 1 mean Burn is ahead \
         (<span class=\"good\">green</span>); an interval that does not contain 1 is a \
         difference the repetitions support.</p>\n",
    );
    page.body.push_str(
        "<table class=\"summary\" id=\"runtime-ratios\"><thead><tr><th>Device</th>\
         <th>Configuration</th><th>Burn backend</th>",
    );
    for m in RUNTIME_METRICS {
        let _ = write!(page.body, "<th>{} (Burn ÷ llama.cpp)</th>", xml(m.label()));
    }
    page.body.push_str("</tr></thead><tbody>\n");
    for p in &pairs {
        let config = p.llama.describe();
        let config = config
            .strip_prefix("llama.cpp cpu ")
            .unwrap_or(&config)
            .to_owned();
        let _ = write!(
            page.body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td>",
            xml(&p.burn.device),
            xml(&config),
            xml(&p.burn.backend)
        );
        for m in RUNTIME_METRICS {
            match p.ratio(m) {
                Some(r) => {
                    let ahead = if higher_is_better(m) {
                        r.ratio > 1.0
                    } else {
                        r.ratio < 1.0
                    };
                    let ci = r.ci95.map_or(String::new(), |(lo, hi)| {
                        format!("<br><small>[{lo:.2}–{hi:.2}]</small>")
                    });
                    let _ = write!(
                        page.body,
                        "<td class=\"{}\">{:.2}×{ci}</td>",
                        if ahead { "good" } else { "bad" },
                        r.ratio
                    );
                }
                None => page.body.push_str("<td class=\"na\">not measured</td>"),
            }
        }
        page.body.push_str("</tr>\n");
    }
    page.body.push_str("</tbody></table>\n");
    // One chart per quantization level, so each level's two runtimes sit side by side.
    let paired = paired_cells(a, &pairs);
    let mut quants: Vec<&str> = paired.cells.iter().map(|c| c.key.quant.as_str()).collect();
    quants.dedup();
    quants.sort_unstable();
    quants.dedup();
    for quant in quants {
        let level = Analysis {
            cells: paired
                .cells
                .iter()
                .filter(|c| c.key.quant == quant)
                .cloned()
                .collect(),
            devices: paired.devices.clone(),
            models: paired.models.clone(),
        };
        let title = format!("Burn and llama.cpp at {quant}: decode throughput vs threads");
        match axis_chart(
            &level,
            Axis::Threads,
            Metric::DecodeTokPerS,
            1.0,
            "tok/s",
            "threads",
        ) {
            Ok((chart, total)) => {
                let caption = format!("{CI_CAPTION}{}", omitted(total));
                page.figure(
                    &format!("runtimes-decode-vs-threads-{quant}"),
                    &title,
                    charts::xy_chart(&chart),
                    &xml(&caption),
                );
            }
            Err(_) => page.na(
                &title,
                "not drawn: neither runtime was measured at two or more thread counts",
            ),
        }
    }
}
