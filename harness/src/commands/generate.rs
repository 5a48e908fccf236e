//! `socbench generate`.

use crate::cli::GenerateArgs;
use crate::session::{Session, observe_threads};
use anyhow::Result;
use serde_json::json;
use socbench_kernels::generate::{GenerateOptions, Generation, Sampling, generate};

/// Runs the command.
pub fn run(args: &GenerateArgs) -> Result<()> {
    if args.tokens == 0 {
        anyhow::bail!("-n/--tokens must be at least 1");
    }
    let sampling = match (args.seed, args.temperature) {
        (_, Some(t)) if t < 0.0 || !t.is_finite() => {
            anyhow::bail!("--temperature must be a finite number ≥ 0 (0 means greedy)")
        }
        (_, Some(0.0)) => Sampling::Greedy,
        (None, None) => Sampling::Greedy,
        (seed, temperature) => Sampling::Random {
            temperature: temperature.unwrap_or(0.8),
            top_k: args.top_k,
            seed: seed.unwrap_or(0),
        },
    };
    if args.runtime == socbench_kernels::runtime::RuntimeKind::LlamaCpp {
        if sampling != Sampling::Greedy || args.stop_at_eos {
            anyhow::bail!(
                "--runtime llama.cpp generates greedily for the full --tokens: drop --seed, \
                 --temperature and --stop-at-eos"
            );
        }
        if args.model.kernel != socbench_kernels::qmatmul::KernelTier::Auto {
            anyhow::bail!(
                "--kernel chooses the Burn runtime's packed kernels; llama.cpp picks its own \
                 (drop --kernel, or use --runtime burn)"
            );
        }
        return super::generate_llama::run(args);
    }
    let session = Session::open(&args.model)?;
    let prompt = session.encode(&args.prompt)?;
    let opts = GenerateOptions {
        max_new_tokens: args.tokens,
        batch: session.batch,
        kv_window: session.kv_window,
        sampling,
        stop_at: if args.stop_at_eos {
            session.loaded.tokenizer.eos_id
        } else {
            None
        },
        pacing: std::time::Duration::ZERO,
    };
    let (out, threads_observed) =
        observe_threads(|| generate(&session.rt, &session.loaded.model, &prompt, &opts));
    let out = out?;
    let text = session.loaded.tokenizer.decode(&out.gen_ids[0])?;
    let how = format!(
        "{} on {} ×{} threads ({} busy)",
        session.quant,
        session.rt.backend,
        session.rt.threads,
        threads_observed.map_or("?".into(), |n| n.to_string()),
    );
    let sampling = json!(sampling);
    let settings = session.settings(threads_observed);
    print_generation(
        args,
        &prompt,
        &out,
        &text,
        session.batch,
        sampling,
        settings,
        &how,
    );
    Ok(())
}

/// Prints one generation: `--json`'s object (prompt and generated ids, text, timings and the
/// throughputs derived from them, sampling, `settings`), else the text on stdout and a summary
/// line, ending with `how` (level, backend, threads), on stderr. Shared by both runtimes.
#[allow(clippy::too_many_arguments)]
pub(super) fn print_generation(
    args: &GenerateArgs,
    prompt: &[u32],
    out: &Generation,
    text: &str,
    batch: usize,
    sampling: serde_json::Value,
    settings: serde_json::Value,
    how: &str,
) {
    let ttft_s = out.ttft.as_secs_f64();
    let decode_s: Vec<f64> = out.decode.iter().map(|d| d.as_secs_f64()).collect();
    let decode_total: f64 = decode_s.iter().sum();
    let b = batch as f64;
    let decode_tok_per_s = (!decode_s.is_empty()).then(|| b * decode_s.len() as f64 / decode_total);
    let prefill_tok_per_s = b * prompt.len() as f64 / ttft_s;
    // The process's own memory once the run is over: its peak (load included) and its
    // proportional set size, as the kernel counts them.
    let own = socbench_devices::sensors::own_memory_bytes;
    let (peak_rss, pss) = (own("VmHWM:"), own("Pss:"));
    if args.model.json {
        let mut obj = json!({
            "prompt": args.prompt,
            "prompt_ids": prompt,
            "gen_ids": out.gen_ids[0],
            "text": text,
            "ttft_s": ttft_s,
            "decode_s": decode_s,
            "prefill_tok_per_s": prefill_tok_per_s,
            "decode_tok_per_s": decode_tok_per_s,
            "sampling": sampling,
            "settings": settings,
            "memory": {
                "peak_rss_bytes": peak_rss,
                "pss_bytes": pss,
                "kv_cache_bytes": out.kv_cache_bytes,
            },
        });
        if batch > 1 {
            obj["batch_gen_ids"] = json!(out.gen_ids);
        }
        println!("{obj}");
    } else {
        println!("{}{text}", args.prompt);
        eprintln!(
            "{} prompt tokens, {} generated | TTFT {:.1} ms | prefill {:.1} tok/s | decode {} | peak RSS {} | {how}",
            prompt.len(),
            out.gen_ids[0].len(),
            ttft_s * 1e3,
            prefill_tok_per_s,
            decode_tok_per_s.map_or("n/a".into(), |v| format!("{v:.1} tok/s")),
            peak_rss.map_or("n/a".into(), |b| format!("{:.0} MiB", b as f64 / 1048576.0)),
        );
    }
}
