//! The report's sustained sessions section (`duration_s`): per session cell, the table of
//! peak and sustained throughput, time to throttle and the battery drop measured over the
//! session beside the 30-minute figure extrapolated from power; and, overlaid per session,
//! throughput per window, the hottest zone's temperature and the fastest core's frequency
//! against time since the session's start.

use super::{Page, slug};
use crate::analysis::{Analysis, CellSummary, cell_text, is_cpu_freq};
use crate::charts::{self, Timeline};
use crate::escape::xml;
use crate::schema::{AgentRun, Metric, ResultSet, Status};
use crate::sustained::{self, SessionRun};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A chart line: its name and points.
type Named = (String, Vec<(f64, f64)>);

/// Session cells drawn as charts (the table lists every one).
const MAX_CHARTED: usize = 6;

/// Whether `a` has a sustained session cell (the section is left out otherwise).
pub(super) fn any(a: &Analysis) -> bool {
    a.cells.iter().any(|c| c.key.duration_s > 0)
}

/// Where `c`'s rows came from: `(result directory, the events' id of the cell)` per
/// directory (a key names no model: events are only matched within the rows' directory).
pub(super) fn cell_ids<'s>(set: &'s ResultSet, c: &CellSummary) -> Vec<(usize, &'s str)> {
    let mut ids: Vec<(usize, &str)> = Vec::new();
    for r in set.records.iter().filter(|r| r.key == c.key) {
        let id = (r.source, cell_text(r));
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// The cell's sessions with the agent run each ran in.
fn sessions_of<'s>(set: &'s ResultSet, c: &CellSummary) -> Vec<(&'s AgentRun, &'s SessionRun)> {
    let ids = cell_ids(set, c);
    set.agent_runs
        .iter()
        .filter(|r| r.device == c.key.device)
        .flat_map(|r| r.sessions.iter().map(move |s| (r, s)))
        .filter(|(r, s)| ids.contains(&(r.source, s.cell.as_str())))
        .collect()
}

/// Per sample time of `run`, the largest value of the sensors `pick` selects.
fn highest(run: &AgentRun, pick: impl Fn(&str) -> bool) -> Vec<(f64, f64)> {
    let mut at: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (_, series) in run.sensors.iter().filter(|(n, _)| pick(n)) {
        for &(t, v) in series {
            let e = at.entry(t.to_bits()).or_insert((t, v));
            e.1 = e.1.max(v);
        }
    }
    let mut v: Vec<(f64, f64)> = at.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// The points of `series` inside the session, against time since its start.
fn during(series: &[(f64, f64)], s: &SessionRun) -> Vec<(f64, f64)> {
    series
        .iter()
        .filter(|p| p.0 >= s.t_start_s && p.0 <= s.t_end_s)
        .map(|p| (p.0 - s.t_start_s, p.1))
        .collect()
}

pub(super) fn render(page: &mut Page, set: &ResultSet, a: &Analysis) {
    let cells: Vec<&CellSummary> = a.cells.iter().filter(|c| c.key.duration_s > 0).collect();
    page.body.push_str(
        "<p>Each repetition of a sustained-session cell generates back to back from the prompt \
         (the KV cache reset each time, the model kept loaded) until <code>duration_s</code> \
         has passed; it ends with the first generation that finishes past it. Throughput is \
         counted per 5-second window from the token times the agent recorded.</p>\n",
    );
    let simulated: Vec<&str> = a
        .devices
        .iter()
        .filter(|d| d.sensors == "simulated" && cells.iter().any(|c| c.key.device == d.serial))
        .map(|d| d.serial.as_str())
        .collect();
    if !simulated.is_empty() {
        let _ = writeln!(
            page.body,
            "<p class=\"note\">Simulated sensors on {}: temperatures, clocks, throttling and \
             battery there are the virtual device's model outputs, not phone readings.</p>",
            xml(&simulated.join(", "))
        );
    }
    page.body.push_str(
        "<table class=\"sustained\"><thead><tr><th>Device</th><th>Configuration</th>\
         <th>Sessions</th><th>Length</th><th>Generations</th><th>Peak window</th>\
         <th>Sustained</th><th>Sustained / peak</th><th>Time to throttle</th>\
         <th>Battery drop, measured</th><th>Measured, per 30 min</th>\
         <th>30 min, from power</th><th>Power</th></tr></thead><tbody>\n",
    );
    for c in &cells {
        let f = |m: Metric| c.metric(m).map(|s| s.median);
        let show = |m: Metric| f(m).map_or("–".to_owned(), |v| m.format(v));
        let lengths: Vec<f64> = sessions_of(set, c)
            .iter()
            .map(|(_, s)| s.t_end_s - s.t_start_s)
            .collect();
        // Measured from the sessions' events; without them, the planned length.
        let length =
            crate::stats::percentile(&lengths, 50.0).or_else(|| Some(f64::from(c.key.duration_s)));
        let design_mah = set
            .device_info(&c.key.device)
            .and_then(|i| i["battery_design_uah"].as_f64())
            .map(|uah| uah / 1000.0)
            .filter(|m| *m > 0.0);
        let drop = match (f(Metric::BatteryDropMah), f(Metric::BatteryDropPct)) {
            (None, None) => "–".to_owned(),
            (mah, pct) => {
                let mah = mah.map_or("–".into(), |v| Metric::BatteryDropMah.format(v));
                let pct = pct.map_or("–".into(), |v| Metric::BatteryDropPct.format(v));
                format!("{mah} ({pct})")
            }
        };
        // The charge counter scaled, as a share of the design capacity (the level moves in
        // whole percent: scaled up, one step would read as many).
        let per_30 = match (length, f(Metric::BatteryDropMah)) {
            (Some(len), Some(mah)) if len > 0.0 => {
                let scaled = mah * 1800.0 / len;
                let pct = design_mah.map_or(String::new(), |d| {
                    format!(" ({})", Metric::BatteryDropPct.format(scaled / d * 100.0))
                });
                format!("{}{pct}", Metric::BatteryDropMah.format(scaled))
            }
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            page.body,
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            xml(&c.key.device),
            xml(&a.label(&c.key)),
            c.counts.get(&Status::Ok).copied().unwrap_or(0),
            length.map_or("–".into(), |l| format!("{l:.1} s")),
            xml(&show(Metric::Generations)),
            xml(&show(Metric::WindowPeakTokPerS)),
            xml(&show(Metric::SustainedTokPerS)),
            xml(&show(Metric::SustainedRatio)),
            xml(&throttle_text(a, c)),
            xml(&drop),
            xml(&per_30),
            xml(&show(Metric::Battery30MinPct)),
            xml(if c.power_source.is_empty() {
                "unknown"
            } else {
                &c.power_source
            }),
        );
    }
    page.body.push_str(
        "</tbody></table>\n<p>Medians over the cell's sessions. Peak window: the best 5-second \
         window; sustained: the median of the last quarter of the windows. Time to throttle: \
         from the session's start to the first sample with the fastest core below 90 % of its \
         top frequency (not judged in fixed-performance mode, whose caps are deliberate, nor \
         where the device's top frequency is unknown). Battery drop: \
         the charge counter (mAh) and the level (%) at the session's start less at its end, \
         measured, on battery only; per 30 min: the charge counter's drop scaled by the \
         session's measured length, and its share of the design capacity. 30 min, from power: the session's average power for 30 minutes over the \
         battery's design energy, an extrapolation.</p>\n",
    );
    for c in cells.iter().take(MAX_CHARTED) {
        charts_of(page, set, a, c);
    }
    if cells.len() > MAX_CHARTED {
        page.na(
            "Further sessions",
            &format!(
                "{} more session cells are in the table, not drawn",
                cells.len() - MAX_CHARTED
            ),
        );
    }
}

/// The time to throttle, or why there is none.
fn throttle_text(a: &Analysis, c: &CellSummary) -> String {
    let known_top = a
        .devices
        .iter()
        .any(|d| d.serial == c.key.device && d.top_freq_mhz.is_some());
    let sessions = c.counts.get(&Status::Ok).copied().unwrap_or(0);
    let throttled = c.metric(Metric::ThrottleAfterS).map_or(0, |s| s.n);
    match c.time_to_throttle_s {
        // The median over the sessions that throttled; say how many did.
        Some(t) if throttled < sessions => format!("{t:.1} s ({throttled} of {sessions})"),
        Some(t) => format!("{t:.1} s"),
        None if c.key.perf_mode == "fixed" || !known_top => "not judged".into(),
        None => "did not throttle".into(),
    }
}

/// Throughput, temperature and frequency of each of `c`'s sessions, overlaid.
fn charts_of(page: &mut Page, set: &ResultSet, a: &Analysis, c: &CellSummary) {
    let label = a.label(&c.key);
    let sessions = sessions_of(set, c);
    if sessions.is_empty() {
        page.na(
            &format!("Sustained session of {label}"),
            "its token times are not in events.jsonl (results merged without their events?)",
        );
        return;
    }
    let device = a.devices.iter().find(|d| d.serial == c.key.device);
    let top = device
        .and_then(|d| d.top_freq_mhz)
        .filter(|_| c.key.perf_mode != "fixed");
    let sim = if device.is_some_and(|d| d.sensors == "simulated") {
        " Simulated sensors (virtual ADB device): model outputs, not phone readings."
    } else {
        ""
    };
    let mut groups: [Vec<Named>; 3] = Default::default();
    let mut throttled = Vec::new();
    // An adaptive cell's switches, marked on every curve.
    let switched = super::adaptive_section::switches_of(set, c);
    let mut switches = Vec::new();
    for (run, s) in &sessions {
        let name = format!("session {}", s.repetition + 1);
        for r in switched
            .iter()
            .filter(|r| r.repetition == s.repetition && r.t_start_s == s.t_start_s)
        {
            switches.extend(r.switches.iter().map(|x| x.0 - s.t_start_s));
        }
        let w = sustained::windows(
            &s.token_s,
            s.batch,
            s.t_start_s,
            s.t_end_s,
            sustained::WINDOW_S,
        );
        groups[0].push((name.clone(), w));
        let hottest = highest(run, |n| n.starts_with("thermal_"));
        groups[1].push((name.clone(), during(&hottest, s)));
        let fastest = during(&highest(run, is_cpu_freq), s);
        if let Some(top) = top {
            throttled.extend(fastest.iter().filter(|p| p.1 < 0.9 * top).map(|p| p.0));
        }
        groups[2].push((name, fastest));
    }
    let id = slug(&format!("{}-{}", c.key.device, label));
    for ((group, title, unit, what), series) in [
        (
            "throughput",
            "Throughput",
            "tok/s",
            "tokens per 5-second window",
        ),
        (
            "temperature",
            "Temperature",
            "°C",
            "the hottest thermal zone",
        ),
        ("frequency", "CPU frequency", "MHz", "the fastest core"),
    ]
    .into_iter()
    .zip(groups)
    {
        let full = format!("{title} over the sustained session of {label}");
        let marks = if switches.is_empty() {
            ""
        } else {
            " Grey lines: adaptive precision switches."
        };
        if series.iter().all(|s| s.1.is_empty()) {
            page.na(&full, &format!("no {group} readings during the sessions"));
            continue;
        }
        let t = Timeline {
            y_label: format!("{title} ({unit})"),
            series: series
                .into_iter()
                .map(|(n, pts)| (n, charts::downsample(&pts, 1200)))
                .collect(),
            boundaries: switches.clone(),
            throttled: throttled.clone(),
            x_from_zero: true,
            y_from_zero: group == "throughput",
        };
        page.figure(
            &format!("sustained-{group}-{id}"),
            &full,
            charts::timeline(&t),
            &xml(&format!(
                "Time since each session's start; {what}, one line per session. Red ticks: \
                 samples where the fastest core ran below 90 % of its top frequency.{marks}{sim}"
            )),
        );
    }
}
