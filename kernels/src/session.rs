//! Opening a model on a backend, quantized, in one call: what the CLI's `generate`/`score`
//! and the on-device agent share.

use crate::KernelError;
use crate::backend::{BackendKind, Runtime, set_matmul_threads};
use crate::load::{LoadedModel, ModelSpec};
use crate::lora::LoraSpec;
use crate::qmatmul::KernelTier;
use crate::quant::QuantLevel;

/// A model loaded and quantized on its runtime.
#[derive(Debug)]
pub struct ModelSession {
    /// Backend device and thread pool.
    pub rt: Runtime,
    /// Model, config and tokenizer.
    pub loaded: LoadedModel,
    /// Seconds spent loading and converting the model.
    pub load_s: f64,
}

impl ModelSession {
    /// Checks that `quant` runs on `backend`, opens the backend with `threads` workers, loads
    /// `spec` with every weight built for `quant` ([`ModelSpec::load_as`]). The file is parsed
    /// before the backend starts, so a missing or corrupt model is reported before a GPU is
    /// touched.
    ///
    /// Call it once per process for NdArray: its matmul pool is sized at first use.
    pub fn open(
        spec: &ModelSpec,
        backend: BackendKind,
        quant: QuantLevel,
        threads: usize,
    ) -> Result<Self, KernelError> {
        Self::open_with_lora(spec, backend, quant, threads, None)
    }

    /// [`ModelSession::open`] with LoRA adapters ([`crate::lora`]), read or generated before
    /// the weights convert (a bad adapter file is reported before any work).
    pub fn open_with_lora(
        spec: &ModelSpec,
        backend: BackendKind,
        quant: QuantLevel,
        threads: usize,
        lora: Option<&LoraSpec>,
    ) -> Result<Self, KernelError> {
        Self::open_with(spec, backend, quant, threads, lora, KernelTier::Auto)
    }

    /// [`ModelSession::open_with_lora`] with the quantized products on the packed-kernel
    /// variant `kernel` ([`Runtime::with_kernel`]); a variant this CPU lacks is an error before
    /// the file is read.
    pub fn open_with(
        spec: &ModelSpec,
        backend: BackendKind,
        quant: QuantLevel,
        threads: usize,
        lora: Option<&LoraSpec>,
        kernel: KernelTier,
    ) -> Result<Self, KernelError> {
        kernel.check_here().map_err(KernelError::Invalid)?;
        if threads == 0 {
            return Err(KernelError::Invalid("threads must be at least 1".into()));
        }
        quant
            .support(backend)
            .map_err(|reason| KernelError::Unsupported {
                backend,
                quant,
                reason,
            })?;
        if backend == BackendKind::NdArray {
            // Takes effect only while this is the process's one thread (the CLI's `generate`);
            // the agent sets it before its first thread. Otherwise NdArray's matmul keeps the
            // count it was started with, and the observed threads of the run say so.
            let _ = set_matmul_threads(threads);
        }
        // Load time counts mapping and parsing the file and converting its weights, not
        // starting the backend.
        let start = std::time::Instant::now();
        let file = spec.open()?;
        let adapters = match lora {
            Some(l) => {
                let config = crate::model::LlamaConfig::from_gguf(&file)
                    .map_err(|e| KernelError::Invalid(e.to_string()))?;
                Some((l.adapters(&config)?, l.mode))
            }
            None => None,
        };
        let opened_s = start.elapsed().as_secs_f64();
        let rt = Runtime::with_kernel(backend, threads, kernel)?;
        let start = std::time::Instant::now();
        let unsupported = |reason| KernelError::Unsupported {
            backend,
            quant,
            reason,
        };
        // Burn's quantization panics on what it cannot do: an unsupported cell, not a crash.
        let mut loaded = rt
            .run(|device| {
                crate::catch_panic(|| {
                    let lora = adapters.as_ref().map(|(a, mode)| (a, *mode));
                    spec.load_with_lora(&file, device, quant, backend, lora)
                })
                .map_err(unsupported)
            })
            .and_then(|r| r)?;
        drop(file);
        loaded
            .model
            .use_fused_attention(backend == BackendKind::Flex);
        rt.sync()?;
        Ok(Self {
            rt,
            loaded,
            load_s: opened_s + start.elapsed().as_secs_f64(),
        })
    }
}
