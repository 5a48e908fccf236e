//! Per-cell summaries of a [`ResultSet`]: statistics of every metric over the measured
//! repetitions, outcome counts, battery impact, and thermal behaviour.
//!
//! Derived quantities, and how they are computed:
//! - **Battery impact over 30 minutes**: `avg_power_w × 1800 s` as a share of the battery's
//!   energy, `design capacity (µAh) × voltage`. The voltage is the median `battery_voltage_v`
//!   sampled on that device; without one, the Li-ion nominal 3.85 V (said so in the report).
//! - **Time to throttle**: from a cell's start to the first sample at which the fastest core
//!   runs below 90 % of the device's top frequency (the same rule as the `throttled` column).
//! - **Sustained-to-peak ratio**: decode throughput of the cell's last repetition over its best
//!   one (1.0 when the device holds its speed; below 1 when it slows under sustained load).
//! - **Session spread**: for cells measured in several sessions, the coefficient of variation
//!   of decode throughput within sessions (pooled) and between session medians.

use crate::conditions::Conditions;
use crate::schema::{CellKey, Metric, Record, ResultSet, Status};
use crate::stats::{self, Summary};
use serde::Serialize;
use std::collections::BTreeMap;

/// Nominal Li-ion cell voltage, used when a device reports no battery voltage.
pub const NOMINAL_BATTERY_V: f64 = 3.85;

/// Summary of one cell over its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct CellSummary {
    /// The cell.
    pub key: CellKey,
    /// Repetitions by outcome.
    pub counts: BTreeMap<Status, usize>,
    /// Distinct reasons given for repetitions that were not `ok`.
    pub notes: Vec<String>,
    /// Distinct notes on `ok` repetitions: measured, but under a condition the reader should
    /// know (a thread pin the device did not honour).
    pub warnings: Vec<String>,
    /// Statistics of each measured metric over the `ok` repetitions.
    pub metrics: BTreeMap<Metric, Summary>,
    /// `real`, `simulated` or `none` (sensor origin of the device).
    pub sensors: String,
    /// Where energy came from, when it was measured.
    pub energy_source: String,
    /// What powered the device during the measured repetitions: their distinct
    /// `power_source` values, sorted and joined by `, ` (empty when none was recorded).
    pub power_source: String,
    /// The code that ran the products (the rows' `kernel`), when a repetition was measured.
    pub kernel: String,
    /// The distinct run conditions of the measured repetitions, in the order first seen
    /// (more than one: flagged in `warnings`).
    pub conditions: Vec<Conditions>,
    /// Android's thermal status at the start and the end, the highest over the measured
    /// repetitions.
    pub thermal_status: (Option<u8>, Option<u8>),
    /// Repetitions during which the device throttled, of those where it could be told.
    pub throttled_reps: (usize, usize),
    /// Repetitions that started on a charger, of those where it could be told.
    pub charging_reps: (usize, usize),
    /// Seconds from the cell's start to the first throttled sample (a sustained session: from
    /// the session's start, the median over its sessions).
    pub time_to_throttle_s: Option<f64>,
    /// Decode throughput of the last repetition over the best one (a sustained session: its
    /// last quarter over its best window, the median over its sessions).
    pub sustained_to_peak: Option<f64>,
    /// Sessions the repetitions came from.
    pub sessions: Vec<String>,
    /// `(sessions, within-session CV, between-session CV)` of decode tok/s, when several.
    pub session_spread: Option<(usize, f64, f64)>,
}

impl CellSummary {
    /// The external supplies (`usb`, `ac`, `wireless`, `external`) that powered the device
    /// during measured repetitions; empty when it ran on battery or that is unknown.
    pub fn external_power(&self) -> Vec<&str> {
        self.power_source
            .split(", ")
            .filter(|p| !p.is_empty() && *p != "battery" && *p != "unknown")
            .collect()
    }
    /// Repetitions with outcome `s`.
    pub fn count(&self, s: Status) -> usize {
        self.counts.get(&s).copied().unwrap_or(0)
    }

    /// The metric's summary, when measured.
    pub fn metric(&self, m: Metric) -> Option<&Summary> {
        self.metrics.get(&m)
    }

    /// Whether any repetition failed or was lost.
    pub fn has_failures(&self) -> bool {
        self.count(Status::Failed) + self.count(Status::DeviceLost) > 0
    }
}

/// What the report says about a device as a whole.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    /// Serial.
    pub serial: String,
    /// Manufacturer and model, when known.
    pub name: String,
    /// `real`, `simulated` or `none`.
    pub sensors: String,
    /// Battery energy in watt-hours, when the design capacity is known.
    pub battery_wh: Option<f64>,
    /// Whether `battery_wh` used a measured voltage (else the nominal 3.85 V).
    pub battery_voltage_measured: bool,
    /// Top CPU frequency in MHz (the throttle reference).
    pub top_freq_mhz: Option<f64>,
}

/// The analysis of a result set.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    /// Cells, grouped by device in order of appearance, then by configuration.
    pub cells: Vec<CellSummary>,
    /// Devices in order of appearance.
    pub devices: Vec<DeviceSummary>,
    /// Models measured (file names).
    pub models: Vec<String>,
}

impl Analysis {
    /// `flex q8 t2 …`, prefixed with the model when the results hold several.
    pub fn label(&self, key: &CellKey) -> String {
        if self.models.len() > 1 {
            format!("{} {}", key.model, key.describe())
        } else {
            key.describe()
        }
    }

    /// Cells of `device`.
    pub fn cells_of<'a>(&'a self, device: &'a str) -> impl Iterator<Item = &'a CellSummary> + 'a {
        self.cells.iter().filter(move |c| c.key.device == device)
    }

    /// Outcome counts over every cell.
    pub fn totals(&self) -> BTreeMap<Status, usize> {
        let mut t = BTreeMap::new();
        for c in &self.cells {
            for (s, n) in &c.counts {
                *t.entry(*s).or_default() += n;
            }
        }
        t
    }
}

/// A stable seed per cell, so a report always shows the same intervals.
pub fn seed_of(key: &CellKey) -> u64 {
    let text = format!("{}|{}|{}", key.device, key.model, key.describe());
    // FNV-1a.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cell key text the runner uses in events (`run_id` without `#repetition`).
pub fn cell_text(r: &Record) -> &str {
    let cell = r
        .run_id
        .rsplit_once('#')
        .map_or(r.run_id.as_str(), |(c, _)| c);
    // `socbench run` writes `model id|cell key`; the agent's events name the cell key alone,
    // which starts with the device's serial.
    let device = format!("|{}|", r.key.device);
    match cell.find(&device) {
        Some(i) if !cell.starts_with(&device[1..]) => &cell[i + 1..],
        _ => cell,
    }
}

fn device_summary(set: &ResultSet, serial: &str) -> DeviceSummary {
    let info = set.device_info(serial);
    let s = |k: &str| info.and_then(|i| i[k].as_str()).map(str::to_owned);
    let name = match (s("manufacturer"), s("model")) {
        (Some(a), Some(b)) if !b.starts_with(&a) => format!("{a} {b}"),
        (_, Some(b)) => b,
        (Some(a), None) => a,
        (None, None) => serial.to_owned(),
    };
    let sensors = set
        .records
        .iter()
        .find(|r| r.key.device == serial && !r.sensors.is_empty())
        .map_or_else(|| s("sensors").unwrap_or_default(), |r| r.sensors.clone());
    let voltages: Vec<f64> = set
        .agent_runs
        .iter()
        .filter(|a| a.device == serial)
        .filter_map(|a| a.sensors.get("battery_voltage_v"))
        .flatten()
        .map(|p| p.1)
        .filter(|v| *v > 0.5)
        .collect();
    let design_uah = info.and_then(|i| i["battery_design_uah"].as_f64());
    let voltage = (!voltages.is_empty()).then(|| stats::median(&voltages));
    let battery_wh = design_uah.map(|uah| uah * 1e-6 * voltage.unwrap_or(NOMINAL_BATTERY_V));
    let top_khz = info.and_then(|i| i["clusters"].as_array()).and_then(|c| {
        c.iter()
            .filter_map(|x| x["max_khz"].as_f64())
            .reduce(f64::max)
    });
    let top_freq_mhz = top_khz.map(|k| k / 1000.0).or_else(|| {
        set.agent_runs
            .iter()
            .filter(|a| a.device == serial)
            .flat_map(|a| {
                a.sensors
                    .iter()
                    .filter(|(n, _)| is_cpu_freq(n))
                    .flat_map(|(_, v)| v.iter().map(|p| p.1))
            })
            .reduce(f64::max)
    });
    DeviceSummary {
        serial: serial.to_owned(),
        name,
        sensors,
        battery_wh,
        battery_voltage_measured: voltage.is_some(),
        top_freq_mhz,
    }
}

/// Whether a sensor is a CPU core's current frequency.
pub fn is_cpu_freq(name: &str) -> bool {
    name.starts_with("cpu") && name.ends_with("_freq_mhz")
}

/// Fastest core's frequency at each sample time of an agent run.
fn fastest_core(run: &crate::schema::AgentRun) -> Vec<(f64, f64)> {
    let mut at: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (name, series) in &run.sensors {
        if !is_cpu_freq(name) {
            continue;
        }
        for &(t, v) in series {
            let e = at.entry(t.to_bits()).or_insert((t, v));
            e.1 = e.1.max(v);
        }
    }
    let mut v: Vec<(f64, f64)> = at.into_values().collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn time_to_throttle(set: &ResultSet, r: &Record, top: f64) -> Option<f64> {
    let cell = cell_text(r);
    set.agent_runs
        .iter()
        .filter(|a| a.device == r.key.device && a.source == r.source)
        .filter_map(|a| {
            let (_, t0, t1, _) = a.cells.iter().find(|c| c.0 == cell)?;
            let t1 = t1.unwrap_or(f64::INFINITY);
            fastest_core(a)
                .into_iter()
                .find(|(t, f)| *t >= *t0 && *t <= t1 && *f < 0.9 * top)
                .map(|(t, _)| t - t0)
        })
        .reduce(f64::min)
}

/// Summarises every cell of `set`.
pub fn analyze(set: &ResultSet) -> Analysis {
    let order = set.device_order();
    let devices: Vec<DeviceSummary> = order.iter().map(|d| device_summary(set, d)).collect();
    let mut groups: BTreeMap<CellKey, Vec<&Record>> = BTreeMap::new();
    for r in &set.records {
        groups.entry(r.key.clone()).or_default().push(r);
    }
    let mut cells = Vec::new();
    for dev in &devices {
        for (key, recs) in groups.iter().filter(|(k, _)| k.device == dev.serial) {
            cells.push(summarize_cell(set, dev, key, recs));
        }
    }
    let mut models: Vec<String> = Vec::new();
    for r in &set.records {
        if !models.contains(&r.key.model) {
            models.push(r.key.model.clone());
        }
    }
    Analysis {
        cells,
        devices,
        models,
    }
}

fn summarize_cell(
    set: &ResultSet,
    dev: &DeviceSummary,
    key: &CellKey,
    recs: &[&Record],
) -> CellSummary {
    let mut counts = BTreeMap::new();
    let mut notes: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    for r in recs {
        *counts.entry(r.status).or_default() += 1;
        let list = if r.status == Status::Ok {
            &mut warnings
        } else {
            &mut notes
        };
        if !r.note.is_empty() && !list.contains(&r.note) {
            list.push(r.note.clone());
        }
    }
    let ok: Vec<&Record> = recs
        .iter()
        .copied()
        .filter(|r| r.status == Status::Ok)
        .collect();
    let mut conditions: Vec<Conditions> = Vec::new();
    for r in &ok {
        if !r.conditions.is_empty() && !conditions.contains(&r.conditions) {
            conditions.push(r.conditions.clone());
        }
    }
    let thermal_status = (
        ok.iter().filter_map(|r| r.thermal_status.0).max(),
        ok.iter().filter_map(|r| r.thermal_status.1).max(),
    );
    warnings.extend(crate::conditions::warnings(&conditions, thermal_status));
    let seed = seed_of(key);
    let mut metrics = BTreeMap::new();
    for m in Metric::ALL {
        let values: Vec<f64> = ok
            .iter()
            .filter_map(|r| match m {
                Metric::Battery30MinPct => {
                    let p = r.get(Metric::AvgPowerW)?;
                    Some(p * 0.5 / dev.battery_wh? * 100.0)
                }
                _ => r.get(m),
            })
            .collect();
        if let Some(s) = stats::summarize(&values, seed) {
            metrics.insert(m, s);
        }
    }
    let known = |f: fn(&Record) -> Option<bool>| {
        let v: Vec<bool> = ok.iter().filter_map(|r| f(r)).collect();
        (v.iter().filter(|&&b| b).count(), v.len())
    };
    let mut by_rep: Vec<(&str, u32, f64)> = ok
        .iter()
        .filter_map(|r| {
            r.get(Metric::DecodeTokPerS)
                .map(|v| (r.session.as_str(), r.repetition, v))
        })
        .collect();
    by_rep.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    // A sustained session's figures are its own (the median over its sessions).
    let session_median = |m: Metric| {
        (key.duration_s > 0)
            .then(|| metrics.get(&m).map(|s: &stats::Summary| s.median))
            .flatten()
    };
    let sustained_to_peak = if key.duration_s > 0 {
        session_median(Metric::SustainedRatio)
    } else {
        (by_rep.len() >= 2)
            .then(|| {
                let best = by_rep.iter().map(|x| x.2).fold(f64::MIN, f64::max);
                by_rep.last().map(|l| l.2 / best)
            })
            .flatten()
            .filter(|x| x.is_finite())
    };
    let mut sessions: Vec<String> = Vec::new();
    for r in recs {
        if !sessions.contains(&r.session) {
            sessions.push(r.session.clone());
        }
    }
    let session_spread = spread(&ok, &sessions);
    // Fixed-performance mode caps the clocks on purpose: that is not throttling.
    let judged = key.perf_mode != "fixed";
    let time_to_throttle_s = if key.duration_s > 0 {
        session_median(Metric::ThrottleAfterS).filter(|_| judged)
    } else {
        dev.top_freq_mhz
            .filter(|_| judged)
            .and_then(|top| recs.first().and_then(|r| time_to_throttle(set, r, top)))
    };
    CellSummary {
        key: key.clone(),
        counts,
        notes,
        warnings,
        metrics,
        sensors: ok
            .first()
            .or(recs.first())
            .map_or(String::new(), |r| r.sensors.clone()),
        energy_source: ok
            .iter()
            .find(|r| !r.energy_source.is_empty())
            .map_or(String::new(), |r| r.energy_source.clone()),
        power_source: ok
            .iter()
            .map(|r| r.power_source.as_str())
            .filter(|p| !p.is_empty())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", "),
        kernel: ok
            .iter()
            .find(|r| !r.kernel.is_empty())
            .map_or(String::new(), |r| r.kernel.clone()),
        conditions,
        thermal_status,
        throttled_reps: known(|r| r.throttled),
        charging_reps: known(|r| r.charging),
        time_to_throttle_s,
        sustained_to_peak,
        sessions,
        session_spread,
    }
}

/// Within- and between-session coefficients of variation of decode throughput.
fn spread(ok: &[&Record], sessions: &[String]) -> Option<(usize, f64, f64)> {
    let per: Vec<Vec<f64>> = sessions
        .iter()
        .map(|s| {
            ok.iter()
                .filter(|r| &r.session == s)
                .filter_map(|r| r.get(Metric::DecodeTokPerS))
                .collect::<Vec<f64>>()
        })
        .filter(|v| !v.is_empty())
        .collect();
    if per.len() < 2 {
        return None;
    }
    let all: Vec<f64> = per.iter().flatten().copied().collect();
    let grand = all.iter().sum::<f64>() / all.len() as f64;
    // Pooled within-session variance.
    let (ss, dof) = per.iter().fold((0.0, 0usize), |(ss, dof), v| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        (
            ss + v.iter().map(|x| (x - m).powi(2)).sum::<f64>(),
            dof + v.len() - 1,
        )
    });
    let within = if dof > 0 {
        (ss / dof as f64).sqrt()
    } else {
        0.0
    };
    let medians: Vec<f64> = per.iter().map(|v| stats::median(v)).collect();
    let mm = medians.iter().sum::<f64>() / medians.len() as f64;
    let between =
        (medians.iter().map(|x| (x - mm).powi(2)).sum::<f64>() / (medians.len() - 1) as f64).sqrt();
    (grand > 0.0).then(|| (per.len(), within / grand, between / grand))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::ResultRow;

    #[test]
    fn a_rows_cell_text_is_the_cell_key_its_events_name() {
        let key = crate::fixture::cell_key("local", "m.gguf", "q8");
        let events_cell = "local|flex|q8|t1|b1|kvfull|p16|g16|aall";
        for run_id in [
            format!("m.gguf@ab12|{events_cell}#3"),
            format!("{events_cell}#0"),
        ] {
            let r = Record::from_row(ResultRow::new(run_id, &key, 0, Status::Ok), 0, 2, "s");
            assert_eq!(cell_text(&r), events_cell);
        }
    }
}
