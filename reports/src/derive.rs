//! Per-repetition figures derived from sensor series: energy (battery power integrated over
//! time, or RAPL counter differences), the hottest temperature, and whether the CPU throttled.
//! The runner calls these when it writes a row; they see only `(t_s, value)` series, never
//! how the samples were taken.
//!
//! Each series is in time order. A window's ends are linearly interpolated between the samples
//! around them (clamped to the first and last sample), so a repetition shorter than a sample
//! period still gets a figure.

use crate::stats::trapezoid;

/// Samples of one sensor: `(t_s, value)`, in time order.
pub type Series = [(f64, f64)];

/// The value at `t`, linearly interpolated, clamped to the ends.
pub fn interp(s: &Series, t: f64) -> Option<f64> {
    let first = s.first()?;
    let last = s.last()?;
    if t <= first.0 {
        return Some(first.1);
    }
    if t >= last.0 {
        return Some(last.1);
    }
    let k = s.partition_point(|p| p.0 <= t);
    let (a, b) = (s[k - 1], s[k]);
    Some(a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0))
}

/// The values of a state sensor that held during `[t0, t1]`: the samples inside it and the
/// one on each side (the state at the window's ends), so a window between two samples still
/// sees the state around it.
pub fn states_during(s: &Series, t0: f64, t1: f64) -> Vec<f64> {
    let before = s.iter().rposition(|p| p.0 < t0);
    let after = s.iter().position(|p| p.0 > t1);
    s.iter()
        .enumerate()
        .filter(|(k, p)| (t0..=t1).contains(&p.0) || Some(*k) == before || Some(*k) == after)
        .map(|(_, p)| p.1)
        .collect()
}

/// Integral of a gauge over `[t0, t1]` by the trapezoid rule, with the ends interpolated.
pub fn integrate(s: &Series, t0: f64, t1: f64) -> Option<f64> {
    let mut pts = vec![(t0, interp(s, t0)?)];
    pts.extend(s.iter().filter(|p| p.0 > t0 && p.0 < t1).copied());
    pts.push((t1, interp(s, t1)?));
    let (ts, vs): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
    trapezoid(&ts, &vs)
}

/// Energy of `[t0, t1]` in joules and where it came from (`battery` or `rapl`): the battery's
/// power integrated when there are at least two samples of it, else the sum of the RAPL
/// counters' increases (counters that went backwards, i.e. wrapped, are left out).
pub fn energy<'a>(
    battery_power_w: Option<&Series>,
    rapl_counters_j: impl IntoIterator<Item = &'a Series>,
    t0: f64,
    t1: f64,
) -> Option<(f64, &'static str)> {
    if let Some(s) = battery_power_w.filter(|s| s.len() >= 2) {
        return integrate(s, t0, t1).map(|j| (j, "battery"));
    }
    let mut total = None;
    for s in rapl_counters_j {
        if let (Some(a), Some(b), true) = (interp(s, t0), interp(s, t1), s.len() >= 2)
            && b >= a
        {
            *total.get_or_insert(0.0) += b - a;
        }
    }
    total.map(|j| (j, "rapl"))
}

/// The highest value of any of `series` within `[t0, t1]`, the interpolated ends included.
pub fn window_max<'a>(
    series: impl IntoIterator<Item = &'a Series>,
    t0: f64,
    t1: f64,
) -> Option<f64> {
    series
        .into_iter()
        .flat_map(|s| {
            let ends = [interp(s, t0), interp(s, t1)];
            s.iter()
                .filter(|(t, _)| *t >= t0 && *t <= t1)
                .map(|(_, v)| *v)
                .chain(ends.into_iter().flatten())
                .collect::<Vec<f64>>()
        })
        .reduce(f64::max)
}

/// Whether the fastest core ran below 90 % of `top_mhz` at any sample in `[t0, t1]`;
/// `fastest_mhz` holds, per sample time, the highest frequency of any core. `None` when no
/// sample falls in the window.
pub fn throttled(fastest_mhz: &Series, top_mhz: f64, t0: f64, t1: f64) -> Option<bool> {
    let mut any = false;
    for &(t, f) in fastest_mhz {
        if t < t0 || t > t1 {
            continue;
        }
        any = true;
        if f < 0.9 * top_mhz {
            return Some(true);
        }
    }
    any.then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_integrates_power_and_splits_at_any_point() {
        let p = [(0.0, 2.0), (1.0, 2.0), (2.0, 4.0)];
        let (all, src) = energy(Some(&p), [], 0.0, 2.0).unwrap();
        assert_eq!(src, "battery");
        assert!((all - 5.0).abs() < 1e-12, "{all}");
        let a = energy(Some(&p), [], 0.0, 1.5).unwrap().0;
        let b = energy(Some(&p), [], 1.5, 2.0).unwrap().0;
        assert!((a + b - all).abs() < 1e-12);
        // Without a battery: RAPL counters' increases, a wrapped one left out.
        let c1 = [(0.0, 10.0), (2.0, 14.0)];
        let wrapped = [(0.0, 10.0), (2.0, 1.0)];
        let (j, src) = energy(None, [&c1[..], &wrapped[..]], 0.0, 1.0).unwrap();
        assert_eq!((j, src), (2.0, "rapl"));
    }

    #[test]
    fn states_during_a_window_include_the_state_at_its_ends() {
        let s = [(0.0, 0.0), (1.0, 1.0), (2.0, 0.0), (3.0, 2.0)];
        assert_eq!(states_during(&s, 1.2, 1.8), [1.0, 0.0]);
        assert_eq!(states_during(&s, 0.5, 2.5), [0.0, 1.0, 0.0, 2.0]);
        assert_eq!(states_during(&s, 2.0, 2.0), [1.0, 0.0, 2.0]);
        assert_eq!(states_during(&s, 5.0, 6.0), [2.0]);
        assert!(states_during(&[], 0.0, 1.0).is_empty());
    }

    #[test]
    fn window_max_and_throttling_look_only_inside_the_window() {
        let t = [(0.0, 40.0), (1.0, 50.0), (2.0, 45.0)];
        assert_eq!(window_max([&t[..]], 1.5, 2.0), Some(47.5));
        let f = [(0.0, 1000.0), (1.0, 2000.0), (2.0, 2000.0)];
        assert_eq!(throttled(&f, 2000.0, 0.5, 2.0), Some(false));
        assert_eq!(throttled(&f, 2000.0, 0.0, 2.0), Some(true));
        assert_eq!(throttled(&f, 2000.0, 3.0, 4.0), None);
    }
}
