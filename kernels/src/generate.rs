//! Prefill, decode, sampling and teacher-forced scoring, with timings.
//!
//! Timing discipline: the device is synchronised before the clock starts and after each timed
//! region (on wgpu, reading a tensor back does not by itself wait for queued work), and every
//! timed region ends with the token ids on the host, so nothing can be skipped.

use crate::KernelError;
use crate::backend::Runtime;
use crate::load::SplitMix64;
use crate::model::{KvCache, Llama, Logits};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Sampling {
    /// The most likely token (ties go to the lowest id).
    Greedy,
    /// Sampled from the softmax at `temperature`, restricted to the `top_k` most likely tokens
    /// (0 = all), with a seeded generator: the same seed gives the same tokens.
    Random {
        /// Softmax temperature (> 0).
        temperature: f32,
        /// Keep only this many most likely tokens; 0 keeps all.
        top_k: usize,
        /// Seed of the generator.
        seed: u64,
    },
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Tokens to generate after the prompt (the first one included).
    pub max_new_tokens: usize,
    /// Independent sequences decoded together, each starting from the prompt.
    pub batch: usize,
    /// KV-cache window: keep the last `W` positions; `None` keeps all.
    pub kv_window: Option<usize>,
    /// Token choice.
    pub sampling: Sampling,
    /// Stop a sequence at the end-of-sequence token (the benchmark keeps going).
    pub stop_at: Option<u32>,
    /// An idle gap after every token but the last (token pacing, as apps that stream text at
    /// reading speed do): outside every step's timer, inside the run's wall time.
    pub pacing: Duration,
}

/// The result of a generation, with its timings.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// Generated ids, one list per sequence of the batch.
    pub gen_ids: Vec<Vec<u32>>,
    /// Time from the start of prefill to the first token on the host.
    pub ttft: Duration,
    /// Time of each decode step after the first token (one entry per further token).
    pub decode: Vec<Duration>,
    /// When each token (step of the batch) arrived on the host, from the start of prefill:
    /// the first is `ttft`; with pacing, the gaps lie between them.
    pub token_at: Vec<Duration>,
    /// Bytes of keys and values the KV cache held at the end of the run (computed from the
    /// cache's buffers; llama.cpp: the cache it allocated for the context).
    pub kv_cache_bytes: u64,
}

fn logits_to_host(logits: Tensor<2>) -> Result<Vec<f32>, KernelError> {
    logits
        .cast(burn::tensor::DType::F32)
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| KernelError::Invalid(format!("reading logits: {e:?}")))
}

/// Index of the largest logit (the first of ties).
pub(crate) fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(row: &[f32], temperature: f32, top_k: usize, rng: &mut SplitMix64) -> u32 {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if top_k > 0 && top_k < row.len() {
        idx.select_nth_unstable_by(top_k - 1, |&a, &b| row[b].total_cmp(&row[a]));
        idx.truncate(top_k);
    }
    let max = idx
        .iter()
        .map(|&i| row[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| f64::from((row[i] - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut r = f64::from(rng.next_f32()) * total;
    for (&i, w) in idx.iter().zip(&weights) {
        r -= w;
        if r <= 0.0 {
            return i as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

fn tokens_tensor(ids: &[Vec<u32>], device: &Device) -> Tensor<2, Int> {
    let (b, s) = (ids.len(), ids[0].len());
    let flat: Vec<i64> = ids.iter().flatten().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(flat, [b, s]), device)
}

/// Checks that `n` positions fit the model's position tables.
fn check_length(model: &Llama, n: usize) -> Result<(), KernelError> {
    if n > model.max_seq_len() {
        return Err(KernelError::Invalid(format!(
            "{n} positions exceed the model's context of {} tokens",
            model.max_seq_len()
        )));
    }
    Ok(())
}

/// Generates `opts.max_new_tokens` tokens after `prompt` for each of `opts.batch` sequences.
pub fn generate(
    rt: &Runtime,
    model: &Llama,
    prompt: &[u32],
    opts: &GenerateOptions,
) -> Result<Generation, KernelError> {
    if prompt.is_empty() {
        return Err(KernelError::Invalid("the prompt has no tokens".into()));
    }
    if opts.batch == 0 || opts.max_new_tokens == 0 {
        return Err(KernelError::Invalid(
            "batch and token count must be at least 1".into(),
        ));
    }
    if opts.kv_window == Some(0) {
        return Err(KernelError::Invalid(
            "the KV window must be at least 1".into(),
        ));
    }
    // RoPE tables end at the model's context, window or not: refuse before any work.
    check_length(model, prompt.len() + opts.max_new_tokens)?;
    let b = opts.batch;
    rt.run(|device| {
        let mut rngs: Vec<SplitMix64> = (0..b as u64)
            .map(|i| match opts.sampling {
                Sampling::Random { seed, .. } => SplitMix64(seed ^ i.wrapping_mul(0x9E37_79B9)),
                Sampling::Greedy => SplitMix64(0),
            })
            .collect();
        let choose = |row: &[f32], rng: &mut SplitMix64| match opts.sampling {
            Sampling::Greedy => argmax(row),
            Sampling::Random {
                temperature, top_k, ..
            } => sample(row, temperature, top_k, rng),
        };
        let mut cache = KvCache::new(model.n_layers(), opts.kv_window);
        cache.reserve(prompt.len() + opts.max_new_tokens);
        let mut gen_ids: Vec<Vec<u32>> = vec![Vec::with_capacity(opts.max_new_tokens); b];
        let mut done = vec![false; b];
        let mut decode = Vec::with_capacity(opts.max_new_tokens);
        let mut token_at = Vec::with_capacity(opts.max_new_tokens);
        let mut input: Vec<Vec<u32>> = vec![prompt.to_vec(); b];

        rt.sync()?;
        let start = Instant::now();
        let mut ttft = Duration::ZERO;
        for step in 0..opts.max_new_tokens {
            let step_start = Instant::now();
            let logits = model.forward(tokens_tensor(&input, device), &mut cache, Logits::Last);
            let vocab = logits.dims()[2];
            let rows = logits_to_host(logits.reshape([b, vocab]))?;
            let next: Vec<u32> = rows
                .chunks_exact(vocab)
                .zip(rngs.iter_mut())
                .map(|(row, rng)| choose(row, rng))
                .collect();
            rt.sync()?;
            let elapsed = step_start.elapsed();
            token_at.push(start.elapsed());
            if step == 0 {
                ttft = start.elapsed();
            } else {
                decode.push(elapsed);
            }
            for (i, &t) in next.iter().enumerate() {
                if !done[i] {
                    gen_ids[i].push(t);
                    done[i] = opts.stop_at == Some(t);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            if !opts.pacing.is_zero() && step + 1 < opts.max_new_tokens {
                std::thread::sleep(opts.pacing);
            }
            input = next.into_iter().map(|t| vec![t]).collect();
        }
        Ok(Generation {
            gen_ids,
            ttft,
            decode,
            token_at,
            kv_cache_bytes: cache.held_bytes(),
        })
    })
}

/// One continuation position under teacher forcing.
#[derive(Debug, Clone, Serialize)]
pub struct ScoredPosition {
    /// The given token.
    pub id: u32,
    /// The model's most likely token at this position.
    pub argmax: u32,
    /// Logit of the best token minus that of the second best.
    pub margin: f32,
    /// Natural-log probability of the given token.
    pub logprob: f64,
}

/// Teacher-forced scoring of a continuation.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    /// One entry per continuation token.
    pub positions: Vec<ScoredPosition>,
    /// Sum of the negative log-probabilities (nats).
    pub nll: f64,
    /// `exp(nll / n)`.
    pub perplexity: f64,
    /// The five highest logits at the first continuation position, best first.
    pub first_top5: Vec<(u32, f32)>,
}

/// Scores `continuation` after `prompt`: feeds both in one pass and reads, at every
/// continuation position, the distribution the model predicted for it.
pub fn score(
    rt: &Runtime,
    model: &Llama,
    prompt: &[u32],
    continuation: &[u32],
    kv_window: Option<usize>,
) -> Result<Score, KernelError> {
    if prompt.is_empty() || continuation.is_empty() {
        return Err(KernelError::Invalid(
            "scoring needs a prompt and a continuation of at least one token each".into(),
        ));
    }
    check_length(model, prompt.len() + continuation.len())?;
    rt.run(|device| {
        let mut input = prompt.to_vec();
        input.extend_from_slice(&continuation[..continuation.len() - 1]);
        let mut cache = KvCache::new(model.n_layers(), kv_window);
        let logits = model.forward(tokens_tensor(&[input], device), &mut cache, Logits::All);
        let [_, s, vocab] = logits.dims();
        let first = prompt.len() - 1;
        let rows = logits_to_host(
            logits
                .reshape([s, vocab])
                .narrow(0, first, continuation.len()),
        )?;
        let mut positions = Vec::with_capacity(continuation.len());
        let mut nll = 0.0;
        let mut first_top5 = Vec::new();
        for (i, (row, &id)) in rows.chunks_exact(vocab).zip(continuation).enumerate() {
            let best = argmax(row);
            let second = row
                .iter()
                .enumerate()
                .filter(|&(j, _)| j as u32 != best)
                .map(|(_, &v)| v)
                .fold(f32::NEG_INFINITY, f32::max);
            let max = f64::from(row[best as usize]);
            let lse = max
                + row
                    .iter()
                    .map(|&v| (f64::from(v) - max).exp())
                    .sum::<f64>()
                    .ln();
            let logprob = f64::from(row[id as usize]) - lse;
            nll -= logprob;
            if i == 0 {
                let mut order: Vec<u32> = (0..vocab as u32).collect();
                order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
                first_top5 = order
                    .iter()
                    .take(5)
                    .map(|&t| (t, row[t as usize]))
                    .collect();
            }
            positions.push(ScoredPosition {
                id,
                argmax: best,
                margin: row[best as usize] - second,
                logprob,
            });
        }
        let perplexity = (nll / continuation.len() as f64).exp();
        Ok(Score {
            positions,
            nll,
            perplexity,
            first_top5,
        })
    })
}

/// The fixed English text (self-written, about 3 KB) whose perplexity measures what a
/// quantization level costs: `socbench score --text`, and sweeps with `quality = true`.
pub const QUALITY_TEXT: &str = include_str!("../data/quality-text.txt");

/// Tokens per independent chunk of [`perplexity`].
pub const QUALITY_CHUNK: usize = 128;

/// Perplexity of a token sequence.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexity {
    /// `exp(nll / tokens)`.
    pub perplexity: f64,
    /// Total negative log-likelihood (nats).
    pub nll: f64,
    /// Tokens scored (every chunk's first token is context only).
    pub tokens: usize,
    /// Chunk length.
    pub chunk: usize,
}

/// Perplexity of `ids` under teacher forcing, in independent chunks of `chunk` tokens (each
/// starts with an empty cache; a last chunk shorter than two tokens is dropped).
pub fn perplexity(
    rt: &Runtime,
    model: &Llama,
    ids: &[u32],
    chunk: usize,
) -> Result<Perplexity, KernelError> {
    chunked_perplexity(ids, chunk, |c| {
        Ok(score(rt, model, &c[..1], &c[1..], None)?.nll)
    })
}

/// Perplexity of `ids` in independent chunks of `chunk` tokens (at least 2; a last chunk
/// shorter than two tokens is dropped), given each chunk's summed negative log-likelihood of
/// its tokens after the first: how every runtime is scored alike.
pub fn chunked_perplexity(
    ids: &[u32],
    chunk: usize,
    mut nll_of: impl FnMut(&[u32]) -> Result<f64, KernelError>,
) -> Result<Perplexity, KernelError> {
    let chunk = chunk.max(2);
    let (mut nll, mut tokens) = (0.0, 0);
    for c in ids.chunks(chunk).filter(|c| c.len() >= 2) {
        nll += nll_of(c)?;
        tokens += c.len() - 1;
    }
    if tokens == 0 {
        return Err(KernelError::Invalid(
            "perplexity needs at least two tokens".into(),
        ));
    }
    Ok(Perplexity {
        perplexity: (nll / tokens as f64).exp(),
        nll,
        tokens,
        chunk,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_of_the_quality_text_is_finite_and_chunked() {
        let rt = Runtime::new(crate::backend::BackendKind::Flex, 1).unwrap();
        let loaded = rt
            .run(|d| crate::load::ModelSpec::SyntheticTiny.load(d))
            .unwrap();
        let ids = loaded.tokenizer.encode(QUALITY_TEXT).unwrap();
        let p = perplexity(&rt, &loaded.model, &ids, 64).unwrap();
        let chunks = ids.len().div_ceil(64);
        let last = ids.len() - (chunks - 1) * 64;
        let expect = ids.len() - chunks + usize::from(last < 2);
        assert_eq!(p.tokens, expect);
        assert!(p.perplexity.is_finite() && p.perplexity > 1.0, "{p:?}");
        // A random model is near-uniform over its vocabulary: far from a trained one.
        assert!(
            p.perplexity > 0.2 * loaded.config.vocab_size as f64,
            "{p:?}"
        );
        assert!(perplexity(&rt, &loaded.model, &ids[..1], 64).is_err());
    }

    #[test]
    fn the_kv_cache_holds_what_the_run_put_through_the_model() {
        use crate::backend::BackendKind;
        use crate::quant::QuantLevel;
        let spec = crate::load::ModelSpec::SyntheticTiny;
        let file = spec.open().unwrap();
        // Burn's cache (f32, then f16 tensors) and the packed path's host cache (f32).
        let cases = [
            (QuantLevel::F32, 4),
            (QuantLevel::F16, 2),
            (QuantLevel::Q8, 4),
        ];
        for (level, elem) in cases {
            let rt = Runtime::new(BackendKind::Flex, 1).unwrap();
            let loaded = rt
                .run(|d| spec.load_as(&file, d, level, BackendKind::Flex))
                .unwrap();
            let c = &loaded.config;
            let per_position = c.n_layers * 2 * c.n_kv_heads * c.head_dim() * elem;
            let prompt = [5u32, 6, 7, 8, 9];
            for (batch, window, held) in [(2, None, 5 + 3), (1, Some(4), 4), (1, Some(64), 8)] {
                let opts = GenerateOptions {
                    max_new_tokens: 4,
                    pacing: Duration::ZERO,
                    batch,
                    kv_window: window,
                    sampling: Sampling::Greedy,
                    stop_at: None,
                };
                let g = generate(&rt, &loaded.model, &prompt, &opts).unwrap();
                // The prompt and every generated token but the last went through the model;
                // a window keeps its last positions (the host cache may keep up to as many
                // again until it compacts).
                let want = (batch * held * per_position) as u64;
                let ok = match window {
                    Some(w) if w < 8 => g.kv_cache_bytes >= want && g.kv_cache_bytes <= 2 * want,
                    _ => g.kv_cache_bytes == want,
                };
                assert!(
                    ok,
                    "{level} b{batch} {window:?}: {} vs {want}",
                    g.kv_cache_bytes
                );
            }
        }
    }

    #[test]
    fn argmax_prefers_the_first_of_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let row: Vec<f32> = (0..100).map(|i| (i % 7) as f32).collect();
        let draw = |seed| {
            let mut rng = SplitMix64(seed);
            (0..50)
                .map(|_| sample(&row, 1.0, 3, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // top-3 of a row whose maximum 6 appears at i % 7 == 6: only such ids may come out.
        assert!(draw(9).iter().all(|&t| t % 7 == 6), "{:?}", draw(9));
    }
}
