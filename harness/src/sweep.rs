//! The sweep: a TOML file (the commented default is embedded; `socbench init` writes it),
//! overridden axis by axis from the command line, validated whole before any device is
//! touched, then expanded per device into model variants and cells.

use crate::grids::GridOverride;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
pub use socbench_agent::adaptive::Adaptive;
use socbench_devices::DeviceInfo;
use socbench_devices::info::parse_cpu_list;
use socbench_kernels::backend::BackendKind;
pub use socbench_kernels::lora::LoraMode;
use socbench_kernels::qmatmul::KernelTier;
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::runtime::{LLAMA_CPP_BACKEND, RuntimeKind, llama_cpp_support};
use std::path::Path;
use toml::Spanned;

/// The embedded default sweep file.
pub const DEFAULT_SWEEP: &str = include_str!("default-sweep.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CooldownFile {
    enabled: Option<bool>,
    delta_c: Option<Spanned<f64>>,
    max_wait_s: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    model: Option<Spanned<String>>,
    devices: Option<Spanned<Vec<toml::Value>>>,
    runtime: Option<Spanned<Vec<toml::Value>>>,
    backend: Option<Spanned<Vec<toml::Value>>>,
    quant: Option<Spanned<Vec<toml::Value>>>,
    threads: Option<Spanned<Vec<toml::Value>>>,
    batch: Option<Spanned<Vec<toml::Value>>>,
    kv_window: Option<Spanned<Vec<toml::Value>>>,
    prompt_tokens: Option<Spanned<Vec<toml::Value>>>,
    gen_tokens: Option<Spanned<Vec<toml::Value>>>,
    affinity: Option<Spanned<Vec<toml::Value>>>,
    pacing_ms: Option<Spanned<Vec<toml::Value>>>,
    perf_mode: Option<Spanned<Vec<toml::Value>>>,
    duration_s: Option<Spanned<Vec<toml::Value>>>,
    adaptive: Option<Spanned<Vec<toml::Value>>>,
    lora: Option<Spanned<Vec<toml::Value>>>,
    lora_rank: Option<Spanned<Vec<toml::Value>>>,
    lora_file: Option<Spanned<String>>,
    kernel: Option<Spanned<Vec<toml::Value>>>,
    repetitions: Option<Spanned<i64>>,
    warmup: Option<Spanned<i64>>,
    sample_hz: Option<Spanned<f64>>,
    seed: Option<u64>,
    out: Option<String>,
    probe: Option<bool>,
    quality: Option<bool>,
    quality_gate: Option<Spanned<toml::Value>>,
    cooldown: Option<CooldownFile>,
    also: Option<Vec<crate::grids::AlsoFile>>,
}

/// Android's fixed-performance mode for a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerfMode {
    /// The device as it is.
    Default,
    /// `cmd power set-fixed-performance-mode-enabled true` during the cell (Android 11+).
    Fixed,
}

impl PerfMode {
    /// `default` or `fixed`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Fixed => "fixed",
        }
    }
}

/// A thread count: a number or all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threads {
    /// Exactly this many.
    N(usize),
    /// All CPUs of the device (or of the pinned set).
    Cores,
}

/// CPU affinity of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affinity {
    /// No pinning.
    All,
    /// A cluster by name (`big`, `little`, `mid`…), resolved per device.
    Cluster(String),
    /// Explicit CPUs.
    Cpus(Vec<u32>),
}

impl std::fmt::Display for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Cluster(c) => f.write_str(c),
            Self::Cpus(c) => {
                let s: Vec<String> = c.iter().map(u32::to_string).collect();
                f.write_str(&s.join("+"))
            }
        }
    }
}

/// The validated sweep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    /// Model path or `synthetic:tiny`; `None` for the default (fetched) model.
    pub model: Option<String>,
    /// `local`, `all` or serials.
    pub devices: Vec<String>,
    /// Axes: `burn`, `llama.cpp`.
    #[serde(default = "default_runtime")]
    pub runtime: Vec<RuntimeKind>,
    /// Axes.
    pub backend: Vec<BackendKind>,
    /// Axes.
    pub quant: Vec<QuantLevel>,
    /// Axes.
    pub threads: Vec<Threads>,
    /// Axes.
    pub batch: Vec<usize>,
    /// Axes (`None`: full).
    pub kv_window: Vec<Option<usize>>,
    /// Axes.
    pub prompt_tokens: Vec<usize>,
    /// Axes.
    pub gen_tokens: Vec<usize>,
    /// Axes.
    pub affinity: Vec<Affinity>,
    /// Axis: idle gap after every generated token, ms (0: none). Absent from manifests
    /// written before the axis: none.
    #[serde(default = "default_pacing")]
    pub pacing_ms: Vec<u32>,
    /// Axis: Android's fixed-performance mode off (`default`) or on (`fixed`) during the cell.
    #[serde(default = "default_perf_mode")]
    pub perf_mode: Vec<PerfMode>,
    /// Axis: sustained sessions, s: each repetition generates back to back from the prompt
    /// for this long (0: off, one generation per repetition).
    #[serde(default = "default_duration")]
    pub duration_s: Vec<u32>,
    /// Axis: adaptive precision, `None` (`off`) or two levels and the hottest-zone temperature
    /// between them. An adaptive cell's level comes from its value, not the `quant` axis.
    #[serde(default = "default_adaptive")]
    pub adaptive: Vec<Option<Adaptive>>,
    /// Axis: LoRA adapters on the attention projections, `None` (`none`), unmerged or merged.
    #[serde(default = "default_lora")]
    pub lora: Vec<Option<LoraMode>>,
    /// Axis: the adapters' rank (cells with `lora = none` have none).
    #[serde(default = "default_lora_rank")]
    pub lora_rank: Vec<usize>,
    /// Whether `lora_rank` was written (file or flag), not defaulted: with an adapter file,
    /// a written rank must be the file's.
    #[serde(skip)]
    pub lora_rank_given: bool,
    /// A PEFT safetensors adapter (`--lora FILE`); `None`: seeded synthetic adapters. Its
    /// rank is the file's (the `lora_rank` axis is set from it).
    #[serde(default)]
    pub lora_file: Option<String>,
    /// Axis: the packed-kernel variant of the q8/q4/q4_0 products on the CPU backends
    /// (`auto`: each device's best). Other cells (f32, wgpu, llama.cpp) run once, as `auto`.
    #[serde(default = "default_kernel")]
    pub kernel: Vec<KernelTier>,
    /// Measured runs per cell.
    pub repetitions: usize,
    /// Unmeasured runs per cell.
    pub warmup: usize,
    /// Sampling rate (Hz).
    pub sample_hz: f64,
    /// Shuffle seed.
    pub seed: u64,
    /// Output directory from the file.
    pub out: Option<String>,
    /// Cool-down gate: (delta °C, max wait s), or off.
    pub cooldown: Option<(f64, f64)>,
    /// Measure each device's roofline (triad bandwidth, GEMM) once, before its cells.
    #[serde(default = "default_probe")]
    pub probe: bool,
    /// Score the built-in quality text's perplexity once per model variant.
    #[serde(default)]
    pub quality: bool,
    /// Quality gate: a model variant whose perplexity on the gate text is more than this many
    /// times the f32 model's is not measured (`socbench_kernels::gate`); 0 turns it off.
    #[serde(default = "default_quality_gate")]
    pub quality_gate: f64,
    /// Extra grids (`[[also]]`): each replaces some measurement axes of this one and adds
    /// its cells ([`Sweep::grids`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<GridOverride>,
}

fn default_quality_gate() -> f64 {
    socbench_kernels::gate::DEFAULT_MAX_RATIO
}

fn default_runtime() -> Vec<RuntimeKind> {
    vec![RuntimeKind::Burn]
}

fn default_probe() -> bool {
    true
}

fn default_pacing() -> Vec<u32> {
    vec![0]
}

fn default_adaptive() -> Vec<Option<Adaptive>> {
    vec![None]
}

fn default_lora() -> Vec<Option<LoraMode>> {
    vec![None]
}

fn default_lora_rank() -> Vec<usize> {
    vec![8]
}

fn default_duration() -> Vec<u32> {
    vec![0]
}

fn default_perf_mode() -> Vec<PerfMode> {
    vec![PerfMode::Default]
}

fn default_kernel() -> Vec<KernelTier> {
    vec![KernelTier::Auto]
}

/// Parsers shared by the file and the flags. Each returns what would be valid on error.
pub mod axis {
    use super::*;

    fn positive(s: &str, what: &str) -> Result<usize, String> {
        match s.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "`{s}` is not a valid {what} (valid: a positive integer)"
            )),
        }
    }
    /// The quality gate's bound: a ratio to f32's perplexity of at least 1, or 0 (off).
    pub fn quality_gate(x: f64) -> Result<f64, String> {
        if x == 0.0 || (x.is_finite() && x >= 1.0) {
            Ok(x)
        } else {
            Err(format!(
                "{x} is not a valid bound (valid: a ratio to f32's perplexity of at least 1, \
                 such as 1.5, or 0 to measure every variant)"
            ))
        }
    }
    /// `burn`, `llama.cpp`.
    pub fn runtime(s: &str) -> Result<RuntimeKind, String> {
        s.trim().parse()
    }
    /// `flex`, `ndarray`, `wgpu`.
    pub fn backend(s: &str) -> Result<BackendKind, String> {
        s.trim().parse()
    }
    /// A quantization level name.
    pub fn quant(s: &str) -> Result<QuantLevel, String> {
        s.trim().parse()
    }
    /// A number or `cores`.
    pub fn threads(s: &str) -> Result<Threads, String> {
        if s.trim() == "cores" {
            return Ok(Threads::Cores);
        }
        positive(s, "thread count").map(Threads::N).map_err(|_| {
            format!("`{s}` is not a valid thread count (valid: a positive integer or `cores`)")
        })
    }
    /// A positive integer.
    pub fn count(s: &str) -> Result<usize, String> {
        positive(s, "count")
    }
    /// `auto` or a kernel variant's name (`x86-avx2`, `arm-dotprod` …).
    pub fn kernel(s: &str) -> Result<KernelTier, String> {
        s.trim().parse()
    }
    /// `default` or `fixed`.
    pub fn perf_mode(s: &str) -> Result<PerfMode, String> {
        match s.trim() {
            "default" => Ok(PerfMode::Default),
            "fixed" => Ok(PerfMode::Fixed),
            _ => Err(format!(
                "`{s}` is not a valid performance mode (valid: `default`, `fixed`: Android's \
                 fixed-performance mode during the cell)"
            )),
        }
    }
    /// `none`, `unmerged` or `merged`.
    pub fn lora(s: &str) -> Result<Option<LoraMode>, String> {
        match s.trim() {
            "none" => Ok(None),
            other => other.parse().map(Some),
        }
    }
    /// A LoRA rank, 1 to [`socbench_kernels::lora::MAX_RANK`].
    pub fn lora_rank(s: &str) -> Result<usize, String> {
        s.trim()
            .parse::<usize>()
            .ok()
            .filter(|r| (1..=socbench_kernels::lora::MAX_RANK).contains(r))
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a valid LoRA rank (valid: 1 to {})",
                    socbench_kernels::lora::MAX_RANK
                )
            })
    }
    /// `off`, or an adaptive mode such as `q8>q4@45`.
    pub fn adaptive(s: &str) -> Result<Option<Adaptive>, String> {
        if s.trim() == "off" {
            return Ok(None);
        }
        s.parse().map(Some)
    }
    /// Seconds of a sustained session: 0 (off) to 3600. An hour at 100 tok/s is 360 000
    /// token times and step times in one event line (about 13 MB): the bound keeps that line
    /// small enough for a phone's memory beside the model.
    pub fn duration_s(s: &str) -> Result<u32, String> {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|d| *d <= 3600)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a valid session length (valid: whole seconds from 0, no \
                     session, to 3600)"
                )
            })
    }
    /// Milliseconds of pacing: 0 (none) to 10 000.
    pub fn pacing_ms(s: &str) -> Result<u32, String> {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|ms| *ms <= 10_000)
            .ok_or_else(|| {
                format!(
                    "`{s}` is not a valid pacing (valid: whole milliseconds from 0, no pacing, \
                     to 10000)"
                )
            })
    }
    /// A number or `full`.
    pub fn kv_window(s: &str) -> Result<Option<usize>, String> {
        if s.trim() == "full" {
            return Ok(None);
        }
        positive(s, "KV window").map(Some).map_err(|_| {
            format!(
                "`{s}` is not a valid KV window (valid: a positive number of positions or `full`)"
            )
        })
    }
    /// `all`, a cluster name, or a CPU list.
    pub fn affinity(s: &str) -> Result<Affinity, String> {
        let s = s.trim();
        match s {
            "all" => Ok(Affinity::All),
            "big" | "little" | "mid" => Ok(Affinity::Cluster(s.into())),
            _ if s.starts_with("mid") && s[3..].parse::<u32>().is_ok() => Ok(Affinity::Cluster(s.into())),
            _ => parse_cpu_list(s).map(Affinity::Cpus).ok_or_else(|| {
                format!("`{s}` is not a valid affinity (valid: `all`, `big`, `little`, `mid`, or a CPU list like `0-3` or `4,5`)")
            }),
        }
    }
}

fn line_of(text: &str, span: std::ops::Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

fn value_str(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn parse_axis<T>(
    file: &str,
    text: &str,
    key: &str,
    v: Option<Spanned<Vec<toml::Value>>>,
    default: Vec<T>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<T>> {
    let Some(v) = v else { return Ok(default) };
    let line = line_of(text, v.span());
    let values = v.into_inner();
    if values.is_empty() {
        bail!("{file}:{line}: `{key}` is empty; give at least one value");
    }
    values
        .iter()
        .map(|x| parse(&value_str(x)).map_err(|e| anyhow::anyhow!("{file}:{line}: `{key}`: {e}")))
        .collect()
}

impl Sweep {
    /// Parses and validates a sweep file's text (`file` names it in errors).
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let f: SweepFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s));
            let msg = e.message().to_owned();
            match line {
                Some(l) => anyhow::anyhow!(
                    "{file}:{l}: {msg} (see `socbench init` for a commented file with every key)"
                ),
                None => anyhow::anyhow!("{file}: {msg}"),
            }
        })?;
        let pos = |key: &str, v: Option<Spanned<i64>>, default: usize, min: i64| -> Result<usize> {
            match v {
                None => Ok(default),
                Some(s) => {
                    let line = line_of(text, s.span());
                    let n = *s.get_ref();
                    if n < min {
                        bail!("{file}:{line}: `{key}` = {n}: must be at least {min}");
                    }
                    Ok(usize::try_from(n)?)
                }
            }
        };
        let devices = parse_axis(
            file,
            text,
            "devices",
            f.devices,
            vec!["all".to_owned()],
            |s| {
                if s.trim().is_empty() {
                    Err("an empty device name (valid: `local`, `all`, or an adb serial)".into())
                } else {
                    Ok(s.trim().to_owned())
                }
            },
        )?;
        let sample_hz = match f.sample_hz {
            None => 20.0,
            Some(s) => {
                let hz = *s.get_ref();
                if !(hz > 0.0 && hz <= 1000.0) {
                    bail!(
                        "{file}:{}: `sample_hz` = {hz}: must be in (0, 1000]",
                        line_of(text, s.span())
                    );
                }
                hz
            }
        };
        let quality_gate = match f.quality_gate {
            None => default_quality_gate(),
            Some(v) => {
                let value = match v.get_ref() {
                    toml::Value::Float(x) => Some(*x),
                    toml::Value::Integer(i) => Some(*i as f64),
                    _ => None,
                };
                match value.map(axis::quality_gate) {
                    Some(Ok(x)) => x,
                    Some(Err(e)) => {
                        bail!("{file}:{}: `quality_gate`: {e}", line_of(text, v.span()))
                    }
                    None => bail!(
                        "{file}:{}: `quality_gate` = {}: must be a number (a ratio ≥ 1, or 0 for off)",
                        line_of(text, v.span()),
                        v.get_ref()
                    ),
                }
            }
        };
        let cooldown = match f.cooldown {
            Some(CooldownFile {
                enabled: Some(false),
                ..
            }) => None,
            Some(c) => {
                let get = |v: Option<Spanned<f64>>, key: &str, default: f64| -> Result<f64> {
                    match v {
                        None => Ok(default),
                        Some(s) if *s.get_ref() >= 0.0 && s.get_ref().is_finite() => {
                            Ok(*s.get_ref())
                        }
                        Some(s) => bail!(
                            "{file}:{}: `cooldown.{key}` = {}: must be a number ≥ 0",
                            line_of(text, s.span()),
                            s.get_ref()
                        ),
                    }
                };
                Some((
                    get(c.delta_c, "delta_c", 2.0)?,
                    get(c.max_wait_s, "max_wait_s", 120.0)?,
                ))
            }
            None => Some((2.0, 120.0)),
        };
        let lora_rank_given = f.lora_rank.is_some();
        let sweep = Self {
            model: f.model.map(Spanned::into_inner),
            devices,
            runtime: parse_axis(
                file,
                text,
                "runtime",
                f.runtime,
                vec![RuntimeKind::Burn],
                axis::runtime,
            )?,
            backend: parse_axis(
                file,
                text,
                "backend",
                f.backend,
                vec![BackendKind::Flex],
                axis::backend,
            )?,
            quant: parse_axis(
                file,
                text,
                "quant",
                f.quant,
                vec![QuantLevel::F32],
                axis::quant,
            )?,
            threads: parse_axis(
                file,
                text,
                "threads",
                f.threads,
                vec![Threads::N(1), Threads::Cores],
                axis::threads,
            )?,
            batch: parse_axis(file, text, "batch", f.batch, vec![1], axis::count)?,
            kv_window: parse_axis(
                file,
                text,
                "kv_window",
                f.kv_window,
                vec![None],
                axis::kv_window,
            )?,
            prompt_tokens: parse_axis(
                file,
                text,
                "prompt_tokens",
                f.prompt_tokens,
                vec![32],
                axis::count,
            )?,
            gen_tokens: parse_axis(
                file,
                text,
                "gen_tokens",
                f.gen_tokens,
                vec![16],
                axis::count,
            )?,
            affinity: parse_axis(
                file,
                text,
                "affinity",
                f.affinity,
                vec![Affinity::All],
                axis::affinity,
            )?,
            pacing_ms: parse_axis(
                file,
                text,
                "pacing_ms",
                f.pacing_ms,
                default_pacing(),
                axis::pacing_ms,
            )?,
            perf_mode: parse_axis(
                file,
                text,
                "perf_mode",
                f.perf_mode,
                default_perf_mode(),
                axis::perf_mode,
            )?,
            duration_s: parse_axis(
                file,
                text,
                "duration_s",
                f.duration_s,
                default_duration(),
                axis::duration_s,
            )?,
            adaptive: parse_axis(
                file,
                text,
                "adaptive",
                f.adaptive,
                default_adaptive(),
                axis::adaptive,
            )?,
            lora: parse_axis(file, text, "lora", f.lora, default_lora(), axis::lora)?,
            lora_rank: parse_axis(
                file,
                text,
                "lora_rank",
                f.lora_rank,
                default_lora_rank(),
                axis::lora_rank,
            )?,
            lora_rank_given,
            lora_file: f.lora_file.map(Spanned::into_inner),
            kernel: parse_axis(
                file,
                text,
                "kernel",
                f.kernel,
                default_kernel(),
                axis::kernel,
            )?,
            repetitions: pos("repetitions", f.repetitions, 3, 1)?,
            warmup: pos("warmup", f.warmup, 1, 0)?,
            sample_hz,
            seed: f.seed.unwrap_or(0),
            out: f.out,
            cooldown,
            probe: f.probe.unwrap_or(true),
            quality: f.quality.unwrap_or(false),
            quality_gate,
            also: GridOverride::parse_all(file, text, f.also.unwrap_or_default())?,
        };
        sweep.check_combinations(file)?;
        Ok(sweep)
    }

    /// Reads a sweep file, or the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Self::parse("<default sweep>", DEFAULT_SWEEP),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Self::parse(&p.display().to_string(), &text)
            }
        }
    }

    /// Refuses combinations that cannot run, before anything starts, in every grid.
    pub fn check_combinations(&self, origin: &str) -> Result<()> {
        for (i, grid) in self.grids().iter().enumerate() {
            let origin = match i {
                0 => origin.to_owned(),
                i => format!("{origin}: [[also]] grid {i}"),
            };
            grid.check_grid(&origin)?;
        }
        Ok(())
    }

    fn check_grid(&self, origin: &str) -> Result<()> {
        if !self.runtime.contains(&RuntimeKind::Burn) {
            // llama.cpp decides per cell (skipped with the reason).
            return Ok(());
        }
        let adaptive_levels = self.adaptive.iter().flatten().flat_map(|a| [a.from, a.to]);
        // llama.cpp's levels (`file`, `q4_k_m` …) on Burn are skipped with the reason beside
        // llama.cpp's cells of them.
        let llama_too = self.runtime.contains(&RuntimeKind::LlamaCpp);
        let levels: Vec<QuantLevel> = self
            .quant
            .iter()
            .copied()
            .filter(|&q| !(llama_too && q.llama_only()))
            .chain(adaptive_levels)
            .collect();
        for &b in &self.backend {
            for &q in &levels {
                if let Err(reason) = q.support(b) {
                    bail!(
                        "{origin}: quant `{q}` cannot run on backend `{}`: {reason}; drop one of them from the sweep",
                        b.name()
                    );
                }
            }
        }
        Ok(())
    }

    /// Number of cells per device, before `cores`/clusters are resolved: every grid's (cells
    /// two grids share are counted in each).
    pub fn cells_per_device(&self) -> usize {
        self.grids().iter().map(Sweep::grid_cells).sum()
    }

    fn grid_cells(&self) -> usize {
        // Off: every quant level; an adaptive mode: its own two levels, one cell.
        let levels: Vec<(QuantLevel, Option<QuantLevel>)> = self
            .adaptive
            .iter()
            .flat_map(|a| match a {
                Some(spec) => vec![(spec.from, Some(spec.to))],
                None => self.quant.iter().map(|&q| (q, None)).collect(),
            })
            .collect();
        // Each runtime, backend and level: every kernel variant where the packed kernels run
        // it, once elsewhere.
        let variants: usize = self
            .runtime
            .iter()
            .flat_map(|&r| self.backend.iter().map(move |&b| (r, b)))
            .map(|(r, b)| {
                levels
                    .iter()
                    .map(|&(q, to)| {
                        let packed = r == RuntimeKind::Burn
                            && std::iter::once(q)
                                .chain(to)
                                .any(|q| socbench_kernels::quant::packed_format(q, b).is_some());
                        if packed { self.kernel.len() } else { 1 }
                    })
                    .sum::<usize>()
            })
            .sum();
        self.lora_choices().len()
            * variants
            * self.threads.len()
            * self.batch.len()
            * self.kv_window.len()
            * self.prompt_tokens.len()
            * self.gen_tokens.len()
            * self.affinity.len()
            * self.pacing_ms.len()
            * self.perf_mode.len()
            * self.duration_s.len()
    }
}

impl Sweep {
    /// The LoRA variants: `None` once for `lora = none`, every rank for each mode.
    pub fn lora_choices(&self) -> Vec<Option<LoraChoice>> {
        let mut out = Vec::new();
        for &mode in &self.lora {
            match mode {
                None => out.push(None),
                Some(mode) => out.extend(
                    self.lora_rank
                        .iter()
                        .map(|&rank| Some(LoraChoice { mode, rank })),
                ),
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|c| seen.insert(*c));
        out
    }
}

/// A cell's LoRA adapters: how they run and their rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LoraChoice {
    /// Unmerged or merged.
    pub mode: LoraMode,
    /// Rank.
    pub rank: usize,
}

/// One cell resolved for a device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedCell {
    /// Stable key: device and every axis value.
    pub key: String,
    /// Device serial.
    pub device: String,
    /// Runtime.
    pub runtime: RuntimeKind,
    /// Backend. For llama.cpp cells, the sweep's first CPU backend (its CPU cells are planned
    /// once, not once per Burn CPU backend; [`PlannedCell::backend_label`] is what they record)
    /// or a GPU backend, whose cells are skipped.
    pub backend: BackendKind,
    /// Quantization.
    pub quant: QuantLevel,
    /// Threads (resolved).
    pub threads: usize,
    /// Batch.
    pub batch: usize,
    /// KV window.
    pub kv_window: Option<usize>,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub gen_tokens: usize,
    /// Affinity as written.
    pub affinity: String,
    /// CPUs pinned (resolved), `None` for all.
    pub cpus: Option<Vec<u32>>,
    /// Idle gap after every generated token, ms.
    #[serde(default)]
    pub pacing_ms: u32,
    /// Android's fixed-performance mode during the cell.
    #[serde(default = "perf_default")]
    pub perf_mode: PerfMode,
    /// Sustained session length, s (0: one generation per repetition).
    #[serde(default)]
    pub duration_s: u32,
    /// Adaptive precision (its `from` level is `quant`).
    #[serde(default)]
    pub adaptive: Option<Adaptive>,
    /// LoRA adapters (`None`: the base model).
    #[serde(default)]
    pub lora: Option<LoraChoice>,
    /// The packed-kernel variant (`auto` for every cell the packed kernels do not run).
    #[serde(default)]
    pub kernel: KernelTier,
}

fn perf_default() -> PerfMode {
    PerfMode::Default
}

impl PlannedCell {
    /// The `backend` column: the Burn backend, or `cpu` for a llama.cpp cell on its CPU
    /// backend.
    pub fn backend_label(&self) -> &'static str {
        match self.runtime {
            RuntimeKind::LlamaCpp if self.backend.is_cpu() => LLAMA_CPP_BACKEND,
            _ => self.backend.name(),
        }
    }

    /// Why this cell cannot run, known from its axis values alone (llama.cpp's limits).
    pub fn unsupported(&self) -> Option<String> {
        match self.runtime {
            // Levels Burn cannot run were refused when the sweep was read, but llama.cpp's.
            RuntimeKind::Burn => self.quant.support(self.backend).err(),
            RuntimeKind::LlamaCpp if self.lora.is_some() => Some(
                "LoRA adapters run on the Burn runtime only (llama.cpp loads adapters from \
                 GGUF adapter files, not socbench's)"
                    .into(),
            ),
            RuntimeKind::LlamaCpp if self.adaptive.is_some() => Some(
                "adaptive precision runs on the Burn runtime only (llama.cpp would need a \
                 second model file loaded beside the first)"
                    .into(),
            ),
            RuntimeKind::LlamaCpp => llama_cpp_support(
                self.backend.is_cpu(),
                self.quant,
                self.kv_window,
                self.prompt_tokens + self.gen_tokens,
            )
            .err(),
        }
    }
}

/// Expands the grids for one device, each cell once. Errors name the device and what it has.
pub fn plan_device(sweep: &Sweep, info: &DeviceInfo) -> Result<Vec<PlannedCell>> {
    let mut cells: Vec<PlannedCell> = Vec::new();
    let mut keys = std::collections::HashSet::new();
    for grid in sweep.grids() {
        for c in plan_grid(&grid, info)? {
            if keys.insert(c.key.clone()) {
                cells.push(c);
            }
        }
    }
    Ok(cells)
}

fn plan_grid(sweep: &Sweep, info: &DeviceInfo) -> Result<Vec<PlannedCell>> {
    let mut cells = Vec::new();
    for aff in &sweep.affinity {
        let cpus = match aff {
            Affinity::All => None,
            Affinity::Cluster(name) => Some(info.cluster_cpus(name).ok_or_else(|| {
                let have: Vec<&str> = info.clusters.iter().map(|c| c.name.as_str()).collect();
                anyhow::anyhow!(
                    "device {}: affinity `{name}`: it has clusters {have:?}",
                    info.serial
                )
            })?),
            Affinity::Cpus(c) => {
                if let Some(bad) = c.iter().find(|&&x| x as usize >= info.cpu_count) {
                    bail!(
                        "device {}: affinity CPU {bad} does not exist (it has CPUs 0-{})",
                        info.serial,
                        info.cpu_count.saturating_sub(1)
                    );
                }
                Some(c.clone())
            }
        };
        let cores = cpus.as_ref().map_or(info.cpu_count, Vec::len).max(1);
        let mut thread_values: Vec<usize> = sweep
            .threads
            .iter()
            .map(|t| match t {
                Threads::N(n) => *n,
                Threads::Cores => cores,
            })
            .collect();
        thread_values.dedup();
        let mut seen = std::collections::HashSet::new();
        thread_values.retain(|t| seen.insert(*t));
        // llama.cpp runs on its own CPU backend: planned once for the Burn CPU backends.
        let first_cpu = sweep.backend.iter().copied().find(|b| b.is_cpu());
        let pairs: Vec<(RuntimeKind, BackendKind)> = sweep
            .runtime
            .iter()
            .flat_map(|&r| sweep.backend.iter().map(move |&b| (r, b)))
            .filter(|&(r, b)| r == RuntimeKind::Burn || !b.is_cpu() || Some(b) == first_cpu)
            .collect();
        // The innermost axes, in key order.
        let mut tails = Vec::new();
        for &g in &sweep.gen_tokens {
            for &p in &sweep.pacing_ms {
                for &m in &sweep.perf_mode {
                    for &d in &sweep.duration_s {
                        tails.push((g, p, m, d));
                    }
                }
            }
        }
        // An adaptive cell runs its own two levels: it is planned once, at its first level,
        // not across the `quant` axis.
        let mut levels: Vec<(QuantLevel, Option<Adaptive>)> = Vec::new();
        for &a in &sweep.adaptive {
            match a {
                None => levels.extend(sweep.quant.iter().map(|&q| (q, None))),
                Some(spec) => levels.push((spec.from, Some(spec))),
            }
        }
        let loras = sweep.lora_choices();
        // A file's adapters are named in the key: their rows are not the synthetic ones'.
        let lora_source = sweep.lora_file.as_deref().map_or(String::new(), |f| {
            let stem = Path::new(f)
                .file_stem()
                .map_or("file".into(), |s| s.to_string_lossy().into_owned());
            let clean: String = stem
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("-{clean}")
        });
        let combos: Vec<(QuantLevel, Option<Adaptive>, Option<LoraChoice>)> = levels
            .iter()
            .flat_map(|&(q, a)| loras.iter().map(move |&l| (q, a, l)))
            .collect();
        let combos: Vec<_> = combos
            .iter()
            .flat_map(|&c| sweep.kernel.iter().map(move |&k| (c, k)))
            .collect();
        for &(runtime, backend) in &pairs {
            for &((quant, adaptive, lora), kernel) in &combos {
                // Only Burn's packed products have variants: other cells run once, as `auto`
                // (their key is the one without the axis, so the copies are dropped).
                let packed = runtime == RuntimeKind::Burn
                    && std::iter::once(quant)
                        .chain(adaptive.map(|a| a.to))
                        .any(|q| socbench_kernels::quant::packed_format(q, backend).is_some());
                let kernel = if packed { kernel } else { KernelTier::Auto };
                for &threads in &thread_values {
                    for &batch in &sweep.batch {
                        for &kv_window in &sweep.kv_window {
                            for &prompt_tokens in &sweep.prompt_tokens {
                                for &(gen_tokens, pacing_ms, perf_mode, duration_s) in &tails {
                                    // Burn keys are as before the runtime axis (stored
                                    // results stay resumable); llama.cpp's name it.
                                    let engine = match runtime {
                                        RuntimeKind::Burn => backend.name().to_owned(),
                                        RuntimeKind::LlamaCpp if backend.is_cpu() => {
                                            format!("llama.cpp-{LLAMA_CPP_BACKEND}")
                                        }
                                        RuntimeKind::LlamaCpp => {
                                            format!("llama.cpp-{}", backend.name())
                                        }
                                    };
                                    // An unpaced cell keeps the key it had before the
                                    // pacing axis.
                                    let mut pace = if pacing_ms > 0 {
                                        format!("|pace{pacing_ms}")
                                    } else {
                                        String::new()
                                    };
                                    if perf_mode == PerfMode::Fixed {
                                        pace.push_str("|perf-fixed");
                                    }
                                    if duration_s > 0 {
                                        pace.push_str(&format!("|dur{duration_s}"));
                                    }
                                    if let Some(a) = adaptive {
                                        pace.push_str(&format!(
                                            "|adapt-{}-{}-{}",
                                            a.from, a.to, a.threshold_c
                                        ));
                                    }
                                    if let Some(l) = lora {
                                        pace.push_str(&format!(
                                            "|lora-{}-r{}{lora_source}",
                                            l.mode, l.rank
                                        ));
                                    }
                                    if kernel != KernelTier::Auto {
                                        pace.push_str(&format!("|kernel-{kernel}"));
                                    }
                                    let key = format!(
                                        "{}|{engine}|{}|t{threads}|b{batch}|kv{}|p{prompt_tokens}|g{gen_tokens}|a{aff}{pace}",
                                        info.serial,
                                        quant.name(),
                                        kv_window.map_or("full".into(), |w| w.to_string()),
                                    );
                                    cells.push(PlannedCell {
                                        key,
                                        device: info.serial.clone(),
                                        runtime,
                                        backend,
                                        quant,
                                        threads,
                                        batch,
                                        kv_window,
                                        prompt_tokens,
                                        gen_tokens,
                                        affinity: aff.to_string(),
                                        cpus: cpus.clone(),
                                        pacing_ms,
                                        perf_mode,
                                        duration_s,
                                        adaptive,
                                        lora,
                                        kernel,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sweep_parses() {
        let s = Sweep::load(None).unwrap();
        assert_eq!(s.backend, vec![BackendKind::Flex]);
        assert_eq!(s.quant.len(), 3, "f32, q8, q4");
        assert_eq!(s.threads, vec![Threads::N(1), Threads::Cores]);
        assert_eq!(s.repetitions, 3);
        assert_eq!(s.cooldown, Some((2.0, 120.0)));
    }

    #[test]
    fn errors_name_file_line_key_and_what_is_valid() {
        let e = Sweep::parse("s.toml", "backend = [\"flex\"]\nthreads = [1, 0]\n").unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("s.toml:2") && m.contains("threads") && m.contains("cores"),
            "{m}"
        );
        let e = Sweep::parse("s.toml", "quant = [\"f32\"]\n\nthreadz = [1]\n").unwrap_err();
        let m = format!("{e:#}");
        assert!(m.contains("s.toml:3") && m.contains("threadz"), "{m}");
        let e = Sweep::parse(
            "s.toml",
            "backend = [\"ndarray\"]\nquant = [\"q4-tensor\"]\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("cannot run on backend `ndarray`"));
        let e = Sweep::parse("s.toml", "affinity = [\"huge\"]").unwrap_err();
        assert!(format!("{e:#}").contains("valid: `all`, `big`"));
        for bad in ["-1", "20000", "\"slow\"", "2.5"] {
            let e = Sweep::parse("s.toml", &format!("seed = 1\npacing_ms = [0, {bad}]\n"));
            let m = format!("{:#}", e.unwrap_err());
            assert!(
                m.contains("s.toml:2") && m.contains("pacing_ms") && m.contains("to 10000"),
                "{m}"
            );
        }
        let s = Sweep::parse("s.toml", "pacing_ms = [0, 50]").unwrap();
        assert_eq!(s.pacing_ms, vec![0, 50]);
        for bad in ["-5", "3601", "\"long\"", "1.5"] {
            let e = Sweep::parse("s.toml", &format!("seed = 1\nduration_s = [{bad}]\n"));
            let m = format!("{:#}", e.unwrap_err());
            assert!(
                m.contains("s.toml:2") && m.contains("duration_s") && m.contains("to 3600"),
                "{m}"
            );
        }
        let s = Sweep::parse("s.toml", "duration_s = [0, 60]").unwrap();
        assert_eq!(s.duration_s, vec![0, 60]);
        let e = Sweep::parse("s.toml", "seed = 1\nperf_mode = [\"turbo\"]\n").unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("s.toml:2") && m.contains("perf_mode") && m.contains("`fixed`"),
            "{m}"
        );
        for bad in ["0.5", "-1", "\"off\"", "nan"] {
            let e = Sweep::parse("s.toml", &format!("seed = 1\nquality_gate = {bad}\n"));
            let m = format!("{:#}", e.unwrap_err());
            assert!(
                m.contains("s.toml:2") && m.contains("quality_gate") && m.contains("or 0"),
                "{m}"
            );
        }
        let gate = |text: &str| Sweep::parse("s.toml", text).unwrap().quality_gate;
        assert_eq!(gate("quality_gate = 0"), 0.0);
        assert_eq!(gate("quality_gate = 2"), 2.0);
        assert_eq!(gate("seed = 1"), socbench_kernels::gate::DEFAULT_MAX_RATIO);
    }

    #[test]
    fn cores_and_clusters_resolve_per_device() {
        let text = "@@machine\naarch64\n@@possible\n0-3\n@@maxfreq\n\
            /sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq 1000\n\
            /sys/devices/system/cpu/cpu1/cpufreq/cpuinfo_max_freq 1000\n\
            /sys/devices/system/cpu/cpu2/cpufreq/cpuinfo_max_freq 2000\n\
            /sys/devices/system/cpu/cpu3/cpufreq/cpuinfo_max_freq 2000\n";
        let info = DeviceInfo::parse("p", socbench_devices::info::DeviceKind::Adb, None, text);
        let s = Sweep::parse("s", "threads = [\"cores\"]\naffinity = [\"big\", \"all\"]").unwrap();
        let cells = plan_device(&s, &info).unwrap();
        let got: Vec<(usize, Option<Vec<u32>>)> =
            cells.iter().map(|c| (c.threads, c.cpus.clone())).collect();
        assert_eq!(got, vec![(2, Some(vec![2, 3])), (4, None)]);
        let s = Sweep::parse("s", "affinity = [\"7\"]").unwrap();
        assert!(plan_device(&s, &info).is_err());
    }

    #[test]
    fn llama_cpp_cells_are_planned_once_on_the_cpu_and_burn_keys_are_unchanged() {
        let info = DeviceInfo::parse("p", socbench_devices::info::DeviceKind::Adb, None, "");
        let s = Sweep::parse(
            "s",
            "runtime = [\"burn\", \"llama.cpp\"]\nbackend = [\"flex\", \"ndarray\", \"wgpu\"]\n\
             quant = [\"q8\"]\nthreads = [1]\nprompt_tokens = [4]\ngen_tokens = [4]\n",
        )
        .unwrap();
        let cells = plan_device(&s, &info).unwrap();
        let keys: Vec<(&str, &str, &str)> = cells
            .iter()
            .map(|c| {
                (
                    c.runtime.name(),
                    c.backend_label(),
                    c.key.split('|').nth(1).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            keys,
            vec![
                ("burn", "flex", "flex"),
                ("burn", "ndarray", "ndarray"),
                ("burn", "wgpu", "wgpu"),
                ("llama.cpp", "cpu", "llama.cpp-cpu"),
                ("llama.cpp", "wgpu", "llama.cpp-wgpu"),
            ]
        );
        assert!(cells[3].unsupported().is_none());
        assert!(cells[4].unsupported().unwrap().contains("CPU backend only"));
        // A Burn-only sweep's keys are those of results written before the runtime axis.
        assert_eq!(cells[0].key, "p|flex|q8|t1|b1|kvfull|p4|g4|aall");
        let e = Sweep::parse("s.toml", "\nruntime = [\"onnx\"]").unwrap_err();
        let m = format!("{e:#}");
        assert!(
            m.contains("s.toml:2") && m.contains("burn, llama.cpp"),
            "{m}"
        );
        // Burn's backend/quant limits do not apply to a llama.cpp-only sweep.
        assert!(
            Sweep::parse(
                "s",
                "runtime = [\"llama.cpp\"]\nbackend = [\"ndarray\"]\nquant = [\"q4-tensor\"]\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn kernel_variants_are_planned_for_packed_burn_cells_only_and_bad_names_are_refused() {
        let info = DeviceInfo::parse("p", socbench_devices::info::DeviceKind::Adb, None, "");
        let s = Sweep::parse(
            "s",
            "runtime = [\"burn\", \"llama.cpp\"]\nquant = [\"f32\", \"q4\"]\nthreads = [1]\n\
             prompt_tokens = [4]\ngen_tokens = [4]\nkernel = [\"auto\", \"arm-dotprod\", \"arm-i8mm\"]\n",
        )
        .unwrap();
        let cells = plan_device(&s, &info).unwrap();
        assert_eq!(cells.len(), s.cells_per_device());
        let keys: Vec<(&str, KernelTier)> =
            cells.iter().map(|c| (c.key.as_str(), c.kernel)).collect();
        assert_eq!(
            keys,
            [
                // f32 runs no packed kernel: once, as before the axis.
                ("p|flex|f32|t1|b1|kvfull|p4|g4|aall", KernelTier::Auto),
                ("p|flex|q4|t1|b1|kvfull|p4|g4|aall", KernelTier::Auto),
                (
                    "p|flex|q4|t1|b1|kvfull|p4|g4|aall|kernel-arm-dotprod",
                    KernelTier::ArmDotprod
                ),
                (
                    "p|flex|q4|t1|b1|kvfull|p4|g4|aall|kernel-arm-i8mm",
                    KernelTier::ArmI8mm
                ),
                // llama.cpp picks its own kernels: once per level.
                (
                    "p|llama.cpp-cpu|f32|t1|b1|kvfull|p4|g4|aall",
                    KernelTier::Auto
                ),
                (
                    "p|llama.cpp-cpu|q4|t1|b1|kvfull|p4|g4|aall",
                    KernelTier::Auto
                ),
            ]
        );
        let e = Sweep::parse("s.toml", "\nkernel = [\"avx3\"]").unwrap_err();
        let m = format!("{e:#}");
        assert!(m.contains("s.toml:2") && m.contains("x86-avx2"), "{m}");
        // The report's list of names is this one.
        let names: Vec<&str> = KernelTier::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names, socbench_reports::schema::KERNEL_TIERS);
    }

    #[test]
    fn lora_modes_are_planned_per_rank_once_for_none_and_bad_values_are_refused() {
        let info = DeviceInfo::parse("p", socbench_devices::info::DeviceKind::Adb, None, "");
        let mut s = Sweep::parse(
            "s",
            "runtime = [\"burn\", \"llama.cpp\"]\nquant = [\"q8\"]\nthreads = [1]\n\
             prompt_tokens = [4]\ngen_tokens = [4]\nlora = [\"none\", \"unmerged\", \"merged\"]\n\
             lora_rank = [8, 16]\n",
        )
        .unwrap();
        let cells = plan_device(&s, &info).unwrap();
        assert_eq!(cells.len(), 2 * (1 + 2 * 2));
        assert_eq!(cells.len(), s.cells_per_device());
        let burn: Vec<&str> = cells
            .iter()
            .filter(|c| c.runtime == RuntimeKind::Burn)
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(
            burn,
            [
                "p|flex|q8|t1|b1|kvfull|p4|g4|aall",
                "p|flex|q8|t1|b1|kvfull|p4|g4|aall|lora-unmerged-r8",
                "p|flex|q8|t1|b1|kvfull|p4|g4|aall|lora-unmerged-r16",
                "p|flex|q8|t1|b1|kvfull|p4|g4|aall|lora-merged-r8",
                "p|flex|q8|t1|b1|kvfull|p4|g4|aall|lora-merged-r16",
            ]
        );
        let llama: Vec<&PlannedCell> = cells
            .iter()
            .filter(|c| c.runtime == RuntimeKind::LlamaCpp)
            .collect();
        assert!(llama[0].unsupported().is_none());
        assert!(llama[1].unsupported().unwrap().contains("LoRA"));
        // An adapter file is named in the key: its rows are not the synthetic ones'.
        s.lora_file = Some("/x/my adapter.safetensors".into());
        let cells = plan_device(&s, &info).unwrap();
        assert!(
            cells[1].key.ends_with("|lora-unmerged-r8-my_adapter"),
            "{}",
            cells[1].key
        );
        for (bad, valid) in [
            ("lora = [\"fused\"]", "none, unmerged, merged"),
            ("lora_rank = [0]", "1 to 256"),
        ] {
            let e = Sweep::parse("s.toml", &format!("seed = 1\n{bad}\n")).unwrap_err();
            let m = format!("{e:#}");
            assert!(m.contains("s.toml:2") && m.contains(valid), "{m}");
        }
    }

    #[test]
    fn an_adaptive_mode_is_planned_once_at_its_first_level_and_bad_ones_are_refused() {
        let info = DeviceInfo::parse("p", socbench_devices::info::DeviceKind::Adb, None, "");
        let s = Sweep::parse(
            "s",
            "runtime = [\"burn\", \"llama.cpp\"]\nquant = [\"f32\", \"q8\"]\nthreads = [1]\n\
             prompt_tokens = [4]\ngen_tokens = [4]\nadaptive = [\"off\", \"q8>q4@45\"]\n",
        )
        .unwrap();
        assert_eq!(s.cells_per_device(), 2 * (2 + 1));
        let cells = plan_device(&s, &info).unwrap();
        assert_eq!(cells.len(), s.cells_per_device());
        let adaptive: Vec<&PlannedCell> = cells.iter().filter(|c| c.adaptive.is_some()).collect();
        assert_eq!(adaptive.len(), 2, "once per runtime, not per quant level");
        for c in &adaptive {
            assert_eq!(c.quant, QuantLevel::Q8);
            assert!(c.key.ends_with("|adapt-q8-q4-45"), "{}", c.key);
        }
        let llama = adaptive
            .iter()
            .find(|c| c.runtime == RuntimeKind::LlamaCpp)
            .unwrap();
        assert!(llama.unsupported().unwrap().contains("Burn runtime only"));
        for bad in ["\"q8>q8@45\"", "\"q8>q4\"", "\"hot\"", "45"] {
            let e = Sweep::parse("s.toml", &format!("seed = 1\nadaptive = [{bad}]\n"));
            let m = format!("{:#}", e.unwrap_err());
            assert!(
                m.contains("s.toml:2") && m.contains("adaptive") && m.contains("q8>q4@45"),
                "{m}"
            );
        }
        // Its levels must run on the sweep's Burn backends too.
        let e = Sweep::parse(
            "s",
            "backend = [\"ndarray\"]\nadaptive = [\"q8>q4-tensor@45\"]\n",
        )
        .and_then(|s| s.check_combinations("s").map(|()| s));
        assert!(format!("{:#}", e.unwrap_err()).contains("q4-tensor"));
    }
}
