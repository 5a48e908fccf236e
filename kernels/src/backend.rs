//! Choosing the Burn backend and the CPU parallelism it may use.
//!
//! The backend is picked once, at the edge (the CLI or the agent), by name; the model code is
//! backend-agnostic because Burn 0.22 tensors carry their backend in their [`Device`].
//!
//! Thread control differs per backend, and each mechanism is real:
//! - Flex, and NdArray's element-wise kernels, run on the rayon pool the work is *installed*
//!   in: [`Runtime::run`] installs a pool of exactly `threads` workers around the work.
//! - NdArray's matmul goes through `matrixmultiply`, which sizes its own pool from
//!   `MATMUL_NUM_THREADS` once per process: [`set_matmul_threads`] sets it while the process
//!   still has one thread (the CLI right after parsing its arguments, the agent before its
//!   first thread), and the runner starts agents with it in their environment.
//! - wgpu runs kernels on the GPU; the pool only bounds host-side work.

use crate::KernelError;
use crate::qmatmul::KernelTier;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A Burn backend socbench can run the model on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `burn-ndarray`: pure-Rust CPU backend (deprecated upstream in 0.22, still asked for).
    NdArray,
    /// `burn-flex`: Burn's newer pure-Rust CPU backend.
    Flex,
    /// `burn-wgpu`: GPU through wgpu (Vulkan, Metal, DX12, or Mesa lavapipe on a CPU).
    Wgpu,
}

impl BackendKind {
    /// Every backend, in the order reports list them.
    pub const ALL: [BackendKind; 3] = [Self::NdArray, Self::Flex, Self::Wgpu];

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::NdArray => "ndarray",
            Self::Flex => "flex",
            Self::Wgpu => "wgpu",
        }
    }

    /// Whether the backend computes on the CPU.
    pub fn is_cpu(self) -> bool {
        !matches!(self, Self::Wgpu)
    }

    /// Whether this build can run the backend: wgpu is an optional feature (on by default),
    /// left out of the static musl agent because a static binary cannot load a Vulkan driver.
    pub fn is_built(self) -> bool {
        match self {
            Self::NdArray | Self::Flex => true,
            Self::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backends this build can run.
    pub fn built() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|b| b.is_built()).collect()
    }

    /// The Burn device for this backend; an error for a backend this build left out.
    pub fn device(self) -> Result<Device, KernelError> {
        match self {
            // NdArray is deprecated upstream; our users still compare against it.
            #[allow(deprecated)]
            Self::NdArray => Ok(Device::ndarray()),
            Self::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Self::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            Self::Wgpu => Err(KernelError::Backend {
                backend: self,
                reason: "this build has no wgpu support (built without the `wgpu` feature)".into(),
            }),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| format!("unknown backend {s:?} (valid: ndarray, flex, wgpu)"))
    }
}

/// The variable `matrixmultiply` (NdArray's matmul) sizes its thread pool from.
pub const MATMUL_THREADS_ENV: &str = "MATMUL_NUM_THREADS";

/// The thread count NdArray's matmul will use, when the environment sets it.
pub fn matmul_threads() -> Option<usize> {
    std::env::var(MATMUL_THREADS_ENV).ok()?.parse().ok()
}

/// Sets the thread count of NdArray's matmul (`matrixmultiply` reads [`MATMUL_THREADS_ENV`]
/// once, at its first use, and caps it at 4).
///
/// Changing the environment is only sound while no other thread can read it, so this checks
/// that the calling thread is the process's only one (`/proc/self/task`) and refuses
/// otherwise: call it at the start of the process (the CLI does, right after parsing its
/// arguments; the agent before it starts any thread), or start the process with the variable
/// set (what the runner does for the agents it launches). A later call has no effect on a pool
/// that is already built.
///
/// # Errors
///
/// When another thread exists (or `/proc` cannot tell) and the variable does not already say
/// `threads`.
pub fn set_matmul_threads(threads: usize) -> Result<(), KernelError> {
    if matmul_threads() == Some(threads) {
        return Ok(());
    }
    if !single_threaded() {
        return Err(KernelError::Invalid(format!(
            "{MATMUL_THREADS_ENV} can only be set before any other thread exists; start the \
             process with {MATMUL_THREADS_ENV}={threads}"
        )));
    }
    // SAFETY: modifying the environment is unsound only while another thread may read or
    // write it; `single_threaded` just saw that the calling thread is the only one, and only
    // this thread could start another between that check and this call.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(MATMUL_THREADS_ENV, threads.to_string());
    }
    Ok(())
}

/// Whether the calling thread is the only thread of the process (`false` where `/proc` cannot
/// tell).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1)
}

/// A backend device together with the CPU thread pool its work runs in.
#[derive(Debug)]
pub struct Runtime {
    /// The backend.
    pub backend: BackendKind,
    /// The Burn device.
    pub device: Device,
    /// Threads in the pool.
    pub threads: usize,
    /// The packed-kernel variant the pool's products run (`auto`: this CPU's best).
    pub kernel: KernelTier,
    pool: rayon::ThreadPool,
}

impl Runtime {
    /// Opens `backend` with a pool of `threads` workers, checking that the device works.
    ///
    /// A backend that cannot start (no GPU adapter for wgpu, say) is an error here, before
    /// any model is loaded.
    pub fn new(backend: BackendKind, threads: usize) -> Result<Self, KernelError> {
        Self::with_kernel(backend, threads, KernelTier::Auto)
    }

    /// [`Runtime::new`] with the quantized products forced onto the variant `kernel`.
    ///
    /// # Errors
    ///
    /// As [`Runtime::new`], and when this CPU lacks `kernel` (naming what it has).
    pub fn with_kernel(
        backend: BackendKind,
        threads: usize,
        kernel: KernelTier,
    ) -> Result<Self, KernelError> {
        kernel.check_here().map_err(KernelError::Invalid)?;
        if threads == 0 {
            return Err(KernelError::Invalid("threads must be at least 1".into()));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("socbench-worker-{i}"))
            .start_handler(move |_| crate::qmatmul::set_thread_tier(kernel))
            .build()
            .map_err(|e| KernelError::Backend {
                backend,
                reason: format!("cannot start {threads} threads: {e}"),
            })?;
        let device = backend.device()?;
        let rt = Self {
            backend,
            device,
            threads,
            kernel,
            pool,
        };
        rt.check()?;
        Ok(rt)
    }

    /// Runs `f` inside this runtime's thread pool.
    pub fn run<R: Send>(&self, f: impl FnOnce(&Device) -> R + Send) -> R {
        let device = &self.device;
        self.pool.install(|| f(device))
    }

    /// Waits for the device to finish queued work.
    pub fn sync(&self) -> Result<(), KernelError> {
        self.device.sync().map_err(|e| KernelError::Backend {
            backend: self.backend,
            reason: format!("{e:?}"),
        })
    }

    /// Runs a tiny computation so that a backend that cannot start fails here, as an error.
    /// Burn's device initialisation panics when, say, wgpu finds no adapter.
    fn check(&self) -> Result<(), KernelError> {
        let backend = self.backend;
        let result = crate::catch_panic(|| {
            self.run(|device| {
                let a =
                    Tensor::<2>::from_data(TensorData::new(vec![1f32, 2., 3., 4.], [2, 2]), device);
                let s = a.clone().matmul(a).sum().into_data();
                s.try_to_vec::<f32>()
                    .map(|v| v[0])
                    .map_err(|e| format!("{e:?}"))
            })
        });
        match result {
            Ok(Ok(54.0)) => Ok(()),
            Ok(Ok(v)) => Err(KernelError::Backend {
                backend,
                reason: format!("self-check computed {v} instead of 54"),
            }),
            Ok(Err(reason)) | Err(reason) => Err(KernelError::Backend { backend, reason }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_matmul_thread_count_is_left_alone_once_other_threads_exist() {
        // Tests run on the harness's worker threads: this process has more than one.
        let before = matmul_threads();
        let other = before.map_or(3, |n| n + 1);
        let err = set_matmul_threads(other).unwrap_err();
        assert!(err.to_string().contains("MATMUL_NUM_THREADS"), "{err}");
        assert_eq!(matmul_threads(), before);
    }
}
