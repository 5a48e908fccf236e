//! Whether this CPU can run the llama.cpp this program was built with: the CPU features
//! llama.cpp was compiled for (x86-64: the `GGML_*` options, `.cargo/config.toml`; arm64:
//! `GGML_CPU_ARM_ARCH`, `scripts/build-agent`; read from its cmake cache by
//! `kernels/build.rs`) against the features this CPU reports. A build for AVX-512 or for the
//! dot-product instructions on a CPU without them is one clear error, never a SIGILL.

/// The CPU options llama.cpp was compiled for (`kernels/build.rs`): on x86-64 the `GGML_*`
/// options that were on (`GGML_AVX2,GGML_FMA,...`), on arm64 the architecture ggml's CPU
/// backend was built for (`armv8.2-a+dotprod+fp16`).
pub const BUILD_FLAGS: &str = env!("SOCBENCH_GGML_FLAGS");

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
        // Options that select no instructions (or that this check does not know) pass.
        _ => true,
    }
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
}
