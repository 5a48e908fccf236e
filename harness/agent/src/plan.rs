//! What the host sends the agent ([`Plan`]) and what the agent answers ([`Event`]).

use serde::{Deserialize, Serialize};
use socbench_devices::conditions::{FreqConditions, ProcessConditions};
use socbench_devices::sensors::SensorMeta;
use socbench_kernels::backend::BackendKind;
use socbench_kernels::load::ModelSpec;
use socbench_kernels::lora::LoraSpec;
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::runtime::RuntimeKind;

/// Waiting for the device to cool before a cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cooldown {
    /// Idle temperature measured before the sweep (°C, hottest thermal zone).
    pub baseline_c: f64,
    /// Start a cell once within this many °C of the baseline.
    pub delta_c: f64,
    /// Give up waiting after this long (the cell runs, with its start temperature recorded).
    pub max_wait_s: f64,
}

/// One cell: a point of the sweep grid within a model variant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    /// Stable id (the host's key for results and resume).
    pub id: String,
    /// Sequences decoded together.
    pub batch: usize,
    /// KV window (`None`: full).
    pub kv_window: Option<usize>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub gen_tokens: usize,
    /// Idle gap after every generated token but the last, ms (token pacing; 0 = none).
    #[serde(default)]
    pub pacing_ms: u32,
    /// Run with Android's fixed-performance mode on (`perf_mode = "fixed"`).
    #[serde(default)]
    pub fixed_performance: bool,
    /// Sustained session, s: each measured repetition generates back to back from the prompt
    /// (KV cache reset, model kept) until this long has passed (0: one generation).
    #[serde(default)]
    pub duration_s: u32,
    /// Adaptive precision: the plan's level first, the second once the hottest zone reaches
    /// the threshold (`None`: one level).
    #[serde(default)]
    pub adaptive: Option<crate::adaptive::Adaptive>,
    /// Measured repetitions.
    pub repetitions: usize,
    /// Repetitions already stored (resume): not run again.
    #[serde(default)]
    pub skip_reps: Vec<usize>,
}

/// Everything one agent process runs: one model variant, several cells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    /// Model file on the device, or `synthetic:tiny`. For llama.cpp, the file in the level's
    /// llama.cpp format.
    pub model: String,
    /// Runtime (absent in plans from before the runtime axis: Burn).
    #[serde(default)]
    pub runtime: RuntimeKind,
    /// Backend (Burn; ignored by llama.cpp, which runs on its CPU backend).
    pub backend: BackendKind,
    /// Quantization.
    pub quant: QuantLevel,
    /// LoRA adapters on the attention projections (`None`: the base model).
    #[serde(default)]
    pub lora: Option<LoraSpec>,
    /// Worker threads.
    pub threads: usize,
    /// The packed-kernel variant of the quantized products (absent in plans from before the
    /// kernel axis: `auto`, this CPU's best).
    #[serde(default)]
    pub kernel: socbench_kernels::qmatmul::KernelTier,
    /// CPUs to pin to (`None`: no pinning).
    pub affinity: Option<Vec<u32>>,
    /// Sensor sampling rate (Hz).
    pub sample_hz: f64,
    /// Unmeasured runs before each cell's repetitions.
    pub warmup: usize,
    /// Cool-down gate, when enabled and the device has a thermal sensor.
    pub cooldown: Option<Cooldown>,
    /// File on the device that receives a copy of every event.
    pub events_file: Option<String>,
    /// A file whose appearance asks the agent to stop after the current repetition
    /// (the host's Ctrl-C).
    #[serde(default)]
    pub stop_file: Option<String>,
    /// Measure the perplexity of the built-in quality text once the model is loaded.
    #[serde(default)]
    pub quality: bool,
    /// The device's agent lock (pid and start time of the agent measuring there): the agent
    /// refuses to run while another live agent holds it.
    #[serde(default)]
    pub lock_file: Option<String>,
    /// A file the controller touches every few seconds while it is alive; the agent exits when
    /// it has not been touched for `heartbeat_timeout_s` (the controller is gone).
    #[serde(default)]
    pub heartbeat_file: Option<String>,
    /// See `heartbeat_file`.
    #[serde(default)]
    pub heartbeat_timeout_s: Option<f64>,
    /// The quality gate: the variant's perplexity on the gate text must be within this bound
    /// of f32's before any cell runs (`None`: not checked).
    #[serde(default)]
    pub gate: Option<socbench_kernels::gate::QualityGate>,
    /// `run --require-battery`: before each cell, wait up to this many seconds for the device
    /// to run on its battery; a cell still on external power is skipped with the reason.
    #[serde(default)]
    pub require_battery_s: Option<f64>,
    /// An earlier cell on this device already waited `require_battery_s` in vain: the cells
    /// only check, they do not wait again.
    #[serde(default)]
    pub battery_waited_in_vain: bool,
    /// The cells, in the order to run them.
    pub cells: Vec<Cell>,
}

impl Plan {
    /// The model to load.
    pub fn model_spec(&self) -> ModelSpec {
        if self.model == "synthetic:tiny" {
            ModelSpec::SyntheticTiny
        } else {
            ModelSpec::File(self.model.clone().into())
        }
    }

    /// Size of the model file on the device, when it is a file.
    pub fn model_file_bytes(&self) -> Option<u64> {
        match self.model_spec() {
            ModelSpec::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            ModelSpec::SyntheticTiny => None,
        }
    }
}

/// A measured (or warm-up) run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RepResult {
    /// Cell id.
    pub cell: String,
    /// Repetition number; `None` for a warm-up run.
    pub repetition: Option<usize>,
    /// Start of prefill (agent clock, s).
    pub t_start_s: f64,
    /// First token on the host side (s).
    pub t_first_token_s: f64,
    /// Last token (s).
    pub t_end_s: f64,
    /// Time to first token (s).
    pub ttft_s: f64,
    /// Each decode step after the first token (s).
    pub decode_s: Vec<f64>,
    /// Prompt tokens per sequence.
    pub prompt_tokens: usize,
    /// Sequences.
    pub batch: usize,
    /// Peak resident memory (VmHWM) in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Whether the peak was reset before this run (else it is the process's peak so far).
    pub peak_rss_is_per_rep: bool,
    /// Proportional set size after the run (`/proc/self/smaps_rollup`), bytes.
    #[serde(default)]
    pub pss_bytes: Option<u64>,
    /// Bytes the KV cache held at the end of the run (computed by the runtime).
    #[serde(default)]
    pub kv_cache_bytes: Option<u64>,
    /// The CPUs the threads busy during the run last ran on (sorted; empty where `/proc`
    /// cannot tell), to check a requested pin against.
    #[serde(default)]
    pub ran_on_cpus: Vec<u32>,
    /// Governor and frequency limits per cluster right after the run (a thermal daemon may
    /// have capped `scaling_max_freq` during it).
    #[serde(default)]
    pub freq: FreqConditions,
    /// Android's thermal status (0–6) right after the run.
    #[serde(default)]
    pub thermal_status: Option<f64>,
    /// A sustained session's generations and token times (`None`: one generation).
    #[serde(default)]
    pub session: Option<SessionTrace>,
    /// An adaptive cell's level at the start and its switches (`None`: one level).
    #[serde(default)]
    pub adaptive: Option<crate::adaptive::AdaptiveTrace>,
    /// A sustained session's own cool-down gate: seconds waited before it (`None`: the
    /// cell's gate, in its `cell_start`, is the repetition's).
    #[serde(default)]
    pub cooldown_wait_s: Option<f64>,
    /// The hottest zone when the session started, °C (see `cooldown_wait_s`).
    #[serde(default)]
    pub start_temp_c: Option<f64>,
}

/// What a sustained session ran: its row's `ttft_s` is the first generation's, its `decode_s`
/// every generation's steps in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionTrace {
    /// Generations run back to back, each from the prompt with the KV cache reset.
    pub generations: usize,
    /// When each token (one step of the batch) arrived, on the agent's clock (s).
    pub token_s: Vec<f64>,
}

/// One line of the agent's output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Agent started; its sensors.
    Hello {
        /// Time (s).
        t_s: f64,
        /// Process id on the device.
        pid: u32,
        /// Agent version.
        version: String,
        /// Sensors found, in sample order.
        sensors: Vec<SensorMeta>,
        /// Where sysfs was read.
        sysfs_root: String,
        /// How the agent process runs (read before any pin).
        #[serde(default)]
        process: ProcessConditions,
    },
    /// Model loaded.
    Loaded {
        /// Time (s).
        t_s: f64,
        /// Load and conversion time (s).
        load_s: f64,
        /// Model file size.
        model_file_bytes: Option<u64>,
        /// Resident memory after loading.
        rss_bytes: Option<u64>,
        /// Bytes of weights one decode step streams (see `socbench_kernels::quant`).
        #[serde(default)]
        weight_bytes_per_step: Option<u64>,
        /// Matmul FLOPs per token.
        #[serde(default)]
        matmul_flops_per_token: Option<u64>,
        /// Bytes of the model's weights in memory as they run (computed).
        #[serde(default)]
        weight_bytes_resident: Option<u64>,
        /// The code that runs the products (the `kernel` result column).
        #[serde(default)]
        kernel: String,
    },
    /// A sensor sample.
    Sample {
        /// Time (s).
        t_s: f64,
        /// One value per sensor of `hello`.
        values: Vec<Option<f64>>,
    },
    /// A cell starts (after the cool-down gate).
    CellStart {
        /// Time (s).
        t_s: f64,
        /// Cell id.
        cell: String,
        /// Time spent waiting for the device to cool (s).
        cooldown_wait_s: f64,
        /// Hottest thermal zone at the start (°C).
        start_temp_c: Option<f64>,
        /// Time spent waiting for the device to run on its battery (`--require-battery`), s.
        #[serde(default)]
        battery_wait_s: f64,
        /// Governor and frequency limits per cluster at the start.
        #[serde(default)]
        freq: FreqConditions,
        /// Android's thermal status (0–6) at the start.
        #[serde(default)]
        thermal_status: Option<f64>,
        /// Battery level at the start, %.
        #[serde(default)]
        battery_pct: Option<f64>,
    },
    /// A run finished.
    Rep(RepResult),
    /// A cell could not run (or stopped); the sweep goes on.
    CellFailed {
        /// Time (s).
        t_s: f64,
        /// Cell id.
        cell: String,
        /// Why.
        reason: String,
    },
    /// A cell finished.
    CellEnd {
        /// Time (s).
        t_s: f64,
        /// Cell id.
        cell: String,
        /// Hottest thermal zone at the end (°C).
        end_temp_c: Option<f64>,
        /// Android's thermal status (0–6) at the end.
        #[serde(default)]
        thermal_status: Option<f64>,
    },
    /// The variant's score on the quality gate's text, before any cell.
    Gate {
        /// Time (s).
        t_s: f64,
        /// Perplexity of the gate text.
        perplexity: f64,
        /// Multiple of the f32 model's perplexity.
        ratio: f64,
        /// Whether the variant is measured.
        passed: bool,
    },
    /// A cell is not measured, for a reason that is not a failure (the quality gate).
    CellSkipped {
        /// Time (s).
        t_s: f64,
        /// Cell id.
        cell: String,
        /// Why.
        reason: String,
    },
    /// Perplexity of the built-in quality text for this model variant.
    Quality {
        /// Time (s).
        t_s: f64,
        /// `exp(mean NLL)`.
        perplexity: f64,
        /// Tokens scored.
        tokens: usize,
    },
    /// Stopped early because the stop file appeared.
    Interrupted {
        /// Time (s).
        t_s: f64,
    },
    /// The plan is done.
    Done {
        /// Time (s).
        t_s: f64,
    },
}
