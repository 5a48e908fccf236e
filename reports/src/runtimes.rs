//! Burn beside llama.cpp: every Burn CPU cell paired with the llama.cpp cell of the same
//! device, model and configuration (quantization level, threads, batch, KV window, prompt and
//! generation lengths, affinity), and for each the ratio Burn ÷ llama.cpp of decode and
//! prefill throughput, time to first token, peak memory and energy per token, with a 95 %
//! percentile-bootstrap interval (both runtimes' repetitions resampled independently, as
//! [`crate::stats::bootstrap_ratio_ci`] does for `compare`).
//!
//! Above 1 is Burn ahead for throughput, and Burn *behind* for time, memory and energy:
//! [`higher_is_better`] says which.

use crate::analysis::{Analysis, CellSummary};
use crate::schema::{CellKey, Metric, ResultSet, Status};
use crate::stats::{RESAMPLES, bootstrap_ratio_ci, median};
use serde::Serialize;

/// The runtime the measured model is compared against.
pub const REFERENCE: &str = "llama.cpp";
/// socbench's own runtime.
pub const BURN: &str = "burn";

/// The metrics the Runtimes section compares.
pub const RUNTIME_METRICS: [Metric; 6] = [
    Metric::DecodeTokPerS,
    Metric::PrefillTokPerS,
    Metric::TtftS,
    Metric::PeakRssBytes,
    Metric::LoadS,
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
    /// Median of Burn's repetitions.
    pub burn: f64,
    /// Median of llama.cpp's repetitions.
    pub llama: f64,
    /// `burn / llama`.
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

pub(crate) fn samples(set: &ResultSet, key: &CellKey, m: Metric) -> Vec<f64> {
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
                    burn: median(&nb),
                    llama: base,
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

/// The pairs as a Markdown table (what `socbench report --format markdown` appends): per
/// configuration, each metric as `Burn · llama.cpp · ratio [95 % interval]`.
pub fn markdown(pairs: &[Pair]) -> String {
    use std::fmt::Write as _;
    const COLS: [(Metric, &str, f64); 5] = [
        (Metric::DecodeTokPerS, "Decode tok/s", 1.0),
        (Metric::PrefillTokPerS, "Prefill tok/s", 1.0),
        (Metric::TtftS, "TTFT ms", 1e3),
        (
            Metric::PeakRssBytes,
            "Peak RSS MiB",
            1.0 / (1024.0 * 1024.0),
        ),
        (Metric::LoadS, "Load ms", 1e3),
    ];
    if pairs.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "### Runtimes: Burn · llama.cpp · Burn ÷ llama.cpp [95 % bootstrap interval]\n\n\
         | Device | Configuration | Burn backend |",
    );
    for (_, name, _) in COLS {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n|---|---|---|");
    out.push_str(&"---:|".repeat(COLS.len()));
    out.push('\n');
    for p in pairs {
        let config = p.llama.describe();
        let config = config.strip_prefix("llama.cpp cpu ").unwrap_or(&config);
        let _ = write!(
            out,
            "| `{}` | {} | {} |",
            p.burn.device.replace('|', "\\|").replace('`', "'"),
            config.replace('|', "\\|"),
            p.burn.backend
        );
        for (m, _, scale) in COLS {
            match p.ratio(m) {
                Some(r) => {
                    let ci = r
                        .ci95
                        .map_or(String::new(), |(lo, hi)| format!(" [{lo:.2}–{hi:.2}]"));
                    let _ = write!(
                        out,
                        " {} · {} · **{:.2}×**{ci} |",
                        crate::schema::sig3(r.burn * scale),
                        crate::schema::sig3(r.llama * scale),
                        r.ratio
                    );
                }
                None => out.push_str(" not measured |"),
            }
        }
        out.push('\n');
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
        let md = markdown(&p);
        assert!(
            md.contains("| `local` | q8 t1 b1 kv=full p16 g16 a=all | flex |"),
            "{md}"
        );
        assert!(md.contains("30.0 · 20.0 · **1.50×**"), "{md}");
        assert!(markdown(&[]).is_empty());
    }

    #[test]
    fn compare_never_pairs_a_burn_cell_with_a_llama_cpp_cell() {
        let all = tempfile::tempdir().unwrap();
        fixture::write_runtime_pair(all.path()).unwrap();
        let text = std::fs::read_to_string(all.path().join("results.csv")).unwrap();
        let only = |runtime: &str| {
            let dir = tempfile::tempdir().unwrap();
            let mut lines = text.lines();
            let mut out = format!("{}\n", lines.next().unwrap());
            for l in lines.filter(|l| l.contains(&format!(",local,{runtime},"))) {
                out.push_str(l);
                out.push('\n');
            }
            std::fs::write(dir.path().join("results.csv"), out).unwrap();
            let set = ResultSet::load(&[dir.path().to_path_buf()]).unwrap();
            (dir, set)
        };
        let (_b, burn) = only("burn");
        let (_l, llama) = only("llama.cpp");
        let (ab, al) = (crate::analyze(&burn), crate::analyze(&llama));
        assert_eq!((ab.cells.len(), al.cells.len()), (1, 1));
        let c = crate::compare::compare(&llama, &al, &burn, &ab, &Default::default());
        assert_eq!(c.matched(), 0, "{c:#?}");
        assert_eq!((c.only_base.len(), c.only_new.len()), (1, 1));
    }
}
