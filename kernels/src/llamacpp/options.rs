/// The x86-64 `GGML_*` options of llama.cpp's CPU backend that select instructions: what
/// `kernels/llama-cpp.cmake` detects (AMX only when asked for), `kernels/build.rs` reads back
/// from the cmake cache (it `include!`s this file) and `cpu_support` checks at run time.
pub const X86_OPTIONS: [&str; 14] = [
    "GGML_SSE42",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_BMI2",
    "GGML_AVX_VNNI",
    "GGML_AVX512",
    "GGML_AVX512_VBMI",
    "GGML_AVX512_VNNI",
    "GGML_AVX512_BF16",
    "GGML_AMX_TILE",
    "GGML_AMX_INT8",
    "GGML_AMX_BF16",
];
