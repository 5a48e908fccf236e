//! A sustained session's row figures (`duration_s`): throughput per window, peak, sustained
//! and their ratio, time to throttle, and the battery drop measured over the session
//! (`socbench_reports::sustained` says how each is computed).

use super::samples::Samples;
use socbench_agent::plan::{RepResult, SessionTrace};
use socbench_reports::row::ResultRow;
use socbench_reports::schema::Metric;
use socbench_reports::sustained as fig;

/// Sets the session columns of `row`. `top_mhz` is the device's top frequency where
/// throttling is judged (not under fixed-performance mode); the battery drop is only taken
/// on battery (on a cable the counters describe the supply, not the workload).
pub(super) fn apply(
    row: &mut ResultRow,
    r: &RepResult,
    s: &SessionTrace,
    samples: &Samples,
    top_mhz: Option<f64>,
    on_battery: bool,
) {
    let (t0, t1) = (r.t_start_s, r.t_end_s);
    row.set(Metric::Generations, Some(s.generations as f64));
    let windows = fig::windows(&s.token_s, r.batch, t0, t1, fig::WINDOW_S);
    if let Some(t) = fig::throughput(&windows) {
        row.set(Metric::WindowPeakTokPerS, Some(t.peak));
        row.set(Metric::SustainedTokPerS, Some(t.sustained));
        row.set(Metric::SustainedRatio, t.ratio);
    }
    if let Some(top) = top_mhz {
        row.set(
            Metric::ThrottleAfterS,
            fig::time_to_throttle(&samples.fastest_core(), top, t0, t1),
        );
    }
    if on_battery {
        for (sensor, m) in [
            ("battery_charge_mah", Metric::BatteryDropMah),
            ("battery_capacity_pct", Metric::BatteryDropPct),
        ] {
            if let Some(series) = samples.named(|x| x.name == sensor).pop() {
                row.set(m, fig::drop_over(&series, t0, t1));
            }
        }
    }
}
