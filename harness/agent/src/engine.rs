//! The model a plan runs, on its runtime: socbench's Burn model ([`ModelSession`]) or
//! llama.cpp (`socbench_kernels::llamacpp`, cargo feature `llama-cpp`). The agent's loop —
//! cool-down gate, warm-up, repetitions, timings, memory, sensors — is the same for both.

use crate::plan::{Cell, Plan};
use socbench_kernels::generate::{GenerateOptions, Generation, Perplexity, Sampling, generate};
use socbench_kernels::runtime::RuntimeKind;
use socbench_kernels::session::ModelSession;
use std::time::Duration;

/// One measured run of a cell: the prompt in, the timed generation out.
pub type CellRun<'e> = Box<dyn FnMut(&[u32]) -> Result<Generation, String> + 'e>;

/// A loaded model on its runtime.
#[derive(Debug)]
pub enum Engine {
    /// socbench's model in Burn.
    Burn(Box<ModelSession>),
    /// llama.cpp on the same GGUF file.
    #[cfg(feature = "llama-cpp")]
    LlamaCpp {
        /// The model.
        model: socbench_kernels::llamacpp::LlamaCppModel,
        /// Threads for prefill and decode.
        threads: usize,
        /// The file's type as llama.cpp names it (`general.file_type`: `Q4_K_M` …), when told.
        file_type: Option<&'static str>,
    },
}

/// What the `loaded` event reports of a model.
#[derive(Debug, Clone)]
pub struct LoadFacts {
    /// Seconds to load (and, for Burn, convert) the model.
    pub load_s: f64,
    /// Weight bytes one decode step reads.
    pub weight_bytes_per_step: u64,
    /// Matmul FLOPs per token.
    pub matmul_flops_per_token: u64,
    /// Bytes of the model's weights in memory as they run.
    pub weight_bytes_resident: u64,
    /// The code that runs the products: the packed kernel variant this CPU selected
    /// (`socbench_kernels::qmatmul::kernel_name`) for packed levels, `burn-<backend>` for
    /// Burn's own, `ggml-cpu` and the file's type for llama.cpp (`ggml-cpu Q4_K_M`).
    pub kernel: String,
}

impl Engine {
    /// Loads the plan's model on the plan's runtime.
    pub fn open(plan: &Plan) -> Result<Self, String> {
        match plan.runtime {
            RuntimeKind::Burn => ModelSession::open_with(
                &plan.model_spec(),
                plan.backend,
                plan.quant,
                plan.threads,
                plan.lora.as_ref(),
                plan.kernel,
            )
            .map(|s| Self::Burn(Box::new(s)))
            .map_err(|e| e.to_string()),
            #[cfg(feature = "llama-cpp")]
            RuntimeKind::LlamaCpp if plan.lora.is_some() => {
                Err("LoRA adapters run on the Burn runtime only".into())
            }
            #[cfg(feature = "llama-cpp")]
            RuntimeKind::LlamaCpp => {
                let path = std::path::Path::new(&plan.model);
                let file_type = socbench_kernels::gguf::GgufFile::open(path)
                    .and_then(|f| f.get_usize("general.file_type"))
                    .ok()
                    .and_then(|t| u32::try_from(t).ok())
                    .and_then(socbench_kernels::runtime::llama_ftype_name);
                socbench_kernels::llamacpp::LlamaCppModel::open(path)
                    .map(|model| Self::LlamaCpp {
                        model,
                        threads: plan.threads,
                        file_type,
                    })
                    .map_err(|e| e.to_string())
            }
            #[cfg(not(feature = "llama-cpp"))]
            RuntimeKind::LlamaCpp => {
                Err("this agent was built without llama.cpp (cargo feature `llama-cpp`)".into())
            }
        }
    }

    /// Load time and the model's per-step weight traffic and FLOPs (computed from its
    /// tensors; for llama.cpp, from the bytes and parameters it reports).
    pub fn facts(&self, plan: &Plan) -> LoadFacts {
        match self {
            Self::Burn(s) => {
                let t = socbench_kernels::quant::weight_traffic(
                    &s.loaded.model,
                    plan.quant,
                    plan.backend,
                );
                LoadFacts {
                    load_s: s.load_s,
                    weight_bytes_per_step: t.bytes_per_step,
                    matmul_flops_per_token: t.matmul_flops_per_token,
                    weight_bytes_resident: socbench_kernels::quant::resident_weight_bytes(
                        &s.loaded.model,
                        plan.quant,
                        plan.backend,
                    ),
                    kernel: socbench_kernels::quant::kernel_label_for(
                        plan.quant,
                        plan.backend,
                        plan.kernel,
                    ),
                }
            }
            #[cfg(feature = "llama-cpp")]
            Self::LlamaCpp {
                model, file_type, ..
            } => LoadFacts {
                load_s: model.load_s,
                // The tied embedding is the output projection: every weight is read per step.
                weight_bytes_per_step: model.weight_bytes(),
                matmul_flops_per_token: 2 * model.parameters(),
                // Its tensors, mapped from the file and run as they are stored.
                weight_bytes_resident: model.weight_bytes(),
                kernel: match file_type {
                    Some(t) => format!("ggml-cpu {t}"),
                    None => "ggml-cpu".into(),
                },
            },
        }
    }

    /// Token ids of `text` by the runtime's own tokenizer.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            Self::Burn(s) => s.loaded.tokenizer.encode(text).map_err(|e| e.to_string()),
            #[cfg(feature = "llama-cpp")]
            Self::LlamaCpp { model, .. } => Ok(model.tokenize(text)),
        }
    }

    /// Teacher-forced perplexity of `ids` in independent chunks of `chunk` tokens.
    pub fn perplexity(&self, ids: &[u32], chunk: usize) -> Result<Perplexity, String> {
        match self {
            Self::Burn(s) => {
                socbench_kernels::generate::perplexity(&s.rt, &s.loaded.model, ids, chunk)
                    .map_err(|e| e.to_string())
            }
            #[cfg(feature = "llama-cpp")]
            Self::LlamaCpp { model, threads, .. } => {
                socbench_kernels::llamacpp::perplexity(model, ids, chunk, *threads)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Everything a cell's runs share, set up outside the timed region (llama.cpp: a context
    /// sized for the cell's sequences and positions); the closure is one greedy run.
    pub fn cell_runner(&self, cell: &Cell) -> Result<CellRun<'_>, String> {
        match self {
            Self::Burn(s) => {
                let opts = GenerateOptions {
                    max_new_tokens: cell.gen_tokens,
                    batch: cell.batch,
                    kv_window: cell.kv_window,
                    sampling: Sampling::Greedy,
                    stop_at: None,
                    pacing: Duration::from_millis(u64::from(cell.pacing_ms)),
                };
                Ok(Box::new(move |prompt: &[u32]| {
                    generate(&s.rt, &s.loaded.model, prompt, &opts).map_err(|e| e.to_string())
                }))
            }
            #[cfg(feature = "llama-cpp")]
            Self::LlamaCpp { model, threads, .. } => {
                let mut ctx = model
                    .context(cell.batch, cell.prompt_tokens + cell.gen_tokens, *threads)
                    .map_err(|e| e.to_string())?;
                let gen_tokens = cell.gen_tokens;
                let pacing = Duration::from_millis(u64::from(cell.pacing_ms));
                Ok(Box::new(move |prompt: &[u32]| {
                    ctx.generate(prompt, gen_tokens, pacing)
                        .map_err(|e| e.to_string())
                }))
            }
        }
    }
}
