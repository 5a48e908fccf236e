//! The quantization support table (`QuantLevel::support`) against what Burn really does:
//! every (backend, level) pair is run on the synthetic model. A pair the table calls
//! supported must load, generate and stay close to f32; a pair it calls unsupported must
//! really fail, so the table cannot go stale in either direction when Burn changes.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use socbench_kernels::backend::{BackendKind, Runtime};
use socbench_kernels::catch_panic;
use socbench_kernels::generate::{GenerateOptions, Sampling, generate, score};
use socbench_kernels::load::ModelSpec;
use socbench_kernels::quant::{self, QuantLevel};

fn opts() -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: 3,
        batch: 1,
        kv_window: None,
        sampling: Sampling::Greedy,
        stop_at: None,
    }
}

/// Runs `level` on `backend`; `Ok(perplexity of a fixed continuation)` or the failure.
fn try_level(rt: &Runtime, backend: BackendKind, level: QuantLevel) -> Result<f64, String> {
    let mut loaded = rt
        .run(|d| ModelSpec::SyntheticTiny.load(d))
        .map_err(|e| e.to_string())?;
    let prompt = loaded
        .tokenizer
        .encode("the cat sat")
        .map_err(|e| e.to_string())?;
    let cont = loaded
        .tokenizer
        .encode(" on the mat")
        .map_err(|e| e.to_string())?;
    catch_panic(|| {
        rt.run(|_| quant::apply(&mut loaded.model, level, backend));
        generate(rt, &loaded.model, &prompt, &opts()).map_err(|e| e.to_string())?;
        score(rt, &loaded.model, &prompt, &cont, None)
            .map(|s| s.perplexity)
            .map_err(|e| e.to_string())
    })
    .and_then(|r| r)
}

#[test]
fn support_table_matches_reality() {
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for backend in BackendKind::ALL {
        let rt = match Runtime::new(backend, 1) {
            Ok(rt) => rt,
            Err(e) => panic!("backend {backend} does not start here: {e}"),
        };
        let f32_ppl = try_level(&rt, backend, QuantLevel::F32).expect("f32 runs everywhere");
        for level in QuantLevel::ALL {
            let claimed = level.support(backend);
            let actual = try_level(&rt, backend, level);
            report.push(format!(
                "{backend:>8} {level:>10}: claimed {claimed:?}, actual {actual:?}"
            ));
            match (&claimed, &actual) {
                (Ok(()), Ok(ppl)) => {
                    // Random weights give a near-uniform model; quantization may move its
                    // perplexity a little, never by much.
                    let ratio = ppl / f32_ppl;
                    if !(0.8..1.25).contains(&ratio) {
                        wrong.push(format!(
                            "{backend} {level}: perplexity {ppl} vs f32 {f32_ppl}"
                        ));
                    }
                }
                (Err(_), Err(_)) => {}
                (Ok(()), Err(e)) => {
                    wrong.push(format!("{backend} {level}: claimed supported, failed: {e}"))
                }
                (Err(_), Ok(_)) => wrong.push(format!(
                    "{backend} {level}: claimed unsupported, but it runs"
                )),
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        wrong.is_empty(),
        "support table is wrong:\n{}\n\nall:\n{}",
        wrong.join("\n"),
        report.join("\n")
    );
}
