//! `socbench run` and `socbench init`.

use crate::cli::{InitArgs, RunArgs};
use crate::model_cache;
use crate::runner::supervise::HangTimeout;
use crate::runner::{self, RunContext, Target};
use crate::store::{self, Store};
use crate::sweep::{self, Sweep, axis};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use socbench_devices::adb;
use socbench_kernels::runtime::RuntimeKind;
use socbench_reports::row::Status;
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `socbench init`.
pub fn init(args: &InitArgs) -> Result<()> {
    if args.path.exists() && !args.force {
        bail!(
            "{} exists; pass --force to overwrite it",
            args.path.display()
        );
    }
    std::fs::write(&args.path, sweep::DEFAULT_SWEEP)
        .with_context(|| format!("writing {}", args.path.display()))?;
    eprintln!(
        "wrote {}; run it with `socbench run --config {}`",
        args.path.display(),
        args.path.display()
    );
    Ok(())
}

fn list<T>(
    flag: &str,
    v: &Option<String>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>> {
    let Some(v) = v else { return Ok(None) };
    let items: Vec<&str> = v.split(',').filter(|s| !s.trim().is_empty()).collect();
    if items.is_empty() {
        bail!("--{flag} is empty; give a comma-separated list");
    }
    items
        .iter()
        .map(|s| parse(&s.replace('+', ",")).map_err(|e| anyhow::anyhow!("--{flag}: {e}")))
        .collect::<Result<Vec<T>>>()
        .map(Some)
}

/// With an adapter file, the rank axis is the file's rank: the file is read (an unreadable or
/// malformed one is refused here, before any device), its path made absolute for the agent,
/// and a `lora_rank` axis naming other ranks refused.
fn lora_file_rank(sweep: &mut Sweep, rank_given: bool) -> Result<()> {
    let Some(file) = sweep.lora_file.clone() else {
        return Ok(());
    };
    if !sweep.lora.iter().any(Option::is_some) {
        bail!(
            "--lora {file}: no cell uses it; add --lora-mode unmerged,merged (or \
             none,unmerged,merged)"
        );
    }
    let path = std::path::Path::new(&file);
    let rank =
        socbench_kernels::lora::peft_rank(path).map_err(|e| anyhow::anyhow!("--lora: {e}"))?;
    if rank_given && sweep.lora_rank.iter().any(|&r| r != rank) {
        bail!(
            "--lora-rank {:?}: the adapter {file} has rank {rank}; drop --lora-rank or give {rank}",
            sweep.lora_rank
        );
    }
    sweep.lora_rank = vec![rank];
    if let Ok(abs) = path.canonicalize() {
        sweep.lora_file = Some(abs.display().to_string());
    }
    Ok(())
}

/// The adapter file checked against the model on the host (every tensor's name, shape and
/// layer, the scale): a bad adapter is one error before any device.
fn check_lora_file(sweep: &Sweep, model: &str) -> Result<()> {
    let Some(file) = &sweep.lora_file else {
        return Ok(());
    };
    let spec: socbench_kernels::load::ModelSpec = model.parse().map_err(anyhow::Error::msg)?;
    let gguf = spec.open()?;
    let config = socbench_kernels::model::LlamaConfig::from_gguf(&gguf)?;
    socbench_kernels::lora::LoraAdapters::from_peft(std::path::Path::new(file), &config)?;
    Ok(())
}

fn apply_flags(sweep: &mut Sweep, a: &RunArgs) -> Result<()> {
    // An axis given on the command line describes the grid wanted: the file's extra grids
    // (`[[also]]`) are dropped.
    let mut grid_flags = false;
    if let Some(v) = list("runtime", &a.runtime, axis::runtime)? {
        sweep.runtime = v;
        grid_flags = true;
    }
    if let Some(v) = list("backend", &a.backend, axis::backend)? {
        sweep.backend = v;
        grid_flags = true;
    }
    if let Some(v) = list("quant", &a.quant, axis::quant)? {
        sweep.quant = v;
        grid_flags = true;
    }
    if let Some(v) = list("threads", &a.threads, axis::threads)? {
        sweep.threads = v;
        grid_flags = true;
    }
    if let Some(v) = list("batch", &a.batch, axis::count)? {
        sweep.batch = v;
        grid_flags = true;
    }
    if let Some(v) = list("kv-window", &a.kv_window, axis::kv_window)? {
        sweep.kv_window = v;
        grid_flags = true;
    }
    if let Some(v) = list("prompt-tokens", &a.prompt_tokens, axis::count)? {
        sweep.prompt_tokens = v;
        grid_flags = true;
    }
    if let Some(v) = list("gen-tokens", &a.gen_tokens, axis::count)? {
        sweep.gen_tokens = v;
        grid_flags = true;
    }
    if let Some(v) = list("affinity", &a.affinity, axis::affinity)? {
        sweep.affinity = v;
        grid_flags = true;
    }
    if let Some(v) = list("pacing-ms", &a.pacing_ms, axis::pacing_ms)? {
        sweep.pacing_ms = v;
        grid_flags = true;
    }
    if let Some(v) = list("perf-mode", &a.perf_mode, axis::perf_mode)? {
        sweep.perf_mode = v;
        grid_flags = true;
    }
    if let Some(v) = list("duration-s", &a.duration_s, axis::duration_s)? {
        sweep.duration_s = v;
        grid_flags = true;
    }
    if let Some(v) = list("adaptive", &a.adaptive, axis::adaptive)? {
        sweep.adaptive = v;
        grid_flags = true;
    }
    if let Some(v) = list("lora-mode", &a.lora_mode, axis::lora)? {
        sweep.lora = v;
        grid_flags = true;
    }
    if let Some(v) = list("lora-rank", &a.lora_rank, axis::lora_rank)? {
        sweep.lora_rank = v;
        sweep.lora_rank_given = true;
        grid_flags = true;
    }
    if let Some(v) = list("kernel", &a.kernel, axis::kernel)? {
        sweep.kernel = v;
        grid_flags = true;
    }
    if grid_flags {
        sweep.also.clear();
    }
    if let Some(f) = &a.lora_file {
        sweep.lora_file = Some(f.display().to_string());
    }
    let rank_given = sweep.lora_rank_given;
    lora_file_rank(sweep, rank_given)?;
    if let Some(r) = a.repetitions {
        if r == 0 {
            bail!("--repetitions must be at least 1");
        }
        sweep.repetitions = r;
    }
    if let Some(w) = a.warmup {
        sweep.warmup = w;
    }
    if let Some(hz) = a.sample_hz {
        if !(hz > 0.0 && hz <= 1000.0) {
            bail!("--sample-hz must be in (0, 1000]");
        }
        sweep.sample_hz = hz;
    }
    if a.no_cooldown {
        sweep.cooldown = None;
    }
    if a.no_probe {
        sweep.probe = false;
    }
    if a.quality {
        sweep.quality = true;
    }
    if a.no_quality {
        sweep.quality = false;
    }
    if let Some(g) = a.quality_gate {
        sweep.quality_gate = g;
    }
    if let Some(m) = &a.model {
        sweep.model = Some(m.clone());
    }
    if !a.devices.is_empty() {
        sweep.devices = a.devices.clone();
    }
    sweep.check_combinations("command line")
}

/// Resolves `local`, `all` and serials to targets.
pub(crate) fn resolve_targets(
    names: &[String],
    servers: &[std::net::SocketAddrV4],
) -> Result<Vec<Target>> {
    let mut found: Vec<(String, String, String)> = Vec::new(); // serial, state, server
    let mut asked = false;
    let mut ask = |found: &mut Vec<(String, String, String)>| {
        if !asked {
            asked = true;
            for s in servers {
                match adb::list_devices(*s) {
                    Ok(list) => {
                        found.extend(list.into_iter().map(|e| (e.serial, e.state, e.server)))
                    }
                    // No server there is normal on a workstation without phones.
                    Err(e) => eprintln!("note: {e}"),
                }
            }
        }
    };
    let mut targets = Vec::new();
    for name in names {
        let t: Vec<Target> = match name.as_str() {
            "local" => vec![Target::Local],
            "all" => {
                ask(&mut found);
                let ready: Vec<Target> = found
                    .iter()
                    .filter(|(_, st, _)| st == "device")
                    .map(|(serial, _, server)| Target::Adb {
                        serial: serial.clone(),
                        server: server.clone(),
                    })
                    .collect();
                for (serial, st, _) in found.iter().filter(|(_, st, _)| st != "device") {
                    eprintln!("note: skipping {serial}: it is {st}");
                }
                if ready.is_empty() {
                    eprintln!("no device attached: benchmarking this host (`--device local`)");
                    vec![Target::Local]
                } else {
                    ready
                }
            }
            serial => {
                ask(&mut found);
                match found.iter().find(|(s, _, _)| s == serial) {
                    Some((s, st, server)) if st == "device" => {
                        vec![Target::Adb {
                            serial: s.clone(),
                            server: server.clone(),
                        }]
                    }
                    Some((s, st, _)) => {
                        bail!("device {s} is {st}; it must be in the `device` state")
                    }
                    None => bail!(
                        "device {serial} is not on any adb server ({}); `socbench devices` lists what is there",
                        servers
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
        };
        for x in t {
            if !targets.contains(&x) {
                targets.push(x);
            }
        }
    }
    Ok(targets)
}

fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The setting flags given with `--resume`, which would change the stored sweep.
fn setting_flags(a: &RunArgs) -> Vec<&'static str> {
    let given = [
        (a.model.is_some(), "--model"),
        (!a.devices.is_empty(), "--device"),
        (a.runtime.is_some(), "--runtime"),
        (a.backend.is_some(), "--backend"),
        (a.quant.is_some(), "--quant"),
        (a.threads.is_some(), "--threads"),
        (a.batch.is_some(), "--batch"),
        (a.kv_window.is_some(), "--kv-window"),
        (a.pacing_ms.is_some(), "--pacing-ms"),
        (a.perf_mode.is_some(), "--perf-mode"),
        (a.kernel.is_some(), "--kernel"),
        (a.duration_s.is_some(), "--duration-s"),
        (a.adaptive.is_some(), "--adaptive"),
        (a.lora_mode.is_some(), "--lora-mode"),
        (a.lora_rank.is_some(), "--lora-rank"),
        (a.lora_file.is_some(), "--lora"),
        (a.prompt_tokens.is_some(), "--prompt-tokens"),
        (a.gen_tokens.is_some(), "--gen-tokens"),
        (a.affinity.is_some(), "--affinity"),
        (a.repetitions.is_some(), "--repetitions"),
        (a.warmup.is_some(), "--warmup"),
        (a.sample_hz.is_some(), "--sample-hz"),
        (a.no_cooldown, "--no-cooldown"),
        (a.no_probe, "--no-probe"),
        (a.quality, "--quality"),
        (a.no_quality, "--no-quality"),
        (a.quality_gate.is_some(), "--quality-gate"),
    ];
    given.iter().filter(|(g, _)| *g).map(|(_, f)| *f).collect()
}

/// Whether `dir` may receive this run's rows: a directory holding another model's results or
/// rows of another plan is refused (its manifest would disagree with its rows), unless every
/// stored row belongs to this plan (the same sweep continued, or extended).
fn check_reuse(
    dir: &std::path::Path,
    earlier: &Value,
    model_id: &str,
    sweep: &Value,
    stored: &HashMap<String, store::Stored>,
    planned: &HashSet<String>,
) -> Result<()> {
    let new_dir = "use a new directory (--out DIR, or omit --out for a fresh one)";
    if stored.is_empty() {
        return Ok(());
    }
    if let Some(theirs) = earlier["model_id"].as_str()
        && theirs != model_id
    {
        bail!(
            "{}: holds results of model {theirs}, and this run measures {model_id}; {new_dir}",
            dir.display()
        );
    }
    if earlier["model_id"].is_null() {
        bail!(
            "{}: holds results without a model identity (an earlier socbench); {new_dir}",
            dir.display()
        );
    }
    // How every repetition is measured must not change under the rows already there.
    for key in ["warmup", "sample_hz", "cooldown", "quality"] {
        let (before, now) = (&earlier["sweep"][key], &sweep[key]);
        if !before.is_null() && before != now {
            bail!(
                "{}: its rows were measured with {key} = {before}, and this run asks for {now}; \
                 {new_dir}",
                dir.display()
            );
        }
    }
    let foreign: Vec<&String> = stored.keys().filter(|id| !planned.contains(*id)).collect();
    if let Some(first) = foreign.iter().min() {
        bail!(
            "{}: holds {} result(s) outside this run's plan (e.g. `{first}`): it is another \
             sweep. Continue that one with `socbench run --resume {}`, or {new_dir}",
            dir.display(),
            foreign.len(),
            dir.display()
        );
    }
    Ok(())
}

/// How a sweep ended, from the directory's rows for the planned run ids.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    ok: usize,
    failed: usize,
    lost: usize,
    skipped: usize,
    missing: usize,
}

impl Tally {
    fn of(stored: &HashMap<String, store::Stored>, planned: &HashSet<String>) -> Self {
        let mut t = Tally::default();
        for id in planned {
            match stored.get(id).map(|s| s.status) {
                Some(Status::Ok) => t.ok += 1,
                Some(Status::Failed) => t.failed += 1,
                Some(Status::DeviceLost) => t.lost += 1,
                Some(Status::Skipped) => t.skipped += 1,
                None => t.missing += 1,
            }
        }
        t
    }

    /// 0 when everything planned is ok or deliberately skipped and something was measured;
    /// 1 otherwise (a failed, lost or missing repetition, or nothing ok at all).
    fn exit_code(&self) -> u8 {
        if self.failed + self.lost + self.missing > 0 || self.ok == 0 {
            1
        } else {
            0
        }
    }
}

/// `socbench run`.
pub fn run(a: &RunArgs) -> Result<ExitCode> {
    if !(a.device_wait.is_finite() && a.device_wait >= 0.0) {
        bail!("--device-wait must be a number of seconds ≥ 0");
    }
    let hang_timeout = match a.hang_timeout {
        None => HangTimeout::Auto,
        Some(s) if s.is_finite() && s > 0.0 => HangTimeout::Fixed(Duration::from_secs_f64(s)),
        Some(s) => bail!("--hang-timeout {s}: must be a number of seconds > 0"),
    };
    if !(a.battery_wait.is_finite() && a.battery_wait >= 0.0) {
        bail!(
            "--battery-wait {}: must be a number of seconds ≥ 0",
            a.battery_wait
        );
    }
    let mut require_battery_s = a.require_battery.then_some(a.battery_wait);
    if let Some(dir) = &a.resume {
        let flags = setting_flags(a);
        if !flags.is_empty() {
            bail!(
                "--resume continues the sweep stored in {}; {} would change it. Drop {}, or \
                 start a new directory with --out",
                dir.display(),
                flags.join(", "),
                if flags.len() == 1 { "it" } else { "them" }
            );
        }
    }
    // The whole sweep is validated before any device is touched.
    let (mut sweep, out_dir, resumed_targets) = match &a.resume {
        Some(dir) => {
            let path = dir.join("manifest.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "{}: cannot resume (is it a socbench output directory?)",
                    path.display()
                )
            })?;
            let m: Value =
                serde_json::from_str(&text).with_context(|| format!("{}", path.display()))?;
            let sweep: Sweep = serde_json::from_value(m["sweep"].clone())
                .with_context(|| format!("{}: `sweep`", path.display()))?;
            // A sweep started with --require-battery keeps it: its energy rows must not be
            // joined by rows measured on a cable.
            if require_battery_s.is_none()
                && let Some(wait) = m["require_battery_s"].as_f64()
            {
                eprintln!(
                    "resuming with --require-battery --battery-wait {wait} as the sweep was started"
                );
                require_battery_s = Some(wait);
            }
            let targets: Vec<Target> = m["devices"]
                .as_array()
                .map(|d| {
                    d.iter()
                        .filter_map(|x| serde_json::from_value(x["target"].clone()).ok())
                        .collect()
                })
                .unwrap_or_default();
            (sweep, dir.clone(), Some(targets))
        }
        None => {
            let sweep = Sweep::load(a.config.as_deref())?;
            let out = a
                .out
                .clone()
                .or_else(|| sweep.out.clone().map(Into::into))
                .unwrap_or_else(|| std::path::Path::new("socbench-results").join(utc_stamp()));
            (sweep, out, None)
        }
    };
    if a.resume.is_none() {
        apply_flags(&mut sweep, a)?;
    }
    let servers = a.servers.servers();
    if a.dry_run {
        let n = sweep.cells_per_device();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"sweep": sweep, "cells_per_device": n,
            "runs_per_device": n * (sweep.repetitions + sweep.warmup), "out": out_dir}))?
        );
        eprintln!(
            "plan: {n} cells per device × ({} repetitions + {} warm-up); devices: {}",
            sweep.repetitions,
            sweep.warmup,
            sweep.devices.join(", ")
        );
        let session_s: u64 = sweep.duration_s.iter().map(|&d| u64::from(d)).sum();
        if session_s > 0 {
            // Every other axis multiplies the session lengths (its cells per length).
            let per_length = (n / sweep.duration_s.len()) as u64;
            eprintln!(
                "sustained sessions alone: at least {:.0} min per device",
                (session_s * per_length * sweep.repetitions as u64) as f64 / 60.0
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let model = match &sweep.model {
        Some(m) if m == "synthetic:tiny" => m.clone(),
        Some(m) => {
            let p = std::path::Path::new(m);
            if !p.is_file() {
                bail!(
                    "model {m} not found; pass a GGUF file, `synthetic:tiny`, or omit --model for SmolLM2"
                );
            }
            p.canonicalize()?.display().to_string()
        }
        None => {
            let p = model_cache::default_model_path();
            if !p.exists() {
                eprintln!("fetching the default model (SmolLM2-135M-Instruct Q4_1)…");
                model_cache::fetch(false)?;
            }
            p.display().to_string()
        }
    };
    // Reads and checks the whole file: a bad model is one error before any device.
    let model_id = model_cache::model_identity(&model)?;
    let burn_unsupported = model_cache::burn_unsupported(&model)?;
    if let Some(why) = burn_unsupported
        .as_ref()
        .filter(|_| sweep.has_runtime(RuntimeKind::Burn))
    {
        eprintln!("the Burn runtime's cells will be skipped: {model}: {why}");
    }
    check_lora_file(&sweep, &model)?;
    let targets = match resumed_targets {
        Some(t) if !t.is_empty() => t,
        _ => resolve_targets(&sweep.devices, &servers)?,
    };
    // Device infos and per-device plans (cluster names, CPU numbers) before anything runs.
    let mut planned = Vec::new();
    for t in &targets {
        let mut dev = t.open()?;
        let info = dev
            .info()
            .with_context(|| format!("device {}", t.serial()))?;
        let cells = sweep::plan_device(&sweep, &info)?;
        // This host runs its own agent: a kernel variant its CPU lacks is refused here, before
        // anything runs (a phone's cells of one are skipped with the reason).
        if matches!(t, Target::Local)
            && let Some(Err(e)) = cells
                .iter()
                .map(|c| c.kernel)
                .find(|k| k.check_here().is_err())
                .map(|k| k.check_here())
        {
            bail!("--device local: {e}");
        }
        planned.push((t.clone(), info, cells));
    }
    let forced: Vec<String> = sweep
        .kernel
        .iter()
        .filter(|k| **k != socbench_kernels::qmatmul::KernelTier::Auto)
        .map(|k| k.to_string())
        .collect();
    if !forced.is_empty()
        && planned
            .iter()
            .flat_map(|(_, _, cells)| cells.iter())
            .all(|c| c.kernel == socbench_kernels::qmatmul::KernelTier::Auto)
    {
        eprintln!(
            "warning: kernel {} runs in no cell: only Burn's q8, q4 and q4_0 cells on the CPU \
             backends run the packed kernels",
            forced.join(", ")
        );
    }
    let planned_ids: HashSet<String> = planned
        .iter()
        .flat_map(|(_, _, cells)| cells.iter())
        .flat_map(|c| (0..sweep.repetitions).map(|r| runner::run_id(&model_id, c, r)))
        .collect();
    // What earlier sessions of this directory recorded: their list (a resumed run keeps it)
    // and the roofs they measured (a device is probed once per directory).
    let earlier: Value = std::fs::read_to_string(out_dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    // One session per directory: two would plan and measure the same missing repetitions.
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let lock_path = out_dir.join(".lock");
    let session_lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    match session_lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{}: another socbench run is writing to this directory; wait for it to finish, or \
             use another --out",
            out_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", lock_path.display()));
        }
    }
    let stored = store::done_runs(&out_dir)?;
    check_reuse(
        &out_dir,
        &earlier,
        &model_id,
        &serde_json::to_value(&sweep)?,
        &stored,
        &planned_ids,
    )?;
    let session = format!("{}-{}", utc_stamp(), std::process::id());
    let store = Store::open(&out_dir, &session)?;
    for msg in store.repairs() {
        eprintln!("repaired: {msg}; that repetition runs again");
    }
    let mut sessions: Vec<Value> = earlier["sessions"].as_array().cloned().unwrap_or_default();
    let done = store::done_runs(&out_dir)?;
    let known_rooflines: HashMap<String, Value> = earlier["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let serial = d["info"]["serial"].as_str()?.to_owned();
            let roof = d["outcome"]["roofline"].clone();
            roof.is_object().then_some((serial, roof))
        })
        .collect();
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        let dirs: Vec<std::path::PathBuf> = planned
            .iter()
            .map(|(t, ..)| runner::agent_workdir(&out_dir, t.serial()))
            .collect();
        let remote: Vec<Target> = planned.iter().map(|(t, ..)| t.clone()).collect();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("second interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!(
                "interrupt: finishing the current repetition (a sustained session stops unkept at its next generation), then stopping (Ctrl-C again to quit now)"
            );
            for d in &dirs {
                let _ = std::fs::write(d.join("STOP"), b"");
            }
            for t in &remote {
                if let (Target::Adb { .. }, Ok(mut dev)) = (t, t.open()) {
                    let _ = dev.run(
                        &["touch", "/data/local/tmp/socbench/STOP"],
                        Duration::from_secs(5),
                    );
                }
            }
        });
    }
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    sessions.push(json!({
        "id": session,
        "started_unix_s": started,
        "command_line": std::env::args().collect::<Vec<_>>(),
        "socbench_version": env!("CARGO_PKG_VERSION"),
        "git_hash": env!("SOCBENCH_GIT_HASH"),
    }));
    // The quality gate's f32 reference, once, on this host's CPU.
    let gate = match &burn_unsupported {
        None => crate::session::quality_gate(&model, sweep.quality_gate),
        Some(_) if sweep.quality_gate > 0.0 => {
            eprintln!("quality gate off: its f32 reference runs on the Burn runtime");
            None
        }
        Some(_) => None,
    };
    let manifest = |outcomes: &[Option<runner::DeviceOutcome>], finished: bool| {
        json!({
            "socbench_version": env!("CARGO_PKG_VERSION"),
            "git_hash": env!("SOCBENCH_GIT_HASH"),
            "build_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "started_unix_s": started,
            "finished": finished,
            "command_line": std::env::args().collect::<Vec<_>>(),
            "model": model,
            "model_id": model_id,
            "model_bytes": std::fs::metadata(&model).ok().map(|m| m.len()),
            "sweep": sweep,
            "quality_gate": gate,
            "require_battery_s": require_battery_s,
            "devices": planned.iter().zip(outcomes).map(|((t, info, cells), o)| runner::device_manifest(t, info, cells.len(), o.as_ref())).collect::<Vec<_>>(),
            "interrupted": interrupted.load(Ordering::Relaxed),
            "sessions": sessions,
        })
    };
    store.write_manifest(&manifest(&vec![None; planned.len()], false))?;
    eprintln!("results: {}", out_dir.display());
    // The files llama.cpp runs, one per level, made (once, cached) before any device starts.
    let mut llama_models = std::collections::BTreeMap::new();
    for level in sweep.llama_cpp_levels() {
        let file = model_cache::llama_cpp_model(&model, &model_id, level, &|m| eprintln!("{m}"));
        llama_models.insert(level, file);
    }
    let ctx = RunContext {
        model: model.clone(),
        model_id: model_id.clone(),
        llama_models,
        burn_unsupported,
        hang_timeout,
        device_wait: Duration::from_secs_f64(a.device_wait),
        interrupted: Arc::clone(&interrupted),
        progress: crate::progress::Progress::new(),
        probe: sweep.probe,
        known_rooflines,
        gate,
        require_battery_s,
    };
    let outcomes: Vec<Option<runner::DeviceOutcome>> = std::thread::scope(|s| {
        let handles: Vec<_> = planned
            .iter()
            .map(|(t, info, cells)| {
                let (sweep, ctx, store, done) = (&sweep, &ctx, &store, &done);
                s.spawn(move || runner::run_device(t, info, cells, sweep, ctx, store, done))
            })
            .collect();
        handles.into_iter().map(|h| h.join().ok()).collect()
    });
    store.flush()?;
    let was_interrupted = interrupted.load(Ordering::Relaxed);
    store.write_manifest(&manifest(&outcomes, !was_interrupted))?;
    let mut totals = std::collections::BTreeMap::<String, usize>::new();
    for o in outcomes.iter().flatten() {
        for (k, v) in &o.rows {
            *totals.entry(k.clone()).or_default() += v;
        }
    }
    eprintln!("rows written: {totals:?}; results in {}", out_dir.display());
    // The data is safe on disk whatever happens here: a report that fails is a warning.
    let report = out_dir.join("report.html");
    match super::report::write_html(std::slice::from_ref(&out_dir), &report) {
        Ok(()) => eprintln!("report: {}", report.display()),
        Err(e) => eprintln!(
            "warning: report not written ({e:#}); retry with `socbench report {}`",
            out_dir.display()
        ),
    }
    if was_interrupted {
        eprintln!(
            "interrupted; continue with `socbench run --resume {}`",
            out_dir.display()
        );
        return Ok(ExitCode::from(130));
    }
    let tally = Tally::of(&store::done_runs(&out_dir)?, &planned_ids);
    let code = tally.exit_code();
    if code != 0 {
        eprintln!(
            "sweep incomplete (exit {code}): of {} planned repetitions {} ok, {} failed, {} \
             device_lost, {} skipped, {} not run; `socbench run --resume {}` retries what is \
             not ok",
            planned_ids.len(),
            tally.ok,
            tally.failed,
            tally.lost,
            tally.skipped,
            tally.missing,
            out_dir.display()
        );
    }
    Ok(ExitCode::from(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(rows: &[(&str, Status)]) -> HashMap<String, store::Stored> {
        rows.iter()
            .map(|(id, s)| {
                (
                    (*id).to_owned(),
                    store::Stored {
                        status: *s,
                        note: String::new(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn exit_status_is_zero_only_when_everything_planned_is_ok_or_skipped() {
        let planned: HashSet<String> = ["a", "b"].map(String::from).into();
        let code = |rows: &[(&str, Status)]| Tally::of(&stored(rows), &planned).exit_code();
        assert_eq!(code(&[("a", Status::Ok), ("b", Status::Ok)]), 0);
        assert_eq!(code(&[("a", Status::Ok), ("b", Status::Skipped)]), 0);
        assert_eq!(code(&[("a", Status::Skipped), ("b", Status::Skipped)]), 1);
        assert_eq!(code(&[("a", Status::Ok), ("b", Status::Failed)]), 1);
        assert_eq!(code(&[("a", Status::Ok), ("b", Status::DeviceLost)]), 1);
        assert_eq!(code(&[("a", Status::Ok)]), 1, "b never ran");
    }

    #[test]
    fn another_model_or_another_plan_in_the_directory_is_refused() {
        let dir = std::path::Path::new("D");
        let planned: HashSet<String> = ["m@1|x#0", "m@1|x#1"].map(String::from).into();
        let sweep = json!({"warmup": 1, "quality": false});
        let manifest = json!({"model_id": "m@1", "sweep": sweep});
        let rows = stored(&[("m@1|x#0", Status::Ok)]);
        check_reuse(dir, &manifest, "m@1", &sweep, &rows, &planned).unwrap();
        let e = check_reuse(dir, &manifest, "other@2", &sweep, &rows, &planned).unwrap_err();
        assert!(format!("{e}").contains("holds results of model m@1"), "{e}");
        let warmer = json!({"warmup": 3, "quality": false});
        let e = check_reuse(dir, &manifest, "m@1", &warmer, &rows, &planned).unwrap_err();
        assert!(format!("{e}").contains("warmup = 1"), "{e}");
        let rows = stored(&[("m@1|y#0", Status::Ok)]);
        let e = check_reuse(dir, &manifest, "m@1", &sweep, &rows, &planned).unwrap_err();
        assert!(format!("{e}").contains("outside this run's plan"), "{e}");
        // A directory without rows takes anything.
        let none = HashMap::new();
        check_reuse(dir, &Value::Null, "m@1", &sweep, &none, &planned).unwrap();
        check_reuse(dir, &manifest, "other@2", &sweep, &none, &planned).unwrap();
    }
}
