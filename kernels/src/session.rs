//! Opening a model on a backend, quantized, in one call: what the CLI's `generate`/`score`
//! and the on-device agent share.

use crate::KernelError;
use crate::backend::{BackendKind, Runtime, set_matmul_threads};
use crate::load::{LoadedModel, ModelSpec};
use crate::quant::{self, QuantLevel};

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
    /// `spec` and applies the quantization. The file is parsed before the backend starts, so a
    /// missing or corrupt model is reported before a GPU is touched.
    ///
    /// Call it once per process for NdArray: its matmul pool is sized at first use.
    pub fn open(
        spec: &ModelSpec,
        backend: BackendKind,
        quant: QuantLevel,
        threads: usize,
    ) -> Result<Self, KernelError> {
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
            set_matmul_threads(threads);
        }
        let file = spec.open()?;
        let rt = Runtime::new(backend, threads)?;
        let start = std::time::Instant::now();
        let mut loaded = rt.run(|device| spec.load_opened(&file, device))?;
        loaded
            .model
            .use_fused_attention(backend == BackendKind::Flex);
        rt.run(|_| crate::catch_panic(|| quant::apply(&mut loaded.model, quant, backend)))
            .map_err(|reason| KernelError::Unsupported {
                backend,
                quant,
                reason,
            })?;
        rt.sync()?;
        Ok(Self {
            rt,
            loaded,
            load_s: start.elapsed().as_secs_f64(),
        })
    }
}
