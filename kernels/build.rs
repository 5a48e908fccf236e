//! Records which CPU options llama.cpp is compiled with, so `llamacpp::cpu_support` can
//! refuse a CPU without them instead of dying with SIGILL: on x86-64 the `GGML_*` options, on
//! arm64 the architecture `GGML_CPU_ARM_ARCH`. They are read from llama.cpp's own cmake
//! cache (found through llama-cpp-sys-2's `ggml_cmake_dir`), which holds what the library was
//! really configured with: cmake configures once per build directory, so a changed
//! environment alone does not rebuild it. Without that cache, the environment's values
//! (`kernels/llama-cpp.cmake` detects the x86 ones, `scripts/build-agent` sets the arm64 one).
//!
//! For the static arm64 agent it also points the link at the C++ library zig built
//! (`SOCBENCH_CXX_LIB_DIR`, set by `scripts/build-agent`).

use std::path::Path;

// X86_OPTIONS: the `GGML_*` options that select x86 instructions (shared with the crate).
include!("src/llamacpp/options.rs");

/// The value of `key` in llama.cpp's cmake cache, when llama-cpp-sys-2 built it here.
fn configured(key: &str) -> Option<String> {
    let dir = std::env::var_os("DEP_LLAMA_GGML_CMAKE_DIR")?;
    // <out>/lib/cmake → <out>/build/CMakeCache.txt
    let cache = Path::new(&dir)
        .parent()?
        .parent()?
        .join("build/CMakeCache.txt");
    println!("cargo:rerun-if-changed={}", cache.display());
    let text = std::fs::read_to_string(&cache).ok()?;
    text.lines().find_map(|l| {
        let (name, value) = l.split_once('=')?;
        (name.split(':').next() == Some(key)).then(|| value.trim().to_owned())
    })
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_GGML_CMAKE_DIR");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let flags = if arch == "aarch64" {
        println!("cargo:rerun-if-env-changed=GGML_CPU_ARM_ARCH");
        configured("GGML_CPU_ARM_ARCH")
            .filter(|v| !v.is_empty())
            .or_else(|| std::env::var("GGML_CPU_ARM_ARCH").ok())
            .unwrap_or_else(|| "armv8-a".to_owned())
    } else {
        let on: Vec<&str> = X86_OPTIONS
            .iter()
            .copied()
            .inspect(|k| println!("cargo:rerun-if-env-changed={k}"))
            .filter(|k| {
                configured(k)
                    .or_else(|| std::env::var(k).ok())
                    .is_some_and(|v| matches!(v.to_ascii_uppercase().as_str(), "ON" | "1" | "TRUE"))
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
