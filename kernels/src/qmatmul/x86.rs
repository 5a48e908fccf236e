//! AVX2 and AVX-512 VNNI inner loops for [`super::PackedWeight::matmul`], and the AVX-512
//! activation quantizer.
//!
//! The workspace denies `unsafe`; this module is the one exception, for two reasons only:
//! calling a `#[target_feature]` function, which is sound once the feature was detected at run
//! time, and unaligned vector loads and stores through references to arrays of exactly the
//! vector's size (16 to 64 bytes, or a length checked just before). Everything else is safe
//! intrinsics (Rust 1.87+ lets value-only intrinsics be called safely inside a function with
//! the matching target features).
#![allow(unsafe_code)]

use super::{
    ActBlock, BLOCK, BlockFormat, Group, LANES, PANEL, PackedWeight, PanelBlock, QuantizedRows,
    Values,
};
use half::f16;
use std::arch::x86_64::*;
use std::ops::Range;

/// Whether this CPU runs the AVX2 kernels.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// Computes the outputs of `groups` for every row of `x` into `out` (`[groups * LANES, rows]`).
///
/// (No closures below: a closure does not inherit its function's target features, so the
/// intrinsics it calls would not be inlined.)
pub(super) fn run(w: &PackedWeight, x: &QuantizedRows, groups: Range<usize>, out: &mut [f32]) {
    assert!(
        available(),
        "the AVX2 kernel was chosen on a CPU without AVX2/FMA/F16C"
    );
    // SAFETY: the assertion above found AVX2, FMA and F16C on this CPU, all `run_avx2`
    // requires.
    unsafe { run_avx2(w, x, groups, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn run_avx2(w: &PackedWeight, x: &QuantizedRows, groups: Range<usize>, out: &mut [f32]) {
    let (nb, rows) = (x.blocks, x.rows);
    for (i, g) in groups.enumerate() {
        let blocks = g * nb..(g + 1) * nb;
        let (ws, _) = w.scales[blocks.start * LANES..blocks.end * LANES].as_chunks::<LANES>();
        // Rows innermost: the group's weights stay in L1 while every row reads them.
        for r in 0..rows {
            let row = r * nb..(r + 1) * nb;
            let (xq, xs) = (&x.values[row.clone()], &x.scales[row.clone()]);
            let y = match &w.values {
                Values::Q8(q) => q8_group(&q[blocks.clone()], ws, xq, xs),
                Values::Q4(q) if w.format == BlockFormat::Q4_0 => {
                    q4_0_group(&q[blocks.clone()], ws, xq, xs, &x.qsums[row])
                }
                Values::Q4(q) => {
                    let (mins, _) =
                        w.mins[blocks.start * LANES..blocks.end * LANES].as_chunks::<LANES>();
                    q4_group(&q[blocks.clone()], ws, mins, xq, xs, &x.sums[row])
                }
                Values::Q8Panel(_) | Values::Q4Panel(_) => {
                    unreachable!("the AVX2 kernel runs only `Layout::Lanes` weights")
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

/// Four `f16` scales as `f32`.
#[target_feature(enable = "avx2,f16c")]
fn load4h(v: &Group<f16>) -> __m128 {
    // SAFETY: `v` is four readable `f16` (8 bytes, `f16` is a transparent `u16`); `loadl` reads
    // exactly 8 bytes and has no alignment requirement.
    _mm_cvtph_ps(unsafe { _mm_loadl_epi64(v.as_ptr().cast()) })
}

/// Four `f16` scales as an array of `f32`.
#[target_feature(enable = "avx2,f16c")]
fn scales4(v: &Group<f16>) -> Group<f32> {
    let mut out = [0f32; LANES];
    store4(&mut out, load4h(v));
    out
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
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_group(
    wq: &[Group<[i8; BLOCK]>],
    ws: &[Group<f16>],
    xq: &[[i8; BLOCK]],
    xs: &[f32],
) -> Group<f32> {
    let mut acc = [_mm256_setzero_ps(); LANES];
    for (((w4, d4), xb), &s) in wq.iter().zip(ws).zip(xq).zip(xs) {
        let d4 = scales4(d4);
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
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_group(
    wq: &[Group<[u8; BLOCK / 2]>],
    ws: &[Group<f16>],
    mins: &[Group<f16>],
    xq: &[[i8; BLOCK]],
    xs: &[f32],
    sums: &[f32],
) -> Group<f32> {
    let mut acc = [_mm256_setzero_ps(); LANES];
    let mut shift = _mm_setzero_ps();
    for ((((w4, d4), m4), xb), (&s, &sum)) in
        wq.iter().zip(ws).zip(mins).zip(xq).zip(xs.iter().zip(sums))
    {
        let d4 = scales4(d4);
        let xv = load32(xb);
        for lane in 0..LANES {
            let scale = _mm256_set1_ps(d4[lane] * s);
            acc[lane] = _mm256_fmadd_ps(scale, dot_u8i8(unpack_q4(&w4[lane]), xv), acc[lane]);
        }
        shift = _mm_fmadd_ps(load4h(m4), _mm_set1_ps(sum), shift);
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

/// The four outputs of a Q4_0 group for one row: `Σ_b d_b s_b (Σ q·qx - 8 Σ qx)` (the
/// nibbles `q` are stored `+ 8`).
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_group(
    wq: &[Group<[u8; BLOCK / 2]>],
    ws: &[Group<f16>],
    xq: &[[i8; BLOCK]],
    xs: &[f32],
    qsums: &[i32],
) -> Group<f32> {
    let mut acc = [_mm256_setzero_ps(); LANES];
    let mut shift = _mm_setzero_ps();
    for (((w4, d4), xb), (&s, &qsum)) in wq.iter().zip(ws).zip(xq).zip(xs.iter().zip(qsums)) {
        let d = load4h(d4);
        let d4 = scales4(d4);
        let xv = load32(xb);
        for lane in 0..LANES {
            let scale = _mm256_set1_ps(d4[lane] * s);
            acc[lane] = _mm256_fmadd_ps(scale, dot_u8i8(unpack_q4(&w4[lane]), xv), acc[lane]);
        }
        shift = _mm_fmadd_ps(d, _mm_set1_ps(s * (-8 * qsum) as f32), shift);
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

/// Whether this CPU runs the AVX-512 VNNI kernels.
pub(super) fn vnni_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// [`run`] for [`super::Layout::Panels`] weights, with AVX-512 VNNI.
pub(super) fn run_vnni(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    assert!(
        vnni_available(),
        "the AVX-512 VNNI kernel was chosen on a CPU without it"
    );
    // SAFETY: the assertion above found AVX-512F/BW/VNNI on this CPU, all `run_panels` requires.
    unsafe { run_panels(w, x, units, out) }
}

/// Tiles of up to 4 rows × 2 panels (32 outputs): each 64-byte load of weights feeds one
/// `vpdpbusd` per row, each activation broadcast one per panel.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn run_panels(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let rows = x.rows;
    let mut p = units.start;
    while p < units.end {
        let pair = x.rows > 1 && units.end - p >= 2;
        let mut r = 0;
        while r < rows {
            let tile = Tile {
                panel: p,
                row: r,
                first: units.start,
            };
            match (pair, rows - r) {
                (true, 6..) => panel_tile::<6, 2>(w, x, tile, out),
                (true, 5) => panel_tile::<5, 2>(w, x, tile, out),
                (true, 4) => panel_tile::<4, 2>(w, x, tile, out),
                (true, 3) => panel_tile::<3, 2>(w, x, tile, out),
                (true, 2) => panel_tile::<2, 2>(w, x, tile, out),
                (true, _) => panel_tile::<1, 2>(w, x, tile, out),
                (false, 6..) => panel_tile::<6, 1>(w, x, tile, out),
                (false, 5) => panel_tile::<5, 1>(w, x, tile, out),
                (false, 4) => panel_tile::<4, 1>(w, x, tile, out),
                (false, 3) => panel_tile::<3, 1>(w, x, tile, out),
                (false, 2) => panel_tile::<2, 1>(w, x, tile, out),
                (false, _) => panel_tile::<1, 1>(w, x, tile, out),
            }
            r += (rows - r).min(6);
        }
        p += if pair { 2 } else { 1 };
    }
}

/// Where a tile starts: its first panel and row, and the first panel of the task's output.
#[derive(Clone, Copy)]
struct Tile {
    panel: usize,
    row: usize,
    first: usize,
}

/// `R` rows × `C` panels into `out` (`[rows, panels * PANEL]`, from panel `tile.first`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn panel_tile<const R: usize, const C: usize>(
    w: &PackedWeight,
    x: &QuantizedRows,
    tile: Tile,
    out: &mut [f32],
) {
    let (scales, _) = w.scales.as_chunks::<PANEL>();
    let acc = match &w.values {
        Values::Q8Panel(q) => q8_tile::<R, C>(q, scales, x, tile),
        Values::Q4Panel(q) if w.format == BlockFormat::Q4_0 => {
            q4_tile::<R, C, true>(q, scales, &[], x, tile)
        }
        Values::Q4Panel(q) => {
            let (mins, _) = w.mins.as_chunks::<PANEL>();
            q4_tile::<R, C, false>(q, scales, mins, x, tile)
        }
        Values::Q8(_) | Values::Q4(_) => {
            unreachable!("the VNNI kernel runs only `Layout::Panels` weights")
        }
    };
    // Row-major within the task's chunk: `[rows, panels * PANEL]`.
    let n = out.len() / x.rows;
    for (r, acc) in acc.iter().enumerate() {
        let row = &mut out[(tile.row + r) * n..][..n];
        let (panels, _) = row.as_chunks_mut::<PANEL>();
        for (c, &v) in acc.iter().enumerate() {
            store16(&mut panels[tile.panel + c - tile.first], v);
        }
    }
}

/// Q8_0 panels: `Σ_b d_b s_b (Σ (q + 128) qx - 128 Σ qx)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn q8_tile<const R: usize, const C: usize>(
    q: &[PanelBlock<{ PANEL * BLOCK }>],
    scales: &[[f16; PANEL]],
    x: &QuantizedRows,
    tile: Tile,
) -> [[__m512; C]; R] {
    let nb = x.blocks;
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for b in 0..nb {
        let mut dot = [[_mm512_setzero_si512(); C]; R];
        for (r, dot) in dot.iter_mut().enumerate() {
            // The weights are stored `+ 128`: start at `-128 Σ qx` to take that back.
            *dot = [_mm512_set1_epi32(-128 * x.qsums[(tile.row + r) * nb + b]); C];
        }
        for k in 0..BLOCK / 4 {
            let mut xv = [_mm512_setzero_si512(); R];
            for (r, xv) in xv.iter_mut().enumerate() {
                *xv = _mm512_set1_epi32(dword(&x.values[(tile.row + r) * nb + b], k));
            }
            for c in 0..C {
                let (chunks, _) = q[(tile.panel + c) * nb + b].as_chunks::<64>();
                let wv = load64(&chunks[k]);
                for r in 0..R {
                    dot[r][c] = _mm512_dpbusd_epi32(dot[r][c], wv, xv[r]);
                }
            }
        }
        for c in 0..C {
            let d = load16h(&scales[(tile.panel + c) * nb + b]);
            for r in 0..R {
                let s = _mm512_set1_ps(x.scales[(tile.row + r) * nb + b]);
                let dot = _mm512_cvtepi32_ps(dot[r][c]);
                acc[r][c] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, s), acc[r][c]);
            }
        }
    }
    acc
}

/// Q4_1 panels: `Σ_b (d_b s_b Σ q·qx + m_b Σ x_b)`; the nibbles are `vpdpbusd`'s unsigned
/// operand as they are. Q4_0 panels (`SYMMETRIC`, no minimums): `Σ_b d_b s_b (Σ q·qx - 8 Σ qx)`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn q4_tile<const R: usize, const C: usize, const SYMMETRIC: bool>(
    q: &[PanelBlock<{ PANEL * BLOCK / 2 }>],
    scales: &[[f16; PANEL]],
    mins: &[[f16; PANEL]],
    x: &QuantizedRows,
    tile: Tile,
) -> [[__m512; C]; R] {
    let nb = x.blocks;
    let nibble = _mm512_set1_epi8(15);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for b in 0..nb {
        let mut dot = [[_mm512_setzero_si512(); C]; R];
        if SYMMETRIC {
            for (r, dot) in dot.iter_mut().enumerate() {
                // The nibbles are stored `+ 8`: start at `-8 Σ qx` to take that back.
                *dot = [_mm512_set1_epi32(-8 * x.qsums[(tile.row + r) * nb + b]); C];
            }
        }
        for k in 0..BLOCK / 8 {
            let mut lo = [_mm512_setzero_si512(); R];
            let mut hi = [_mm512_setzero_si512(); R];
            for r in 0..R {
                let xb = &x.values[(tile.row + r) * nb + b];
                lo[r] = _mm512_set1_epi32(dword(xb, 2 * k));
                hi[r] = _mm512_set1_epi32(dword(xb, 2 * k + 1));
            }
            for c in 0..C {
                let (chunks, _) = q[(tile.panel + c) * nb + b].as_chunks::<64>();
                let v = load64(&chunks[k]);
                let wlo = _mm512_and_si512(v, nibble);
                let whi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                for r in 0..R {
                    dot[r][c] = _mm512_dpbusd_epi32(dot[r][c], wlo, lo[r]);
                    dot[r][c] = _mm512_dpbusd_epi32(dot[r][c], whi, hi[r]);
                }
            }
        }
        for c in 0..C {
            let k = (tile.panel + c) * nb + b;
            let d = load16h(&scales[k]);
            for r in 0..R {
                let i = (tile.row + r) * nb + b;
                let s = _mm512_set1_ps(x.scales[i]);
                let dot = _mm512_cvtepi32_ps(dot[r][c]);
                acc[r][c] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, s), acc[r][c]);
                if !SYMMETRIC {
                    let m = load16h(&mins[k]);
                    acc[r][c] = _mm512_fmadd_ps(m, _mm512_set1_ps(x.sums[i]), acc[r][c]);
                }
            }
        }
    }
    acc
}

/// Inputs `4k..4k + 4` of a block of activations as one little-endian `i32`.
fn dword(v: &[i8; BLOCK], k: usize) -> i32 {
    let b = |i: usize| v[4 * k + i].to_le_bytes()[0];
    i32::from_le_bytes([b(0), b(1), b(2), b(3)])
}

#[target_feature(enable = "avx512f")]
fn load64(v: &[u8; 64]) -> __m512i {
    // SAFETY: `v` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f")]
fn load16f(v: &[f32; PANEL]) -> __m512 {
    // SAFETY: `v` is sixteen readable `f32`; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(v.as_ptr()) }
}

/// Sixteen `f16` scales as `f32`.
#[target_feature(enable = "avx512f")]
fn load16h(v: &[f16; PANEL]) -> __m512 {
    // SAFETY: `v` is sixteen readable `f16` (32 bytes, `f16` is a transparent `u16`); `loadu`
    // has no alignment requirement.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(v.as_ptr().cast()) })
}

#[target_feature(enable = "avx512f")]
fn store16(dst: &mut [f32; PANEL], v: __m512) {
    // SAFETY: `dst` is sixteen writable `f32`; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
}

/// Whether this CPU runs the AVX-512 activation quantizer.
pub(super) fn avx512_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// [`ActBlock::new`] for every block, with AVX-512: the same values and scales (the rounding
/// is the same round-to-nearest-even), the float sums in another order.
pub(super) fn quantize_blocks(blocks: &[[f32; BLOCK]]) -> Vec<ActBlock> {
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
            sum: _mm512_reduce_add_ps(_mm512_add_ps(a, b)),
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
