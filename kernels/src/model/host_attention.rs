//! Attention on the host for the packed CPU path: rotary embedding, the KV cache in growable
//! per-head buffers, and the scores/softmax/weighted sum, with no Burn operation in between.
//!
//! Decoding one token through Burn's operations costs a few dozen small tensor operations per
//! block (the rotary embedding alone is a dozen) plus a copy of the whole cache per step
//! (`cat`); measured on this project's host at q8, per-token time rose from 6.3 to 8.4 ms over
//! 128 generated tokens. Here the cache grows in place (amortised `Vec` growth; a window drops
//! its oldest positions), and the arithmetic follows the same definitions as the Burn path
//! ([`super::Attention::forward`]): the rotation `(a cos − b sin, a sin + b cos)` of adjacent
//! pairs, scores scaled by `1/√head_dim`, a max-subtracted softmax.

use super::kv_cache::StepPositions;
use rayon::prelude::*;

/// How a step's rows are laid out: `batch × seq` rows, each `[q | k | v]` with `heads`,
/// `kv_heads` and `kv_heads` heads of `head_dim` values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadShape {
    /// Independent sequences.
    pub batch: usize,
    /// Tokens per sequence in this step.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each shared by `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
}

impl HeadShape {
    /// Values per `[q | k | v]` row.
    fn row_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Rotates the query and key heads of every `[q | k | v]` row in place; row `r` of a sequence
/// sits at absolute position `pos0 + r`. `cos` and `sin` are `[positions, head_dim / 2]`.
pub(crate) fn rope_rows(qkv: &mut [f32], shape: HeadShape, pos0: usize, cos: &[f32], sin: &[f32]) {
    let hd = shape.head_dim;
    let half = hd / 2;
    let rotated = (shape.heads + shape.kv_heads) * hd;
    for (r, row) in qkv.chunks_exact_mut(shape.row_width()).enumerate() {
        let at = (pos0 + r % shape.seq) * half;
        let (cos, sin) = (&cos[at..at + half], &sin[at..at + half]);
        for head in row[..rotated].chunks_exact_mut(hd) {
            for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}

/// Keys and values of one block in host memory: one buffer per (sequence, key/value head),
/// each `[positions, head_dim]` row-major.
///
/// With a window, positions that leave it are first only counted as dropped, and removed from
/// the front of the buffers once they are as many as the window holds: each position is moved
/// at most once, where removing it every step would move the whole window every step.
#[derive(Debug, Default, Clone)]
pub(crate) struct HostKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    /// Positions out of the window still at the front of every buffer.
    dropped: usize,
    /// Positions held (after the dropped ones).
    len: usize,
    /// Positions to reserve room for when the buffers are created (the run's length, so that
    /// the cache never moves while it decodes).
    pub(crate) reserve: usize,
}

impl HostKv {
    /// Positions held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes of keys and values in the buffers, positions out of the window not yet removed
    /// included.
    pub(crate) fn held_bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|b| b.len() * std::mem::size_of::<f32>())
            .sum()
    }

    /// Appends the keys and values of this step's (already rotated) `[q | k | v]` rows, runs
    /// the step's queries against everything they may see (causal, and within the window),
    /// then keeps the last `window` positions. Returns `[batch × seq, heads × head_dim]`.
    pub(crate) fn attend(&mut self, qkv: &[f32], shape: HeadShape, at: StepPositions) -> Vec<f32> {
        let HeadShape {
            batch,
            seq,
            heads,
            kv_heads,
            head_dim: hd,
        } = shape;
        let streams = batch * kv_heads;
        if self.keys.len() != streams {
            assert_eq!(self.len, 0, "batch size changed with keys cached");
            let room = || Vec::with_capacity(self.reserve * hd);
            self.keys = (0..streams).map(|_| room()).collect();
            self.values = (0..streams).map(|_| room()).collect();
        }
        let (k_at, v_at) = (heads * hd, (heads + kv_heads) * hd);
        for (r, row) in qkv.chunks_exact(shape.row_width()).enumerate() {
            let b = r / seq;
            for j in 0..kv_heads {
                let stream = b * kv_heads + j;
                self.keys[stream].extend_from_slice(&row[k_at + j * hd..k_at + (j + 1) * hd]);
                self.values[stream].extend_from_slice(&row[v_at + j * hd..v_at + (j + 1) * hd]);
            }
        }
        self.len += seq;

        // One unit per (row, key/value head): its group of query heads, whose outputs are
        // adjacent in the output row.
        let g = shape.group();
        let mut out = vec![0f32; batch * seq * heads * hd];
        let scale = 1.0 / (hd as f32).sqrt();
        let unit = |(u, out): (usize, &mut [f32])| {
            let (r, j) = (u / kv_heads, u % kv_heads);
            let (b, i) = (r / seq, r % seq);
            let pos = at.pos0 + i;
            let first = at.window.map_or(at.first_kept, |w| {
                at.first_kept.max((pos + 1).saturating_sub(w))
            });
            let (from, to) = (first - at.first_kept, pos + 1 - at.first_kept);
            let keys = (self.dropped + from) * hd..(self.dropped + to) * hd;
            let stream = b * kv_heads + j;
            let q = &qkv[r * shape.row_width() + j * g * hd..][..g * hd];
            attend_group(
                q,
                &self.keys[stream][keys.clone()],
                &self.values[stream][keys],
                hd,
                scale,
                out,
            );
        };
        // Worth the pool's wake-up from about 2^16 multiply-adds on.
        let work = batch * seq * heads * hd * (at.pos0 + seq - at.first_kept);
        if work >= 1 << 16 && streams * seq > 1 {
            out.par_chunks_mut(g * hd).enumerate().for_each(unit);
        } else {
            out.chunks_mut(g * hd).enumerate().for_each(unit);
        }

        if let Some(w) = at.window
            && self.len > w
        {
            self.dropped += self.len - w;
            self.len = w;
            if self.dropped >= w {
                for buf in self.keys.iter_mut().chain(self.values.iter_mut()) {
                    buf.drain(..self.dropped * hd);
                }
                self.dropped = 0;
            }
        }
        out
    }
}

/// Attention of `g` query heads (`q`, `[g, hd]`) sharing one key/value head (`keys`,
/// `values`: `[n, hd]`), written to `out` (`[g, hd]`), compiled for the widest vectors this
/// CPU has (the only `unsafe` here: calling a `#[target_feature]` function once the feature
/// is detected).
#[allow(unsafe_code)]
fn attend_group(q: &[f32], keys: &[f32], values: &[f32], hd: usize, scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected just above.
            return unsafe { attend_group_avx512(q, keys, values, hd, scale, out) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the feature was detected just above.
            return unsafe { attend_group_avx2(q, keys, values, hd, scale, out) };
        }
    }
    attend_group_body(q, keys, values, hd, scale, out)
}

/// [`attend_group_body`] compiled for AVX-512 (16-lane loops).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn attend_group_avx512(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend_group_body(q, keys, values, hd, scale, out)
}

/// [`attend_group_body`] compiled for AVX2 (8-lane loops).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn attend_group_avx2(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    attend_group_body(q, keys, values, hd, scale, out)
}

/// Scores, softmax and weighted sum, written as independent lanes so that the compiler
/// vectorises them for whatever the caller was compiled for.
#[inline(always)]
fn attend_group_body(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    scale: f32,
    out: &mut [f32],
) {
    if hd == 64 {
        return attend_group_fixed::<64>(q, keys, values, scale, out);
    }
    let n = keys.len() / hd;
    let mut scores = vec![0f32; n];
    for (q, out) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        let mut max = f32::NEG_INFINITY;
        for (s, k) in scores.iter_mut().zip(keys.chunks_exact(hd)) {
            *s = dot(q, k) * scale;
            max = max.max(*s);
        }
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        out.fill(0.0);
        for (&p, v) in scores.iter().zip(values.chunks_exact(hd)) {
            for (o, &v) in out.iter_mut().zip(v) {
                *o += p * v;
            }
        }
        let inv = 1.0 / total;
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// [`attend_group_body`] for a head size known when compiling (the models' 64), which keeps
/// each query's sums in registers: four keys' scores at a time (four independent sums), and
/// the weighted sum in one `HD`-wide accumulator.
#[inline(always)]
fn attend_group_fixed<const HD: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    scale: f32,
    out: &mut [f32],
) {
    const LANES: usize = 16;
    let (keys, _) = keys.as_chunks::<HD>();
    let (values, _) = values.as_chunks::<HD>();
    let mut scores = vec![0f32; keys.len()];
    for (q, out) in q
        .as_chunks::<HD>()
        .0
        .iter()
        .zip(out.as_chunks_mut::<HD>().0)
    {
        let (mut s4, mut k4) = (scores.chunks_exact_mut(4), keys.chunks_exact(4));
        for (s, k) in (&mut s4).zip(&mut k4) {
            let mut acc = [[0f32; LANES]; 4];
            for c in (0..HD).step_by(LANES) {
                for (acc, k) in acc.iter_mut().zip(k) {
                    for i in 0..LANES {
                        acc[i] += q[c + i] * k[c + i];
                    }
                }
            }
            for (s, acc) in s.iter_mut().zip(acc) {
                *s = reduce(acc) * scale;
            }
        }
        for (s, k) in s4.into_remainder().iter_mut().zip(k4.remainder()) {
            let mut acc = [0f32; LANES];
            for c in (0..HD).step_by(LANES) {
                for i in 0..LANES {
                    acc[i] += q[c + i] * k[c + i];
                }
            }
            *s = reduce(acc) * scale;
        }
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            total += *s;
        }
        let mut sum = [0f32; HD];
        for (&p, v) in scores.iter().zip(values) {
            for i in 0..HD {
                sum[i] += p * v[i];
            }
        }
        let inv = 1.0 / total;
        for (o, s) in out.iter_mut().zip(sum) {
            *o = s * inv;
        }
    }
}

/// The sum of 16 lanes, pairwise.
#[inline(always)]
fn reduce(mut acc: [f32; 16]) -> f32 {
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

/// `Σ a_i b_i` in 16 independent lanes, summed pairwise at the end.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    reduce(acc) + tail
}
