use super::*;
use crate::backend::BackendKind;
use crate::dequant::{dequantize, quantize_q4_1};
use crate::gguf::GgmlType;
use crate::load::SplitMix64;
use burn::prelude::*;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// A `[d_in, d_out]` weight whose values went through GGUF's Q4_1 encoder (per output row).
fn q4_1_weight(d_in: usize, d_out: usize) -> Vec<f32> {
    let raw = random(d_in * d_out, 5);
    let mut rows = vec![0f32; raw.len()];
    dequantize(GgmlType::Q4_1, &quantize_q4_1(&raw), &mut rows).expect("q4_1 decodes");
    let mut w = vec![0f32; raw.len()];
    for o in 0..d_out {
        for i in 0..d_in {
            w[i * d_out + o] = rows[o * d_in + i];
        }
    }
    w
}

/// `x W` in f64 from the weight the blocks stand for and unquantized activations.
fn exact(x: &[f32], w: &[f32], rows: usize, d_in: usize, d_out: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * d_out];
    for r in 0..rows {
        for o in 0..d_out {
            let dot: f64 = (0..d_in)
                .map(|i| f64::from(x[r * d_in + i]) * f64::from(w[i * d_out + o]))
                .sum();
            y[r * d_out + o] = dot as f32;
        }
    }
    y
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(p, q)| (p - q).abs())
        .fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn q4_1_weights_from_a_q4_1_file_come_back_exactly() {
    let (d_in, d_out) = (96, 40);
    let w = q4_1_weight(d_in, d_out);
    let packed = PackedWeight::quantize(BlockFormat::Q4_1, &w, d_in, d_out).expect("packs");
    let back = packed.dequantize();
    // ggml stores d and m in f16; recomputing them in f32 from the decoded values is exact to
    // f32 rounding.
    assert!(
        max_abs_diff(&back, &w) < 1e-6,
        "{}",
        max_abs_diff(&back, &w)
    );
    assert_eq!(
        packed.stored_bytes(),
        d_in * d_out / 2 + 8 * d_in * d_out / BLOCK
    );
}

#[test]
fn q8_0_rounds_each_weight_to_half_a_step() {
    let (d_in, d_out) = (64, 24);
    let w = random(d_in * d_out, 9);
    let packed = PackedWeight::quantize(BlockFormat::Q8_0, &w, d_in, d_out).expect("packs");
    let back = packed.dequantize();
    // Every block's step is max|w| / 127 <= 1 / 127.
    let err = max_abs_diff(&back, &w);
    assert!(err <= 0.5 / 127.0 + 1e-7, "{err}");
    assert!(err > 0.0, "q8 of random weights cannot be exact");
    assert_eq!(
        packed.stored_bytes(),
        d_in * d_out + 4 * d_in * d_out / BLOCK
    );
}

#[test]
fn simd_and_portable_kernels_agree_for_every_row_count() {
    let (d_in, d_out) = (128, 70);
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1] {
        let w =
            PackedWeight::quantize(format, &random(d_in * d_out, 2), d_in, d_out).expect("packs");
        // 1 is decode; 4 and 8 are whole tiles; the others leave a remainder.
        for rows in [1, 3, 4, 5, 8, 13] {
            let x = random(rows * d_in, 40 + rows as u64);
            let fast = w.matmul(&x, rows);
            let reference = w.matmul_portable(&x, rows);
            let tol = 1e-5 * max_abs(&reference).max(1.0);
            let err = max_abs_diff(&fast, &reference);
            assert!(err <= tol, "{format} rows {rows}: {err} > {tol}");
        }
    }
}

#[test]
fn products_match_the_dequantized_weight_within_activation_rounding() {
    let (d_in, d_out, rows) = (576, 48, 3);
    let x = random(rows * d_in, 11);
    for (format, w) in [
        (BlockFormat::Q8_0, random(d_in * d_out, 12)),
        (BlockFormat::Q4_1, q4_1_weight(d_in, d_out)),
    ] {
        let packed = PackedWeight::quantize(format, &w, d_in, d_out).expect("packs");
        let want = exact(&x, &packed.dequantize(), rows, d_in, d_out);
        let got = packed.matmul(&x, rows);
        // 8-bit activations: each product is off by at most half a step of |x| <= 1 times
        // |w| <= 1, summed over d_in inputs; in practice errors cancel far below that bound.
        let err = max_abs_diff(&got, &want);
        let scale = max_abs(&want);
        assert!(
            err < 0.01 * scale,
            "{format}: error {err} against outputs up to {scale}"
        );
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    assert_eq!(
        PackedWeight::quantize(BlockFormat::Q8_0, &[0.0; 40], 20, 2).unwrap_err(),
        PackError::Shape { d_in: 20, d_out: 2 }
    );
    let err = PackedWeight::quantize(BlockFormat::Q4_1, &[0.0; 10], 32, 2).unwrap_err();
    assert_eq!(err.to_string(), "10 values given for a 32x2 weight");
}

#[test]
fn burn_extension_runs_the_kernel_on_both_cpu_backends() {
    let (d_in, d_out) = (64, 20);
    let w = std::sync::Arc::new(
        PackedWeight::quantize(BlockFormat::Q8_0, &random(d_in * d_out, 3), d_in, d_out)
            .expect("packs"),
    );
    let x = random(2 * 3 * d_in, 4);
    let want = w.matmul(&x, 6);
    for backend in [BackendKind::Flex, BackendKind::NdArray] {
        let device = backend.device().expect("cpu backend");
        let t = Tensor::<3>::from_data(TensorData::new(x.clone(), [2, 3, d_in]), &device);
        let y = packed_matmul(t, &w);
        assert_eq!(y.dims(), [2, 3, d_out]);
        let got: Vec<f32> = y.into_data().try_to_vec().expect("f32 output");
        assert_eq!(got, want, "{backend}");
    }
}
