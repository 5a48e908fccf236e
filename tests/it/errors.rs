//! Bad input gets one clear error (exit 2) naming what is wrong, never a panic.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::common;
use common::*;
use predicates::prelude::*;
use socbench_kernels::gguf::GgufWriter;

fn fails_with(args: &[&str], needle: &str) {
    socbench()
        .args(args)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(needle))
        .stderr(predicate::str::contains("panicked").not());
}

#[test]
fn missing_model_says_how_to_fetch_it() {
    fails_with(
        &[
            "generate",
            "--model",
            "/nonexistent/model.gguf",
            "--prompt",
            "hi",
        ],
        "socbench fetch-model",
    );
}

/// Writes `bytes` as a model file and expects `generate` on it to fail with `needle`.
fn bad_model_file(bytes: &[u8], needle: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let path = path.to_str().unwrap();
    fails_with(&["generate", "--model", path, "--prompt", "hi"], needle);
}

#[test]
fn truncated_model_is_an_error() {
    let bytes = std::fs::read(real_model()).unwrap();
    bad_model_file(&bytes[..bytes.len() / 2], "truncated");
}

#[test]
fn wrong_magic_is_an_error() {
    bad_model_file(b"PK\x03\x04 this is a zip, not a model", "not a GGUF file");
}

#[test]
fn wrong_architecture_is_an_error() {
    let mut w = GgufWriter::default();
    w.string("general.architecture", "bert");
    bad_model_file(&w.to_bytes(), "\"bert\"");
}

#[test]
fn unsupported_quantization_is_refused_before_work() {
    fails_with(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--backend",
            "ndarray",
            "--quant",
            "q4-tensor",
            "--prompt",
            "hi",
        ],
        "not supported on ndarray",
    );
}

#[test]
fn invalid_knobs_name_the_flag() {
    fails_with(&["run", "--quality-gate", "0.5"], "or 0");
    fails_with(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--kv-window",
            "0",
            "--prompt",
            "hi",
        ],
        "KV window",
    );
    fails_with(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--threads",
            "0",
            "--prompt",
            "hi",
        ],
        "--threads",
    );
    fails_with(
        &[
            "generate",
            "--model",
            "synthetic:tiny",
            "--backend",
            "cuda",
            "--prompt",
            "hi",
        ],
        "valid: ndarray, flex, wgpu",
    );
    fails_with(
        &["generate", "--model", "synthetic:tiny", "--prompt", ""],
        "no tokens",
    );
    fails_with(
        &[
            "score",
            "--model",
            "synthetic:tiny",
            "--prompt",
            "hi",
            "--continuation-ids",
            "1 99999",
        ],
        "outside the vocabulary",
    );
}
