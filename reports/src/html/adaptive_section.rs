//! The report's adaptive precision section (`adaptive = "q8>q4@45"`): per adaptive cell, its
//! switches and the share of tokens the second level made, beside its speed and heat; then
//! every recorded switch with its time and temperature. A sustained adaptive session's
//! charts (Sustained sessions) mark the switches on its curves.

use super::Page;
use super::sustained_section::cell_ids;
use crate::analysis::{Analysis, CellSummary};
use crate::escape::xml;
use crate::schema::{Metric, ResultSet, Status};
use crate::sustained::RepSwitches;
use std::fmt::Write as _;

/// Switches listed per cell (the table's counts cover every one).
const MAX_LISTED: usize = 24;

/// Whether `a` has an adaptive cell (the section is left out otherwise).
pub(super) fn any(a: &Analysis) -> bool {
    a.cells.iter().any(is_adaptive)
}

fn is_adaptive(c: &CellSummary) -> bool {
    !c.key.adaptive.is_empty() && c.key.adaptive != "off"
}

/// The recorded switches of `c`'s repetitions, from its own result directories' events.
pub(super) fn switches_of<'s>(set: &'s ResultSet, c: &CellSummary) -> Vec<&'s RepSwitches> {
    let ids = cell_ids(set, c);
    set.agent_runs
        .iter()
        .filter(|r| r.device == c.key.device)
        .flat_map(|r| r.switches.iter().map(move |s| (r.source, s)))
        .filter(|(source, s)| ids.contains(&(*source, s.cell.as_str())))
        .map(|(_, s)| s)
        .collect()
}

pub(super) fn render(page: &mut Page, set: &ResultSet, a: &Analysis) {
    let cells: Vec<&CellSummary> = a.cells.iter().filter(|c| is_adaptive(c)).collect();
    page.body.push_str(
        "<p>An adaptive cell holds both levels of its mode (<code>FROM&gt;TO@°C</code>) loaded \
         and, before every generation, reads the hottest thermal zone: at or above the \
         threshold it runs TO, and it goes back to FROM once the zone is 2 °C below. Its \
         quant column is FROM; its peak RAM holds both variants; its perplexity and weight \
         traffic are left out (its tokens came from both levels).</p>\n",
    );
    page.body.push_str(
        "<table class=\"adaptive\"><thead><tr><th>Device</th><th>Configuration</th>\
         <th>Repetitions</th><th>Switches</th><th>Tokens on the second level</th>\
         <th>Decode tok/s</th><th>Max temp</th><th>Peak RAM</th></tr></thead><tbody>\n",
    );
    for c in &cells {
        let show = |m: Metric| c.metric(m).map_or("–".to_owned(), |s| m.format(s.median));
        let _ = writeln!(
            page.body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&c.key.device),
            xml(&a.label(&c.key)),
            c.counts.get(&Status::Ok).copied().unwrap_or(0),
            xml(&show(Metric::Switches)),
            xml(&show(Metric::SecondLevelShare)),
            xml(&show(Metric::DecodeTokPerS)),
            xml(&show(Metric::MaxTempC)),
            xml(&show(Metric::PeakRssBytes)),
        );
    }
    page.body.push_str(
        "</tbody></table>\n<p>Medians over the repetitions. Tokens on the second level: of a \
         sustained session, the tokens generated after a switch to TO and before one back; of \
         a single generation, all or none.</p>\n",
    );
    for c in &cells {
        let reps = switches_of(set, c);
        let total: usize = reps.iter().map(|r| r.switches.len()).sum();
        let title = format!("Switches of {}", a.label(&c.key));
        if total == 0 {
            page.na(
                &title,
                "none recorded: the hottest zone never reached the threshold during a \
                 measured repetition",
            );
            continue;
        }
        let _ = writeln!(
            page.body,
            "<h4>{}</h4><table class=\"switches\"><thead><tr><th>Repetition</th>\
             <th>Time since its start</th><th>Hottest zone</th><th>Switch</th></tr></thead>\
             <tbody>",
            xml(&title)
        );
        for (rep, (t, from, to, temp)) in reps
            .iter()
            .flat_map(|r| r.switches.iter().map(move |s| (r, s)))
            .take(MAX_LISTED)
        {
            let _ = writeln!(
                page.body,
                "<tr><td>{}</td><td>{:.1} s</td><td>{temp:.1} °C</td><td>{} → {}</td></tr>",
                rep.repetition + 1,
                t - rep.t_start_s,
                xml(from),
                xml(to)
            );
        }
        page.body.push_str("</tbody></table>\n");
        if total > MAX_LISTED {
            let _ = writeln!(
                page.body,
                "<p>{} more switches are in <code>events.jsonl</code>.</p>",
                total - MAX_LISTED
            );
        }
    }
}
