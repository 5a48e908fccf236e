//! arm64 inner loops for [`super::PackedWeight::matmul`]: baseline NEON (every arm64 CPU), and
//! the dot-product instructions phones have, chosen at run time (see [`super::Kernel::best`]).
//! The NEON kernel is below; the `sdot` (dotprod) and `smmla` (i8mm) ones in `arm_dot`.
//!
//! [`super::Layout::Panels`] weights: one 16-byte load is 4 outputs × 4 consecutive inputs,
//! multiplied by the row's 4 activations repeated four times (`smull`/`smull2` to 16 bits, then
//! `sadalp` into 32-bit pairs, `addp` at the end of a block to one sum per output). The Q8_0
//! panels store `q + 128` for x86's unsigned × signed instruction; flipping the top bit gives
//! `q` back as a signed byte. Q4_1 nibbles are used as they are.
//!
//! The workspace denies `unsafe`; this module is an exception for two reasons only: entering
//! the `#[target_feature(enable = "neon")]` functions (NEON is part of the arm64 baseline, so
//! every CPU this compiles for has it), and NEON loads and stores through references to arrays
//! of exactly the vector's size. The arithmetic intrinsics are safe inside those functions.
//! `dot` adds a third: one `asm!` instruction each for `sdot` and `smmla`, which have no stable
//! intrinsics, entered only after the run-time feature check; and `fcvtl` (baseline) turns the
//! weights' `f16` scales into `f32`.
//! (No closures below: a closure does not inherit its function's target features.)
#![allow(unsafe_code)]

mod dot;
pub(super) use dot::{dotprod_available, i8mm_available, run_dotprod, run_i8mm};

use super::{BLOCK, BlockFormat, PANEL, PackedWeight, QuantizedRows, Values};
use half::f16;
use std::arch::aarch64::*;
use std::arch::asm;
use std::ops::Range;

/// Computes the outputs of `units` (panels) for every row of `x` into `out`, row-major within
/// the task's chunk: `[rows, units * PANEL]`.
pub(super) fn run_panels(
    w: &PackedWeight,
    x: &QuantizedRows,
    units: Range<usize>,
    out: &mut [f32],
) {
    // SAFETY: NEON is in the arm64 baseline: every CPU this code is compiled for has it.
    unsafe { run_neon(w, x, units, out) }
}

#[target_feature(enable = "neon")]
fn run_neon(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let n = out.len() / x.rows.max(1);
    for p in units.clone() {
        let mut r = 0;
        while r < x.rows {
            let tile = Tile { panel: p, row: r };
            // Two rows share each weight load; more would spill the accumulators.
            let col = (p - units.start) * PANEL;
            let done = if x.rows - r >= 2 {
                write_rows(out, n, r, col, &panel_tile::<2>(w, x, tile))
            } else {
                write_rows(out, n, r, col, &panel_tile::<1>(w, x, tile))
            };
            r += done;
        }
    }
}

/// Copies the sums of rows `row..` into `out` (`n` values per row) at column `col`; returns
/// how many rows that was.
fn write_rows(out: &mut [f32], n: usize, row: usize, col: usize, sums: &[[f32; PANEL]]) -> usize {
    for (i, s) in sums.iter().enumerate() {
        out[(row + i) * n + col..][..PANEL].copy_from_slice(s);
    }
    sums.len()
}

/// Where a tile starts.
#[derive(Clone, Copy)]
struct Tile {
    panel: usize,
    row: usize,
}

/// `R` rows × one panel: the 16 outputs of each row.
#[target_feature(enable = "neon")]
fn panel_tile<const R: usize>(
    w: &PackedWeight,
    x: &QuantizedRows,
    tile: Tile,
) -> [[f32; PANEL]; R] {
    let (scales, _) = w.scales.as_chunks::<PANEL>();
    let nb = x.blocks;
    let mut acc = [[vdupq_n_f32(0.0); 4]; R];
    for b in 0..nb {
        let k = tile.panel * nb + b;
        let mut dots: [[int32x4_t; 4]; R] = match &w.values {
            Values::Q8Panel(q) => q8_block::<R>(&q[k], x, tile.row * nb + b, nb),
            Values::Q4Panel(q) => q4_block::<R>(&q[k], x, tile.row * nb + b, nb),
            Values::Q8(_) | Values::Q4(_) => {
                unreachable!("the NEON kernel runs only `Layout::Panels` weights")
            }
        };
        if w.format == BlockFormat::Q4_0 {
            // The nibbles are stored `+ 8`: take `8 Σ qx` back.
            for (r, dots) in dots.iter_mut().enumerate() {
                let offset = vdupq_n_s32(-8 * x.qsums[(tile.row + r) * nb + b]);
                for dot in dots {
                    *dot = vaddq_s32(*dot, offset);
                }
            }
        }
        let (d, _) = scales[k].as_chunks::<4>();
        let mins = match w.format {
            BlockFormat::Q4_1 => Some(w.mins[k * PANEL..(k + 1) * PANEL].as_chunks::<4>().0),
            BlockFormat::Q8_0 | BlockFormat::Q4_0 => None,
        };
        for (r, (acc, dots)) in acc.iter_mut().zip(&dots).enumerate() {
            let i = (tile.row + r) * nb + b;
            let s = x.scales[i];
            for g in 0..4 {
                let ds = vmulq_n_f32(load4h(&d[g]), s);
                acc[g] = vfmaq_f32(acc[g], vcvtq_f32_s32(dots[g]), ds);
                if let Some(m) = mins {
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

/// The integer sums of one Q8_0 panel block (`q + 128` per byte) with rows `first`,
/// `first + nb`, …: for each row, four vectors of four outputs.
#[target_feature(enable = "neon")]
fn q8_block<const R: usize>(
    q: &[u8; PANEL * BLOCK],
    x: &QuantizedRows,
    first: usize,
    nb: usize,
) -> [[int32x4_t; 4]; R] {
    let flip = vdupq_n_u8(0x80);
    let (chunks, _) = q.as_chunks::<16>();
    let mut pairs = [[[vdupq_n_s32(0); 2]; 4]; R];
    for k in 0..BLOCK / 4 {
        let mut xv = [vdupq_n_s8(0); R];
        for (r, xv) in xv.iter_mut().enumerate() {
            *xv = broadcast4(&x.values[first + r * nb], k);
        }
        for g in 0..4 {
            let wv = vreinterpretq_s8_u8(veorq_u8(load16(&chunks[4 * k + g]), flip));
            for r in 0..R {
                accumulate(&mut pairs[r][g], wv, xv[r]);
            }
        }
    }
    pair_sums(&pairs)
}

/// The integer sums of one Q4_1 panel block (nibbles `0..=15`), as [`q8_block`].
#[target_feature(enable = "neon")]
fn q4_block<const R: usize>(
    q: &[u8; PANEL * BLOCK / 2],
    x: &QuantizedRows,
    first: usize,
    nb: usize,
) -> [[int32x4_t; 4]; R] {
    let nibble = vdupq_n_u8(15);
    let (chunks, _) = q.as_chunks::<16>();
    let mut pairs = [[[vdupq_n_s32(0); 2]; 4]; R];
    for k in 0..BLOCK / 8 {
        let (mut lo, mut hi) = ([vdupq_n_s8(0); R], [vdupq_n_s8(0); R]);
        for r in 0..R {
            lo[r] = broadcast4(&x.values[first + r * nb], 2 * k);
            hi[r] = broadcast4(&x.values[first + r * nb], 2 * k + 1);
        }
        for g in 0..4 {
            let v = load16(&chunks[4 * k + g]);
            let wlo = vreinterpretq_s8_u8(vandq_u8(v, nibble));
            let whi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
            for r in 0..R {
                accumulate(&mut pairs[r][g], wlo, lo[r]);
                accumulate(&mut pairs[r][g], whi, hi[r]);
            }
        }
    }
    pair_sums(&pairs)
}

/// One sum per output from [`accumulate`]'s pairs of halves.
#[inline]
#[target_feature(enable = "neon")]
fn pair_sums<const R: usize>(pairs: &[[[int32x4_t; 2]; 4]; R]) -> [[int32x4_t; 4]; R] {
    let mut dots = [[vdupq_n_s32(0); 4]; R];
    for (dots, pairs) in dots.iter_mut().zip(pairs) {
        for (dot, [lo, hi]) in dots.iter_mut().zip(pairs) {
            *dot = vpaddq_s32(*lo, *hi);
        }
    }
    dots
}

/// Adds `w · x` (4 outputs × 4 inputs, bytes) to the pairs of partial sums: `pair[0]` holds
/// outputs 0 and 1 as two 32-bit halves each, `pair[1]` outputs 2 and 3.
#[inline]
#[target_feature(enable = "neon")]
fn accumulate(pair: &mut [int32x4_t; 2], w: int8x16_t, x: int8x16_t) {
    pair[0] = vpadalq_s16(pair[0], vmull_s8(vget_low_s8(w), vget_low_s8(x)));
    pair[1] = vpadalq_s16(pair[1], vmull_high_s8(w, x));
}

/// Inputs `4k..4k + 4` of a block of activations, repeated four times.
#[inline]
#[target_feature(enable = "neon")]
fn broadcast4(v: &[i8; BLOCK], k: usize) -> int8x16_t {
    let [a, b, c, d] = [v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]].map(|v| v as u8);
    vreinterpretq_s8_s32(vdupq_n_s32(i32::from_le_bytes([a, b, c, d])))
}

#[inline]
#[target_feature(enable = "neon")]
fn load16(v: &[u8; 16]) -> uint8x16_t {
    // SAFETY: `v` is 16 readable bytes; `ld1` has no alignment requirement.
    unsafe { vld1q_u8(v.as_ptr()) }
}

/// Four `f16` scales as `f32` (`fcvtl`, base ARMv8 SIMD: the intrinsics that take `f16`
/// vectors are not stable in Rust 1.95).
#[inline]
#[target_feature(enable = "neon")]
fn load4h(v: &[f16; 4]) -> float32x4_t {
    // SAFETY: `v` is four readable `f16` (8 bytes; `f16` is a transparent `u16`); `ld1` has no
    // alignment requirement.
    let h = unsafe { vld1_u16(v.as_ptr().cast()) };
    let out: float32x4_t;
    // SAFETY: one `fcvtl` on two vector registers: no memory, stack or flags touched; NEON is
    // in the arm64 baseline.
    unsafe {
        asm!(
            "fcvtl {out:v}.4s, {h:v}.4h",
            out = lateout(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    out
}

#[inline]
#[target_feature(enable = "neon")]
fn store4f(dst: &mut [f32; 4], v: float32x4_t) {
    // SAFETY: `dst` is four writable `f32`; `st1` has no alignment requirement.
    unsafe { vst1q_f32(dst.as_mut_ptr(), v) }
}
