//! The runner: one worker per device, all devices in parallel; per model variant one agent
//! process that streams events back; every finished repetition appended to `results.csv` at
//! once. A device that goes away is waited for (bounded), then its remaining cells are marked
//! `device_lost` and the others carry on; an agent that crashes marks its cell `failed` and is
//! restarted for the rest.

use crate::progress::{DeviceProgress, Progress};
use crate::store::{RESULT_COLUMNS, Store};
use crate::sweep::{PlannedCell, Sweep};
use anyhow::Result;
use serde_json::{Value, json};
use socbench_agent::plan::{Cell, Cooldown, Event, Plan, RepResult};
use socbench_devices::info::{SensorOrigin, abi_from_machine};
use socbench_devices::sensors::SensorMeta;
use socbench_devices::{AdbDevice, Device, DeviceError, DeviceInfo, LocalHost};
use socbench_kernels::quant::packed_format;
use socbench_kernels::roofline::Roofline;
use socbench_reports::stats::trapezoid;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Where a device is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// This machine.
    Local,
    /// A device behind an adb server.
    Adb {
        /// Serial.
        serial: String,
        /// Server `host:port`.
        server: String,
    },
}

impl Target {
    /// Opens the device.
    pub fn open(&self) -> Result<Box<dyn Device>> {
        Ok(match self {
            Self::Local => Box::new(LocalHost),
            Self::Adb { serial, server } => {
                let addr: SocketAddrV4 = server
                    .parse()
                    .map_err(|e| anyhow::anyhow!("adb server {server}: {e}"))?;
                Box::new(AdbDevice::new(serial, addr))
            }
        })
    }
    /// Serial (`local` for the host).
    pub fn serial(&self) -> &str {
        match self {
            Self::Local => "local",
            Self::Adb { serial, .. } => serial,
        }
    }
}

/// What the runner needs besides the sweep.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// Model on the host: a file, or `synthetic:tiny`.
    pub model: String,
    /// How long a lost device is waited for before its cells are marked `device_lost`.
    pub device_wait: Duration,
    /// Set by Ctrl-C.
    pub interrupted: Arc<AtomicBool>,
    /// Bars on a terminal, plain lines elsewhere.
    pub progress: Progress,
    /// Measure each device's roofs before its cells (`probe = true`).
    pub probe: bool,
    /// Roofs measured by an earlier session of this directory, by serial.
    pub known_rooflines: HashMap<String, Value>,
}

/// How one device's sweep ended.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeviceOutcome {
    /// Rows written, by status.
    pub rows: BTreeMap<String, usize>,
    /// Why the device stopped early, if it did.
    pub stopped: Option<String>,
    /// Idle temperature measured before the sweep (°C), when the device has a thermal sensor.
    pub cooldown_baseline_c: Option<f64>,
    /// The device's measured roofs (`socbench-agent probe`), measured once per device and
    /// kept across `--resume`.
    pub roofline: Option<Value>,
    /// What the deployed agent reported of itself (`socbench-agent info`: version, git commit,
    /// ABI, backends).
    pub agent: Option<Value>,
    /// The packed kernels against the portable reference on the device (`socbench-agent
    /// selftest`): the kernel, whether all checks passed, each check's largest error.
    pub kernel_check: Option<Value>,
}

/// Why the packed cells cannot be trusted on a device, from its `selftest` report: `None` when
/// every check passed.
pub fn kernel_check_failure(report: &Value) -> Option<String> {
    if report["ok"].as_bool() != Some(false) {
        return None;
    }
    let failed: Vec<String> = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["max_error"].as_f64() > c["tolerance"].as_f64())
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or("?").to_owned();
            format!(
                "{} {} at {} rows off by {} (allowed {})",
                text("kernel"),
                text("format"),
                c["rows"],
                c["max_error"],
                c["tolerance"]
            )
        })
        .collect();
    Some(format!(
        "the device's quantized kernel disagrees with the portable reference ({}); \
         q8/q4 cells on the CPU backends would measure wrong arithmetic",
        failed.join("; ")
    ))
}

/// A warning when the agent `info` describes was built from another commit than this
/// controller (an agent left from an earlier build measures that build's kernels, while the
/// manifest names this one); `None` when they match or a side was built outside git.
pub fn agent_build_mismatch(info: &Value) -> Option<String> {
    let ours = env!("SOCBENCH_GIT_HASH");
    let theirs = match info["git_hash"].as_str() {
        _ if ours == "unknown" => return None,
        Some(h) if h == ours || h == "unknown" => return None,
        Some(h) => format!("commit {h}"),
        None => "an earlier build that does not report its commit".to_owned(),
    };
    Some(format!(
        "warning: the agent is from {theirs}, socbench commit {ours}: the results measure the \
         agent's build; rebuild both (`cargo build`, or `scripts/build-agent ABI` for a phone)"
    ))
}

/// The agent binary for an ABI: this build's own for the host's ABI, otherwise a cross-built
/// one: `SOCBENCH_AGENT_<ABI>` if set, else the Android (NDK) build, else the static musl build
/// found in the target directory (`scripts/build-agent ABI` makes them).
pub fn agent_for_abi(abi: &str) -> std::result::Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if abi == abi_from_machine(std::env::consts::ARCH) {
        let p = dir.join("socbench-agent");
        return if p.exists() {
            Ok(p)
        } else {
            Err(format!(
                "{} is missing; build it with `cargo build -p socbench-agent` (plain `cargo \
                 build` builds it too)",
                p.display()
            ))
        };
    }
    let var = format!("SOCBENCH_AGENT_{}", abi.replace('-', "_").to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let triples: &[&str] = match abi {
        "arm64-v8a" => &["aarch64-linux-android", "aarch64-unknown-linux-musl"],
        "x86_64" => &["x86_64-linux-android", "x86_64-unknown-linux-musl"],
        other => return Err(format!("no agent build for ABI {other}")),
    };
    // target/<profile>/socbench → target/<triple>/{release,debug}/socbench-agent
    let target_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    for triple in triples {
        for profile in ["release", "debug"] {
            let p = target_dir.join(triple).join(profile).join("socbench-agent");
            if p.exists() {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no socbench-agent for {abi}: build it with `scripts/build-agent {abi}` (static musl; \
         the Android NDK build when ANDROID_NDK_HOME is set), or point {var} at one"
    ))
}

/// Where agents and models live on a phone.
pub const REMOTE_DIR: &str = "/data/local/tmp/socbench";

/// Pushes the agent to [`REMOTE_DIR`] (skipped when the device already has the same file) and
/// makes it executable. Returns its path there and what the push did.
pub fn push_agent(
    dev: &mut Box<dyn Device>,
    agent_local: &Path,
) -> std::result::Result<(String, String), DeviceError> {
    let agent_remote = format!("{REMOTE_DIR}/socbench-agent");
    let o = dev.push(agent_local, &agent_remote)?;
    let chmod = dev.run(&["chmod", "755", &agent_remote], Duration::from_secs(30))?;
    dev.check("chmod", chmod)?;
    Ok((agent_remote, format!("{o:?}")))
}

/// Why an agent build cannot run `backend`, and what would.
fn missing_backend_reason(backend: &str, abi: &str, build: &Value) -> String {
    let triple = format!(
        "{}-{}",
        build["arch"].as_str().unwrap_or("?"),
        build["env"].as_str().unwrap_or("?")
    );
    let mut reason = format!("the {abi} agent ({triple}) was built without {backend}");
    if backend == "wgpu" && build["env"].as_str() == Some("musl") {
        reason.push_str(
            ": a static musl binary cannot load the phone's Vulkan driver; with the Android NDK \
             (ANDROID_NDK_HOME set) `scripts/build-agent arm64-v8a` builds the \
             aarch64-linux-android agent, which can",
        );
    }
    reason
}

/// Cell results are keyed `cell key # repetition`.
pub fn run_id(cell: &PlannedCell, rep: usize) -> String {
    format!("{}#{rep}", cell.key)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or(String::new(), |x| format!("{x}"))
}

/// Sensor samples of one agent run, for the per-repetition metrics.
#[derive(Debug, Default)]
struct Samples {
    metas: Vec<SensorMeta>,
    rows: Vec<(f64, Vec<Option<f64>>)>,
}

impl Samples {
    fn series(&self, i: usize) -> Vec<(f64, f64)> {
        self.rows
            .iter()
            .filter_map(|(t, v)| v.get(i).copied().flatten().map(|x| (*t, x)))
            .collect()
    }
    fn index(&self, name: &str) -> Option<usize> {
        self.metas.iter().position(|m| m.name == name)
    }
}

/// Linear interpolation, clamped to the ends.
fn interp(s: &[(f64, f64)], t: f64) -> Option<f64> {
    let first = s.first()?;
    let last = s.last()?;
    if t <= first.0 {
        return Some(first.1);
    }
    if t >= last.0 {
        return Some(last.1);
    }
    let k = s.partition_point(|p| p.0 <= t);
    let (a, b) = (s[k - 1], s[k]);
    Some(a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0))
}

/// Integral of a gauge over [t0, t1] by the trapezoid rule, with the ends interpolated.
fn integrate(s: &[(f64, f64)], t0: f64, t1: f64) -> Option<f64> {
    let mut pts = vec![(t0, interp(s, t0)?)];
    pts.extend(s.iter().filter(|p| p.0 > t0 && p.0 < t1).copied());
    pts.push((t1, interp(s, t1)?));
    let (ts, vs): (Vec<f64>, Vec<f64>) = pts.into_iter().unzip();
    trapezoid(&ts, &vs)
}

struct Energy {
    joules: f64,
    source: String,
}

fn energy(samples: &Samples, t0: f64, t1: f64, simulated: bool) -> Option<Energy> {
    let label = |s: &str| {
        if simulated {
            format!("{s} (simulated)")
        } else {
            s.to_owned()
        }
    };
    if let Some(i) = samples.index("battery_power_w") {
        let s = samples.series(i);
        if s.len() >= 2 {
            return integrate(&s, t0, t1).map(|j| Energy {
                joules: j,
                source: label("battery"),
            });
        }
    }
    // RAPL package counters: sum of top-level domains' differences.
    let mut total = None;
    for (i, m) in samples.metas.iter().enumerate() {
        if m.name.starts_with("rapl_") && m.name.matches(':').count() <= 1 && m.kind == "counter" {
            let s = samples.series(i);
            if let (Some(a), Some(b)) = (interp(&s, t0), interp(&s, t1))
                && b >= a
                && s.len() >= 2
            {
                *total.get_or_insert(0.0) += b - a;
            }
        }
    }
    total.map(|joules| Energy {
        joules,
        source: label("rapl"),
    })
}

fn window_max(samples: &Samples, prefix: &str, t0: f64, t1: f64) -> Option<f64> {
    samples
        .metas
        .iter()
        .enumerate()
        .filter(|(_, m)| m.name.starts_with(prefix))
        .flat_map(|(i, _)| {
            let s = samples.series(i);
            // The ends, interpolated, count too: a run shorter than a sample period still
            // gets a temperature.
            let ends = [interp(&s, t0), interp(&s, t1)];
            s.into_iter()
                .filter(|(t, _)| *t >= t0 && *t <= t1)
                .map(|(_, v)| v)
                .chain(ends.into_iter().flatten())
                .collect::<Vec<f64>>()
        })
        .reduce(f64::max)
}

/// Whether the fastest core ran below 90 % of the device's top frequency during the window.
fn throttled(samples: &Samples, info: &DeviceInfo, t0: f64, t1: f64) -> Option<bool> {
    let top_mhz = info.clusters.iter().filter_map(|c| c.max_khz).max()? as f64 / 1000.0;
    let idx: Vec<usize> = samples
        .metas
        .iter()
        .enumerate()
        .filter(|(_, m)| m.name.starts_with("cpu") && m.name.ends_with("_freq_mhz"))
        .map(|(i, _)| i)
        .collect();
    if idx.is_empty() {
        return None;
    }
    let mut any = false;
    for (t, v) in &samples.rows {
        if *t < t0 || *t > t1 {
            continue;
        }
        let fastest = idx
            .iter()
            .filter_map(|&i| v.get(i).copied().flatten())
            .reduce(f64::max);
        if let Some(f) = fastest {
            any = true;
            if f < 0.9 * top_mhz {
                return Some(true);
            }
        }
    }
    any.then_some(false)
}

struct CellCtx {
    cooldown_wait_s: f64,
    start_temp_c: Option<f64>,
}

/// Everything the event handler needs for one agent run.
struct AgentRun<'a> {
    store: &'a Store,
    info: &'a DeviceInfo,
    /// The model's file name, as the results record it.
    model: String,
    device: String,
    agent_run: String,
    reps: usize,
    cells: HashMap<String, &'a PlannedCell>,
    samples: Samples,
    model_bytes: Option<u64>,
    /// Weight bytes per decode step and matmul FLOPs per token of the loaded variant.
    traffic: Option<(u64, u64)>,
    /// The device's measured roofs.
    roofline: Option<Roofline>,
    /// Perplexity of the quality text for the loaded variant.
    perplexity: Option<f64>,
    ctx: HashMap<String, CellCtx>,
    pending: Vec<RepResult>,
    /// Cells that ended (CellEnd or CellFailed) in this run.
    finished: HashSet<String>,
    /// Repetitions stored (any status), per cell, across runs.
    stored: HashMap<String, HashSet<usize>>,
    /// Rows written, by status.
    rows: BTreeMap<String, usize>,
    current: Option<String>,
    done: bool,
    interrupted: bool,
    ui: DeviceProgress,
}

impl<'a> AgentRun<'a> {
    fn new(
        store: &'a Store,
        info: &'a DeviceInfo,
        model: &str,
        reps: usize,
        stored: HashMap<String, HashSet<usize>>,
        ui: DeviceProgress,
    ) -> Self {
        Self {
            store,
            info,
            model: socbench_reports::schema::model_name(model),
            device: info.serial.clone(),
            agent_run: String::new(),
            reps,
            cells: HashMap::new(),
            samples: Samples::default(),
            model_bytes: None,
            traffic: None,
            roofline: None,
            perplexity: None,
            ctx: HashMap::new(),
            pending: Vec::new(),
            finished: HashSet::new(),
            stored,
            rows: BTreeMap::new(),
            current: None,
            done: false,
            interrupted: false,
            ui,
        }
    }

    fn row(
        &self,
        cell: &PlannedCell,
        rep: usize,
        status: &str,
        r: Option<&RepResult>,
        note: &str,
    ) -> Vec<String> {
        let mut m: HashMap<&str, String> = HashMap::new();
        let simulated = self.info.sensors == SensorOrigin::Simulated;
        m.insert("run_id", run_id(cell, rep));
        m.insert("session", self.store.session().to_owned());
        m.insert("model", self.model.clone());
        m.insert("device", cell.device.clone());
        m.insert("backend", cell.backend.name().into());
        m.insert("quant", cell.quant.name().into());
        m.insert("threads", cell.threads.to_string());
        m.insert("batch", cell.batch.to_string());
        m.insert(
            "kv_window",
            cell.kv_window.map_or("full".into(), |w| w.to_string()),
        );
        m.insert("prompt_tokens", cell.prompt_tokens.to_string());
        m.insert("gen_tokens", cell.gen_tokens.to_string());
        m.insert("affinity", cell.affinity.clone());
        m.insert("repetition", rep.to_string());
        m.insert("status", status.into());
        m.insert(
            "model_bytes",
            self.model_bytes.map_or(String::new(), |b| b.to_string()),
        );
        let has_device_sensors = self
            .samples
            .metas
            .iter()
            .any(|s| !s.name.starts_with("process_"));
        m.insert(
            "sensors",
            match (has_device_sensors, simulated) {
                (false, _) => "none",
                (true, true) => "simulated",
                (true, false) => "real",
            }
            .into(),
        );
        m.insert("note", note.into());
        if let Some(ctx) = self.ctx.get(&cell.key) {
            m.insert("cooldown_wait_s", format!("{:.3}", ctx.cooldown_wait_s));
            m.insert("start_temp_c", fmt_opt(ctx.start_temp_c));
        }
        if let Some(r) = r {
            let b = r.batch as f64;
            m.insert("ttft_s", format!("{}", r.ttft_s));
            m.insert(
                "prefill_tok_per_s",
                fmt_opt(Some(b * r.prompt_tokens as f64 / r.ttft_s)),
            );
            let total: f64 = r.decode_s.iter().sum();
            if !r.decode_s.is_empty() && total > 0.0 {
                let n = r.decode_s.len() as f64;
                m.insert("decode_tok_per_s", fmt_opt(Some(b * n / total)));
                m.insert("decode_ms_per_token", fmt_opt(Some(total / n * 1e3)));
            }
            m.insert("perplexity", fmt_opt(self.perplexity));
            if let Some((bytes, flops)) = self.traffic {
                m.insert("weight_bytes_per_step", bytes.to_string());
                // The roofs are the CPU's: a GPU cell's figures would compare unlike things.
                if let (Some(roof), true) = (&self.roofline, cell.backend.is_cpu()) {
                    if let (Some(bw), false) = (
                        roof.bandwidth_bytes_per_s(cell.threads),
                        r.decode_s.is_empty() || total <= 0.0,
                    ) {
                        // Every step streams the weights once for the whole batch.
                        let steps_per_s = r.decode_s.len() as f64 / total;
                        m.insert(
                            "decode_bw_fraction",
                            fmt_opt(Some(bytes as f64 * steps_per_s / bw)),
                        );
                    }
                    if let Some(peak) = roof.gemm_flop_per_s(cell.threads) {
                        let tok_per_s = b * r.prompt_tokens as f64 / r.ttft_s;
                        m.insert(
                            "prefill_gemm_fraction",
                            fmt_opt(Some(flops as f64 * tok_per_s / peak)),
                        );
                    }
                }
            }
            m.insert(
                "peak_rss_bytes",
                r.peak_rss_bytes.map_or(String::new(), |v| v.to_string()),
            );
            if let Some(e) = energy(&self.samples, r.t_start_s, r.t_end_s, simulated) {
                let dur = (r.t_end_s - r.t_start_s).max(1e-9);
                m.insert("energy_j", fmt_opt(Some(e.joules)));
                m.insert("avg_power_w", fmt_opt(Some(e.joules / dur)));
                let tokens = (cell.batch * cell.gen_tokens) as f64;
                m.insert("energy_per_token_j", fmt_opt(Some(e.joules / tokens)));
                m.insert("power_source", e.source);
                // The same integral split at the first token: prefill, then decode.
                let mid = r.t_first_token_s.clamp(r.t_start_s, r.t_end_s);
                for (col, a, b) in [
                    ("prefill_energy_j", r.t_start_s, mid),
                    ("decode_energy_j", mid, r.t_end_s),
                ] {
                    if let Some(p) = energy(&self.samples, a, b, simulated) {
                        m.insert(col, fmt_opt(Some(p.joules)));
                    }
                }
            }
            m.insert(
                "max_temp_c",
                fmt_opt(window_max(
                    &self.samples,
                    "thermal_",
                    r.t_start_s,
                    r.t_end_s,
                )),
            );
            m.insert(
                "throttled",
                throttled(&self.samples, self.info, r.t_start_s, r.t_end_s)
                    .map_or(String::new(), |b| b.to_string()),
            );
            if let Some(i) = self.samples.index("battery_charging") {
                let s = self.samples.series(i);
                m.insert(
                    "charging",
                    interp(&s, r.t_start_s).map_or(String::new(), |v| (v > 0.5).to_string()),
                );
            }
        }
        RESULT_COLUMNS
            .iter()
            .map(|c| m.remove(c).unwrap_or_default())
            .collect()
    }

    fn write(
        &mut self,
        cell: &PlannedCell,
        rep: usize,
        status: &str,
        r: Option<&RepResult>,
        note: &str,
    ) {
        let row = self.row(cell, rep, status, r, note);
        if let Err(e) = self.store.append_result(&row) {
            eprintln!("error: writing results.csv: {e:#}");
        }
        *self.rows.entry(status.to_owned()).or_default() += 1;
        self.stored.entry(cell.key.clone()).or_default().insert(rep);
        if status != "ok" {
            // The caller says why, once for the lot.
            self.ui.rep_done(None);
        }
    }

    /// Repetitions of `cell` with no row yet.
    fn missing_reps(&self, cell: &PlannedCell) -> Vec<usize> {
        let have = self.stored.get(&cell.key);
        (0..self.reps)
            .filter(|r| !have.is_some_and(|h| h.contains(r)))
            .collect()
    }

    /// Writes `status` rows for every repetition of `cells` that has none.
    fn mark(&mut self, cells: &[&PlannedCell], status: &str, note: &str) {
        for c in cells {
            for rep in self.missing_reps(c) {
                self.write(c, rep, status, None, note);
            }
        }
    }

    fn flush_pending(&mut self, force: bool) {
        let last_t = self.samples.rows.last().map_or(f64::NEG_INFINITY, |r| r.0);
        let (ready, keep): (Vec<RepResult>, Vec<RepResult>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|r| force || last_t >= r.t_end_s);
        self.pending = keep;
        for r in ready {
            let Some(cell) = self.cells.get(&r.cell).copied() else {
                continue;
            };
            let Some(rep) = r.repetition else { continue };
            self.write(cell, rep, "ok", Some(&r), "");
            let decode = if r.decode_s.is_empty() {
                "n/a".to_owned()
            } else {
                format!(
                    "{:.1} tok/s",
                    r.batch as f64 * r.decode_s.len() as f64 / r.decode_s.iter().sum::<f64>()
                )
            };
            let msg = format!(
                "{} rep {}/{}: TTFT {:.1} ms, decode {decode}",
                describe(cell),
                rep + 1,
                self.reps,
                r.ttft_s * 1e3
            );
            self.ui.rep_done(Some(&msg));
        }
    }

    fn on_line(&mut self, line: &str) {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            // Not an event (a stray print): kept in the log.
            let v = json!({"device": self.device, "agent_run": self.agent_run, "event": "agent_output", "line": line});
            let _ = self.store.append_event(&v.to_string());
            return;
        };
        if let Ok(mut v) = serde_json::from_str::<Value>(line) {
            v["device"] = json!(self.device);
            v["agent_run"] = json!(self.agent_run);
            // The host's clock when the event arrived: places agent runs on one time axis.
            v["host_unix_s"] = json!(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64())
            );
            let _ = self.store.append_event(&v.to_string());
        }
        match event {
            Event::Hello { sensors, .. } => self.samples.metas = sensors,
            Event::Loaded {
                model_file_bytes,
                weight_bytes_per_step,
                matmul_flops_per_token,
                ..
            } => {
                if model_file_bytes.is_some() {
                    self.model_bytes = model_file_bytes;
                }
                self.traffic = weight_bytes_per_step.zip(matmul_flops_per_token);
                self.perplexity = None;
            }
            Event::Quality { perplexity, .. } => self.perplexity = Some(perplexity),
            Event::Sample { t_s, values } => {
                let rows: Vec<[String; 6]> = self
                    .samples
                    .metas
                    .iter()
                    .zip(&values)
                    .filter_map(|(m, v)| {
                        v.map(|v| {
                            [
                                self.device.clone(),
                                self.agent_run.clone(),
                                self.current.clone().unwrap_or_default(),
                                format!("{t_s:.4}"),
                                m.name.clone(),
                                format!("{v}"),
                            ]
                        })
                    })
                    .collect();
                let _ = self.store.append_samples(&rows);
                let hottest = self
                    .samples
                    .metas
                    .iter()
                    .zip(&values)
                    .filter(|(m, _)| m.name.starts_with("thermal_"))
                    .filter_map(|(_, v)| *v)
                    .reduce(f64::max);
                if let Some(t) = hottest {
                    self.ui.temperature(t);
                }
                self.samples.rows.push((t_s, values));
                self.flush_pending(false);
            }
            Event::CellStart {
                cell,
                cooldown_wait_s,
                start_temp_c,
                ..
            } => {
                self.ctx.insert(
                    cell.clone(),
                    CellCtx {
                        cooldown_wait_s,
                        start_temp_c,
                    },
                );
                if let Some(c) = self.cells.get(&cell) {
                    self.ui.cell(&describe(c));
                }
                self.current = Some(cell);
            }
            Event::Rep(r) => {
                if r.repetition.is_some() {
                    self.pending.push(r);
                }
            }
            Event::CellFailed { cell, reason, .. } => {
                self.flush_pending(true);
                if let Some(c) = self.cells.get(&cell).copied() {
                    self.mark(&[c], "failed", &reason);
                    self.ui.log(&format!("{} failed: {reason}", describe(c)));
                }
                self.finished.insert(cell);
                self.current = None;
            }
            Event::CellEnd { cell, .. } => {
                self.flush_pending(true);
                self.finished.insert(cell);
                self.current = None;
            }
            Event::Interrupted { .. } => self.interrupted = true,
            Event::Done { .. } => {
                self.flush_pending(true);
                self.done = true;
            }
        }
    }
}

/// `flex f32 t2 b1 kv=full p32 g16 a=all`.
pub fn describe(c: &PlannedCell) -> String {
    format!(
        "{} {} t{} b{} kv={} p{} g{} a={}",
        c.backend.name(),
        c.quant.name(),
        c.threads,
        c.batch,
        c.kv_window.map_or("full".into(), |w| w.to_string()),
        c.prompt_tokens,
        c.gen_tokens,
        c.affinity
    )
}

/// The host-side directory of a device's plans (and, for the local host, its agent files and
/// stop file): `<out>/.agent/<serial, sanitised>`.
pub fn agent_workdir(out: &Path, serial: &str) -> PathBuf {
    out.join(".agent").join(sanitize(serial))
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable across runs and platforms (the shuffle must be reproducible).
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Seeded Fisher-Yates.
fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut rng = socbench_kernels::load::SplitMix64(seed);
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// Polls the device until it answers again or `limit` passes.
fn wait_for(dev: &mut Box<dyn Device>, limit: Duration, interrupted: &AtomicBool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end && !interrupted.load(Ordering::Relaxed) {
        if dev
            .run(&["true"], Duration::from_secs(5))
            .is_ok_and(|o| o.status == 0)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Runs one device's cells. Device trouble is recorded in the results, never returned.
pub fn run_device(
    target: &Target,
    info: &DeviceInfo,
    cells: &[PlannedCell],
    sweep: &Sweep,
    ctx: &RunContext,
    store: &Store,
    done: &HashMap<String, String>,
) -> DeviceOutcome {
    let serial = target.serial().to_owned();
    // What earlier runs stored: ok/skipped rows are final, others are retried.
    let stored: HashMap<String, HashSet<usize>> = cells
        .iter()
        .map(|c| {
            let have = (0..sweep.repetitions)
                .filter(|&r| {
                    done.get(&run_id(c, r))
                        .is_some_and(|s| s == "ok" || s == "skipped")
                })
                .collect();
            (c.key.clone(), have)
        })
        .collect();
    let to_run: usize = stored
        .values()
        .map(|have| sweep.repetitions.saturating_sub(have.len()))
        .sum();
    let ui = ctx.progress.device(&serial, to_run);
    let log = |msg: &str| ui.log(msg);
    let mut run = AgentRun::new(
        store,
        info,
        &ctx.model,
        sweep.repetitions,
        stored,
        ui.clone(),
    );
    let mut outcome = DeviceOutcome::default();
    let pending_cells: Vec<&PlannedCell> = cells
        .iter()
        .filter(|c| !run.missing_reps(c).is_empty())
        .collect();
    let finish = |run: AgentRun<'_>, mut outcome: DeviceOutcome, stopped: Option<String>| {
        run.ui.finish(stopped.as_deref().unwrap_or("done"));
        outcome.rows = run.rows;
        outcome.stopped = stopped;
        outcome
    };
    if pending_cells.is_empty() {
        log("nothing left to run");
        return finish(run, outcome, None);
    }
    let mut dev = match target.open() {
        Ok(d) => d,
        Err(e) => {
            let note = e.to_string();
            run.mark(&pending_cells, "device_lost", &note);
            return finish(run, outcome, Some(note));
        }
    };
    let is_local = matches!(target, Target::Local);
    let workdir = agent_workdir(store.dir(), &serial);
    let _ = std::fs::create_dir_all(&workdir);
    let remote_dir = if is_local {
        workdir.display().to_string()
    } else {
        REMOTE_DIR.to_owned()
    };
    let agent_local = match agent_for_abi(&info.abi) {
        Ok(p) => p,
        Err(reason) => {
            log(&format!("skipping all cells: {reason}"));
            run.mark(&pending_cells, "skipped", &reason);
            return finish(run, outcome, Some(reason));
        }
    };
    let deploy = |dev: &mut Box<dyn Device>| -> std::result::Result<(String, String), DeviceError> {
        if is_local {
            return Ok((agent_local.display().to_string(), ctx.model.clone()));
        }
        let (agent_remote, how) = push_agent(dev, &agent_local)?;
        log(&format!("agent: {how}"));
        if ctx.model == "synthetic:tiny" {
            return Ok((agent_remote, ctx.model.clone()));
        }
        let name = Path::new(&ctx.model)
            .file_name()
            .map_or("model.gguf".into(), |n| n.to_string_lossy().into_owned());
        let remote = format!("{remote_dir}/models/{name}");
        let o = dev.push(Path::new(&ctx.model), &remote)?;
        log(&format!("model: {o:?}"));
        Ok((agent_remote, remote))
    };
    let (agent, model) = match deploy(&mut dev) {
        Ok(x) => x,
        Err(e) => {
            let note = format!("deploying: {e}");
            log(&note);
            let status = if e.is_disconnect() {
                "device_lost"
            } else {
                "failed"
            };
            run.mark(&pending_cells, status, &note);
            return finish(run, outcome, Some(note));
        }
    };
    // Cells for a backend this agent build lacks (wgpu in the static musl agent) are skipped
    // with the reason, not run into an error each.
    let built = dev
        .run(&[&agent, "info"], Duration::from_secs(60))
        .ok()
        .filter(|o| o.status == 0)
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
    if let Some(note) = built.as_ref().and_then(agent_build_mismatch) {
        log(&note);
    }
    outcome.agent = built.clone();
    // The packed kernels against the portable reference on this CPU: cells that would run
    // them are not measured when they disagree.
    let selftest = dev
        .run(&[&agent, "selftest"], Duration::from_secs(120))
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
    let pending_cells = match selftest.as_ref().and_then(kernel_check_failure) {
        Some(reason) => {
            let (packed, rest): (Vec<&PlannedCell>, Vec<&PlannedCell>) = pending_cells
                .into_iter()
                .partition(|c| packed_format(c.quant, c.backend).is_some());
            log(&format!("skipping {} packed cells: {reason}", packed.len()));
            run.mark(&packed, "skipped", &reason);
            rest
        }
        None => pending_cells,
    };
    outcome.kernel_check = selftest;
    let pending_cells = match &built {
        Some(b) => {
            let has = |name: &str| {
                b["backends"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(name)))
            };
            let (run_now, lacking): (Vec<&PlannedCell>, Vec<&PlannedCell>) = pending_cells
                .into_iter()
                .partition(|c| has(c.backend.name()));
            for backend in lacking.iter().map(|c| c.backend).collect::<BTreeSet<_>>() {
                let these: Vec<&PlannedCell> = lacking
                    .iter()
                    .copied()
                    .filter(|c| c.backend == backend)
                    .collect();
                let reason = missing_backend_reason(backend.name(), &info.abi, b);
                log(&format!(
                    "skipping {} {backend} cells: {reason}",
                    these.len()
                ));
                run.mark(&these, "skipped", &reason);
            }
            if run_now.is_empty() {
                return finish(run, outcome, None);
            }
            run_now
        }
        None => pending_cells,
    };
    // Idle temperature for the cool-down gate, before any cell runs.
    let cooldown = sweep.cooldown.and_then(|(delta, max_wait)| {
        let out = dev
            .run(&[&agent, "sensors"], Duration::from_secs(30))
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let t = v["sensors"]
            .as_array()?
            .iter()
            .zip(v["values"].as_array()?)
            .filter(|(m, _)| {
                m["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("thermal_"))
            })
            .filter_map(|(_, v)| v.as_f64())
            .reduce(f64::max)?;
        log(&format!(
            "idle temperature {t:.1} °C; cool-down gate: within {delta} °C, at most {max_wait} s"
        ));
        Some(Cooldown {
            baseline_c: t,
            delta_c: delta,
            max_wait_s: max_wait,
        })
    });
    outcome.cooldown_baseline_c = cooldown.as_ref().map(|c| c.baseline_c);
    // The roofs, once per device (after the idle baseline: the probe heats the device, and
    // the first cell's cool-down gate waits that off).
    outcome.roofline = match ctx.known_rooflines.get(&serial) {
        Some(r) => Some(r.clone()),
        None if ctx.probe => {
            log("measuring the roofline (triad bandwidth, f32 GEMM)…");
            match dev.run(&[&agent, "probe"], Duration::from_secs(600)) {
                Ok(o) if o.status == 0 => serde_json::from_slice::<Value>(&o.stdout)
                    .ok()
                    .map(|v| v["roofline"].clone()),
                Ok(o) => {
                    log(&format!("probe failed: {}", o.stderr_text().trim()));
                    None
                }
                Err(e) => {
                    log(&format!("probe failed: {e}"));
                    None
                }
            }
        }
        None => None,
    };
    run.roofline = outcome
        .roofline
        .clone()
        .and_then(|v| serde_json::from_value::<Roofline>(v).ok());
    if let Some(r) = &run.roofline {
        let fmt = |pts: &[socbench_kernels::roofline::RoofPoint], unit: &str| {
            pts.iter()
                .map(|p| format!("{}T {:.1} {unit}", p.threads, p.best))
                .collect::<Vec<_>>()
                .join(", ")
        };
        log(&format!(
            "roofline: triad {}; GEMM {}",
            fmt(&r.triad, "GB/s"),
            fmt(&r.gemm, "GFLOP/s")
        ));
    }

    // Model variants in plan order; cells shuffled within each.
    let mut variants: Vec<(String, Vec<&PlannedCell>)> = Vec::new();
    for c in &pending_cells {
        let key = format!(
            "{}|{}|{}|{:?}",
            c.backend.name(),
            c.quant.name(),
            c.threads,
            c.cpus
        );
        match variants.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(c),
            None => variants.push((key, vec![c])),
        }
    }
    let mut completed: HashSet<String> = HashSet::new();
    let mut n_run = 0usize;
    for (vkey, mut vcells) in variants {
        shuffle(&mut vcells, sweep.seed ^ hash(&vkey));
        let mut attempts = 0usize;
        while !vcells.is_empty() {
            if ctx.interrupted.load(Ordering::Relaxed) {
                return finish(run, outcome, Some("interrupted".into()));
            }
            attempts += 1;
            if attempts > vcells.len() + 3 {
                run.mark(&vcells, "failed", "the agent kept stopping early");
                break;
            }
            n_run += 1;
            let agent_run = format!("{}-{n_run}", sanitize(&serial));
            let first = vcells[0];
            let plan = Plan {
                model: model.clone(),
                backend: first.backend,
                quant: first.quant,
                threads: first.threads,
                affinity: first.cpus.clone(),
                sample_hz: sweep.sample_hz,
                warmup: sweep.warmup,
                cooldown: cooldown.clone(),
                events_file: Some(format!("{remote_dir}/events-{agent_run}.jsonl")),
                stop_file: Some(format!("{remote_dir}/STOP")),
                quality: sweep.quality,
                cells: vcells
                    .iter()
                    .map(|c| {
                        let missing = run.missing_reps(c);
                        Cell {
                            id: c.key.clone(),
                            batch: c.batch,
                            kv_window: c.kv_window,
                            prompt_tokens: c.prompt_tokens,
                            gen_tokens: c.gen_tokens,
                            repetitions: sweep.repetitions,
                            skip_reps: (0..sweep.repetitions)
                                .filter(|r| !missing.contains(r))
                                .collect(),
                        }
                    })
                    .collect(),
            };
            let plan_local = workdir.join(format!("plan-{agent_run}.json"));
            let plan_remote = format!("{remote_dir}/plan-{agent_run}.json");
            let staged = std::fs::write(
                &plan_local,
                serde_json::to_vec_pretty(&plan).unwrap_or_default(),
            )
            .map_err(|source| DeviceError::LocalIo {
                path: plan_local.display().to_string(),
                source,
            })
            .and_then(|()| dev.remove(&format!("{remote_dir}/STOP")))
            .and_then(|()| {
                if is_local {
                    Ok(())
                } else {
                    dev.push(&plan_local, &plan_remote).map(drop)
                }
            });
            run.agent_run = agent_run.clone();
            run.cells = vcells.iter().map(|c| (c.key.clone(), *c)).collect();
            run.samples = Samples::default();
            run.model_bytes = std::fs::metadata(&ctx.model).ok().map(|m| m.len());
            run.finished.clear();
            run.current = None;
            run.done = false;
            run.interrupted = false;
            log(&format!(
                "agent run {agent_run}: {} cells of {}",
                vcells.len(),
                describe(first)
            ));
            let result = staged.and_then(|()| {
                let plan_arg = if is_local {
                    plan_local.display().to_string()
                } else {
                    plan_remote.clone()
                };
                dev.run_streaming(
                    &[&agent, "run", &plan_arg],
                    Duration::from_secs(24 * 3600),
                    &mut |l| run.on_line(l),
                )
            });
            run.flush_pending(true);
            let _ = store.flush();
            completed.extend(run.finished.iter().cloned());
            let interrupted = run.interrupted || ctx.interrupted.load(Ordering::Relaxed);
            vcells.retain(|c| !run.finished.contains(&c.key));
            if interrupted {
                return finish(run, outcome, Some("interrupted".into()));
            }
            match result {
                Ok(out) if run.done && out.status == 0 => {}
                Ok(out) => {
                    // The agent died (crash, OOM kill, kill -9): its current cell failed.
                    let signal = if out.status > 128 {
                        format!(" (signal {})", out.status - 128)
                    } else {
                        String::new()
                    };
                    let reason = format!(
                        "agent exited with status {}{signal}: {}",
                        out.status,
                        out.stderr_text().lines().last().unwrap_or("no message")
                    );
                    let failed: Vec<&PlannedCell> = match &run.current {
                        Some(k) => vcells.iter().filter(|c| &c.key == k).copied().collect(),
                        None => vcells.first().copied().into_iter().collect(),
                    };
                    run.mark(&failed, "failed", &reason);
                    log(&format!("{reason}; cell marked failed, continuing"));
                    completed.extend(failed.iter().map(|c| c.key.clone()));
                    vcells.retain(|c| !failed.iter().any(|f| f.key == c.key));
                }
                Err(e) if e.is_disconnect() => {
                    log(&format!(
                        "device lost: {e}; waiting up to {:?}",
                        ctx.device_wait
                    ));
                    if wait_for(&mut dev, ctx.device_wait, &ctx.interrupted) {
                        log("device is back; continuing");
                        continue;
                    }
                    let note = format!("device lost: {e}");
                    let rest: Vec<&PlannedCell> = pending_cells
                        .iter()
                        .filter(|c| !completed.contains(&c.key))
                        .copied()
                        .collect();
                    run.mark(&rest, "device_lost", &note);
                    return finish(run, outcome, Some(note));
                }
                Err(e) => {
                    let note = format!("running the agent: {e}");
                    log(&note);
                    run.mark(&vcells, "failed", &note);
                    completed.extend(vcells.iter().map(|c| c.key.clone()));
                    vcells.clear();
                }
            }
        }
    }
    finish(run, outcome, None)
}

/// The JSON the manifest keeps for a device.
pub fn device_manifest(
    target: &Target,
    info: &DeviceInfo,
    cells: usize,
    outcome: Option<&DeviceOutcome>,
) -> Value {
    json!({"target": target, "info": info, "cells": cells, "outcome": outcome})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_from_another_commit_is_reported() {
        let ours = env!("SOCBENCH_GIT_HASH");
        let same = json!({"version": "0.1.0", "git_hash": ours});
        let other = json!({"version": "0.1.0", "git_hash": "0123456789ab"});
        let older = json!({"version": "0.1.0"});
        assert_eq!(agent_build_mismatch(&same), None);
        assert_eq!(agent_build_mismatch(&json!({"git_hash": "unknown"})), None);
        if ours == "unknown" {
            // Built outside git: nothing to compare against.
            assert_eq!(agent_build_mismatch(&other), None);
            return;
        }
        let note = agent_build_mismatch(&other).expect("a different commit is reported");
        assert!(
            note.contains("0123456789ab") && note.contains(ours),
            "{note}"
        );
        let note = agent_build_mismatch(&older).expect("an agent without a commit is reported");
        assert!(note.contains("does not report its commit"), "{note}");
    }

    #[test]
    fn a_failed_kernel_check_names_the_kernel_and_the_error() {
        let check = |max_error: f64| json!({"kernel": "neon", "format": "q4_1", "rows": 3, "max_error": max_error, "tolerance": 1e-4});
        let passed = json!({"ok": true, "checks": [check(0.0)]});
        assert_eq!(kernel_check_failure(&passed), None);
        // An agent without the subcommand gives no report: nothing is skipped for it.
        assert_eq!(kernel_check_failure(&json!(null)), None);
        let failed = json!({"ok": false, "checks": [check(0.0), check(0.5)]});
        let reason = kernel_check_failure(&failed).expect("a failed check is reported");
        assert!(
            reason.contains("neon q4_1 at 3 rows off by 0.5"),
            "{reason}"
        );
    }

    #[test]
    fn this_hosts_kernels_pass_the_self_check() {
        let checks = socbench_kernels::qmatmul::self_check();
        assert!(checks.len() >= 6, "{checks:?}");
        let report = json!({"ok": checks.iter().all(|c| c.ok()), "checks": checks});
        assert_eq!(kernel_check_failure(&report), None, "{report}");
    }
}
