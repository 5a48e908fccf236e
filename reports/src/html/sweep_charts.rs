//! The report's sweep charts: each metric along each swept axis (threads, prompt length,
//! batch, KV window and every lever), one series per configuration that differs only along
//! it, and the device-vs-device chart.

use super::Page;
use crate::analysis::{Analysis, CellSummary};
use crate::charts::{self, Point, Series, XyChart};
use crate::escape::xml;
use crate::schema::{CellKey, KERNEL_TIERS, Metric};
use std::collections::BTreeMap;

/// An axis a chart can sweep along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Axis {
    Threads,
    Prompt,
    Batch,
    KvWindow,
    Pacing,
    PerfMode,
    Duration,
    Adaptive,
    Lora,
    Kernel,
}

/// The levels an adaptive mode can switch to (`FROM>TO@°C`), in the order its chart puts them.
const ADAPTIVE_TO: [&str; 7] = ["f32", "f16", "q8", "q4", "q4_0", "q8-tensor", "q4-tensor"];

impl Axis {
    fn value(self, k: &CellKey) -> f64 {
        f64::from(match self {
            Axis::Threads => k.threads,
            Axis::Prompt => k.prompt_tokens,
            Axis::Batch => k.batch,
            // The full window holds the whole context.
            Axis::KvWindow => k.kv_window.unwrap_or(k.prompt_tokens + k.gen_tokens),
            Axis::Pacing => k.pacing_ms,
            Axis::PerfMode => u32::from(k.perf_mode == "fixed"),
            Axis::Duration => k.duration_s,
            Axis::Kernel => {
                return KERNEL_TIERS
                    .iter()
                    .position(|t| *t == k.kernel_tier || (k.kernel_tier.is_empty() && *t == "auto"))
                    .unwrap_or(KERNEL_TIERS.len()) as f64;
            }
            // none 0; unmerged 1000 + rank; merged 2000 + rank.
            Axis::Lora => {
                let mode = match k.lora.as_str() {
                    "unmerged" => 1,
                    "merged" => 2,
                    _ => 0,
                };
                return f64::from(mode * 1000 + if mode > 0 { k.lora_rank } else { 0 });
            }
            // 0: off; else 1000 × (1 + the rank of the level it switches to) + the threshold
            // (°C), so modes that differ in either are points of their own.
            Axis::Adaptive => {
                let Some((levels, t)) = k.adaptive.rsplit_once('@') else {
                    return 0.0;
                };
                let to = levels.split_once('>').map_or("", |(_, to)| to);
                let rank = ADAPTIVE_TO
                    .iter()
                    .position(|l| *l == to)
                    .unwrap_or(ADAPTIVE_TO.len());
                return 1000.0 * (rank + 1) as f64 + t.parse::<f64>().unwrap_or(0.0);
            }
        })
    }

    /// How a cell's value is written on the chart's x axis.
    fn label(self, k: &CellKey) -> String {
        match self {
            // The mode as written: its threshold in the sweep's own digits.
            Axis::Adaptive => match k.adaptive.rsplit_once('@') {
                Some((levels, t)) => {
                    let to = levels.split_once('>').map_or(levels, |(_, to)| to);
                    format!("{to} from {t} °C")
                }
                None => "off".into(),
            },
            _ => self.category(self.value(k)),
        }
    }

    /// How a value is written on the chart's x axis.
    fn category(self, x: f64) -> String {
        match self {
            Axis::PerfMode if x == 0.0 => "default".into(),
            Axis::PerfMode => "fixed".into(),
            Axis::Adaptive if x == 0.0 => "off".into(),
            Axis::Lora if x == 0.0 => "none".into(),
            Axis::Kernel => KERNEL_TIERS
                .get(x as usize)
                .map_or("other".into(), |t| (*t).to_owned()),
            Axis::Lora => {
                let mode = if x >= 2000.0 { "merged" } else { "unmerged" };
                format!("{mode} r{}", x % 1000.0)
            }
            _ => format!("{x}"),
        }
    }

    /// The key with this axis blanked: cells that differ only along it form one series.
    fn series_key(self, k: &CellKey) -> CellKey {
        let mut s = k.clone();
        match self {
            Axis::Threads => s.threads = 0,
            Axis::Prompt => s.prompt_tokens = 0,
            Axis::Batch => s.batch = 0,
            Axis::KvWindow => s.kv_window = Some(0),
            // 0, which labels leave out (a lone series is named by its key).
            Axis::Pacing => s.pacing_ms = 0,
            Axis::PerfMode => s.perf_mode = "default".into(),
            Axis::Duration => s.duration_s = 0,
            Axis::Adaptive => s.adaptive = "off".into(),
            Axis::Lora => {
                s.lora = "none".into();
                s.lora_rank = 0;
                s.lora_adapter = String::new();
            }
            Axis::Kernel => s.kernel_tier = "auto".into(),
        }
        s
    }
}

/// Legend text: the device and whatever else varies between the series.
fn legends(keys: &[CellKey]) -> Vec<String> {
    type Field = (&'static str, fn(&CellKey) -> String);
    let fields: [Field; 17] = [
        ("", |k| k.device.clone()),
        ("", |k| k.model.clone()),
        ("", |k| k.runtime.clone()),
        ("", |k| k.backend.clone()),
        ("", |k| k.quant.clone()),
        ("t", |k| k.threads.to_string()),
        ("b", |k| k.batch.to_string()),
        ("kv=", |k| k.kv_label()),
        ("p", |k| k.prompt_tokens.to_string()),
        ("g", |k| k.gen_tokens.to_string()),
        ("a=", |k| k.affinity.clone()),
        ("pace=", |k| format!("{}ms", k.pacing_ms)),
        ("perf=", |k| k.perf_mode.clone()),
        ("session=", |k| format!("{}s", k.duration_s)),
        ("adaptive=", |k| k.adaptive.clone()),
        ("lora=", |k| {
            format!("{}/r{}/{}", k.lora, k.lora_rank, k.lora_adapter)
        }),
        ("kernel=", |k| k.kernel_tier.clone()),
    ];
    let varying: Vec<usize> = (0..fields.len())
        .filter(|&i| {
            let first = keys.first().map(|k| (fields[i].1)(k));
            keys.iter().any(|k| Some((fields[i].1)(k)) != first)
        })
        .collect();
    keys.iter()
        .map(|k| {
            let parts: Vec<String> = varying
                .iter()
                .map(|&i| format!("{}{}", fields[i].0, (fields[i].1)(k)))
                .collect();
            if parts.is_empty() {
                k.describe()
            } else {
                parts.join(" ")
            }
        })
        .collect()
}

fn point(c: &CellSummary, x: f64, m: Metric, scale: f64) -> Option<Point> {
    let s = c.metric(m)?;
    Some(Point {
        x,
        y: s.median * scale,
        lo: s.median_ci95.0 * scale,
        hi: s.median_ci95.1 * scale,
    })
}

/// A chart of `m` along `axis`, one series per configuration that varies only along it.
pub(super) fn axis_chart(
    a: &Analysis,
    axis: Axis,
    m: Metric,
    scale: f64,
    unit: &str,
    x_label: &str,
) -> Result<(XyChart, usize), String> {
    let mut groups: BTreeMap<CellKey, Vec<&CellSummary>> = BTreeMap::new();
    for c in a.cells.iter().filter(|c| c.metric(m).is_some()) {
        groups.entry(axis.series_key(&c.key)).or_default().push(c);
    }
    groups.retain(|_, v| {
        let mut xs: Vec<u64> = v.iter().map(|c| axis.value(&c.key).to_bits()).collect();
        xs.sort_unstable();
        xs.dedup();
        xs.len() >= 2
    });
    if groups.is_empty() {
        return Err(String::new());
    }
    let keys: Vec<CellKey> = groups.keys().cloned().collect();
    let names = legends(&keys);
    let total = groups.len();
    // Sweep values are discrete: equal spacing, labelled as they are.
    let mut xs: Vec<f64> = groups
        .values()
        .flatten()
        .map(|c| axis.value(&c.key))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    // Each value labelled from a cell that has it.
    let labels: Vec<String> = xs
        .iter()
        .map(|&x| {
            groups
                .values()
                .flatten()
                .find(|c| axis.value(&c.key) == x)
                .map_or_else(|| axis.category(x), |c| axis.label(&c.key))
        })
        .collect();
    let slot = |v: f64| xs.iter().position(|x| *x == v).unwrap_or(0) as f64;
    let series = groups
        .into_values()
        .zip(names)
        .map(|(mut cells, name)| {
            cells.sort_by(|a, b| axis.value(&a.key).total_cmp(&axis.value(&b.key)));
            Series {
                name,
                points: cells
                    .iter()
                    .filter_map(|c| point(c, slot(axis.value(&c.key)), m, scale))
                    .collect(),
            }
        })
        .collect();
    Ok((
        XyChart {
            x_label: x_label.into(),
            y_label: format!("{} ({unit})", m.label()),
            series,
            join: true,
            y_from_zero: true,
            categories: Some(labels),
        },
        total,
    ))
}

pub(super) fn omitted(total: usize) -> String {
    if total > charts::MAX_SERIES {
        format!(
            " {} more series are not drawn; the table above has every cell.",
            total - charts::MAX_SERIES
        )
    } else {
        String::new()
    }
}

pub(super) const CI_CAPTION: &str =
    "Points are medians over repetitions; bars are 95 % bootstrap confidence intervals.";

pub(super) fn render(page: &mut Page, a: &Analysis) {
    let specs: [(&str, &str, Axis, Metric, f64, &str, &str); 5] = [
        (
            "decode-vs-threads",
            "Decode throughput vs threads",
            Axis::Threads,
            Metric::DecodeTokPerS,
            1.0,
            "tok/s",
            "threads",
        ),
        (
            "ttft-vs-prompt",
            "Time to first token vs prompt length",
            Axis::Prompt,
            Metric::TtftS,
            1e3,
            "ms",
            "prompt tokens",
        ),
        (
            "throughput-vs-batch",
            "Decode throughput vs batch size",
            Axis::Batch,
            Metric::DecodeTokPerS,
            1.0,
            "tok/s",
            "batch",
        ),
        (
            "kv-vs-memory",
            "KV-cache window vs peak memory",
            Axis::KvWindow,
            Metric::PeakRssBytes,
            1.0 / (1024.0 * 1024.0),
            "MiB",
            "KV window (positions; full = prompt + generated)",
        ),
        (
            "kv-vs-latency",
            "KV-cache window vs per-token latency",
            Axis::KvWindow,
            Metric::DecodeMsPerToken,
            1.0,
            "ms",
            "KV window (positions; full = prompt + generated)",
        ),
    ];
    for (id, title, axis, m, scale, unit, x_label) in specs {
        match axis_chart(a, axis, m, scale, unit, x_label) {
            Ok((chart, total)) => {
                let caption = format!("{CI_CAPTION}{}", omitted(total));
                page.figure(id, title, charts::xy_chart(&chart), &xml(&caption));
            }
            Err(_) => page.na(
                title,
                &format!(
                    "not drawn: no configuration was measured at two or more values of {x_label}"
                ),
            ),
        }
    }
    // The tuning levers: each drawn only when a sweep ran two or more of its values (most do
    // not).
    type Spec = (&'static str, &'static str, Metric, f64, &'static str);
    let levers: [(Axis, &str, &str, &[Spec]); 6] = [
        (
            Axis::Pacing,
            "pacing (idle ms after every token)",
            "Per-token latency is the decode step alone (the gap is outside its timer); energy \
             per token spans the whole run, idle gaps included.",
            &[
                (
                    "pacing-vs-latency",
                    "Token pacing vs per-token latency",
                    Metric::DecodeMsPerToken,
                    1.0,
                    "ms",
                ),
                (
                    "pacing-vs-energy",
                    "Token pacing vs energy per token",
                    Metric::EnergyPerTokenJ,
                    1e3,
                    "mJ",
                ),
                (
                    "pacing-vs-temperature",
                    "Token pacing vs peak temperature",
                    Metric::MaxTempC,
                    1.0,
                    "°C",
                ),
            ],
        ),
        (
            Axis::PerfMode,
            "performance mode (Android's fixed-performance mode)",
            "Fixed: the power HAL holds the clocks at a level the device can sustain; default: \
             the device as it is.",
            &[
                (
                    "perf-mode-vs-decode",
                    "Fixed-performance mode vs decode throughput",
                    Metric::DecodeTokPerS,
                    1.0,
                    "tok/s",
                ),
                (
                    "perf-mode-vs-temperature",
                    "Fixed-performance mode vs peak temperature",
                    Metric::MaxTempC,
                    1.0,
                    "°C",
                ),
            ],
        ),
        (
            Axis::Duration,
            "sustained session length (s; 0: one generation)",
            "Decode throughput over the whole session (every generation's steps); the \
             Sustained sessions section has its course over time.",
            &[
                (
                    "duration-vs-decode",
                    "Session length vs decode throughput",
                    Metric::DecodeTokPerS,
                    1.0,
                    "tok/s",
                ),
                (
                    "duration-vs-temperature",
                    "Session length vs peak temperature",
                    Metric::MaxTempC,
                    1.0,
                    "°C",
                ),
            ],
        ),
        (
            Axis::Adaptive,
            "adaptive precision (threshold of the hottest zone; off: one level)",
            "An adaptive cell starts on its mode's first level, which is its quant; its \
             series is the one of that level held throughout.",
            &[
                (
                    "adaptive-vs-decode",
                    "Adaptive precision vs decode throughput",
                    Metric::DecodeTokPerS,
                    1.0,
                    "tok/s",
                ),
                (
                    "adaptive-vs-temperature",
                    "Adaptive precision vs peak temperature",
                    Metric::MaxTempC,
                    1.0,
                    "°C",
                ),
            ],
        ),
        (
            Axis::Lora,
            "LoRA adapters on q, k, v, o (mode and rank)",
            "Unmerged: the low-rank products added at every step; merged: folded into the \
             weights before quantization. The LoRA adapters section has the overhead against \
             the base model.",
            &[
                (
                    "lora-vs-decode",
                    "LoRA adapters vs decode throughput",
                    Metric::DecodeTokPerS,
                    1.0,
                    "tok/s",
                ),
                (
                    "lora-vs-rss",
                    "LoRA adapters vs peak RSS",
                    Metric::PeakRssBytes,
                    1.0 / (1024.0 * 1024.0),
                    "MiB",
                ),
            ],
        ),
        (
            Axis::Kernel,
            "packed-kernel variant (auto: the device's best)",
            "The same q8/q4/q4_0 blocks on each SIMD tier the device has: what AVX-512 VNNI \
             gives over AVX2 on a host, what i8mm buys over dotprod on a phone. The rows' \
             kernel column names the variant an auto cell ran.",
            &[
                (
                    "kernel-vs-decode",
                    "Kernel variant vs decode throughput",
                    Metric::DecodeTokPerS,
                    1.0,
                    "tok/s",
                ),
                (
                    "kernel-vs-prefill",
                    "Kernel variant vs prefill throughput",
                    Metric::PrefillTokPerS,
                    1.0,
                    "tok/s",
                ),
            ],
        ),
    ];
    for (axis, x_label, what, specs) in levers {
        for &(id, title, m, scale, unit) in specs {
            if let Ok((chart, total)) = axis_chart(a, axis, m, scale, unit, x_label) {
                let caption = format!("{what} {CI_CAPTION}{}", omitted(total));
                page.figure(id, title, charts::xy_chart(&chart), &xml(&caption));
            }
        }
    }
    super::quality_vs_speed(page, a);
    // Device vs device: configurations measured on two or more devices.
    let mut by_config: BTreeMap<CellKey, Vec<&CellSummary>> = BTreeMap::new();
    for c in a
        .cells
        .iter()
        .filter(|c| c.metric(Metric::DecodeTokPerS).is_some())
    {
        by_config.entry(c.key.config()).or_default().push(c);
    }
    by_config.retain(|_, v| v.len() >= 2);
    let title = "Device vs device: decode throughput";
    if a.devices.len() < 2 || by_config.is_empty() {
        page.na(
            title,
            "not drawn: no configuration was measured on two or more devices",
        );
        return;
    }
    let configs: Vec<CellKey> = by_config.keys().take(12).cloned().collect();
    let mut labels = legends(&configs);
    for (l, k) in labels.iter_mut().zip(&configs) {
        if l.is_empty() || configs.len() == 1 {
            *l = k.describe();
        }
    }
    let series = a
        .devices
        .iter()
        .map(|d| Series {
            name: d.serial.clone(),
            points: configs
                .iter()
                .enumerate()
                .filter_map(|(i, k)| {
                    let c = by_config[k].iter().find(|c| c.key.device == d.serial)?;
                    point(c, i as f64, Metric::DecodeTokPerS, 1.0)
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    let chart = XyChart {
        x_label: "configuration".into(),
        y_label: "Decode tok/s".into(),
        series,
        join: false,
        y_from_zero: true,
        categories: Some(labels),
    };
    let more = by_config.len().saturating_sub(configs.len());
    let caption = if more > 0 {
        format!("{CI_CAPTION} {more} more shared configurations are in the table.")
    } else {
        CI_CAPTION.to_owned()
    };
    page.figure(
        "device-vs-device",
        title,
        charts::xy_chart(&chart),
        &xml(&caption),
    );
}

#[cfg(test)]
mod tests {
    use super::Axis;

    /// Adaptive modes that differ only in the level they switch to are points of their own on
    /// the lever charts, labelled with that level and the threshold as the sweep wrote it.
    #[test]
    fn adaptive_modes_with_one_threshold_do_not_share_a_point() {
        let key = |mode: &str| {
            let mut k = crate::fixture::cell_key("d", "m", "q8");
            k.adaptive = mode.into();
            k
        };
        let xs: Vec<f64> = ["off", "q8>q4@45", "q8>q4_0@45", "q8>q4@50"]
            .iter()
            .map(|m| Axis::Adaptive.value(&key(m)))
            .collect();
        let labels: Vec<String> = ["off", "q8>q4@45", "q8>q4_0@45", "q8>q4@50"]
            .iter()
            .map(|m| Axis::Adaptive.label(&key(m)))
            .collect();
        assert_eq!(
            labels,
            ["off", "q4 from 45 °C", "q4_0 from 45 °C", "q4 from 50 °C"]
        );
        assert!(xs[1] < xs[3] && xs[3] < xs[2], "{xs:?}");
        assert_eq!(Axis::Adaptive.label(&key("f32>q8@41.3")), "q8 from 41.3 °C");
    }
}
