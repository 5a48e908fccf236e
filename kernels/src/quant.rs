//! Weight quantization levels, through Burn's own quantization (`QuantScheme`).
//!
//! The GGUF file's weights are first dequantized to `f32` (Q4_1's per-block minimum has no
//! Burn equivalent), then re-quantized to the requested level. Only the matmul weights (the
//! seven projections of every block and the output projection) are quantized; the embedding
//! lookup table and the norms stay in full precision, as llama.cpp keeps its norms.

use crate::backend::BackendKind;
use crate::model::Llama;
use burn::nn::Linear;
use burn::tensor::DType;
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
    /// 8-bit symmetric integers, one f32 scale per block of 32 values.
    #[serde(rename = "q8")]
    Q8,
    /// 4-bit symmetric integers, one f32 scale per block of 32 values.
    #[serde(rename = "q4")]
    Q4,
    /// 8-bit symmetric integers, one f32 scale for the whole tensor.
    #[serde(rename = "q8-tensor")]
    Q8Tensor,
    /// 4-bit symmetric integers, one f32 scale for the whole tensor.
    #[serde(rename = "q4-tensor")]
    Q4Tensor,
}

impl QuantLevel {
    /// Every level.
    pub const ALL: [QuantLevel; 6] = [
        Self::F32,
        Self::F16,
        Self::Q8,
        Self::Q4,
        Self::Q8Tensor,
        Self::Q4Tensor,
    ];

    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8 => "q8",
            Self::Q4 => "q4",
            Self::Q8Tensor => "q8-tensor",
            Self::Q4Tensor => "q4-tensor",
        }
    }

    /// Bits per stored weight, scales excluded.
    pub fn weight_bits(self) -> u32 {
        match self {
            Self::F32 => 32,
            Self::F16 => 16,
            Self::Q8 | Self::Q8Tensor => 8,
            Self::Q4 | Self::Q4Tensor => 4,
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
            Self::Q4 | Self::Q4Tensor => QuantValue::Q4S,
        };
        let store = match (backend, value) {
            (BackendKind::Wgpu, _) => QuantStore::PackedU32(0),
            _ => QuantStore::Native,
        };
        let scheme = QuantScheme::default().with_value(value).with_store(store);
        Some(match self {
            Self::Q8 | Self::Q4 => scheme.per_block([32], ScaleDtype::F32),
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
            (NdArray, Q4 | Q4Tensor) => Err(
                "burn-ndarray 0.22 does not implement 4-bit quantization (native or packed storage)"
                    .into(),
            ),

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

fn map_linear(linear: &mut Linear, f: &impl Fn(burn::Tensor<2>) -> burn::Tensor<2>) {
    linear.weight = linear.weight.clone().map(f);
}

/// Converts `model`'s matmul weights (and, for `f16`, every parameter) to `level`.
pub fn apply(model: &mut Llama, level: QuantLevel, backend: BackendKind) {
    let convert: Box<dyn Fn(burn::Tensor<2>) -> burn::Tensor<2>> = match level.scheme(backend) {
        // Blocks run along Burn's last axis (`d_out` of the `[d_in, d_out]` weight). Measured
        // on SmolLM2 (whose f32 weights are dequantized Q4_1, blocked along `d_in`): blocking
        // along `d_in` instead gave q4 perplexity 4.81 vs 3.80 here, and q8 2.2550 vs 2.2562.
        Some(scheme) => Box::new(move |t| t.quantize_dynamic(&scheme)),
        None if level == QuantLevel::F16 => Box::new(|t| t.cast(DType::F16)),
        None => return,
    };
    for block in &mut model.blocks {
        for linear in [
            &mut block.attn.q,
            &mut block.attn.k,
            &mut block.attn.v,
            &mut block.attn.o,
            &mut block.mlp.gate,
            &mut block.mlp.up,
            &mut block.mlp.down,
        ] {
            map_linear(linear, &convert);
        }
    }
    map_linear(&mut model.output, &convert);
    if level == QuantLevel::F16 {
        model.cast_to_f16();
    }
}
