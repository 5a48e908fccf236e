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

#[test]
fn pacing_idles_between_tokens_outside_the_step_timer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("paced");
    let run = socbench()
        .args([
            "run",
            "--device",
            "local",
            "--model",
            "synthetic:tiny",
            "--quant",
            "f32",
            "--threads",
            "1",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "9",
            "--pacing-ms",
            "0,25",
            "--repetitions",
            "2",
            "--no-cooldown",
            "--no-probe",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&run);
    let path = out.join("results.csv");
    let rows = socbench_reports::row::parse_results(&path, &std::fs::read(&path).unwrap())
        .unwrap()
        .rows;
    let paced: Vec<_> = rows.iter().filter(|(_, r)| r.pacing_ms == 25).collect();
    assert_eq!((rows.len(), paced.len()), (4, 2), "{rows:?}");
    // The gap is not in the step times: the tiny model's steps stay far below it.
    for (_, r) in &rows {
        assert_eq!(r.status, socbench_reports::row::Status::Ok, "{r:?}");
        assert!(r.decode_ms_per_token.is_some_and(|ms| ms < 25.0), "{r:?}");
    }
    // It is in the run's wall time: 8 gaps after the 9 tokens but the last.
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let mut spans = std::collections::BTreeMap::<bool, Vec<f64>>::new();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["event"] == "rep" && v["repetition"].is_u64() {
            let paced = v["cell"].as_str().unwrap().ends_with("|pace25");
            let span = v["t_end_s"].as_f64().unwrap() - v["t_start_s"].as_f64().unwrap();
            spans.entry(paced).or_default().push(span);
        }
    }
    assert!(spans[&true].iter().all(|s| *s >= 8.0 * 0.025), "{spans:?}");
    assert!(spans[&false].iter().all(|s| *s < 8.0 * 0.025), "{spans:?}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("id=\"pacing-vs-latency\"") && html.contains("pace=25ms"),
        "the report charts the axis"
    );
}

#[test]
fn llama_cpp_paces_between_tokens_outside_the_step_timer_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("paced");
    let run = socbench()
        .args([
            "run",
            "--device",
            "local",
            "--model",
            &model(),
            "--runtime",
            "llama.cpp",
            "--quant",
            "q4",
            "--threads",
            "1",
            "--prompt-tokens",
            "4",
            "--gen-tokens",
            "5",
            "--pacing-ms",
            "40",
            "--repetitions",
            "1",
            "--warmup",
            "0",
            "--no-cooldown",
            "--no-probe",
            "--quality-gate",
            "0",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_success(&run);
    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let rep: serde_json::Value = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["event"] == "rep" && v["repetition"].is_u64())
        .expect("one measured repetition");
    let span = rep["t_end_s"].as_f64().unwrap() - rep["t_start_s"].as_f64().unwrap();
    let steps: f64 = rep["decode_s"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .sum();
    let ttft = rep["ttft_s"].as_f64().unwrap();
    assert_eq!(rep["decode_s"].as_array().unwrap().len(), 4, "{rep}");
    // Four gaps of 40 ms between the five tokens, none of them inside a step's time.
    assert!(
        span >= ttft + steps + 4.0 * 0.040,
        "{span} vs {ttft} + {steps}: {rep}"
    );
}
