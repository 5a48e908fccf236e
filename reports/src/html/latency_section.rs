//! The report's per-token latency section: the spread of the decode step times within each
//! cell's repetitions (schema 2.4's `decode_p50_ms` … `decode_max_ms`), as a table and a small
//! strip per cell, because a phone's user feels the slow tokens, not the mean.

use super::{Page, cells_with, metric_cell, row_start};
use crate::analysis::Analysis;
use crate::escape::xml;
use crate::schema::Metric;
use std::fmt::Write as _;

/// The columns: the mean step, then the spread.
const SPREAD: [Metric; 5] = [
    Metric::DecodeMsPerToken,
    Metric::DecodeP50Ms,
    Metric::DecodeP90Ms,
    Metric::DecodeP99Ms,
    Metric::DecodeMaxMs,
];

pub(super) fn render(page: &mut Page, a: &Analysis) {
    let cells = cells_with(a, Metric::DecodeP50Ms);
    if cells.is_empty() {
        page.na(
            "Per-token latency",
            "not shown: no repetition recorded its decode step times (results written before \
             schema 2.4, or no decode steps)",
        );
        return;
    }
    page.body.push_str(
        "<p>Each repetition's decode step times, summarised within the repetition (p50, p90 and \
         p99 linear between ranks; the longest step is the worst stall), then the median over \
         the repetitions with its 95 % bootstrap interval. The strip marks p50, p90, p99 and \
         the longest step on a scale from 0 to the longest.</p>\n\
         <table class=\"summary\" id=\"token-latency\"><thead><tr><th>Device</th>\
         <th>Configuration</th>",
    );
    for m in SPREAD {
        let _ = write!(page.body, "<th>{}</th>", xml(m.label()));
    }
    page.body.push_str("<th>Spread</th></tr></thead><tbody>\n");
    for c in cells {
        row_start(page, a, c);
        for m in SPREAD {
            page.body.push_str(&metric_cell(c, m));
        }
        let q: Vec<f64> = SPREAD[1..]
            .iter()
            .filter_map(|&m| c.metric(m).map(|s| s.median))
            .collect();
        let _ = writeln!(page.body, "<td>{}</td></tr>", strip(&q));
    }
    page.body.push_str("</tbody></table>\n");
}

/// A 160×14 inline SVG: a bar from 0 to p50, a line on to the longest step, a tick at each of
/// `q` (p50, p90, p99, max, in ms).
fn strip(q: &[f64]) -> String {
    let Some(&top) = q.last().filter(|t| **t > 0.0) else {
        return String::new();
    };
    let x = |v: f64| 2.0 + 156.0 * (v / top).clamp(0.0, 1.0);
    let mut svg = format!(
        "<svg class=\"spread\" width=\"160\" height=\"14\" viewBox=\"0 0 160 14\" role=\"img\">\
         <title>p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, longest {:.3} ms</title>\
         <rect x=\"2\" y=\"4\" width=\"{:.1}\" height=\"6\" fill=\"#4c78a8\"/>\
         <line x1=\"{:.1}\" y1=\"7\" x2=\"{:.1}\" y2=\"7\" stroke=\"#555\"/>",
        q.first().copied().unwrap_or(0.0),
        q.get(1).copied().unwrap_or(0.0),
        q.get(2).copied().unwrap_or(0.0),
        top,
        x(q[0]) - 2.0,
        x(q[0]),
        x(top)
    );
    for &v in q {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" y1=\"2\" x2=\"{0:.1}\" y2=\"12\" stroke=\"#222\"/>",
            x(v)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strip_marks_each_quantile_on_a_scale_to_the_longest_step() {
        let s = strip(&[5.0, 5.5, 10.0, 20.0]);
        assert!(
            s.contains("longest 20.000 ms") && s.contains("p99 10.000 ms"),
            "{s}"
        );
        // p50 at a quarter of the scale, the longest at its end.
        assert!(
            s.contains("x1=\"41.0\"") && s.contains("x1=\"158.0\""),
            "{s}"
        );
        assert!(strip(&[]).is_empty() && strip(&[0.0]).is_empty());
    }
}
