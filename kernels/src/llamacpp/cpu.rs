//! Whether this CPU can run the llama.cpp this program was built with: the CPU features
//! llama.cpp was compiled for (x86-64: the `GGML_*` options, `kernels/llama-cpp.cmake`; arm64:
//! `GGML_CPU_ARM_ARCH`, `scripts/build-agent`; read from its cmake cache by
//! `kernels/build.rs`) against the features this CPU reports. A build for AVX-512 or for the
//! dot-product instructions on a CPU without them is one clear error, never a SIGILL.

/// The CPU options llama.cpp was compiled for (`kernels/build.rs`): on x86-64 the `GGML_*`
/// options that were on (`GGML_AVX2,GGML_FMA,...`), on arm64 the architecture ggml's CPU
/// backend was built for (`armv8.2-a+dotprod+fp16`).
pub const BUILD_FLAGS: &str = env!("SOCBENCH_GGML_FLAGS");

include!("options.rs");

/// Whether this CPU has every instruction-set extension llama.cpp was compiled for; `Err`
/// names the missing ones and how to rebuild.
pub fn cpu_support() -> Result<(), String> {
    let missing = missing_features(BUILD_FLAGS, cpu_has);
    if missing.is_empty() {
        return Ok(());
    }
    if cfg!(target_arch = "aarch64") {
        Err(format!(
            "llama.cpp in this agent was compiled for {BUILD_FLAGS}, and this CPU lacks {}; \
             build the agent for it (`GGML_CPU_ARM_ARCH=armv8-a scripts/build-agent \
             arm64-v8a`)",
            missing.join(", ")
        ))
    } else {
        Err(format!(
            "llama.cpp in this build was compiled for {} which this CPU lacks; rebuild with \
             them off (e.g. `{}=OFF`, then `cargo clean -p llama-cpp-sys-2` and build)",
            missing.join(", "),
            missing[0]
        ))
    }
}

/// The build options in `flags` that `has` says this CPU lacks: on arm64 the features an
/// architecture string requires ([`arm_requirements`]), elsewhere the comma-separated
/// `GGML_*` options.
fn missing_features(flags: &str, has: fn(&str) -> bool) -> Vec<&str> {
    let needed = if cfg!(target_arch = "aarch64") {
        arm_requirements(flags)
    } else {
        flags.split(',').filter(|f| !f.is_empty()).collect()
    };
    needed.into_iter().filter(|f| !has(f)).collect()
}

/// The CPU features code compiled for the arm64 architecture `arch` (`-march` syntax, e.g.
/// `armv8.2-a+dotprod+fp16`) may use beyond armv8.0: those its version makes mandatory (and
/// that compilers emit: LSE atomics from 8.1, dot products from 8.4, int8 matrix multiply and
/// bf16 from 8.6, SVE2 from 9.0) and each `+feature`; `+nofeature` removes one.
fn arm_requirements(arch: &str) -> Vec<&str> {
    let mut parts = arch.split('+');
    let base = parts.next().unwrap_or_default();
    let version = base
        .strip_prefix("armv")
        .and_then(|v| v.strip_suffix("-a"))
        .unwrap_or("8");
    let (major, minor) = version.split_once('.').unwrap_or((version, "0"));
    let (major, minor): (u32, u32) = (major.parse().unwrap_or(8), minor.parse().unwrap_or(0));
    // Armv9.x carries the features of Armv8.(x+5).
    let v8 = if major >= 9 { minor + 5 } else { minor };
    let mut need: Vec<&str> = [(1, "lse"), (1, "rdm"), (3, "rcpc"), (4, "dotprod")]
        .into_iter()
        .chain([(6, "i8mm"), (6, "bf16")])
        .filter(|&(from, _)| v8 >= from)
        .map(|(_, f)| f)
        .collect();
    if major >= 9 {
        need.push("sve2");
    }
    for part in parts.filter(|p| !p.is_empty()) {
        match part.strip_prefix("no") {
            Some(off) => need.retain(|f| *f != off),
            None if !need.contains(&part) => need.push(part),
            None => {}
        }
    }
    need
}

#[cfg(target_arch = "x86_64")]
fn cpu_has(flag: &str) -> bool {
    match flag {
        "GGML_SSE42" => is_x86_feature_detected!("sse4.2"),
        "GGML_AVX" => is_x86_feature_detected!("avx"),
        "GGML_AVX2" => is_x86_feature_detected!("avx2"),
        "GGML_FMA" => is_x86_feature_detected!("fma"),
        "GGML_F16C" => is_x86_feature_detected!("f16c"),
        "GGML_BMI2" => is_x86_feature_detected!("bmi2"),
        "GGML_AVX_VNNI" => is_x86_feature_detected!("avxvnni"),
        // ggml's AVX-512 build uses F, CD, VL, DQ and BW.
        "GGML_AVX512" => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512cd")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512bw")
        }
        "GGML_AVX512_VBMI" => is_x86_feature_detected!("avx512vbmi"),
        "GGML_AVX512_VNNI" => is_x86_feature_detected!("avx512vnni"),
        "GGML_AVX512_BF16" => is_x86_feature_detected!("avx512bf16"),
        // AMX (only when asked for: `kernels/llama-cpp.cmake`): the CPU reports it, the
        // kernel must also grant the tile state, which ggml requests itself.
        "GGML_AMX_TILE" => cpuinfo_has("amx_tile"),
        "GGML_AMX_INT8" => cpuinfo_has("amx_int8"),
        "GGML_AMX_BF16" => cpuinfo_has("amx_bf16"),
        // Options that select no instructions (or that this check does not know) pass.
        _ => true,
    }
}

/// Whether the kernel lists `flag` among this CPU's flags (`/proc/cpuinfo`).
#[cfg(target_arch = "x86_64")]
fn cpuinfo_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|text| {
        text.lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
    })
}

#[cfg(target_arch = "aarch64")]
fn cpu_has(feature: &str) -> bool {
    use std::arch::is_aarch64_feature_detected as has;
    match feature {
        "lse" => has!("lse"),
        "rdm" => has!("rdm"),
        "rcpc" => has!("rcpc"),
        "crc" => has!("crc"),
        "dotprod" => has!("dotprod"),
        // `fp16` in an -march string is the half-precision arithmetic (FEAT_FP16).
        "fp16" => has!("fp16"),
        "fp16fml" | "fhm" => has!("fhm"),
        "i8mm" => has!("i8mm"),
        "bf16" => has!("bf16"),
        "sve" => has!("sve"),
        "sve2" => has!("sve2"),
        "aes" => has!("aes"),
        "sha2" => has!("sha2"),
        "sha3" => has!("sha3"),
        "crypto" => has!("aes") && has!("sha2"),
        // A feature this check cannot see is reported missing rather than risked.
        _ => false,
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn cpu_has(_flag: &str) -> bool {
    // The x86 options are ignored by llama.cpp's build for other architectures.
    true
}

#[cfg(test)]
mod tests {
    use super::{arm_requirements, missing_features};

    /// The build options a CPU lacks are named, and only those: on arm64 the features of the
    /// architecture, elsewhere the comma-separated `GGML_*` options.
    #[test]
    fn missing_build_features_are_named() {
        if cfg!(target_arch = "aarch64") {
            let flags = "armv8.2-a+dotprod+fp16";
            assert_eq!(missing_features(flags, |f| f != "dotprod"), ["dotprod"]);
            assert!(missing_features(flags, |_| true).is_empty());
            assert!(missing_features("armv8-a", |_| false).is_empty());
        } else {
            let flags = "GGML_AVX2,GGML_FMA,GGML_AVX512";
            assert_eq!(
                missing_features(flags, |f| f != "GGML_AVX512"),
                ["GGML_AVX512"]
            );
            assert!(missing_features(flags, |_| true).is_empty());
            assert!(missing_features("", |_| false).is_empty());
        }
    }

    /// An arm64 architecture requires what its version makes mandatory and what it adds.
    #[test]
    fn arm_architectures_require_their_features() {
        assert_eq!(
            arm_requirements("armv8.2-a+dotprod+fp16"),
            ["lse", "rdm", "dotprod", "fp16"]
        );
        assert!(arm_requirements("armv8-a").is_empty());
        assert_eq!(arm_requirements("armv8-a+dotprod"), ["dotprod"]);
        assert_eq!(
            arm_requirements("armv8.6-a"),
            ["lse", "rdm", "rcpc", "dotprod", "i8mm", "bf16"]
        );
        assert_eq!(
            arm_requirements("armv9-a+nosve2"),
            ["lse", "rdm", "rcpc", "dotprod"]
        );
        assert_eq!(
            arm_requirements("armv8.4-a+dotprod+i8mm"),
            ["lse", "rdm", "rcpc", "dotprod", "i8mm"]
        );
    }

    /// `kernels/llama-cpp.cmake` configures llama.cpp for the CPU that `/proc/cpuinfo`
    /// describes: an AVX2-only Zen 3 gets AVX2 and no AVX-512, an AVX-512 CPU gets AVX-512 and
    /// its extensions, and an option set in the environment wins (`GGML_AVX512=OFF` takes
    /// AVX-512's extensions with it). Configures a one-line cmake project with the include.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_cmake_include_configures_llama_cpp_for_the_described_cpu() {
        const ZEN3: &str = "fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave \
                            avx f16c bmi1 avx2 bmi2 sha_ni vaes vpclmulqdq";
        const ZEN4: &str = "sse sse2 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f \
                            avx512dq avx512ifma avx512cd avx512bw avx512vl avx512_bf16 \
                            avx512vbmi avx512_vbmi2 avx512_vnni";
        const SPR: &str = "sse4_2 avx f16c fma bmi2 avx2 avx_vnni avx512f avx512dq avx512cd \
                           avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16 amx_bf16 \
                           amx_tile amx_int8";
        let on = |flags: &str, env: &[(&str, &str)]| -> Vec<String> {
            let dir = std::env::temp_dir().join(format!(
                "socbench-cmake-{}-{}",
                std::process::id(),
                flags.len() + env.len()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            std::fs::write(
                dir.join("cpuinfo"),
                format!("processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: sse\n"),
            )
            .expect("cpuinfo");
            std::fs::write(
                dir.join("CMakeLists.txt"),
                "cmake_minimum_required(VERSION 3.14)\nproject(probe NONE)\n",
            )
            .expect("project");
            let include = concat!(env!("CARGO_MANIFEST_DIR"), "/llama-cpp.cmake");
            let mut cmd = std::process::Command::new("cmake");
            cmd.arg("-S")
                .arg(&dir)
                .arg("-B")
                .arg(dir.join("build"))
                .arg(format!("-DCMAKE_PROJECT_INCLUDE={include}"))
                .env("SOCBENCH_CPUINFO", dir.join("cpuinfo"));
            for key in super::X86_OPTIONS {
                cmd.env_remove(key);
            }
            for (k, v) in env {
                cmd.env(k, v).arg(format!("-D{k}={v}"));
            }
            let out = cmd
                .output()
                .expect("cmake runs (scripts/deps build installs it)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let cache = std::fs::read_to_string(dir.join("build/CMakeCache.txt")).expect("cache");
            let _ = std::fs::remove_dir_all(&dir);
            let mut on: Vec<String> = cache
                .lines()
                .filter_map(|l| l.strip_suffix("=ON"))
                .filter_map(|l| l.split(':').next())
                .filter(|k| k.starts_with("GGML_"))
                .map(str::to_owned)
                .collect();
            on.sort();
            on
        };
        let zen3 = on(ZEN3, &[]);
        assert_eq!(
            zen3,
            [
                "GGML_AVX",
                "GGML_AVX2",
                "GGML_BMI2",
                "GGML_F16C",
                "GGML_FMA",
                "GGML_SSE42"
            ]
        );
        let zen4 = on(ZEN4, &[]);
        for k in [
            "GGML_AVX512",
            "GGML_AVX512_BF16",
            "GGML_AVX512_VBMI",
            "GGML_AVX512_VNNI",
        ] {
            assert!(zen4.iter().any(|o| o == k), "{k} in {zen4:?}");
        }
        assert!(!zen4.iter().any(|o| o == "GGML_AVX_VNNI"), "{zen4:?}");
        let spr = on(SPR, &[]);
        assert!(spr.iter().any(|o| o == "GGML_AVX_VNNI"), "{spr:?}");
        assert!(
            !spr.iter().any(|o| o.starts_with("GGML_AMX")),
            "AMX only when asked: {spr:?}"
        );
        let off = on(SPR, &[("GGML_AVX512", "OFF")]);
        assert!(!off.iter().any(|o| o.starts_with("GGML_AVX512")), "{off:?}");
        assert!(off.iter().any(|o| o == "GGML_AVX2"), "{off:?}");
        let amx = on(SPR, &[("GGML_AMX_INT8", "ON")]);
        assert!(amx.iter().any(|o| o == "GGML_AMX_INT8"), "{amx:?}");
    }

    /// The llama.cpp in this build was configured for this machine's CPU: every x86 tier the
    /// CPU has is in [`BUILD_FLAGS`](super::BUILD_FLAGS) (no fixed list that leaves AVX-512 out, or
    /// puts it in on a CPU without it), unless the environment turned it off.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn llama_cpp_was_built_for_this_cpu() {
        assert_eq!(super::cpu_support(), Ok(()));
        let built: Vec<&str> = super::BUILD_FLAGS.split(',').collect();
        for key in super::X86_OPTIONS {
            if key.starts_with("GGML_AMX") || std::env::var_os(key).is_some() {
                continue;
            }
            assert_eq!(
                built.contains(&key),
                super::cpu_has(key),
                "{key}: built for {}",
                super::BUILD_FLAGS
            );
        }
    }
}
