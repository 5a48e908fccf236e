//! AVX2 inner loops for [`super::PackedWeight::matmul`].
//!
//! The workspace denies `unsafe`; this module is the one exception, for two reasons only:
//! calling a `#[target_feature]` function, which is sound once the feature was detected at run
//! time, and unaligned vector loads from references to 16 or 32 bytes. Everything else is safe
//! intrinsics (Rust 1.87+ lets value-only intrinsics be called safely inside a function with
//! the matching target features).
#![allow(unsafe_code)]

use super::{BLOCK, Group, LANES, PackedWeight, QuantizedRows, Values};
use std::arch::x86_64::*;
use std::ops::Range;

/// Whether this CPU runs the AVX2 kernels.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Computes the outputs of `groups` for every row of `x` into `out` (`[groups * LANES, rows]`).
///
/// (No closures below: a closure does not inherit its function's target features, so the
/// intrinsics it calls would not be inlined.)
pub(super) fn run(w: &PackedWeight, x: &QuantizedRows, groups: Range<usize>, out: &mut [f32]) {
    assert!(
        available(),
        "the AVX2 kernel was chosen on a CPU without AVX2/FMA"
    );
    // SAFETY: the assertion above found AVX2 and FMA on this CPU, all `run_avx2` requires.
    unsafe { run_avx2(w, x, groups, out) }
}

#[target_feature(enable = "avx2,fma")]
fn run_avx2(w: &PackedWeight, x: &QuantizedRows, groups: Range<usize>, out: &mut [f32]) {
    let (nb, rows) = (x.blocks, x.rows);
    for (i, g) in groups.enumerate() {
        let blocks = g * nb..(g + 1) * nb;
        let ws = &w.scales[blocks.clone()];
        // Rows innermost: the group's weights stay in L1 while every row reads them.
        for r in 0..rows {
            let row = r * nb..(r + 1) * nb;
            let (xq, xs) = (&x.values[row.clone()], &x.scales[row.clone()]);
            let y = match &w.values {
                Values::Q8(q) => q8_group(&q[blocks.clone()], ws, xq, xs),
                Values::Q4(q) => {
                    let mins = &w.mins[blocks.clone()];
                    q4_group(&q[blocks.clone()], ws, mins, xq, xs, &x.sums[row])
                }
            };
            for (lane, v) in y.into_iter().enumerate() {
                out[(i * LANES + lane) * rows + r] = v;
            }
        }
    }
}

#[target_feature(enable = "avx2")]
fn load32(v: &[i8; BLOCK]) -> __m256i {
    // SAFETY: `v` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
fn load16(v: &[u8; BLOCK / 2]) -> __m128i {
    // SAFETY: `v` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(v.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
fn load4(v: &Group<f32>) -> __m128 {
    // SAFETY: `v` is four readable `f32`; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_ps(v.as_ptr()) }
}

/// Sum of the eight lanes.
#[target_feature(enable = "avx2")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `Σ u·s` of 32 unsigned × signed bytes, as eight `f32` partial sums (each of four products).
///
/// `maddubs` adds adjacent products into `i16` with saturation; neither caller can reach it:
/// Q8_0 gives `2 · 127 · 127 = 32258`, Q4_1 `2 · 15 · 127 = 3810`.
#[target_feature(enable = "avx2")]
fn dot_u8i8(u: __m256i, s: __m256i) -> __m256 {
    let pairs = _mm256_maddubs_epi16(u, s);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// The four outputs of a Q8_0 group for one row: `Σ_b d_b s_b Σ q·qx`. `maddubs` wants one
/// unsigned operand, so the activations' signs move onto the weights (`|qx| · sign(qx) q`),
/// and `|qx|` is shared by the four outputs.
#[target_feature(enable = "avx2,fma")]
fn q8_group(
    wq: &[Group<[i8; BLOCK]>],
    ws: &[Group<f32>],
    xq: &[[i8; BLOCK]],
    xs: &[f32],
) -> Group<f32> {
    let mut acc = [_mm256_setzero_ps(); LANES];
    for (((w4, d4), xb), &s) in wq.iter().zip(ws).zip(xq).zip(xs) {
        let xv = load32(xb);
        let magnitude = _mm256_sign_epi8(xv, xv);
        for lane in 0..LANES {
            let signed = _mm256_sign_epi8(load32(&w4[lane]), xv);
            let scale = _mm256_set1_ps(d4[lane] * s);
            acc[lane] = _mm256_fmadd_ps(scale, dot_u8i8(magnitude, signed), acc[lane]);
        }
    }
    [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])]
}

/// The 32 four-bit values of a Q4_1 block as bytes, inputs `0..16` then `16..32`.
#[target_feature(enable = "avx2")]
fn unpack_q4(block: &[u8; BLOCK / 2]) -> __m256i {
    let raw = load16(block);
    let mask = _mm_set1_epi8(15);
    let low = _mm_and_si128(raw, mask);
    let high = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
    _mm256_set_m128i(high, low)
}

/// The four outputs of a Q4_1 group for one row: `Σ_b (d_b s_b Σ q·qx + m_b Σ x_b)`.
#[target_feature(enable = "avx2,fma")]
fn q4_group(
    wq: &[Group<[u8; BLOCK / 2]>],
    ws: &[Group<f32>],
    mins: &[Group<f32>],
    xq: &[[i8; BLOCK]],
    xs: &[f32],
    sums: &[f32],
) -> Group<f32> {
    let mut acc = [_mm256_setzero_ps(); LANES];
    let mut shift = _mm_setzero_ps();
    for ((((w4, d4), m4), xb), (&s, &sum)) in
        wq.iter().zip(ws).zip(mins).zip(xq).zip(xs.iter().zip(sums))
    {
        let xv = load32(xb);
        for lane in 0..LANES {
            let scale = _mm256_set1_ps(d4[lane] * s);
            acc[lane] = _mm256_fmadd_ps(scale, dot_u8i8(unpack_q4(&w4[lane]), xv), acc[lane]);
        }
        shift = _mm_fmadd_ps(load4(m4), _mm_set1_ps(sum), shift);
    }
    let mut y = [0f32; LANES];
    store4(&mut y, shift);
    [
        hsum(acc[0]) + y[0],
        hsum(acc[1]) + y[1],
        hsum(acc[2]) + y[2],
        hsum(acc[3]) + y[3],
    ]
}

#[target_feature(enable = "avx2")]
fn store4(dst: &mut Group<f32>, v: __m128) {
    // SAFETY: `dst` is four writable `f32`; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_ps(dst.as_mut_ptr(), v) }
}
