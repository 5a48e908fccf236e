//! The arm64 kernels on the dot-product instructions: `sdot` (FEAT_DotProd, Armv8.2+; 16
//! multiply-adds into four sums per instruction) for decode and odd rows, and `smmla` (FEAT_I8MM,
//! Armv8.6+; a 2×8 by 8×2 product per instruction) for pairs of rows in prefill.
//!
//! Both read the same [`super::super::Layout::Panels`] weights as the NEON kernel: a 16-byte
//! chunk is 4 outputs × 4 consecutive inputs, which is exactly `sdot`'s operand against the row's
//! 4 activations repeated four times. For `smmla`, two chunks of the same 4 outputs (inputs
//! `4c..4c+4` and `4c+4..4c+8`) zipped by 32-bit lanes give 2 outputs × 8 inputs, its right-hand
//! operand; two rows' 8 activations side by side are its left-hand one.
//!
//! Rust 1.95 has no stable intrinsics for either instruction, so each is one `asm!` statement
//! over vector registers only ([`sdot`], [`smmla`]), inside functions compiled with the feature.
//! The entry points ([`run_dotprod`], [`run_i8mm`]) check the CPU first.

use super::{BLOCK, BlockFormat, PANEL, PackedWeight, QuantizedRows, Tile, Values};
use super::{broadcast4, load4h, load16, store4f, write_rows};
use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

/// Whether this CPU has `sdot`.
pub(in crate::qmatmul) fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Whether this CPU has `smmla` (and `sdot`, which the odd rows use).
pub(in crate::qmatmul) fn i8mm_available() -> bool {
    dotprod_available() && std::arch::is_aarch64_feature_detected!("i8mm")
}

/// The `sdot` kernel: tiles of up to 4 rows × one panel.
pub(in crate::qmatmul) fn run_dotprod(
    w: &PackedWeight,
    x: &QuantizedRows,
    units: Range<usize>,
    out: &mut [f32],
) {
    assert!(
        dotprod_available(),
        "the dotprod kernel was chosen on a CPU without it"
    );
    // SAFETY: the assertion above found FEAT_DotProd (and NEON is in the arm64 baseline), all
    // `run_dot` requires.
    unsafe { run_dot(w, x, units, out) }
}

/// The `smmla` kernel: tiles of up to two pairs of rows × one panel, an odd last row with `sdot`.
pub(in crate::qmatmul) fn run_i8mm(
    w: &PackedWeight,
    x: &QuantizedRows,
    units: Range<usize>,
    out: &mut [f32],
) {
    assert!(
        i8mm_available(),
        "the i8mm kernel was chosen on a CPU without i8mm and dotprod"
    );
    // SAFETY: the assertion above found FEAT_I8MM and FEAT_DotProd, all `run_mmla` requires.
    unsafe { run_mmla(w, x, units, out) }
}

#[target_feature(enable = "neon,dotprod")]
fn run_dot(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let n = out.len() / x.rows.max(1);
    for p in units.clone() {
        let col = (p - units.start) * PANEL;
        let mut r = 0;
        while r < x.rows {
            let tile = Tile { panel: p, row: r };
            r += if x.rows - r >= 4 {
                write_rows(out, n, r, col, &dot_tile::<4>(w, x, tile))
            } else if x.rows - r >= 2 {
                write_rows(out, n, r, col, &dot_tile::<2>(w, x, tile))
            } else {
                write_rows(out, n, r, col, &dot_tile::<1>(w, x, tile))
            };
        }
    }
}

#[target_feature(enable = "neon,dotprod,i8mm")]
fn run_mmla(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let n = out.len() / x.rows.max(1);
    for p in units.clone() {
        let col = (p - units.start) * PANEL;
        let mut r = 0;
        while r < x.rows {
            let tile = Tile { panel: p, row: r };
            r += if x.rows - r >= 4 {
                write_rows(out, n, r, col, mmla_tile::<2>(w, x, tile).as_flattened())
            } else if x.rows - r >= 2 {
                write_rows(out, n, r, col, mmla_tile::<1>(w, x, tile).as_flattened())
            } else {
                write_rows(out, n, r, col, &dot_tile::<1>(w, x, tile))
            };
        }
    }
}

/// What a block's integer sums start from: `-8 Σ qx` for Q4_0 (its nibbles are stored `+ 8`),
/// zero otherwise (Q8_0's stored `+ 128` is flipped back to the signed value before use).
fn start(w: &PackedWeight, x: &QuantizedRows, i: usize) -> i32 {
    if w.format == BlockFormat::Q4_0 {
        -8 * x.qsums[i]
    } else {
        0
    }
}

/// `R` rows × one panel with `sdot`: the 16 outputs of each row.
#[target_feature(enable = "neon,dotprod")]
fn dot_tile<const R: usize>(w: &PackedWeight, x: &QuantizedRows, tile: Tile) -> [[f32; PANEL]; R] {
    let (scales, _) = w.scales.as_chunks::<PANEL>();
    let nb = x.blocks;
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for b in 0..nb {
        let k = tile.panel * nb + b;
        let mut dots = [[vdupq_n_s32(0); 4]; R];
        for (r, dots) in dots.iter_mut().enumerate() {
            *dots = [vdupq_n_s32(start(w, x, (tile.row + r) * nb + b)); 4];
        }
        let first = tile.row * nb + b;
        match &w.values {
            Values::Q8Panel(q) => {
                let flip = vdupq_n_u8(0x80);
                let (chunks, _) = q[k].as_chunks::<16>();
                for c in 0..BLOCK / 4 {
                    let mut xv = [vdupq_n_s8(0); R];
                    for (r, xv) in xv.iter_mut().enumerate() {
                        *xv = broadcast4(&x.values[first + r * nb], c);
                    }
                    for g in 0..4 {
                        let wv = vreinterpretq_s8_u8(veorq_u8(load16(&chunks[4 * c + g]), flip));
                        for r in 0..R {
                            dots[r][g] = sdot(dots[r][g], wv, xv[r]);
                        }
                    }
                }
            }
            Values::Q4Panel(q) => {
                let nibble = vdupq_n_u8(15);
                let (chunks, _) = q[k].as_chunks::<16>();
                for c in 0..BLOCK / 8 {
                    let (mut lo, mut hi) = ([vdupq_n_s8(0); R], [vdupq_n_s8(0); R]);
                    for r in 0..R {
                        lo[r] = broadcast4(&x.values[first + r * nb], 2 * c);
                        hi[r] = broadcast4(&x.values[first + r * nb], 2 * c + 1);
                    }
                    for g in 0..4 {
                        let v = load16(&chunks[4 * c + g]);
                        let wlo = vreinterpretq_s8_u8(vandq_u8(v, nibble));
                        let whi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                        for r in 0..R {
                            dots[r][g] = sdot(dots[r][g], wlo, lo[r]);
                            dots[r][g] = sdot(dots[r][g], whi, hi[r]);
                        }
                    }
                }
            }
            Values::Q8(_) | Values::Q4(_) => {
                unreachable!("the dotprod kernel runs only `Layout::Panels` weights")
            }
        }
        let (d, _) = scales[k].as_chunks::<4>();
        for (r, (acc, dots)) in acc.iter_mut().zip(&dots).enumerate() {
            let i = (tile.row + r) * nb + b;
            for g in 0..4 {
                let ds = vmulq_n_f32(load4h(&d[g]), x.scales[i]);
                acc[g] = vfmaq_f32(acc[g], vcvtq_f32_s32(dots[g]), ds);
                if w.format == BlockFormat::Q4_1 {
                    let (m, _) = w.mins[k * PANEL..(k + 1) * PANEL].as_chunks::<4>();
                    acc[g] = vfmaq_n_f32(acc[g], load4h(&m[g]), x.sums[i]);
                }
            }
        }
    }
    let mut out = [[0f32; PANEL]; R];
    for (out, acc) in out.iter_mut().zip(&acc) {
        let (quads, _) = out.as_chunks_mut::<4>();
        for (q, v) in quads.iter_mut().zip(acc) {
            store4f(q, *v);
        }
    }
    out
}

/// `P` pairs of rows × one panel with `smmla`, each load and zip of weights serving every
/// pair. Accumulator `q` of a pair holds outputs `2q` and `2q + 1` of both its rows:
/// `[r0·o2q, r0·o2q+1, r1·o2q, r1·o2q+1]` (the 2×2 product, row-major).
#[target_feature(enable = "neon,dotprod,i8mm")]
fn mmla_tile<const P: usize>(
    w: &PackedWeight,
    x: &QuantizedRows,
    tile: Tile,
) -> [[[f32; PANEL]; 2]; P] {
    let (scales, _) = w.scales.as_chunks::<PANEL>();
    let nb = x.blocks;
    let mut acc = [[vdupq_n_f32(0.0); PANEL / 2]; P];
    for b in 0..nb {
        let k = tile.panel * nb + b;
        // The block's index in each row of each pair.
        let mut at = [(0, 0); P];
        let mut dots = [[vdupq_n_s32(0); PANEL / 2]; P];
        for p in 0..P {
            let row = tile.row + 2 * p;
            at[p] = (row * nb + b, (row + 1) * nb + b);
            let (s0, s1) = (start(w, x, at[p].0), start(w, x, at[p].1));
            dots[p] = [vcombine_s32(vdup_n_s32(s0), vdup_n_s32(s1)); PANEL / 2];
        }
        match &w.values {
            Values::Q8Panel(q) => {
                let flip = vdupq_n_u8(0x80);
                let (chunks, _) = q[k].as_chunks::<16>();
                for c in 0..BLOCK / 8 {
                    // Inputs `8c..8c+8` of both rows of each pair.
                    let mut xv = [vdupq_n_s8(0); P];
                    for p in 0..P {
                        xv[p] = pair_inputs(x, at[p], c);
                    }
                    for g in 0..4 {
                        let a = veorq_u8(load16(&chunks[4 * (2 * c) + g]), flip);
                        let z = veorq_u8(load16(&chunks[4 * (2 * c + 1) + g]), flip);
                        let (lo, hi) = zip_outputs(a, z);
                        for p in 0..P {
                            dots[p][2 * g] = smmla(dots[p][2 * g], xv[p], lo);
                            dots[p][2 * g + 1] = smmla(dots[p][2 * g + 1], xv[p], hi);
                        }
                    }
                }
            }
            Values::Q4Panel(q) => {
                let nibble = vdupq_n_u8(15);
                let (chunks, _) = q[k].as_chunks::<16>();
                for c in 0..BLOCK / 8 {
                    let mut xv = [vdupq_n_s8(0); P];
                    for p in 0..P {
                        xv[p] = pair_inputs(x, at[p], c);
                    }
                    for g in 0..4 {
                        // Low nibbles: inputs `8c..8c+4`; high: `8c+4..8c+8`.
                        let v = load16(&chunks[4 * c + g]);
                        let (lo, hi) = zip_outputs(vandq_u8(v, nibble), vshrq_n_u8::<4>(v));
                        for p in 0..P {
                            dots[p][2 * g] = smmla(dots[p][2 * g], xv[p], lo);
                            dots[p][2 * g + 1] = smmla(dots[p][2 * g + 1], xv[p], hi);
                        }
                    }
                }
            }
            Values::Q8(_) | Values::Q4(_) => {
                unreachable!("the i8mm kernel runs only `Layout::Panels` weights")
            }
        }
        let (d, _) = scales[k].as_chunks::<4>();
        for p in 0..P {
            let (i0, i1) = at[p];
            let s = vcombine_f32(vdup_n_f32(x.scales[i0]), vdup_n_f32(x.scales[i1]));
            let sums = vcombine_f32(vdup_n_f32(x.sums[i0]), vdup_n_f32(x.sums[i1]));
            for (q, (acc, dots)) in acc[p].iter_mut().zip(&dots[p]).enumerate() {
                let dv = pair_of(load4h(&d[q / 2]), q % 2);
                *acc = vfmaq_f32(*acc, vcvtq_f32_s32(*dots), vmulq_f32(dv, s));
                if w.format == BlockFormat::Q4_1 {
                    let (m, _) = w.mins[k * PANEL..(k + 1) * PANEL].as_chunks::<4>();
                    *acc = vfmaq_f32(*acc, pair_of(load4h(&m[q / 2]), q % 2), sums);
                }
            }
        }
    }
    let mut out = [[[0f32; PANEL]; 2]; P];
    for (out, acc) in out.iter_mut().zip(&acc) {
        for (q, v) in acc.iter().enumerate() {
            let mut four = [0f32; 4];
            store4f(&mut four, *v);
            out[0][2 * q..2 * q + 2].copy_from_slice(&four[..2]);
            out[1][2 * q..2 * q + 2].copy_from_slice(&four[2..]);
        }
    }
    out
}

/// Inputs `8c..8c+8` of the blocks at `(i0, i1)` (two rows), side by side: `smmla`'s operand
/// of 2 rows × 8 activations.
#[inline]
#[target_feature(enable = "neon")]
fn pair_inputs(x: &QuantizedRows, (i0, i1): (usize, usize), c: usize) -> int8x16_t {
    let (x0, _) = x.values[i0].as_chunks::<8>();
    let (x1, _) = x.values[i1].as_chunks::<8>();
    vcombine_s8(load8(&x0[c]), load8(&x1[c]))
}

/// Two chunks of the same 4 outputs (`a`: 4 inputs of each, `b`: the next 4) as two `smmla`
/// operands of 2 outputs × 8 inputs: outputs 0 and 1, then 2 and 3.
#[inline]
#[target_feature(enable = "neon")]
fn zip_outputs(a: uint8x16_t, b: uint8x16_t) -> (int8x16_t, int8x16_t) {
    let (a, b) = (vreinterpretq_s32_u8(a), vreinterpretq_s32_u8(b));
    (
        vreinterpretq_s8_s32(vzip1q_s32(a, b)),
        vreinterpretq_s8_s32(vzip2q_s32(a, b)),
    )
}

/// `acc + w · x` by groups of four bytes: lane `i` adds `Σ_t w[4i+t] x[4i+t]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one `sdot` on three vector registers: no memory, stack or flags touched. The
    // function is compiled for FEAT_DotProd, and every caller's entry checked the CPU has it.
    unsafe {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

/// `acc + a · bᵀ` for `a` and `b` of 2 rows × 8 signed bytes each: lanes `[a0·b0, a0·b1,
/// a1·b0, a1·b1]`.
#[inline]
#[target_feature(enable = "neon,i8mm")]
fn smmla(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: one `smmla` on three vector registers: no memory, stack or flags touched. The
    // function is compiled for FEAT_I8MM, and every caller's entry checked the CPU has it.
    unsafe {
        asm!(
            ".arch_extension i8mm",
            "smmla {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    acc
}

#[inline]
#[target_feature(enable = "neon")]
fn load8(v: &[i8; 8]) -> int8x8_t {
    // SAFETY: `v` is 8 readable bytes; `ld1` has no alignment requirement.
    unsafe { vld1_s8(v.as_ptr()) }
}

/// Outputs `2 half` and `2 half + 1` of four, twice: `[a, b, a, b]`, one per lane of an
/// `smmla` result.
#[inline]
#[target_feature(enable = "neon")]
fn pair_of(quad: float32x4_t, half: usize) -> float32x4_t {
    let two = if half == 0 {
        vget_low_f32(quad)
    } else {
        vget_high_f32(quad)
    };
    vcombine_f32(two, two)
}
