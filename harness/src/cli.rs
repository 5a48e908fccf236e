//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use socbench_kernels::backend::BackendKind;
use socbench_kernels::load::ModelSpec;
use socbench_kernels::quant::QuantLevel;

/// Benchmark and profile LLM inference on mobile SoCs.
#[derive(Debug, Parser)]
#[command(name = "socbench", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate text with the model and report its timings.
    Generate(GenerateArgs),
    /// Score a continuation under teacher forcing (argmax, margin and log-probability per
    /// position, total NLL and perplexity).
    Score(ScoreArgs),
    /// Download SmolLM2-135M-Instruct (Q4_1 GGUF) into the cache and verify its checksum.
    FetchModel(FetchArgs),
    /// Run a benchmark sweep on the local host and/or devices, storing every result.
    Run(Box<RunArgs>),
    /// Write the commented default sweep file.
    Init(InitArgs),
    /// Render result directories (merged) as a self-contained HTML report, or summarise them
    /// as CSV, JSON, Markdown or JUnit.
    Report(ReportArgs),
    /// Compare NEW results against BASE; exit 1 on a significant regression, 0 otherwise, 2 on
    /// bad input.
    Compare(CompareArgs),
    /// List the local host and every device of every configured adb server, with state and
    /// details (ABI, CPU clusters, RAM, sensors real or simulated).
    Devices(DevicesArgs),
    /// Serve a virtual Android device on loopback for `adb connect` (runs until killed).
    VirtualDevice(VirtualDeviceArgs),
    /// The on-device agent (what `socbench run` starts on the local host; on a phone the same
    /// program runs as `socbench-agent`): `socbench agent run PLAN | sensors | info | selftest
    /// | probe | stop-stale LOCK`.
    #[command(disable_help_flag = true)]
    Agent(AgentArgs),
    /// Measure each device's roofs through its agent: memory bandwidth (STREAM triad) and f32
    /// GEMM throughput, per thread count.
    Probe(ProbeArgs),
}

/// `socbench agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// `socbench probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// `local`, `all`, or an adb serial; repeatable.
    #[arg(
        long = "device",
        value_name = "SERIAL|local|all",
        default_value = "all"
    )]
    pub devices: Vec<String>,
    /// adb servers to ask.
    #[command(flatten)]
    pub servers: AdbServerArgs,
    /// Thread counts (comma list; default: powers of two up to the device's CPUs, and that
    /// count).
    #[arg(long, value_name = "LIST")]
    pub threads: Option<String>,
    /// Smaller arrays and shorter repetitions (emulated devices, smoke tests).
    #[arg(long)]
    pub quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where to find adb servers.
#[derive(Debug, Args, Clone)]
pub struct AdbServerArgs {
    /// An adb server as HOST:PORT; repeat for several (device farms). Default: 127.0.0.1 on
    /// `ANDROID_ADB_SERVER_PORT`, else 5037.
    #[arg(long = "adb-server", value_name = "HOST:PORT", value_parser = parse_adb_server)]
    pub adb_servers: Vec<std::net::SocketAddrV4>,
}

impl AdbServerArgs {
    /// The configured servers, or the default one.
    pub fn servers(&self) -> Vec<std::net::SocketAddrV4> {
        if self.adb_servers.is_empty() {
            vec![socbench_devices::adb::default_server()]
        } else {
            self.adb_servers.clone()
        }
    }
}

fn parse_adb_server(s: &str) -> Result<std::net::SocketAddrV4, String> {
    socbench_devices::adb::parse_server(s)
}

/// `socbench report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Result directories written by `socbench run` (several are merged, e.g. one per adb
    /// server of a device farm).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<std::path::PathBuf>,
    /// `html` (default), or a summary: `csv`, `json`, `md`, `junit`.
    #[arg(long, default_value = "html")]
    pub format: String,
    /// Output file. Default: `report.html` in the first DIR for HTML, standard output for the
    /// summaries.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

/// `socbench compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Baseline result directory.
    #[arg(value_name = "BASE")]
    pub base: std::path::PathBuf,
    /// Result directory to check against it.
    #[arg(value_name = "NEW")]
    pub new: std::path::PathBuf,
    /// Changes smaller than this are noise: a change counts only when its 95 % confidence
    /// interval lies entirely beyond it (`5%` or `0.05`).
    #[arg(long, default_value = "5%")]
    pub threshold: String,
    /// Metrics to compare, comma-separated (default: decode_tok_per_s,ttft_s).
    #[arg(long, value_name = "LIST")]
    pub metric: Option<String>,
    /// `md` (default), `json`, `junit` or `html`.
    #[arg(long, default_value = "md")]
    pub format: String,
    /// Output file (default: standard output).
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

/// `socbench devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// adb servers to ask.
    #[command(flatten)]
    pub servers: AdbServerArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `socbench virtual-device`.
#[derive(Debug, Args)]
pub struct VirtualDeviceArgs {
    /// Loopback port (0: a free one). 5555–5585 are refused: adb servers attach those on
    /// their own.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Model name it reports (`ro.product.model`).
    #[arg(long, default_value = "socbench virtual phone")]
    pub name: String,
    /// ABI it reports.
    #[arg(long, default_value = "x86_64", value_parser = ["x86_64", "arm64-v8a"])]
    pub abi: String,
    /// Directory for its file system (default: a new temporary directory, removed on exit).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Thermal time constant of the simulated SoC in seconds (smaller heats and cools faster).
    #[arg(long, default_value_t = 20.0)]
    pub thermal_tau: f64,
    /// Start on a USB cable: `usb/online` 1, the battery charging (its counters then describe
    /// the charger). Plug or unplug while it runs by writing `usb` or `battery` into the file
    /// `power` of its state directory.
    #[arg(long)]
    pub usb_powered: bool,
    /// Play a phone that ignores thread pinning: an agent asked to pin its threads is moved to
    /// the other CPUs instead (a test hook; the rows must say the pin did not take).
    #[arg(long)]
    pub ignore_affinity: bool,
    /// `open`: sysfs readable, as on an engineering build. `locked`: reading its battery and
    /// thermal sysfs nodes fails with `Permission denied` (as for `adb shell` on most recent
    /// phones), so sensors come from `dumpsys battery` / `dumpsys thermalservice` (Linux
    /// Landlock enforces it, root included). Both answer `dumpsys` from the simulation.
    #[arg(long, default_value = "open", value_parser = ["open", "locked"])]
    pub profile: String,
}

/// KV-cache window: a number of positions, or `full`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvWindow(pub Option<usize>);

impl std::str::FromStr for KvWindow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "full" {
            return Ok(Self(None));
        }
        match s.parse::<usize>() {
            Ok(0) | Err(_) => Err(format!(
                "invalid KV window {s:?} (valid: a positive number of positions, or `full`)"
            )),
            Ok(w) => Ok(Self(Some(w))),
        }
    }
}

impl std::fmt::Display for KvWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("full"),
            Some(w) => write!(f, "{w}"),
        }
    }
}

/// The knobs every model command shares.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// GGUF model file, or `synthetic:tiny`. Default: the model `socbench fetch-model` fetched.
    #[arg(long)]
    pub model: Option<ModelSpec>,
    /// Burn backend: ndarray, flex or wgpu.
    #[arg(long, default_value = "flex")]
    pub backend: BackendKind,
    /// Weight quantization: f32, f16, q8, q4, q4_0, q8-tensor, q4-tensor; for llama.cpp also
    /// `file` (the model as stored) and its own formats (q4_k_m, q6_k …).
    #[arg(long, default_value = "f32")]
    pub quant: QuantLevel,
    /// CPU threads the backend may use. Default: all available cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Independent sequences decoded together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Keep only the last W positions in the KV cache (sliding window), or `full`.
    #[arg(long, default_value = "full")]
    pub kv_window: KvWindow,
    /// The packed-kernel variant of the q8/q4/q4_0 products on the CPU backends: `auto` (this
    /// CPU's best), `portable`, `x86-avx2`, `x86-avx512vnni`, `arm-neon`, `arm-dotprod` or
    /// `arm-i8mm`; one this CPU lacks is refused before the model loads.
    #[arg(long, default_value = "auto")]
    pub kernel: socbench_kernels::qmatmul::KernelTier,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `socbench generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Model knobs.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt. Special tokens such as `<|im_start|>` are recognised.
    #[arg(long)]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(short = 'n', long = "tokens", default_value_t = 32)]
    pub tokens: usize,
    /// Sample with this seed (temperature 0.8, top-k 40 unless given) instead of greedy.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Softmax temperature when sampling; 0 means greedy.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Sample among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Stop at the end-of-sequence token instead of always generating --tokens.
    #[arg(long)]
    pub stop_at_eos: bool,
    /// Runtime: burn (socbench's model) or llama.cpp (the reference, greedy only; the level
    /// maps to llama.cpp's format: f32→F32, f16→F16, q8→Q8_0, q4→Q4_1).
    #[arg(long, default_value = "burn")]
    pub runtime: socbench_kernels::runtime::RuntimeKind,
}

/// `socbench score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Model knobs.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt the continuation follows.
    #[arg(long, required_unless_present_any = ["text", "gate"])]
    pub prompt: Option<String>,
    /// The continuation, as text.
    #[arg(
        long,
        conflicts_with = "continuation_ids",
        required_unless_present_any = ["continuation_ids", "text", "gate"]
    )]
    pub continuation: Option<String>,
    /// Instead: the perplexity of the built-in quality text (≈750 tokens, 128-token chunks),
    /// and, for a quantized level, of f32 on the same backend beside it.
    #[arg(long, conflicts_with_all = ["prompt", "continuation", "continuation_ids"])]
    pub text: bool,
    /// Instead: the quality gate a sweep applies before measuring this variant (the first 64
    /// tokens of the quality text, perplexity against f32 on the host's CPU); exits 1 when the
    /// variant would be refused.
    #[arg(long, conflicts_with_all = ["prompt", "continuation", "continuation_ids", "text"])]
    pub gate: bool,
    /// With `--gate`: the bound, as a multiple of f32's perplexity (a sweep's `quality_gate`).
    #[arg(long, requires = "gate", default_value_t = socbench_kernels::gate::DEFAULT_MAX_RATIO)]
    pub max_ratio: f64,
    /// The continuation, as token ids separated by spaces or commas.
    #[arg(long)]
    pub continuation_ids: Option<String>,
}

/// `socbench fetch-model`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Print only the model's path.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `socbench init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write it.
    #[arg(default_value = "socbench.toml")]
    pub path: std::path::PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `socbench run`. Axis flags take comma lists and replace that axis of the sweep file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Sweep file (default: the embedded one; `socbench init` writes it out).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Model: a GGUF path or `synthetic:tiny` (default: SmolLM2-135M-Instruct, fetched).
    #[arg(long)]
    pub model: Option<String>,
    /// Devices: `local`, `all`, or adb serials (repeatable or comma-separated).
    #[arg(long = "device", value_delimiter = ',')]
    pub devices: Vec<String>,
    /// adb servers.
    #[command(flatten)]
    pub servers: AdbServerArgs,
    /// Runtimes (comma list): burn (socbench's model), llama.cpp (the reference, on the same
    /// GGUF file).
    #[arg(long)]
    pub runtime: Option<String>,
    /// Backends (comma list): flex, ndarray, wgpu.
    #[arg(long)]
    pub backend: Option<String>,
    /// Quantization levels (comma list).
    #[arg(long)]
    pub quant: Option<String>,
    /// Thread counts (comma list; `cores` = all CPUs of the device or pinned cluster).
    #[arg(long)]
    pub threads: Option<String>,
    /// Batch sizes (comma list).
    #[arg(long)]
    pub batch: Option<String>,
    /// KV windows (comma list; `full`).
    #[arg(long = "kv-window")]
    pub kv_window: Option<String>,
    /// Prompt lengths in tokens (comma list).
    #[arg(long = "prompt-tokens")]
    pub prompt_tokens: Option<String>,
    /// Generated tokens (comma list).
    #[arg(long = "gen-tokens")]
    pub gen_tokens: Option<String>,
    /// Affinities (comma list of all, big, little, mid; CPU lists use `+`: `0+1`, or `0-3`).
    #[arg(long)]
    pub affinity: Option<String>,
    /// Token pacing: an idle gap after every generated token but the last, ms (comma list;
    /// 0: none; at most 10000).
    #[arg(long = "pacing-ms")]
    pub pacing_ms: Option<String>,
    /// Performance modes (comma list of `default`, `fixed`: Android 11+'s fixed-performance
    /// mode on during the cell).
    #[arg(long = "perf-mode")]
    pub perf_mode: Option<String>,
    /// Packed-kernel variants of the q8/q4/q4_0 products on the CPU backends (comma list of
    /// `auto`, `portable`, `x86-avx2`, `x86-avx512vnni`, `arm-neon`, `arm-dotprod`,
    /// `arm-i8mm`): one device measures each tier it has; a tier it lacks is skipped with the
    /// reason (refused on this host).
    #[arg(long)]
    pub kernel: Option<String>,
    /// Sustained sessions: each repetition generates back to back from the prompt for this
    /// many seconds (comma list; 0: off; at most 3600).
    #[arg(long = "duration-s")]
    pub duration_s: Option<String>,
    /// Adaptive precision (comma list of `off` or `FROM>TO@CELSIUS`, e.g. `q8>q4@45`): hold
    /// both levels loaded, run FROM until the hottest thermal zone reaches CELSIUS, then TO.
    #[arg(long)]
    pub adaptive: Option<String>,
    /// LoRA adapters on the attention projections (comma list of `none`, `unmerged`: the
    /// low-rank products added every step, `merged`: folded into the weights before
    /// quantization).
    #[arg(long = "lora-mode")]
    pub lora_mode: Option<String>,
    /// LoRA ranks (comma list, 1 to 256; with `--lora`, the file's rank).
    #[arg(long = "lora-rank")]
    pub lora_rank: Option<String>,
    /// A PEFT adapter (`adapter_model.safetensors`; `lora_alpha` and `r` from the
    /// `adapter_config.json` beside it) instead of seeded synthetic adapters.
    #[arg(long = "lora", value_name = "FILE")]
    pub lora_file: Option<std::path::PathBuf>,
    /// Measured repetitions per cell.
    #[arg(long)]
    pub repetitions: Option<usize>,
    /// Unmeasured warm-up runs per cell.
    #[arg(long)]
    pub warmup: Option<usize>,
    /// Sensor sampling rate (Hz).
    #[arg(long = "sample-hz")]
    pub sample_hz: Option<f64>,
    /// Disable the cool-down gate.
    #[arg(long = "no-cooldown")]
    pub no_cooldown: bool,
    /// Skip the roofline probe (triad bandwidth and GEMM) before each device's cells.
    #[arg(long = "no-probe")]
    pub no_probe: bool,
    /// Score the built-in quality text's perplexity once per model variant (`quality = true`).
    #[arg(long)]
    pub quality: bool,
    /// Do not score it (`quality = false`; the default sweep scores it): on an emulated
    /// device its ≈750 tokens take minutes.
    #[arg(long = "no-quality", conflicts_with = "quality")]
    pub no_quality: bool,
    /// The quality gate's bound (`quality_gate`): a model variant whose perplexity on a
    /// 64-token text is more than RATIO times the f32 model's is skipped with the figures;
    /// 0 measures every variant. Default 1.5.
    #[arg(long, value_name = "RATIO", value_parser = parse_quality_gate)]
    pub quality_gate: Option<f64>,
    /// Output directory (default: `socbench-results/<UTC time>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
    /// Continue the sweep stored in DIR: completed repetitions are skipped, failed and lost
    /// ones run again. The sweep and devices come from DIR's manifest.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "out"])]
    pub resume: Option<std::path::PathBuf>,
    /// Print the plan and its size, run nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Seconds to wait for a device that disconnected before marking its cells `device_lost`.
    #[arg(long = "device-wait", default_value_t = 30.0)]
    pub device_wait: f64,
    /// Seconds an agent may show no progress (no event but sensor samples) before it is
    /// declared hung, killed, and its cell marked failed, plus the silence allowed by design:
    /// the longest waits before a cell (cool-down gate, `--battery-wait`) and, in the cell
    /// running, a paced repetition's gaps and a sustained session's length. Default: five
    /// times the
    /// longest repetition seen on the device (at least 300) plus those waits.
    #[arg(long = "hang-timeout", value_name = "SECONDS")]
    pub hang_timeout: Option<f64>,
    /// Before each cell, wait until the device runs on its battery (no USB, AC or wireless
    /// supply online), because battery energy on a cable describes the charger. A cell still on
    /// external power after `--battery-wait` seconds is skipped with the reason. Unplug the
    /// phone and use wireless debugging (`adb connect PHONE:PORT`).
    #[arg(long = "require-battery")]
    pub require_battery: bool,
    /// With `--require-battery`: the longest wait per cell, seconds.
    #[arg(
        long = "battery-wait",
        value_name = "SECONDS",
        default_value_t = 600.0,
        requires = "require_battery"
    )]
    pub battery_wait: f64,
}

fn parse_quality_gate(s: &str) -> Result<f64, String> {
    let x: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number (valid: a ratio of at least 1, or 0)"))?;
    crate::sweep::axis::quality_gate(x)
}
