//! Each knob has a real, observed effect: threads, batch, KV window, quantization, sampling.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;

const PROMPT: &str = "Once upon a time";

fn model() -> String {
    real_model().to_str().unwrap().to_string()
}

#[test]
fn threads_one_and_two_are_both_correct_and_really_used() {
    let r = &reference()[0];
    // Free-running greedy decoding reproduces the reference (measured: all 32 tokens); 16
    // tokens give the thread count enough CPU time to be observed.
    for threads in ["1", "2"] {
        let g = json(&[
            "generate",
            "--model",
            &model(),
            "--backend",
            "ndarray",
            "--threads",
            threads,
            "--prompt",
            &r.prompt,
            "-n",
            "16",
        ]);
        assert_eq!(ids(&g["gen_ids"]), r.gen_ids[..16], "--threads {threads}");
        // Observed, not trusted: the threads that each did >= 10 % of the CPU work.
        let observed = g["settings"]["threads_observed"].as_u64();
        assert_eq!(
            observed,
            Some(threads.parse().unwrap()),
            "--threads {threads}: {g}"
        );
    }
}

#[test]
fn kv_window_changes_nothing_before_the_window_and_something_after() {
    // Teacher forcing over 24 positions: queries at absolute positions < 8 see the same keys
    // with or without the window; later ones see only their last 8.
    let cont =
        "They lived in a small house near the forest, where the trees grew tall and the river ran";
    let score = |extra: &[&str]| {
        let model = model();
        let mut args = vec![
            "score",
            "--model",
            &model,
            "--prompt",
            PROMPT,
            "--continuation",
            cont,
        ];
        args.extend_from_slice(extra);
        json(&args)
    };
    let full = score(&[]);
    let win = score(&["--kv-window", "8"]);
    let prompt_len = full["prompt_ids"].as_array().unwrap().len();
    let lp = |v: &serde_json::Value| -> Vec<f64> {
        v["positions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["logprob"].as_f64().unwrap())
            .collect()
    };
    let (a, b) = (lp(&full), lp(&win));
    assert!(a.len() > 12);
    let mut differs_after = false;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let query_pos = prompt_len - 1 + i;
        if query_pos < 8 {
            assert!(
                (x - y).abs() < 1e-4,
                "position {query_pos} changed: {x} vs {y}"
            );
        } else if (x - y).abs() > 1e-3 {
            differs_after = true;
        }
    }
    assert!(
        differs_after,
        "a window of 8 changed nothing past position 8"
    );
    assert_eq!(win["settings"]["kv_window"], 8);
}

#[test]
fn batch_decodes_independent_sequences() {
    let greedy = |extra: &[&str]| {
        let model = model();
        let mut args = vec!["generate", "--model", &model, "--prompt", PROMPT, "-n", "6"];
        args.extend_from_slice(extra);
        json(&args)
    };
    let one = greedy(&[]);
    let three = greedy(&["--batch", "3"]);
    let batch = three["batch_gen_ids"].as_array().expect("batch_gen_ids");
    assert_eq!(batch.len(), 3);
    for seq in batch {
        assert_eq!(
            ids(seq),
            ids(&one["gen_ids"]),
            "greedy: every sequence equals batch 1"
        );
    }
    // Seeded sampling: sequences differ from each other, and the seed reproduces them.
    let args = [
        "generate",
        "--model",
        "synthetic:tiny",
        "--prompt",
        "the cat",
        "-n",
        "12",
        "--batch",
        "2",
        "--seed",
        "7",
        "--temperature",
        "1.5",
        "--top-k",
        "0",
    ];
    let s1 = json(&args);
    let s2 = json(&args);
    assert_eq!(
        s1["batch_gen_ids"], s2["batch_gen_ids"],
        "same seed, same tokens"
    );
    let b = s1["batch_gen_ids"].as_array().unwrap();
    assert_ne!(b[0], b[1], "the two sequences of a sampled batch differ");
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

#[test]
fn score_text_gives_the_quality_texts_perplexity_beside_f32() {
    let v = json(&[
        "score",
        "--text",
        "--model",
        "synthetic:tiny",
        "--backend",
        "flex",
        "--quant",
        "q8",
        "--threads",
        "1",
    ]);
    assert_eq!(v["quant"], "q8");
    let p = v["perplexity"]["perplexity"].as_f64().unwrap();
    let base = v["f32_perplexity"]["perplexity"].as_f64().unwrap();
    // The built-in text is several hundred tokens in 128-token chunks.
    assert!(v["perplexity"]["tokens"].as_u64().unwrap() > 300, "{v}");
    assert_eq!(v["perplexity"]["chunk"], 128);
    assert_ne!(p, base, "q8 must change something");
    let rel = v["relative_to_f32"].as_f64().unwrap();
    assert!((rel - (p / base - 1.0)).abs() < 1e-12, "{v}");
}
