//! The event → row state machine: what one device's agents say ([`Event`]s, one JSON line
//! each) becomes typed rows in the store ([`ResultRow`]s and [`SampleRow`]s). A repetition's
//! row waits until the sensors have been sampled past its end, so its energy and temperature
//! cover the whole of it.

use super::{PlannedCell, describe, run_id};
use crate::progress::DeviceProgress;
use crate::store::{Store, Stored};
use serde_json::{Value, json};
use socbench_agent::plan::{Event, RepResult};
use socbench_devices::DeviceInfo;
use socbench_devices::conditions::ProcessConditions;
use socbench_devices::info::SensorOrigin;
use socbench_kernels::roofline::Roofline;
use socbench_reports::derive;
use socbench_reports::row::{ResultRow, SampleRow, Status};
use socbench_reports::schema::{CellKey, Metric};
use std::collections::{BTreeMap, HashMap, HashSet};

use super::conditions::{self, CellConditions, pin_not_taken};
use super::samples::Samples;

struct CellCtx {
    cooldown_wait_s: f64,
    start_temp_c: Option<f64>,
    conditions: CellConditions,
}

/// Everything the event handler needs for one device's agent runs.
pub(super) struct AgentRun<'a> {
    store: &'a Store,
    info: &'a DeviceInfo,
    /// The model's file name and identity, as the results record them.
    model: String,
    model_id: String,
    device: String,
    pub agent_run: String,
    reps: usize,
    pub cells: HashMap<String, &'a PlannedCell>,
    pub samples: Samples,
    pub model_bytes: Option<u64>,
    /// The `lora_adapter` column of LoRA cells: `synthetic` or the adapter file's name.
    pub lora_adapter: String,
    /// Weight bytes per decode step and matmul FLOPs per token of the loaded variant.
    traffic: Option<(u64, u64)>,
    /// Load time (s), resident weight bytes and kernel of the loaded variant.
    load: Option<(f64, Option<u64>, String)>,
    /// The device's measured roofs.
    pub roofline: Option<Roofline>,
    /// Perplexity of the quality text for the loaded variant.
    perplexity: Option<f64>,
    ctx: HashMap<String, CellCtx>,
    pending: Vec<RepResult>,
    /// Cells that ended (CellEnd or CellFailed) in this agent run.
    pub finished: HashSet<String>,
    /// Repetitions with a final row (ok, or skipped for the same reason), per cell.
    final_reps: HashMap<String, HashSet<usize>>,
    /// What earlier sessions stored, by run id.
    earlier: &'a HashMap<String, Stored>,
    /// Rows written, by status.
    pub rows: BTreeMap<String, usize>,
    /// The cell running now.
    pub current: Option<String>,
    /// Whether the agent started any cell in this agent run.
    pub started_any: bool,
    /// Why `results.csv` could not be written, once that happened: the device stops there.
    pub store_failed: Option<String>,
    /// When the agent last showed progress (any event but a sample), and the longest
    /// repetition seen: the hang detector's inputs.
    pub last_progress: std::time::Instant,
    pub longest_rep_s: f64,
    pub pid: Option<u32>,
    /// How the agent process runs (from its hello), copied into every row.
    process: Option<ProcessConditions>,
    /// A cell on this device waited for the battery in vain (kept across agent runs).
    pub battery_waited_in_vain: bool,
    pub done: bool,
    pub interrupted: bool,
    pub ui: DeviceProgress,
}

impl<'a> AgentRun<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: &'a Store,
        info: &'a DeviceInfo,
        model: &str,
        model_id: &str,
        reps: usize,
        cells: &[PlannedCell],
        earlier: &'a HashMap<String, Stored>,
        ui: DeviceProgress,
    ) -> Self {
        // ok rows are final; skipped ones are run again (the reason may be gone) and, if it is
        // not, not written twice (see `write`).
        let final_reps = cells
            .iter()
            .map(|c| {
                let have = (0..reps)
                    .filter(|&r| {
                        earlier
                            .get(&run_id(model_id, c, r))
                            .is_some_and(|s| s.status == Status::Ok)
                    })
                    .collect();
                (c.key.clone(), have)
            })
            .collect();
        Self {
            lora_adapter: "synthetic".into(),
            store,
            info,
            model: socbench_reports::schema::model_name(model),
            model_id: model_id.to_owned(),
            device: info.serial.clone(),
            agent_run: String::new(),
            reps,
            cells: HashMap::new(),
            samples: Samples::default(),
            model_bytes: None,
            traffic: None,
            load: None,
            roofline: None,
            perplexity: None,
            ctx: HashMap::new(),
            pending: Vec::new(),
            finished: HashSet::new(),
            final_reps,
            earlier,
            rows: BTreeMap::new(),
            current: None,
            started_any: false,
            store_failed: None,
            last_progress: std::time::Instant::now(),
            longest_rep_s: 0.0,
            pid: None,
            process: None,
            battery_waited_in_vain: false,
            done: false,
            interrupted: false,
            ui,
        }
    }

    /// Clears the per-agent state before a new agent run.
    pub fn reset(&mut self, agent_run: &str, cells: &[&'a PlannedCell], model_bytes: Option<u64>) {
        self.agent_run = agent_run.to_owned();
        self.cells = cells.iter().map(|c| (c.key.clone(), *c)).collect();
        self.samples = Samples::default();
        self.model_bytes = model_bytes;
        // Until this agent run's `loaded` event, nothing is known of its variant.
        self.traffic = None;
        self.load = None;
        self.finished.clear();
        self.current = None;
        self.started_any = false;
        self.pid = None;
        self.process = None;
        self.done = false;
        self.interrupted = false;
        self.last_progress = std::time::Instant::now();
    }

    fn row(
        &self,
        cell: &PlannedCell,
        rep: usize,
        status: Status,
        r: Option<&RepResult>,
        note: &str,
    ) -> ResultRow {
        let simulated = self.info.sensors == SensorOrigin::Simulated;
        let key = CellKey {
            device: cell.device.clone(),
            model: self.model.clone(),
            runtime: cell.runtime.name().into(),
            backend: cell.backend_label().into(),
            quant: cell.quant.name().into(),
            threads: cell.threads as u32,
            batch: cell.batch as u32,
            kv_window: cell.kv_window.map(|w| w as u32),
            prompt_tokens: cell.prompt_tokens as u32,
            gen_tokens: cell.gen_tokens as u32,
            affinity: cell.affinity.clone(),
            pacing_ms: cell.pacing_ms,
            perf_mode: cell.perf_mode.name().into(),
            duration_s: cell.duration_s,
            adaptive: cell
                .adaptive
                .map_or_else(|| "off".to_owned(), |a| a.to_string()),
            lora: cell
                .lora
                .map_or_else(|| "none".to_owned(), |l| l.mode.name().to_owned()),
            lora_rank: cell.lora.map_or(0, |l| l.rank as u32),
            lora_adapter: if cell.lora.is_some() {
                self.lora_adapter.clone()
            } else {
                String::new()
            },
            kernel_tier: cell.kernel.name().into(),
        };
        let mut row = ResultRow::new(run_id(&self.model_id, cell, rep), &key, rep as u32, status);
        row.session = self.store.session().to_owned();
        row.model_id = self.model_id.clone();
        row.note = note.to_owned();
        row.set(Metric::ModelBytes, self.model_bytes.map(|b| b as f64));
        if let Some((load_s, resident, kernel)) = &self.load {
            row.set(Metric::LoadS, Some(*load_s));
            row.set(Metric::WeightBytesResident, resident.map(|b| b as f64));
            row.kernel = kernel.clone();
        }
        let has_device_sensors = self
            .samples
            .metas
            .iter()
            .any(|s| !s.name.starts_with("process_"));
        row.sensors = match (has_device_sensors, simulated) {
            (false, _) => "none",
            (true, true) => "simulated",
            (true, false) => "real",
        }
        .into();
        let ctx = self.ctx.get(&cell.key);
        if let Some(ctx) = ctx {
            row.set(Metric::CooldownWaitS, Some(ctx.cooldown_wait_s));
            row.set(Metric::StartTempC, ctx.start_temp_c);
        }
        conditions::apply(
            &mut row,
            ctx.map(|c| &c.conditions),
            self.process.as_ref(),
            r,
        );
        let Some(r) = r else { return row };
        // A sustained session passed the cool-down gate on its own.
        if let Some(wait) = r.cooldown_wait_s {
            row.set(Metric::CooldownWaitS, Some(wait));
            row.set(Metric::StartTempC, r.start_temp_c);
        }
        let b = r.batch as f64;
        let prefill = b * r.prompt_tokens as f64 / r.ttft_s;
        row.set(Metric::TtftS, Some(r.ttft_s));
        row.set(Metric::PrefillTokPerS, Some(prefill));
        let total: f64 = r.decode_s.iter().sum();
        let steps_per_s =
            (!r.decode_s.is_empty() && total > 0.0).then(|| r.decode_s.len() as f64 / total);
        row.set(Metric::DecodeTokPerS, steps_per_s.map(|s| b * s));
        row.set(Metric::DecodeMsPerToken, steps_per_s.map(|s| 1e3 / s));
        // The spread of the step times: a user feels the slow tokens, not the mean.
        let steps_ms: Vec<f64> = r.decode_s.iter().map(|s| s * 1e3).collect();
        for (m, p) in [
            (Metric::DecodeP50Ms, 50.0),
            (Metric::DecodeP90Ms, 90.0),
            (Metric::DecodeP99Ms, 99.0),
            (Metric::DecodeMaxMs, 100.0),
        ] {
            row.set(m, socbench_reports::stats::percentile(&steps_ms, p));
        }
        row.set(Metric::Perplexity, self.perplexity);
        if let Some((bytes, flops)) = self.traffic {
            row.set(Metric::WeightBytesPerStep, Some(bytes as f64));
            // The roofs are the CPU's: a GPU cell's figures would compare unlike things.
            if let (Some(roof), true) = (&self.roofline, cell.backend.is_cpu()) {
                // Every step streams the weights once for the whole batch.
                let bw = roof.bandwidth_bytes_per_s(cell.threads);
                row.set(
                    Metric::DecodeBwFraction,
                    steps_per_s.zip(bw).map(|(s, bw)| bytes as f64 * s / bw),
                );
                let peak = roof.gemm_flop_per_s(cell.threads);
                row.set(
                    Metric::PrefillGemmFraction,
                    peak.map(|p| flops as f64 * prefill / p),
                );
            }
        }
        row.set(Metric::PeakRssBytes, r.peak_rss_bytes.map(|v| v as f64));
        row.set(Metric::PssBytes, r.pss_bytes.map(|v| v as f64));
        row.set(Metric::KvCacheBytes, r.kv_cache_bytes.map(|v| v as f64));
        row.power_source = self.samples.power_source(r.t_start_s, r.t_end_s);
        if let Some(note) = pin_not_taken(cell.cpus.as_deref(), &r.ran_on_cpus) {
            row.note = note;
        }
        // Battery counters on a cable describe the supply, not the workload: no battery
        // number then (RAPL, the CPU package's own counter, still counts).
        let on_battery = row.power_source == "battery";
        let energy = self
            .samples
            .energy(r.t_start_s, r.t_end_s, simulated, on_battery);
        if energy.is_none()
            && let Some((_, withheld)) =
                self.samples.energy(r.t_start_s, r.t_end_s, simulated, true)
        {
            row.energy_source = withheld;
        }
        if let Some((joules, source)) = energy {
            let dur = (r.t_end_s - r.t_start_s).max(1e-9);
            row.set(Metric::EnergyJ, Some(joules));
            row.set(Metric::AvgPowerW, Some(joules / dur));
            // A sustained session generated as many steps as it had time for.
            let steps = r
                .session
                .as_ref()
                .map_or(cell.gen_tokens, |s| s.token_s.len());
            let tokens = (cell.batch * steps) as f64;
            row.set(Metric::EnergyPerTokenJ, Some(joules / tokens));
            row.energy_source = source;
            // The same integral split at the first token: prefill, then decode.
            let mid = r.t_first_token_s.clamp(r.t_start_s, r.t_end_s);
            let part = |a, b| {
                self.samples
                    .energy(a, b, simulated, on_battery)
                    .map(|e| e.0)
            };
            // A sustained session prefills again each generation: no single split point.
            if r.session.is_none() {
                row.set(Metric::PrefillEnergyJ, part(r.t_start_s, mid));
                row.set(Metric::DecodeEnergyJ, part(mid, r.t_end_s));
            }
        }
        let thermal = self.samples.named(|m| m.name.starts_with("thermal_"));
        row.set(
            Metric::MaxTempC,
            derive::window_max(thermal.iter().map(Vec::as_slice), r.t_start_s, r.t_end_s),
        );
        // Fixed-performance mode caps the clocks on purpose: throttling is not judged there.
        let top_mhz = self
            .info
            .clusters
            .iter()
            .filter_map(|c| c.max_khz)
            .max()
            .filter(|_| cell.perf_mode != crate::sweep::PerfMode::Fixed);
        row.throttled = top_mhz.and_then(|top| {
            derive::throttled(
                &self.samples.fastest_core(),
                top as f64 / 1000.0,
                r.t_start_s,
                r.t_end_s,
            )
        });
        if let Some(s) = self.samples.named(|m| m.name == "battery_charging").pop() {
            row.charging = derive::interp(&s, r.t_start_s).map(|v| v > 0.5);
        }
        if let Some(s) = &r.session {
            let top = top_mhz.map(|t| t as f64 / 1000.0);
            super::sustained::apply(&mut row, r, s, &self.samples, top, on_battery);
        }
        if let (Some(trace), Some(spec)) = (&r.adaptive, cell.adaptive) {
            super::adaptive::apply(&mut row, r, trace, spec.to);
            // The loaded variant's figures are the first level's; the tokens were both levels'.
            for m in [
                Metric::Perplexity,
                Metric::WeightBytesPerStep,
                Metric::WeightBytesResident,
                Metric::DecodeBwFraction,
                Metric::PrefillGemmFraction,
            ] {
                row.set(m, None);
            }
        }
        row
    }

    fn write(
        &mut self,
        cell: &PlannedCell,
        rep: usize,
        status: Status,
        r: Option<&RepResult>,
        note: &str,
    ) {
        let id = run_id(&self.model_id, cell, rep);
        let same_as_before = self
            .earlier
            .get(&id)
            .is_some_and(|s| s.status == status && s.note == note && status == Status::Skipped);
        if !same_as_before {
            let row = self.row(cell, rep, status, r, note);
            // The samples behind the row go to disk with it.
            let written = self
                .store
                .append_result(&row)
                .and_then(|()| self.store.flush());
            if let Err(e) = written {
                let msg = format!("results.csv cannot be written ({e:#}); stopping this device");
                self.ui.log(&format!("error: {msg}"));
                self.store_failed.get_or_insert(msg);
                return;
            }
        }
        *self.rows.entry(status.name().to_owned()).or_default() += 1;
        // Whatever its status, this session is done with it (`--resume` retries what is not
        // ok).
        self.final_reps
            .entry(cell.key.clone())
            .or_default()
            .insert(rep);
        if status != Status::Ok {
            // The caller says why, once for the lot.
            self.ui.rep_done(cell.duration_s, false, None);
        }
    }

    /// Repetitions of `cell` with no final row yet.
    pub fn missing_reps(&self, cell: &PlannedCell) -> Vec<usize> {
        let have = self.final_reps.get(&cell.key);
        (0..self.reps)
            .filter(|r| !have.is_some_and(|h| h.contains(r)))
            .collect()
    }

    /// Writes `status` rows for every repetition of `cells` that has none.
    pub fn mark(&mut self, cells: &[&PlannedCell], status: Status, note: &str) {
        for c in cells {
            for rep in self.missing_reps(c) {
                self.write(c, rep, status, None, note);
            }
        }
    }

    pub fn flush_pending(&mut self, force: bool) {
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
            // An agent that does not know a lever (an older build) runs the cell without it:
            // that is not this cell's measurement.
            let ignored = if cell.duration_s > 0 && r.session.is_none() {
                Some("sustained session")
            } else if cell.adaptive.is_some() && r.adaptive.is_none() {
                Some("adaptive precision")
            } else {
                None
            };
            if let Some(lever) = ignored {
                let note = format!(
                    "the agent ran this cell without its {lever} (an agent built before it?)"
                );
                self.write(cell, rep, Status::Failed, None, &note);
                continue;
            }
            self.write(cell, rep, Status::Ok, Some(&r), "");
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
            self.ui.rep_done(cell.duration_s, true, Some(&msg));
        }
    }

    /// Handles one line of the agent's output.
    pub fn on_line(&mut self, line: &str) {
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
        if !matches!(event, Event::Sample { .. }) {
            self.last_progress = std::time::Instant::now();
        }
        match event {
            Event::Hello {
                sensors,
                pid,
                process,
                ..
            } => {
                self.samples.metas = sensors;
                self.pid = Some(pid);
                self.process = Some(process);
            }
            Event::Loaded {
                load_s,
                model_file_bytes,
                weight_bytes_per_step,
                matmul_flops_per_token,
                weight_bytes_resident,
                kernel,
                ..
            } => {
                self.load = Some((load_s, weight_bytes_resident, kernel));
                if model_file_bytes.is_some() {
                    self.model_bytes = model_file_bytes;
                }
                self.traffic = weight_bytes_per_step.zip(matmul_flops_per_token);
                self.perplexity = None;
            }
            Event::Quality { perplexity, .. } => self.perplexity = Some(perplexity),
            Event::Sample { t_s, values } => self.on_sample(t_s, values),
            Event::CellStart {
                cell,
                cooldown_wait_s,
                start_temp_c,
                battery_wait_s,
                freq,
                thermal_status,
                battery_pct,
                ..
            } => {
                if battery_wait_s >= 1.0 {
                    self.ui.log(&format!(
                        "waited {battery_wait_s:.0} s for the device to run on its battery"
                    ));
                }
                self.ctx.insert(
                    cell.clone(),
                    CellCtx {
                        cooldown_wait_s,
                        start_temp_c,
                        conditions: CellConditions {
                            freq,
                            thermal_status: (thermal_status, None),
                            battery_pct,
                        },
                    },
                );
                if let Some(c) = self.cells.get(&cell) {
                    self.ui.cell(&describe(c));
                }
                self.current = Some(cell);
                self.started_any = true;
            }
            Event::Rep(r) => {
                // A sustained session is silent by design for its length (allowed for its
                // cell alone); what the limit learns from is one generation.
                let generations = r.session.as_ref().map_or(1, |s| s.generations.max(1));
                self.longest_rep_s = self
                    .longest_rep_s
                    .max((r.t_end_s - r.t_start_s) / generations as f64);
                if r.repetition.is_some() {
                    self.pending.push(r);
                }
            }
            Event::CellFailed { cell, reason, .. } => {
                self.flush_pending(true);
                if let Some(c) = self.cells.get(&cell).copied() {
                    self.mark(&[c], Status::Failed, &reason);
                    self.ui.log(&format!("{} failed: {reason}", describe(c)));
                }
                self.finished.insert(cell);
                self.current = None;
            }
            Event::CellSkipped { cell, reason, .. } => {
                // The agent's --require-battery refusals: later agent runs only check.
                self.battery_waited_in_vain |=
                    reason.starts_with("--require-battery: the device was on");
                self.flush_pending(true);
                if let Some(c) = self.cells.get(&cell).copied() {
                    self.mark(&[c], Status::Skipped, &reason);
                    self.ui.log(&format!("{} skipped: {reason}", describe(c)));
                }
                self.finished.insert(cell);
                self.current = None;
            }
            Event::Gate { ratio, passed, .. } => self.ui.log(&format!(
                "quality gate: {ratio:.3}× f32's perplexity: {}",
                if passed { "measured" } else { "refused" }
            )),
            Event::CellEnd {
                cell,
                thermal_status,
                ..
            } => {
                if let Some(ctx) = self.ctx.get_mut(&cell) {
                    ctx.conditions.thermal_status.1 = thermal_status;
                }
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

    fn on_sample(&mut self, t_s: f64, values: Vec<Option<f64>>) {
        let rows: Vec<SampleRow> = self
            .samples
            .metas
            .iter()
            .zip(&values)
            .filter_map(|(m, v)| {
                v.map(|value| SampleRow {
                    device: self.device.clone(),
                    agent_run: self.agent_run.clone(),
                    cell: self.current.clone().unwrap_or_default(),
                    // Four decimals: 100 µs is finer than any sampling period.
                    t_s: (t_s * 1e4).round() / 1e4,
                    sensor: m.name.clone(),
                    value,
                    source: m.source.clone(),
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
}
