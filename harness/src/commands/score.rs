//! `socbench score`.

use crate::cli::ScoreArgs;
use crate::session::{Session, observe_threads};
use anyhow::{Result, anyhow};
use serde_json::json;
use socbench_kernels::gate::QualityGate;
use socbench_kernels::generate::{Perplexity, QUALITY_CHUNK, QUALITY_TEXT, perplexity, score};
use socbench_kernels::quant::QuantLevel;

/// Perplexity of the built-in quality text under `model`'s knobs.
fn text_perplexity(model: &crate::cli::ModelArgs) -> Result<Perplexity> {
    let session = Session::open(model)?;
    let ids = session.loaded.tokenizer.encode(QUALITY_TEXT)?;
    Ok(perplexity(
        &session.rt,
        &session.loaded.model,
        &ids,
        QUALITY_CHUNK,
    )?)
}

/// `score --text`: the quality text at the requested level, and at f32 beside it.
fn text(args: &ScoreArgs) -> Result<()> {
    let p = text_perplexity(&args.model)?;
    let base = if args.model.quant == QuantLevel::F32 {
        p
    } else {
        let mut f32_args = args.model.clone();
        f32_args.quant = QuantLevel::F32;
        text_perplexity(&f32_args)?
    };
    let rel = p.perplexity / base.perplexity - 1.0;
    if args.model.json {
        println!(
            "{}",
            json!({
                "backend": args.model.backend.name(),
                "quant": args.model.quant.name(),
                "perplexity": p,
                "f32_perplexity": base,
                "relative_to_f32": rel,
            })
        );
    } else {
        println!(
            "{} {}: perplexity {:.4} over {} tokens (f32: {:.4}, {:+.2} %)",
            args.model.backend.name(),
            args.model.quant.name(),
            p.perplexity,
            p.tokens,
            base.perplexity,
            rel * 100.0
        );
    }
    Ok(())
}

/// `score --gate`: the quality gate of a sweep, for this variant; `Ok(false)` when refused.
fn gate(args: &ScoreArgs) -> Result<bool> {
    let session = Session::open(&args.model)?;
    let p = socbench_kernels::gate::score_gate(&session.rt, &session.loaded)?;
    let spec = session.spec.clone();
    drop(session);
    let gate = QualityGate {
        reference_perplexity: socbench_kernels::gate::reference_perplexity(&spec)?,
        max_ratio: args.max_ratio,
    };
    let verdict = gate.check(p);
    if args.model.json {
        println!(
            "{}",
            json!({
                "backend": args.model.backend.name(),
                "quant": args.model.quant.name(),
                "gate_perplexity": p,
                "f32_perplexity": gate.reference_perplexity,
                "ratio": p / gate.reference_perplexity,
                "max_ratio": gate.max_ratio,
                "passed": verdict.is_ok(),
            })
        );
    } else {
        match &verdict {
            Ok(ratio) => println!(
                "{} {}: gate perplexity {p:.4} ({ratio:.3}× f32's {:.4}; bound {}×): passes",
                args.model.backend.name(),
                args.model.quant.name(),
                gate.reference_perplexity,
                gate.max_ratio
            ),
            Err(reason) => println!(
                "{} {}: refused: {reason}",
                args.model.backend.name(),
                args.model.quant.name()
            ),
        }
    }
    Ok(verdict.is_ok())
}

/// Runs the command; `Ok(false)` when `--gate` refuses the variant.
pub fn run(args: &ScoreArgs) -> Result<bool> {
    if args.text {
        return text(args).map(|()| true);
    }
    if args.gate {
        return gate(args);
    }
    let session = Session::open(&args.model)?;
    let prompt = session.encode(args.prompt.as_deref().unwrap_or_default())?;
    let continuation = match (&args.continuation, &args.continuation_ids) {
        (Some(text), _) => session.loaded.tokenizer.encode(text)?,
        (None, Some(ids)) => session
            .loaded
            .tokenizer
            .parse_ids(ids)
            .map_err(|e| anyhow!("--continuation-ids: {e}"))?,
        (None, None) => anyhow::bail!("give --continuation or --continuation-ids"),
    };
    if continuation.is_empty() {
        anyhow::bail!("the continuation has no tokens");
    }
    let (result, threads_observed) = observe_threads(|| {
        score(
            &session.rt,
            &session.loaded.model,
            &prompt,
            &continuation,
            session.kv_window,
        )
    });
    let s = result?;
    if args.model.json {
        println!(
            "{}",
            json!({
                "prompt_ids": prompt,
                "continuation_ids": continuation,
                "positions": s.positions,
                "nll": s.nll,
                "perplexity": s.perplexity,
                "first_top5": s.first_top5,
                "settings": session.settings(threads_observed),
            })
        );
    } else {
        for (i, p) in s.positions.iter().enumerate() {
            println!(
                "{i:>4}  token {:>6}  argmax {:>6}{}  margin {:>7.3}  logprob {:>8.3}",
                p.id,
                p.argmax,
                if p.id == p.argmax { " " } else { "*" },
                p.margin,
                p.logprob
            );
        }
        println!(
            "NLL {:.4} nats over {} tokens, perplexity {:.4}",
            s.nll,
            s.positions.len(),
            s.perplexity
        );
    }
    Ok(true)
}
