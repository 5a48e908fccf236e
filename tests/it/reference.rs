//! SmolLM2-135M against `tests/data/reference-greedy.json`, produced by another engine
//! from the same weights: tokenization, teacher-forced argmax where the reference's margin is
//! at least 0.5, the first greedy tokens, and the first step's top logits, on every backend.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use crate::common;
use common::*;

/// Checks one backend at f32 against every reference prompt.
fn matches_reference(backend: &str) {
    let model = real_model();
    let model = model.to_str().unwrap();
    for r in reference() {
        let s = json(&[
            "score",
            "--model",
            model,
            "--backend",
            backend,
            "--quant",
            "f32",
            "--prompt",
            &r.prompt,
            "--continuation-ids",
            &id_list(&r.gen_ids),
        ]);
        assert_eq!(
            ids(&s["prompt_ids"]),
            r.prompt_ids,
            "{backend}: tokenization of {:?}",
            r.prompt
        );
        let positions = s["positions"].as_array().unwrap();
        assert_eq!(positions.len(), r.gen_ids.len());
        for (i, (p, margin)) in positions.iter().zip(&r.margins).enumerate() {
            if *margin >= 0.5 {
                assert_eq!(
                    p["argmax"].as_u64(),
                    Some(r.gen_ids[i]),
                    "{backend}: teacher-forced argmax at position {i} (reference margin {margin})"
                );
            }
        }
        let top5 = s["first_top5"].as_array().unwrap();
        for (id, logit) in &r.top5 {
            let ours = top5
                .iter()
                .find(|e| e[0].as_u64() == Some(*id))
                .unwrap_or_else(|| {
                    panic!("{backend}: reference top-5 token {id} not in ours {top5:?}")
                });
            let diff = (ours[1].as_f64().unwrap() - logit).abs();
            // The reference rounded activations to f16 in its matmuls.
            assert!(
                diff < 0.1,
                "{backend}: logit of {id} is {} vs reference {logit}",
                ours[1]
            );
        }

        // Free-running greedy generation agrees up to the first low-margin position.
        let n_sure = r.margins.iter().take_while(|m| **m >= 0.5).count().max(1);
        let g = json(&[
            "generate",
            "--model",
            model,
            "--backend",
            backend,
            "--prompt",
            &r.prompt,
            "-n",
            &n_sure.to_string(),
        ]);
        assert_eq!(
            ids(&g["gen_ids"]),
            r.gen_ids[..n_sure],
            "{backend}: first greedy tokens"
        );
        assert!(g["ttft_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn ndarray_f32_matches_reference() {
    matches_reference("ndarray");
}

#[test]
fn flex_f32_matches_reference() {
    matches_reference("flex");
}

#[test]
fn wgpu_f32_matches_reference() {
    matches_reference("wgpu");
}
