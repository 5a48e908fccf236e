//! Helpers shared by the integration tests: the binary, and the real model.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)] // each test binary uses its own subset

pub mod adb;
pub mod browser;

use assert_cmd::Command;
use serde_json::Value;
use socbench_reports::row::{ResultRow, parse_results};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `socbench` binary under test.
pub fn socbench() -> Command {
    let mut cmd = Command::cargo_bin("socbench").expect("socbench binary is built");
    cmd.timeout(std::time::Duration::from_secs(600));
    cmd
}

/// The rows of `dir/results.csv` in file order; none when the run wrote no file (or an empty
/// one). A row the reader rejects fails the test.
pub fn rows(dir: &Path) -> Vec<ResultRow> {
    let path = dir.join("results.csv");
    let bytes = std::fs::read(&path).unwrap_or_default();
    if bytes.is_empty() {
        return Vec::new();
    }
    parse_results(&path, &bytes)
        .unwrap()
        .rows
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// Fails the test with the command's stderr unless it exited 0.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real model's path, fetched with `socbench fetch-model` (a no-op when it is cached).
pub fn real_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = socbench()
            .args(["fetch-model", "--quiet"])
            .output()
            .expect("socbench runs");
        assert!(
            out.status.success(),
            "fetch-model failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// Runs socbench with `args` plus `--json`, expecting success, and parses its output.
pub fn json(args: &[&str]) -> Value {
    let out = socbench()
        .args(args)
        .arg("--json")
        .output()
        .expect("socbench runs");
    assert!(
        out.status.success(),
        "socbench {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "socbench {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The reference outputs of `tests/data/reference-greedy.json` (greedy outputs of another
/// engine, kept in the repository so the tests need nothing beside it): (prompt text, prompt
/// ids, greedy ids, margins, first-step top-5).
pub struct Reference {
    pub prompt: String,
    pub prompt_ids: Vec<u64>,
    pub gen_ids: Vec<u64>,
    pub margins: Vec<f64>,
    pub top5: Vec<(u64, f64)>,
}

pub fn reference() -> Vec<Reference> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/reference-greedy.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: Value = serde_json::from_str(&text).expect("reference is JSON");
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect()
    };
    v["prompts"]
        .as_array()
        .expect("prompts array")
        .iter()
        .map(|p| Reference {
            prompt: p["prompt"].as_str().unwrap().to_string(),
            prompt_ids: ids(&p["prompt_ids"]),
            gen_ids: ids(&p["gen_ids"]),
            margins: p["margins"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_f64().unwrap())
                .collect(),
            top5: p["first_step_top5"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.parse().unwrap(), v.as_f64().unwrap()))
                .collect(),
        })
        .collect()
}

/// Ids from a JSON array.
pub fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id"))
        .collect()
}

/// Space-separated ids, as `--continuation-ids` takes them.
pub fn id_list(ids: &[u64]) -> String {
    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}
