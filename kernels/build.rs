//! Records which `GGML_*` CPU options llama.cpp is compiled with (`.cargo/config.toml` sets
//! them; the environment may override), so `llamacpp::cpu_support` can refuse a CPU without
//! them instead of dying with SIGILL.

const OPTIONS: [&str; 10] = [
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
];

fn main() {
    let on: Vec<&str> = OPTIONS
        .iter()
        .copied()
        .inspect(|k| println!("cargo:rerun-if-env-changed={k}"))
        .filter(|k| {
            std::env::var(k)
                .is_ok_and(|v| matches!(v.to_ascii_uppercase().as_str(), "ON" | "1" | "TRUE"))
        })
        .collect();
    println!("cargo:rustc-env=SOCBENCH_GGML_FLAGS={}", on.join(","));
}
