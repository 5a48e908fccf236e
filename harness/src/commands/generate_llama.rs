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
    let threads = crate::session::checked_threads(m)?;
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
    let out = ctx.generate(&prompt, args.tokens, std::time::Duration::ZERO)?;
    let text = model.detokenize(&out.gen_ids[0]);
    let format =
        socbench_kernels::runtime::LlamaFormat::for_level(m.quant).map_err(anyhow::Error::msg)?;
    let settings = json!({
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
        "weight_bytes_resident": model.weight_bytes(),
    });
    let how = format!(
        "llama.cpp {} ({}) ×{threads} threads",
        m.quant,
        format.name()
    );
    super::generate::print_generation(
        args,
        &prompt,
        &out,
        &text,
        m.batch,
        json!("Greedy"),
        settings,
        &how,
    );
    Ok(())
}

/// Without the `llama-cpp` feature: one clear error.
#[cfg(not(feature = "llama-cpp"))]
pub fn run(_args: &GenerateArgs) -> Result<()> {
    anyhow::bail!(
        "this socbench was built without llama.cpp (cargo feature `llama-cpp`); rebuild with it"
    )
}
