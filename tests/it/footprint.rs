//! Issue #16: what socbench's own runtime holds in memory is what the model needs, not
//! copies of it. Peak RSS is the process's own `VmHWM` (load included), read by `generate`
//! itself and reported in its JSON.
#![allow(clippy::unwrap_used)]

use crate::common;

use serde_json::Value;

const MIB: f64 = 1024.0 * 1024.0;

/// `socbench generate` on the real model at `quant`, one thread, 32 tokens from a prompt of
/// about 30.
fn generate(quant: &str) -> Value {
    let model = common::real_model().display().to_string();
    common::json(&[
        "generate",
        "--model",
        &model,
        "--quant",
        quant,
        "--threads",
        "1",
        "-n",
        "32",
        "--prompt",
        "The quick brown fox jumps over the lazy dog while the farmer watches from the old \
         wooden porch and drinks a cup of coffee in the morning sun",
    ])
}

fn number(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing from {v}"))
}

/// At q8 and q4 the process never holds more than the stored model × 1.5 + 100 MiB: a loader
/// that kept a float copy of the weights (≈ 540 MB for this model), or the file and the
/// converted weights at once, breaks the bound.
#[test]
fn packed_levels_stay_under_a_bound_from_the_stored_size() {
    for quant in ["q8", "q4"] {
        let out = generate(quant);
        let stored = number(&out, "/settings/model_file_tensor_bytes");
        let peak = number(&out, "/memory/peak_rss_bytes");
        let bound = stored * 1.5 + 100.0 * MIB;
        assert!(
            peak <= bound,
            "{quant}: peak RSS {:.0} MiB over the bound {:.0} MiB (stored tensors {:.0} MiB)",
            peak / MIB,
            bound / MIB,
            stored / MIB
        );
        // The weights as they run are part of that peak, and the load time is reported.
        let resident = number(&out, "/settings/weight_bytes_resident");
        assert!(resident > 0.5 * stored && resident < peak, "{quant}: {out}");
        assert!(number(&out, "/settings/load_s") > 0.0, "{out}");
    }
}

/// At f32 the process holds the f32 weights (one copy, the tied embedding included), the KV
/// cache and at most 64 MiB more, with 20 % slack.
#[test]
fn f32_holds_its_weights_once() {
    let out = generate("f32");
    let resident = number(&out, "/settings/weight_bytes_resident");
    let kv = number(&out, "/memory/kv_cache_bytes");
    let peak = number(&out, "/memory/peak_rss_bytes");
    // 134.5 M parameters × 4 bytes: the embedding is not counted twice.
    assert!(resident < 560e6, "{out}");
    let bound = 1.2 * (resident + kv + 64.0 * MIB);
    assert!(
        peak <= bound,
        "f32: peak RSS {:.0} MiB over {:.0} MiB",
        peak / MIB,
        bound / MIB
    );
    // The prompt and all generated tokens but the last are in the cache: 30 layers, 3
    // key/value heads of 64, keys and values in f32.
    let positions = out["prompt_ids"].as_array().unwrap().len() + 32 - 1;
    assert_eq!(kv, (positions * 30 * 2 * 3 * 64 * 4) as f64, "{out}");
    if std::path::Path::new("/proc/self/smaps_rollup").exists() {
        let pss = number(&out, "/memory/pss_bytes");
        assert!(pss > 0.5 * resident && pss <= peak, "{out}");
    }
}
