//! Issue #18: llama.cpp as a reference runtime beside Burn, on the same GGUF file.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_success, rows, socbench};
use socbench_kernels::backend::BackendKind;
use socbench_kernels::generate::{GenerateOptions, Sampling, generate, score};
use socbench_kernels::llamacpp::{LlamaCppModel, quantize};
use socbench_kernels::load::ModelSpec;
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::runtime::LlamaFormat;
use socbench_kernels::session::ModelSession;
use socbench_reports::row::{ResultRow, Status};
use std::path::Path;

/// `socbench run` on this host with the real model into `out`, with `axes`.
fn run_local(out: &Path, axes: &[&str]) -> std::process::Output {
    let model = common::real_model().display().to_string();
    socbench()
        .args([
            "run",
            "--device",
            "local",
            "--no-probe",
            "--no-cooldown",
            "--model",
            &model,
        ])
        .args(axes)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Burn at f32 and llama.cpp at F16 (the file written by llama.cpp's own quantizer) produce
/// the same greedy tokens for the reference prompts, and under teacher forcing pick the same
/// token wherever Burn's top two logits are at least 0.5 apart.
#[test]
fn burn_f32_and_llama_cpp_f16_agree_on_the_reference_prompts() {
    let model = common::real_model();
    let dir = tempfile::tempdir().unwrap();
    let f16 = dir.path().join("model.F16.gguf");
    quantize(&model, &f16, LlamaFormat::F16, 2).unwrap();
    let llama = LlamaCppModel::open(&f16).unwrap();
    let burn = ModelSession::open(
        &ModelSpec::File(model.clone()),
        BackendKind::Flex,
        QuantLevel::F32,
        2,
    )
    .unwrap();
    const N: usize = 16;
    let mut compared = 0;
    for r in common::reference() {
        let prompt: Vec<u32> = r.prompt_ids.iter().map(|&i| i as u32).collect();
        // The same tokenizer, read by each runtime from the file.
        assert_eq!(llama.tokenize(&r.prompt), prompt, "{:?}", r.prompt);
        let opts = GenerateOptions {
            max_new_tokens: N,
            batch: 1,
            kv_window: None,
            sampling: Sampling::Greedy,
            stop_at: None,
            pacing: std::time::Duration::ZERO,
        };
        let b = generate(&burn.rt, &burn.loaded.model, &prompt, &opts).unwrap();
        let mut ctx = llama.context(1, prompt.len() + N, 2).unwrap();
        let l = ctx.generate(&prompt, N, std::time::Duration::ZERO).unwrap();
        assert_eq!(l.gen_ids[0].len(), N);
        assert_eq!(l.decode.len(), N - 1, "one timing per decode step");
        assert_eq!(
            b.gen_ids[0], l.gen_ids[0],
            "greedy tokens of {:?}",
            r.prompt
        );
        // Teacher forcing along the other engine's reference continuation.
        let cont: Vec<u32> = r.gen_ids.iter().map(|&i| i as u32).collect();
        let s = score(&burn.rt, &burn.loaded.model, &prompt, &cont, None).unwrap();
        let mut seq = prompt.clone();
        seq.extend_from_slice(&cont[..cont.len() - 1]);
        let mut scoring = llama.context(1, seq.len(), 2).unwrap();
        let logits = scoring.logits(&seq).unwrap();
        for (i, pos) in s.positions.iter().enumerate() {
            let row = &logits[prompt.len() - 1 + i];
            let best = row
                .iter()
                .enumerate()
                .fold(0, |b, (j, &v)| if v > row[b] { j } else { b });
            if pos.margin >= 0.5 {
                assert_eq!(
                    best as u32, pos.argmax,
                    "{:?}: position {i} (Burn margin {})",
                    r.prompt, pos.margin
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 20, "only {compared} positions compared");
}

/// The issue's acceptance command: rows for both runtimes, every ratio in the report's
/// Runtimes section, llama.cpp's own format named for each level.
#[test]
fn a_sweep_on_both_runtimes_writes_both_and_the_report_sets_them_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("r");
    let out = run_local(
        &out_dir,
        &[
            "--runtime",
            "burn,llama.cpp",
            "--quant",
            "q8,q4",
            "--threads",
            "1,2",
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "8",
            "--repetitions",
            "2",
        ],
    );
    assert_success(&out);
    let rows = rows(&out_dir);
    for runtime in ["burn", "llama.cpp"] {
        for quant in ["q8", "q4"] {
            for threads in [1, 2] {
                let ok: Vec<&ResultRow> = rows
                    .iter()
                    .filter(|r| {
                        r.runtime == runtime
                            && r.quant == quant
                            && r.threads == threads
                            && r.status == Status::Ok
                    })
                    .collect();
                assert_eq!(ok.len(), 2, "{runtime} {quant} t{threads}: {rows:#?}");
                for r in ok {
                    assert!(r.decode_tok_per_s.is_some_and(|v| v > 0.0), "{r:?}");
                    assert!(r.ttft_s.is_some_and(|v| v > 0.0), "{r:?}");
                    assert!(r.peak_rss_bytes.is_some_and(|v| v > 0.0), "{r:?}");
                    // Memory and load, on both runtimes: the weights as they run, the cache
                    // (Burn: the 16 + 8 - 1 positions run, f32; llama.cpp: the context it
                    // allocated, f16), the load time, and PSS where the kernel has it.
                    assert!(r.load_s.is_some_and(|v| v > 0.0), "{r:?}");
                    let resident = r.weight_bytes_resident.unwrap();
                    assert!(resident > 50e6 && resident < r.peak_rss_bytes.unwrap());
                    let kv = r.kv_cache_bytes.unwrap();
                    let per_position = (30 * 2 * 3 * 64) as f64;
                    if runtime == "burn" {
                        assert_eq!(kv, 23.0 * per_position * 4.0, "{r:?}");
                        // The agent per cell: under the bound from the stored model.
                        let bound = 1.5 * r.model_bytes.unwrap() + 100.0 * 1048576.0;
                        assert!(r.peak_rss_bytes.unwrap() <= bound, "{r:?}");
                    } else {
                        assert!(kv >= 24.0 * per_position * 2.0, "{r:?}");
                    }
                    if Path::new("/proc/self/smaps_rollup").exists() {
                        assert!(r.pss_bytes.is_some_and(|v| v > 0.0), "{r:?}");
                    }
                    let backend = if runtime == "burn" { "flex" } else { "cpu" };
                    assert_eq!(r.backend, backend);
                    // Which code ran the products: this CPU's packed kernel, or llama.cpp's.
                    let kernel = match (runtime, quant) {
                        ("burn", _) => socbench_kernels::qmatmul::kernel_name(),
                        (_, "q8") => "ggml-cpu Q8_0",
                        _ => "ggml-cpu Q4_1",
                    };
                    assert_eq!(r.kernel, kernel, "{r:?}");
                    assert!(r.run_id.contains(if runtime == "burn" {
                        "|flex|"
                    } else {
                        "|llama.cpp-cpu|"
                    }));
                }
            }
        }
    }
    let html = std::fs::read_to_string(out_dir.join("report.html")).unwrap();
    let section = &html[html.find("id=\"runtimes\"").unwrap()..];
    let table = &section[..section.find("</table>").unwrap()];
    // One row per Burn cell; a ratio for decode, prefill, TTFT, peak memory and load time in
    // each (this host has no power sensor: energy says so).
    assert_eq!(table.matches("<tr><td>").count(), 4, "{table}");
    assert_eq!(table.matches("×<br><small>[").count(), 20, "{table}");
    assert_eq!(table.matches("not measured").count(), 4, "{table}");
    for quant in ["q8", "q4"] {
        assert!(
            section.contains(&format!("id=\"runtimes-decode-vs-threads-{quant}\"")),
            "{section}"
        );
    }
    // The Markdown export carries the same comparison (the README's tables come from it).
    let md = socbench()
        .arg("report")
        .arg(&out_dir)
        .args(["--format", "md"])
        .output()
        .unwrap();
    assert_success(&md);
    let md = String::from_utf8_lossy(&md.stdout);
    let table = &md[md.find("### Runtimes").unwrap()..];
    assert_eq!(table.matches("\n| `local` |").count(), 4, "{table}");
    assert_eq!(table.matches("×** [").count(), 20, "{table}");
    // The manifest records what the agent can run.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert!(
        manifest
            .to_string()
            .contains("\"runtimes\":[\"burn\",\"llama.cpp\"]"),
        "{manifest}"
    );
}

/// Axis values llama.cpp cannot honour are `skipped` before any work, each with its reason;
/// Burn's cells of the same sweep run.
#[test]
fn llama_cpp_cells_it_cannot_honour_are_skipped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_local(
        dir.path(),
        &[
            "--runtime",
            "burn,llama.cpp",
            "--quant",
            "q8,q8-tensor",
            "--threads",
            "1",
            "--kv-window",
            "8",
            "--prompt-tokens",
            "8",
            "--gen-tokens",
            "4",
            "--repetitions",
            "1",
            "--warmup",
            "0",
        ],
    );
    assert_success(&out);
    let rows = rows(dir.path());
    let llama: Vec<&ResultRow> = rows.iter().filter(|r| r.runtime == "llama.cpp").collect();
    assert_eq!(llama.len(), 2, "{rows:#?}");
    for r in &llama {
        assert_eq!(r.status, Status::Skipped);
        let why = if r.quant == "q8" {
            "a window of 8 positions (context 12) cannot be honoured"
        } else {
            "no per-tensor-scale format like `q8-tensor`"
        };
        assert!(r.note.contains(why), "{r:?}");
    }
    let burn_ok = rows
        .iter()
        .filter(|r| r.runtime == "burn" && r.status == Status::Ok)
        .count();
    assert_eq!(burn_ok, 2, "{rows:#?}");
}

/// `generate --runtime llama.cpp`: the quick check, with the level's llama.cpp format named,
/// and synthetic models refused in one sentence.
#[test]
fn generate_with_llama_cpp_names_its_format_and_refuses_synthetic_models() {
    let model = common::real_model().display().to_string();
    let v = common::json(&[
        "generate",
        "--runtime",
        "llama.cpp",
        "--model",
        &model,
        "--quant",
        "q4",
        "--threads",
        "1",
        "-n",
        "6",
        "--prompt",
        "The capital of France is",
    ]);
    assert_eq!(v["settings"]["runtime"], "llama.cpp");
    assert_eq!(v["settings"]["llama_cpp_format"], "Q4_1");
    // The shipped file is Q4_1 already: run as it is, not re-quantized.
    assert_eq!(
        v["settings"]["llama_cpp_file"].as_str(),
        Some(model.as_str())
    );
    assert_eq!(v["gen_ids"].as_array().unwrap().len(), 6);
    assert!(v["settings"]["load_s"].as_f64().unwrap() > 0.0);
    let out = socbench()
        .args([
            "generate",
            "--runtime",
            "llama.cpp",
            "--model",
            "synthetic:tiny",
            "--prompt",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs a GGUF model file"), "{err}");
}
