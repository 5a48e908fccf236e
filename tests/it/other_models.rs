//! Issue #34: any GGUF file llama.cpp loads runs in llama.cpp cells, whatever socbench's own
//! runtime can decode. The files are made here: SmolLM2 rewritten by the project's
//! `GgufWriter` as another architecture (Qwen3's layout: LLaMA's tensors plus a norm of the
//! queries and keys per head), then quantized by llama.cpp's own quantizer to K-quants.
#![allow(clippy::unwrap_used)]

use crate::common;

use common::{assert_success, rows, socbench};
use socbench_kernels::gguf::{GgufFile, GgufWriter};
use socbench_kernels::llamacpp::quantize_ftype;
use socbench_reports::row::Status;
use std::path::Path;

/// Writes the model at `src` (a LLaMA GGUF file) as a `qwen3` file at `dst`: the same weights
/// as stored (Q4_1) and tokenizer, Qwen3's metadata keys, and the per-head query and key
/// norms Qwen3 has and LLaMA lacks (ones). Its outputs mean nothing (Qwen3 rotates other
/// dimensions than LLaMA); llama.cpp loads and runs it like any Qwen3 file.
fn write_as_qwen3(src: &Path, dst: &Path) {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::default();
    w.string("general.architecture", "qwen3")
        .string("general.name", "SmolLM2 as qwen3 (socbench test)")
        .u32(
            "general.file_type",
            f.get_usize("general.file_type").unwrap() as u32,
        );
    for key in [
        "context_length",
        "embedding_length",
        "block_count",
        "feed_forward_length",
        "attention.head_count",
        "attention.head_count_kv",
    ] {
        let v = f.get_usize(&format!("llama.{key}")).unwrap();
        w.u32(&format!("qwen3.{key}"), v as u32);
    }
    for key in ["rope.freq_base", "attention.layer_norm_rms_epsilon"] {
        if let Ok(v) = f.get_f64(&format!("llama.{key}")) {
            w.f32(&format!("qwen3.{key}"), v as f32);
        }
    }
    for key in ["tokenizer.ggml.model", "tokenizer.ggml.pre"] {
        w.string(key, f.get_str(key).unwrap());
    }
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"] {
        w.strings(key, &f.get_str_array(key).unwrap());
    }
    let types: Vec<i32> = f
        .get_int_array("tokenizer.ggml.token_type")
        .unwrap()
        .into_iter()
        .map(|t| t as i32)
        .collect();
    w.i32s("tokenizer.ggml.token_type", &types);
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id",
    ] {
        if let Ok(v) = f.get_usize(key) {
            w.u32(key, v as u32);
        }
    }
    for t in &f.tensors {
        w.tensor_raw(
            &t.name,
            &t.dims,
            t.ty.code(),
            f.tensor_bytes(t).unwrap().to_vec(),
        );
    }
    let heads = f.get_usize("llama.attention.head_count").unwrap();
    let head_dim = (f.get_usize("llama.embedding_length").unwrap() / heads) as u64;
    let ones = vec![1f32; head_dim as usize];
    for layer in 0..f.get_usize("llama.block_count").unwrap() {
        for norm in ["attn_q_norm", "attn_k_norm"] {
            w.tensor_f32(&format!("blk.{layer}.{norm}.weight"), &[head_dim], &ones);
        }
    }
    std::fs::write(dst, w.to_bytes()).unwrap();
}

/// The distinct tensor types of a GGUF file, as named.
fn tensor_types(path: &Path) -> Vec<String> {
    let f = GgufFile::open(path).unwrap();
    let mut types: Vec<String> = f.tensors.iter().map(|t| t.ty.to_string()).collect();
    types.sort();
    types.dedup();
    types
}

/// The acceptance: `--runtime llama.cpp --quant file` measures a Q4_K_M and a Q6_K
/// file of another architecture; socbench's Burn runtime, which does not run the architecture,
/// has its cells skipped with the reason; a truncated file is one error
/// before any device.
#[test]
fn llama_cpp_cells_run_k_quant_files_of_another_architecture_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let qwen3 = dir.path().join("smollm2-as-qwen3.gguf");
    write_as_qwen3(&common::real_model(), &qwen3);
    // llama_ftype 15 is Q4_K_M, 18 Q6_K.
    let q4_k_m = dir.path().join("qwen3.Q4_K_M.gguf");
    let q6_k = dir.path().join("qwen3.Q6_K.gguf");
    quantize_ftype(&qwen3, &q4_k_m, 15, "Q4_K_M", 2).unwrap();
    quantize_ftype(&qwen3, &q6_k, 18, "Q6_K", 2).unwrap();
    let types = tensor_types(&q4_k_m);
    assert!(types.contains(&"Q4_K".to_owned()), "{types:?}");
    assert!(tensor_types(&q6_k).contains(&"Q6_K".to_owned()));

    let run = |model: &Path, out: &Path, quant: &str| {
        socbench()
            .args(["run", "--device", "local", "--no-probe", "--no-cooldown"])
            .arg("--model")
            .arg(model)
            .args(["--runtime", "burn,llama.cpp", "--quant", quant])
            .args([
                "--threads",
                "1",
                "--prompt-tokens",
                "8",
                "--gen-tokens",
                "4",
            ])
            .args(["--repetitions", "1", "--warmup", "0", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    for (model, name) in [(&q4_k_m, "Q4_K_M"), (&q6_k, "Q6_K")] {
        let out_dir = dir.path().join(name);
        let out = run(model, &out_dir, "file");
        assert_success(&out);
        let rows = rows(&out_dir);
        let llama: Vec<_> = rows.iter().filter(|r| r.runtime == "llama.cpp").collect();
        assert_eq!(llama.len(), 1, "{name}: {rows:#?}");
        assert_eq!(llama[0].status, Status::Ok, "{name}: {:?}", llama[0]);
        assert_eq!(llama[0].quant, "file");
        // The report names the type llama.cpp ran.
        assert_eq!(llama[0].kernel, format!("ggml-cpu {name}"));
        assert!(llama[0].decode_tok_per_s.is_some_and(|v| v > 0.0));
        assert!(llama[0].prefill_tok_per_s.is_some_and(|v| v > 0.0));
        let burn: Vec<_> = rows.iter().filter(|r| r.runtime == "burn").collect();
        assert_eq!(burn.len(), 1, "{name}: {rows:#?}");
        assert_eq!(burn[0].status, Status::Skipped);
        assert!(
            burn[0]
                .note
                .contains("`file` runs the model file as it is stored"),
            "{:?}",
            burn[0]
        );
    }
    // At a level socbench's runtime has, its cell is skipped for what the file is; at one of
    // llama.cpp's own, for what the level is. llama.cpp writes each level from the file.
    let out_dir = dir.path().join("levels");
    assert_success(&run(&q4_k_m, &out_dir, "q8,q6_k"));
    let level_rows = rows(&out_dir);
    assert_eq!(level_rows.len(), 4, "{level_rows:#?}");
    for r in &level_rows {
        match (r.runtime.as_str(), r.quant.as_str()) {
            ("burn", "q8") => assert!(r.note.contains("\"qwen3\""), "{r:?}"),
            ("burn", _) => assert!(r.note.contains("one of llama.cpp's own formats"), "{r:?}"),
            (_, "q8") => assert_eq!(r.kernel, "ggml-cpu Q8_0", "{r:?}"),
            _ => assert_eq!(r.kernel, "ggml-cpu Q6_K", "{r:?}"),
        }
        let ok = if r.runtime == "burn" {
            Status::Skipped
        } else {
            Status::Ok
        };
        assert_eq!(r.status, ok, "{r:?}");
    }

    // A truncated file: one error naming it, before any device (no results).
    let bytes = std::fs::read(&q6_k).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let out_dir = dir.path().join("cut");
    let out = run(&cut, &out_dir, "file");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(rows(&out_dir).is_empty());

    // A LLaMA-family file whose metadata is wrong is an error too, not a skipped Burn cell.
    let mut w = GgufWriter::default();
    w.string("general.architecture", "llama")
        .tensor_f32("w", &[4], &[0.0; 4]);
    let bad = dir.path().join("bad-llama.gguf");
    std::fs::write(&bad, w.to_bytes()).unwrap();
    let out_dir = dir.path().join("bad");
    let out = run(&bad, &out_dir, "file");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-llama.gguf") && err.contains("llama."),
        "{err}"
    );
    assert!(rows(&out_dir).is_empty());
}

/// Issue #37: a LLaMA-family file in K-quants (SmolLM2 written as Q4_K_M by llama.cpp's
/// quantizer: Q4_K and Q6_K tensors, and other types where a row is not whole blocks of 256)
/// runs on socbench's Burn runtime: decoded to f32 it greedily generates what llama.cpp
/// generates from the same file as stored, and its q8 cell (re-quantized from the decoded
/// values) generates too.
#[test]
fn burn_runs_a_llama_file_in_k_quants_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let q4_k_m = dir.path().join("smollm2.Q4_K_M.gguf");
    quantize_ftype(&common::real_model(), &q4_k_m, 15, "Q4_K_M", 2).unwrap();
    let types = tensor_types(&q4_k_m);
    assert!(types.contains(&"Q4_K".to_owned()), "{types:?}");
    let generate = |args: &[&str]| -> Vec<u64> {
        let out = socbench()
            .args(["generate", "--model"])
            .arg(&q4_k_m)
            .args(args)
            .args([
                "--threads",
                "1",
                "--prompt",
                "Once upon a time",
                "-n",
                "8",
                "--json",
            ])
            .output()
            .unwrap();
        assert_success(&out);
        let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        g["gen_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let llama = generate(&["--runtime", "llama.cpp", "--quant", "file"]);
    let burn = generate(&["--backend", "flex", "--quant", "f32"]);
    assert_eq!(
        burn, llama,
        "Burn at f32 against llama.cpp on the Q4_K_M file"
    );
    assert_eq!(
        generate(&["--backend", "ndarray", "--quant", "q8"]).len(),
        8
    );
}
