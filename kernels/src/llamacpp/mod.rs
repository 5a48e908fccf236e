//! llama.cpp as the reference runtime: the same GGUF file, run by llama.cpp's CPU backend
//! (linked through the `llama-cpp-sys-2` binding crate, which vendors and builds it), driven by
//! socbench's own loop so every figure is taken the way the Burn model's are: the same prompt
//! tokens, the time to the first token on the host, each decode step timed, greedy argmax on
//! the host, the same teacher-forced perplexity.
//!
//! [`LlamaCppModel::open`] maps the file (llama.cpp's default `mmap`); [`LlamaCppModel::context`]
//! makes a context sized for one cell (its sequences × their positions) with the cell's
//! thread count and a thread pool of its own, as `llama-bench` runs one
//! (`ffi.rs`); [`LlamaCppContext::generate`] is one measured run. [`quantize`] writes
//! a file in another llama.cpp format with llama.cpp's own quantizer.
//!
//! Nothing runs before [`cpu_support`] has checked the CPU features llama.cpp was compiled for
//! against this CPU (`cpu.rs`).
#![allow(unsafe_code)]

mod cpu;
mod ffi;

pub use cpu::{BUILD_FLAGS, X86_OPTIONS, cpu_support};

use crate::KernelError;
use crate::generate::{Generation, Perplexity, argmax};
use crate::runtime::LlamaFormat;
use ffi::{Batch, Context, ContextParams, Model};
use std::ffi::CString;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The binding crate this build links, which vendors llama.cpp.
pub const BINDING: &str = "llama-cpp-sys-2 0.1.161";

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

/// Drops llama.cpp's and ggml's log lines: the agent's output is its event stream.
unsafe extern "C" fn no_log(
    _level: llama_cpp_sys_2::ggml_log_level,
    _text: *const std::ffi::c_char,
    _user: *mut std::ffi::c_void,
) {
}

/// llama.cpp's process-wide state, initialised once, after the CPU check; its log silenced.
fn backend() -> Result<(), KernelError> {
    static BACKEND: OnceLock<Result<(), String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            cpu_support()?;
            // SAFETY: `no_log` ignores its arguments and lives for the program; the user
            // pointer is unused. `llama_backend_init` runs once (this `OnceLock`).
            // (`llama_log_set` passes the callback on to ggml as well.)
            unsafe {
                llama_cpp_sys_2::llama_log_set(Some(no_log), std::ptr::null_mut());
                llama_cpp_sys_2::llama_backend_init();
            }
            Ok(())
        })
        .clone()
        .map_err(KernelError::Invalid)
}

fn err(what: &str, e: impl std::fmt::Display) -> KernelError {
    KernelError::Invalid(format!("llama.cpp: {what}: {e}"))
}

/// A GGUF file opened by llama.cpp.
#[derive(Debug)]
pub struct LlamaCppModel {
    model: Model,
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
        backend()?;
        let start = Instant::now();
        let model =
            Model::load(path).map_err(|e| err(&format!("loading {}", path.display()), e))?;
        Ok(Self {
            model,
            load_s: start.elapsed().as_secs_f64(),
        })
    }

    /// Token ids of `text` by the file's own tokenizer, as llama.cpp reads it: no BOS (the
    /// Burn side adds none either), special tokens such as `<|im_start|>` recognised.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.model
            .tokenize(text, false, true)
            .into_iter()
            .map(|t| t as u32)
            .collect()
    }

    /// Text of `ids` (special tokens written out).
    pub fn detokenize(&self, ids: &[u32]) -> String {
        let tokens: Vec<i32> = ids.iter().map(|&i| token(i)).collect();
        String::from_utf8_lossy(&self.model.detokenize(&tokens, false, true)).into_owned()
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
    /// with `threads` threads for prefill and decode (one pool of them, kept for the
    /// context's life).
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
        let params = ContextParams {
            n_ctx: total,
            n_batch: total.max(512),
            n_seq_max: u32::try_from(sequences).map_err(|e| err("sequences", e))?,
            threads: i32::try_from(threads.max(1)).map_err(|e| err("threads", e))?,
        };
        backend()?;
        let ctx = Context::new(&self.model, &params).map_err(|e| err("creating a context", e))?;
        // llama.cpp allocates the cache for the whole context up front, keys and values in
        // f16 (its default cache type) for every layer's key/value heads.
        let (n_layer, n_head, n_head_kv, n_embd) = self.model.shape();
        let kv_width = u64::from(n_embd) / u64::from(n_head.max(1)) * u64::from(n_head_kv);
        let kv_cache_bytes = u64::from(ctx.n_ctx()) * u64::from(n_layer) * 2 * kv_width * 2;
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
    ctx: Context<'m>,
    sequences: usize,
    positions: usize,
    /// The KV cache allocated for the context, bytes (computed).
    kv_cache_bytes: u64,
}

fn token(id: u32) -> i32 {
    id as i32
}

impl LlamaCppContext<'_> {
    /// One greedy run: `prompt` prefilled for each sequence, then `gen_tokens` tokens each.
    /// The time to the first token runs from the start of prefill to the first tokens' argmax
    /// on the host; each further step is timed on its own. `pacing` is an idle gap after every
    /// token but the last, outside the steps' timers. Whatever the outcome, the pool's workers
    /// then sleep instead of polling into whatever the agent does next.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        gen_tokens: usize,
        pacing: Duration,
    ) -> Result<Generation, KernelError> {
        let out = self.greedy(prompt, gen_tokens, pacing);
        self.ctx.pause_pool();
        out
    }

    fn greedy(
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
        let mut batch = Batch::new(prompt.len() * n_seq, n_seq).map_err(|e| err("batch", e))?;
        let mut step = Batch::new(n_seq, n_seq).map_err(|e| err("batch", e))?;
        let start = Instant::now();
        for s in 0..n_seq {
            for (i, &id) in prompt.iter().enumerate() {
                batch
                    .add(token(id), i, s, i + 1 == prompt.len())
                    .map_err(|e| err("batch", e))?;
            }
        }
        self.ctx.decode(&batch).map_err(|e| err("prefill", e))?;
        let mut next = Vec::with_capacity(n_seq);
        for s in 0..n_seq {
            let row = self.ctx.logits_ith((s + 1) * prompt.len() - 1);
            next.push(argmax(row.map_err(|e| err("prefill", e))?));
        }
        let ttft = start.elapsed();
        let mut gen_ids: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
        let mut decode: Vec<Duration> = Vec::with_capacity(gen_tokens.saturating_sub(1));
        let mut token_at: Vec<Duration> = Vec::with_capacity(gen_tokens);
        if gen_tokens > 0 {
            token_at.push(ttft);
        }
        for k in 1..gen_tokens {
            if !pacing.is_zero() {
                // The gap is idle, as it is for the Burn model: no worker polls through it.
                self.ctx.pause_pool();
                std::thread::sleep(pacing);
            }
            let t0 = Instant::now();
            step.clear();
            let pos = prompt.len() + k - 1;
            for (s, &id) in next.iter().enumerate() {
                step.add(token(id), pos, s, true)
                    .map_err(|e| err("batch", e))?;
            }
            self.ctx.decode(&step).map_err(|e| err("decode", e))?;
            for (s, slot) in next.iter_mut().enumerate() {
                *slot = argmax(self.ctx.logits_ith(s).map_err(|e| err("decode", e))?);
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
    /// `i` predicts `ids[i + 1]`. The pool's workers sleep afterwards.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, KernelError> {
        let out = self.teacher_forced(ids);
        self.ctx.pause_pool();
        out
    }

    fn teacher_forced(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, KernelError> {
        if ids.is_empty() || ids.len() > self.positions {
            return Err(err(
                "scoring",
                format!("{} tokens for a context of {}", ids.len(), self.positions),
            ));
        }
        self.ctx.clear_kv_cache();
        let mut batch = Batch::new(ids.len(), 1).map_err(|e| err("batch", e))?;
        for (i, &id) in ids.iter().enumerate() {
            batch
                .add(token(id), i, 0, true)
                .map_err(|e| err("batch", e))?;
        }
        self.ctx.decode(&batch).map_err(|e| err("scoring", e))?;
        (0..ids.len())
            .map(|i| {
                self.ctx
                    .logits_ith(i)
                    .map(<[f32]>::to_vec)
                    .map_err(|e| err("scoring", e))
            })
            .collect()
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
    let ftype = format.file_type().ok_or_else(|| {
        err(
            "quantize",
            "the file as stored is not a format to quantize to".to_owned(),
        )
    })?;
    quantize_ftype(input, output, ftype, format.name(), threads)
}

/// [`quantize`] to any of llama.cpp's file types (`llama_ftype`: 15 is Q4_K_M, 18 Q6_K …),
/// `name` naming it in errors.
pub fn quantize_ftype(
    input: &Path,
    output: &Path,
    ftype: u32,
    name: &str,
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
                    format!("path {} is not UTF-8 or holds a NUL", p.display()),
                )
            })
    };
    let (inp, out) = (c(input)?, c(&tmp)?);
    // SAFETY: returns a plain struct of defaults; no pointers are read.
    let mut params = unsafe { llama_cpp_sys_2::llama_model_quantize_default_params() };
    params.nthread = i32::try_from(threads.max(1)).unwrap_or(1);
    params.ftype = ftype as llama_cpp_sys_2::llama_ftype;
    params.allow_requantize = true;
    // SAFETY: both paths are NUL-terminated strings alive for the call; `params` is the
    // default struct (its pointer fields null) with scalar fields set.
    let rc = unsafe { llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &params) };
    if rc != 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(
            &format!("quantizing {} to {name}", input.display()),
            format!("llama_model_quantize returned {rc}"),
        ));
    }
    std::fs::rename(&tmp, output)
        .map_err(|e| err(&format!("renaming {} into place", tmp.display()), e))
}

/// Tests of llama.cpp's own threading, where socbench starts the threads (no OpenMP: the static
/// arm64 agent's build; tests/arm64_qemu.rs runs them under qemu).
#[cfg(all(test, target_os = "linux", not(feature = "llama-cpp-openmp")))]
mod tests {
    use super::LlamaCppModel;
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// Nanoseconds each thread of this process has run on a CPU, by thread id.
    fn thread_cpu_ns() -> BTreeMap<u32, u64> {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|e| {
                let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
                Some((tid, s.split_whitespace().next()?.parse().ok()?))
            })
            .collect()
    }

    /// The threads in `now` that are not in `before`.
    fn new_threads(before: &BTreeMap<u32, u64>, now: BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
        now.into_iter()
            .filter(|(t, _)| !before.contains_key(t))
            .collect()
    }

    /// A context's graphs run on the `threads - 1` workers of its own pool, which outlive each
    /// step and end with the context, as with llama-bench's attached pool: each worker, asleep
    /// until the first graph, has run by the end of a generation. (A context without the pool
    /// attached would start other threads for every graph and leave these asleep.) The model
    /// is the GGUF file `SOCBENCH_TEST_GGUF` names, hence `ignore`: tests/arm64_qemu.rs runs
    /// it under qemu with the real model, alone (other tests' threads would be counted).
    #[test]
    #[ignore = "needs SOCBENCH_TEST_GGUF; tests/arm64_qemu.rs runs it"]
    fn a_context_runs_its_graphs_on_its_own_workers() {
        let path = std::env::var_os("SOCBENCH_TEST_GGUF")
            .expect("SOCBENCH_TEST_GGUF names a GGUF model (tests/arm64_qemu.rs sets it)");
        assert!(
            Path::new("/proc/thread-self/schedstat").exists(),
            "this kernel does not report per-thread run time (/proc/<pid>/task/<tid>/schedstat)"
        );
        let model = LlamaCppModel::open(Path::new(&path)).unwrap();
        let before = thread_cpu_ns();
        let mut ctx = model.context(1, 8, 3).unwrap();
        // The workers, once they have settled asleep (their run time no longer moves).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut workers = new_threads(&before, thread_cpu_ns());
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let now = new_threads(&before, thread_cpu_ns());
            if now == workers || Instant::now() > deadline {
                break;
            }
            workers = now;
        }
        assert_eq!(workers.len(), 2, "the pool's workers: {workers:?}");
        let out = ctx.generate(&[1, 2, 3], 3, Duration::ZERO).unwrap();
        assert_eq!(out.decode.len(), 2);
        let after = thread_cpu_ns();
        for (tid, ns) in &workers {
            let now = after.get(tid).expect("each worker outlives the steps");
            assert!(
                now > ns,
                "worker {tid} ran none of the graphs ({ns} ns before, {now} after)"
            );
        }
        drop(ctx);
        // Joined threads leave the task list a moment later (under qemu, a while later).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = thread_cpu_ns();
            if workers.keys().all(|t| !left.contains_key(t)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the workers end with the context: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The GGUF reader's table of ggml types against the linked ggml's own.
#[cfg(test)]
mod type_table {
    use crate::gguf::GgmlType;

    /// Every code the linked ggml defines is sized and named as ggml sizes and names it, and
    /// every code it leaves out (removed types) is unknown to the reader too.
    #[test]
    fn llama_cpp_agrees_on_every_ggml_type() {
        let count = llama_cpp_sys_2::GGML_TYPE_COUNT;
        let mut defined = 0;
        for code in 0..count + 8 {
            let ty = GgmlType::from_code(code);
            let ggml = if code < count {
                // SAFETY: pure lookups in ggml's static type table, for codes below its count.
                let (block, size) = unsafe {
                    (
                        llama_cpp_sys_2::ggml_blck_size(code as _),
                        llama_cpp_sys_2::ggml_type_size(code as _),
                    )
                };
                (block > 0 && size > 0).then_some((block as u64, size as u64))
            } else {
                None
            };
            assert_eq!(ty.block_layout(), ggml, "{ty} (code {code})");
            if ggml.is_some() {
                defined += 1;
                // SAFETY: ggml returns a static NUL-terminated name for a defined type.
                let name =
                    unsafe { std::ffi::CStr::from_ptr(llama_cpp_sys_2::ggml_type_name(code as _)) };
                assert!(
                    name.to_str().unwrap().eq_ignore_ascii_case(&ty.to_string()),
                    "code {code}: ggml calls it {name:?}, the reader {ty}"
                );
            }
        }
        assert!(defined >= 30, "{defined} types");
    }

    /// Every type socbench decodes beyond F32, F16 and its three block formats (Q5_0, Q5_1,
    /// Q2_K to Q6_K, BF16) decodes random blocks as the linked ggml's own `to_float` does.
    /// The blocks are random bytes but for their f16 scales (finite, random sign, up to 2), so
    /// every packing of scales, high bits and signs is exercised. ggml's C may fuse a multiply
    /// and an add into one rounding where socbench rounds twice: the values must agree within
    /// 4 units of the last place of the block's largest magnitude (or bit for bit).
    #[test]
    fn decoding_agrees_with_ggml_on_random_blocks() {
        let mut rng = crate::load::SplitMix64(0x5eed);
        let codes = (0..64).filter(|&c| matches!(GgmlType::from_code(c), GgmlType::Other(_)));
        let decoded: Vec<u32> = codes
            .filter(|&c| GgmlType::from_code(c).decodable())
            .collect();
        assert_eq!(decoded, [6, 7, 10, 11, 12, 13, 14, 30], "the decoded types");
        for code in decoded {
            let ty = GgmlType::from_code(code);
            let (elems, _) = ty.block_layout().expect("sized");
            let blocks = 64;
            let bytes = crate::dequant::random_blocks(ty, blocks as usize, &mut rng);
            let n = (blocks * elems) as usize;
            let mut ours = vec![0f32; n];
            crate::dequant::dequantize(ty, &bytes, &mut ours).expect("decodes");
            let mut theirs = vec![0f32; n];
            // SAFETY: ggml's static traits for a type it defines; `to_float` reads `n` values'
            // worth of blocks from `bytes` (that many were made) and writes `n` floats.
            unsafe {
                let traits = llama_cpp_sys_2::ggml_get_type_traits(code as _);
                let to_float = (*traits).to_float.expect("ggml decodes it");
                to_float(bytes.as_ptr().cast(), theirs.as_mut_ptr(), n as i64);
            }
            for (b, (o, t)) in ours
                .chunks(elems as usize)
                .zip(theirs.chunks(elems as usize))
                .enumerate()
            {
                let big = t.iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = 4.0 * f32::EPSILON * big.max(f32::MIN_POSITIVE);
                for (i, (o, t)) in o.iter().zip(t).enumerate() {
                    // BF16's random bits include infinities and NaNs: equal bits then.
                    assert!(
                        o.to_bits() == t.to_bits() || (o - t).abs() <= tol,
                        "{ty} block {b} value {i}: socbench {o}, ggml {t}"
                    );
                }
            }
        }
    }
}
