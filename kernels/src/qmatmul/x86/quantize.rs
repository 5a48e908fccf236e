//! The AVX-512 and AVX2 activation quantizers: [`super::super::ActBlock::new`] for a row of
//! blocks, the same values, scales and sums bit for bit. The `unsafe` here is of the kind the
//! parent module allows: entering `#[target_feature]` functions after the run-time check, and
//! unaligned loads and stores through references to arrays of the vector's size.
#![allow(unsafe_code)]

use super::super::{ActBlock, BLOCK, PANEL};
use super::available;
use std::arch::x86_64::*;

#[target_feature(enable = "avx512f")]
fn load16f(v: &[f32; PANEL]) -> __m512 {
    // SAFETY: `v` is sixteen readable `f32`; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Whether this CPU runs the AVX-512 activation quantizer.
pub(in crate::qmatmul) fn avx512_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// [`ActBlock::new`] for every block, with AVX-512: the same values, scales and sums, bit for
/// bit (the rounding is the same round-to-nearest-even, the sum the same sequential one).
pub(in crate::qmatmul) fn quantize_blocks(blocks: &[[f32; BLOCK]]) -> Vec<ActBlock> {
    assert!(
        avx512_available(),
        "the AVX-512 quantizer was chosen on a CPU without it"
    );
    // SAFETY: the assertion above found AVX-512F on this CPU, all `quantize_avx512` requires.
    unsafe { quantize_avx512(blocks) }
}

#[target_feature(enable = "avx512f")]
fn quantize_avx512(blocks: &[[f32; BLOCK]]) -> Vec<ActBlock> {
    let mut out = Vec::with_capacity(blocks.len());
    for x in blocks {
        let (halves, _) = x.as_chunks::<PANEL>();
        let (a, b) = (load16f(&halves[0]), load16f(&halves[1]));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let d = amax / 127.0;
        let inv = _mm512_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let (min, max) = (_mm512_set1_epi32(-127), _mm512_set1_epi32(127));
        let qa = _mm512_max_epi32(
            min,
            _mm512_min_epi32(max, _mm512_cvtps_epi32(_mm512_mul_ps(a, inv))),
        );
        let qb = _mm512_max_epi32(
            min,
            _mm512_min_epi32(max, _mm512_cvtps_epi32(_mm512_mul_ps(b, inv))),
        );
        let mut q = [0i8; BLOCK];
        let (qlo, qhi) = q.split_at_mut(BLOCK / 2);
        store16i8(qlo, _mm512_cvtepi32_epi8(qa));
        store16i8(qhi, _mm512_cvtepi32_epi8(qb));
        out.push(ActBlock {
            q,
            d,
            // In the portable quantizer's order: a Q4_1 product adds `m Σx`, and a last-bit
            // difference there would reach the next layer's 8-bit rounding.
            sum: x.iter().sum(),
            qsum: _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)),
        });
    }
    out
}

#[target_feature(enable = "avx512f")]
fn store16i8(dst: &mut [i8], v: __m128i) {
    assert!(dst.len() >= 16, "16 bytes to store");
    // SAFETY: `dst` holds at least sixteen writable bytes (checked above); `storeu` has no
    // alignment requirement.
    unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), v) }
}

/// [`ActBlock::new`] for every block, with AVX2: the same values, scales and sums bit for bit
/// (what an AVX2-only CPU, or a forced `x86-avx2` tier, quantizes activations with).
pub(in crate::qmatmul) fn quantize_blocks_avx2(blocks: &[[f32; BLOCK]]) -> Vec<ActBlock> {
    assert!(
        available(),
        "the AVX2 quantizer was chosen on a CPU without AVX2"
    );
    // SAFETY: the assertion above found AVX2 (and FMA, F16C) on this CPU, all
    // `quantize_avx2` requires.
    unsafe { quantize_avx2(blocks) }
}

#[target_feature(enable = "avx2")]
fn quantize_avx2(blocks: &[[f32; BLOCK]]) -> Vec<ActBlock> {
    let mut out = Vec::with_capacity(blocks.len());
    let sign = _mm256_set1_ps(-0.0);
    let (min, max) = (_mm256_set1_epi32(-127), _mm256_set1_epi32(127));
    // `packs` works within 128-bit lanes: this puts the four groups of four back in order.
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for x in blocks {
        let (eighths, _) = x.as_chunks::<8>();
        let v = [
            load8f(&eighths[0]),
            load8f(&eighths[1]),
            load8f(&eighths[2]),
            load8f(&eighths[3]),
        ];
        let m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])),
        );
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let amax = _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
        let d = amax / 127.0;
        let inv = _mm256_set1_ps(if d > 0.0 { 1.0 / d } else { 0.0 });
        let q = [
            _mm256_max_epi32(
                min,
                _mm256_min_epi32(max, _mm256_cvtps_epi32(_mm256_mul_ps(v[0], inv))),
            ),
            _mm256_max_epi32(
                min,
                _mm256_min_epi32(max, _mm256_cvtps_epi32(_mm256_mul_ps(v[1], inv))),
            ),
            _mm256_max_epi32(
                min,
                _mm256_min_epi32(max, _mm256_cvtps_epi32(_mm256_mul_ps(v[2], inv))),
            ),
            _mm256_max_epi32(
                min,
                _mm256_min_epi32(max, _mm256_cvtps_epi32(_mm256_mul_ps(v[3], inv))),
            ),
        ];
        let total = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
        let t = _mm_add_epi32(
            _mm256_castsi256_si128(total),
            _mm256_extracti128_si256::<1>(total),
        );
        let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b01_00_11_10>(t));
        let t = _mm_add_epi32(t, _mm_shuffle_epi32::<0b10_11_00_01>(t));
        let bytes = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let mut values = [0i8; BLOCK];
        store32i8(&mut values, _mm256_permutevar8x32_epi32(bytes, order));
        out.push(ActBlock {
            q: values,
            d,
            // The portable quantizer's sequential order (see `quantize_avx512`).
            sum: x.iter().sum(),
            qsum: _mm_cvtsi128_si32(t),
        });
    }
    out
}

#[target_feature(enable = "avx2")]
fn load8f(v: &[f32; 8]) -> __m256 {
    // SAFETY: `v` is eight readable `f32`; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

#[target_feature(enable = "avx2")]
fn store32i8(dst: &mut [i8; BLOCK], v: __m256i) {
    // SAFETY: `dst` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), v) }
}
