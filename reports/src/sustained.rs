//! Sustained sessions (`duration_s`): figures from a session's token times and the sensors
//! sampled during it. The runner writes them into the session's row; the report draws the
//! windows from the same token times (kept raw in `events.jsonl`).
//!
//! - Throughput per window: tokens that arrived in each [`WINDOW_S`] window from the
//!   session's start, times the batch, over the window's length (whole windows only; a
//!   session shorter than one window is one window).
//! - Peak: the best window. Sustained: the median of the last quarter of the windows (at least
//!   one). Sustained ÷ peak is what heat and clocks took away over the session.
//! - Time to throttle: from the session's start to the first sample with the fastest core
//!   below 90 % of its top frequency (the rule a row's `throttled` uses).
//! - Battery drop: the charge counter (mAh) and the level (%) at the session's start less at
//!   its end, each interpolated between its samples.

use crate::derive::{Series, interp};

/// Length of a throughput window, s.
pub const WINDOW_S: f64 = 5.0;

/// A session's token times, as the agent reported them.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRun {
    /// Cell key text.
    pub cell: String,
    /// Repetition.
    pub repetition: u32,
    /// Sequences decoded together (each token time stands for this many tokens).
    pub batch: usize,
    /// Start and end of the session on the agent's clock, s.
    pub t_start_s: f64,
    /// See `t_start_s`.
    pub t_end_s: f64,
    /// Generations run back to back.
    pub generations: usize,
    /// When each token (one step of the batch) arrived, on the agent's clock, s.
    pub token_s: Vec<f64>,
}

/// An adaptive repetition's level switches, as the agent reported them.
#[derive(Debug, Clone, PartialEq)]
pub struct RepSwitches {
    /// Cell key text.
    pub cell: String,
    /// Repetition.
    pub repetition: u32,
    /// Start of the repetition on the agent's clock, s.
    pub t_start_s: f64,
    /// The level it started on.
    pub start: String,
    /// `(t_s, from, to, hottest zone °C)` per switch, agent clock.
    pub switches: Vec<(f64, String, String, f64)>,
}

/// Throughput per window: `(window end − t0, tok/s)` for each whole window of `window_s` in
/// `[t0, t1]` (the whole span as one window when it is shorter than one).
pub fn windows(token_s: &[f64], batch: usize, t0: f64, t1: f64, window_s: f64) -> Vec<(f64, f64)> {
    let span = t1 - t0;
    if !(span > 0.0 && window_s > 0.0) {
        return Vec::new();
    }
    let n = (span / window_s).floor() as usize;
    let (n, w) = if n == 0 { (1, span) } else { (n, window_s) };
    let mut counts = vec![0usize; n];
    for &t in token_s {
        let k = ((t - t0) / w).floor();
        if k >= 0.0 && (k as usize) < n {
            counts[k as usize] += 1;
        }
    }
    counts
        .iter()
        .enumerate()
        .map(|(k, &c)| ((k + 1) as f64 * w, (c * batch) as f64 / w))
        .collect()
}

/// Peak, sustained and sustained ÷ peak throughput of a session's windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// The best window, tok/s.
    pub peak: f64,
    /// Median of the last quarter of the windows, tok/s.
    pub sustained: f64,
    /// `sustained / peak` (`None` when the peak is 0).
    pub ratio: Option<f64>,
}

/// See [`Throughput`]; `None` without windows.
pub fn throughput(windows: &[(f64, f64)]) -> Option<Throughput> {
    let peak = windows.iter().map(|w| w.1).reduce(f64::max)?;
    let tail = windows.len().div_ceil(4);
    let last: Vec<f64> = windows[windows.len() - tail..]
        .iter()
        .map(|w| w.1)
        .collect();
    let sustained = crate::stats::percentile(&last, 50.0)?;
    Some(Throughput {
        peak,
        sustained,
        ratio: (peak > 0.0).then(|| sustained / peak),
    })
}

/// Seconds from `t0` to the first sample in `[t0, t1]` with the fastest core below 90 % of
/// `top_mhz`; `None` when it never did (or no sample falls in the window).
pub fn time_to_throttle(fastest_mhz: &Series, top_mhz: f64, t0: f64, t1: f64) -> Option<f64> {
    fastest_mhz
        .iter()
        .find(|&&(t, f)| t >= t0 && t <= t1 && f < 0.9 * top_mhz)
        .map(|&(t, _)| t - t0)
}

/// What a counter lost over `[t0, t1]` (start less end, interpolated); `None` without samples
/// on both sides of the window's ends or inside it.
pub fn drop_over(s: &Series, t0: f64, t1: f64) -> Option<f64> {
    let covered = s.iter().any(|p| p.0 <= t0 + WINDOW_S) && s.iter().any(|p| p.0 >= t1 - WINDOW_S);
    covered
        .then(|| Some(interp(s, t0)? - interp(s, t1)?))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_tokens_times_the_batch_per_whole_window() {
        // 10 tokens a second for 12 s, from t = 100.
        let tokens: Vec<f64> = (0..120).map(|i| 100.05 + f64::from(i) * 0.1).collect();
        let w = windows(&tokens, 2, 100.0, 112.0, 5.0);
        assert_eq!(w.len(), 2, "the last 2 s are no whole window");
        assert_eq!(w[0], (5.0, 20.0));
        assert_eq!(w[1], (10.0, 20.0));
        // Shorter than a window: the whole span.
        let w = windows(&tokens[..20], 1, 100.0, 102.0, 5.0);
        assert_eq!(w, vec![(2.0, 10.0)]);
        assert!(windows(&tokens, 1, 5.0, 5.0, 5.0).is_empty());
    }

    #[test]
    fn sustained_is_the_last_quarter_against_the_best_window() {
        let w: Vec<(f64, f64)> = [30.0, 32.0, 31.0, 25.0, 20.0, 21.0, 19.0, 20.0]
            .iter()
            .enumerate()
            .map(|(k, v)| ((k + 1) as f64 * 5.0, *v))
            .collect();
        let t = throughput(&w).unwrap();
        assert_eq!(t.peak, 32.0);
        assert_eq!(t.sustained, 19.5, "median of the last two windows");
        assert_eq!(t.ratio, Some(19.5 / 32.0));
        assert_eq!(throughput(&[]), None);
        assert_eq!(throughput(&[(5.0, 0.0)]).unwrap().ratio, None);
    }

    #[test]
    fn throttling_and_battery_drop_are_read_inside_the_session() {
        let f = [(1.0, 2000.0), (5.0, 1900.0), (9.0, 1200.0), (20.0, 1000.0)];
        assert_eq!(time_to_throttle(&f, 2000.0, 2.0, 30.0), Some(7.0));
        assert_eq!(time_to_throttle(&f, 2000.0, 2.0, 8.0), None);
        let charge = [(0.0, 3000.0), (10.0, 2990.0), (20.0, 2980.0)];
        assert_eq!(drop_over(&charge, 5.0, 15.0), Some(10.0));
        assert_eq!(
            drop_over(&charge, 30.0, 60.0),
            None,
            "no sample near the session"
        );
    }
}
