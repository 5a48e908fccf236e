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

/// llama.cpp's own storage formats, the ones socbench's levels map to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LlamaFormat {
    /// `F32`.
    F32,
    /// `F16`.
    F16,
    /// `Q8_0`: 8-bit, one f16 scale per block of 32.
    Q8_0,
    /// `Q4_1`: 4-bit, f16 scale and minimum per block of 32 (the shipped SmolLM2 file).
    Q4_1,
    /// `Q4_0`: 4-bit, one f16 scale per block of 32 (the 4-bit format llama.cpp's fastest
    /// CPU paths are built for).
    Q4_0,
    /// The model file as it is stored (`quant = file`), in whatever types it holds.
    AsStored,
}

impl LlamaFormat {
    /// The format's name as llama.cpp's tools print it (and the cache file's suffix).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q8_0 => "Q8_0",
            Self::Q4_1 => "Q4_1",
            Self::Q4_0 => "Q4_0",
            Self::AsStored => "as stored",
        }
    }

    /// The GGUF `general.file_type` value of a file mostly in this format (llama.cpp's
    /// `llama_ftype`); `None` for the file as stored.
    pub fn file_type(self) -> Option<u32> {
        match self {
            Self::F32 => Some(0),
            Self::F16 => Some(1),
            Self::Q4_0 => Some(2),
            Self::Q4_1 => Some(3),
            Self::Q8_0 => Some(7),
            Self::AsStored => None,
        }
    }

    /// The format llama.cpp runs a socbench quantization level in, or why it has none.
    pub fn for_level(level: QuantLevel) -> Result<Self, String> {
        match level {
            QuantLevel::F32 => Ok(Self::F32),
            QuantLevel::F16 => Ok(Self::F16),
            QuantLevel::Q8 => Ok(Self::Q8_0),
            QuantLevel::Q4 => Ok(Self::Q4_1),
            QuantLevel::Q4_0 => Ok(Self::Q4_0),
            QuantLevel::File => Ok(Self::AsStored),
            QuantLevel::Q8Tensor | QuantLevel::Q4Tensor => Err(format!(
                "llama.cpp has no per-tensor-scale format like `{level}` (its formats scale \
                 each block of 32: use q8 or q4)"
            )),
        }
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
        assert!(LlamaFormat::for_level(QuantLevel::Q4Tensor).is_err());
        assert!(llama_cpp_support(false, QuantLevel::Q8, None, 10).is_err());
        let e = llama_cpp_support(true, QuantLevel::Q8, Some(64), 80).unwrap_err();
        assert!(e.contains("window of 64"), "{e}");
        assert!(llama_cpp_support(true, QuantLevel::Q8, Some(80), 80).is_ok());
    }
}
