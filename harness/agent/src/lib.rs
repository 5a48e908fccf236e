//! socbench's on-device agent.
//!
//! `socbench-agent run PLAN.json` loads one model variant (backend × quantization × threads),
//! pins itself to the planned CPUs, and runs the plan's cells: cool-down gate, warm-up, then
//! the repetitions, sampling the device's sensors throughout on its own thread. It writes one
//! JSON object per line ([`Event`]) to stdout and appends the same lines to the plan's events
//! file on the device, so nothing is lost if the link to the host drops.
//!
//! `socbench-agent sensors` prints the sensors found and one sample; `socbench-agent info` what
//! this build is (architecture, libc) and which backends it can run; `socbench-agent stop-stale
//! LOCK` ends an agent left running by an earlier run ([`supervise`]). The `socbench` binary
//! carries the same agent (`socbench agent …`), which is what runs on the local host.
//!
//! Times are seconds on a monotonic clock since the agent started, the same epoch for token
//! timings and sensor samples, so the host can integrate power over each phase.
#![warn(missing_docs)]

pub mod adaptive;
pub mod cpus;
pub mod engine;
pub mod perf;
pub mod plan;
pub mod power;
pub mod session;
pub mod supervise;

use engine::Engine;
use plan::{Cell, Event, Plan, RepResult, SessionTrace};
use socbench_devices::sensors::{Sample, Sampler, SensorSet};
use socbench_kernels::backend::BackendKind;
use socbench_kernels::gate::{self, QualityGate};
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::runtime::RuntimeKind;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Text the prompts are cut from: repeated until it has enough tokens.
const PROMPT_TEXT: &str = "The history of computing is a story of making machines smaller, \
faster and closer to the people who use them. From rooms full of valves to the phone in a \
pocket, each step traded power for efficiency, and each new device asked engineers to measure \
what it could really do. ";

/// Where the sensors live: `SOCBENCH_SYSFS_ROOT` (set by the virtual device) or `/`.
pub fn sysfs_root() -> PathBuf {
    std::env::var_os("SOCBENCH_SYSFS_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// A path from the plan as this process sees it: under the virtual device, phone paths
/// (`/data/…`, `/sdcard/…`) live inside its sandbox, named by `SOCBENCH_SYSFS_ROOT`.
pub fn device_path(p: &str) -> PathBuf {
    match std::env::var_os("SOCBENCH_SYSFS_ROOT") {
        Some(root) if p.starts_with("/data/") || p.starts_with("/sdcard/") => {
            Path::new(&root).join(p.trim_start_matches('/'))
        }
        _ => PathBuf::from(p),
    }
}

/// Emits events to stdout and the on-device log, one line each, flushed at once.
#[derive(Debug, Clone)]
pub struct Emitter {
    inner: Arc<Mutex<Option<std::fs::File>>>,
}

impl Emitter {
    fn new(log: Option<&Path>) -> Self {
        let file = log.and_then(|p| {
            if let Some(d) = p.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Self {
            inner: Arc::new(Mutex::new(file)),
        }
    }

    /// Writes one event.
    pub fn emit(&self, event: &Event) {
        let Ok(line) = serde_json::to_string(event) else {
            return;
        };
        // A thread that panicked while writing leaves the log as it was: keep emitting.
        let mut file = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            // Nobody reads the events any more (the controller or the link is gone): measuring
            // on would only load the device.
            supervise::exit_now(
                supervise::EXIT_CONTROLLER_GONE,
                &format!("writing the event stream failed ({e})"),
            );
        }
    }
}

/// The agent's entry point (`socbench-agent ARGS`).
pub fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    main_with(&args)
}

/// The agent with `args` (without the program name): what `socbench-agent ARGS` and
/// `socbench agent ARGS` run.
pub fn main_with(args: &[String]) -> ExitCode {
    // Before the first thread (the parent watch below): NdArray's matmul pool is sized from
    // the environment, which may only change while this is the process's one thread.
    if let Some(threads) = matmul_threads_for(args)
        && let Err(e) = socbench_kernels::backend::set_matmul_threads(threads)
    {
        eprintln!("socbench-agent: {e}");
    }
    // Every subcommand (a probe runs for minutes) dies with a local controller.
    supervise::bind_to_parent();
    match args.first().map(String::as_str) {
        Some("run") if args.len() == 2 => {
            let result = run_plan(Path::new(&args[1]));
            supervise::release();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("socbench-agent: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some("stop-stale") if args.len() == 2 => {
            println!("{}", supervise::stop_stale(&device_path(&args[1])));
            ExitCode::SUCCESS
        }
        Some("sensors") => {
            let set = SensorSet::discover(&sysfs_root(), Some(std::process::id()));
            let values = set.read();
            let out = serde_json::json!({
                "root": sysfs_root(),
                "sensors": set.metas(),
                "values": values,
            });
            println!("{out}");
            ExitCode::SUCCESS
        }
        Some("probe") => match probe(&args[1..]) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("socbench-agent probe: {e}");
                ExitCode::from(2)
            }
        },
        Some("info") => {
            println!("{}", build_info());
            ExitCode::SUCCESS
        }
        Some("selftest") => {
            let checks = socbench_kernels::qmatmul::self_check();
            let ok = checks.iter().all(|c| c.ok());
            let out = serde_json::json!({
                "kernel": socbench_kernels::qmatmul::kernel_name(),
                "ok": ok,
                "checks": checks,
            });
            println!("{out}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Some("--version") => {
            println!("socbench-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: socbench-agent run PLAN.json | socbench-agent sensors | socbench-agent info | \
                 socbench-agent selftest | socbench-agent probe [--threads 1,2,4] [--quick] | \
                 socbench-agent stop-stale LOCK | socbench-agent --version"
            );
            ExitCode::from(2)
        }
    }
}

/// The thread count NdArray's matmul should get for `args`: the plan's for an NdArray plan,
/// one for a probe (each of its GEMMs runs on its caller's thread: the probe's threads are the
/// parallelism), none otherwise. An unreadable plan is left for `run` to report.
fn matmul_threads_for(args: &[String]) -> Option<usize> {
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("probe"), _) => Some(1),
        (Some("run"), Some(path)) => {
            let plan: Plan = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
            (plan.backend == BackendKind::NdArray).then_some(plan.threads)
        }
        _ => None,
    }
}

/// `probe [--threads LIST] [--quick]`: the device's triad bandwidth and GEMM roofs as JSON.
fn probe(args: &[String]) -> Result<String, String> {
    use socbench_kernels::roofline::{ProbeOptions, default_thread_counts, probe};
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = default_thread_counts(cpus);
    let mut opts = ProbeOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => opts = ProbeOptions::quick(),
            "--threads" => {
                let list = it.next().ok_or("--threads needs a list, e.g. 1,2,4")?;
                threads = list
                    .split(',')
                    .map(|t| t.trim().parse::<usize>().ok().filter(|&n| n > 0))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| {
                        format!("--threads {list:?}: expected positive integers, e.g. 1,2,4")
                    })?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (valid: --threads LIST, --quick)"
                ));
            }
        }
    }
    let r = probe(&threads, &opts);
    serde_json::to_string(&serde_json::json!({
        "cpus": cpus,
        "roofline": r,
    }))
    .map_err(|e| e.to_string())
}

/// What this build of the agent is and can run: the runner skips cells whose backend is not in
/// `backends` instead of letting each one fail.
pub fn build_info() -> serde_json::Value {
    let env = if cfg!(target_env = "musl") {
        "musl"
    } else if cfg!(target_os = "android") {
        "android"
    } else if cfg!(target_env = "gnu") {
        "gnu"
    } else {
        ""
    };
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "git_hash": env!("SOCBENCH_GIT_HASH"),
        "arch": std::env::consts::ARCH,
        "os": std::env::consts::OS,
        "env": env,
        "backends": BackendKind::built().iter().map(|b| b.name()).collect::<Vec<_>>(),
        "runtimes": runtimes(),
        "kernel": socbench_kernels::qmatmul::kernel_name(),
        "kernels": socbench_kernels::qmatmul::kernel_names(),
        "llama_cpp": llama_cpp_info(),
    })
}

/// The runtimes this agent can run on this CPU: llama.cpp only when it was built in and this
/// CPU has what it was compiled for (`llama_cpp.unavailable` says why not).
fn runtimes() -> Vec<&'static str> {
    RuntimeKind::built()
        .into_iter()
        .filter(|r| *r != RuntimeKind::LlamaCpp || llama_cpp_unavailable().is_none())
        .map(|r| r.name())
        .collect()
}

/// Why this agent's llama.cpp cannot run on this CPU (`None` when it can, or is not built in).
fn llama_cpp_unavailable() -> Option<String> {
    #[cfg(feature = "llama-cpp")]
    {
        socbench_kernels::llamacpp::cpu_support().err()
    }
    #[cfg(not(feature = "llama-cpp"))]
    None
}

/// Which llama.cpp this agent carries and what it uses on this CPU (`null` without it).
fn llama_cpp_info() -> serde_json::Value {
    #[cfg(feature = "llama-cpp")]
    {
        use socbench_kernels::llamacpp;
        serde_json::json!({
            "binding": llamacpp::BINDING,
            "build_flags": llamacpp::BUILD_FLAGS,
            "system_info": llamacpp::system_info(),
            "unavailable": llama_cpp_unavailable(),
        })
    }
    #[cfg(not(feature = "llama-cpp"))]
    serde_json::Value::Null
}

fn pin(cpus: &[u32]) -> Result<(), String> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    for &c in cpus {
        set.set(c as usize).map_err(|e| format!("cpu {c}: {e}"))?;
    }
    sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| format!("sched_setaffinity {cpus:?}: {e}"))
}

/// Hands heap memory freed so far back to the kernel (glibc's `malloc_trim`), so that a
/// repetition's peak RSS counts what the model and the run hold, not what an earlier phase
/// (loading, scoring the quality text, a previous cell's cache) freed but the allocator kept:
/// measured, scoring the quality text left 25–45 MiB resident in a q4 agent. Other C libraries
/// (musl in the static agent, Android's bionic) return freed memory on their own terms; there
/// this does nothing.
#[allow(unsafe_code)]
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free heap pages to the kernel; it touches no live
    // allocation and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Resets the kernel's peak-RSS mark (VmHWM) so each repetition's peak is its own.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's `VmRSS:`/`VmHWM:`/`Pss:` in bytes.
fn own_memory(field: &str) -> Option<u64> {
    socbench_devices::sensors::own_memory_bytes(field)
}

/// The hottest thermal zone now (one read per zone; a zone read from Android's thermal
/// service may be up to a second old).
fn max_temp(set: &SensorSet) -> Option<f64> {
    set.metas()
        .iter()
        .enumerate()
        .filter(|(_, m)| m.name.starts_with("thermal_"))
        .filter_map(|(i, _)| set.read_one(i))
        .reduce(f64::max)
}

fn prompt_ids(engine: &Engine, n: usize) -> Result<Vec<u32>, String> {
    let base = engine.tokenize(PROMPT_TEXT)?;
    if base.is_empty() {
        return Err("the prompt text encodes to no tokens".into());
    }
    Ok(base.iter().copied().cycle().take(n).collect())
}

fn run_plan(path: &Path) -> Result<(), String> {
    let epoch = Instant::now();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut plan: Plan =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if plan.model != "synthetic:tiny" {
        plan.model = device_path(&plan.model).display().to_string();
    }
    plan.events_file = plan
        .events_file
        .map(|f| device_path(&f).display().to_string());
    plan.stop_file = plan
        .stop_file
        .map(|f| device_path(&f).display().to_string());
    let heartbeat = match (&plan.heartbeat_file, plan.heartbeat_timeout_s) {
        (Some(file), Some(timeout)) if timeout > 0.0 => {
            Some((device_path(file), Duration::from_secs_f64(timeout)))
        }
        _ => None,
    };
    // Before the pin, so `cpus_allowed` is what the device allows, not what we asked for.
    let process = socbench_devices::conditions::process(&sysfs_root(), Path::new("/proc/self"));
    if let Some(cpus) = &plan.affinity {
        // Before this run's threads (heartbeat watch, sampler, the model's workers) exist:
        // they inherit the mask.
        pin(&cpus::effective_pin(cpus, &cpus::allowed()))?;
    }
    if let Some(lock) = &plan.lock_file {
        supervise::acquire(&device_path(lock), heartbeat.as_ref())?;
    }
    if let Some((file, timeout)) = heartbeat {
        supervise::watch_heartbeat(file, timeout);
    }
    let emitter = Emitter::new(plan.events_file.as_deref().map(Path::new));
    let t = move || epoch.elapsed().as_secs_f64();
    let set = SensorSet::discover(&sysfs_root(), Some(std::process::id()));
    emitter.emit(&Event::Hello {
        t_s: t(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        sensors: set.metas().to_vec(),
        sysfs_root: sysfs_root().display().to_string(),
        process,
    });
    let sampler = {
        let e = emitter.clone();
        Sampler::start(set.clone(), plan.sample_hz, epoch, move |s: Sample| {
            e.emit(&Event::Sample {
                t_s: s.t_s,
                values: s.values,
            });
        })
    };
    let spec = plan.model_spec();
    let engine = match Engine::open(&plan) {
        Ok(s) => s,
        Err(e) => {
            // Every cell fails with the reason; the host records them.
            for cell in &plan.cells {
                emitter.emit(&Event::CellFailed {
                    t_s: t(),
                    cell: cell.id.clone(),
                    reason: format!("loading {spec}: {e}"),
                });
            }
            sampler.stop();
            emitter.emit(&Event::Done { t_s: t() });
            return Ok(());
        }
    };
    let facts = engine.facts(&plan);
    emitter.emit(&Event::Loaded {
        t_s: t(),
        load_s: facts.load_s,
        model_file_bytes: plan.model_file_bytes(),
        rss_bytes: own_memory("VmRSS:"),
        weight_bytes_per_step: Some(facts.weight_bytes_per_step),
        matmul_flops_per_token: Some(facts.matmul_flops_per_token),
        weight_bytes_resident: Some(facts.weight_bytes_resident),
        kernel: facts.kernel,
    });
    if let Some(gate) = &plan.gate
        && !passes_gate(&engine, gate, &plan, &emitter, &t)
    {
        sampler.stop();
        emitter.emit(&Event::Done { t_s: t() });
        return Ok(());
    }
    if plan.quality {
        let scored = engine
            .tokenize(socbench_kernels::generate::QUALITY_TEXT)
            .and_then(|ids| engine.perplexity(&ids, socbench_kernels::generate::QUALITY_CHUNK));
        match scored {
            Ok(p) => emitter.emit(&Event::Quality {
                t_s: t(),
                perplexity: p.perplexity,
                tokens: p.tokens,
            }),
            // Speed is still worth measuring; the rows just carry no perplexity.
            Err(e) => eprintln!("socbench-agent: quality text not scored: {e}"),
        }
    }
    // Adaptive cells hold a second variant loaded for the whole agent run (the host gives
    // them an agent run of their own), held to the same quality gate as the first.
    let mut seconds: Vec<(QuantLevel, SecondLevel)> = Vec::new();
    for spec in plan.cells.iter().filter_map(|c| c.adaptive) {
        if !seconds.iter().any(|(q, _)| *q == spec.to) {
            let mut second = plan.clone();
            second.quant = spec.to;
            let level = Engine::open(&second)
                .map_err(|e| (false, format!("loading the {} level: {e}", spec.to)))
                .and_then(|e| match &plan.gate {
                    Some(g) => second_gate(&e, g, spec.to).map(|()| e),
                    None => Ok(e),
                });
            seconds.push((spec.to, level));
        }
    }
    let stop_requested = || {
        plan.stop_file
            .as_ref()
            .is_some_and(|f| Path::new(f).exists())
    };
    // `--require-battery`: the longest wait before the next cell. Once one cell on this
    // device waited in vain (here, or in an earlier agent run: the plan says), the rest only
    // check (an unplug is not coming; each waiting again would stretch an unattended run by
    // the limit per cell).
    let battery_wait = std::cell::Cell::new(
        plan.require_battery_s
            .map(|w| if plan.battery_waited_in_vain { 0.0 } else { w }),
    );
    for cell in &plan.cells {
        if stop_requested() {
            emitter.emit(&Event::Interrupted { t_s: t() });
            break;
        }
        let env = CellEnv {
            plan: &plan,
            engine: &engine,
            set: &set,
            emitter: &emitter,
            t: &t,
            stop_requested: &stop_requested,
            battery_wait: &battery_wait,
            seconds: &seconds,
        };
        if !run_cell(&env, cell) {
            emitter.emit(&Event::Interrupted { t_s: t() });
            break;
        }
    }
    sampler.stop();
    emitter.emit(&Event::Done { t_s: t() });
    Ok(())
}

/// Scores the gate text; when the variant is refused (or cannot be scored), every cell is
/// reported skipped (or failed) with the reason and `false` is returned.
fn passes_gate(
    engine: &Engine,
    gate: &QualityGate,
    plan: &Plan,
    emitter: &Emitter,
    t: &dyn Fn() -> f64,
) -> bool {
    let scored = engine
        .tokenize(socbench_kernels::generate::QUALITY_TEXT)
        .and_then(|ids| engine.perplexity(gate::gate_ids(&ids), gate::GATE_TOKENS));
    // (skipped rather than failed, why)
    let (skipped, reason) = match scored {
        Ok(p) => {
            let verdict = gate.check(p.perplexity);
            emitter.emit(&Event::Gate {
                t_s: t(),
                perplexity: p.perplexity,
                ratio: p.perplexity / gate.reference_perplexity,
                passed: verdict.is_ok(),
            });
            match verdict {
                Ok(_) => return true,
                Err(reason) => (true, reason),
            }
        }
        Err(e) => (
            false,
            format!("quality gate: the gate text could not be scored: {e}"),
        ),
    };
    for cell in &plan.cells {
        let (t_s, cell, reason) = (t(), cell.id.clone(), reason.clone());
        emitter.emit(&if skipped {
            Event::CellSkipped { t_s, cell, reason }
        } else {
            Event::CellFailed { t_s, cell, reason }
        });
    }
    false
}

/// What every cell of an agent run shares.
struct CellEnv<'a> {
    plan: &'a Plan,
    engine: &'a Engine,
    set: &'a SensorSet,
    emitter: &'a Emitter,
    t: &'a dyn Fn() -> f64,
    stop_requested: &'a dyn Fn() -> bool,
    /// `--require-battery`'s wait for the next cell (0 once a cell waited in vain).
    battery_wait: &'a std::cell::Cell<Option<f64>>,
    /// The second variants adaptive cells switch to, loaded beside the plan's.
    seconds: &'a [(QuantLevel, SecondLevel)],
}

/// Runs one cell; `false` when the stop file ended it.
fn run_cell(env: &CellEnv, cell: &Cell) -> bool {
    let CellEnv {
        plan,
        engine,
        set,
        emitter,
        t,
        stop_requested,
        ..
    } = *env;
    let battery_wait_s = match env.battery_wait.get() {
        None => 0.0,
        Some(max) => {
            match power::wait_for_battery(set, max, Duration::from_millis(250), stop_requested) {
                power::BatteryWait::Ready(s) => {
                    if s > 0.0 {
                        // Just unplugged: let the sampler see the battery on both sides of the
                        // first repetition's start (a row's power source is read from the
                        // samples around it).
                        std::thread::sleep(Duration::from_secs_f64(
                            (2.0 / plan.sample_hz).min(1.0),
                        ));
                    }
                    s
                }
                power::BatteryWait::Interrupted => return false,
                power::BatteryWait::Refused(mut reason) => {
                    if max == 0.0
                        && (plan.battery_waited_in_vain
                            || plan.require_battery_s.is_some_and(|m| m > 0.0))
                    {
                        reason.push_str(
                            " (an earlier cell already waited --battery-wait in vain: later \
                             cells only check)",
                        );
                    }
                    env.battery_wait.set(Some(0.0));
                    emitter.emit(&Event::CellSkipped {
                        t_s: t(),
                        cell: cell.id.clone(),
                        reason,
                    });
                    return true;
                }
            }
        }
    };
    // Fixed-performance mode for this cell only: off again when the guard drops, however the
    // cell ends. Before the cool-down gate, so the clocks have settled when it opens.
    let _fixed = if cell.fixed_performance {
        match perf::FixedPerformance::enable() {
            Ok(guard) => {
                std::thread::sleep(Duration::from_millis(250));
                Some(guard)
            }
            Err(reason) => {
                emitter.emit(&Event::CellSkipped {
                    t_s: t(),
                    cell: cell.id.clone(),
                    reason,
                });
                return true;
            }
        }
    } else {
        None
    };
    let (cooldown_s, start_temp) = cool_down(plan, set, stop_requested);
    emitter.emit(&Event::CellStart {
        t_s: t(),
        cell: cell.id.clone(),
        cooldown_wait_s: cooldown_s,
        start_temp_c: start_temp,
        battery_wait_s,
        freq: socbench_devices::conditions::freq(&sysfs_root()),
        thermal_status: read_named(set, "android_thermal_status"),
        battery_pct: read_named(set, "battery_capacity_pct"),
    });
    if std::env::var("SOCBENCH_TEST_AGENT_HANG").is_ok_and(|part| cell.id.contains(&part)) {
        // Test hook: an agent stuck in the cells whose id contains the variable's value (its
        // sampler goes on, nothing else comes), which the controller must detect as hung,
        // stop and record.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if let Ok(reason) = std::env::var("SOCBENCH_TEST_AGENT_FAIL") {
        // Test hook: every cell fails with this reason (any text, newlines included), so the
        // tests can follow a device's own words through to the results and the report.
        emitter.emit(&Event::CellFailed {
            t_s: t(),
            cell: cell.id.clone(),
            reason,
        });
        return true;
    }
    let prepared =
        prompt_ids(engine, cell.prompt_tokens).and_then(|p| Ok((p, engine.cell_runner(cell)?)));
    let (prompt, run_once) = match prepared {
        Ok(p) => p,
        Err(reason) => {
            emitter.emit(&Event::CellFailed {
                t_s: t(),
                cell: cell.id.clone(),
                reason,
            });
            return true;
        }
    };
    let (mut run_once, adapter) = match adaptive_runner(env, cell, run_once) {
        Ok(r) => r,
        Err((skipped, reason)) => {
            let (t_s, cell) = (t(), cell.id.clone());
            emitter.emit(&if skipped {
                Event::CellSkipped { t_s, cell, reason }
            } else {
                Event::CellFailed { t_s, cell, reason }
            });
            return true;
        }
    };
    let total = plan.warmup + cell.repetitions;
    for i in 0..total {
        let warmup = i < plan.warmup;
        let rep = if warmup { None } else { Some(i - plan.warmup) };
        if rep.is_some_and(|r| cell.skip_reps.contains(&r)) {
            continue;
        }
        if stop_requested() {
            return false;
        }
        if let (Some(a), true) = (&adapter, warmup) {
            // Both levels warm before any is measured.
            a.force(Some(true));
            if let Err(reason) = run_once(&prompt) {
                emitter.emit(&Event::CellFailed {
                    t_s: t(),
                    cell: cell.id.clone(),
                    reason,
                });
                return true;
            }
            a.force(Some(false));
        }
        release_freed_memory();
        let peak_reset = reset_peak_rss();
        let tasks_before = cpus::snapshot();
        if let (Some(a), false) = (&adapter, warmup) {
            a.force(None);
            // A session passed the cool-down gate: it starts on the first level. A plain
            // repetition goes on from where the last one left the decision.
            a.begin(cell.duration_s > 0);
        }
        // Every sustained session starts as cool as the cell did: the gate again before each
        // (after the warm-up, too).
        let gate = (cell.duration_s > 0 && !warmup).then(|| cool_down(plan, set, stop_requested));
        let t_start = t();
        // A sustained session's repetition generates back to back for its length; warm-up
        // runs stay single generations.
        let out = if cell.duration_s > 0 && !warmup {
            let length = Duration::from_secs(u64::from(cell.duration_s));
            match session::run(&mut run_once, &prompt, length, stop_requested) {
                Ok(None) => return false,
                Ok(Some(s)) => Ok((s.timings, Some(s.generations))),
                Err(e) => Err(e),
            }
        } else {
            run_once(&prompt).map(|g| (g, None))
        };
        let t_end = t();
        match out {
            Ok((g, generations)) => {
                let result = RepResult {
                    cell: cell.id.clone(),
                    repetition: rep,
                    t_start_s: t_start,
                    t_first_token_s: t_start + g.ttft.as_secs_f64(),
                    t_end_s: t_end,
                    ttft_s: g.ttft.as_secs_f64(),
                    decode_s: g.decode.iter().map(Duration::as_secs_f64).collect(),
                    prompt_tokens: prompt.len(),
                    batch: cell.batch,
                    peak_rss_bytes: own_memory("VmHWM:"),
                    peak_rss_is_per_rep: peak_reset,
                    pss_bytes: own_memory("Pss:"),
                    kv_cache_bytes: Some(g.kv_cache_bytes),
                    ran_on_cpus: cpus::ran_on(&tasks_before),
                    freq: socbench_devices::conditions::freq(&sysfs_root()),
                    thermal_status: read_named(set, "android_thermal_status"),
                    session: generations.map(|generations| SessionTrace {
                        generations,
                        token_s: g
                            .token_at
                            .iter()
                            .map(|d| t_start + d.as_secs_f64())
                            .collect(),
                    }),
                    adaptive: adapter.as_ref().map(adaptive::Adapter::finish),
                    cooldown_wait_s: gate.map(|g| g.0),
                    start_temp_c: gate.and_then(|g| g.1),
                };
                emitter.emit(&Event::Rep(result));
            }
            Err(e) => {
                emitter.emit(&Event::CellFailed {
                    t_s: t(),
                    cell: cell.id.clone(),
                    reason: e,
                });
                return true;
            }
        }
    }
    emitter.emit(&Event::CellEnd {
        t_s: t(),
        cell: cell.id.clone(),
        end_temp_c: max_temp(set),
        thermal_status: read_named(set, "android_thermal_status"),
    });
    true
}

/// An adaptive cell's second level: loaded, or why its cells are skipped (`true`) or failed.
type SecondLevel = Result<Engine, (bool, String)>;

/// The quality gate on an adaptive cell's second level: `Err((skipped, reason))` when it is
/// refused (or cannot be scored).
fn second_gate(
    engine: &Engine,
    gate: &QualityGate,
    level: QuantLevel,
) -> Result<(), (bool, String)> {
    let scored = engine
        .tokenize(socbench_kernels::generate::QUALITY_TEXT)
        .and_then(|ids| engine.perplexity(gate::gate_ids(&ids), gate::GATE_TOKENS))
        .map_err(|e| (false, format!("quality gate, second level {level}: {e}")))?;
    gate.check(scored.perplexity).map(|_| ()).map_err(|reason| {
        (
            true,
            format!("quality gate, second level {level}: {reason}"),
        )
    })
}

/// For an adaptive cell, its run on both levels ([`adaptive::wrap`]) and the handle on it;
/// otherwise `run_once` as it is. `Err((skipped, reason))` when the cell cannot adapt here.
#[allow(clippy::type_complexity)]
fn adaptive_runner<'e>(
    env: &CellEnv<'e>,
    cell: &Cell,
    run_once: engine::CellRun<'e>,
) -> Result<(engine::CellRun<'e>, Option<adaptive::Adapter>), (bool, String)> {
    let Some(spec) = cell.adaptive else {
        return Ok((run_once, None));
    };
    if spec.from != env.plan.quant {
        return Err((
            false,
            format!(
                "adaptive cell {spec} planned under a {} agent",
                env.plan.quant
            ),
        ));
    }
    let second = match env.seconds.iter().find(|(q, _)| *q == spec.to) {
        Some((_, Ok(engine))) => engine.cell_runner(cell).map_err(|e| (false, e))?,
        Some((_, Err(why))) => return Err(why.clone()),
        None => return Err((false, format!("the {} level was not loaded", spec.to))),
    };
    let set = env.set;
    if max_temp(set).is_none() {
        return Err((
            true,
            "adaptive precision needs a thermal zone to read, and this device has none".into(),
        ));
    }
    let (run, adapter) = adaptive::wrap(
        spec,
        run_once,
        second,
        env.t,
        Box::new(move || max_temp(set)),
    );
    Ok((run, Some(adapter)))
}

/// The cool-down gate (when the plan has one and the device a thermal zone): waits until the
/// hottest zone is within the plan's delta of the idle baseline, or its longest wait has
/// passed, or a stop is asked for (the caller then stops at its next check). Returns the
/// seconds waited and the temperature it let the run start at.
fn cool_down(plan: &Plan, set: &SensorSet, stop: &dyn Fn() -> bool) -> (f64, Option<f64>) {
    let gate_start = Instant::now();
    let mut start_temp = max_temp(set);
    if let (Some(cd), Some(_)) = (&plan.cooldown, start_temp) {
        let limit = cd.baseline_c + cd.delta_c;
        while start_temp.is_some_and(|tc| tc > limit)
            && gate_start.elapsed() < Duration::from_secs_f64(cd.max_wait_s)
            && !stop()
        {
            std::thread::sleep(Duration::from_millis(250));
            start_temp = max_temp(set);
        }
    }
    (gate_start.elapsed().as_secs_f64(), start_temp)
}

/// One reading of the named sensor, where the device has it.
fn read_named(set: &SensorSet, name: &str) -> Option<f64> {
    set.read_one(set.index(name)?)
}
