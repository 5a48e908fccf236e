//! Quantization against f32 on the real model: how far each level moves perplexity.
//!
//! Its own test binary: these scores keep both cores busy for a minute, and tests in one binary
//! run side by side (`knobs.rs` observes thread counts, which a busy machine would starve).

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

fn model() -> String {
    real_model().to_str().unwrap().to_string()
}

/// `socbench score --model <SmolLM2> --backend B --quant Q EXTRA…`, as JSON.
fn score_json(backend: &str, quant: &str, extra: &[&str]) -> serde_json::Value {
    let model = model();
    let mut args = vec![
        "score",
        "--model",
        &model,
        "--backend",
        backend,
        "--quant",
        quant,
    ];
    args.extend_from_slice(extra);
    json(&args)
}

fn reference_perplexity(backend: &str, quant: &str) -> f64 {
    let r = &reference()[0];
    let ids = id_list(&r.gen_ids);
    score_json(
        backend,
        quant,
        &["--prompt", &r.prompt, "--continuation-ids", &ids],
    )["perplexity"]
        .as_f64()
        .unwrap()
}

/// Perplexity of the shipped quality text (≈780 tokens) at `quant`, relative to f32 on the same
/// backend (`score --text`).
fn text_perplexity_vs_f32(backend: &str, quant: &str) -> f64 {
    score_json(backend, quant, &["--text"])["relative_to_f32"]
        .as_f64()
        .unwrap()
}

/// q8 and q4 on the CPU backends run socbench's packed kernels (8-bit activations, as
/// llama.cpp does). They are judged on the quality text: the 32-token reference continuation
/// is too short for a 3 % bound once activations are rounded too (measured there: q4 +3.5 % on
/// NdArray, −0.3 % on Flex, from the same kernel; on the text: +1.2 % and +1.5 %).
#[test]
fn packed_q8_and_q4_stay_within_three_percent_of_f32_on_the_quality_text() {
    for backend in ["flex", "ndarray"] {
        for quant in ["q8", "q4"] {
            let rel = text_perplexity_vs_f32(backend, quant);
            assert!(
                rel.abs() < 0.03,
                "{backend} {quant}: quality-text perplexity {:+.2} % from f32",
                rel * 100.0
            );
            assert!(rel != 0.0, "{backend} {quant} must change something");
        }
    }
}

/// q4_0 re-quantizes the file's Q4_1 blocks to Q4_0 (one scale per block, the value of largest
/// magnitude on `-8`), as llama.cpp's quantizer does without an importance matrix: two roundings
/// of each weight, so it moves further than q4 (measured on the quality text, Flex, AMD EPYC
/// Zen 4: +13.9 %, q4 +1.3 %). The bound holds it there: a wrong offset or scale lands far
/// beyond it.
#[test]
fn packed_q4_0_stays_within_twenty_percent_of_f32_on_the_quality_text() {
    for backend in ["flex", "ndarray"] {
        let rel = text_perplexity_vs_f32(backend, "q4_0");
        assert!(
            rel > 0.0 && rel < 0.20,
            "{backend} q4_0: quality-text perplexity {:+.2} % from f32",
            rel * 100.0
        );
    }
}

/// The quality column must not depend on which kernel variant ran a level (issue #36: q4 once
/// scored +2.9 % on an AVX2 host and +1.3 % on an AVX-512 one). Every SIMD variant this CPU
/// has scores the quality text at q8, q4 and q4_0 within 0.1 % of the others, and every
/// variant, the portable one included, scores the text's first 128-token chunk within 0.1 %
/// of the portable kernel (the scalar reference decodes at 2 tok/s: the whole text would add
/// a minute and a half).
#[test]
fn every_kernel_variant_scores_the_quality_text_within_a_tenth_of_a_percent() {
    use socbench_kernels::backend::BackendKind;
    use socbench_kernels::generate::{QUALITY_CHUNK, QUALITY_TEXT, perplexity};
    use socbench_kernels::load::ModelSpec;
    use socbench_kernels::qmatmul::{KernelTier, kernel_names};
    use socbench_kernels::quant::QuantLevel;
    use socbench_kernels::session::ModelSession;
    let spec = ModelSpec::File(real_model());
    let close = |a: f64, b: f64| (a / b - 1.0).abs() <= 1e-3;
    for quant in [QuantLevel::Q8, QuantLevel::Q4, QuantLevel::Q4_0] {
        // (variant, first chunk, whole text for the SIMD variants)
        let mut seen: Vec<(&str, f64, Option<f64>)> = Vec::new();
        for name in kernel_names() {
            let tier = KernelTier::parse(name).unwrap();
            let s =
                ModelSession::open_with(&spec, BackendKind::Flex, quant, 2, None, tier).unwrap();
            let ids = s.loaded.tokenizer.encode(QUALITY_TEXT).unwrap();
            let score = |ids: &[u32]| {
                perplexity(&s.rt, &s.loaded.model, ids, QUALITY_CHUNK)
                    .unwrap()
                    .perplexity
            };
            let whole = (name != "portable").then(|| score(&ids));
            seen.push((name, score(&ids[..QUALITY_CHUNK]), whole));
        }
        eprintln!("{quant}: {seen:?}");
        let (_, first, _) = *seen.iter().find(|(n, _, _)| *n == "portable").unwrap();
        let wholes: Vec<(&str, f64)> = seen
            .iter()
            .filter_map(|(n, _, w)| w.map(|w| (*n, w)))
            .collect();
        for (name, p, _) in &seen {
            assert!(
                close(*p, first),
                "{quant} on {name}: first-chunk perplexity {p} against the portable kernel's {first}"
            );
        }
        for (name, w) in &wholes {
            assert!(
                close(*w, wholes[0].1),
                "{quant} on {name}: quality-text perplexity {w} against {}'s {}",
                wholes[0].0,
                wholes[0].1
            );
        }
    }
}

/// q4 on wgpu keeps the file's Q4_1 blocks exactly (Burn Q4F values plus a per-block offset)
/// with f32 activations and the output projection at 8 bits, so it stays as close to f32 as q8.
#[test]
fn wgpu_q8_and_q4_stay_within_three_percent_of_f32() {
    let base = reference_perplexity("wgpu", "f32");
    for quant in ["q8", "q4"] {
        let p = reference_perplexity("wgpu", quant);
        let rel = (p - base) / base;
        assert!(
            rel.abs() < 0.03,
            "wgpu {quant}: perplexity {p} vs f32 {base} ({:+.1} %)",
            rel * 100.0
        );
    }
}

/// The quality gate (issue #17): on the real model every usable level passes (measured on the
/// 64-token gate text, AMD EPYC Zen 4: 0.95–1.04× f32's perplexity) and q4-tensor, whose one
/// 4-bit scale per tensor cannot hold SmolLM2's weights (≈ 10⁸ perplexity), is refused, with
/// the figures and a non-zero exit.
#[test]
fn the_quality_gate_passes_every_usable_level_and_refuses_q4_tensor() {
    for quant in ["f32", "q8", "q4", "q4_0", "q8-tensor"] {
        let v = score_json("flex", quant, &["--gate"]);
        let ratio = v["ratio"].as_f64().unwrap();
        assert!(
            v["passed"] == true && ratio > 0.8 && ratio <= 1.5,
            "flex {quant}: {v}"
        );
    }
    let model = model();
    let out = socbench()
        .args(["score", "--gate", "--model", &model, "--backend", "flex"])
        .args(["--quant", "q4-tensor", "--threads", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refused: quality gate: perplexity"), "{text}");
}

/// A sweep does not measure a variant the gate refuses: its cells are `skipped` with the
/// figures, and the other variants of the same sweep are measured.
#[test]
fn a_sweep_skips_the_variant_the_quality_gate_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let model = model();
    let out = socbench()
        .args([
            "run",
            "--device",
            "local",
            "--model",
            &model,
            "--backend",
            "flex",
        ])
        .args([
            "--quant",
            "q8,q4-tensor",
            "--threads",
            "1",
            "--prompt-tokens",
            "4",
        ])
        .args(["--gen-tokens", "2", "--repetitions", "1", "--warmup", "0"])
        .args(["--no-cooldown", "--no-probe", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_success(&out);
    let csv = std::fs::read(out_dir.join("results.csv")).unwrap();
    let rows = socbench_reports::row::parse_results(&out_dir.join("results.csv"), &csv)
        .unwrap()
        .rows;
    let status = |quant: &str| {
        rows.iter()
            .filter(|(_, r)| r.quant == quant)
            .map(|(_, r)| (r.status, r.note.clone()))
            .collect::<Vec<_>>()
    };
    let q8 = status("q8");
    assert!(
        q8.len() == 1 && q8[0].0 == socbench_reports::row::Status::Ok,
        "{q8:?}"
    );
    let refused = status("q4-tensor");
    assert!(
        refused.len() == 1
            && refused[0].0 == socbench_reports::row::Status::Skipped
            && refused[0].1.contains("quality gate: perplexity"),
        "{refused:?}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("manifest.json")).unwrap()).unwrap();
    assert!(
        manifest["quality_gate"]["reference_perplexity"].as_f64() > Some(1.0),
        "{}",
        manifest["quality_gate"]
    );
}
