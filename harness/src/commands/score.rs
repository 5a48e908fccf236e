//! `socbench score`.

use crate::cli::ScoreArgs;
use crate::session::{Session, observe_threads};
use anyhow::{Result, anyhow};
use serde_json::json;
use socbench_kernels::generate::score;

/// Runs the command.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let session = Session::open(&args.model)?;
    let prompt = session.encode(&args.prompt)?;
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
    Ok(())
}
