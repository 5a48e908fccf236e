//! Before a device's cells run: the agent and the model deployed, an agent left by an earlier
//! run stopped, and what the deployed agent says of itself (its build and backends, its
//! kernels' self-check), the idle temperature for the cool-down gate and the device's roofs.
//! Cells the device cannot run are marked `skipped` here, with the reason.

use super::rows::AgentRun;
use super::{DeviceOutcome, PlannedCell, RunContext, Target, deploy, supervise};
use crate::sweep::Sweep;
use deploy::{AgentCmd, run_agent};
use serde_json::Value;
use socbench_agent::plan::Cooldown;
use socbench_devices::{Device, DeviceError, DeviceInfo};
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::quant::packed_format;
use socbench_kernels::roofline::Roofline;
use socbench_kernels::runtime::RuntimeKind;
use socbench_reports::row::Status;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// A device ready to run its cells.
pub(super) struct Ready<'c> {
    /// How to start the agent there.
    pub agent: AgentCmd,
    /// The model's path there.
    pub model: String,
    /// The files llama.cpp runs there, by level.
    pub llama_models: BTreeMap<QuantLevel, String>,
    /// The LoRA adapter file there (`--lora`), when a cell uses it.
    pub lora_file: Option<String>,
    /// The agent lock's path there.
    pub lock: String,
    /// The cool-down gate, when the device has a thermal sensor.
    pub cooldown: Option<Cooldown>,
    /// The cells still to run.
    pub cells: Vec<&'c PlannedCell>,
}

/// Deploys and checks; `Err` when nothing is left to run (with the reason the device stopped,
/// if it did), every affected cell already marked.
#[allow(clippy::too_many_arguments)]
pub(super) fn prepare<'c>(
    dev: &mut Box<dyn Device>,
    target: &Target,
    info: &DeviceInfo,
    sweep: &Sweep,
    ctx: &RunContext,
    run: &mut AgentRun<'_>,
    outcome: &mut DeviceOutcome,
    pending_cells: Vec<&'c PlannedCell>,
    remote_dir: &str,
) -> Result<Ready<'c>, Option<String>> {
    let ui = run.ui.clone();
    let log = |msg: &str| ui.log(msg);
    let serial = target.serial().to_owned();
    let is_local = matches!(target, Target::Local);
    // Cells whose axis values a runtime cannot honour, or whose llama.cpp file could not be
    // made, are skipped with the reason before anything is deployed.
    let mut pending_cells = pending_cells;
    let mut unsupported: BTreeMap<String, Vec<&PlannedCell>> = BTreeMap::new();
    pending_cells.retain(|&c| {
        let why = c.unsupported().or_else(|| match c.runtime {
            RuntimeKind::LlamaCpp => match ctx.llama_models.get(&c.quant) {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(e.clone()),
                None => Some("no llama.cpp file was prepared for this level".into()),
            },
            RuntimeKind::Burn => ctx.burn_unsupported.clone(),
        });
        match why {
            Some(reason) => {
                unsupported.entry(reason).or_default().push(c);
                false
            }
            None => true,
        }
    });
    for (reason, cells) in &unsupported {
        log(&format!("skipping {} cells: {reason}", cells.len()));
        run.mark(cells, Status::Skipped, reason);
    }
    if pending_cells.is_empty() {
        return Err(None);
    }
    // The llama.cpp files these cells need, on the host.
    let llama_files: BTreeMap<QuantLevel, std::path::PathBuf> = pending_cells
        .iter()
        .filter(|c| c.runtime == RuntimeKind::LlamaCpp)
        .filter_map(|c| match ctx.llama_models.get(&c.quant) {
            Some(Ok(p)) => Some((c.quant, p.clone())),
            _ => None,
        })
        .collect();
    let agent_local = match deploy::agent_for_abi(&info.abi) {
        Ok(p) => p,
        Err(reason) => {
            log(&format!("skipping all cells: {reason}"));
            run.mark(&pending_cells, Status::Skipped, &reason);
            return Err(Some(reason));
        }
    };
    type Deployed = (AgentCmd, String, BTreeMap<QuantLevel, String>);
    let lora_host = sweep
        .lora_file
        .as_ref()
        .filter(|_| pending_cells.iter().any(|c| c.lora.is_some()));
    let deploy_to = |dev: &mut Box<dyn Device>| -> std::result::Result<Deployed, DeviceError> {
        if is_local {
            let llama = llama_files
                .iter()
                .map(|(&q, p)| (q, p.display().to_string()))
                .collect();
            return Ok((deploy::local_agent(&agent_local), ctx.model.clone(), llama));
        }
        let (agent, how) = deploy::push_agent(dev, &agent_local)?;
        log(&format!("agent: {how}"));
        let mut push_model = |host: &Path| -> std::result::Result<String, DeviceError> {
            let name = host
                .file_name()
                .map_or("model.gguf".into(), |n| n.to_string_lossy().into_owned());
            let remote = format!("{remote_dir}/models/{name}");
            let o = dev.push(host, &remote)?;
            log(&format!("model: {o:?}"));
            Ok(remote)
        };
        let mut llama = BTreeMap::new();
        for (&q, p) in &llama_files {
            llama.insert(q, push_model(p)?);
        }
        let needs_burn_model = pending_cells.iter().any(|c| c.runtime == RuntimeKind::Burn);
        if ctx.model == "synthetic:tiny" || !needs_burn_model {
            return Ok((agent, ctx.model.clone(), llama));
        }
        let remote = push_model(Path::new(&ctx.model))?;
        Ok((agent, remote, llama))
    };
    // The adapter and the adapter_config.json beside it (its scale), into a folder of their own.
    let push_lora =
        |dev: &mut Box<dyn Device>| -> std::result::Result<Option<String>, DeviceError> {
            let Some(host) = lora_host else {
                return Ok(None);
            };
            if is_local {
                return Ok(Some(host.clone()));
            }
            let host = Path::new(host);
            let name = host.file_name().map_or("adapter.safetensors".into(), |n| {
                n.to_string_lossy().into_owned()
            });
            let remote = format!("{remote_dir}/lora/{name}");
            dev.push(host, &remote)?;
            // Its scale: a config left there by another adapter must not apply to this one.
            let config = host.with_file_name("adapter_config.json");
            let remote_config = format!("{remote_dir}/lora/adapter_config.json");
            if config.exists() {
                dev.push(&config, &remote_config)?;
            } else {
                dev.remove(&remote_config)?;
            }
            log(&format!("LoRA adapter: {remote}"));
            Ok(Some(remote))
        };
    let deployed = deploy_to(dev).and_then(|d| push_lora(dev).map(|l| (d, l)));
    let ((agent, model, llama_models), lora_file) = match deployed {
        Ok(x) => x,
        Err(e) => {
            let note = format!("deploying: {e}");
            log(&note);
            let status = if e.is_disconnect() {
                Status::DeviceLost
            } else {
                Status::Failed
            };
            run.mark(&pending_cells, status, &note);
            return Err(Some(note));
        }
    };
    // One agent per device: one left running by an earlier run (a controller killed with -9)
    // is stopped before anything else runs there.
    let lock = format!("{remote_dir}/agent.lock");
    match supervise::stop_stale(dev, &agent, &lock) {
        supervise::Stale::None => {}
        supervise::Stale::Stopped(msg) => log(&msg),
        supervise::Stale::Busy(reason) => {
            log(&reason);
            run.mark(&pending_cells, Status::Failed, &reason);
            return Err(Some(reason));
        }
    }
    // Cells for a backend this agent build lacks (wgpu in the static musl agent) are skipped
    // with the reason, not run into an error each.
    let built = run_agent(dev, &agent, &["info"], Duration::from_secs(60))
        .ok()
        .filter(|o| o.status == 0)
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
    if let Some(note) = built.as_ref().and_then(deploy::agent_build_mismatch) {
        log(&note);
    }
    outcome.agent = built.clone();
    // The packed kernels against the portable reference on this CPU: cells that would run
    // them are not measured when they disagree.
    let selftest = run_agent(dev, &agent, &["selftest"], Duration::from_secs(120))
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok());
    let pending_cells = match selftest.as_ref().and_then(deploy::kernel_check_failure) {
        Some(reason) => {
            let (packed, rest): (Vec<&PlannedCell>, Vec<&PlannedCell>) =
                pending_cells.into_iter().partition(|c| {
                    c.runtime == RuntimeKind::Burn
                        && std::iter::once(c.quant)
                            .chain(c.adaptive.map(|a| a.to))
                            .any(|q| packed_format(q, c.backend).is_some())
                });
            log(&format!("skipping {} packed cells: {reason}", packed.len()));
            run.mark(&packed, Status::Skipped, &reason);
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
            // An agent without llama.cpp (built without it; one whose llama.cpp needs more
            // than this CPU has; one from before the runtime axis, which does not list
            // `runtimes`) skips those cells.
            let has_llama = b["runtimes"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some("llama.cpp")));
            let (llama, pending_cells): (Vec<&PlannedCell>, Vec<&PlannedCell>) = pending_cells
                .into_iter()
                .partition(|c| c.runtime == RuntimeKind::LlamaCpp && !has_llama);
            if !llama.is_empty() {
                let (arch, env) = (
                    b["arch"].as_str().unwrap_or("?"),
                    b["env"].as_str().unwrap_or(""),
                );
                let reason = match b["llama_cpp"]["unavailable"].as_str() {
                    Some(why) => {
                        format!("this device's CPU cannot run the agent's llama.cpp: {why}")
                    }
                    None if (arch, env) == ("aarch64", "musl") => format!(
                        "this agent ({arch} {env}) was built without llama.cpp: \
                         `scripts/build-agent arm64-v8a` compiles it in with zig (pip install \
                         ziglang)"
                    ),
                    None => format!(
                        "this agent ({arch} {env}) was built without llama.cpp (cargo feature \
                         `llama-cpp`)"
                    ),
                };
                log(&format!(
                    "skipping {} llama.cpp cells: {reason}",
                    llama.len()
                ));
                run.mark(&llama, Status::Skipped, &reason);
            }
            let (run_now, lacking): (Vec<&PlannedCell>, Vec<&PlannedCell>) = pending_cells
                .into_iter()
                .partition(|c| c.runtime == RuntimeKind::LlamaCpp || has(c.backend.name()));
            for backend in lacking.iter().map(|c| c.backend).collect::<BTreeSet<_>>() {
                let these: Vec<&PlannedCell> = lacking
                    .iter()
                    .copied()
                    .filter(|c| c.backend == backend)
                    .collect();
                let reason = deploy::missing_backend_reason(backend.name(), &info.abi, b);
                log(&format!(
                    "skipping {} {backend} cells: {reason}",
                    these.len()
                ));
                run.mark(&these, Status::Skipped, &reason);
            }
            // A forced kernel variant this device's CPU lacks (`kernels` of its `info`).
            let kernels: Vec<String> = b["kernels"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let (run_now, lacking): (Vec<&PlannedCell>, Vec<&PlannedCell>) = run_now
                .into_iter()
                .partition(|c| c.kernel.check_on(&info.serial, &kernels).is_ok());
            for tier in lacking.iter().map(|c| c.kernel).collect::<BTreeSet<_>>() {
                let these: Vec<&PlannedCell> = lacking
                    .iter()
                    .copied()
                    .filter(|c| c.kernel == tier)
                    .collect();
                let reason = tier
                    .check_on(&info.serial, &kernels)
                    .err()
                    .unwrap_or_default();
                log(&format!("skipping {} cells: {reason}", these.len()));
                run.mark(&these, Status::Skipped, &reason);
            }
            if run_now.is_empty() {
                return Err(None);
            }
            run_now
        }
        None => pending_cells,
    };
    // Idle temperature for the cool-down gate, before any cell runs.
    let cooldown = sweep.cooldown.and_then(|(delta, max_wait)| {
        let out = run_agent(dev, &agent, &["sensors"], Duration::from_secs(30)).ok()?;
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
            match run_agent(dev, &agent, &["probe"], Duration::from_secs(600)) {
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

    Ok(Ready {
        agent,
        model,
        llama_models,
        lora_file,
        lock,
        cooldown,
        cells: pending_cells,
    })
}
