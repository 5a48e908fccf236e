//! The result directory written by `socbench run`, and its reader.
//!
//! A directory holds `results.csv` (one row per measured repetition, append-only),
//! `samples.csv` (every sensor sample, long format), `events.jsonl` (what the agents said) and
//! `manifest.json` (plan, device infos, versions). Only `results.csv` is required here; the
//! others add timelines, battery capacity and provenance when present.
//!
//! Rows are read by column name, so a file with extra or reordered columns still reads. A later
//! row for the same `run_id` supersedes an earlier `failed`/`device_lost` one (that is how
//! `--resume` retries them); an `ok` row is final. Every row stays in the file; the reader keeps
//! the count of superseded ones.

use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Columns of `results.csv`, in the order `socbench run` writes them.
pub const RESULT_COLUMNS: [&str; 37] = [
    "run_id",
    "session",
    "model",
    "device",
    "backend",
    "quant",
    "threads",
    "batch",
    "kv_window",
    "prompt_tokens",
    "gen_tokens",
    "affinity",
    "repetition",
    "status",
    "ttft_s",
    "prefill_tok_per_s",
    "decode_tok_per_s",
    "decode_ms_per_token",
    "peak_rss_bytes",
    "model_bytes",
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
    "sensors",
    "note",
];

/// Columns of `samples.csv`.
pub const SAMPLE_COLUMNS: [&str; 6] = ["device", "agent_run", "cell", "t_s", "sensor", "value"];

/// Columns that identify a cell, besides the model (all required in a results file, with
/// `run_id`, `repetition` and `status`).
pub const CELL_COLUMNS: [&str; 9] = [
    "device",
    "backend",
    "quant",
    "threads",
    "batch",
    "kv_window",
    "prompt_tokens",
    "gen_tokens",
    "affinity",
];

/// Quotes a CSV field when needed (RFC 4180).
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Splits one CSV line (no embedded newlines: socbench never writes them unquoted).
pub fn csv_split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
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

/// The outcome of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured.
    Ok,
    /// The agent or the model failed (the note says why).
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

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
}

impl Metric {
    /// Every metric, in report order.
    pub const ALL: [Metric; 19] = [
        Metric::ModelBytes,
        Metric::PeakRssBytes,
        Metric::TtftS,
        Metric::DecodeMsPerToken,
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
        }
    }

    /// Whether a larger value is better (`None`: neither, e.g. a temperature at the start).
    pub fn higher_is_better(self) -> Option<bool> {
        match self {
            Metric::PrefillTokPerS
            | Metric::DecodeTokPerS
            | Metric::DecodeBwFraction
            | Metric::PrefillGemmFraction => Some(true),
            Metric::TtftS
            | Metric::DecodeMsPerToken
            | Metric::PeakRssBytes
            | Metric::ModelBytes
            | Metric::WeightBytesPerStep
            | Metric::Perplexity
            | Metric::AvgPowerW
            | Metric::EnergyJ
            | Metric::PrefillEnergyJ
            | Metric::DecodeEnergyJ
            | Metric::EnergyPerTokenJ
            | Metric::MaxTempC
            | Metric::Battery30MinPct => Some(false),
            Metric::StartTempC | Metric::CooldownWaitS => None,
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
            Metric::TtftS | Metric::CooldownWaitS => {
                if v.abs() < 1.0 {
                    format!("{} ms", sig3(v * 1e3))
                } else {
                    format!("{} s", sig3(v))
                }
            }
            Metric::PrefillTokPerS | Metric::DecodeTokPerS => sig3(v),
            Metric::DecodeMsPerToken => format!("{} ms", sig3(v)),
            Metric::PeakRssBytes | Metric::ModelBytes | Metric::WeightBytesPerStep => {
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
    /// `flex`, `ndarray` or `wgpu`.
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
}

impl CellKey {
    /// The KV window as written: a number, or `full`.
    pub fn kv_label(&self) -> String {
        self.kv_window.map_or("full".into(), |w| w.to_string())
    }

    /// `flex q8 t2 b1 kv=full p32 g16 a=all` (without the device).
    pub fn describe(&self) -> String {
        format!(
            "{} {} t{} b{} kv={} p{} g{} a={}",
            self.backend,
            self.quant,
            self.threads,
            self.batch,
            self.kv_label(),
            self.prompt_tokens,
            self.gen_tokens,
            self.affinity
        )
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
    pub values: [Option<f64>; Metric::ALL.len()],
    /// Whether the fastest core ran below 90 % of its top frequency during the repetition.
    pub throttled: Option<bool>,
    /// Whether the device was charging when the repetition started.
    pub charging: Option<bool>,
    /// Where energy came from: `battery`, `rapl`, with `(simulated)` for the virtual device.
    pub power_source: String,
    /// `real`, `simulated` or `none`.
    pub sensors: String,
    /// Why a repetition failed or was skipped.
    pub note: String,
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
    /// Cells run: `(cell key text, start t_s, end t_s, failed)`.
    pub cells: Vec<(String, f64, Option<f64>, bool)>,
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
            let text = read(&samples)?;
            let mut lines = text.lines().enumerate();
            let header = lines.next().map(|(_, h)| csv_split(h)).unwrap_or_default();
            let col = |name: &str| header.iter().position(|c| c == name);
            let cols = SAMPLE_COLUMNS.map(col);
            let [Some(cd), Some(ca), _, Some(ct), Some(cs), Some(cv)] = cols else {
                return Err(SchemaError::invalid(
                    &samples,
                    1,
                    format!("header must name the columns {}", SAMPLE_COLUMNS.join(",")),
                ));
            };
            let total = text.lines().count();
            for (i, line) in lines {
                if line.trim().is_empty() {
                    continue;
                }
                let f = csv_split(line);
                let parsed = (|| {
                    let t: f64 = f.get(ct)?.parse().ok()?;
                    let v: f64 = f.get(cv)?.parse().ok()?;
                    Some((f.get(cd)?, f.get(ca)?, t, f.get(cs)?, v))
                })();
                match parsed {
                    Some((d, a, t, s, v)) => {
                        let k = slot(&mut runs, d, a);
                        runs[k].sensors.entry(s.clone()).or_default().push((t, v));
                    }
                    None if i + 1 == total => self.warnings.push(format!(
                        "{}:{}: incomplete last row ignored",
                        samples.display(),
                        i + 1
                    )),
                    None => {
                        return Err(SchemaError::invalid(
                            &samples,
                            i + 1,
                            "expected device,agent_run,cell,t_s,sensor,value with numeric t_s and value",
                        ));
                    }
                }
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
        let text = read(path)?;
        let mut lines = text.lines().enumerate();
        let Some((_, header)) = lines.next() else {
            return Err(SchemaError::invalid(path, 1, "empty file: no header row"));
        };
        let header = csv_split(header);
        let col: HashMap<&str, usize> = header
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let missing: Vec<&str> = ["run_id"]
            .iter()
            .chain(&CELL_COLUMNS)
            .chain(&["repetition", "status"])
            .copied()
            .filter(|c| !col.contains_key(c))
            .collect();
        if !missing.is_empty() {
            return Err(SchemaError::invalid(
                path,
                1,
                format!(
                    "not a socbench results file: missing column(s) {}",
                    missing.join(", ")
                ),
            ));
        }
        let total = text.lines().count();
        // Index of the effective row per run id.
        let mut effective: HashMap<String, usize> = HashMap::new();
        let first = self.records.len();
        for (i, line) in lines {
            let lineno = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let f = csv_split(line);
            if f.len() < header.len() {
                if lineno == total {
                    // A torn last line (power cut mid-write): the run is redone on resume.
                    self.warnings.push(format!(
                        "{}:{lineno}: incomplete last row ignored",
                        path.display()
                    ));
                    continue;
                }
                return Err(SchemaError::invalid(
                    path,
                    lineno,
                    format!("{} fields, expected {}", f.len(), header.len()),
                ));
            }
            let row = Row { col: &col, f: &f };
            let mut rec = parse_record(&row, path, lineno, source, fallback_session)?;
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
        debug_assert!(self.records[first..].iter().all(|r| r.source == source));
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

/// One row, read by column name.
struct Row<'a> {
    col: &'a HashMap<&'a str, usize>,
    f: &'a [String],
}

impl Row<'_> {
    fn get(&self, c: &str) -> &str {
        self.col.get(c).map_or("", |&i| self.f[i].as_str())
    }
}

fn parse_record(
    row: &Row<'_>,
    path: &Path,
    line: usize,
    source: usize,
    fallback_session: &str,
) -> Result<Record, SchemaError> {
    let get = |c: &str| row.get(c);
    let bad = |column: &str, valid: &str| {
        SchemaError::invalid(
            path,
            line,
            format!("column {column}: `{}` is not valid ({valid})", get(column)),
        )
    };
    let count = |column: &str| -> Result<u32, SchemaError> {
        get(column)
            .parse()
            .map_err(|_| bad(column, "a whole number"))
    };
    let flag = |column: &str| -> Result<Option<bool>, SchemaError> {
        match get(column) {
            "" => Ok(None),
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(bad(column, "true, false, or empty when unknown")),
        }
    };
    let status = Status::parse(get("status")).ok_or_else(|| {
        bad(
            "status",
            &format!("one of {}", Status::ALL.map(Status::name).join(", ")),
        )
    })?;
    let kv_window = match get("kv_window") {
        "full" | "" => None,
        s => Some(
            s.parse()
                .map_err(|_| bad("kv_window", "a number of positions, or full"))?,
        ),
    };
    let mut values = [None; Metric::ALL.len()];
    for m in Metric::ALL {
        if m == Metric::Battery30MinPct {
            continue;
        }
        let s = get(m.name());
        if s.is_empty() {
            continue;
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => values[m.index()] = Some(v),
            _ => return Err(bad(m.name(), "a finite number, or empty when not measured")),
        }
    }
    let run_id = get("run_id").to_owned();
    if run_id.is_empty() {
        return Err(bad("run_id", "a non-empty run id"));
    }
    let session = match get("session") {
        "" => fallback_session.to_owned(),
        s => s.to_owned(),
    };
    Ok(Record {
        run_id,
        session,
        key: CellKey {
            device: get("device").to_owned(),
            model: model_name(get("model")),
            backend: get("backend").to_owned(),
            quant: get("quant").to_owned(),
            threads: count("threads")?,
            batch: count("batch")?,
            kv_window,
            prompt_tokens: count("prompt_tokens")?,
            gen_tokens: count("gen_tokens")?,
            affinity: get("affinity").to_owned(),
        },
        repetition: count("repetition")?,
        status,
        values,
        throttled: flag("throttled")?,
        charging: flag("charging")?,
        power_source: get("power_source").to_owned(),
        sensors: get("sensors").to_owned(),
        note: get("note").to_owned(),
        source,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip() {
        let fields = ["a", "b,c", "say \"hi\"", ""];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        assert_eq!(csv_split(&line.join(",")), fields);
    }

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
