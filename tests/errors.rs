//! Bad input gets one clear error (exit 2) naming what is wrong, never a panic.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod common;
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

#[test]
fn truncated_model_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    let bytes = std::fs::read(real_model()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            path.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
        "truncated",
    );
}

#[test]
fn wrong_magic_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.gguf");
    std::fs::write(&path, b"PK\x03\x04 this is a zip, not a model").unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            path.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
        "not a GGUF file",
    );
}

#[test]
fn wrong_architecture_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bert.gguf");
    let mut w = GgufWriter::default();
    w.string("general.architecture", "bert");
    std::fs::write(&path, w.to_bytes()).unwrap();
    fails_with(
        &[
            "generate",
            "--model",
            path.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
        "\"bert\"",
    );
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
            "q4",
            "--prompt",
            "hi",
        ],
        "not supported on ndarray",
    );
}

#[test]
fn invalid_knobs_name_the_flag() {
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
