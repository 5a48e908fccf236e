//! Burn beside llama.cpp: every Burn CPU cell paired with the llama.cpp cell of the same
//! device, model and configuration (quantization level, threads, batch, KV window, prompt and
//! generation lengths, affinity), and for each the ratio Burn ÷ llama.cpp of decode and
//! prefill throughput, time to first token, peak memory and energy per token, with a 95 %
//! percentile-bootstrap interval (both runtimes' repetitions resampled independently, as
//! [`crate::stats::bootstrap_ratio_ci`] does for `compare`).
//!
//! Above 1 is Burn ahead for throughput, and Burn *behind* for time, memory and energy:
//! [`RuntimeMetric::higher_is_better`] says which.

use crate::analysis::{Analysis, CellSummary};
use crate::schema::{CellKey, Metric, ResultSet, Status};
use crate::stats::{RESAMPLES, bootstrap_ratio_ci, median};
use serde::Serialize;

/// The runtime the measured model is compared against.
pub const REFERENCE: &str = "llama.cpp";
/// socbench's own runtime.
pub const BURN: &str = "burn";

/// The metrics the Runtimes section compares.
pub const RUNTIME_METRICS: [Metric; 5] = [
    Metric::DecodeTokPerS,
    Metric::PrefillTokPerS,
    Metric::TtftS,
    Metric::PeakRssBytes,
    Metric::EnergyPerTokenJ,
];

/// Whether a larger value of `m` is better (throughput) or worse (time, memory, energy).
pub fn higher_is_better(m: Metric) -> bool {
    matches!(m, Metric::DecodeTokPerS | Metric::PrefillTokPerS)
}

/// Burn ÷ llama.cpp for one metric of one pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ratio {
    /// The metric.
    pub metric: Metric,
    /// Median of Burn's repetitions over the median of llama.cpp's.
    pub ratio: f64,
    /// 95 % bootstrap interval of the ratio (`None` with fewer than two repetitions a side).
    pub ci95: Option<(f64, f64)>,
}

/// A Burn cell and the llama.cpp cell it is measured against.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    /// The Burn cell (its backend says which).
    pub burn: CellKey,
    /// The llama.cpp cell.
    pub llama: CellKey,
    /// One entry per metric both sides measured, in [`RUNTIME_METRICS`] order.
    pub ratios: Vec<Ratio>,
}

impl Pair {
    /// The ratio of `m`, when both sides measured it.
    pub fn ratio(&self, m: Metric) -> Option<&Ratio> {
        self.ratios.iter().find(|r| r.metric == m)
    }
}

/// Whether two cells differ only in runtime and backend.
fn same_config(burn: &CellKey, llama: &CellKey) -> bool {
    let strip = |k: &CellKey| CellKey {
        runtime: String::new(),
        backend: String::new(),
        ..k.clone()
    };
    strip(burn) == strip(llama)
}

fn samples(set: &ResultSet, key: &CellKey, m: Metric) -> Vec<f64> {
    set.records
        .iter()
        .filter(|r| r.key == *key && r.status == Status::Ok)
        .filter_map(|r| r.get(m))
        .filter(|v| v.is_finite())
        .collect()
}

/// Every Burn CPU cell with a llama.cpp twin, in the analysis' cell order.
pub fn pairs(set: &ResultSet, a: &Analysis) -> Vec<Pair> {
    let llama: Vec<&CellSummary> = a
        .cells
        .iter()
        .filter(|c| c.key.runtime == REFERENCE)
        .collect();
    let mut out = Vec::new();
    for b in a.cells.iter().filter(|c| c.key.runtime == BURN) {
        if b.key.backend == "wgpu" {
            continue;
        }
        let Some(l) = llama.iter().find(|l| same_config(&b.key, &l.key)) else {
            continue;
        };
        let ratios = RUNTIME_METRICS
            .iter()
            .filter_map(|&m| {
                let (nb, nl) = (samples(set, &b.key, m), samples(set, &l.key, m));
                if nb.is_empty() || nl.is_empty() {
                    return None;
                }
                let base = median(&nl);
                if base == 0.0 {
                    return None;
                }
                let ci95 = (nb.len() >= 2 && nl.len() >= 2)
                    .then(|| {
                        bootstrap_ratio_ci(
                            &nl,
                            &nb,
                            RESAMPLES,
                            0.95,
                            crate::analysis::seed_of(&b.key),
                        )
                    })
                    .flatten();
                Some(Ratio {
                    metric: m,
                    ratio: median(&nb) / base,
                    ci95,
                })
            })
            .collect();
        out.push(Pair {
            burn: b.key.clone(),
            llama: l.key.clone(),
            ratios,
        });
    }
    out
}

/// The cells of `a` that have a twin on the other runtime (for the chart across threads).
pub fn paired_cells(a: &Analysis, pairs: &[Pair]) -> Analysis {
    let mut keep: Vec<&CellKey> = pairs.iter().flat_map(|p| [&p.burn, &p.llama]).collect();
    keep.sort();
    keep.dedup();
    Analysis {
        cells: a
            .cells
            .iter()
            .filter(|c| keep.binary_search(&&c.key).is_ok())
            .cloned()
            .collect(),
        devices: a.devices.clone(),
        models: a.models.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    #[test]
    fn burn_cells_pair_with_their_llama_cpp_twin_and_ratios_are_burn_over_llama() {
        let dir = tempfile::tempdir().unwrap();
        fixture::write_runtime_pair(dir.path()).unwrap();
        let set = ResultSet::load(&[dir.path().to_path_buf()]).unwrap();
        let a = crate::analyze(&set);
        let p = pairs(&set, &a);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].burn.runtime, "burn");
        assert_eq!(p[0].llama.runtime, "llama.cpp");
        let decode = p[0].ratio(Metric::DecodeTokPerS).unwrap();
        // The fixture's Burn cell decodes at 1.5x llama.cpp's rate.
        assert!((decode.ratio - 1.5).abs() < 1e-9, "{decode:?}");
        let (lo, hi) = decode.ci95.unwrap();
        assert!(lo <= decode.ratio && decode.ratio <= hi, "{decode:?}");
        let rss = p[0].ratio(Metric::PeakRssBytes).unwrap();
        assert!((rss.ratio - 4.0).abs() < 1e-9, "{rss:?}");
        // A metric neither side measured is left out, not zero.
        assert!(p[0].ratio(Metric::EnergyPerTokenJ).is_none());
        assert_eq!(paired_cells(&a, &p).cells.len(), 2);
    }
}
