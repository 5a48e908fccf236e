//! Statistics over repeated measurements.
//!
//! Methods, and where they come from:
//! - **Median and its 95 % confidence interval** by the percentile bootstrap (Efron, 1979;
//!   Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): resample the
//!   repetitions with replacement, take each resample's median, and report the 2.5th and 97.5th
//!   percentiles of those medians. It needs no assumption of normality, which latency samples
//!   (skewed, with a long right tail) rarely meet. The resampling generator is seeded, so the
//!   same samples always give the same interval.
//! - **Outliers** by the modified Z-score (Iglewicz & Hoaglin, *How to Detect and Handle
//!   Outliers*, 1993): `M = 0.6745 (x - median) / MAD`, where MAD is the median absolute
//!   deviation; `|M| > 3.5` flags an outlier. Median and MAD are not pulled by the outliers
//!   themselves, unlike mean and standard deviation. Outliers are flagged, never dropped.
//! - **Energy** as the trapezoid-rule integral of power samples over time.

/// Summary of one cell's repetitions.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1 in the denominator; 0 for one sample).
    pub std: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// 95 % percentile-bootstrap confidence interval of the median, `(low, high)`.
    pub median_ci95: (f64, f64),
    /// Number of samples flagged by the modified Z-score (0 below [`MIN_OUTLIER_N`] samples).
    pub outliers: usize,
}

/// Resamples drawn for the bootstrap (criterion draws 100 000; 10 000 keeps a report of many
/// cells fast, and the interval's ends move by well under 1 % between the two here).
pub const RESAMPLES: usize = 10_000;

/// Threshold on `|modified Z|` above which a sample is an outlier (Iglewicz & Hoaglin).
pub const OUTLIER_Z: f64 = 3.5;

/// Fewest samples for which [`Summary::outliers`] is counted: with three or four, the MAD is
/// often zero and any spread at all would be flagged.
pub const MIN_OUTLIER_N: usize = 5;

/// Summarises `samples`; `None` when there is none or one is not finite.
pub fn summarize(samples: &[f64], seed: u64) -> Option<Summary> {
    if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = samples.len();
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    Some(Summary {
        n,
        median: median_of_sorted(&sorted),
        mean,
        std: var.sqrt(),
        min: sorted[0],
        max: sorted[n - 1],
        median_ci95: bootstrap_median_ci(samples, RESAMPLES, 0.95, seed),
        outliers: if n >= MIN_OUTLIER_N {
            outliers(samples).iter().filter(|&&o| o).count()
        } else {
            0
        },
    })
}

/// Median of an ascending slice (mean of the two middle values for an even count).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The `p`-th percentile (0–100) of `samples` (any order), linear between the closest ranks
/// (the definition of numpy's default and of R's type 7): the median at 50, the largest value
/// at 100. `None` for no samples or a `p` outside 0–100.
pub fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    if samples.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

/// Median of `samples` (any order); NaN for none.
pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    median_of_sorted(&sorted)
}

/// Percentile-bootstrap confidence interval of the median at `confidence` (e.g. 0.95).
pub fn bootstrap_median_ci(
    samples: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> (f64, f64) {
    let n = samples.len();
    if n == 0 || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = SplitMix64(seed);
    let mut buf = vec![0.0; n];
    let mut medians: Vec<f64> = (0..resamples)
        .map(|_| {
            for slot in buf.iter_mut() {
                *slot = samples[(rng.next() % n as u64) as usize];
            }
            buf.sort_by(f64::total_cmp);
            median_of_sorted(&buf)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| medians[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(tail), at(1.0 - tail))
}

/// Percentile-bootstrap confidence interval of `median(new) / median(base)`: both sets are
/// resampled independently, as criterion does for its change estimate. `None` when either set
/// is empty or a resampled base median is zero.
pub fn bootstrap_ratio_ci(
    base: &[f64],
    new: &[f64],
    resamples: usize,
    confidence: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    if base.is_empty() || new.is_empty() || resamples == 0 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let mut draw = |from: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..from.len()).map(|_| from[(rng.next() % from.len() as u64) as usize]));
        buf.sort_by(f64::total_cmp);
        median_of_sorted(buf)
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut ratios = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let mb = draw(base, &mut a);
        let mn = draw(new, &mut b);
        if mb == 0.0 {
            return None;
        }
        ratios.push(mn / mb);
    }
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| ratios[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Some((at(tail), at(1.0 - tail)))
}

/// Modified Z-score of every sample. With a MAD of zero (more than half the samples equal), a
/// sample equal to the median scores 0 and any other scores infinity.
pub fn modified_z_scores(samples: &[f64]) -> Vec<f64> {
    let m = median(samples);
    let deviations: Vec<f64> = samples.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&deviations);
    samples
        .iter()
        .map(|x| {
            let d = x - m;
            if mad > 0.0 {
                0.6745 * d / mad
            } else if d == 0.0 {
                0.0
            } else {
                f64::INFINITY.copysign(d)
            }
        })
        .collect()
}

/// Whether each sample is an outlier (`|modified Z| > 3.5`).
pub fn outliers(samples: &[f64]) -> Vec<bool> {
    modified_z_scores(samples)
        .into_iter()
        .map(|z| z.abs() > OUTLIER_Z)
        .collect()
}

/// Integral of `y` over `t` by the trapezoid rule: energy in joules from power in watts and
/// time in seconds. `None` when the lengths differ, there are fewer than two points, or time
/// goes backwards.
pub fn trapezoid(t: &[f64], y: &[f64]) -> Option<f64> {
    if t.len() != y.len() || t.len() < 2 || t.windows(2).any(|w| w[1] < w[0]) {
        return None;
    }
    Some(
        t.windows(2)
            .zip(y.windows(2))
            .map(|(t, y)| (t[1] - t[0]) * (y[0] + y[1]) / 2.0)
            .sum(),
    )
}

/// SplitMix64: a small seeded generator, so results are reproducible without a `rand` version.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[cfg(test)]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_hand_made_step_sequence() {
        // Ten steps of 5 ms, one of 50 (a stall), in no order.
        let mut steps = vec![5.0; 10];
        steps.insert(3, 50.0);
        assert_eq!(percentile(&steps, 50.0), Some(5.0));
        // Rank 0.9 × 10 = 9: the 10th smallest (5), rank 9.9: 5 + 0.9 × 45.
        assert_eq!(percentile(&steps, 90.0), Some(5.0));
        assert!((percentile(&steps, 99.0).unwrap() - 45.5).abs() < 1e-9);
        assert_eq!(percentile(&steps, 100.0), Some(50.0));
        let ramp: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(percentile(&ramp, 50.0), Some(3.0));
        assert!((percentile(&ramp, 90.0).unwrap() - 4.6).abs() < 1e-9);
        assert_eq!(percentile(&ramp, 0.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&ramp, 101.0), None);
    }

    /// Random sample sets of varied size and shape (uniform, skewed, with spikes, constant).
    fn cases() -> impl Iterator<Item = Vec<f64>> {
        let mut rng = SplitMix64(42);
        (0..300).map(move |i| {
            let n = 1 + (rng.next() % 40) as usize;
            (0..n)
                .map(|_| match i % 4 {
                    0 => rng.unit() * 10.0,
                    1 => (-rng.unit().max(1e-12).ln()) * 3.0, // exponential: long right tail
                    2 if rng.unit() < 0.1 => 100.0 + rng.unit(),
                    2 => 1.0 + rng.unit() * 0.01,
                    _ => 5.0,
                })
                .collect()
        })
    }

    #[test]
    fn summary_invariants_hold() {
        for s in cases() {
            let sum = summarize(&s, 1).unwrap();
            let (lo, hi) = sum.median_ci95;
            assert!(
                lo <= sum.median && sum.median <= hi,
                "CI {lo}..{hi} misses median {} of {s:?}",
                sum.median
            );
            assert!(sum.min <= lo && hi <= sum.max);
            assert!(sum.min <= sum.mean && sum.mean <= sum.max);
            assert!(sum.std >= 0.0);
            assert_eq!(sum.n, s.len());
        }
    }

    #[test]
    fn bootstrap_is_reproducible_and_seed_dependent() {
        let s: Vec<f64> = (0..30).map(|i| (i * 7 % 11) as f64).collect();
        assert_eq!(
            bootstrap_median_ci(&s, 2000, 0.95, 3),
            bootstrap_median_ci(&s, 2000, 0.95, 3)
        );
        let wide = bootstrap_median_ci(&s, 2000, 0.99, 3);
        let narrow = bootstrap_median_ci(&s, 2000, 0.50, 3);
        assert!(
            wide.0 <= narrow.0 && narrow.1 <= wide.1,
            "{wide:?} vs {narrow:?}"
        );
    }

    /// The textbook definition, computed the slow way.
    fn naive_outliers(s: &[f64]) -> Vec<bool> {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        let med = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        let mut dev: Vec<f64> = s.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f64::total_cmp);
        let mad = if dev.len() % 2 == 1 {
            dev[dev.len() / 2]
        } else {
            (dev[dev.len() / 2 - 1] + dev[dev.len() / 2]) / 2.0
        };
        s.iter()
            .map(|x| {
                if mad == 0.0 {
                    *x != med
                } else {
                    (0.6745 * (x - med) / mad).abs() > 3.5
                }
            })
            .collect()
    }

    #[test]
    fn outlier_flags_match_the_naive_definition() {
        let mut flagged = 0;
        for s in cases() {
            let ours = outliers(&s);
            assert_eq!(ours, naive_outliers(&s), "{s:?}");
            flagged += ours.iter().filter(|&&o| o).count();
        }
        assert!(flagged > 0, "the cases include spikes that must be flagged");
    }

    #[test]
    fn a_spike_is_flagged_and_kept() {
        let s = [10.0, 10.2, 9.9, 10.1, 10.0, 30.0];
        assert_eq!(outliers(&s), [false, false, false, false, false, true]);
        let sum = summarize(&s, 0).unwrap();
        assert_eq!((sum.outliers, sum.n, sum.max), (1, 6, 30.0));
    }

    #[test]
    fn trapezoid_is_exact_for_linear_power() {
        // 2 W rising to 4 W over 3 s: 9 J, whatever the sampling.
        let t = [0.0, 0.5, 2.0, 3.0];
        let y: Vec<f64> = t.iter().map(|t| 2.0 + 2.0 * t / 3.0).collect();
        assert!((trapezoid(&t, &y).unwrap() - 9.0).abs() < 1e-12);
        assert_eq!(trapezoid(&[0.0], &[1.0]), None);
        assert_eq!(trapezoid(&[1.0, 0.0], &[1.0, 1.0]), None);
        assert_eq!(trapezoid(&[0.0, 1.0], &[1.0]), None);
    }

    #[test]
    fn ratio_ci_brackets_the_ratio_of_medians() {
        let base = [10.0, 10.5, 9.5, 10.2, 9.8];
        let new = [12.0, 12.6, 11.4, 12.2, 11.8];
        let (lo, hi) = bootstrap_ratio_ci(&base, &new, 2000, 0.95, 7).unwrap();
        let point = median(&new) / median(&base);
        assert!(lo <= point && point <= hi, "{lo}..{hi} vs {point}");
        assert!(
            lo > 1.0,
            "a 20 % shift on 5 % noise is clearly above 1: {lo}"
        );
        assert_eq!(bootstrap_ratio_ci(&[], &new, 10, 0.95, 0), None);
        assert_eq!(bootstrap_ratio_ci(&[0.0], &new, 10, 0.95, 0), None);
    }

    #[test]
    fn non_finite_or_empty_input_has_no_summary() {
        assert_eq!(summarize(&[], 0), None);
        assert_eq!(summarize(&[1.0, f64::NAN], 0), None);
    }
}
