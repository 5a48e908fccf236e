//! The quantization support table (`QuantLevel::support`) against what Burn really does:
//! every (backend, level) pair is run on a synthetic model whose outputs are peaked
//! (`load::synthetic_peaked_gguf`), so that wrong arithmetic shows as a perplexity far from
//! f32's (the kernels' own tests and self-check catch the subtle errors: a 20 % wrong scale
//! moves this perplexity by only 10 %). A pair the table calls
//! supported must load, generate and pass the quality gate's bound against f32; a pair it
//! calls unsupported must really fail, or really compute garbage, so the table cannot go
//! stale in either direction when Burn (or a kernel) changes.

// Test helpers: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

use socbench_kernels::backend::{BackendKind, Runtime};
use socbench_kernels::catch_panic;
use socbench_kernels::gate::{DEFAULT_MAX_RATIO, QualityGate};
use socbench_kernels::generate::{GenerateOptions, Sampling, generate, score};
use socbench_kernels::load::{ModelSpec, synthetic_peaked_gguf};
use socbench_kernels::quant::{self, QuantLevel};
use std::path::PathBuf;

/// The peaked model, written once per test binary.
fn peaked_model() -> ModelSpec {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("synthetic-peaked.gguf");
    std::fs::write(&path, synthetic_peaked_gguf()).unwrap();
    ModelSpec::File(path)
}

fn opts(n: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: n,
        batch: 1,
        kv_window: None,
        sampling: Sampling::Greedy,
        stop_at: None,
        pacing: std::time::Duration::ZERO,
    }
}

/// Runs `level` on `backend`: `Ok(perplexity of cont after prompt)` or the failure.
fn try_level(
    rt: &Runtime,
    spec: &ModelSpec,
    backend: BackendKind,
    level: QuantLevel,
    prompt: &[u32],
    cont: &[u32],
) -> Result<f64, String> {
    let mut loaded = rt.run(|d| spec.load(d)).map_err(|e| e.to_string())?;
    catch_panic(|| {
        rt.run(|_| quant::apply(&mut loaded.model, level, backend));
        generate(rt, &loaded.model, prompt, &opts(3)).map_err(|e| e.to_string())?;
        score(rt, &loaded.model, prompt, cont, None)
            .map(|s| s.perplexity)
            .map_err(|e| e.to_string())
    })
    .and_then(|r| r)
}

#[test]
fn support_table_matches_reality() {
    let spec = peaked_model();
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for backend in BackendKind::ALL {
        let rt = match Runtime::new(backend, 1) {
            Ok(rt) => rt,
            Err(e) => panic!("backend {backend} does not start here: {e}"),
        };
        // The continuation is the f32 model's own greedy output: f32 is confident about it,
        // and a variant that computes something else is not.
        let loaded = rt.run(|d| spec.load(d)).unwrap();
        let prompt = loaded.tokenizer.encode("the cat sat").unwrap();
        let out = generate(&rt, &loaded.model, &prompt, &opts(16)).unwrap();
        let cont = out.gen_ids[0].clone();
        drop(loaded);
        let f32_ppl = try_level(&rt, &spec, backend, QuantLevel::F32, &prompt, &cont)
            .expect("f32 runs everywhere");
        assert!(
            f32_ppl < 10.0,
            "{backend}: the peaked model is not peaked: f32 perplexity {f32_ppl} of its own \
             greedy output"
        );
        let gate = QualityGate {
            reference_perplexity: f32_ppl,
            max_ratio: DEFAULT_MAX_RATIO,
        };
        for level in QuantLevel::ALL {
            let claimed = level.support(backend);
            let actual = try_level(&rt, &spec, backend, level, &prompt, &cont);
            let computes = actual.as_ref().map(|&p| gate.check(p));
            report.push(format!(
                "{backend:>8} {level:>10}: claimed {claimed:?}, perplexity {actual:?} \
                 (f32 {f32_ppl:.4})"
            ));
            match (&claimed, &computes) {
                (Ok(()), Ok(Ok(_))) | (Err(_), Err(_)) | (Err(_), Ok(Err(_))) => {}
                (Ok(()), Ok(Err(why))) => wrong.push(format!(
                    "{backend} {level}: claimed supported, computes garbage: {why}"
                )),
                (Ok(()), Err(e)) => {
                    wrong.push(format!("{backend} {level}: claimed supported, failed: {e}"))
                }
                (Err(_), Ok(Ok(ratio))) => wrong.push(format!(
                    "{backend} {level}: claimed unsupported, but it runs and computes the \
                     model ({ratio:.3}× f32's perplexity)"
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
