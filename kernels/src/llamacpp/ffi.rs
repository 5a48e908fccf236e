//! Owned handles over llama.cpp's C API (`llama-cpp-sys-2`): a model, a context with its own
//! thread pool attached, a batch. Each frees what it holds exactly once; every pointer they
//! hand to llama.cpp comes from these handles.
//!
//! The context is created here rather than through the `llama-cpp-2` wrapper because that
//! wrapper keeps the context pointer private, and a context needs it for
//! `llama_attach_threadpool`. Without an attached pool, ggml's CPU backend built without
//! OpenMP (the static arm64 agent) starts and joins a fresh set of worker threads for every
//! graph, i.e. for every decode step, which `llama-bench` does not: the reference would pay a
//! cost that llama.cpp's own benchmark does not.

use llama_cpp_sys_2 as sys;
use std::ffi::{CString, c_char};
use std::marker::PhantomData;
use std::path::Path;
use std::ptr::NonNull;

/// A model loaded by llama.cpp (memory-mapped, CPU only).
pub(super) struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
}

// SAFETY: a loaded model is read-only to llama.cpp: contexts and the tokenizer only read it
// (llama.h documents tokenizing as thread-safe). The one write, a YaRN model's `n_ctx_train`
// while a context is created with a custom rope scale, does not happen with the default
// parameters used here, and context creation is serialised anyway (`Context::new`).
unsafe impl Send for Model {}
// SAFETY: as above.
unsafe impl Sync for Model {}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("bytes", &self.size())
            .field("parameters", &self.n_params())
            .finish()
    }
}

impl Model {
    /// Loads `path` with llama.cpp's default model parameters (mapped, no GPU layers).
    pub fn load(path: &Path) -> Result<Self, String> {
        let c = path
            .to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| format!("path {} is not UTF-8 or holds a NUL", path.display()))?;
        // SAFETY: returns a plain struct of defaults.
        let params = unsafe { sys::llama_model_default_params() };
        // SAFETY: `c` is NUL-terminated and alive for the call; `params` is llama.cpp's own.
        let raw = unsafe { sys::llama_model_load_from_file(c.as_ptr(), params) };
        let ptr = NonNull::new(raw).ok_or("llama.cpp could not load the file")?;
        // SAFETY: `ptr` is a loaded model; the vocabulary lives as long as it does.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        match NonNull::new(vocab.cast_mut()) {
            Some(vocab) => Ok(Self { ptr, vocab }),
            None => {
                // SAFETY: loaded above and not shared.
                unsafe { sys::llama_model_free(ptr.as_ptr()) };
                Err("the file has no vocabulary".into())
            }
        }
    }

    /// Bytes of weights llama.cpp holds for the model.
    pub fn size(&self) -> u64 {
        // SAFETY: a live model.
        unsafe { sys::llama_model_size(self.ptr.as_ptr()) }
    }

    /// Parameters of the model.
    pub fn n_params(&self) -> u64 {
        // SAFETY: a live model.
        unsafe { sys::llama_model_n_params(self.ptr.as_ptr()) }
    }

    /// Layers, attention heads, key/value heads and embedding width.
    pub fn shape(&self) -> (u32, u32, u32, u32) {
        let p = self.ptr.as_ptr();
        let u = |v: i32| u32::try_from(v).unwrap_or(0);
        // SAFETY: a live model; the four calls only read its hyper-parameters.
        unsafe {
            (
                u(sys::llama_model_n_layer(p)),
                u(sys::llama_model_n_head(p)),
                u(sys::llama_model_n_head_kv(p)),
                u(sys::llama_model_n_embd(p)),
            )
        }
    }

    /// Entries in the vocabulary (the width of a logits row).
    pub fn n_vocab(&self) -> usize {
        // SAFETY: the model's live vocabulary.
        let n = unsafe { sys::llama_vocab_n_tokens(self.vocab.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Token ids of `text`; `parse_special` recognises special tokens' text.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<i32> {
        let Ok(len) = i32::try_from(text.len()) else {
            return Vec::new();
        };
        fill(text.len() + 2, |out, cap| {
            // SAFETY: `text` is `len` bytes (no NUL needed); `out` has room for `cap` ids.
            unsafe {
                sys::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr().cast::<c_char>(),
                    len,
                    out.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            }
        })
    }

    /// The text of `ids`; `unparse_special` writes special tokens out.
    pub fn detokenize(&self, ids: &[i32], remove_special: bool, unparse_special: bool) -> Vec<u8> {
        let Ok(n_ids) = i32::try_from(ids.len()) else {
            return Vec::new();
        };
        fill(ids.len() * 8 + 16, |out: &mut [u8], cap| {
            // SAFETY: `ids` holds `n_ids` tokens; `out` has room for `cap` bytes.
            unsafe {
                sys::llama_detokenize(
                    self.vocab.as_ptr(),
                    ids.as_ptr(),
                    n_ids,
                    out.as_mut_ptr().cast::<c_char>(),
                    cap,
                    remove_special,
                    unparse_special,
                )
            }
        })
    }
}

/// The output of a llama.cpp call that writes into a buffer of `cap` entries and returns how
/// many it wrote, or minus how many it needs (`i32::MIN`: more than an i32 counts): tried with
/// `first` entries, then once more with the room asked for. Empty if that fails too.
fn fill<T: Copy + Default>(first: usize, mut call: impl FnMut(&mut [T], i32) -> i32) -> Vec<T> {
    let mut out = vec![T::default(); first];
    for _ in 0..2 {
        let cap = i32::try_from(out.len()).unwrap_or(i32::MAX);
        let n = call(&mut out, cap);
        if n >= 0 {
            out.truncate(n as usize);
            return out;
        }
        if n == i32::MIN {
            break;
        }
        out.resize(n.unsigned_abs() as usize, T::default());
    }
    Vec::new()
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: loaded in `load`, freed once; contexts borrow the model, so none outlives it.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

/// What a context is made with.
pub(super) struct ContextParams {
    /// Positions of all sequences together.
    pub n_ctx: u32,
    /// The most tokens one `decode` call takes.
    pub n_batch: u32,
    /// Parallel sequences.
    pub n_seq_max: u32,
    /// Threads for decoding and prefill alike.
    pub threads: i32,
}

/// A context of a model with a thread pool of its own, attached as `llama-bench` attaches one:
/// its workers live as long as the context and wait between graphs (ggml's default polling),
/// instead of being started for each graph.
pub(super) struct Context<'m> {
    ptr: NonNull<sys::llama_context>,
    pool: NonNull<sys::ggml_threadpool>,
    n_vocab: usize,
    model: PhantomData<&'m Model>,
}

impl<'m> Context<'m> {
    /// A context of `model` with llama.cpp's default parameters but these.
    pub fn new(model: &'m Model, p: &ContextParams) -> Result<Self, String> {
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { sys::llama_context_default_params() };
        params.n_ctx = p.n_ctx;
        params.n_batch = p.n_batch;
        params.n_seq_max = p.n_seq_max;
        params.n_threads = p.threads;
        params.n_threads_batch = p.threads;
        // One context is created at a time in this process (see `Model`'s `Sync`).
        static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let guard = CREATING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: `model` is live for 'm, which the context's lifetime is tied to; no other
        // context is being created (`guard`).
        let raw = unsafe { sys::llama_init_from_model(model.ptr.as_ptr(), params) };
        drop(guard);
        let ptr = NonNull::new(raw).ok_or("llama.cpp could not create a context")?;
        // SAFETY: returns a plain struct of defaults for this thread count: no CPU mask, normal
        // priority, polling level 50, as llama-bench's defaults. The pool has exactly the
        // context's thread count (an OpenMP build indexes its workers by OpenMP's thread number
        // unchecked).
        let mut tpp = unsafe { sys::ggml_threadpool_params_default(p.threads) };
        // Started paused: the workers sleep until the first graph wakes them, rather than
        // poll before there is any work.
        tpp.paused = true;
        // SAFETY: `tpp` is valid for the call; the pool is freed in `drop`.
        let pool = NonNull::new(unsafe { sys::ggml_threadpool_new(&mut tpp) });
        let Some(pool) = pool else {
            // SAFETY: created above and not shared.
            unsafe { sys::llama_free(ptr.as_ptr()) };
            return Err(format!(
                "ggml could not start a pool of {} threads",
                p.threads
            ));
        };
        // SAFETY: both live; the pool outlives the context (freed after it in `drop`). One
        // pool serves decoding and prefill (a null batch pool means the same one).
        unsafe { sys::llama_attach_threadpool(ptr.as_ptr(), pool.as_ptr(), std::ptr::null_mut()) };
        Ok(Self {
            ptr,
            pool,
            n_vocab: model.n_vocab(),
            model: PhantomData,
        })
    }

    /// The context's positions (all sequences together).
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: a live context.
        unsafe { sys::llama_n_ctx(self.ptr.as_ptr()) }
    }

    /// Empties the KV cache (metadata and data).
    pub fn clear_kv_cache(&mut self) {
        // SAFETY: a live context; its memory lives as long as it does.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) }
    }

    /// Runs `batch` through the model.
    pub fn decode(&mut self, batch: &Batch) -> Result<(), String> {
        // SAFETY: a live context; `batch` is a batch of `batch.raw.n_tokens` filled entries
        // (`Batch::add` keeps every index within what `llama_batch_init` allocated).
        let rc = unsafe { sys::llama_decode(self.ptr.as_ptr(), batch.raw) };
        match rc {
            0 => Ok(()),
            1 => Err("no room in the KV cache for the batch".into()),
            2 => Err("aborted".into()),
            rc => Err(format!("llama_decode returned {rc}")),
        }
    }

    /// Lets the pool's workers sleep now rather than poll for the next graph (ggml's default
    /// polling spins them for a while after each one); the next `decode` wakes them. Called
    /// before an idle gap, so the gap is idle.
    pub fn pause_pool(&mut self) {
        // SAFETY: the context's live pool.
        unsafe { sys::ggml_threadpool_pause(self.pool.as_ptr()) }
    }

    /// The logits after entry `i` of the last decoded batch (an entry decoded with logits).
    pub fn logits_ith(&self, i: usize) -> Result<&[f32], String> {
        let idx = i32::try_from(i).map_err(|e| e.to_string())?;
        // SAFETY: a live context. A release build of llama.cpp (the binding builds Release or
        // RelWithDebInfo) checks `idx` and returns null when it has no logits for it; a debug
        // build aborts instead. The callers pass only entries they asked logits for.
        let ptr = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), idx) };
        if ptr.is_null() {
            return Err(format!("no logits for batch entry {i}"));
        }
        // SAFETY: a row of `n_vocab` floats owned by the context, unchanged until the next
        // `decode` (which needs `&mut self`, so the borrow ends first).
        Ok(unsafe { std::slice::from_raw_parts(ptr, self.n_vocab) })
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: both created in `new` and freed once, the context first: it no longer uses
        // the pool once freed.
        unsafe {
            sys::llama_free(self.ptr.as_ptr());
            sys::ggml_threadpool_free(self.pool.as_ptr());
        }
    }
}

/// A batch of tokens for `decode`, each in one sequence.
pub(super) struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
    n_seq_max: i32,
}

impl Batch {
    /// Room for `capacity` tokens of sequence ids below `n_seq_max`.
    pub fn new(capacity: usize, n_seq_max: usize) -> Result<Self, String> {
        let cap = i32::try_from(capacity.max(1)).map_err(|e| e.to_string())?;
        let seqs = i32::try_from(n_seq_max.max(1)).map_err(|e| e.to_string())?;
        // SAFETY: allocates token, position, sequence and logits arrays of `cap` entries (each
        // with room for `seqs` sequence ids); freed in `drop`.
        let raw = unsafe { sys::llama_batch_init(cap, 0, seqs) };
        let allocated = !(raw.token.is_null()
            || raw.pos.is_null()
            || raw.n_seq_id.is_null()
            || raw.logits.is_null()
            || raw.seq_id.is_null())
            // SAFETY: `seq_id` holds `cap` pointers (checked non-null just above).
            && (0..cap as usize).all(|i| !unsafe { *raw.seq_id.add(i) }.is_null());
        if !allocated {
            // SAFETY: frees what was allocated; `llama_batch_free` skips null arrays.
            unsafe { sys::llama_batch_free(raw) };
            return Err(format!("could not allocate a batch of {cap} tokens"));
        }
        Ok(Self {
            raw,
            capacity: cap as usize,
            n_seq_max: seqs,
        })
    }

    /// Empties the batch (its memory is kept).
    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Appends `token` at position `pos` of sequence `seq`; `logits` asks for its logits.
    pub fn add(&mut self, token: i32, pos: usize, seq: usize, logits: bool) -> Result<(), String> {
        let n = self.raw.n_tokens as usize;
        if n >= self.capacity {
            return Err(format!("the batch holds {} tokens", self.capacity));
        }
        let seq = i32::try_from(seq)
            .ok()
            .filter(|&s| s < self.n_seq_max)
            .ok_or_else(|| format!("sequence {seq} is beyond the batch's {}", self.n_seq_max))?;
        let pos = i32::try_from(pos).map_err(|e| e.to_string())?;
        // SAFETY: `n < capacity`, the length of every array `llama_batch_init` allocated;
        // `seq_id[n]` has room for `n_seq_max` ids, of which one is written.
        unsafe {
            *self.raw.token.add(n) = token;
            *self.raw.pos.add(n) = pos;
            *self.raw.n_seq_id.add(n) = 1;
            *(*self.raw.seq_id.add(n)) = seq;
            *self.raw.logits.add(n) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by `llama_batch_init` in `new`, freed once.
        unsafe { sys::llama_batch_free(self.raw) }
    }
}
