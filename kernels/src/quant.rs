//! Weight quantization levels, through Burn's own quantization (`QuantScheme`).
//!
//! The loader builds each weight straight at the requested level, one tensor at a time
//! ([`crate::load::ModelSpec::load_as`]); [`apply`] converts a model loaded in `f32`, as the
//! benches do. Only the matmul weights (the seven projections of every block and the output
//! projection) are quantized; the norms stay in full precision, and a tied embedding table is
//! the output projection's (kept apart in f32 only under Burn's quantized storage).
//!
//! `q4` is asymmetric, like the file's own Q4_1 blocks (a scale and a minimum per 32 inputs),
//! although Burn's quantized values are symmetric: see [`Proj`] for how the minimum is carried.
//! Since ggml's Q4_1 quantizer puts each block's minimum and maximum on the grid's ends, the
//! file's weights come back exactly.
//!
//! On the CPU backends (NdArray, Flex), `q8` and `q4` do not use Burn's quantized tensors,
//! whose matmul dequantizes the whole weight on every call: the weights are packed into
//! [`crate::qmatmul`]'s Q8_0/Q4_1 blocks and run by its integer SIMD kernels instead
//! ([`quantize_proj_burn`] keeps Burn's path for comparison, as the benches do).

use crate::backend::BackendKind;
use crate::model::Proj;
use crate::model::{Block, Llama};
use crate::qmatmul::{BlockFormat, PackedWeight};
use burn::module::Param;
use burn::nn::Embedding;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::quantization::{Calibration, compute_q_params, compute_range};
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How the matmul weights are stored while the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuantLevel {
    /// 32-bit floats.
    #[serde(rename = "f32")]
    F32,
    /// 16-bit floats (activations too).
    #[serde(rename = "f16")]
    F16,
    /// 8-bit symmetric integers, one scale per block of 32 values (f16 in the packed CPU blocks,
    /// as GGUF's Q8_0; f32 in Burn's storage).
    #[serde(rename = "q8")]
    Q8,
    /// 4-bit integers per block of 32 inputs with an f32 scale and minimum (GGUF's Q4_1
    /// layout): packed blocks on the CPU backends, Burn Q4F values plus a per-block offset on
    /// wgpu; the output projection at q8, as 4-bit GGUF files keep it.
    #[serde(rename = "q4")]
    Q4,
    /// 4-bit symmetric integers per block of 32 inputs with one f16 scale, `w = d (q - 8)`
    /// (GGUF's Q4_0, the 4-bit format llama.cpp's fast CPU paths use): packed blocks on the CPU
    /// backends only; the output projection at q8, as for q4.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 8-bit symmetric integers, one f32 scale for the whole tensor.
    #[serde(rename = "q8-tensor")]
    Q8Tensor,
    /// 4-bit symmetric integers, one f32 scale for the whole tensor.
    #[serde(rename = "q4-tensor")]
    Q4Tensor,
    /// The model file as it is stored, in whatever types its tensors have (a Q4_K_M file's
    /// K-quants, a BF16 file): no re-quantization. llama.cpp runs it; socbench's Burn runtime
    /// quantizes from the weights itself, so its cells at `file` are skipped with the reason.
    #[serde(rename = "file")]
    File,
    /// llama.cpp's own formats, written by its quantizer (its per-tensor choices, as
    /// `llama-quantize` makes them): llama.cpp cells only, the Burn runtime has no kernels
    /// for them ([`QuantLevel::llama_only`]).
    #[serde(rename = "q5_0")]
    Q5_0,
    /// llama.cpp's Q5_1.
    #[serde(rename = "q5_1")]
    Q5_1,
    /// llama.cpp's Q2_K.
    #[serde(rename = "q2_k")]
    Q2K,
    /// llama.cpp's Q3_K_M.
    #[serde(rename = "q3_k_m")]
    Q3KM,
    /// llama.cpp's Q4_K_S.
    #[serde(rename = "q4_k_s")]
    Q4KS,
    /// llama.cpp's Q4_K_M (the 4-bit format most GGUF files on model hubs are in).
    #[serde(rename = "q4_k_m")]
    Q4KM,
    /// llama.cpp's Q5_K_S.
    #[serde(rename = "q5_k_s")]
    Q5KS,
    /// llama.cpp's Q5_K_M.
    #[serde(rename = "q5_k_m")]
    Q5KM,
    /// llama.cpp's Q6_K.
    #[serde(rename = "q6_k")]
    Q6K,
    /// llama.cpp's IQ4_NL (4-bit, non-linear grid, blocks of 32).
    #[serde(rename = "iq4_nl")]
    Iq4Nl,
    /// llama.cpp's IQ4_XS.
    #[serde(rename = "iq4_xs")]
    Iq4Xs,
}

impl QuantLevel {
    /// Every level.
    pub const ALL: [QuantLevel; 19] = [
        Self::F32,
        Self::F16,
        Self::Q8,
        Self::Q4,
        Self::Q4_0,
        Self::Q8Tensor,
        Self::Q4Tensor,
        Self::File,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q2K,
        Self::Q3KM,
        Self::Q4KS,
        Self::Q4KM,
        Self::Q5KS,
        Self::Q5KM,
        Self::Q6K,
        Self::Iq4Nl,
        Self::Iq4Xs,
    ];

    /// Whether only llama.cpp runs this level: the file as stored, or one of llama.cpp's own
    /// formats. The Burn runtime's cells at such a level are skipped with the reason.
    pub fn llama_only(self) -> bool {
        !matches!(
            self,
            Self::F32
                | Self::F16
                | Self::Q8
                | Self::Q4
                | Self::Q4_0
                | Self::Q8Tensor
                | Self::Q4Tensor
        )
    }

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
            Self::Q4_0 => "q4_0",
            Self::Q8Tensor => "q8-tensor",
            Self::Q4Tensor => "q4-tensor",
            Self::File => "file",
            Self::Q5_0 => "q5_0",
            Self::Q5_1 => "q5_1",
            Self::Q2K => "q2_k",
            Self::Q3KM => "q3_k_m",
            Self::Q4KS => "q4_k_s",
            Self::Q4KM => "q4_k_m",
            Self::Q5KS => "q5_k_s",
            Self::Q5KM => "q5_k_m",
            Self::Q6K => "q6_k",
            Self::Iq4Nl => "iq4_nl",
            Self::Iq4Xs => "iq4_xs",
        }
    }

    /// Burn's scheme for this level on `backend`, or `None` for the float levels.
    ///
    /// Storage differs by backend: NdArray and Flex hold quantized values natively (one per
    /// byte), wgpu packs every integer level into `u32` words (the only storage it runs).
    pub fn scheme(self, backend: BackendKind) -> Option<QuantScheme> {
        let value = match self {
            Self::F32 | Self::F16 => return None,
            Self::Q8 | Self::Q8Tensor => QuantValue::Q8S,
            Self::Q4 => QuantValue::Q4F,
            Self::Q4_0 | Self::Q4Tensor => QuantValue::Q4S,
            // llama.cpp's levels: no Burn scheme.
            _ => return None,
        };
        let store = match (backend, value) {
            (BackendKind::Wgpu, _) => QuantStore::PackedU32(0),
            _ => QuantStore::Native,
        };
        let scheme = QuantScheme::default().with_value(value).with_store(store);
        Some(match self {
            Self::Q8 | Self::Q4 | Self::Q4_0 => scheme.per_block([32], ScaleDtype::F32),
            _ => scheme.per_tensor(ScaleDtype::F32),
        })
    }

    /// Whether `backend` can run this level, and if not, why.
    ///
    /// The table is measured, not assumed: `tests/quant_support.rs` runs every cell of it.
    pub fn support(self, backend: BackendKind) -> Result<(), String> {
        use BackendKind::*;
        use QuantLevel::*;
        match (backend, self) {
            (_, F32) => Ok(()),
            (NdArray, F16) => Err("burn-ndarray 0.22 has no f16 tensors (\"Unsupported dtype: F16\")".into()),
            (Wgpu, Q4_0) => Err(
                "q4_0 runs on socbench's packed CPU kernels only (on wgpu, use q4)".into(),
            ),
            (NdArray, Q4Tensor) => Err(
                "burn-ndarray 0.22 does not implement 4-bit quantization (native or packed storage)"
                    .into(),
            ),
            (_, File) => Err(
                "`file` runs the model file as it is stored, which llama.cpp does (--runtime \
                 llama.cpp); socbench's Burn runtime quantizes from the weights itself (for a \
                 Q4_1, Q4_0 or Q8_0 file, q4, q4_0 or q8 run its weights unchanged)"
                    .into(),
            ),
            (_, level) if level.llama_only() => Err(format!(
                "`{level}` is one of llama.cpp's own formats (--runtime llama.cpp); \
                 socbench's Burn runtime has no kernels for it (its levels: f32, f16, q8, q4, \
                 q4_0, q8-tensor, q4-tensor)"
            )),

            _ => Ok(()),
        }
    }
}

impl fmt::Display for QuantLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|q| q.name() == s)
            .ok_or_else(|| {
                let valid: Vec<_> = Self::ALL.iter().map(|q| q.name()).collect();
                format!(
                    "unknown quantization level {s:?} (valid: {})",
                    valid.join(", ")
                )
            })
    }
}

/// The seven projections of every block (the output projection is handled on its own).
fn block_projections(model: &mut Llama) -> Vec<&mut Proj> {
    let mut out = Vec::new();
    for block in &mut model.blocks {
        out.extend([
            &mut block.attn.q,
            &mut block.attn.k,
            &mut block.attn.v,
            &mut block.attn.o,
            &mut block.mlp.gate,
            &mut block.mlp.up,
            &mut block.mlp.down,
        ]);
    }
    out
}

/// Quantizes a projection asymmetrically, in blocks of `block` inputs: per block a scale `d`
/// and a minimum `m`, `w = m + d q` with `q` in `0..=15` — GGUF's Q4_1 layout, so the file's
/// own Q4_1 weights come back exactly (ggml's quantizer maps each block's minimum to `q = 0`
/// and maximum to `q = 15`, so `m` and `d` are recovered from the dequantized values).
///
/// Burn's quantized values are symmetric, so the weight is split as
/// `W = d (q - 8) + (m + 8 d)`: the first term is a Q4F tensor (values `-8..=7`) with per-block
/// scale `d`, the second a per-block offset ([`Proj::offset`]).
fn quantize_asymmetric(proj: &mut Proj, scheme: &QuantScheme, block: usize) {
    let w = proj.weight.val();
    let device = w.device();
    let [d_in, d_out] = w.dims();
    let values: Vec<f32> = w.into_data().try_into_vec().unwrap_or_default();
    let blocks = d_in / block;
    // `[d_out, d_in]` layout: Burn's blocks run along the last axis, and ours along `d_in`.
    let mut centered = vec![0f32; d_in * d_out];
    let mut calibration = vec![0f32; d_in * d_out];
    let mut offset = vec![0f32; blocks * d_out];
    for o in 0..d_out {
        for b in 0..blocks {
            let at = |i: usize| values[(b * block + i) * d_out + o];
            let (min, max) = (0..block).fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), i| {
                (lo.min(at(i)), hi.max(at(i)))
            });
            let d = ((max - min) / 15.0).max(f32::MIN_POSITIVE);
            for i in 0..block {
                let q = ((at(i) - min) / d).round().clamp(0.0, 15.0);
                centered[o * d_in + b * block + i] = d * (q - 8.0);
            }
            // Min-max calibration gives a Q4F block the scale 2 max|x| / 15: a block whose
            // largest magnitude is 7.5 d gets exactly `d`.
            calibration[o * d_in + b * block] = 7.5 * d;
            offset[b * d_out + o] = min + 8.0 * d;
        }
    }
    let rows = |v: Vec<f32>| Tensor::<2>::from_data(TensorData::new(v, [d_out, d_in]), &device);
    let range = compute_range(scheme, &rows(calibration), &Calibration::MinMax);
    let qparams = compute_q_params(scheme, range);
    let quantized = rows(centered).quantize(scheme, qparams).transpose();
    proj.weight = Param::from_tensor(quantized);
    proj.offset = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(offset, [blocks, d_out]),
        &device,
    )));
    proj.block = block;
}

/// Bytes one stored weight takes at `level` on `backend`, scales and offsets included: what a
/// decode step streams per weight. NdArray and Flex keep quantized values one per byte
/// (Burn's native storage, 4-bit ones too); wgpu packs them into `u32` words. Block levels add
/// an f32 scale per 32 weights, and q4 an f32 offset per 32 weights as well. At q8 and q4 the
/// CPU backends hold [`crate::qmatmul`] blocks (4-bit values two per byte).
pub fn stored_bytes_per_weight(level: QuantLevel, backend: BackendKind) -> f64 {
    if let Some(format) = packed_format(level, backend) {
        return format.bytes_per_weight();
    }
    let packed = matches!(backend, BackendKind::Wgpu);
    match level {
        QuantLevel::F32 => 4.0,
        QuantLevel::F16 => 2.0,
        QuantLevel::Q8 => 1.0 + 4.0 / 32.0,
        QuantLevel::Q8Tensor => 1.0,
        QuantLevel::Q4 => (if packed { 0.5 } else { 1.0 }) + 8.0 / 32.0,
        QuantLevel::Q4_0 => (if packed { 0.5 } else { 1.0 }) + 4.0 / 32.0,
        QuantLevel::Q4Tensor => {
            if packed {
                0.5
            } else {
                1.0
            }
        }
        // llama.cpp's levels never run on Burn (`QuantLevel::support` refuses them).
        _ => 4.0,
    }
}

/// The weight traffic of one decode step and the matmul work of one token, for the roofline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightTraffic {
    /// Bytes of weights a decode step reads at least once: every projection at its stored size
    /// (the output projection at q8 when the level is q4), the norms, and one embedding row.
    pub bytes_per_step: u64,
    /// Matmul floating-point operations per token (2 per projection weight); attention's
    /// score and value products, which grow with the context, are not counted.
    pub matmul_flops_per_token: u64,
}

/// Width of the residual stream (the query projection's inputs); 0 for a model without blocks.
fn d_model(model: &Llama) -> usize {
    model.blocks.first().map_or(0, |b| b.attn.q.dims()[0])
}

/// [`WeightTraffic`] of `model` converted to `level` on `backend`.
pub fn weight_traffic(model: &Llama, level: QuantLevel, backend: BackendKind) -> WeightTraffic {
    let numel = |p: &Proj| p.dims().iter().product::<usize>() as f64;
    let projections: f64 = model
        .blocks
        .iter()
        .flat_map(Block::projections)
        .map(numel)
        .sum();
    let d_model = d_model(model);
    let output = numel(&model.output);
    let output_level = output_level(level);
    // Norm weights (two per block and the final one) and the embedding row stay as loaded.
    let float = if level == QuantLevel::F16 { 2.0 } else { 4.0 };
    let small = (2 * model.blocks.len() + 1 + 1) as f64 * d_model as f64 * float;
    let bytes = projections * stored_bytes_per_weight(level, backend)
        + output * stored_bytes_per_weight(output_level, backend)
        + small;
    // Unmerged LoRA adapters: both factors read, two products per token.
    let (lora_bytes, lora_weights) = lora_totals(model);
    WeightTraffic {
        bytes_per_step: (bytes + lora_bytes).round() as u64,
        matmul_flops_per_token: (2.0 * (projections + output + lora_weights)) as u64,
    }
}

/// The [`crate::qmatmul`] block format `level` runs as on `backend`, if it runs there.
pub fn packed_format(level: QuantLevel, backend: BackendKind) -> Option<BlockFormat> {
    match (backend.is_cpu(), level) {
        (true, QuantLevel::Q8) => Some(BlockFormat::Q8_0),
        (true, QuantLevel::Q4) => Some(BlockFormat::Q4_1),
        (true, QuantLevel::Q4_0) => Some(BlockFormat::Q4_0),
        _ => None,
    }
}

/// The code that runs `level`'s matrix products on `backend`, as results name it: the packed
/// kernel variant this CPU selected ([`crate::qmatmul::kernel_name`]) where [`packed_format`]
/// applies, `burn-<backend>` (Burn's own kernels) otherwise.
pub fn kernel_label(level: QuantLevel, backend: BackendKind) -> String {
    kernel_label_for(level, backend, crate::qmatmul::KernelTier::Auto)
}

/// [`kernel_label`] with the packed-kernel variant `tier` forced.
pub fn kernel_label_for(
    level: QuantLevel,
    backend: BackendKind,
    tier: crate::qmatmul::KernelTier,
) -> String {
    match packed_format(level, backend) {
        Some(_) => crate::qmatmul::kernel_name_for(tier).to_owned(),
        None => format!("burn-{backend}"),
    }
}

/// Converts one projection's weight to `level` (f32 weights in; for `f16` only the weight is
/// cast, the activations are the caller's business): packed blocks where
/// [`packed_format`] says so, Burn's quantization otherwise.
pub fn quantize_proj(proj: &mut Proj, level: QuantLevel, backend: BackendKind) {
    match packed_format(level, backend) {
        Some(format) => pack(proj, format),
        None => quantize_proj_burn(proj, level, backend),
    }
}

/// Packs an f32 projection into [`crate::qmatmul`] blocks; the Burn weight becomes empty.
fn pack(proj: &mut Proj, format: BlockFormat) {
    let w = proj.weight.val();
    let device = w.device();
    let [d_in, d_out] = w.dims();
    let values: Vec<f32> = w
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap_or_default();
    // A projection whose inputs are not whole blocks stays in f32: no LLaMA-family model has
    // one (d_model and d_ff are multiples of 32), so this only guards odd test shapes.
    if let Ok(packed) = PackedWeight::quantize(format, &values, d_in, d_out) {
        // An unmerged adapter moves to the host with the weight.
        let lora = proj.lora.take().map(|l| host_lora(l, d_in, d_out));
        *proj = Proj::packed(packed, &device);
        proj.lora = lora;
    }
}

/// An unmerged adapter held as Burn tensors, moved to host memory (for a packed projection).
fn host_lora(l: crate::model::LoraDelta, d_in: usize, d_out: usize) -> crate::model::LoraDelta {
    if l.host.is_some() {
        return l;
    }
    let vec = |p: &burn::module::Param<Tensor<2>>| {
        p.val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    };
    let (a, b) = (vec(&l.a), vec(&l.b));
    let rank = a.len() / d_in.max(1);
    let pair = crate::lora::LoraPair {
        d_in,
        d_out,
        rank,
        a,
        b,
    };
    let empty = |p: burn::module::Param<Tensor<2>>| {
        let device = p.val().device();
        burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(Vec::<f32>::new(), [0, 0]),
            &device,
        ))
    };
    crate::model::LoraDelta {
        a: empty(l.a),
        b: empty(l.b),
        host: Some(std::sync::Arc::new(pair)),
    }
}

/// Converts one projection's weight to `level` with Burn's own quantized tensors.
pub fn quantize_proj_burn(proj: &mut Proj, level: QuantLevel, backend: BackendKind) {
    match (level, level.scheme(backend)) {
        (QuantLevel::F16, _) => {
            proj.weight = proj.weight.clone().map(|t| t.cast(DType::F16));
            // An unmerged adapter takes the activations' type too.
            if let Some(l) = &mut proj.lora
                && l.host.is_none()
            {
                l.a = l.a.clone().map(|t| t.cast(DType::F16));
                l.b = l.b.clone().map(|t| t.cast(DType::F16));
            }
        }
        (QuantLevel::Q4, Some(scheme)) => quantize_asymmetric(proj, &scheme, 32),
        // `QuantLevel::support` refuses it first; a caller that skipped that check is a bug.
        (QuantLevel::Q4_0, _) => {
            panic!("q4_0 runs on the packed CPU kernels only, not on {backend}")
        }
        (level, _) if level.llama_only() => {
            panic!("`{level}` is llama.cpp's; the Burn runtime does not convert to it")
        }
        (_, Some(scheme)) => {
            proj.weight = proj.weight.clone().map(|t| t.quantize_dynamic(&scheme));
        }
        (_, None) => {}
    }
}

/// The level the output projection runs at when the blocks run at `level`: at q4 and q4_0 it
/// stays at 8 bits, as 4-bit GGUF files store it (SmolLM2's is Q8_0): measured here, squeezing
/// it to 4 bits alone costs +3.7 % perplexity.
pub fn output_level(level: QuantLevel) -> QuantLevel {
    match level {
        QuantLevel::Q4 | QuantLevel::Q4_0 => QuantLevel::Q8,
        level => level,
    }
}

/// Converts `model`'s matmul weights (and, for `f16`, every parameter) to `level`: for a model
/// loaded in f32 ([`crate::load::ModelSpec::load`]); a model loaded for its level
/// ([`crate::load::ModelSpec::load_as`]) is built that way, one tensor at a time.
///
/// A tied embedding stays one table when the converted output projection can hand out rows
/// ([`Proj::can_embed`]); before Burn's quantized storage replaces it, the table is kept
/// apart in f32.
pub fn apply(model: &mut Llama, level: QuantLevel, backend: BackendKind) {
    let convert = |proj: &mut Proj, level: QuantLevel| quantize_proj(proj, level, backend);
    for proj in block_projections(model) {
        convert(proj, level);
    }
    let output = output_level(level);
    if model.embedding.is_none()
        && packed_format(output, backend).is_none()
        && output.scheme(backend).is_some()
    {
        model.embedding = Some(Embedding {
            weight: Param::from_tensor(model.output.weight.val().transpose()),
        });
    }
    convert(&mut model.output, output);
    if level == QuantLevel::F16 {
        model.cast_to_f16();
    }
}

/// Bytes and weight count of the model's unmerged LoRA adapters.
fn lora_totals(model: &Llama) -> (f64, f64) {
    model
        .blocks
        .iter()
        .flat_map(Block::projections)
        .filter_map(|p| p.lora.as_ref())
        .fold((0.0, 0.0), |(bytes, n), l| {
            let weights = match &l.host {
                Some(pair) => (pair.a.len() + pair.b.len()) as f64,
                None => {
                    (l.a.val().dims().iter().product::<usize>()
                        + l.b.val().dims().iter().product::<usize>()) as f64
                }
            };
            (bytes + l.bytes() as f64, n + weights)
        })
}

/// Bytes the model's weights occupy once converted to `level` on `backend` (computed from the
/// tensors as stored: packed blocks as held, Burn tensors at [`stored_bytes_per_weight`]):
/// every projection, the output projection, the norms, and the embedding table when it is
/// held apart from the output projection, and unmerged LoRA adapters. Position tables and activations are not weights.
pub fn resident_weight_bytes(model: &Llama, level: QuantLevel, backend: BackendKind) -> u64 {
    let float = if level == QuantLevel::F16 { 2.0 } else { 4.0 };
    let proj = |p: &Proj, level: QuantLevel| match &p.packed {
        Some(w) => w.stored_bytes() as f64,
        None => {
            let numel = p.dims().iter().product::<usize>() as f64;
            let per = if level.scheme(backend).is_none() {
                float
            } else {
                stored_bytes_per_weight(level, backend)
            };
            numel * per
        }
    };
    let mut bytes = proj(&model.output, output_level(level));
    bytes += model
        .blocks
        .iter()
        .flat_map(Block::projections)
        .map(|p| proj(p, level))
        .sum::<f64>();
    bytes += (2 * model.blocks.len() + 1) as f64 * d_model(model) as f64 * float;
    bytes += lora_totals(model).0;
    if let Some(table) = &model.embedding {
        bytes += table.weight.val().dims().iter().product::<usize>() as f64 * float;
    }
    bytes.round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::{dequantize, quantize_q4_1};
    use crate::gguf::GgmlType;
    use crate::load::SplitMix64;

    /// Q4_1-encoded random rows `[d_out][d_in]`, dequantized, as a `[d_in, d_out]` projection.
    fn q4_1_proj(d_in: usize, d_out: usize, device: &Device) -> (Proj, Vec<f32>) {
        let mut rng = SplitMix64(5);
        let raw: Vec<f32> = (0..d_in * d_out)
            .map(|_| rng.next_f32() * 2.0 - 1.0)
            .collect();
        let mut rows = vec![0f32; raw.len()];
        dequantize(GgmlType::Q4_1, &quantize_q4_1(&raw), &mut rows).unwrap();
        let mut w = vec![0f32; raw.len()];
        for o in 0..d_out {
            for i in 0..d_in {
                w[i * d_out + o] = rows[o * d_in + i];
            }
        }
        let t = Tensor::<2>::from_data(TensorData::new(w.clone(), [d_in, d_out]), device);
        (Proj::new(t), w)
    }

    fn max_error_after_q4(backend: BackendKind) -> f32 {
        let device = backend.device().unwrap();
        let (d_in, d_out) = (576, 64);
        let (mut proj, w) = q4_1_proj(d_in, d_out, &device);
        let scheme = QuantLevel::Q4.scheme(backend).unwrap();
        quantize_asymmetric(&mut proj, &scheme, 32);
        // Project the identity: row i of the output is row i of the effective weight.
        let eye: Vec<f32> = (0..d_in * d_in)
            .map(|k| f32::from(u8::from(k / d_in == k % d_in)))
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(eye, [d_in, d_in]), &device);
        let got: Vec<f32> = proj.forward(x).into_data().try_into_vec().unwrap();
        got.iter()
            .zip(&w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn weight_traffic_counts_every_projection_at_its_stored_size() {
        let device = BackendKind::Flex.device().unwrap();
        let loaded = crate::load::ModelSpec::SyntheticTiny.load(&device).unwrap();
        let c = &loaded.config;
        let kv = c.d_model / c.n_heads * c.n_kv_heads;
        let per_block = 2 * c.d_model * c.d_model + 2 * c.d_model * kv + 3 * c.d_model * c.d_ff;
        let weights = (c.n_layers * per_block + c.d_model * c.vocab_size) as u64;
        let small = ((2 * c.n_layers + 2) * c.d_model * 4) as u64;
        let f32 = weight_traffic(&loaded.model, QuantLevel::F32, BackendKind::Flex);
        assert_eq!(f32.bytes_per_step, 4 * weights + small);
        assert_eq!(f32.matmul_flops_per_token, 2 * weights);
        let q8 = weight_traffic(&loaded.model, QuantLevel::Q8, BackendKind::Flex);
        // Packed on the CPU: a byte and an f16 scale per 32 weights (GGUF's Q8_0 size).
        assert_eq!(q8.bytes_per_step, weights * 17 / 16 + small);
        // q4 packed on wgpu: half a byte and two f32 per 32 weights, the output at q8.
        let q4 = weight_traffic(&loaded.model, QuantLevel::Q4, BackendKind::Wgpu);
        let out = (c.d_model * c.vocab_size) as u64;
        assert_eq!(
            q4.bytes_per_step,
            (weights - out) * 3 / 4 + out * 9 / 8 + small
        );
    }

    #[test]
    #[cfg(feature = "wgpu")]
    fn asymmetric_q4_reproduces_q4_1_weights_on_wgpu() {
        let err = max_error_after_q4(BackendKind::Wgpu);
        assert!(err < 1e-5, "max error {err}");
    }

    /// Canary for why q4 on Flex runs socbench's packed kernels rather than Burn's Q4F: when
    /// Burn's Flex Q4F becomes exact, this fails, and the benches can compare the two.
    #[test]
    fn flex_q4f_is_still_wrong() {
        let err = max_error_after_q4(BackendKind::Flex);
        assert!(
            err > 0.01,
            "Flex's Q4F is now exact ({err}): compare it with the packed kernels"
        );
    }
}
