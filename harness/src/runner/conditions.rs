//! The run-condition columns of a row (see `socbench_reports::row::ResultRow::governor` and
//! the fields after it): what the agent read at the cell's start, after the repetition, and
//! once per agent run; and the note for a thread pin the device did not honour.

use socbench_agent::plan::RepResult;
use socbench_devices::conditions::{FreqConditions, ProcessConditions};
use socbench_reports::row::ResultRow;

/// What the agent read when a cell started (its `cell_start` event) and ended.
#[derive(Debug, Clone, Default)]
pub(super) struct CellConditions {
    pub freq: FreqConditions,
    /// Android's thermal status at the cell's start and end.
    pub thermal_status: (Option<f64>, Option<f64>),
    pub battery_pct: Option<f64>,
}

/// A thermal status level 0–6 (anything else is not a status).
fn level(v: Option<f64>) -> Option<u8> {
    v.filter(|v| (0.0..=6.0).contains(v) && v.fract() == 0.0)
        .map(|v| v as u8)
}

/// Fills the row's condition columns: the repetition's own readings where it has them (its
/// row may be written before the cell ends), else the cell's.
pub(super) fn apply(
    row: &mut ResultRow,
    cell: Option<&CellConditions>,
    process: Option<&ProcessConditions>,
    r: Option<&RepResult>,
) {
    if let Some(c) = cell {
        row.governor = c.freq.governor.clone();
        row.freq_limits_mhz = c.freq.freq_limits_mhz.clone();
        row.thermal_status_start = level(c.thermal_status.0);
        row.thermal_status_end = level(c.thermal_status.1);
        row.battery_pct_start = c.battery_pct;
    }
    if let Some(r) = r {
        if !r.freq.governor.is_empty() || !r.freq.freq_limits_mhz.is_empty() {
            row.governor = r.freq.governor.clone();
            row.freq_limits_mhz = r.freq.freq_limits_mhz.clone();
        }
        if let Some(s) = level(r.thermal_status) {
            row.thermal_status_end = Some(s);
        }
    }
    if let Some(p) = process {
        row.selinux = p.selinux.clone();
        row.sched = p.sched.clone();
        row.cpuset = p.cpuset.clone();
        row.cpus_allowed = p.cpus_allowed.clone();
    }
}

/// The row's note when threads ran outside the CPUs the cell asked for (a pin the device
/// ignored or overrode); `None` when it took, was not asked for, or cannot be told.
pub(super) fn pin_not_taken(requested: Option<&[u32]>, ran_on: &[u32]) -> Option<String> {
    let requested = requested?;
    let outside: Vec<u32> = ran_on
        .iter()
        .copied()
        .filter(|c| !requested.contains(c))
        .collect();
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    (!outside.is_empty()).then(|| {
        format!(
            "affinity not honoured: asked for CPUs {}, threads ran on {}",
            list(requested),
            list(ran_on)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use socbench_reports::row::Status;

    #[test]
    fn a_pin_is_flagged_only_when_threads_ran_outside_it() {
        assert_eq!(pin_not_taken(None, &[0, 1]), None);
        assert_eq!(pin_not_taken(Some(&[0, 1]), &[1]), None);
        assert_eq!(pin_not_taken(Some(&[0]), &[]), None, "cannot tell");
        assert_eq!(
            pin_not_taken(Some(&[4, 5]), &[1, 5]).as_deref(),
            Some("affinity not honoured: asked for CPUs 4,5, threads ran on 1,5")
        );
    }

    #[test]
    fn the_repetitions_own_readings_win_over_the_cells() {
        let key = socbench_reports::fixture::cell_key("d", "m", "q8");
        let freq = |max: &str| FreqConditions {
            governor: "schedutil".into(),
            freq_limits_mhz: format!("300-{max}"),
        };
        let cell = CellConditions {
            freq: freq("2800"),
            thermal_status: (Some(0.0), None),
            battery_pct: Some(80.0),
        };
        let rep: RepResult = serde_json::from_value(serde_json::json!({
            "cell": "c", "repetition": 0, "t_start_s": 0.0, "t_first_token_s": 0.1,
            "t_end_s": 1.0, "ttft_s": 0.1, "decode_s": [], "prompt_tokens": 1, "batch": 1,
            "peak_rss_bytes": null, "peak_rss_is_per_rep": false,
            "freq": {"governor": "schedutil", "freq_limits_mhz": "300-2000"},
            "thermal_status": 2.0
        }))
        .unwrap();
        let mut row = ResultRow::new("r".into(), &key, 0, Status::Ok);
        let process = ProcessConditions {
            selinux: "enforcing".into(),
            ..ProcessConditions::default()
        };
        apply(&mut row, Some(&cell), Some(&process), Some(&rep));
        assert_eq!(row.freq_limits_mhz, "300-2000", "capped during the run");
        assert_eq!(
            (row.thermal_status_start, row.thermal_status_end),
            (Some(0), Some(2))
        );
        assert_eq!(row.battery_pct_start, Some(80.0));
        assert_eq!(row.selinux, "enforcing");
        // A row without a run (failed, skipped) takes the cell's; nonsense levels are dropped.
        let mut row = ResultRow::new("r".into(), &key, 1, Status::Failed);
        let odd = CellConditions {
            thermal_status: (Some(7.0), Some(1.0)),
            ..cell
        };
        apply(&mut row, Some(&odd), None, None);
        assert_eq!(row.freq_limits_mhz, "300-2800");
        assert_eq!(
            (row.thermal_status_start, row.thermal_status_end),
            (None, Some(1))
        );
    }
}
