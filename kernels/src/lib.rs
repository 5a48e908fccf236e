//! socbench's model: a LLaMA-family decoder written with Burn, loaded from GGUF.
//!
//! - [`gguf`] reads the container, [`dequant`] decodes its data (F32, F16, BF16, Q4_0, Q4_1,
//!   Q5_0, Q5_1, Q8_0, Q2_K to Q6_K);
//! - [`tokenizer`] builds the byte-level BPE tokenizer stored in the file's metadata;
//! - [`model`] is the network (embedding, RMSNorm, RoPE, grouped-query attention with a
//!   KV cache and optional sliding window, SwiGLU MLP, tied output projection);
//! - [`quant`] re-quantizes its weights: through Burn's quantization, or at q8/q4 on the CPU
//!   backends into [`qmatmul`]'s blocks, whose SIMD kernels Burn runs as a backend extension;
//! - [`backend`] picks the Burn backend (NdArray, Flex, wgpu) and the thread pool;
//! - [`gate`] refuses a model variant whose perplexity on a short text is far beyond f32's;
//! - [`generate`] runs prefill and decode with timings, and teacher-forced scoring;
//! - [`threads`] observes how many threads actually did the work;
//! - [`roofline`] measures the device's memory bandwidth and GEMM roofs;
//! - [`runtime`] names the runtimes a cell can run on; `llamacpp` (feature `llama-cpp`) is
//!   llama.cpp, the reference runtime, on the same GGUF file.
//!
//! ```
//! use socbench_kernels::{backend::{BackendKind, Runtime}, generate::*, load::ModelSpec};
//!
//! let rt = Runtime::new(BackendKind::Flex, 1)?;
//! let loaded = ModelSpec::SyntheticTiny.load(&rt.device)?;
//! let prompt = loaded.tokenizer.encode("the cat")?;
//! let opts = GenerateOptions {
//!     max_new_tokens: 4,
//!     batch: 1,
//!     kv_window: None,
//!     sampling: Sampling::Greedy,
//!     stop_at: None,
//!     pacing: std::time::Duration::ZERO,
//! };
//! let out = generate(&rt, &loaded.model, &prompt, &opts)?;
//! assert_eq!(out.gen_ids[0].len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod dequant;
pub mod gate;
pub mod generate;
pub mod gguf;
#[cfg(feature = "llama-cpp")]
pub mod llamacpp;
pub mod load;
pub mod lora;
mod mapped;
pub mod model;
pub mod qmatmul;
pub mod quant;
pub mod roofline;
pub mod runtime;
pub mod session;
pub mod threads;
pub mod tokenizer;

use std::path::PathBuf;

/// Errors of the kernels crate.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The model file does not exist.
    #[error(
        "model file {} not found; run `socbench fetch-model` to download SmolLM2-135M-Instruct, \
         or pass --model synthetic:tiny",
        path.display()
    )]
    ModelMissing {
        /// The path given.
        path: PathBuf,
    },
    /// The model file exists but cannot be used.
    #[error(
        "model file {} cannot be used: {cause} (if it is the fetched SmolLM2 file, \
         `socbench fetch-model` downloads it again)",
        path.display()
    )]
    ModelFile {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it (in the message, not a source of its own: said once).
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A GGUF structure problem.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// A tokenizer problem.
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// A backend that cannot start or failed while running.
    #[error("backend {backend}: {reason}")]
    Backend {
        /// The backend.
        backend: backend::BackendKind,
        /// What went wrong.
        reason: String,
    },
    /// A quantization level the backend cannot run.
    #[error("quantization {quant} is not supported on {backend}: {reason}")]
    Unsupported {
        /// The backend.
        backend: backend::BackendKind,
        /// The level.
        quant: quant::QuantLevel,
        /// Why not.
        reason: String,
    },
    /// An invalid request (empty prompt, zero batch, too long a sequence...).
    #[error("{0}")]
    Invalid(String),
}

/// Runs `f`, turning a panic inside a dependency into an error message.
///
/// Only for boundaries with third-party code that reports failure by panicking (Burn's device
/// initialisation, for one); our own code returns errors.
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked without a message".into())
    })
}
