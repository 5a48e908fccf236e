//! Building the model from a GGUF file, or from the synthetic model's seeded weights.

use crate::KernelError;
use crate::backend::BackendKind;
use crate::dequant::{dequantize, quantize_q4_1, quantize_q8_0};
use crate::gguf::{GgufError, GgufFile, GgufWriter, TensorInfo};
use crate::lora::{LoraAdapters, LoraMode, LoraPair};
use crate::model::{Attention, Block, Llama, LlamaConfig, LoraDelta, Mlp, Proj, Rope};
use crate::qmatmul::{BLOCK, PackedWeight};
use crate::quant::{self, QuantLevel};
use crate::tokenizer::{Tokenizer, synthetic_vocab};
use burn::module::Param;
use burn::nn::{Embedding, RmsNorm};
use burn::prelude::*;
use rayon::prelude::*;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A GGUF file.
    File(PathBuf),
    /// `synthetic:tiny`: a small model with seeded random weights, for fast tests.
    SyntheticTiny,
}

impl FromStr for ModelSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("synthetic:") {
            Some("tiny") => Ok(Self::SyntheticTiny),
            Some(other) => Err(format!(
                "unknown synthetic model {other:?} (valid: synthetic:tiny)"
            )),
            None if s.is_empty() => Err("empty model path".into()),
            None => Ok(Self::File(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::SyntheticTiny => f.write_str("synthetic:tiny"),
        }
    }
}

/// A model ready to run, with what describes it.
#[derive(Debug)]
pub struct LoadedModel {
    /// The network.
    pub model: Llama,
    /// Its hyper-parameters.
    pub config: LlamaConfig,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Size of the model file's tensor data in bytes (as stored on disk, before conversion).
    pub file_tensor_bytes: u64,
    /// `general.name`, when present.
    pub name: Option<String>,
}

impl ModelSpec {
    /// Maps and parses the GGUF file (or builds the synthetic one).
    pub fn open(&self) -> Result<GgufFile, KernelError> {
        match self {
            Self::SyntheticTiny => Ok(GgufFile::parse(synthetic_tiny_gguf())?),
            Self::File(path) => {
                if !path.exists() {
                    return Err(KernelError::ModelMissing { path: path.clone() });
                }
                GgufFile::open(path).map_err(|cause| KernelError::ModelFile {
                    path: path.clone(),
                    cause: cause.into(),
                })
            }
        }
    }

    /// Loads the model onto `device`, in `f32`.
    pub fn load(&self, device: &Device) -> Result<LoadedModel, KernelError> {
        self.load_opened(&self.open()?, device)
    }

    /// Loads the model from `file`, this spec's already opened GGUF, onto `device`, in `f32`
    /// (for [`crate::quant::apply`] to convert afterwards, as the benches do).
    pub fn load_opened(
        &self,
        file: &GgufFile,
        device: &Device,
    ) -> Result<LoadedModel, KernelError> {
        self.load_as(file, device, QuantLevel::F32, BackendKind::Flex)
    }

    /// Loads the model from `file` onto `device`, every weight built straight in the form
    /// `level` runs as on `backend`, one tensor at a time: packed [`crate::qmatmul`] blocks
    /// copied from the file's blocks where the formats agree (Q8_0 at q8, Q4_1 at q4) and
    /// re-quantized block by block otherwise; Burn tensors (f32, f16, Burn's quantization)
    /// decoded tensor by tensor. Each tensor's file pages are let go once it is converted
    /// ([`GgufFile::release`]), so loading never holds more than the converted model and one
    /// tensor in flight.
    ///
    /// A tied embedding is one table: the output projection's, looked up row by row
    /// ([`Proj::embed`]), except under Burn's quantized storage, which has no row lookup (the
    /// table is then kept apart in f32).
    pub fn load_as(
        &self,
        file: &GgufFile,
        device: &Device,
        level: QuantLevel,
        backend: BackendKind,
    ) -> Result<LoadedModel, KernelError> {
        self.load_with_lora(file, device, level, backend, None)
    }

    /// [`ModelSpec::load_as`] with LoRA adapters on the attention projections: merged into
    /// each f32 weight before it is converted to `level`, or held beside it (unmerged).
    pub fn load_with_lora(
        &self,
        file: &GgufFile,
        device: &Device,
        level: QuantLevel,
        backend: BackendKind,
        lora: Option<(&LoraAdapters, LoraMode)>,
    ) -> Result<LoadedModel, KernelError> {
        let with_path = |e: KernelError| match (self, e) {
            (Self::File(path), KernelError::Gguf(cause)) => KernelError::ModelFile {
                path: path.clone(),
                cause: cause.into(),
            },
            (_, e) => e,
        };
        let config = LlamaConfig::from_gguf(file).map_err(|e| match (self, e) {
            // Not damaged: another architecture, which llama.cpp may run.
            (Self::File(path), e @ crate::model::ConfigError::Architecture(_)) => {
                KernelError::Invalid(format!(
                    "model file {}: {e}; llama.cpp runs the architectures it knows \
                     (--runtime llama.cpp)",
                    path.display()
                ))
            }
            (Self::File(path), e) => KernelError::ModelFile {
                path: path.clone(),
                cause: Box::new(e),
            },
            (Self::SyntheticTiny, e) => KernelError::Invalid(e.to_string()),
        })?;
        if let Some((adapters, _)) = lora
            && adapters.layers.len() != config.n_layers
        {
            return Err(KernelError::Invalid(format!(
                "LoRA adapters ({}) for {} layers, the model has {}",
                adapters.source,
                adapters.layers.len(),
                config.n_layers
            )));
        }
        let target = Target {
            level,
            backend,
            device,
            lora,
        };
        // The tokenizer (a BPE vocabulary and its merges, tens of milliseconds to build) is
        // built on a second thread while the weights convert: loading is ready that much sooner
        // and holds no more memory.
        let (tokenizer, model) = std::thread::scope(|scope| {
            let tokenizer = scope.spawn(|| Tokenizer::from_gguf(file));
            let model = build(file, &config, &target);
            (tokenizer.join(), model)
        });
        let tokenizer = tokenizer
            .map_err(|_| KernelError::Invalid("building the tokenizer panicked".into()))??;
        let model = model.map_err(with_path)?;
        Ok(LoadedModel {
            model,
            tokenizer,
            file_tensor_bytes: file.tensor_data_bytes(),
            name: file.get_str("general.name").ok().map(str::to_string),
            config,
        })
    }
}

/// What the loader converts each weight to.
struct Target<'d> {
    level: QuantLevel,
    backend: BackendKind,
    device: &'d Device,
    /// Adapters on the attention projections, and how they run.
    lora: Option<(&'d LoraAdapters, LoraMode)>,
}

/// The directory entry of `name`, checked against the shape the model expects (`expected`
/// innermost first, as GGUF lists dimensions).
fn checked<'f>(
    file: &'f GgufFile,
    name: &str,
    expected: &[usize],
) -> Result<&'f TensorInfo, KernelError> {
    let info: &TensorInfo = file.tensor(name)?;
    let dims: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
    if dims != expected {
        return Err(GgufError::BadTensor {
            name: name.into(),
            reason: format!("dimensions {dims:?}, the model's metadata implies {expected:?}"),
        }
        .into());
    }
    Ok(info)
}

fn undecodable(info: &TensorInfo, bytes: usize) -> KernelError {
    let reason = if info.ty.decodable() {
        format!("{} data of {bytes} bytes does not decode", info.ty)
    } else {
        format!(
            "{} data cannot be decoded by socbench's Burn runtime (F32, F16, BF16, Q4_0, Q4_1, \
             Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K can; llama.cpp cells run the file as it is)",
            info.ty
        )
    };
    GgufError::BadTensor {
        name: info.name.clone(),
        reason,
    }
    .into()
}

/// Dequantized data of a tensor, in the file's order.
fn read(file: &GgufFile, name: &str, expected: &[usize]) -> Result<Vec<f32>, KernelError> {
    let info = checked(file, name, expected)?;
    let bytes = file.tensor_bytes(info)?;
    let mut out = vec![0f32; info.elements() as usize];
    dequantize(info.ty, bytes, &mut out).ok_or_else(|| undecodable(info, bytes.len()))?;
    Ok(out)
}

/// A GGUF matrix `[ne0 = d_in, ne1 = d_out]` (row-major `[d_out][d_in]`) decoded into Burn's
/// `[d_in, d_out]` layout, row by row: one float buffer, no second copy.
fn transposed(
    info: &TensorInfo,
    bytes: &[u8],
    d_in: usize,
    d_out: usize,
) -> Result<Vec<f32>, KernelError> {
    let mut t = vec![0f32; d_in * d_out];
    let (elems, block_bytes) = info
        .ty
        .block_layout()
        .ok_or_else(|| undecodable(info, bytes.len()))?;
    let (elems, block_bytes) = (elems as usize, block_bytes as usize);
    if d_in.is_multiple_of(elems) {
        // Sixteen rows at a time, so that each write fills 64 contiguous bytes of the
        // transposed weight rather than one float per cache line.
        const ROWS: usize = 16;
        let row_bytes = d_in / elems * block_bytes;
        let mut rows = vec![0f32; ROWS * d_in];
        for (g, raw) in bytes.chunks(ROWS * row_bytes).enumerate() {
            let n = raw.len() / row_bytes;
            let rows = &mut rows[..n * d_in];
            dequantize(info.ty, raw, rows).ok_or_else(|| undecodable(info, bytes.len()))?;
            let o0 = g * ROWS;
            for i in 0..d_in {
                let out = &mut t[i * d_out + o0..i * d_out + o0 + n];
                for (r, v) in out.iter_mut().enumerate() {
                    *v = rows[r * d_in + i];
                }
            }
        }
    } else {
        // Rows that split blocks (odd test shapes only): decode whole, then transpose.
        let mut w = vec![0f32; d_in * d_out];
        dequantize(info.ty, bytes, &mut w).ok_or_else(|| undecodable(info, bytes.len()))?;
        for o in 0..d_out {
            for i in 0..d_in {
                t[i * d_out + o] = w[o * d_in + i];
            }
        }
    }
    Ok(t)
}

/// The projection stored as `name` (`[d_in, d_out]` in GGUF's order), converted to `level`.
fn linear(
    file: &GgufFile,
    name: &str,
    [d_in, d_out]: [usize; 2],
    level: QuantLevel,
    target: &Target<'_>,
) -> Result<Proj, KernelError> {
    let info = checked(file, name, &[d_in, d_out])?;
    file.populate(info);
    let bytes = file.tensor_bytes(info)?;
    let packed = quant::packed_format(level, target.backend)
        .filter(|_| d_in.is_multiple_of(BLOCK))
        .map(|format| PackedWeight::from_ggml_rows(format, info.ty, bytes, d_in, d_out));
    let proj = match packed {
        Some(Ok(packed)) => Proj::packed(packed, target.device),
        Some(Err(e)) => {
            return Err(GgufError::BadTensor {
                name: name.into(),
                reason: e.to_string(),
            }
            .into());
        }
        None => {
            let w = transposed(info, bytes, d_in, d_out)?;
            let mut proj = Proj::new(Tensor::from_data(
                TensorData::new(w, [d_in, d_out]),
                target.device,
            ));
            quant::quantize_proj_burn(&mut proj, level, target.backend);
            proj
        }
    };
    file.release(info);
    Ok(proj)
}

/// The projection stored as `name` with a LoRA adapter: merged (the f32 weight plus `A B`,
/// then converted to `level`; a file's quantized blocks are decoded first, so a merged q4 or
/// q8 weight is quantized again from the sum) or unmerged (converted as without it, the
/// adapter beside it).
fn adapted_linear(
    file: &GgufFile,
    name: &str,
    dims: [usize; 2],
    target: &Target<'_>,
    (pair, mode): (&Arc<LoraPair>, LoraMode),
) -> Result<Proj, KernelError> {
    let (level, device) = (target.level, target.device);
    if mode == LoraMode::Unmerged {
        let mut proj = linear(file, name, dims, level, target)?;
        let dtype = if level == QuantLevel::F16 {
            burn::tensor::DType::F16
        } else {
            burn::tensor::DType::F32
        };
        proj.lora = Some(LoraDelta::new(Arc::clone(pair), &proj, dtype, device));
        return Ok(proj);
    }
    let [d_in, d_out] = dims;
    let info = checked(file, name, &dims)?;
    file.populate(info);
    let mut w = transposed(info, file.tensor_bytes(info)?, d_in, d_out)?;
    file.release(info);
    pair.merge_into(&mut w);
    let packed = quant::packed_format(level, target.backend)
        .filter(|_| d_in.is_multiple_of(BLOCK))
        .map(|format| PackedWeight::quantize(format, &w, d_in, d_out));
    match packed {
        Some(Ok(packed)) => Ok(Proj::packed(packed, device)),
        Some(Err(e)) => Err(GgufError::BadTensor {
            name: name.into(),
            reason: e.to_string(),
        }
        .into()),
        None => {
            let mut proj = Proj::new(Tensor::from_data(TensorData::new(w, dims), device));
            quant::quantize_proj_burn(&mut proj, level, target.backend);
            Ok(proj)
        }
    }
}

fn norm(
    file: &GgufFile,
    name: &str,
    d: usize,
    eps: f64,
    device: &Device,
) -> Result<RmsNorm, KernelError> {
    let g = read(file, name, &[d])?;
    Ok(RmsNorm {
        gamma: Param::from_tensor(Tensor::from_data(TensorData::new(g, [d]), device)),
        epsilon: eps,
    })
}

/// Decoder block `l`, converted to the target's level.
fn block(
    file: &GgufFile,
    c: &LlamaConfig,
    l: usize,
    target: &Target<'_>,
) -> Result<Block, KernelError> {
    let (d, kv) = (c.d_model, c.n_kv_heads * c.head_dim());
    let n = |s: &str| format!("blk.{l}.{s}.weight");
    let proj = |s: &str, dims: [usize; 2]| linear(file, &n(s), dims, target.level, target);
    // Attention projection `p` of [`crate::lora::PROJECTIONS`], with its adapter if it has one.
    let attn = |s: &str, dims: [usize; 2], p: usize| {
        let adapter = target
            .lora
            .and_then(|(a, mode)| a.layers[l][p].as_ref().map(|pair| (pair, mode)));
        match adapter {
            Some(adapter) => adapted_linear(file, &n(s), dims, target, adapter),
            None => proj(s, dims),
        }
    };
    let norm = |s: &str| norm(file, &n(s), d, c.norm_eps, target.device);
    Ok(Block {
        attn_norm: norm("attn_norm")?,
        attn: Attention {
            q: attn("attn_q", [d, d], 0)?,
            k: attn("attn_k", [d, kv], 1)?,
            v: attn("attn_v", [d, kv], 2)?,
            o: attn("attn_output", [d, d], 3)?,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            fused: false,
        },
        ffn_norm: norm("ffn_norm")?,
        mlp: Mlp {
            gate: proj("ffn_gate", [d, c.d_ff])?,
            up: proj("ffn_up", [d, c.d_ff])?,
            down: proj("ffn_down", [c.d_ff, d])?,
        },
    })
}

fn build(file: &GgufFile, c: &LlamaConfig, target: &Target<'_>) -> Result<Llama, KernelError> {
    let (d, v) = (c.d_model, c.vocab_size);
    let (level, device) = (target.level, target.device);
    let out_level = quant::output_level(level);
    // The largest tensor first, while nothing else is resident.
    let (output, tied) = match file.tensor("output.weight") {
        Ok(_) => (
            linear(file, "output.weight", [d, v], out_level, target)?,
            false,
        ),
        // Tied embeddings: the output projection is the embedding table, transposed.
        Err(GgufError::MissingTensor { .. }) => (
            linear(file, "token_embd.weight", [d, v], out_level, target)?,
            true,
        ),
        Err(e) => return Err(e.into()),
    };
    let embedding = if tied && output.can_embed() {
        None
    } else {
        let table = read(file, "token_embd.weight", &[d, v])?;
        file.release(file.tensor("token_embd.weight")?);
        Some(Embedding {
            weight: Param::from_tensor(Tensor::from_data(TensorData::new(table, [v, d]), device)),
        })
    };
    // Blocks convert in parallel on the backend's pool (the threads the run was given), each
    // tensor on its own: at most one tensor per thread in flight.
    let blocks = (0..c.n_layers)
        .into_par_iter()
        .map(|l| block(file, c, l, target))
        .collect::<Result<Vec<_>, _>>()?;
    let mut model = Llama {
        embedding,
        blocks,
        norm: norm(file, "output_norm.weight", d, c.norm_eps, device)?,
        output,
        rope: Rope::new(c.head_dim(), c.max_seq_len, c.rope_theta, device),
    };
    if level == QuantLevel::F16 {
        model.cast_to_f16();
    }
    Ok(model)
}

/// Whether socbench's Burn runtime can run `file`, and if not, why (`Ok(Err(reason))`): a
/// LLaMA-family architecture, and every tensor in a type it decodes. Decided from the header
/// alone (no tensor is read), so that a file only llama.cpp runs has its Burn cells skipped
/// with this reason before any device. A LLaMA-family file with wrong metadata is an `Err`.
pub fn burn_support(file: &GgufFile) -> Result<Result<(), String>, KernelError> {
    match crate::model::LlamaConfig::from_gguf(file) {
        Ok(_) => {}
        // Another architecture: llama.cpp may run it.
        Err(e @ crate::model::ConfigError::Architecture(_)) => return Ok(Err(e.to_string())),
        // A LLaMA-family file whose metadata is wrong is an error, not a skip.
        Err(e) => return Err(KernelError::Invalid(e.to_string())),
    }
    let undecodable: Vec<&TensorInfo> = file.tensors.iter().filter(|t| !t.ty.decodable()).collect();
    if let Some(first) = undecodable.first() {
        let mut types: Vec<String> = undecodable.iter().map(|t| t.ty.to_string()).collect();
        types.sort();
        types.dedup();
        return Ok(Err(format!(
            "{} of its tensors are in {} (the first: {}), which socbench's Burn runtime does \
             not decode (it decodes F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to \
             Q6_K)",
            undecodable.len(),
            types.join(", "),
            first.name
        )));
    }
    Ok(Ok(()))
}

/// Deterministic pseudo-random numbers (SplitMix64), so the synthetic model is the same on
/// every machine and needs no `rand` version of its own.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The `synthetic:tiny` model as GGUF bytes: LLaMA layout, 2 blocks, width 64, 4 query and 2
/// key/value heads, a byte-level vocabulary of 264 tokens. Weights are seeded random values
/// stored like the real model's (Q8_0 embedding, Q4_1 matrices, F32 norms), so loading,
/// dequantization and the tokenizer are exercised exactly as for a real file.
pub fn synthetic_tiny_gguf() -> Vec<u8> {
    synthetic_gguf(0.1)
}

/// A variant of [`synthetic_tiny_gguf`] whose outputs are peaked: an embedding table three
/// times larger, so the tied output projection gives confident predictions (perplexity ≈ 2.5
/// on its own greedy output, over 288 tokens). Wrong arithmetic moves its perplexity far
/// (measured: dropping Q4_1's minimum term in the AVX-512 kernel, 12.6× f32's), where the
/// near-uniform `synthetic:tiny` cannot tell. For tests (`kernels/tests/quant_support.rs`).
pub fn synthetic_peaked_gguf() -> Vec<u8> {
    synthetic_gguf(0.3)
}

fn synthetic_gguf(embedding_scale: f32) -> Vec<u8> {
    let (tokens, merges, types) = synthetic_vocab();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let merges: Vec<&str> = merges.iter().map(String::as_str).collect();
    // Pad the vocabulary to a multiple of 32 so every tensor is whole Q8_0/Q4_1 blocks.
    let mut tokens = tokens;
    let mut types = types;
    let pad: Vec<String> = (tokens.len()..tokens.len().div_ceil(32) * 32)
        .map(|i| format!("<unused{i}>"))
        .collect();
    tokens.extend(pad.iter().map(String::as_str));
    types.extend(std::iter::repeat_n(5, pad.len()));
    let (v, d, layers, heads, kv_heads, ff) = (tokens.len() as u64, 64u64, 2, 4u32, 2u32, 128u64);
    let kv = d / u64::from(heads) * u64::from(kv_heads);
    let mut rng = SplitMix64(0x50C_BE4C);
    let mut random = |n: u64, scale: f32| -> Vec<f32> {
        (0..n)
            .map(|_| (rng.next_f32() * 2.0 - 1.0) * scale)
            .collect()
    };
    let mut w = GgufWriter::default();
    w.string("general.architecture", "llama")
        .string("general.name", "synthetic-tiny")
        .u32("llama.block_count", layers)
        .u32("llama.context_length", 512)
        .u32("llama.embedding_length", d as u32)
        .u32("llama.feed_forward_length", ff as u32)
        .u32("llama.attention.head_count", heads)
        .u32("llama.attention.head_count_kv", kv_heads)
        .f32("llama.rope.freq_base", 10000.0)
        .f32("llama.attention.layer_norm_rms_epsilon", 1e-5)
        .string("tokenizer.ggml.model", "gpt2")
        .string("tokenizer.ggml.pre", "smollm")
        .strings("tokenizer.ggml.tokens", &tokens)
        .strings("tokenizer.ggml.merges", &merges)
        .i32s("tokenizer.ggml.token_type", &types)
        .u32("tokenizer.ggml.bos_token_id", 1)
        .u32("tokenizer.ggml.eos_token_id", 2);
    w.tensor_raw(
        "token_embd.weight",
        &[d, v],
        8,
        // Small for `synthetic:tiny`, so the tied output projection gives a model that is not
        // absurdly confident; larger for the peaked variant.
        quantize_q8_0(&random(d * v, embedding_scale)),
    );
    let q41 = |w: &mut GgufWriter, name: String, dims: [u64; 2], data: Vec<f32>| {
        w.tensor_raw(&name, &dims, 3, quantize_q4_1(&data));
    };
    for l in 0..layers {
        let s = 1.0 / (d as f32).sqrt();
        w.tensor_f32(
            &format!("blk.{l}.attn_norm.weight"),
            &[d],
            &vec![1.0; d as usize],
        );
        w.tensor_f32(
            &format!("blk.{l}.ffn_norm.weight"),
            &[d],
            &vec![1.0; d as usize],
        );
        q41(
            &mut w,
            format!("blk.{l}.attn_q.weight"),
            [d, d],
            random(d * d, s * 4.0),
        );
        q41(
            &mut w,
            format!("blk.{l}.attn_k.weight"),
            [d, kv],
            random(d * kv, s * 4.0),
        );
        q41(
            &mut w,
            format!("blk.{l}.attn_v.weight"),
            [d, kv],
            random(d * kv, s),
        );
        q41(
            &mut w,
            format!("blk.{l}.attn_output.weight"),
            [d, d],
            random(d * d, s),
        );
        q41(
            &mut w,
            format!("blk.{l}.ffn_gate.weight"),
            [d, ff],
            random(d * ff, s),
        );
        q41(
            &mut w,
            format!("blk.{l}.ffn_up.weight"),
            [d, ff],
            random(d * ff, s),
        );
        q41(
            &mut w,
            format!("blk.{l}.ffn_down.weight"),
            [ff, d],
            random(ff * d, 1.0 / (ff as f32).sqrt()),
        );
    }
    w.tensor_f32("output_norm.weight", &[d], &vec![1.0; d as usize]);
    w.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KvCache, Logits};

    fn logits(model: &Llama, device: &Device) -> Vec<f32> {
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(vec![5i64, 17, 42, 99], [1, 4]), device);
        let mut cache = KvCache::new(model.n_layers(), None);
        model
            .forward(ids, &mut cache, Logits::All)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default()
    }

    #[test]
    fn loading_for_a_level_equals_loading_f32_then_converting() {
        let spec = ModelSpec::SyntheticTiny;
        let file = spec.open().unwrap();
        let cases = [
            (BackendKind::Flex, QuantLevel::F32),
            (BackendKind::Flex, QuantLevel::F16),
            (BackendKind::Flex, QuantLevel::Q8),
            (BackendKind::Flex, QuantLevel::Q4),
            (BackendKind::NdArray, QuantLevel::Q8),
            (BackendKind::Flex, QuantLevel::Q8Tensor),
        ];
        for (backend, level) in cases {
            let device = backend.device().unwrap();
            let direct = spec.load_as(&file, &device, level, backend).unwrap().model;
            let mut converted = spec.load_opened(&file, &device).unwrap().model;
            quant::apply(&mut converted, level, backend);
            let (a, b) = (logits(&direct, &device), logits(&converted, &device));
            assert_eq!(a.len(), b.len());
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            // The file's blocks copied vs re-quantized from their decoded floats: the same
            // weights up to the last bit of a scale.
            assert!(err <= 1e-3 * scale, "{backend} {level}: {err} of {scale}");
            // One embedding table where the output projection can serve it, in both paths.
            let tied = level != QuantLevel::Q8Tensor;
            assert_eq!(direct.embedding.is_none(), tied, "{backend} {level}");
            assert_eq!(converted.embedding.is_none(), tied, "{backend} {level}");
        }
    }

    #[test]
    fn a_tied_embedding_reads_the_files_token_rows() {
        let spec = ModelSpec::SyntheticTiny;
        let file = spec.open().unwrap();
        let device = BackendKind::Flex.device().unwrap();
        let c = LlamaConfig::from_gguf(&file).unwrap();
        let table = read(&file, "token_embd.weight", &[c.d_model, c.vocab_size]).unwrap();
        let ids = [0usize, 7, c.vocab_size - 1];
        for level in [QuantLevel::F32, QuantLevel::Q8, QuantLevel::Q4] {
            let model = spec
                .load_as(&file, &device, level, BackendKind::Flex)
                .unwrap()
                .model;
            let tokens = Tensor::<2, Int>::from_data(
                TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, ids.len()]),
                &device,
            );
            let rows: Vec<f32> = model
                .output
                .embed(tokens)
                .into_data()
                .try_into_vec()
                .unwrap();
            let want: Vec<f32> = ids
                .iter()
                .flat_map(|&i| table[i * c.d_model..(i + 1) * c.d_model].to_vec())
                .collect();
            // The file's Q8_0 table, kept as it is at every one of these levels.
            assert_eq!(rows, want, "{level}");
        }
    }
}
