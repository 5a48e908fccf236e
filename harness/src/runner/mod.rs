//! The runner: one worker per device, all devices in parallel; per model variant one agent
//! process that streams events back; every finished repetition appended to `results.csv` at
//! once. A device that goes away is waited for (bounded), then its remaining cells are marked
//! `device_lost` and the others carry on; an agent that crashes or hangs marks its cell
//! `failed` and is restarted for the rest.
//!
//! - [`deploy`]: which agent a device gets, pushing it and the model, what it says of itself.
//! - `prepare`: deploying, stopping a stale agent, the agent's self-reports, before any cell.
//! - [`supervise`]: one agent per device, heartbeat, hang detection, how an agent run ended.
//! - `rows`: the event → row state machine.

mod adaptive;
mod conditions;
pub mod deploy;
mod prepare;
mod rows;
mod samples;
pub mod supervise;
mod sustained;

use crate::progress::Progress;
use crate::store::{Store, Stored};
use crate::sweep::{PerfMode, PlannedCell, Sweep};
use anyhow::Result;
use deploy::REMOTE_DIR;
use rows::AgentRun;
use serde_json::{Value, json};
use socbench_agent::plan::{Cell, Plan};
use socbench_devices::{AdbDevice, Device, DeviceError, DeviceInfo, LocalHost};
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::runtime::RuntimeKind;
use socbench_reports::row::Status;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use supervise::{AgentEnd, HangTimeout, Heartbeat};

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
    /// The files llama.cpp runs, by level, on the host (`Err`: why that level cannot run on
    /// llama.cpp); empty when the sweep has no llama.cpp cells.
    pub llama_models: BTreeMap<QuantLevel, Result<std::path::PathBuf, String>>,
    /// Why socbench's Burn runtime cannot run the model (an architecture or tensor types it
    /// does not have: its cells are skipped with this reason), `None` when it can.
    pub burn_unsupported: Option<String>,
    /// The model's identity (file name and SHA-256 of its tensor data, or `synthetic:tiny`):
    /// part of every run id, so rows of two models never mix.
    pub model_id: String,
    /// When an agent that shows no progress is declared hung.
    pub hang_timeout: HangTimeout,
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
    /// The quality gate every model variant meets before its cells (`None`: off).
    pub gate: Option<socbench_kernels::gate::QualityGate>,
    /// `--require-battery`: the longest wait per cell for the device to run on its battery.
    pub require_battery_s: Option<f64>,
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

/// Cell results are keyed `model id | cell key # repetition`.
pub fn run_id(model_id: &str, cell: &PlannedCell, rep: usize) -> String {
    format!("{model_id}|{}#{rep}", cell.key)
}

/// `flex f32 t2 b1 kv=full p32 g16 a=all` (` pace=50ms`, ` perf=fixed`, ` session=60s`,
/// ` adaptive=q8>q4@45`, ` kernel=x86-avx2`, ` lora=unmerged/r8` at the end of a paced,
/// fixed-performance, sustained-session, adaptive, kernel-forcing or LoRA cell).
pub fn describe(c: &PlannedCell) -> String {
    let runtime = match c.runtime {
        RuntimeKind::Burn => String::new(),
        other => format!("{other} "),
    };
    format!(
        "{runtime}{} {} t{} b{} kv={} p{} g{} a={}",
        c.backend_label(),
        c.quant.name(),
        c.threads,
        c.batch,
        c.kv_window.map_or("full".into(), |w| w.to_string()),
        c.prompt_tokens,
        c.gen_tokens,
        c.affinity
    ) + &if c.pacing_ms > 0 {
        format!(" pace={}ms", c.pacing_ms)
    } else {
        String::new()
    } + if c.perf_mode == PerfMode::Fixed {
        " perf=fixed"
    } else {
        ""
    } + &if c.duration_s > 0 {
        format!(" session={}s", c.duration_s)
    } else {
        String::new()
    } + &c
        .adaptive
        .map_or(String::new(), |a| format!(" adaptive={a}"))
        + &if c.kernel == socbench_kernels::qmatmul::KernelTier::Auto {
            String::new()
        } else {
            format!(" kernel={}", c.kernel)
        }
        + &c.lora
            .map_or(String::new(), |l| format!(" lora={}/r{}", l.mode, l.rank))
}

/// Switches Android's fixed-performance mode off on `dev` (best effort: logged, not fatal).
fn restore_perf_mode(dev: &mut dyn Device, ui: &crate::progress::DeviceProgress) {
    let mut argv: Vec<&str> = socbench_agent::perf::COMMAND.to_vec();
    argv.push("false");
    if let Err(e) = dev.run(&argv, Duration::from_secs(10)) {
        ui.log(&format!("restoring the default performance mode: {e}"));
    }
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
/// `earlier` is what this directory already holds, by run id.
pub fn run_device(
    target: &Target,
    info: &DeviceInfo,
    cells: &[PlannedCell],
    sweep: &Sweep,
    ctx: &RunContext,
    store: &Store,
    earlier: &HashMap<String, Stored>,
) -> DeviceOutcome {
    let serial = target.serial().to_owned();
    // Each repetition still to run, as its sustained-session length (0: an ordinary one).
    let to_run: Vec<u32> = cells
        .iter()
        .flat_map(|c| (0..sweep.repetitions).map(move |r| (c, r)))
        .filter(|&(c, r)| {
            earlier
                .get(&run_id(&ctx.model_id, c, r))
                .is_none_or(|s| s.status != Status::Ok)
        })
        .map(|(c, _)| c.duration_s)
        .collect();
    let ui = ctx.progress.device(&serial, &to_run);
    let mut run = AgentRun::new(
        store,
        info,
        &ctx.model,
        &ctx.model_id,
        sweep.repetitions,
        cells,
        earlier,
        ui.clone(),
    );
    if let Some(f) = &sweep.lora_file {
        run.lora_adapter = std::path::Path::new(f)
            .file_name()
            .map_or_else(|| f.clone(), |n| n.to_string_lossy().into_owned());
    }
    let log = |msg: &str| ui.log(msg);
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
            run.mark(&pending_cells, Status::DeviceLost, &note);
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
    let ready = match prepare::prepare(
        &mut dev,
        target,
        info,
        sweep,
        ctx,
        &mut run,
        &mut outcome,
        pending_cells,
        &remote_dir,
    ) {
        Ok(r) => r,
        Err(stopped) => return finish(run, outcome, stopped),
    };
    let prepare::Ready {
        agent,
        model,
        llama_models,
        lora_file,
        lock,
        cooldown,
        cells: pending_cells,
    } = ready;
    // Model variants in plan order; cells shuffled within each.
    let mut variants: Vec<(String, Vec<&PlannedCell>)> = Vec::new();
    for c in &pending_cells {
        // An adaptive cell's agent holds its second level too: it runs apart from the plain
        // cells of its first level (their memory is theirs alone).
        let mut key = format!(
            "{}|{}|{}|{}|{:?}|{:?}|{:?}",
            c.runtime.name(),
            c.backend.name(),
            c.quant.name(),
            c.threads,
            c.cpus,
            c.adaptive.map(|a| a.to),
            c.lora
        );
        // A forced kernel variant is an agent of its own (its runtime's workers carry it).
        if c.kernel != socbench_kernels::qmatmul::KernelTier::Auto {
            key.push_str(&format!("|{}", c.kernel));
        }
        match variants.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(c),
            None => variants.push((key, vec![c])),
        }
    }
    let (beat_every, beat_timeout) = supervise::heartbeat_timing(is_local);
    let fixed_sweep = sweep.perf_mode.contains(&PerfMode::Fixed);
    // The agent is silent while it waits for the device to cool or to leave its charger.
    let cooldown_wait =
        cooldown.as_ref().map_or(0.0, |c| c.max_wait_s) + ctx.require_battery_s.unwrap_or(0.0);
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
                run.mark(&vcells, Status::Failed, "the agent kept stopping early");
                break;
            }
            n_run += 1;
            if n_run > 1 {
                // After a crash, a hang or a reconnect the last agent may still be there.
                match supervise::stop_stale(&mut dev, &agent, &lock) {
                    supervise::Stale::None => {}
                    supervise::Stale::Stopped(msg) => log(&msg),
                    supervise::Stale::Busy(reason) => {
                        log(&reason);
                        run.mark(
                            &remaining(&pending_cells, &completed),
                            Status::Failed,
                            &reason,
                        );
                        return finish(run, outcome, Some(reason));
                    }
                }
            }
            let agent_run = format!("{}-{n_run}", sanitize(&serial));
            let first = vcells[0];
            // One per agent run: an earlier agent that was not ended must not see this run's
            // beats as its own.
            let heartbeat_file = format!("{remote_dir}/heartbeat-{agent_run}");
            let plan = Plan {
                model: match first.runtime {
                    RuntimeKind::Burn => model.clone(),
                    // prepare() skipped the llama.cpp cells of levels without a file.
                    RuntimeKind::LlamaCpp => {
                        llama_models.get(&first.quant).cloned().unwrap_or_default()
                    }
                },
                runtime: first.runtime,
                backend: first.backend,
                quant: first.quant,
                kernel: first.kernel,
                lora: first.lora.map(|l| socbench_kernels::lora::LoraSpec {
                    mode: l.mode,
                    rank: l.rank,
                    file: lora_file.clone(),
                }),
                threads: first.threads,
                affinity: first.cpus.clone(),
                sample_hz: sweep.sample_hz,
                warmup: sweep.warmup,
                cooldown: cooldown.clone(),
                events_file: Some(format!("{remote_dir}/events-{agent_run}.jsonl")),
                stop_file: Some(format!("{remote_dir}/STOP")),
                quality: sweep.quality,
                gate: ctx.gate,
                require_battery_s: ctx.require_battery_s,
                battery_waited_in_vain: run.battery_waited_in_vain,
                lock_file: Some(lock.clone()),
                heartbeat_file: Some(heartbeat_file.clone()),
                heartbeat_timeout_s: Some(beat_timeout.as_secs_f64()),
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
                            pacing_ms: c.pacing_ms,
                            fixed_performance: c.perf_mode == PerfMode::Fixed,
                            duration_s: c.duration_s,
                            adaptive: c.adaptive,
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
            run.reset(
                &agent_run,
                &vcells,
                std::fs::metadata(&ctx.model).ok().map(|m| m.len()),
            );
            log(&format!(
                "agent run {agent_run}: {} cells of {}",
                vcells.len(),
                describe(first)
            ));
            // A Ctrl-C between the check above and removing the stop file would be lost.
            if ctx.interrupted.load(Ordering::Relaxed) {
                return finish(run, outcome, Some("interrupted".into()));
            }
            // Default cells must not run under a fixed-performance mode left on by an agent
            // that was killed (here, or in an earlier session of a resumed sweep).
            if fixed_sweep && !is_local {
                restore_perf_mode(&mut *dev, &run.ui);
            }
            // The agent is allowed to be silent for the waits before a cell, and in the cell
            // it is running for a paced repetition's gaps and a sustained session's length
            // (before its first cell: the longest of them).
            let quiet_in = |c: &PlannedCell| {
                f64::from(c.pacing_ms) / 1e3 * c.gen_tokens.saturating_sub(1) as f64
                    + f64::from(c.duration_s)
            };
            let longest_quiet = vcells.iter().map(|c| quiet_in(c)).fold(0.0, f64::max);
            let silent_s = |run: &AgentRun| {
                cooldown_wait
                    + run
                        .current
                        .as_ref()
                        .and_then(|k| run.cells.get(k))
                        .map_or(longest_quiet, |c| quiet_in(c))
            };
            // An agent run ends after 24 h, plus the sessions it was given.
            let sessions_s: f64 = vcells
                .iter()
                .map(|c| f64::from(c.duration_s) * sweep.repetitions as f64)
                .sum();
            let cap = Duration::from_secs_f64(24.0 * 3600.0 + sessions_s);
            let end = match staged {
                Err(e) => AgentEnd::Device(e),
                Ok(()) => {
                    let plan_arg = if is_local {
                        plan_local.display().to_string()
                    } else {
                        plan_remote.clone()
                    };
                    let _beat = Heartbeat::start(target, heartbeat_file, beat_every);
                    let first_limit = ctx.hang_timeout.limit(run.longest_rep_s, silent_s(&run));
                    supervise::run_plan(
                        &mut dev,
                        &agent,
                        &plan_arg,
                        !is_local,
                        (first_limit, cap),
                        &mut |l| {
                            run.on_line(l);
                            supervise::Liveness {
                                last_progress: run.last_progress,
                                limit: ctx.hang_timeout.limit(run.longest_rep_s, silent_s(&run)),
                                pid: run.pid,
                            }
                        },
                    )
                }
            };
            run.flush_pending(true);
            let _ = store.flush();
            // The agent restores the performance mode after each fixed cell; an agent that was
            // killed (hung) could not, so the host does it once more (and before the next
            // agent run, below, for a device that came back).
            if fixed_sweep && !is_local && !matches!(end, AgentEnd::Device(_)) {
                restore_perf_mode(&mut *dev, &run.ui);
            }
            completed.extend(run.finished.iter().cloned());
            let interrupted = run.interrupted || ctx.interrupted.load(Ordering::Relaxed);
            vcells.retain(|c| !run.finished.contains(&c.key));
            if interrupted && !matches!(end, AgentEnd::Hung { .. }) {
                return finish(run, outcome, Some("interrupted".into()));
            }
            let reason = match &end {
                AgentEnd::Exited(out) if run.done && out.status == 0 => None,
                AgentEnd::Exited(out) => {
                    // The agent died (crash, OOM kill, kill -9, a refusal).
                    let signal = if out.status > 128 {
                        format!(" (signal {})", out.status - 128)
                    } else {
                        String::new()
                    };
                    Some(format!(
                        "agent exited with status {}{signal}: {}",
                        out.status,
                        out.stderr_text().lines().last().unwrap_or("no message")
                    ))
                }
                AgentEnd::Hung { silent } => Some(format!(
                    "hung: the agent showed no progress for {:.0} s (limit {:.0} s; \
                     --hang-timeout sets it) and was killed",
                    silent.as_secs_f64(),
                    ctx.hang_timeout
                        .limit(run.longest_rep_s, silent_s(&run))
                        .as_secs_f64()
                )),
                AgentEnd::Device(_) => None,
            };
            if run.store_failed.is_some() {
                let note = run.store_failed.clone().unwrap_or_default();
                return finish(run, outcome, Some(note));
            }
            if let Some(reason) = reason {
                // The cell it was in; before its first cell, every cell it was given (none of
                // them ran, and blaming one would let the next agent fail the same way).
                let failed: Vec<&PlannedCell> = match &run.current {
                    Some(k) => vcells.iter().filter(|c| &c.key == k).copied().collect(),
                    None if run.started_any => vcells.first().copied().into_iter().collect(),
                    None => vcells.clone(),
                };
                run.mark(&failed, Status::Failed, &reason);
                log(&format!(
                    "{reason}; {} cell(s) marked failed, continuing",
                    failed.len()
                ));
                completed.extend(failed.iter().map(|c| c.key.clone()));
                vcells.retain(|c| !failed.iter().any(|f| f.key == c.key));
                continue;
            }
            match end {
                AgentEnd::Device(e) if e.is_disconnect() => {
                    log(&format!(
                        "device lost: {e}; waiting up to {:?}",
                        ctx.device_wait
                    ));
                    if wait_for(&mut dev, ctx.device_wait, &ctx.interrupted) {
                        log("device is back; continuing");
                        continue;
                    }
                    let note = format!("device lost: {e}");
                    run.mark(
                        &remaining(&pending_cells, &completed),
                        Status::DeviceLost,
                        &note,
                    );
                    return finish(run, outcome, Some(note));
                }
                AgentEnd::Device(e) => {
                    let note = format!("running the agent: {e}");
                    log(&note);
                    run.mark(&vcells, Status::Failed, &note);
                    completed.extend(vcells.iter().map(|c| c.key.clone()));
                    vcells.clear();
                }
                // Handled above: a clean end, or a failure already recorded.
                AgentEnd::Exited(_) | AgentEnd::Hung { .. } => {}
            }
        }
    }
    finish(run, outcome, None)
}

/// The cells of `pending` not yet completed.
fn remaining<'c>(pending: &[&'c PlannedCell], completed: &HashSet<String>) -> Vec<&'c PlannedCell> {
    pending
        .iter()
        .filter(|c| !completed.contains(&c.key))
        .copied()
        .collect()
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
