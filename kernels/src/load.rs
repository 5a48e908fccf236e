//! Building the model from a GGUF file, or from the synthetic model's seeded weights.

use crate::KernelError;
use crate::dequant::{dequantize, quantize_q4_1, quantize_q8_0};
use crate::gguf::{GgufError, GgufFile, GgufWriter, TensorInfo};
use crate::model::{Attention, Block, Llama, LlamaConfig, Mlp, Proj, Rope};
use crate::tokenizer::{Tokenizer, synthetic_vocab};
use burn::module::Param;
use burn::nn::{Embedding, RmsNorm};
use burn::prelude::*;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

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
    /// Reads the GGUF file (or builds the synthetic one).
    pub fn open(&self) -> Result<GgufFile, KernelError> {
        match self {
            Self::SyntheticTiny => Ok(GgufFile::parse(synthetic_tiny_gguf())?),
            Self::File(path) => {
                if !path.exists() {
                    return Err(KernelError::ModelMissing { path: path.clone() });
                }
                GgufFile::open(path).map_err(|source| KernelError::ModelFile {
                    path: path.clone(),
                    source: source.into(),
                })
            }
        }
    }

    /// Loads the model onto `device`, in `f32`.
    pub fn load(&self, device: &Device) -> Result<LoadedModel, KernelError> {
        self.load_opened(&self.open()?, device)
    }

    /// Loads the model from `file`, this spec's already opened GGUF, onto `device`.
    pub fn load_opened(
        &self,
        file: &GgufFile,
        device: &Device,
    ) -> Result<LoadedModel, KernelError> {
        let with_path = |e: KernelError| match (self, e) {
            (Self::File(path), KernelError::Gguf(source)) => KernelError::ModelFile {
                path: path.clone(),
                source: source.into(),
            },
            (_, e) => e,
        };
        let config = LlamaConfig::from_gguf(file).map_err(|e| match self {
            Self::File(path) => KernelError::ModelFile {
                path: path.clone(),
                source: Box::new(e),
            },
            Self::SyntheticTiny => KernelError::Invalid(e.to_string()),
        })?;
        let tokenizer = Tokenizer::from_gguf(file)?;
        let model = build(file, &config, device).map_err(with_path)?;
        Ok(LoadedModel {
            model,
            tokenizer,
            file_tensor_bytes: file.tensor_data_bytes(),
            name: file.get_str("general.name").ok().map(str::to_string),
            config,
        })
    }
}

/// Dequantized data of a tensor, checked against the shape the model expects
/// (`expected` innermost first, as GGUF lists dimensions).
fn read(file: &GgufFile, name: &str, expected: &[usize]) -> Result<Vec<f32>, KernelError> {
    let info: &TensorInfo = file.tensor(name)?;
    let dims: Vec<usize> = info.dims.iter().map(|&d| d as usize).collect();
    if dims != expected {
        return Err(GgufError::BadTensor {
            name: name.into(),
            reason: format!("dimensions {dims:?}, the model's metadata implies {expected:?}"),
        }
        .into());
    }
    let bytes = file.tensor_bytes(info)?;
    let mut out = vec![0f32; info.elements() as usize];
    dequantize(info.ty, bytes, &mut out).ok_or_else(|| GgufError::BadTensor {
        name: name.into(),
        reason: format!("{} data of {} bytes does not decode", info.ty, bytes.len()),
    })?;
    Ok(out)
}

/// A GGUF matrix `[ne0 = d_in, ne1 = d_out]` (row-major `[d_out][d_in]`) as a [`Proj`],
/// which stores `[d_in, d_out]`.
fn linear(
    file: &GgufFile,
    name: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Proj, KernelError> {
    let w = read(file, name, &[d_in, d_out])?;
    Ok(linear_from_rows(&w, d_in, d_out, device))
}

fn linear_from_rows(w: &[f32], d_in: usize, d_out: usize, device: &Device) -> Proj {
    let mut t = vec![0f32; w.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            t[i * d_out + o] = w[o * d_in + i];
        }
    }
    Proj::new(Tensor::from_data(TensorData::new(t, [d_in, d_out]), device))
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

fn build(file: &GgufFile, c: &LlamaConfig, device: &Device) -> Result<Llama, KernelError> {
    let (d, v) = (c.d_model, c.vocab_size);
    let kv = c.n_kv_heads * c.head_dim();
    let emb = read(file, "token_embd.weight", &[d, v])?;
    let output = match file.tensor("output.weight") {
        Ok(_) => linear(file, "output.weight", d, v, device)?,
        // Tied embeddings: the output projection is the embedding table, transposed.
        Err(GgufError::MissingTensor { .. }) => linear_from_rows(&emb, d, v, device),
        Err(e) => return Err(e.into()),
    };
    let embedding = Embedding {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(emb, [v, d]), device)),
    };
    let mut blocks = Vec::with_capacity(c.n_layers);
    for l in 0..c.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        blocks.push(Block {
            attn_norm: norm(file, &n("attn_norm"), d, c.norm_eps, device)?,
            attn: Attention {
                q: linear(file, &n("attn_q"), d, d, device)?,
                k: linear(file, &n("attn_k"), d, kv, device)?,
                v: linear(file, &n("attn_v"), d, kv, device)?,
                o: linear(file, &n("attn_output"), d, d, device)?,
                n_heads: c.n_heads,
                n_kv_heads: c.n_kv_heads,
                fused: false,
            },
            ffn_norm: norm(file, &n("ffn_norm"), d, c.norm_eps, device)?,
            mlp: Mlp {
                gate: linear(file, &n("ffn_gate"), d, c.d_ff, device)?,
                up: linear(file, &n("ffn_up"), d, c.d_ff, device)?,
                down: linear(file, &n("ffn_down"), c.d_ff, d, device)?,
            },
        });
    }
    Ok(Llama {
        embedding,
        blocks,
        norm: norm(file, "output_norm.weight", d, c.norm_eps, device)?,
        output,
        rope: Rope::new(c.head_dim(), c.max_seq_len, c.rope_theta, device),
    })
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
        // Small, so the tied output projection gives a model that is not absurdly confident.
        quantize_q8_0(&random(d * v, 0.1)),
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
