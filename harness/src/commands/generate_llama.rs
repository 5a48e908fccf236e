//! `socbench generate --runtime llama.cpp`: the same prompt through llama.cpp, on the file in
//! the level's llama.cpp format (re-quantized once and cached), with socbench's timers: a
//! quick side-by-side check of the reference runtime.

use crate::cli::GenerateArgs;
#[cfg(feature = "llama-cpp")]
use crate::model_cache;
#[cfg(feature = "llama-cpp")]
use anyhow::Context;
use anyhow::Result;
#[cfg(feature = "llama-cpp")]
use serde_json::{Value, json};

/// Runs the command with llama.cpp (greedy; the caller has refused sampling options).
#[cfg(feature = "llama-cpp")]
pub fn run(args: &GenerateArgs) -> Result<()> {
    use socbench_kernels::llamacpp::LlamaCppModel;
    use socbench_kernels::load::ModelSpec;
    let m = &args.model;
    let threads = match m.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if m.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let path = match &m.model {
        Some(ModelSpec::File(p)) => p.clone(),
        Some(ModelSpec::SyntheticTiny) => anyhow::bail!(
            "--runtime llama.cpp needs a GGUF model file; `synthetic:tiny` exists only inside socbench"
        ),
        None if !model_cache::default_model_path().exists() => model_cache::fetch(false)?,
        None => model_cache::default_model_path(),
    };
    let model_arg = path.display().to_string();
    let model_id = model_cache::model_identity(&model_arg)?;
    let file =
        model_cache::llama_cpp_model(&model_arg, &model_id, m.quant, &|msg| eprintln!("{msg}"))
            .map_err(anyhow::Error::msg)?;
    let model =
        LlamaCppModel::open(&file).with_context(|| format!("loading {}", file.display()))?;
    let prompt = model.tokenize(&args.prompt);
    if prompt.is_empty() {
        anyhow::bail!("the prompt encodes to no tokens; give a non-empty --prompt");
    }
    socbench_kernels::runtime::llama_cpp_support(
        m.backend.is_cpu(),
        m.quant,
        m.kv_window.0,
        prompt.len() + args.tokens,
    )
    .map_err(|e| anyhow::anyhow!("--runtime llama.cpp: {e}"))?;
    let mut ctx = model.context(m.batch, prompt.len() + args.tokens, threads)?;
    let out = ctx.generate(&prompt, args.tokens)?;
    let text = model.detokenize(&out.gen_ids[0]);
    let ttft_s = out.ttft.as_secs_f64();
    let decode_s: Vec<f64> = out.decode.iter().map(|d| d.as_secs_f64()).collect();
    let decode_total: f64 = decode_s.iter().sum();
    let b = m.batch as f64;
    let decode_tok_per_s = (!decode_s.is_empty()).then(|| b * decode_s.len() as f64 / decode_total);
    let prefill_tok_per_s = b * prompt.len() as f64 / ttft_s;
    let format =
        socbench_kernels::runtime::LlamaFormat::for_level(m.quant).map_err(anyhow::Error::msg)?;
    if m.json {
        let mut obj = json!({
            "prompt": args.prompt,
            "prompt_ids": prompt,
            "gen_ids": out.gen_ids[0],
            "text": text,
            "ttft_s": ttft_s,
            "decode_s": decode_s,
            "prefill_tok_per_s": prefill_tok_per_s,
            "decode_tok_per_s": decode_tok_per_s,
            "sampling": "Greedy",
            "settings": {
                "runtime": "llama.cpp",
                "model": model_arg,
                "llama_cpp_file": file.display().to_string(),
                "llama_cpp_format": format.name(),
                "backend": socbench_kernels::runtime::LLAMA_CPP_BACKEND,
                "quant": m.quant.name(),
                "threads": threads,
                "batch": m.batch,
                "kv_window": Value::from("full"),
                "load_s": model.load_s,
                "weight_bytes": model.weight_bytes(),
            },
        });
        if m.batch > 1 {
            obj["batch_gen_ids"] = json!(out.gen_ids);
        }
        println!("{obj}");
    } else {
        println!("{}{text}", args.prompt);
        eprintln!(
            "{} prompt tokens, {} generated | TTFT {:.1} ms | prefill {:.1} tok/s | decode {} | \
             llama.cpp {} ({}) ×{threads} threads",
            prompt.len(),
            out.gen_ids[0].len(),
            ttft_s * 1e3,
            prefill_tok_per_s,
            decode_tok_per_s.map_or("n/a".into(), |v| format!("{v:.1} tok/s")),
            m.quant,
            format.name(),
        );
    }
    Ok(())
}

/// Without the `llama-cpp` feature: one clear error.
#[cfg(not(feature = "llama-cpp"))]
pub fn run(_args: &GenerateArgs) -> Result<()> {
    anyhow::bail!(
        "this socbench was built without llama.cpp (cargo feature `llama-cpp`); rebuild with it"
    )
}
