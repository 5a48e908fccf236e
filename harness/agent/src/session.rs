//! Sustained sessions (`duration_s`): one measured repetition as continuous generation. The
//! cell's run starts again from the prompt (its KV cache reset, the model kept loaded) each
//! time it has produced `gen_tokens`, until the session's length has passed. The length is
//! checked between generations, so a session ends with the first generation that finishes
//! past it.

use crate::engine::CellRun;
use socbench_kernels::generate::Generation;
use std::time::{Duration, Instant};

/// A finished session: every generation's timings in one [`Generation`] (the first one's
/// TTFT, every decode step in order, each token's arrival from the session's start) and how
/// many generations ran.
#[derive(Debug)]
pub struct Session {
    /// The merged timings.
    pub timings: Generation,
    /// Generations run back to back.
    pub generations: usize,
}

/// Runs `run_once` on `prompt` back to back for `length`. `Ok(None)` when `stop` asked the
/// agent to stop between two generations (an unfinished session is no measurement).
pub fn run(
    run_once: &mut CellRun<'_>,
    prompt: &[u32],
    length: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Session>, String> {
    let start = Instant::now();
    let mut merged: Option<Generation> = None;
    let mut generations = 0;
    loop {
        let offset = start.elapsed();
        let mut g = run_once(prompt)?;
        generations += 1;
        for at in &mut g.token_at {
            *at += offset;
        }
        match merged.as_mut() {
            None => merged = Some(g),
            Some(m) => {
                m.decode.append(&mut g.decode);
                m.token_at.append(&mut g.token_at);
                m.kv_cache_bytes = m.kv_cache_bytes.max(g.kv_cache_bytes);
                m.gen_ids = g.gen_ids;
            }
        }
        if start.elapsed() >= length {
            break;
        }
        if stop() {
            return Ok(None);
        }
    }
    Ok(merged.map(|timings| Session {
        timings,
        generations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of three tokens, 2 ms apart, after a 5 ms prefill.
    fn fake(calls: &std::cell::Cell<usize>) -> CellRun<'_> {
        Box::new(move |_prompt: &[u32]| {
            calls.set(calls.get() + 1);
            let mut token_at = Vec::new();
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(5));
            token_at.push(start.elapsed());
            let mut decode = Vec::new();
            for _ in 0..2 {
                let t0 = Instant::now();
                std::thread::sleep(Duration::from_millis(2));
                decode.push(t0.elapsed());
                token_at.push(start.elapsed());
            }
            Ok(Generation {
                gen_ids: vec![vec![1, 2, 3]],
                ttft: token_at[0],
                decode,
                token_at,
                kv_cache_bytes: 10 * calls.get() as u64,
            })
        })
    }

    #[test]
    fn a_session_runs_generations_back_to_back_until_its_length_and_keeps_every_step() {
        let calls = std::cell::Cell::new(0);
        let mut run_once = fake(&calls);
        let s = run(&mut run_once, &[1], Duration::from_millis(60), &|| false)
            .unwrap()
            .unwrap();
        let n = calls.get();
        assert_eq!(s.generations, n);
        assert!(n >= 2, "60 ms holds several 9 ms generations: {n}");
        assert_eq!(s.timings.decode.len(), 2 * n);
        assert_eq!(s.timings.token_at.len(), 3 * n);
        assert!(
            s.timings.token_at.windows(2).all(|w| w[0] < w[1]),
            "token times rise across generations: {:?}",
            s.timings.token_at
        );
        let last = *s.timings.token_at.last().unwrap();
        assert!(last >= Duration::from_millis(60), "{last:?}");
        // The first token is the first generation's TTFT, from the session's start.
        let first = s.timings.token_at[0] - s.timings.ttft;
        assert!(first < Duration::from_millis(1), "{first:?}");
        assert_eq!(s.timings.kv_cache_bytes, 10 * n as u64);
    }

    #[test]
    fn a_stop_between_generations_leaves_no_session() {
        let calls = std::cell::Cell::new(0);
        let mut run_once = fake(&calls);
        let out = run(&mut run_once, &[1], Duration::from_secs(60), &|| true).unwrap();
        assert!(out.is_none());
        assert_eq!(calls.get(), 1, "stopped after the first generation");
    }
}
