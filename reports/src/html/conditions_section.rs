//! The report's run conditions section: per device, the distinct conditions its cells were
//! measured under (governor and frequency limits per cluster, SELinux, the agent's scheduling,
//! cpuset and allowed CPUs), which cells ran under each, and a flag when there is more than
//! one: figures from different groups were not measured alike.

use super::Page;
use crate::analysis::Analysis;
use crate::conditions::{Conditions, thermal_status_text};
use crate::escape::xml;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub(super) fn render(page: &mut Page, a: &Analysis) {
    // device → conditions → cell labels, in cell order.
    let mut groups: BTreeMap<&str, Vec<(&Conditions, Vec<String>)>> = BTreeMap::new();
    for c in a.cells.iter().filter(|c| !c.conditions.is_empty()) {
        let device = groups.entry(c.key.device.as_str()).or_default();
        for cond in &c.conditions {
            match device.iter_mut().find(|(k, _)| *k == cond) {
                Some((_, cells)) => cells.push(a.label(&c.key)),
                None => device.push((cond, vec![a.label(&c.key)])),
            }
        }
    }
    if groups.is_empty() {
        page.na(
            "Run conditions",
            "not recorded (results written before schema 3.1, or no repetition was measured)",
        );
        return;
    }
    page.body.push_str(
        "<p>What the measured repetitions ran under, read by the agent on the device: the CPU \
         frequency governor and <code>scaling_min_freq-scaling_max_freq</code> per cluster \
         after each repetition (a maximum below the cluster's top is a cap), the SELinux \
         mode, and the agent's scheduling policy, cpuset and allowed CPUs before any pin. \
         Empty where the device does not tell.</p>\n",
    );
    for (device, list) in &groups {
        if list.len() > 1 {
            let _ = writeln!(
                page.body,
                "<p class=\"note\"><b>{}</b>: cells were measured under {} different run \
                 conditions; compare figures within one group.</p>",
                xml(device),
                list.len()
            );
        }
        page.body.push_str(
            "<table class=\"conditions\"><thead><tr><th>Device</th><th>Governor</th>\
             <th>Frequency limits (MHz)</th><th>SELinux</th><th>Scheduling</th><th>cpuset</th>\
             <th>CPUs allowed</th><th>Cells</th></tr></thead><tbody>\n",
        );
        for (cond, cells) in list {
            let show = |s: &str| xml(if s.is_empty() { "–" } else { s });
            let _ = writeln!(
                page.body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                xml(device),
                show(&cond.governor),
                show(&cond.freq_limits_mhz),
                show(&cond.selinux),
                show(&cond.sched),
                show(&cond.cpuset),
                show(&cond.cpus_allowed),
                cells
                    .iter()
                    .map(|c| format!("<code>{}</code>", xml(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        page.body.push_str("</tbody></table>\n");
    }
    let hot: Vec<String> = a
        .cells
        .iter()
        .filter_map(|c| {
            let s = c.thermal_status.0.filter(|s| *s > 0)?;
            Some(format!(
                "<code>{}</code> on {}: {}",
                xml(&a.label(&c.key)),
                xml(&c.key.device),
                xml(&thermal_status_text(s))
            ))
        })
        .collect();
    if !hot.is_empty() {
        let _ = writeln!(
            page.body,
            "<p class=\"note\">Started above Android thermal status 0 (the device was already \
             limiting itself): {}.</p>",
            hot.join("; ")
        );
    }
}
