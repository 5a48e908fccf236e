//! The result records, typed once: [`ResultRow`] is one line of `results.csv` (one measured,
//! failed or skipped repetition) and [`SampleRow`] one line of `samples.csv`. `socbench run`
//! writes them and every reader reads them through these types and the `csv` crate, so quoting,
//! embedded newlines and column names cannot differ between the two sides.
//!
//! A complete `results.csv` row ends with its `schema_version` (never empty, never quoted)
//! and a newline. A last row without both was torn by a crash mid-write: [`parse_results`]
//! reports it apart ([`TornRow`]) so the writer can set it aside and measure that repetition
//! again, and a reader can warn and go on.

use crate::schema::Metric;
use serde::{Deserialize, Serialize};
use std::fmt;

mod read;
pub use read::{ResultsFile, SamplesFile, TornRow, parse_results, parse_samples};

/// The version this build writes into every row: `major.minor`. A reader refuses rows of a
/// newer major version (their columns may mean something else); minor versions only add
/// columns, which older readers ignore.
pub const SCHEMA_VERSION: &str = "3.5";
/// The newest major version this build reads.
pub const SCHEMA_MAJOR: u32 = 3;

fn default_adaptive() -> String {
    "off".into()
}

fn default_lora() -> String {
    "none".into()
}

fn default_kernel_tier() -> String {
    "auto".into()
}

fn default_perf_mode() -> String {
    "default".into()
}

/// The outcome of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured.
    Ok,
    /// The agent or the model failed, or the agent hung and was stopped (the note says why).
    Failed,
    /// The device went away and did not come back in time.
    DeviceLost,
    /// Not run, on purpose (the note says why).
    Skipped,
}

impl Status {
    /// Every status, in the order reports list them.
    pub const ALL: [Status; 4] = [
        Status::Ok,
        Status::Failed,
        Status::DeviceLost,
        Status::Skipped,
    ];

    /// The word in `results.csv`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::DeviceLost => "device_lost",
            Status::Skipped => "skipped",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Columns of `results.csv`, in the order [`ResultRow`] writes them (a unit test holds the two
/// together).
pub const RESULT_COLUMNS: [&str; 76] = [
    "run_id",
    "session",
    "model",
    "model_id",
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
    "repetition",
    "status",
    "ttft_s",
    "prefill_tok_per_s",
    "decode_tok_per_s",
    "decode_ms_per_token",
    "decode_p50_ms",
    "decode_p90_ms",
    "decode_p99_ms",
    "decode_max_ms",
    "peak_rss_bytes",
    "pss_bytes",
    "model_bytes",
    "load_s",
    "weight_bytes_resident",
    "kv_cache_bytes",
    "weight_bytes_per_step",
    "decode_bw_fraction",
    "prefill_gemm_fraction",
    "perplexity",
    "avg_power_w",
    "energy_j",
    "energy_per_token_j",
    "prefill_energy_j",
    "decode_energy_j",
    "start_temp_c",
    "max_temp_c",
    "throttled",
    "charging",
    "cooldown_wait_s",
    "power_source",
    "energy_source",
    "sensors",
    "kernel",
    "governor",
    "freq_limits_mhz",
    "thermal_status_start",
    "thermal_status_end",
    "battery_pct_start",
    "selinux",
    "sched",
    "cpuset",
    "cpus_allowed",
    "generations",
    "window_peak_tok_s",
    "sustained_tok_s",
    "sustained_ratio",
    "throttle_after_s",
    "battery_drop_mah",
    "battery_drop_pct",
    "switches",
    "second_level_share",
    "note",
    "schema_version",
];

/// One repetition: a line of `results.csv`.
///
/// Metrics are `None` when not measured (a missing sensor, a failed run): an empty cell in
/// the file, never a zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// `model id / cell key # repetition`: unique per model, device, configuration and
    /// repetition.
    pub run_id: String,
    /// The `socbench run` session that wrote it.
    #[serde(default)]
    pub session: String,
    /// The model's file name (or `synthetic:tiny`).
    #[serde(default)]
    pub model: String,
    /// The model's identity: file name and SHA-256 of its tensor data (or `synthetic:tiny`).
    #[serde(default)]
    pub model_id: String,
    /// Device serial (`local` for the host).
    pub device: String,
    /// `burn` or `llama.cpp` (schema 2.1; older rows are `burn`).
    #[serde(default = "burn")]
    pub runtime: String,
    /// `flex`, `ndarray` or `wgpu`; `cpu` for llama.cpp.
    pub backend: String,
    /// Quantization level.
    pub quant: String,
    /// Worker threads.
    pub threads: u32,
    /// Sequences decoded together.
    pub batch: u32,
    /// KV-cache window in positions; `None` (written `full`) is the whole context.
    #[serde(with = "kv_window")]
    pub kv_window: Option<u32>,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub gen_tokens: u32,
    /// CPU affinity (`all`, a cluster name, or a CPU list).
    pub affinity: String,
    /// Idle gap after every generated token, ms (schema 3.2; 0 in older files).
    #[serde(default)]
    pub pacing_ms: u32,
    /// `default`, or `fixed` (Android's fixed-performance mode on; schema 3.2, `default` in
    /// older files).
    #[serde(default = "default_perf_mode")]
    pub perf_mode: String,
    /// Sustained session length, s (0: one generation per repetition; schema 3.3).
    #[serde(default)]
    pub duration_s: u32,
    /// `off`, or the adaptive precision mode (`q8>q4@45`; schema 3.3, `off` in older files).
    #[serde(default = "default_adaptive")]
    pub adaptive: String,
    /// `none`, `unmerged` or `merged` (schema 3.4, `none` in older files).
    #[serde(default = "default_lora")]
    pub lora: String,
    /// LoRA rank (0: none; schema 3.4).
    #[serde(default)]
    pub lora_rank: u32,
    /// Where the adapters came from: `synthetic` (seeded, not trained) or the file's name;
    /// empty without adapters (schema 3.4).
    #[serde(default)]
    pub lora_adapter: String,
    /// The packed-kernel variant the cell forced (`auto`: the device's best; the `kernel`
    /// column says which ran). Schema 3.5, `auto` in older files.
    #[serde(default = "default_kernel_tier")]
    pub kernel_tier: String,
    /// Repetition index within the cell.
    pub repetition: u32,
    /// Outcome.
    pub status: Status,
    /// Time to first token, seconds.
    #[serde(default)]
    pub ttft_s: Option<f64>,
    /// Prompt tokens per second during prefill (all sequences of the batch).
    #[serde(default)]
    pub prefill_tok_per_s: Option<f64>,
    /// Generated tokens per second during decode (all sequences of the batch).
    #[serde(default)]
    pub decode_tok_per_s: Option<f64>,
    /// Milliseconds per decode step.
    #[serde(default)]
    pub decode_ms_per_token: Option<f64>,
    /// Median decode step time of the repetition, ms (schema 2.4: the spread of the per-token
    /// latency a user feels).
    #[serde(default)]
    pub decode_p50_ms: Option<f64>,
    /// 90th percentile of the decode step times, ms.
    #[serde(default)]
    pub decode_p90_ms: Option<f64>,
    /// 99th percentile of the decode step times, ms.
    #[serde(default)]
    pub decode_p99_ms: Option<f64>,
    /// The longest decode step, ms.
    #[serde(default)]
    pub decode_max_ms: Option<f64>,
    /// Peak resident memory of the repetition, bytes.
    #[serde(default)]
    pub peak_rss_bytes: Option<f64>,
    /// Proportional set size after the repetition, bytes (schema 2.2; empty where
    /// `/proc/self/smaps_rollup` is unreadable).
    #[serde(default)]
    pub pss_bytes: Option<f64>,
    /// Model file size, bytes.
    #[serde(default)]
    pub model_bytes: Option<f64>,
    /// Seconds to load the model variant and convert its weights (schema 2.2).
    #[serde(default)]
    pub load_s: Option<f64>,
    /// Bytes of the model's weights in memory as they run, computed (schema 2.2).
    #[serde(default)]
    pub weight_bytes_resident: Option<f64>,
    /// Bytes of the KV cache at the end of the repetition, computed (schema 2.2).
    #[serde(default)]
    pub kv_cache_bytes: Option<f64>,
    /// Bytes of weights one decode step streams.
    #[serde(default)]
    pub weight_bytes_per_step: Option<f64>,
    /// Decode's weight traffic over the device's triad bandwidth.
    #[serde(default)]
    pub decode_bw_fraction: Option<f64>,
    /// Prefill's matmul rate over the device's f32 GEMM rate.
    #[serde(default)]
    pub prefill_gemm_fraction: Option<f64>,
    /// Perplexity of the quality text for this model variant.
    #[serde(default)]
    pub perplexity: Option<f64>,
    /// Average power, watts.
    #[serde(default)]
    pub avg_power_w: Option<f64>,
    /// Energy of the repetition, joules.
    #[serde(default)]
    pub energy_j: Option<f64>,
    /// Energy per generated token, joules.
    #[serde(default)]
    pub energy_per_token_j: Option<f64>,
    /// Energy from start to first token, joules.
    #[serde(default)]
    pub prefill_energy_j: Option<f64>,
    /// Energy from first token to end, joules.
    #[serde(default)]
    pub decode_energy_j: Option<f64>,
    /// Hottest zone when the cell started, °C.
    #[serde(default)]
    pub start_temp_c: Option<f64>,
    /// Hottest zone during the repetition, °C.
    #[serde(default)]
    pub max_temp_c: Option<f64>,
    /// Whether the fastest core ran below 90 % of its top frequency.
    #[serde(default)]
    pub throttled: Option<bool>,
    /// Whether the device was charging when the repetition started.
    #[serde(default)]
    pub charging: Option<bool>,
    /// Time in the cool-down gate before the cell, seconds.
    #[serde(default)]
    pub cooldown_wait_s: Option<f64>,
    /// What powered the device during the repetition (schema 3.0): `battery`, `usb`, `ac`,
    /// `wireless`, `external` (charging from a supply the device does not name), or
    /// `unknown` (no power-supply state readable; empty in files before 3.0). Battery energy
    /// measured on any other source describes the charger, not the workload, and is not
    /// written.
    #[serde(default)]
    pub power_source: String,
    /// Where energy came from: `battery`, `rapl`, with `(simulated)` for the virtual device
    /// (schema 3.0; before it, this was the `power_source` column).
    #[serde(default)]
    pub energy_source: String,
    /// `real`, `simulated` or `none`.
    #[serde(default)]
    pub sensors: String,
    /// The code that ran the matrix products: socbench's packed kernel variant
    /// (`x86-avx512vnni`, `x86-avx2`, `arm-i8mm`, `arm-dotprod`, `arm-neon`, `portable`),
    /// `burn-<backend>` for Burn's own ops, `ggml-cpu` and the type of the file it ran for
    /// llama.cpp (`ggml-cpu Q4_K_M`); empty when not loaded.
    #[serde(default)]
    pub kernel: String,
    /// Run conditions (schema 3.1; empty where the device does not tell). CPU frequency
    /// governor per cluster right after the repetition (when the cell started, for a row
    /// without a run), `/`-joined (`schedutil/schedutil`).
    #[serde(default)]
    pub governor: String,
    /// `scaling_min_freq-scaling_max_freq` in MHz per cluster, read as `governor`
    /// (`300-1800/300-2800`); a maximum below the cluster's top is a cap.
    #[serde(default)]
    pub freq_limits_mhz: String,
    /// Android's thermal status (0 none … 6 shutdown) when the cell started.
    #[serde(default)]
    pub thermal_status_start: Option<u8>,
    /// Android's thermal status right after the repetition (when the cell ended, for a row
    /// without a run).
    #[serde(default)]
    pub thermal_status_end: Option<u8>,
    /// Battery level when the cell started, %.
    #[serde(default)]
    pub battery_pct_start: Option<f64>,
    /// SELinux mode of the device (`enforcing`, `permissive`).
    #[serde(default)]
    pub selinux: String,
    /// The agent's scheduling policy and nice value (`SCHED_OTHER nice 0`).
    #[serde(default)]
    pub sched: String,
    /// The agent's cpuset (`/top-app`, `/` for a shell) or cgroup v2 path.
    #[serde(default)]
    pub cpuset: String,
    /// CPUs the agent was allowed before any pin (`0-7`).
    #[serde(default)]
    pub cpus_allowed: String,
    /// Sustained session: generations run back to back (schema 3.3; empty otherwise, as are
    /// the session columns after it).
    #[serde(default)]
    pub generations: Option<f64>,
    /// Sustained session: the best 5-second window's throughput, tok/s.
    #[serde(default)]
    pub window_peak_tok_s: Option<f64>,
    /// Sustained session: median throughput of the last quarter of its windows, tok/s.
    #[serde(default)]
    pub sustained_tok_s: Option<f64>,
    /// Sustained session: `sustained_tok_s / window_peak_tok_s`.
    #[serde(default)]
    pub sustained_ratio: Option<f64>,
    /// Sustained session: seconds from its start to the first sample with the fastest core
    /// below 90 % of its top frequency (empty: it did not throttle, or no frequency sensor).
    #[serde(default)]
    pub throttle_after_s: Option<f64>,
    /// Sustained session on battery: charge counter at its start less at its end, mAh.
    #[serde(default)]
    pub battery_drop_mah: Option<f64>,
    /// Sustained session on battery: level at its start less at its end, percentage points.
    #[serde(default)]
    pub battery_drop_pct: Option<f64>,
    /// Adaptive precision: switches between its two levels during the repetition.
    #[serde(default)]
    pub switches: Option<f64>,
    /// Adaptive precision: share of the tokens generated on the second level (0-1).
    #[serde(default)]
    pub second_level_share: Option<f64>,
    /// Why a repetition failed or was skipped (any text: commas, quotes, newlines).
    #[serde(default)]
    pub note: String,
    /// [`SCHEMA_VERSION`] of the writer; empty in files from before versioning (major 1).
    #[serde(default)]
    pub schema_version: String,
}

impl ResultRow {
    /// A row with the cell's identity and status, no metrics, this build's schema version.
    pub fn new(
        run_id: String,
        key: &crate::schema::CellKey,
        repetition: u32,
        status: Status,
    ) -> Self {
        Self {
            run_id,
            session: String::new(),
            model: key.model.clone(),
            model_id: String::new(),
            device: key.device.clone(),
            runtime: key.runtime.clone(),
            backend: key.backend.clone(),
            quant: key.quant.clone(),
            threads: key.threads,
            batch: key.batch,
            kv_window: key.kv_window,
            prompt_tokens: key.prompt_tokens,
            gen_tokens: key.gen_tokens,
            affinity: key.affinity.clone(),
            pacing_ms: key.pacing_ms,
            perf_mode: key.perf_mode.clone(),
            duration_s: key.duration_s,
            adaptive: key.adaptive.clone(),
            lora: key.lora.clone(),
            lora_rank: key.lora_rank,
            lora_adapter: key.lora_adapter.clone(),
            kernel_tier: key.kernel_tier.clone(),
            repetition,
            status,
            ttft_s: None,
            prefill_tok_per_s: None,
            decode_tok_per_s: None,
            decode_ms_per_token: None,
            decode_p50_ms: None,
            decode_p90_ms: None,
            decode_p99_ms: None,
            decode_max_ms: None,
            peak_rss_bytes: None,
            pss_bytes: None,
            model_bytes: None,
            load_s: None,
            weight_bytes_resident: None,
            kv_cache_bytes: None,
            weight_bytes_per_step: None,
            decode_bw_fraction: None,
            prefill_gemm_fraction: None,
            perplexity: None,
            avg_power_w: None,
            energy_j: None,
            energy_per_token_j: None,
            prefill_energy_j: None,
            decode_energy_j: None,
            start_temp_c: None,
            max_temp_c: None,
            throttled: None,
            charging: None,
            cooldown_wait_s: None,
            power_source: String::new(),
            energy_source: String::new(),
            sensors: String::new(),
            kernel: String::new(),
            governor: String::new(),
            freq_limits_mhz: String::new(),
            thermal_status_start: None,
            thermal_status_end: None,
            battery_pct_start: None,
            selinux: String::new(),
            sched: String::new(),
            cpuset: String::new(),
            cpus_allowed: String::new(),
            generations: None,
            window_peak_tok_s: None,
            sustained_tok_s: None,
            sustained_ratio: None,
            throttle_after_s: None,
            battery_drop_mah: None,
            battery_drop_pct: None,
            switches: None,
            second_level_share: None,
            note: String::new(),
            schema_version: SCHEMA_VERSION.to_owned(),
        }
    }

    /// The cell this row belongs to.
    pub fn key(&self) -> crate::schema::CellKey {
        crate::schema::CellKey {
            device: self.device.clone(),
            model: crate::schema::model_name(&self.model),
            runtime: self.runtime.clone(),
            backend: self.backend.clone(),
            quant: self.quant.clone(),
            threads: self.threads,
            batch: self.batch,
            kv_window: self.kv_window,
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            affinity: self.affinity.clone(),
            pacing_ms: self.pacing_ms,
            perf_mode: self.perf_mode.clone(),
            duration_s: self.duration_s,
            adaptive: self.adaptive.clone(),
            lora: self.lora.clone(),
            lora_rank: self.lora_rank,
            lora_adapter: self.lora_adapter.clone(),
            kernel_tier: self.kernel_tier.clone(),
        }
    }

    /// Sets `m` when `v` is a finite number (a NaN or infinity is "not measured").
    pub fn set(&mut self, m: Metric, v: Option<f64>) {
        if let Some(slot) = self.metric_mut(m) {
            *slot = v.filter(|x| x.is_finite());
        }
    }

    /// The row as one complete CSV line, newline included: what a writer appends in one write.
    pub fn to_csv_line(&self) -> Result<Vec<u8>, csv::Error> {
        csv_line(self)
    }
}

/// The stored metrics and their fields, written once for both accessors.
macro_rules! metric_fields {
    ($($metric:ident => $field:ident),* $(,)?) => {
        impl ResultRow {
            /// The field holding `m` (`None` for metrics the reports derive, not stored).
            pub fn metric_mut(&mut self, m: Metric) -> Option<&mut Option<f64>> {
                match m {
                    $(Metric::$metric => Some(&mut self.$field),)*
                    Metric::Battery30MinPct => None,
                }
            }

            /// The stored value of `m`.
            pub fn metric(&self, m: Metric) -> Option<f64> {
                match m {
                    $(Metric::$metric => self.$field,)*
                    Metric::Battery30MinPct => None,
                }
            }
        }
    };
}

metric_fields! {
    TtftS => ttft_s,
    PrefillTokPerS => prefill_tok_per_s,
    DecodeTokPerS => decode_tok_per_s,
    DecodeMsPerToken => decode_ms_per_token,
    DecodeP50Ms => decode_p50_ms,
    DecodeP90Ms => decode_p90_ms,
    DecodeP99Ms => decode_p99_ms,
    DecodeMaxMs => decode_max_ms,
    Generations => generations,
    WindowPeakTokPerS => window_peak_tok_s,
    SustainedTokPerS => sustained_tok_s,
    SustainedRatio => sustained_ratio,
    ThrottleAfterS => throttle_after_s,
    BatteryDropMah => battery_drop_mah,
    BatteryDropPct => battery_drop_pct,
    Switches => switches,
    SecondLevelShare => second_level_share,
    PeakRssBytes => peak_rss_bytes,
    ModelBytes => model_bytes,
    LoadS => load_s,
    WeightBytesResident => weight_bytes_resident,
    KvCacheBytes => kv_cache_bytes,
    PssBytes => pss_bytes,
    AvgPowerW => avg_power_w,
    EnergyJ => energy_j,
    EnergyPerTokenJ => energy_per_token_j,
    PrefillEnergyJ => prefill_energy_j,
    DecodeEnergyJ => decode_energy_j,
    StartTempC => start_temp_c,
    MaxTempC => max_temp_c,
    CooldownWaitS => cooldown_wait_s,
    WeightBytesPerStep => weight_bytes_per_step,
    DecodeBwFraction => decode_bw_fraction,
    PrefillGemmFraction => prefill_gemm_fraction,
    Perplexity => perplexity,
}

/// One sensor value: a line of `samples.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    /// Device serial.
    pub device: String,
    /// The agent run (one model variant loaded) that sampled it.
    pub agent_run: String,
    /// The cell running at the time (empty between cells).
    #[serde(default)]
    pub cell: String,
    /// Seconds since the agent started.
    pub t_s: f64,
    /// Sensor name.
    pub sensor: String,
    /// Value in the sensor's unit.
    pub value: f64,
    /// How the value was read: `sysfs`, `proc`, `dumpsys` (an Android service's text, sampled
    /// at most once a second) or `hal` (the thermal HAL through `dumpsys thermalservice`).
    /// Empty in files from before 3.1.
    #[serde(default)]
    pub source: String,
}

/// Columns of `samples.csv`.
pub const SAMPLE_COLUMNS: [&str; 7] = [
    "device",
    "agent_run",
    "cell",
    "t_s",
    "sensor",
    "value",
    "source",
];

impl SampleRow {
    /// The row as one complete CSV line, newline included.
    pub fn to_csv_line(&self) -> Result<Vec<u8>, csv::Error> {
        csv_line(self)
    }
}

fn csv_line<T: Serialize>(v: &T) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    w.serialize(v)?;
    w.into_inner()
        .map_err(|e| csv::Error::from(std::io::Error::other(e.to_string())))
}

fn burn() -> String {
    "burn".into()
}

mod kv_window {
    //! `full` or a number of positions.
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(w) => s.serialize_str(&w.to_string()),
            None => s.serialize_str("full"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "full" | "" => Ok(None),
            n => n.parse().map(Some).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{n}` is not a KV window (a number of positions, or full)"
                ))
            }),
        }
    }
}

#[cfg(test)]
mod tests;
