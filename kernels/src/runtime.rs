//! Which inference runtime runs a cell: socbench's own Burn model, or llama.cpp as the
//! reference (the runtime nearly every Android LLM app uses), on the same GGUF file.

use crate::quant::QuantLevel;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// An inference runtime.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum RuntimeKind {
    /// socbench's LLaMA model in Burn (NdArray, Flex or wgpu), with its own kernels.
    #[default]
    #[serde(rename = "burn")]
    Burn,
    /// llama.cpp's CPU backend, linked through `llama-cpp-sys-2` (cargo feature `llama-cpp`).
    #[serde(rename = "llama.cpp")]
    LlamaCpp,
}

/// The name llama.cpp cells carry in the `backend` column: ggml's CPU backend (the Burn
/// backends do not apply to it).
pub const LLAMA_CPP_BACKEND: &str = "cpu";

impl RuntimeKind {
    /// Every runtime, in the order reports list them.
    pub const ALL: [RuntimeKind; 2] = [Self::Burn, Self::LlamaCpp];

    /// The name used on the command line, in sweep files and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Burn => "burn",
            Self::LlamaCpp => "llama.cpp",
        }
    }

    /// Whether this build carries it: llama.cpp is a cargo feature (`llama-cpp`), on for host
    /// builds and for the arm64 agent `scripts/build-agent` cross-builds with zig.
    pub fn is_built(self) -> bool {
        match self {
            Self::Burn => true,
            Self::LlamaCpp => cfg!(feature = "llama-cpp"),
        }
    }

    /// The runtimes this build has.
    pub fn built() -> Vec<RuntimeKind> {
        Self::ALL.into_iter().filter(|r| r.is_built()).collect()
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "burn" => Ok(Self::Burn),
            "llama.cpp" => Ok(Self::LlamaCpp),
            other => Err(format!(
                "unknown runtime `{other}` (valid: burn, llama.cpp)"
            )),
        }
    }
}

/// llama.cpp's file types (`llama_ftype` in llama.h) and the names its tools print.
const LLAMA_FTYPES: &[(u32, &str)] = &[
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
    (39, "NVFP4"),
    (40, "Q1_0"),
    (41, "Q2_0"),
];

/// The name of a GGUF file's `general.file_type` (llama.cpp's `llama_ftype`: `Q4_K_M` for
/// 15), or `None` for a value llama.h does not define.
pub fn llama_ftype_name(ftype: u32) -> Option<&'static str> {
    LLAMA_FTYPES.iter().find(|t| t.0 == ftype).map(|t| t.1)
}

/// The format llama.cpp runs a cell in: one of its file types, written by its quantizer
/// unless the model is in it already, or the model file as stored (`quant = file`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LlamaFormat {
    /// A file type (`llama_ftype`): 0 F32, 1 F16, 7 Q8_0, 3 Q4_1, 2 Q4_0, 15 Q4_K_M …
    FileType(u32),
    /// The model file as it is stored (`quant = file`), in whatever types it holds.
    AsStored,
}

impl LlamaFormat {
    /// `F32`.
    pub const F32: Self = Self::FileType(0);
    /// `F16`.
    pub const F16: Self = Self::FileType(1);
    /// `Q8_0`: 8-bit, one f16 scale per block of 32.
    pub const Q8_0: Self = Self::FileType(7);
    /// `Q4_1`: 4-bit, f16 scale and minimum per block of 32 (the shipped SmolLM2 file).
    pub const Q4_1: Self = Self::FileType(3);
    /// `Q4_0`: 4-bit, one f16 scale per block of 32 (the 4-bit format llama.cpp's fastest
    /// CPU paths are built for).
    pub const Q4_0: Self = Self::FileType(2);

    /// The format's name as llama.cpp's tools print it (and the cache file's suffix).
    pub fn name(self) -> &'static str {
        match self {
            Self::FileType(t) => llama_ftype_name(t).unwrap_or("unknown file type"),
            Self::AsStored => "as stored",
        }
    }

    /// The GGUF `general.file_type` value of a file mostly in this format (llama.cpp's
    /// `llama_ftype`); `None` for the file as stored.
    pub fn file_type(self) -> Option<u32> {
        match self {
            Self::FileType(t) => Some(t),
            Self::AsStored => None,
        }
    }

    /// The format llama.cpp runs a socbench quantization level in, or why it has none.
    pub fn for_level(level: QuantLevel) -> Result<Self, String> {
        let ftype = match level {
            QuantLevel::F32 => 0,
            QuantLevel::F16 => 1,
            QuantLevel::Q8 => 7,
            QuantLevel::Q4 => 3,
            QuantLevel::Q4_0 => 2,
            QuantLevel::File => return Ok(Self::AsStored),
            QuantLevel::Q5_0 => 8,
            QuantLevel::Q5_1 => 9,
            QuantLevel::Q2K => 10,
            QuantLevel::Q3KM => 12,
            QuantLevel::Q4KS => 14,
            QuantLevel::Q4KM => 15,
            QuantLevel::Q5KS => 16,
            QuantLevel::Q5KM => 17,
            QuantLevel::Q6K => 18,
            QuantLevel::Iq4Nl => 25,
            QuantLevel::Iq4Xs => 30,
            QuantLevel::Q8Tensor | QuantLevel::Q4Tensor => {
                return Err(format!(
                    "llama.cpp has no per-tensor-scale format like `{level}` (its formats scale \
                     each block: use q8 or q4)"
                ));
            }
        };
        Ok(Self::FileType(ftype))
    }
}

/// Why llama.cpp cannot run a cell with these axis values, decided before any work: a Burn
/// GPU backend, a level without a llama.cpp format, or a KV window shorter than the context
/// (llama.cpp's cache keeps every position of the context).
pub fn llama_cpp_support(
    backend_is_cpu: bool,
    level: QuantLevel,
    kv_window: Option<usize>,
    context_tokens: usize,
) -> Result<LlamaFormat, String> {
    if !backend_is_cpu {
        return Err(
            "socbench runs llama.cpp on its CPU backend only (its GPU backends are not built in)"
                .into(),
        );
    }
    let format = LlamaFormat::for_level(level)?;
    if let Some(w) = kv_window.filter(|&w| w < context_tokens) {
        return Err(format!(
            "llama.cpp keeps the whole context in its KV cache: a window of {w} positions \
             (context {context_tokens}) cannot be honoured"
        ));
    }
    Ok(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_list_the_valid_ones() {
        for r in RuntimeKind::ALL {
            assert_eq!(r.name().parse::<RuntimeKind>(), Ok(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.name()));
        }
        let e = "llamacpp".parse::<RuntimeKind>().unwrap_err();
        assert!(e.contains("burn, llama.cpp"), "{e}");
    }

    #[test]
    fn levels_map_to_llama_cpp_formats_or_say_why_not() {
        assert_eq!(
            LlamaFormat::for_level(QuantLevel::Q8),
            Ok(LlamaFormat::Q8_0)
        );
        assert_eq!(
            LlamaFormat::for_level(QuantLevel::Q4),
            Ok(LlamaFormat::Q4_1)
        );
        assert_eq!(
            LlamaFormat::for_level(QuantLevel::Q4_0),
            Ok(LlamaFormat::Q4_0)
        );
        assert_eq!(
            LlamaFormat::for_level(QuantLevel::F16),
            Ok(LlamaFormat::F16)
        );
        assert_eq!(
            LlamaFormat::for_level(QuantLevel::File),
            Ok(LlamaFormat::AsStored)
        );
        // Every level llama.cpp runs has a file type its tools name, and the level is that
        // name in lower case (q4_k_m → Q4_K_M), but for socbench's own q8 and q4.
        for level in QuantLevel::ALL {
            let Ok(LlamaFormat::FileType(t)) = LlamaFormat::for_level(level) else {
                continue;
            };
            let name = llama_ftype_name(t).unwrap();
            if level.llama_only() || level == QuantLevel::Q4_0 || level == QuantLevel::F16 {
                assert_eq!(name.to_lowercase(), level.name(), "{level}");
            }
        }
        assert_eq!(
            LlamaFormat::for_level(QuantLevel::Q4KM).unwrap().name(),
            "Q4_K_M"
        );
        assert!(LlamaFormat::for_level(QuantLevel::Q4Tensor).is_err());
        assert!(llama_cpp_support(false, QuantLevel::Q8, None, 10).is_err());
        let e = llama_cpp_support(true, QuantLevel::Q8, Some(64), 80).unwrap_err();
        assert!(e.contains("window of 64"), "{e}");
        assert!(llama_cpp_support(true, QuantLevel::Q8, Some(80), 80).is_ok());
    }
}
