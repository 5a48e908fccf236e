//! llama.cpp as the reference runtime: the same GGUF file, run by llama.cpp's CPU backend
//! (linked through the `llama-cpp-2` binding crate, which vendors and builds it), driven by
//! socbench's own loop so every figure is taken the way the Burn model's are: the same prompt
//! tokens, the time to the first token on the host, each decode step timed, greedy argmax on
//! the host, the same teacher-forced perplexity.
//!
//! [`LlamaCppModel::open`] maps the file (llama.cpp's default `mmap`); [`LlamaCppModel::context`]
//! makes a context sized for one cell (its sequences × their positions) with the cell's
//! thread count; [`LlamaCppContext::generate`] is one measured run. [`quantize`] writes a file
//! in another llama.cpp format with llama.cpp's own quantizer.
//!
//! The CPU features llama.cpp was compiled for (x86-64: the `GGML_*` options,
//! `.cargo/config.toml`; arm64: `GGML_CPU_ARM_ARCH`, `scripts/build-agent`; read from its cmake
//! cache by `kernels/build.rs`) are checked against this CPU before anything runs
//! ([`cpu_support`]): a build for AVX-512 or for the dot-product instructions on a CPU without
//! them is one clear error, never a SIGILL.
#![allow(unsafe_code)]

use crate::KernelError;
use crate::generate::{Generation, Perplexity, argmax};
use crate::runtime::LlamaFormat;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use std::ffi::CString;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The CPU options llama.cpp was compiled for (`kernels/build.rs`): on x86-64 the `GGML_*`
/// options that were on (`GGML_AVX2,GGML_FMA,...`), on arm64 the architecture ggml's CPU
/// backend was built for (`armv8.2-a+dotprod+fp16`).
pub const BUILD_FLAGS: &str = env!("SOCBENCH_GGML_FLAGS");

/// Whether this CPU has every instruction-set extension llama.cpp was compiled for; `Err`
/// names the missing ones and how to rebuild.
pub fn cpu_support() -> Result<(), String> {
    let missing = missing_features(BUILD_FLAGS, cpu_has);
    if missing.is_empty() {
        return Ok(());
    }
    if cfg!(target_arch = "aarch64") {
        Err(format!(
            "llama.cpp in this agent was compiled for {BUILD_FLAGS}, and this CPU lacks {}; \
             build the agent for it (`GGML_CPU_ARM_ARCH=armv8-a scripts/build-agent \
             arm64-v8a`)",
            missing.join(", ")
        ))
    } else {
        Err(format!(
            "llama.cpp in this build was compiled for {} which this CPU lacks; rebuild with \
             them off (e.g. `{}=OFF`, then `cargo clean -p llama-cpp-sys-2` and build)",
            missing.join(", "),
            missing[0]
        ))
    }
}

/// The build options in `flags` that `has` says this CPU lacks: on arm64 the features an
/// architecture string requires ([`arm_requirements`]), elsewhere the comma-separated
/// `GGML_*` options.
fn missing_features(flags: &str, has: fn(&str) -> bool) -> Vec<&str> {
    let needed = if cfg!(target_arch = "aarch64") {
        arm_requirements(flags)
    } else {
        flags.split(',').filter(|f| !f.is_empty()).collect()
    };
    needed.into_iter().filter(|f| !has(f)).collect()
}

/// The CPU features code compiled for the arm64 architecture `arch` (`-march` syntax, e.g.
/// `armv8.2-a+dotprod+fp16`) may use beyond armv8.0: those its version makes mandatory (and
/// that compilers emit: LSE atomics from 8.1, dot products from 8.4, int8 matrix multiply and
/// bf16 from 8.6, SVE2 from 9.0) and each `+feature`; `+nofeature` removes one.
fn arm_requirements(arch: &str) -> Vec<&str> {
    let mut parts = arch.split('+');
    let base = parts.next().unwrap_or_default();
    let version = base
        .strip_prefix("armv")
        .and_then(|v| v.strip_suffix("-a"))
        .unwrap_or("8");
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    let (major, minor): (u32, u32) = (major.parse().unwrap_or(8), minor.parse().unwrap_or(0));
    // Armv9.x carries the features of Armv8.(x+5).
    let v8 = if major >= 9 { minor + 5 } else { minor };
    let mut need: Vec<&str> = [(1, "lse"), (1, "rdm"), (3, "rcpc"), (4, "dotprod")]
        .into_iter()
        .chain([(6, "i8mm"), (6, "bf16")])
        .filter(|&(from, _)| v8 >= from)
        .map(|(_, f)| f)
        .collect();
    if major >= 9 {
        need.push("sve2");
    }
    for part in parts.filter(|p| !p.is_empty()) {
        match part.strip_prefix("no") {
            Some(off) => need.retain(|f| *f != off),
            None if !need.contains(&part) => need.push(part),
            None => {}
        }
    }
    need
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(flag: &str) -> bool {
    match flag {
        "GGML_AVX" => is_x86_feature_detected!("avx"),
        "GGML_AVX2" => is_x86_feature_detected!("avx2"),
        "GGML_FMA" => is_x86_feature_detected!("fma"),
        "GGML_F16C" => is_x86_feature_detected!("f16c"),
        "GGML_BMI2" => is_x86_feature_detected!("bmi2"),
        "GGML_AVX_VNNI" => is_x86_feature_detected!("avxvnni"),
        // ggml's AVX-512 build uses F, CD, VL, DQ and BW.
        "GGML_AVX512" => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512cd")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512bw")
        }
        "GGML_AVX512_VBMI" => is_x86_feature_detected!("avx512vbmi"),
        "GGML_AVX512_VNNI" => is_x86_feature_detected!("avx512vnni"),
        "GGML_AVX512_BF16" => is_x86_feature_detected!("avx512bf16"),
        // Options that select no instructions (or that this check does not know) pass.
        _ => true,
    }
}

#[cfg(target_arch = "aarch64")]
fn cpu_has(feature: &str) -> bool {
    use std::arch::is_aarch64_feature_detected as has;
    match feature {
        "lse" => has!("lse"),
        "rdm" => has!("rdm"),
        "rcpc" => has!("rcpc"),
        "crc" => has!("crc"),
        "dotprod" => has!("dotprod"),
        // `fp16` in an -march string is the half-precision arithmetic (FEAT_FP16).
        "fp16" => has!("fp16"),
        "fp16fml" | "fhm" => has!("fhm"),
        "i8mm" => has!("i8mm"),
        "bf16" => has!("bf16"),
        "sve" => has!("sve"),
        "sve2" => has!("sve2"),
        "aes" => has!("aes"),
        "sha2" => has!("sha2"),
        "sha3" => has!("sha3"),
        "crypto" => has!("aes") && has!("sha2"),
        // A feature this check cannot see is reported missing rather than risked.
        _ => false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has(_flag: &str) -> bool {
    // The x86 options are ignored by llama.cpp's build for other architectures.
    true
}

/// The binding crates this build links, which vendor llama.cpp.
pub const BINDING: &str = "llama-cpp-2 0.1.160, llama-cpp-sys-2 0.1.161";

/// What llama.cpp says it was built with and uses on this CPU (`llama_print_system_info`:
/// its CPU backend's instruction sets, e.g. `AVX512 = 1 | AVX512_VNNI = 1`), or why it cannot
/// start here.
pub fn system_info() -> String {
    if let Err(e) = backend() {
        return e.to_string();
    }
    // SAFETY: returns a pointer to a NUL-terminated string in a static buffer owned by
    // llama.cpp; it is copied out at once.
    let ptr = unsafe { llama_cpp_sys_2::llama_print_system_info() };
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: non-null, NUL-terminated (above).
    unsafe { std::ffi::CStr::from_ptr(ptr) }
        .to_string_lossy()
        .trim()
        .to_owned()
}

/// llama.cpp's process-wide state, initialised once; its log is silenced (the agent's output
/// is its event stream).
fn backend() -> Result<&'static LlamaBackend, KernelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            cpu_support()?;
            llama_cpp_2::send_logs_to_tracing(
                llama_cpp_2::LogOptions::default().with_logs_enabled(false),
            );
            LlamaBackend::init().map_err(|e| format!("starting llama.cpp: {e}"))
        })
        .as_ref()
        .map_err(|e| KernelError::Invalid(e.clone()))
}

fn err(what: &str, e: impl std::fmt::Display) -> KernelError {
    KernelError::Invalid(format!("llama.cpp: {what}: {e}"))
}

/// A GGUF file opened by llama.cpp.
#[derive(Debug)]
pub struct LlamaCppModel {
    model: LlamaModel,
    /// Seconds from the call to a usable model (mapping, tensor set-up).
    pub load_s: f64,
}

impl LlamaCppModel {
    /// Opens `path` the way llama.cpp's tools do (memory-mapped, CPU only).
    pub fn open(path: &Path) -> Result<Self, KernelError> {
        if !path.exists() {
            return Err(KernelError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        let backend = backend()?;
        let start = Instant::now();
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| err(&format!("loading {}", path.display()), e))?;
        Ok(Self {
            model,
            load_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Token ids of `text` by the file's own tokenizer, as llama.cpp reads it: no BOS (the
    /// Burn side adds none either), special tokens such as `<|im_start|>` recognised.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect()
    }

    /// Text of `ids` (special tokens written out).
    pub fn detokenize(&self, ids: &[u32]) -> String {
        let tokens: Vec<LlamaToken> = ids.iter().map(|&i| token(i)).collect();
        String::from_utf8_lossy(&self.model.vocab().detokenize(&tokens, false, true)).into_owned()
    }

    /// Bytes of weights llama.cpp holds for the model (its own count).
    pub fn weight_bytes(&self) -> u64 {
        self.model.size()
    }

    /// Parameters of the model (llama.cpp's count).
    pub fn parameters(&self) -> u64 {
        self.model.n_params()
    }

    /// A context for `sequences` parallel sequences of up to `positions` positions each, run
    /// with `threads` threads for prefill and decode.
    pub fn context(
        &self,
        sequences: usize,
        positions: usize,
        threads: usize,
    ) -> Result<LlamaCppContext<'_>, KernelError> {
        let sequences = sequences.max(1);
        let total = sequences
            .checked_mul(positions.max(1))
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| err("context", "too many positions"))?;
        let threads = i32::try_from(threads.max(1)).map_err(|e| err("threads", e))?;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(total))
            .with_n_batch(total.max(512))
            .with_n_seq_max(sequences as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| err("creating a context", e))?;
        // llama.cpp allocates the cache for the whole context up front, keys and values in
        // f16 (its default cache type) for every layer's key/value heads.
        let m = &self.model;
        let kv_width =
            m.n_embd().max(0) as u64 / u64::from(m.n_head().max(1)) * u64::from(m.n_head_kv());
        let kv_cache_bytes = u64::from(ctx.n_ctx()) * u64::from(m.n_layer()) * 2 * kv_width * 2;
        Ok(LlamaCppContext {
            ctx,
            sequences,
            positions: positions.max(1),
            kv_cache_bytes,
        })
    }
}

/// A context for one cell's runs.
#[allow(missing_debug_implementations)]
pub struct LlamaCppContext<'m> {
    ctx: LlamaContext<'m>,
    sequences: usize,
    positions: usize,
    /// The KV cache allocated for the context, bytes (computed).
    kv_cache_bytes: u64,
}

fn token(id: u32) -> LlamaToken {
    LlamaToken(id as i32)
}

impl LlamaCppContext<'_> {
    /// One greedy run: `prompt` prefilled for each sequence, then `gen_tokens` tokens each.
    /// The time to the first token runs from the start of prefill to the first tokens' argmax
    /// on the host; each further step is timed on its own. `pacing` is an idle gap after every
    /// token but the last, outside the steps' timers.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
        pacing: Duration,
    ) -> Result<Generation, KernelError> {
        if prompt.is_empty() {
            return Err(err("generate", "the prompt is empty"));
        }
        if prompt.len() + gen_tokens > self.positions {
            return Err(err(
                "generate",
                format!(
                    "{} prompt + {gen_tokens} generated tokens exceed the context's {} positions",
                    prompt.len(),
                    self.positions
                ),
            ));
        }
        let n_seq = self.sequences;
        self.ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(prompt.len() * n_seq, n_seq as i32);
        let start = Instant::now();
        for s in 0..n_seq {
            for (i, &id) in prompt.iter().enumerate() {
                batch
                    .add(token(id), i as i32, &[s as i32], i + 1 == prompt.len())
                    .map_err(|e| err("batch", e))?;
            }
        }
        self.ctx.decode(&mut batch).map_err(|e| err("prefill", e))?;
        let mut next: Vec<u32> = (0..n_seq)
            .map(|s| argmax(self.ctx.get_logits_ith(((s + 1) * prompt.len() - 1) as i32)))
            .collect();
        let ttft = start.elapsed();
        let mut gen_ids: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
        let mut decode: Vec<Duration> = Vec::with_capacity(gen_tokens.saturating_sub(1));
        let mut token_at: Vec<Duration> = Vec::with_capacity(gen_tokens);
        if gen_tokens > 0 {
            token_at.push(ttft);
        }
        let mut step = LlamaBatch::new(n_seq, n_seq as i32);
        for k in 1..gen_tokens {
            if !pacing.is_zero() {
                std::thread::sleep(pacing);
            }
            let t0 = Instant::now();
            step.clear();
            let pos = (prompt.len() + k - 1) as i32;
            for (s, &id) in next.iter().enumerate() {
                step.add(token(id), pos, &[s as i32], true)
                    .map_err(|e| err("batch", e))?;
            }
            self.ctx.decode(&mut step).map_err(|e| err("decode", e))?;
            for (s, slot) in next.iter_mut().enumerate() {
                *slot = argmax(self.ctx.get_logits_ith(s as i32));
            }
            decode.push(t0.elapsed());
            token_at.push(start.elapsed());
            for (ids, &t) in gen_ids.iter_mut().zip(&next) {
                ids.push(t);
            }
        }
        if gen_tokens == 0 {
            gen_ids.iter_mut().for_each(Vec::clear);
        }
        Ok(Generation {
            gen_ids,
            ttft,
            decode,
            token_at,
            kv_cache_bytes: self.kv_cache_bytes,
        })
    }

    /// Logits after each of `ids` (teacher forcing, one sequence from an empty cache): row
    /// `i` predicts `ids[i + 1]`.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, KernelError> {
        if ids.is_empty() || ids.len() > self.positions {
            return Err(err(
                "scoring",
                format!("{} tokens for a context of {}", ids.len(), self.positions),
            ));
        }
        self.ctx.clear_kv_cache();
        let mut batch = LlamaBatch::new(ids.len(), 1);
        for (i, &id) in ids.iter().enumerate() {
            batch
                .add(token(id), i as i32, &[0], true)
                .map_err(|e| err("batch", e))?;
        }
        self.ctx.decode(&mut batch).map_err(|e| err("scoring", e))?;
        Ok((0..ids.len())
            .map(|i| self.ctx.get_logits_ith(i as i32).to_vec())
            .collect())
    }
}

/// Negative log-likelihood of `target` under `logits` (natural log).
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

/// Perplexity of `ids` under teacher forcing in independent chunks of `chunk` tokens, exactly
/// as [`crate::generate::perplexity`] scores the Burn model.
pub fn perplexity(
    model: &LlamaCppModel,
    ids: &[u32],
    chunk: usize,
    threads: usize,
) -> Result<Perplexity, KernelError> {
    let mut ctx = model.context(1, chunk.max(2), threads)?;
    crate::generate::chunked_perplexity(ids, chunk, |c| {
        let logits = ctx.logits(c)?;
        Ok(logits
            .iter()
            .zip(&c[1..])
            .map(|(row, &next)| nll(row, next))
            .sum())
    })
}

/// Writes `input` re-quantized to `format` at `output` with llama.cpp's quantizer (its default
/// choices per tensor, as `llama-quantize` makes them), through a temporary file of this
/// process renamed into place, so a crash or a concurrent sweep leaves no half-written model.
pub fn quantize(
    input: &Path,
    output: &Path,
    format: LlamaFormat,
    threads: usize,
) -> Result<(), KernelError> {
    backend()?;
    // Per process: two sweeps quantizing the same level at once each write their own file.
    let tmp = output.with_extension(format!("gguf.partial-{}", std::process::id()));
    let c = |p: &Path| {
        p.to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| {
                err(
                    "quantize",
                    format!("path {} is not valid UTF-8", p.display()),
                )
            })
    };
    let (inp, out) = (c(input)?, c(&tmp)?);
    // SAFETY: returns a plain struct of defaults; no pointers are read.
    let mut params = unsafe { llama_cpp_sys_2::llama_model_quantize_default_params() };
    params.nthread = i32::try_from(threads.max(1)).unwrap_or(1);
    params.ftype = format.file_type() as llama_cpp_sys_2::llama_ftype;
    params.allow_requantize = true;
    // SAFETY: both paths are NUL-terminated strings alive for the call; `params` is the
    // default struct (its pointer fields null) with scalar fields set.
    let rc = unsafe { llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc != 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(
            &format!("quantizing {} to {}", input.display(), format.name()),
            format!("llama_model_quantize returned {rc}"),
        ));
    }
    std::fs::rename(&tmp, output)
        .map_err(|e| err(&format!("renaming {} into place", tmp.display()), e))
}

#[cfg(test)]
mod tests {
    use super::{arm_requirements, missing_features};

    /// The build options a CPU lacks are named, and only those: on arm64 the features of the
    /// architecture, elsewhere the comma-separated `GGML_*` options.
    #[test]
    fn missing_build_features_are_named() {
        if cfg!(target_arch = "aarch64") {
            let flags = "armv8.2-a+dotprod+fp16";
            assert_eq!(missing_features(flags, |f| f != "dotprod"), ["dotprod"]);
            assert!(missing_features(flags, |_| true).is_empty());
            assert!(missing_features("armv8-a", |_| false).is_empty());
        } else {
            let flags = "GGML_AVX2,GGML_FMA,GGML_AVX512";
            assert_eq!(
                missing_features(flags, |f| f != "GGML_AVX512"),
                ["GGML_AVX512"]
            );
            assert!(missing_features(flags, |_| true).is_empty());
            assert!(missing_features("", |_| false).is_empty());
        }
    }

    /// An arm64 architecture requires what its version makes mandatory and what it adds.
    #[test]
    fn arm_architectures_require_their_features() {
        assert_eq!(
            arm_requirements("armv8.2-a+dotprod+fp16"),
            ["lse", "rdm", "dotprod", "fp16"]
        );
        assert!(arm_requirements("armv8-a").is_empty());
        assert_eq!(arm_requirements("armv8-a+dotprod"), ["dotprod"]);
        assert_eq!(
            arm_requirements("armv8.6-a"),
            ["lse", "rdm", "rcpc", "dotprod", "i8mm", "bf16"]
        );
        assert_eq!(
            arm_requirements("armv9-a+nosve2"),
            ["lse", "rdm", "rcpc", "dotprod"]
        );
        assert_eq!(
            arm_requirements("armv8.4-a+dotprod+i8mm"),
            ["lse", "rdm", "rcpc", "dotprod", "i8mm"]
        );
    }
}
