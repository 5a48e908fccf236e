//! `socbench probe`: each device's roofs (STREAM triad bandwidth, f32 GEMM), measured on the
//! device by its agent.

use crate::cli::ProbeArgs;
use crate::runner::Target;
use crate::runner::deploy::{self, run_agent};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::time::Duration;

/// Probes one target: deploys its agent (for a phone) and runs `socbench-agent probe`.
fn probe_one(target: &Target, args: &[String]) -> Result<Value> {
    let serial = target.serial().to_owned();
    let mut dev = target.open()?;
    let info = dev.info().with_context(|| format!("device {serial}"))?;
    let agent_local =
        deploy::agent_for_abi(&info.abi).map_err(|e| anyhow::anyhow!("device {serial}: {e}"))?;
    let agent = match target {
        Target::Local => deploy::local_agent(&agent_local),
        Target::Adb { .. } => {
            deploy::push_agent(&mut dev, &agent_local)
                .with_context(|| format!("device {serial}: deploying the agent"))?
                .0
        }
    };
    let mut argv = vec!["probe"];
    argv.extend(args.iter().map(String::as_str));
    let out = run_agent(&mut dev, &agent, &argv, Duration::from_secs(900))
        .with_context(|| format!("device {serial}: running the probe"))?;
    if out.status != 0 {
        bail!(
            "device {serial}: the probe exited with status {}: {}",
            out.status,
            out.stderr_text().trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("device {serial}: the probe printed no JSON"))?;
    Ok(json!({"device": serial, "abi": info.abi, "cpus": v["cpus"], "roofline": v["roofline"]}))
}

/// Runs the command.
pub fn run(a: &ProbeArgs) -> Result<()> {
    let mut args = Vec::new();
    if let Some(t) = &a.threads {
        // Checked here so a typo is one error before any device is touched.
        for part in t.split(',') {
            if !part.trim().parse::<usize>().is_ok_and(|n| n > 0) {
                bail!("--threads {t:?}: `{part}` is not a positive integer (e.g. 1,2,4)");
            }
        }
        args.extend(["--threads".to_owned(), t.clone()]);
    }
    if a.quick {
        args.push("--quick".to_owned());
    }
    let targets = super::run::resolve_targets(&a.devices, &a.servers.servers())?;
    let mut results = Vec::new();
    for t in &targets {
        eprintln!("[{}] probing…", t.serial());
        results.push(probe_one(t, &args)?);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    println!(
        "{:<22} {:>7} {:>14} {:>16}",
        "DEVICE", "THREADS", "TRIAD GB/s", "GEMM GFLOP/s"
    );
    for r in &results {
        let triad = r["roofline"]["triad"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let gemm = r["roofline"]["gemm"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (t, g) in triad.iter().zip(&gemm) {
            println!(
                "{:<22} {:>7} {:>14.1} {:>16.1}",
                r["device"].as_str().unwrap_or("?"),
                t["threads"],
                t["best"].as_f64().unwrap_or(f64::NAN),
                g["best"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}
