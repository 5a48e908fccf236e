//! Records which CPU options llama.cpp is compiled with, so `llamacpp::cpu_support` can
//! refuse a CPU without them instead of dying with SIGILL: on x86-64 the `GGML_*` options
//! (`.cargo/config.toml` sets them; the environment may override), on arm64 the architecture
//! `GGML_CPU_ARM_ARCH` (`scripts/build-agent` sets it; llama-cpp-sys-2's own default is
//! `armv8-a`).
//!
//! For the static arm64 agent it also points the link at the C++ library zig built
//! (`SOCBENCH_CXX_LIB_DIR`, set by `scripts/build-agent`).

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
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let flags = if arch == "aarch64" {
        println!("cargo:rerun-if-env-changed=GGML_CPU_ARM_ARCH");
        std::env::var("GGML_CPU_ARM_ARCH").unwrap_or_else(|_| "armv8-a".to_owned())
    } else {
        let on: Vec<&str> = OPTIONS
            .iter()
            .copied()
            .inspect(|k| println!("cargo:rerun-if-env-changed={k}"))
            .filter(|k| {
                std::env::var(k)
                    .is_ok_and(|v| matches!(v.to_ascii_uppercase().as_str(), "ON" | "1" | "TRUE"))
            })
            .collect();
        on.join(",")
    };
    println!("cargo:rustc-env=SOCBENCH_GGML_FLAGS={flags}");

    println!("cargo:rerun-if-env-changed=SOCBENCH_CXX_LIB_DIR");
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "musl");
    if musl && std::env::var_os("CARGO_FEATURE_LLAMA_CPP").is_some() {
        match std::env::var("SOCBENCH_CXX_LIB_DIR") {
            Ok(dir) => println!("cargo:rustc-link-search=native={dir}"),
            Err(_) => panic!(
                "llama.cpp in a static musl build links the C++ library zig builds: build it \
                 with `scripts/build-agent arm64-v8a` (which sets SOCBENCH_CXX_LIB_DIR), or \
                 without the `llama-cpp` feature"
            ),
        }
    }
}
