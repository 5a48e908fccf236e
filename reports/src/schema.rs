//! The result directory written by `socbench run`, and its reader.
//!
//! A directory holds `results.csv` (one row per measured repetition, append-only),
//! `samples.csv` (every sensor sample, long format), `events.jsonl` (what the agents said) and
//! `manifest.json` (plan, device infos, versions). Only `results.csv` is required here; the
//! others add timelines, battery capacity and provenance when present.
//!
//! The rows themselves are typed in [`crate::row`] ([`ResultRow`], [`SampleRow`]), which both
//! `socbench run` and this reader use. Rows are read by column name, so a file with extra or
//! reordered columns still reads. A later
//! row for the same `run_id` supersedes an earlier `failed`/`device_lost` one (that is how
//! `--resume` retries them); an `ok` row is final. Every row stays in the file; the reader keeps
//! the count of superseded ones.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use crate::row::{RESULT_COLUMNS, ResultRow, SAMPLE_COLUMNS, SampleRow, Status};

/// Columns that identify a cell, besides the model (required in a results file, with `run_id`,
/// `repetition` and `status`; except those added later: `runtime`, `pacing_ms`, `perf_mode`).
pub const CELL_COLUMNS: [&str; 18] = [
    "device",
    "runtime",
    "backend",
    "quant",
    "threads",
    "batch",
    "kv_window",
    "prompt_tokens",
    "gen_tokens",
    "affinity",
    "pacing_ms",
    "perf_mode",
    "duration_s",
    "adaptive",
    "lora",
    "lora_rank",
    "lora_adapter",
    "kernel_tier",
];

/// The `kernel_tier` values in the order reports put them: `auto`, then each
/// variant from the slowest (the names of `socbench_kernels::qmatmul::KernelTier`, held to
/// them by a harness test).
pub const KERNEL_TIERS: [&str; 7] = [
    "auto",
    "portable",
    "x86-avx2",
    "x86-avx512vnni",
    "arm-neon",
    "arm-dotprod",
    "arm-i8mm",
];

/// Quotes a CSV field when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// What went wrong reading a result directory: always names the file, and the line and column
/// where there is one.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is not what socbench writes.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the problem is the file as a whole).
        line: usize,
        /// What is wrong, and what would be valid.
        message: String,
    },
}

impl SchemaError {
    fn invalid(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// A numeric measurement of a repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Time to first token (prefill of the prompt), seconds.
    TtftS,
    /// Prompt tokens per second during prefill.
    PrefillTokPerS,
    /// Generated tokens per second during decode.
    DecodeTokPerS,
    /// Milliseconds per generated token.
    DecodeMsPerToken,
    /// Peak resident memory of the repetition, bytes.
    PeakRssBytes,
    /// Model file size, bytes.
    ModelBytes,
    /// Seconds to map or read the model file and convert its weights to the form they run in
    /// (the agent's load, once per model variant; every row of the variant carries it).
    LoadS,
    /// Bytes the model's weights occupy in memory as they run (computed from the converted
    /// tensors; llama.cpp: the size of its tensors).
    WeightBytesResident,
    /// Bytes of the KV cache at the end of the repetition (computed: sequences × layers ×
    /// keys and values × positions held × element size; llama.cpp: its allocated context).
    KvCacheBytes,
    /// Proportional set size of the process after the repetition (`Pss:` of
    /// `/proc/self/smaps_rollup`), bytes: the figure Android's memory accounting uses.
    PssBytes,
    /// Average power over the repetition, watts.
    AvgPowerW,
    /// Energy over the repetition, joules.
    EnergyJ,
    /// Energy per generated token (the whole repetition's energy over its tokens), joules.
    EnergyPerTokenJ,
    /// Energy of the prefill phase (start to first token), joules.
    PrefillEnergyJ,
    /// Energy of the decode phase (first token to end), joules.
    DecodeEnergyJ,
    /// Temperature of the hottest zone when the cell started, °C.
    StartTempC,
    /// Highest temperature seen during the repetition, °C.
    MaxTempC,
    /// Time spent in the cool-down gate before the cell, seconds.
    CooldownWaitS,
    /// Bytes of weights one decode step streams at the cell's quantization and backend.
    WeightBytesPerStep,
    /// Decode's weight traffic (`weight bytes per step × steps/s`) over the device's measured
    /// triad bandwidth at the cell's thread count (CPU backends).
    DecodeBwFraction,
    /// Prefill's matmul rate (`2 × weights × prompt tok/s`) over the device's measured f32 GEMM
    /// rate at the cell's thread count (CPU backends).
    PrefillGemmFraction,
    /// Perplexity of the built-in quality text at the cell's backend and quantization.
    Perplexity,
    /// Share of the battery a 30-minute session at this average power would use, percent
    /// (derived from `avg_power_w` and the device's design capacity; not a column).
    Battery30MinPct,
    /// Median of the repetition's decode step times, milliseconds (schema 2.4).
    DecodeP50Ms,
    /// 90th percentile of the decode step times (linear between ranks), milliseconds.
    DecodeP90Ms,
    /// 99th percentile of the decode step times, milliseconds.
    DecodeP99Ms,
    /// The longest decode step (the worst stall the user saw), milliseconds.
    DecodeMaxMs,
    /// Sustained session: generations run back to back (schema 3.3).
    Generations,
    /// Sustained session: the best 5-second window's throughput, tok/s.
    WindowPeakTokPerS,
    /// Sustained session: median throughput of the last quarter of its windows, tok/s.
    SustainedTokPerS,
    /// Sustained session: sustained over peak throughput.
    SustainedRatio,
    /// Sustained session: seconds from its start to the first throttled sample.
    ThrottleAfterS,
    /// Sustained session: battery charge counter at its start less at its end, mAh.
    BatteryDropMah,
    /// Sustained session: battery level at its start less at its end, percentage points.
    BatteryDropPct,
    /// Adaptive precision: switches between its two levels during the repetition.
    Switches,
    /// Adaptive precision: share of the repetition's tokens generated on the second level.
    SecondLevelShare,
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 36] = [
        Metric::ModelBytes,
        Metric::LoadS,
        Metric::WeightBytesResident,
        Metric::KvCacheBytes,
        Metric::PeakRssBytes,
        Metric::PssBytes,
        Metric::TtftS,
        Metric::DecodeMsPerToken,
        Metric::DecodeP50Ms,
        Metric::DecodeP90Ms,
        Metric::DecodeP99Ms,
        Metric::DecodeMaxMs,
        Metric::DecodeTokPerS,
        Metric::PrefillTokPerS,
        Metric::WeightBytesPerStep,
        Metric::DecodeBwFraction,
        Metric::PrefillGemmFraction,
        Metric::Perplexity,
        Metric::AvgPowerW,
        Metric::EnergyJ,
        Metric::EnergyPerTokenJ,
        Metric::PrefillEnergyJ,
        Metric::DecodeEnergyJ,
        Metric::Battery30MinPct,
        Metric::StartTempC,
        Metric::MaxTempC,
        Metric::CooldownWaitS,
        Metric::Generations,
        Metric::WindowPeakTokPerS,
        Metric::SustainedTokPerS,
        Metric::SustainedRatio,
        Metric::ThrottleAfterS,
        Metric::BatteryDropMah,
        Metric::BatteryDropPct,
        Metric::Switches,
        Metric::SecondLevelShare,
    ];

    /// The column (or derived field) name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::TtftS => "ttft_s",
            Metric::PrefillTokPerS => "prefill_tok_per_s",
            Metric::DecodeTokPerS => "decode_tok_per_s",
            Metric::DecodeMsPerToken => "decode_ms_per_token",
            Metric::PeakRssBytes => "peak_rss_bytes",
            Metric::ModelBytes => "model_bytes",
            Metric::LoadS => "load_s",
            Metric::WeightBytesResident => "weight_bytes_resident",
            Metric::KvCacheBytes => "kv_cache_bytes",
            Metric::PssBytes => "pss_bytes",
            Metric::AvgPowerW => "avg_power_w",
            Metric::EnergyJ => "energy_j",
            Metric::EnergyPerTokenJ => "energy_per_token_j",
            Metric::PrefillEnergyJ => "prefill_energy_j",
            Metric::DecodeEnergyJ => "decode_energy_j",
            Metric::StartTempC => "start_temp_c",
            Metric::MaxTempC => "max_temp_c",
            Metric::CooldownWaitS => "cooldown_wait_s",
            Metric::WeightBytesPerStep => "weight_bytes_per_step",
            Metric::DecodeBwFraction => "decode_bw_fraction",
            Metric::PrefillGemmFraction => "prefill_gemm_fraction",
            Metric::Perplexity => "perplexity",
            Metric::Battery30MinPct => "battery_30min_pct",
            Metric::DecodeP50Ms => "decode_p50_ms",
            Metric::DecodeP90Ms => "decode_p90_ms",
            Metric::DecodeP99Ms => "decode_p99_ms",
            Metric::DecodeMaxMs => "decode_max_ms",
            Metric::Generations => "generations",
            Metric::WindowPeakTokPerS => "window_peak_tok_s",
            Metric::SustainedTokPerS => "sustained_tok_s",
            Metric::SustainedRatio => "sustained_ratio",
            Metric::ThrottleAfterS => "throttle_after_s",
            Metric::BatteryDropMah => "battery_drop_mah",
            Metric::BatteryDropPct => "battery_drop_pct",
            Metric::Switches => "switches",
            Metric::SecondLevelShare => "second_level_share",
        }
    }

    /// A heading for tables.
    pub fn label(self) -> &'static str {
        match self {
            Metric::TtftS => "TTFT",
            Metric::PrefillTokPerS => "Prefill tok/s",
            Metric::DecodeTokPerS => "Decode tok/s",
            Metric::DecodeMsPerToken => "ms/token",
            Metric::PeakRssBytes => "Peak RAM",
            Metric::ModelBytes => "Model size",
            Metric::LoadS => "Load time",
            Metric::WeightBytesResident => "Weights in RAM",
            Metric::KvCacheBytes => "KV cache",
            Metric::PssBytes => "PSS",
            Metric::AvgPowerW => "Avg power",
            Metric::EnergyJ => "Energy",
            Metric::EnergyPerTokenJ => "Energy/token",
            Metric::PrefillEnergyJ => "Prefill energy",
            Metric::DecodeEnergyJ => "Decode energy",
            Metric::StartTempC => "Start temp",
            Metric::MaxTempC => "Max temp",
            Metric::CooldownWaitS => "Cool-down wait",
            Metric::WeightBytesPerStep => "Weights/step",
            Metric::DecodeBwFraction => "Decode, % of triad",
            Metric::PrefillGemmFraction => "Prefill, % of GEMM",
            Metric::Perplexity => "Perplexity",
            Metric::Battery30MinPct => "Battery, 30 min",
            Metric::DecodeP50Ms => "Step p50",
            Metric::DecodeP90Ms => "Step p90",
            Metric::DecodeP99Ms => "Step p99",
            Metric::DecodeMaxMs => "Longest step",
            Metric::Generations => "Generations",
            Metric::WindowPeakTokPerS => "Peak window tok/s",
            Metric::SustainedTokPerS => "Sustained tok/s",
            Metric::SustainedRatio => "Sustained / peak",
            Metric::ThrottleAfterS => "Time to throttle",
            Metric::BatteryDropMah => "Battery drop",
            Metric::BatteryDropPct => "Battery drop, level",
            Metric::Switches => "Level switches",
            Metric::SecondLevelShare => "Tokens on the second level",
        }
    }

    /// Whether a larger value is better (`None`: neither, e.g. a temperature at the start).
    pub fn higher_is_better(self) -> Option<bool> {
        match self {
            Metric::PrefillTokPerS
            | Metric::DecodeTokPerS
            | Metric::DecodeBwFraction
            | Metric::PrefillGemmFraction
            | Metric::WindowPeakTokPerS
            | Metric::SustainedTokPerS
            | Metric::SustainedRatio
            | Metric::ThrottleAfterS => Some(true),
            Metric::TtftS
            | Metric::DecodeMsPerToken
            | Metric::PeakRssBytes
            | Metric::ModelBytes
            | Metric::LoadS
            | Metric::WeightBytesResident
            | Metric::KvCacheBytes
            | Metric::PssBytes
            | Metric::WeightBytesPerStep
            | Metric::Perplexity
            | Metric::AvgPowerW
            | Metric::EnergyJ
            | Metric::PrefillEnergyJ
            | Metric::DecodeEnergyJ
            | Metric::EnergyPerTokenJ
            | Metric::MaxTempC
            | Metric::Battery30MinPct
            | Metric::DecodeP50Ms
            | Metric::DecodeP90Ms
            | Metric::DecodeP99Ms
            | Metric::DecodeMaxMs
            | Metric::BatteryDropMah
            | Metric::BatteryDropPct => Some(false),
            Metric::StartTempC
            | Metric::CooldownWaitS
            | Metric::Generations
            | Metric::Switches
            | Metric::SecondLevelShare => None,
        }
    }

    /// Whether the metric needs a power sensor (battery, rail or RAPL).
    pub fn needs_power(self) -> bool {
        matches!(
            self,
            Metric::AvgPowerW
                | Metric::EnergyJ
                | Metric::EnergyPerTokenJ
                | Metric::PrefillEnergyJ
                | Metric::DecodeEnergyJ
                | Metric::Battery30MinPct
        )
    }

    /// Whether the metric needs a thermal sensor.
    pub fn needs_thermal(self) -> bool {
        matches!(self, Metric::StartTempC | Metric::MaxTempC)
    }

    /// The metric named `s` (column name).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Index into [`Record::values`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A human-readable value with its unit: `1.23 s` as `1.23 s`, bytes as MiB, and so on.
    pub fn format(self, v: f64) -> String {
        match self {
            Metric::TtftS | Metric::CooldownWaitS | Metric::LoadS => {
                if v.abs() < 1.0 {
                    format!("{} ms", sig3(v * 1e3))
                } else {
                    format!("{} s", sig3(v))
                }
            }
            Metric::PrefillTokPerS
            | Metric::DecodeTokPerS
            | Metric::WindowPeakTokPerS
            | Metric::SustainedTokPerS
            | Metric::Generations
            | Metric::Switches => sig3(v),
            Metric::SecondLevelShare => format!("{} %", sig3(v * 100.0)),
            Metric::SustainedRatio => format!("{v:.2}"),
            Metric::ThrottleAfterS => format!("{v:.1} s"),
            Metric::BatteryDropMah => format!("{} mAh", sig3(v)),
            Metric::BatteryDropPct => format!("{} %", sig3(v)),
            Metric::DecodeMsPerToken
            | Metric::DecodeP50Ms
            | Metric::DecodeP90Ms
            | Metric::DecodeP99Ms
            | Metric::DecodeMaxMs => format!("{} ms", sig3(v)),
            Metric::PeakRssBytes
            | Metric::ModelBytes
            | Metric::WeightBytesPerStep
            | Metric::WeightBytesResident
            | Metric::KvCacheBytes
            | Metric::PssBytes => {
                format!("{} MiB", sig3(v / (1024.0 * 1024.0)))
            }
            Metric::AvgPowerW => format!("{} W", sig3(v)),
            Metric::EnergyJ
            | Metric::EnergyPerTokenJ
            | Metric::PrefillEnergyJ
            | Metric::DecodeEnergyJ => {
                if v.abs() < 1.0 {
                    format!("{} mJ", sig3(v * 1e3))
                } else {
                    format!("{} J", sig3(v))
                }
            }
            Metric::StartTempC | Metric::MaxTempC => format!("{v:.1} °C"),
            Metric::Battery30MinPct => format!("{} %", sig3(v)),
            Metric::Perplexity => format!("{v:.4}"),
            Metric::DecodeBwFraction | Metric::PrefillGemmFraction => {
                format!("{} %", sig3(v * 100.0))
            }
        }
    }
}

/// Three significant digits, without exponent notation for everyday magnitudes.
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.001 {
        // Three significant digits below 1.
        let digits = (-a.log10().floor()) as usize + 2;
        format!("{v:.digits$}")
    } else {
        format!("{v:.2e}")
    }
}

/// The configuration of a cell: everything but the repetition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CellKey {
    /// Device serial (`local` for the host).
    pub device: String,
    /// Model file name (or `synthetic:tiny`).
    pub model: String,
    /// `burn` or `llama.cpp`: part of the cell's identity (`compare` never pairs a Burn cell
    /// with a llama.cpp one).
    pub runtime: String,
    /// `flex`, `ndarray` or `wgpu`; `cpu` for llama.cpp.
    pub backend: String,
    /// Quantization level.
    pub quant: String,
    /// Worker threads.
    pub threads: u32,
    /// Sequences decoded together.
    pub batch: u32,
    /// KV-cache window in positions; `None` is the full context.
    pub kv_window: Option<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub gen_tokens: u32,
    /// CPU affinity (`all`, a cluster name, or a CPU list).
    pub affinity: String,
    /// Idle gap after every generated token, ms (token pacing; 0: none, schema 3.2).
    pub pacing_ms: u32,
    /// `default`, or `fixed`: Android's fixed-performance mode was on (schema 3.2).
    pub perf_mode: String,
    /// Sustained session length, s (0: none; schema 3.3).
    pub duration_s: u32,
    /// `off`, or the adaptive precision mode, `q8>q4@45` (schema 3.3).
    pub adaptive: String,
    /// `none`, `unmerged` or `merged`: LoRA adapters on the attention projections (schema
    /// 3.4).
    pub lora: String,
    /// The adapters' rank (0 without adapters; schema 3.4).
    pub lora_rank: u32,
    /// Where the adapters came from: `synthetic`, or the adapter file's name (empty without
    /// adapters; schema 3.4).
    pub lora_adapter: String,
    /// `auto`, or the packed-kernel variant the cell forced (schema 3.5).
    pub kernel_tier: String,
}

impl CellKey {
    /// The KV window as written: a number, or `full`.
    pub fn kv_label(&self) -> String {
        self.kv_window.map_or("full".into(), |w| w.to_string())
    }

    /// `flex q8 t2 b1 kv=full p32 g16 a=all` (without the device); a runtime other than
    /// Burn leads (`llama.cpp cpu q8 t2 …`); a paced cell ends in ` pace=50ms`.
    pub fn describe(&self) -> String {
        let runtime = if self.runtime.is_empty() || self.runtime == "burn" {
            String::new()
        } else {
            format!("{} ", self.runtime)
        };
        format!(
            "{runtime}{} {} t{} b{} kv={} p{} g{} a={}",
            self.backend,
            self.quant,
            self.threads,
            self.batch,
            self.kv_label(),
            self.prompt_tokens,
            self.gen_tokens,
            self.affinity
        ) + &self.pacing_label()
    }

    /// ` pace=50ms` for a paced cell, ` perf=fixed` in fixed-performance mode, ` session=60s`
    /// for a sustained session, empty otherwise (labels of other cells read as before those
    /// axes).
    pub fn pacing_label(&self) -> String {
        let mut s = if self.pacing_ms > 0 {
            format!(" pace={}ms", self.pacing_ms)
        } else {
            String::new()
        };
        if self.perf_mode == "fixed" {
            s.push_str(" perf=fixed");
        }
        if self.duration_s > 0 {
            s.push_str(&format!(" session={}s", self.duration_s));
        }
        if !self.adaptive.is_empty() && self.adaptive != "off" {
            s.push_str(&format!(" adaptive={}", self.adaptive));
        }
        if self.forced_kernel() {
            s.push_str(&format!(" kernel={}", self.kernel_tier));
        }
        if !self.lora.is_empty() && self.lora != "none" {
            s.push_str(&format!(" lora={}/r{}", self.lora, self.lora_rank));
            // A file's adapters are named; synthetic ones are the default.
            if !self.lora_adapter.is_empty() && self.lora_adapter != "synthetic" {
                s.push_str(&format!("/{}", self.lora_adapter));
            }
        }
        s
    }

    /// Whether the cell forced a packed-kernel variant (not `auto`).
    pub fn forced_kernel(&self) -> bool {
        !self.kernel_tier.is_empty() && self.kernel_tier != "auto"
    }

    /// The key without the device, for matching cells across devices.
    pub fn config(&self) -> CellKey {
        CellKey {
            device: String::new(),
            ..self.clone()
        }
    }
}

/// One repetition, as `results.csv` records it.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// `cell key # repetition`.
    pub run_id: String,
    /// The `socbench run` session that wrote it (the directory name for files without the
    /// column).
    pub session: String,
    /// The cell.
    pub key: CellKey,
    /// Repetition index within the cell.
    pub repetition: u32,
    /// Outcome.
    pub status: Status,
    /// Values by [`Metric::index`]; `None` when not measured (a missing sensor, a failed run).
    pub values: Vec<Option<f64>>,
    /// Whether the fastest core ran below 90 % of its top frequency during the repetition.
    pub throttled: Option<bool>,
    /// Whether the device was charging when the repetition started.
    pub charging: Option<bool>,
    /// What powered the device (see [`crate::row::ResultRow::power_source`]).
    pub power_source: String,
    /// Where energy came from: `battery`, `rapl`, with `(simulated)` for the virtual device.
    pub energy_source: String,
    /// `real`, `simulated` or `none`.
    pub sensors: String,
    /// The code that ran the products (see [`ResultRow::kernel`]).
    pub kernel: String,
    /// Why a repetition failed or was skipped.
    pub note: String,
    /// What it was measured under (schema 3.1; empty before).
    pub conditions: crate::conditions::Conditions,
    /// Android's thermal status at the cell's start and end.
    pub thermal_status: (Option<u8>, Option<u8>),
    /// Battery level at the cell's start, %.
    pub battery_pct_start: Option<f64>,
    /// The result directory it came from.
    pub source: usize,
    /// Line in `results.csv`.
    pub line: usize,
}

impl Record {
    /// The value of `m`, when measured.
    pub fn get(&self, m: Metric) -> Option<f64> {
        self.values[m.index()]
    }
}

/// Sensor samples of one agent run (one model variant loaded on one device).
#[derive(Debug, Clone, Default)]
pub struct AgentRun {
    /// Device serial.
    pub device: String,
    /// Agent run id.
    pub id: String,
    /// Host wall-clock time (Unix seconds) of the agent's `t_s = 0`, when the events say.
    pub host_unix_s: Option<f64>,
    /// Samples per sensor: `(t_s, value)`, in time order.
    pub sensors: BTreeMap<String, Vec<(f64, f64)>>,
    /// How each sensor was read (`sysfs`, `proc`, `dumpsys`, `hal`; several `+`-joined if it
    /// changed), for sensors whose samples say (3.1+).
    pub sources: BTreeMap<String, String>,
    /// Cells run: `(cell key text, start t_s, end t_s, failed)`.
    pub cells: Vec<(String, f64, Option<f64>, bool)>,
    /// Sustained sessions measured (their token times), in event order.
    pub sessions: Vec<crate::sustained::SessionRun>,
    /// Adaptive repetitions' level switches, in event order.
    pub switches: Vec<crate::sustained::RepSwitches>,
    /// Index of the result directory (in [`ResultSet::sources`]) the agent run was read from.
    pub source: usize,
}

/// A `rep` event's sustained session, when it has one (`None` for other repetitions and
/// for events that do not read as one).
fn session_run(v: &Value) -> Option<crate::sustained::SessionRun> {
    let s = v.get("session").filter(|s| s.is_object())?;
    Some(crate::sustained::SessionRun {
        cell: v["cell"].as_str()?.to_owned(),
        repetition: u32::try_from(v["repetition"].as_u64()?).ok()?,
        batch: usize::try_from(v["batch"].as_u64()?).ok()?,
        t_start_s: v["t_start_s"].as_f64()?,
        t_end_s: v["t_end_s"].as_f64()?,
        generations: usize::try_from(s["generations"].as_u64()?).ok()?,
        token_s: s["token_s"]
            .as_array()?
            .iter()
            .map(Value::as_f64)
            .collect::<Option<Vec<f64>>>()?,
    })
}

/// A `rep` event's adaptive switches, when it has any.
fn rep_switches(v: &Value) -> Option<crate::sustained::RepSwitches> {
    let switches = v["adaptive"]["switches"].as_array()?;
    Some(crate::sustained::RepSwitches {
        cell: v["cell"].as_str()?.to_owned(),
        repetition: u32::try_from(v["repetition"].as_u64()?).ok()?,
        t_start_s: v["t_start_s"].as_f64()?,
        start: v["adaptive"]["start"].as_str()?.to_owned(),
        switches: switches
            .iter()
            .map(|s| {
                Some((
                    s["t_s"].as_f64()?,
                    s["from"].as_str()?.to_owned(),
                    s["to"].as_str()?.to_owned(),
                    s["temp_c"].as_f64()?,
                ))
            })
            .collect::<Option<Vec<_>>>()?,
    })
}

/// One result directory's provenance.
#[derive(Debug, Clone)]
pub struct Source {
    /// The directory.
    pub dir: PathBuf,
    /// `manifest.json`, when present and readable.
    pub manifest: Option<Value>,
}

/// Everything read from one or more result directories.
#[derive(Debug, Clone, Default)]
pub struct ResultSet {
    /// The directories, in the order given.
    pub sources: Vec<Source>,
    /// The effective rows (one per run id and directory), in file order.
    pub records: Vec<Record>,
    /// Rows superseded by a later row for the same run (kept in the files, not counted here).
    pub superseded: usize,
    /// Agent runs with their samples and cell boundaries, in order of appearance.
    pub agent_runs: Vec<AgentRun>,
    /// Device infos from the manifests, by serial.
    pub devices: BTreeMap<String, Value>,
    /// Measured roofs (`socbench probe`'s `roofline`: `triad`/`gemm` points with `threads`
    /// and `best`) from the manifests, by serial.
    pub rooflines: BTreeMap<String, Value>,
    /// Problems that did not stop the reading (a torn last line, an unreadable event).
    pub warnings: Vec<String>,
}

fn read(path: &Path) -> Result<String, SchemaError> {
    std::fs::read_to_string(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl ResultSet {
    /// Reads and merges the result directories `dirs`.
    pub fn load<P: AsRef<Path>>(dirs: &[P]) -> Result<Self, SchemaError> {
        let mut set = ResultSet::default();
        for dir in dirs {
            set.load_dir(dir.as_ref())?;
        }
        Ok(set)
    }

    fn load_dir(&mut self, dir: &Path) -> Result<(), SchemaError> {
        let source = self.sources.len();
        let results = dir.join("results.csv");
        if !results.is_file() {
            return Err(SchemaError::invalid(
                &results,
                0,
                "no results file: give a directory written by `socbench run`",
            ));
        }
        let manifest_path = dir.join("manifest.json");
        let manifest = if manifest_path.is_file() {
            match serde_json::from_str::<Value>(&read(&manifest_path)?) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.warnings.push(format!(
                        "{}: not valid JSON ({e}); provenance left out",
                        manifest_path.display()
                    ));
                    None
                }
            }
        } else {
            None
        };
        if let Some(devs) = manifest
            .as_ref()
            .and_then(|m| m["devices"].as_array())
            .cloned()
        {
            for d in devs {
                if let Some(serial) = d["info"]["serial"].as_str() {
                    self.devices.insert(serial.to_owned(), d["info"].clone());
                    let roof = &d["outcome"]["roofline"];
                    if roof.is_object() {
                        self.rooflines.insert(serial.to_owned(), roof.clone());
                    }
                }
            }
        }
        let fallback_model = manifest
            .as_ref()
            .and_then(|m| m["model"].as_str())
            .map(model_name)
            .unwrap_or_default();
        let fallback_session = dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into());
        self.sources.push(Source {
            dir: dir.to_path_buf(),
            manifest,
        });
        self.read_results(&results, source, &fallback_session, &fallback_model)?;
        let samples = dir.join("samples.csv");
        let mut runs: Vec<AgentRun> = Vec::new();
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        let mut slot = |runs: &mut Vec<AgentRun>, device: &str, id: &str| -> usize {
            *index
                .entry((device.to_owned(), id.to_owned()))
                .or_insert_with(|| {
                    runs.push(AgentRun {
                        device: device.to_owned(),
                        id: id.to_owned(),
                        source,
                        ..AgentRun::default()
                    });
                    runs.len() - 1
                })
        };
        let events = dir.join("events.jsonl");
        if events.is_file() {
            for (i, line) in read(&events)?.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    self.warnings.push(format!(
                        "{}:{}: not a JSON event; skipped",
                        events.display(),
                        i + 1
                    ));
                    continue;
                };
                let (Some(device), Some(id)) = (v["device"].as_str(), v["agent_run"].as_str())
                else {
                    continue;
                };
                let t = v["t_s"].as_f64();
                let k = slot(&mut runs, device, id);
                let run = &mut runs[k];
                match v["event"].as_str() {
                    Some("hello") => {
                        if let (Some(host), Some(t)) = (v["host_unix_s"].as_f64(), t) {
                            run.host_unix_s = Some(host - t);
                        }
                    }
                    Some("cell_start") => {
                        if let (Some(cell), Some(t)) = (v["cell"].as_str(), t) {
                            run.cells.push((cell.to_owned(), t, None, false));
                        }
                    }
                    Some("rep") => {
                        if let Some(s) = session_run(&v) {
                            run.sessions.push(s);
                        }
                        if let Some(s) = rep_switches(&v) {
                            run.switches.push(s);
                        }
                    }
                    Some(ev @ ("cell_end" | "cell_failed")) => {
                        if let (Some(cell), Some(t)) = (v["cell"].as_str(), t) {
                            match run.cells.iter_mut().rev().find(|c| c.0 == cell) {
                                Some(c) => {
                                    c.2 = Some(t);
                                    c.3 = ev == "cell_failed";
                                }
                                // Failed while loading: it never started.
                                None => run.cells.push((cell.to_owned(), t, Some(t), true)),
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if samples.is_file() {
            let bytes = std::fs::read(&samples).map_err(|source| SchemaError::Io {
                path: samples.clone(),
                source,
            })?;
            let (rows, torn) = crate::row::parse_samples(&samples, &bytes)?;
            if let Some(t) = torn {
                self.warnings.push(format!(
                    "{}:{}: incomplete last row ignored",
                    samples.display(),
                    t.line
                ));
            }
            for (_, r) in rows {
                let k = slot(&mut runs, &r.device, &r.agent_run);
                if !r.source.is_empty() {
                    let known = runs[k].sources.entry(r.sensor.clone()).or_default();
                    if !known.split('+').any(|s| s == r.source) {
                        if !known.is_empty() {
                            known.push('+');
                        }
                        known.push_str(&r.source);
                    }
                }
                runs[k]
                    .sensors
                    .entry(r.sensor)
                    .or_default()
                    .push((r.t_s, r.value));
            }
        }
        for r in &mut runs {
            for s in r.sensors.values_mut() {
                s.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        self.agent_runs.extend(runs);
        Ok(())
    }

    fn read_results(
        &mut self,
        path: &Path,
        source: usize,
        fallback_session: &str,
        fallback_model: &str,
    ) -> Result<(), SchemaError> {
        let bytes = std::fs::read(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file = crate::row::parse_results(path, &bytes)?;
        if let Some(t) = &file.torn {
            // A torn last line (a crash mid-write): `socbench run` sets it aside and measures
            // that repetition again when it next opens the directory.
            self.warnings.push(format!(
                "{}:{}: incomplete last row ignored",
                path.display(),
                t.line
            ));
        }
        // Index of the effective row per run id.
        let mut effective: HashMap<String, usize> = HashMap::new();
        for (line, row) in file.rows {
            let mut rec = Record::from_row(row, source, line, fallback_session);
            if rec.key.model.is_empty() {
                rec.key.model = fallback_model.to_owned();
            }
            match effective.get(&rec.run_id) {
                Some(&at) if self.records[at].status == Status::Ok => self.superseded += 1,
                Some(&at) => {
                    self.records[at] = rec;
                    self.superseded += 1;
                }
                None => {
                    effective.insert(rec.run_id.clone(), self.records.len());
                    self.records.push(rec);
                }
            }
        }
        Ok(())
    }

    /// The device info of `serial` from a manifest, if any.
    pub fn device_info(&self, serial: &str) -> Option<&Value> {
        self.devices.get(serial)
    }

    /// Devices in the order they first appear in the results.
    pub fn device_order(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in &self.records {
            if !out.contains(&r.key.device) {
                out.push(r.key.device.clone());
            }
        }
        out
    }
}

/// The model's file name without its directory (`synthetic:tiny` stays as it is).
pub fn model_name(path: &str) -> String {
    if path.contains(':') && !path.contains(['/', '\\']) {
        return path.to_owned();
    }
    Path::new(path)
        .file_name()
        .map_or_else(|| path.to_owned(), |n| n.to_string_lossy().into_owned())
}

impl Record {
    /// The analysis view of a stored row.
    pub fn from_row(row: ResultRow, source: usize, line: usize, fallback_session: &str) -> Self {
        let mut values = vec![None; Metric::ALL.len()];
        for m in Metric::ALL {
            values[m.index()] = row.metric(m);
        }
        let key = row.key();
        let conditions = crate::conditions::Conditions::of(&row);
        Record {
            conditions,
            thermal_status: (row.thermal_status_start, row.thermal_status_end),
            battery_pct_start: row.battery_pct_start,
            session: if row.session.is_empty() {
                fallback_session.to_owned()
            } else {
                row.session
            },
            run_id: row.run_id,
            key,
            repetition: row.repetition,
            status: row.status,
            values,
            throttled: row.throttled,
            charging: row.charging,
            power_source: row.power_source,
            energy_source: row.energy_source,
            kernel: row.kernel,
            sensors: row.sensors,
            note: row.note,
            source,
            line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_order_matches_indices() {
        // `values` is indexed by discriminant; ALL lists them in report order.
        let mut idx: Vec<usize> = Metric::ALL.iter().map(|m| m.index()).collect();
        idx.sort_unstable();
        assert_eq!(idx, (0..Metric::ALL.len()).collect::<Vec<_>>());
        for m in Metric::ALL {
            assert_eq!(Metric::parse(m.name()), Some(m));
        }
    }

    #[test]
    fn sig3_keeps_three_digits() {
        assert_eq!(sig3(17.14), "17.1");
        assert_eq!(sig3(0.01234), "0.0123");
        assert_eq!(sig3(0.5), "0.500");
        assert_eq!(sig3(1234.4), "1234");
        assert_eq!(sig3(2.0), "2.00");
    }
}
