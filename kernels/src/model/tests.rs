//! The model's pieces against naive scalar implementations written from their definitions.

use super::kv_cache::{LayerCache, StepPositions};
use super::*;
use crate::load::SplitMix64;
use burn::module::Param;

fn device() -> Device {
    Device::flex()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn tensor<const D: usize>(data: &[f32], shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &device())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

fn linear(d_in: usize, d_out: usize, seed: u64) -> (Proj, Vec<f32>) {
    let w = random(d_in * d_out, seed);
    (Proj::new(tensor(&w, [d_in, d_out])), w)
}

/// `x @ w` for row-major `x: [n, d_in]`, `w: [d_in, d_out]`.
fn matmul(x: &[f32], w: &[f32], n: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * d_out];
    for r in 0..n {
        for k in 0..d_in {
            for c in 0..d_out {
                out[r * d_out + c] += x[r * d_in + k] * w[k * d_out + c];
            }
        }
    }
    out
}

#[test]
fn rms_norm_matches_its_definition() {
    let (d, eps) = (16, 1e-5);
    let x = random(3 * d, 1);
    let g = random(d, 2);
    let norm = RmsNorm {
        gamma: Param::from_tensor(tensor(&g, [d])),
        epsilon: eps,
    };
    let got = values(norm.forward(tensor(&x, [1, 3, d])));
    let mut want = Vec::new();
    for row in x.chunks(d) {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps as f32).sqrt();
        want.extend(row.iter().zip(&g).map(|(v, g)| v * inv * g));
    }
    assert_close(&got, &want, 1e-5, "rmsnorm");
}

/// Rotates pairs `(x[2i], x[2i+1])` by `pos * theta^(-2i/d)`.
fn naive_rope(x: &[f32], seq: usize, d: usize, start: usize, theta: f64) -> Vec<f32> {
    let mut out = x.to_vec();
    for s in 0..seq {
        for i in 0..d / 2 {
            let angle = (start + s) as f64 * theta.powf(-2.0 * i as f64 / d as f64);
            let (sin, cos) = (angle.sin() as f32, angle.cos() as f32);
            let (a, b) = (x[s * d + 2 * i], x[s * d + 2 * i + 1]);
            out[s * d + 2 * i] = a * cos - b * sin;
            out[s * d + 2 * i + 1] = a * sin + b * cos;
        }
    }
    out
}

#[test]
fn rope_matches_pairwise_rotation_at_an_offset() {
    let (seq, d, start, theta) = (5, 8, 7, 10000.0);
    let rope = Rope::new(d, 64, theta, &device());
    let x = random(seq * d, 3);
    let got = values(rope.apply(tensor(&x, [1, 1, seq, d]), start));
    assert_close(&got, &naive_rope(&x, seq, d, start, theta), 1e-5, "rope");
}

struct NaiveAttention {
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    d: usize,
    h: usize,
    kvh: usize,
}

impl NaiveAttention {
    /// Full causal attention over `x: [seq, d]` with an optional window, from scratch.
    fn forward(&self, x: &[f32], seq: usize, window: Option<usize>) -> Vec<f32> {
        let (d, h, kvh) = (self.d, self.h, self.kvh);
        let hd = d / h;
        let q = matmul(x, &self.wq, seq, d, d);
        let k = matmul(x, &self.wk, seq, d, kvh * hd);
        let v = matmul(x, &self.wv, seq, d, kvh * hd);
        let qkv: Vec<f32> = (0..seq)
            .flat_map(|s| {
                let kv = s * kvh * hd..(s + 1) * kvh * hd;
                [&q[s * d..(s + 1) * d], &k[kv.clone()], &v[kv]].concat()
            })
            .collect();
        let heads = naive_qkv_attention(&qkv, seq, (h, kvh, hd), window);
        matmul(&heads, &self.wo, seq, d, d)
    }
}

/// The Burn attention twice (explicit matmuls, then Burn's fused operation) and the naive one.
fn attention_pair(d: usize, h: usize, kvh: usize) -> ([Attention; 2], NaiveAttention) {
    let hd = d / h;
    let (q, wq) = linear(d, d, 10);
    let (k, wk) = linear(d, kvh * hd, 11);
    let (v, wv) = linear(d, kvh * hd, 12);
    let (o, wo) = linear(d, d, 13);
    let attn = Attention {
        q,
        k,
        v,
        o,
        n_heads: h,
        n_kv_heads: kvh,
        fused: false,
    };
    let fused = Attention {
        fused: true,
        ..attn.clone()
    };
    let attn = [attn, fused];
    (
        attn,
        NaiveAttention {
            wq,
            wk,
            wv,
            wo,
            d,
            h,
            kvh,
        },
    )
}

/// Runs the Burn attention over `x` in steps of the given sizes, through the KV cache.
fn run_in_steps(
    attn: &Attention,
    x: &[f32],
    d: usize,
    steps: &[usize],
    window: Option<usize>,
) -> Vec<f32> {
    let rope = Rope::new(d / attn.n_heads, 64, 10000.0, &device());
    let mut cache = LayerCache::default();
    let mut out = Vec::new();
    let mut pos0 = 0;
    for &s in steps {
        let at = StepPositions {
            pos0,
            first_kept: pos0 - cache.len(),
            window,
        };
        let first_visible = window.map_or(at.first_kept, |w| {
            at.first_kept.max((pos0 + 1).saturating_sub(w))
        });
        let mask = (s > 1).then(|| causal_mask(pos0, s, first_visible, window, &device()));
        let chunk = tensor(&x[pos0 * d..(pos0 + s) * d], [1, s, d]);
        out.extend(values(attn.forward(chunk, &rope, &mut cache, at, mask)));
        pos0 += s;
    }
    out
}

#[test]
fn gqa_attention_matches_naive_in_one_pass() {
    let (d, h, kvh, seq) = (16, 4, 2, 6);
    let (attns, naive) = attention_pair(d, h, kvh);
    let x = random(seq * d, 20);
    for attn in &attns {
        let got = run_in_steps(attn, &x, d, &[seq], None);
        let what = format!("gqa one pass, fused {}", attn.fused);
        assert_close(&got, &naive.forward(&x, seq, None), 1e-4, &what);
    }
}

#[test]
fn kv_cache_steps_equal_one_pass() {
    let (d, h, kvh, seq) = (16, 4, 2, 7);
    let (attns, naive) = attention_pair(d, h, kvh);
    let x = random(seq * d, 21);
    for attn in &attns {
        let got = run_in_steps(attn, &x, d, &[3, 1, 1, 2], None);
        let what = format!("gqa via cache, fused {}", attn.fused);
        assert_close(&got, &naive.forward(&x, seq, None), 1e-4, &what);
    }
}

#[test]
fn sliding_window_matches_naive_window_in_prefill_and_decode() {
    let (d, h, kvh, seq, w) = (16, 4, 1, 9, 3);
    let (attns, naive) = attention_pair(d, h, kvh);
    let x = random(seq * d, 22);
    let want = naive.forward(&x, seq, Some(w));
    for attn in &attns {
        assert_close(
            &run_in_steps(attn, &x, d, &[5, 1, 1, 1, 1], Some(w)),
            &want,
            1e-4,
            &format!("window, fused {}", attn.fused),
        );
    }
    // And the window really matters past position w.
    let full = naive.forward(&x, seq, None);
    assert!(
        want[w * d..]
            .iter()
            .zip(&full[w * d..])
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
    assert_close(&want[..w * d], &full[..w * d], 1e-6, "before the window");
}

/// Attention from scratch over one sequence's `[q | k | v]` rows (before rotation), with the
/// rows' absolute positions starting at 0.
fn naive_qkv_attention(
    qkv: &[f32],
    seq: usize,
    (h, kvh, hd): (usize, usize, usize),
    window: Option<usize>,
) -> Vec<f32> {
    let width = (h + 2 * kvh) * hd;
    let head = |at: usize| -> Vec<f32> {
        let rows: Vec<f32> = (0..seq)
            .flat_map(|s| qkv[s * width + at..s * width + at + hd].to_vec())
            .collect();
        rows
    };
    let mut out = vec![0f32; seq * h * hd];
    for hi in 0..h {
        let kv = hi / (h / kvh);
        let q = naive_rope(&head(hi * hd), seq, hd, 0, 10000.0);
        let k = naive_rope(&head((h + kv) * hd), seq, hd, 0, 10000.0);
        let v = head((h + kvh + kv) * hd);
        for s in 0..seq {
            let visible: Vec<usize> = (0..=s)
                .filter(|&t| window.is_none_or(|w| s - t < w))
                .collect();
            let scores: Vec<f32> = visible
                .iter()
                .map(|&t| {
                    (0..hd).map(|i| q[s * hd + i] * k[t * hd + i]).sum::<f32>() / (hd as f32).sqrt()
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = scores.iter().map(|x| (x - max).exp()).collect();
            let total: f32 = exps.iter().sum();
            for (&t, e) in visible.iter().zip(&exps) {
                for i in 0..hd {
                    out[s * h * hd + hi * hd + i] += e / total * v[t * hd + i];
                }
            }
        }
    }
    out
}

#[test]
fn host_attention_matches_naive_over_steps_batches_and_windows() {
    use super::host_attention::{HeadShape, HostKv, rope_rows};
    // head_dim 20: one 16-lane chunk and a tail in every dot product; 64: the models' size,
    // with its own loops. The 40-token first step is large enough to run in parallel, the
    // later ones run on the calling thread; key counts that are not multiples of 4 included.
    let (h, kvh, batch, seq) = (4, 2, 2, 46);
    for (hd, window) in [20, 64]
        .into_iter()
        .flat_map(|hd| [None, Some(5), Some(40)].map(|w| (hd, w)))
    {
        let width = (h + 2 * kvh) * hd;
        let rope = Rope::new(hd, 64, 10000.0, &device());
        let (cos, sin) = rope.host_tables();
        let sequences: Vec<Vec<f32>> = (0..batch)
            .map(|b| random(seq * width, 30 + b as u64))
            .collect();
        let want: Vec<Vec<f32>> = sequences
            .iter()
            .map(|x| naive_qkv_attention(x, seq, (h, kvh, hd), window))
            .collect();
        let mut cache = HostKv::default();
        let mut got = vec![Vec::new(); batch];
        let mut pos0 = 0;
        for s in [40, 1, 1, 3, 1] {
            let shape = HeadShape {
                batch,
                seq: s,
                heads: h,
                kv_heads: kvh,
                head_dim: hd,
            };
            let mut rows: Vec<f32> = sequences
                .iter()
                .flat_map(|x| x[pos0 * width..(pos0 + s) * width].to_vec())
                .collect();
            rope_rows(&mut rows, shape, pos0, cos, sin);
            let at = StepPositions {
                pos0,
                first_kept: pos0 - cache.len(),
                window,
            };
            let out = cache.attend(&rows, shape, at);
            for (b, got) in got.iter_mut().enumerate() {
                got.extend_from_slice(&out[b * s * h * hd..(b + 1) * s * h * hd]);
            }
            pos0 += s;
            assert_eq!(cache.len(), window.map_or(pos0, |w| w.min(pos0)));
        }
        for (b, (got, want)) in got.iter().zip(&want).enumerate() {
            let what = format!("sequence {b}, head_dim {hd}, window {window:?}");
            assert_close(got, want, 1e-4, &what);
        }
    }
}

#[test]
fn packed_attention_runs_on_the_host_and_matches_naive() {
    use crate::qmatmul::{BlockFormat, PackedWeight};
    use std::sync::Arc;
    // d_model 64 (two blocks of 32 inputs), 4 query heads over 2 key/value heads.
    let (d, h, kvh, seq, w) = (64, 4, 2, 7, 4);
    let (attns, naive) = attention_pair(d, h, kvh);
    let pack = |p: &Proj| {
        let [d_in, d_out] = p.dims();
        let weight = values(p.weight.val());
        let packed = PackedWeight::quantize(BlockFormat::Q8_0, &weight, d_in, d_out).unwrap();
        let dequantized = packed.dequantize();
        let mut p = Proj::new(tensor(&[0.0], [1, 1]));
        p.packed = Some(Arc::new(packed));
        (p, dequantized)
    };
    let attn = &attns[0];
    let [(q, wq), (k, wk), (v, wv), (o, wo)] = [&attn.q, &attn.k, &attn.v, &attn.o].map(pack);
    let packed = Attention {
        q,
        k,
        v,
        o,
        ..attn.clone()
    };
    // The naive attention with the weights the kernels hold; the kernels also round the
    // activations to 8 bits (twice: before q/k/v and before the output projection), which
    // moves the result by about 1 % (relative RMS).
    let naive = NaiveAttention {
        wq,
        wk,
        wv,
        wo,
        ..naive
    };
    let x = random(seq * d, 23);
    let rel_rms = |a: &[f32], b: &[f32]| {
        let err: f32 = a.iter().zip(b).map(|(a, b)| (a - b) * (a - b)).sum();
        (err / b.iter().map(|b| b * b).sum::<f32>()).sqrt()
    };
    let full = naive.forward(&x, seq, None);
    let windowed = naive.forward(&x, seq, Some(w));
    // What the tolerance must tell apart: the window changes the output by far more.
    assert!(rel_rms(&windowed, &full) > 0.1);
    for (window, want) in [(None, &full), (Some(w), &windowed)] {
        let got = run_in_steps(&packed, &x, d, &[3, 1, 1, 2], window);
        let err = rel_rms(&got, want);
        assert!(
            err < 0.02,
            "packed attention, window {window:?}: rms error {err}"
        );
    }
    // And it is the host path that ran: the keys are in host memory.
    let rope = Rope::new(d / h, 64, 10000.0, &device());
    let mut cache = LayerCache::default();
    let at = StepPositions {
        pos0: 0,
        first_kept: 0,
        window: None,
    };
    packed.forward(tensor(&x[..d], [1, 1, d]), &rope, &mut cache, at, None);
    assert_eq!(cache.host.len(), 1);
}
