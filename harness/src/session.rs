//! Validating the model knobs and preparing a model to run: the part `generate` and `score`
//! share. Everything is checked before the model is loaded or a device touched.

use crate::cli::ModelArgs;
use crate::model_cache;
use anyhow::{Context, Result};
use serde_json::{Value, json};
use socbench_kernels::backend::Runtime;
use socbench_kernels::gate::QualityGate;
use socbench_kernels::load::{LoadedModel, ModelSpec};
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::session::ModelSession;
use socbench_kernels::threads::ThreadTimes;

/// A loaded model on its runtime.
#[derive(Debug)]
pub struct Session {
    /// Backend device and thread pool.
    pub rt: Runtime,
    /// Model, config and tokenizer.
    pub loaded: LoadedModel,
    /// Where the model came from.
    pub spec: ModelSpec,
    /// Quantization applied.
    pub quant: QuantLevel,
    /// Sequences per batch.
    pub batch: usize,
    /// KV window.
    pub kv_window: Option<usize>,
    /// Seconds spent loading and converting the model.
    pub load_s: f64,
}

/// `--threads` (default: every core) once `--threads` and `--batch` are checked: what every
/// runtime's `generate` validates first.
pub fn checked_threads(args: &ModelArgs) -> Result<usize> {
    let threads = match args.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    Ok(threads)
}

impl Session {
    /// Validates `args`, opens the backend and loads the model.
    pub fn open(args: &ModelArgs) -> Result<Self> {
        let threads = checked_threads(args)?;
        // Refused before anything is fetched or loaded.
        args.quant.support(args.backend).map_err(|reason| {
            socbench_kernels::KernelError::Unsupported {
                backend: args.backend,
                quant: args.quant,
                reason,
            }
        })?;
        // Refused before anything is fetched or loaded, as the level is.
        args.kernel
            .check_here()
            .map_err(|e| anyhow::anyhow!("--kernel: {e}"))?;
        if args.kernel != socbench_kernels::qmatmul::KernelTier::Auto
            && socbench_kernels::quant::packed_format(args.quant, args.backend).is_none()
        {
            anyhow::bail!(
                "--kernel {} chooses the packed kernels of q8, q4 and q4_0 on the CPU backends; \
                 --quant {} on --backend {} runs none (drop --kernel)",
                args.kernel,
                args.quant.name(),
                args.backend.name()
            );
        }
        let spec = match &args.model {
            Some(spec) => spec.clone(),
            // The default model is fetched on first use, so that a newcomer's first command
            // works; an explicit path that does not exist stays an error.
            None if !model_cache::default_model_path().exists() => {
                eprintln!("no --model given and the default model is not cached yet: fetching it");
                ModelSpec::File(model_cache::fetch(false)?)
            }
            None => ModelSpec::File(model_cache::default_model_path()),
        };
        let ModelSession { rt, loaded, load_s } =
            ModelSession::open_with(&spec, args.backend, args.quant, threads, None, args.kernel)
                .with_context(|| format!("loading {spec}"))?;
        Ok(Self {
            rt,
            loaded,
            spec,
            quant: args.quant,
            batch: args.batch,
            kv_window: args.kv_window.0,
            load_s,
        })
    }

    /// Encodes the prompt, refusing an empty one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.loaded.tokenizer.encode(text)?;
        if ids.is_empty() {
            anyhow::bail!("the prompt encodes to no tokens; give a non-empty --prompt");
        }
        Ok(ids)
    }

    /// The settings every JSON result carries.
    pub fn settings(&self, threads_observed: Option<usize>) -> Value {
        json!({
            "model": self.spec.to_string(),
            "model_name": self.loaded.name,
            "model_file_tensor_bytes": self.loaded.file_tensor_bytes,
            "backend": self.rt.backend.name(),
            "quant": self.quant.name(),
            "threads": self.rt.threads,
            "threads_observed": threads_observed,
            "batch": self.batch,
            "kv_window": self.kv_window.map_or(Value::from("full"), Value::from),
            "load_s": self.load_s,
            "kernel": socbench_kernels::quant::kernel_label_for(
                self.quant,
                self.rt.backend,
                self.rt.kernel,
            ),
            "weight_bytes_resident": socbench_kernels::quant::resident_weight_bytes(
                &self.loaded.model,
                self.quant,
                self.rt.backend,
            ),
        })
    }
}

/// Runs `f`, also returning how many threads did at least 10 % of the CPU work meanwhile.
pub fn observe_threads<R>(f: impl FnOnce() -> R) -> (R, Option<usize>) {
    let before = ThreadTimes::now();
    let r = f();
    let busy = ThreadTimes::now().busy_since(&before, 0.10);
    (r, busy)
}

/// The quality gate of a sweep over `model` (a file or `synthetic:tiny`): its f32 reference
/// perplexity computed here, on the host's CPU; `None` when `max_ratio` is 0 (off) or the
/// reference cannot be computed (said on stderr: the sweep still runs, ungated).
pub fn quality_gate(model: &str, max_ratio: f64) -> Option<QualityGate> {
    if max_ratio <= 0.0 {
        return None;
    }
    let spec = if model == "synthetic:tiny" {
        ModelSpec::SyntheticTiny
    } else {
        ModelSpec::File(model.into())
    };
    match socbench_kernels::gate::reference_perplexity(&spec) {
        Ok(p) => Some(QualityGate {
            reference_perplexity: p,
            max_ratio,
        }),
        Err(e) => {
            eprintln!("warning: quality gate off: the f32 reference could not be computed: {e}");
            None
        }
    }
}
