//! AVX2 and AVX-512 VNNI inner loops (both over [`super::Layout::Panels`] weights) for
//! [`super::PackedWeight::matmul`]; the activation quantizers are in `quantize`.
//!
//! The workspace denies `unsafe`; this module is an exception, for two reasons only:
//! calling a `#[target_feature]` function, which is sound once the feature was detected at run
//! time, and unaligned vector loads and stores through references to arrays of exactly the
//! vector's size (16 to 64 bytes, or a length checked just before). Everything else is safe
//! intrinsics (Rust 1.87+ lets value-only intrinsics be called safely inside a function with
//! the matching target features).
#![allow(unsafe_code)]

use super::{BLOCK, BlockFormat, PANEL, PackedWeight, PanelBlock, QuantizedRows, Values};
use half::f16;
use std::arch::x86_64::*;
use std::ops::Range;

mod quantize;
pub(super) use quantize::{avx512_available, quantize_blocks, quantize_blocks_avx2};

/// Whether this CPU runs the AVX2 kernels.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// [`super::Layout::Panels`] weights with AVX2: the same panels as the VNNI kernel, each
/// 64-byte chunk read as two halves of 8 outputs (`vpmaddubsw` and `vpmaddwd` in place of one
/// `vpdpbusd`), in tiles of up to 6 rows × 1 panel so that each load and unpacking of weights
/// serves 6 rows in prefill (more accumulators than AVX2's 16 registers: some spill to L1, and
/// still measured faster than 4 rows here, Zen 4: q4 prefill 530 against 494 tok/s, 3 rows 380). The integer sums are the VNNI kernel's, and the float steps the
/// same in the same order, so both give the same outputs bit for bit.
pub(super) fn run_panels_avx2(
    w: &PackedWeight,
    x: &QuantizedRows,
    units: Range<usize>,
    out: &mut [f32],
) {
    assert!(
        available(),
        "the AVX2 kernel was chosen on a CPU without AVX2/FMA/F16C"
    );
    // SAFETY: the assertion above found AVX2, FMA and F16C on this CPU, all `panels_avx2`
    // requires.
    unsafe { panels_avx2(w, x, units, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn panels_avx2(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let rows = x.rows;
    for p in units.clone() {
        let mut r = 0;
        while r < rows {
            let tile = Tile {
                panel: p,
                row: r,
                first: units.start,
            };
            match rows - r {
                6.. => avx2_tile::<6>(w, x, tile, out),
                5 => avx2_tile::<5>(w, x, tile, out),
                4 => avx2_tile::<4>(w, x, tile, out),
                3 => avx2_tile::<3>(w, x, tile, out),
                2 => avx2_tile::<2>(w, x, tile, out),
                _ => avx2_tile::<1>(w, x, tile, out),
            }
            r += (rows - r).min(6);
        }
    }
}

/// `R` rows × one panel (two halves of 8 outputs) into `out` (`[rows, panels * PANEL]`).
#[target_feature(enable = "avx2,fma,f16c")]
fn avx2_tile<const R: usize>(w: &PackedWeight, x: &QuantizedRows, tile: Tile, out: &mut [f32]) {
    let (scales, _) = w.scales.as_chunks::<PANEL>();
    let acc = match &w.values {
        Values::Q8Panel(q) => q8_tile_avx2::<R>(q, scales, x, tile),
        Values::Q4Panel(q) if w.format == BlockFormat::Q4_0 => {
            q4_tile_avx2::<R, true>(q, scales, &[], x, tile)
        }
        Values::Q4Panel(q) => {
            let (mins, _) = w.mins.as_chunks::<PANEL>();
            q4_tile_avx2::<R, false>(q, scales, mins, x, tile)
        }
        Values::Q8(_) | Values::Q4(_) => {
            unreachable!("the AVX2 kernel runs only `Layout::Panels` weights")
        }
    };
    let n = out.len() / x.rows;
    for (r, acc) in acc.iter().enumerate() {
        let row = &mut out[(tile.row + r) * n..][..n];
        let (panels, _) = row.as_chunks_mut::<PANEL>();
        let (halves, _) = panels[tile.panel - tile.first].as_chunks_mut::<8>();
        store8(&mut halves[0], acc[0]);
        store8(&mut halves[1], acc[1]);
    }
}

/// The float step of a block, as the VNNI kernel takes it: `acc + dot · (d · s)`.
#[target_feature(enable = "avx2,fma")]
fn scale_into(acc: __m256, dot: __m256i, d: __m256, s: f32) -> __m256 {
    _mm256_fmadd_ps(
        _mm256_cvtepi32_ps(dot),
        _mm256_mul_ps(d, _mm256_set1_ps(s)),
        acc,
    )
}

/// Q8_0 panels: the stored `q + 128` back to `q` (`xor 0x80`), then `Σ q·qx` as
/// `vpmaddubsw(|q|, sign(qx, q))` (an unsigned operand is needed; `|q| ≤ 128` and
/// `|qx| ≤ 127` keep each pair of products below `i16`'s limit), four products per output
/// and `i32` lane through `vpmaddwd`.
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_tile_avx2<const R: usize>(
    q: &[PanelBlock<{ PANEL * BLOCK }>],
    scales: &[[f16; PANEL]],
    x: &QuantizedRows,
    tile: Tile,
) -> [[__m256; 2]; R] {
    let nb = x.blocks;
    let (flip, ones) = (_mm256_set1_epi8(-128), _mm256_set1_epi16(1));
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..nb {
        let (chunks, _) = q[tile.panel * nb + b].as_chunks::<64>();
        let mut dot = [[_mm256_setzero_si256(); 2]; R];
        for (k, chunk) in chunks.iter().enumerate() {
            let (halves, _) = chunk.as_chunks::<32>();
            let signed = [
                _mm256_xor_si256(load32u(&halves[0]), flip),
                _mm256_xor_si256(load32u(&halves[1]), flip),
            ];
            let magnitude = [
                _mm256_sign_epi8(signed[0], signed[0]),
                _mm256_sign_epi8(signed[1], signed[1]),
            ];
            for (r, dot) in dot.iter_mut().enumerate() {
                let xv = _mm256_set1_epi32(dword(&x.values[(tile.row + r) * nb + b], k));
                for h in 0..2 {
                    let pairs = _mm256_maddubs_epi16(magnitude[h], _mm256_sign_epi8(xv, signed[h]));
                    dot[h] = _mm256_add_epi32(dot[h], _mm256_madd_epi16(pairs, ones));
                }
            }
        }
        let d = load8h_pair(&scales[tile.panel * nb + b]);
        for (r, acc) in acc.iter_mut().enumerate() {
            let s = x.scales[(tile.row + r) * nb + b];
            for h in 0..2 {
                acc[h] = scale_into(acc[h], dot[r][h], d[h], s);
            }
        }
    }
    acc
}

/// Q4_1 panels (`SYMMETRIC`: Q4_0): the nibbles are `vpmaddubsw`'s unsigned operand as they
/// are; a block's eight products per pair of inputs stay within `i16` (`8 · 2 · 15 · 127 =
/// 30480`), so they are added as `i16` and widened once per block.
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_tile_avx2<const R: usize, const SYMMETRIC: bool>(
    q: &[PanelBlock<{ PANEL * BLOCK / 2 }>],
    scales: &[[f16; PANEL]],
    mins: &[[f16; PANEL]],
    x: &QuantizedRows,
    tile: Tile,
) -> [[__m256; 2]; R] {
    let nb = x.blocks;
    let (nibble, ones) = (_mm256_set1_epi8(15), _mm256_set1_epi16(1));
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..nb {
        let (chunks, _) = q[tile.panel * nb + b].as_chunks::<64>();
        let mut sum16 = [[_mm256_setzero_si256(); 2]; R];
        for (k, chunk) in chunks.iter().enumerate() {
            let (halves, _) = chunk.as_chunks::<32>();
            let v = [load32u(&halves[0]), load32u(&halves[1])];
            let lo = [
                _mm256_and_si256(v[0], nibble),
                _mm256_and_si256(v[1], nibble),
            ];
            let hi = [
                _mm256_and_si256(_mm256_srli_epi16::<4>(v[0]), nibble),
                _mm256_and_si256(_mm256_srli_epi16::<4>(v[1]), nibble),
            ];
            for (r, sum16) in sum16.iter_mut().enumerate() {
                let xb = &x.values[(tile.row + r) * nb + b];
                let xlo = _mm256_set1_epi32(dword(xb, 2 * k));
                let xhi = _mm256_set1_epi32(dword(xb, 2 * k + 1));
                for h in 0..2 {
                    let both = _mm256_add_epi16(
                        _mm256_maddubs_epi16(lo[h], xlo),
                        _mm256_maddubs_epi16(hi[h], xhi),
                    );
                    sum16[h] = _mm256_add_epi16(sum16[h], both);
                }
            }
        }
        let k = tile.panel * nb + b;
        let d = load8h_pair(&scales[k]);
        let m = if SYMMETRIC { d } else { load8h_pair(&mins[k]) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let i = (tile.row + r) * nb + b;
            // The nibbles are stored `+ 8` (Q4_0): `-8 Σ qx` takes that back.
            let start = _mm256_set1_epi32(if SYMMETRIC { -8 * x.qsums[i] } else { 0 });
            for h in 0..2 {
                let dot = _mm256_add_epi32(start, _mm256_madd_epi16(sum16[r][h], ones));
                acc[h] = scale_into(acc[h], dot, d[h], x.scales[i]);
                if !SYMMETRIC {
                    acc[h] = _mm256_fmadd_ps(m[h], _mm256_set1_ps(x.sums[i]), acc[h]);
                }
            }
        }
    }
    acc
}

#[target_feature(enable = "avx2")]
fn load32u(v: &[u8; 32]) -> __m256i {
    // SAFETY: `v` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(v.as_ptr().cast()) }
}

/// Sixteen `f16` scales as two halves of eight `f32`.
#[target_feature(enable = "avx2,f16c")]
fn load8h_pair(v: &[f16; PANEL]) -> [__m256; 2] {
    let (halves, _) = v.as_chunks::<8>();
    [load8h(&halves[0]), load8h(&halves[1])]
}

/// Eight `f16` as `f32`.
#[target_feature(enable = "avx2,f16c")]
fn load8h(v: &[f16; 8]) -> __m256 {
    // SAFETY: `v` is eight readable `f16` (16 bytes, `f16` is a transparent `u16`); `loadu`
    // has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
}

#[target_feature(enable = "avx2")]
fn store8(dst: &mut [f32; 8], v: __m256) {
    // SAFETY: `dst` is eight writable `f32`; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) }
}

/// Whether this CPU runs the AVX-512 VNNI kernels.
pub(super) fn vnni_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// [`run_panels_avx2`] with AVX-512 VNNI.
pub(super) fn run_vnni(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    assert!(
        vnni_available(),
        "the AVX-512 VNNI kernel was chosen on a CPU without it"
    );
    // SAFETY: the assertion above found AVX-512F/BW/VNNI on this CPU, all `run_panels` requires.
    unsafe { run_panels(w, x, units, out) }
}

/// Tiles of up to 6 rows × 2 panels (32 outputs): each 64-byte load of weights feeds one
/// `vpdpbusd` per row (two for Q4's nibbles), each activation broadcast one per panel.
///
/// Two things the compiler does with this code decide its speed as much as the tile shape
/// (measured on a Zen 4, one thread, 128 rows, dev profile): the loop over a block's 64-byte
/// chunks is kept rolled (see [`q8_tile`]), and each format has tile functions of its own,
/// taking their rows as slices, so that the code of one does not change how the registers of
/// another are allocated (Q8_0 moved between 73 and 105 GMAC/s with the size of a function
/// the formats shared). Q4_0 went from 84 to 130 GMAC/s, Q8_0 from 75 to 130, Q4_1 from 74
/// to 110.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn run_panels(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let (scales, _) = w.scales.as_chunks::<PANEL>();
    match &w.values {
        Values::Q8Panel(q) => for_tiles(x.rows, units, 6, |tile, pair, n| {
            by_shape!(q8_tile, [], pair, n, (q, scales, x, tile, out))
        }),
        Values::Q4Panel(q) if w.format == BlockFormat::Q4_0 => {
            for_tiles(x.rows, units, 6, |tile, pair, n| {
                by_shape!(q4_tile, [true], pair, n, (q, scales, &[], x, tile, out))
            })
        }
        Values::Q4Panel(q) => {
            let (mins, _) = w.mins.as_chunks::<PANEL>();
            for_tiles(x.rows, units, 6, |tile, pair, n| {
                by_shape!(q4_tile, [false], pair, n, (q, scales, mins, x, tile, out))
            })
        }
        Values::Q8(_) | Values::Q4(_) => {
            unreachable!("the VNNI kernel runs only `Layout::Panels` weights")
        }
    }
}

/// Calls `tile(tile, pair, rows)` over the units' panels (in pairs where there are two and
/// more than one row) and the rows in runs of at most `most`.
fn for_tiles(
    rows: usize,
    units: Range<usize>,
    most: usize,
    mut tile: impl FnMut(Tile, bool, usize),
) {
    let mut p = units.start;
    while p < units.end {
        let pair = rows > 1 && units.end - p >= 2;
        let mut r = 0;
        while r < rows {
            let n = (rows - r).min(most);
            let at = Tile {
                panel: p,
                row: r,
                first: units.start,
            };
            tile(at, pair, n);
            r += n;
        }
        p += if pair { 2 } else { 1 };
    }
}

/// `f::<R, C, extra…>(args…)` for `R` = `rows` (1 to 6) and `C` = 2 panels if `pair`, else 1.
macro_rules! by_shape {
    ($f:ident, [$($extra:tt),*], $pair:expr, $rows:expr, ($($arg:expr),*)) => {
        match ($pair, $rows) {
            (true, 6..) => $f::<6, 2 $(, $extra)*>($($arg),*),
            (true, 5) => $f::<5, 2 $(, $extra)*>($($arg),*),
            (true, 4) => $f::<4, 2 $(, $extra)*>($($arg),*),
            (true, 3) => $f::<3, 2 $(, $extra)*>($($arg),*),
            (true, 2) => $f::<2, 2 $(, $extra)*>($($arg),*),
            (true, _) => $f::<1, 2 $(, $extra)*>($($arg),*),
            (false, 6..) => $f::<6, 1 $(, $extra)*>($($arg),*),
            (false, 5) => $f::<5, 1 $(, $extra)*>($($arg),*),
            (false, 4) => $f::<4, 1 $(, $extra)*>($($arg),*),
            (false, 3) => $f::<3, 1 $(, $extra)*>($($arg),*),
            (false, 2) => $f::<2, 1 $(, $extra)*>($($arg),*),
            (false, _) => $f::<1, 1 $(, $extra)*>($($arg),*),
        }
    };
}
use by_shape;

/// Where a tile starts: its first panel and row, and the first panel of the task's output.
#[derive(Clone, Copy)]
struct Tile {
    panel: usize,
    row: usize,
    first: usize,
}

/// A tile's sums into `out` (`[rows, panels * PANEL]`, from panel `tile.first`), row-major
/// within the task's chunk.
#[target_feature(enable = "avx512f")]
fn store_tile<const R: usize, const C: usize>(
    acc: &[[__m512; C]; R],
    rows: usize,
    tile: Tile,
    out: &mut [f32],
) {
    let n = out.len() / rows;
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
    out: &mut [f32],
) {
    let nb = x.blocks;
    let xr = TileRows::<R>::new(x, tile.row);
    let wq: [_; C] = std::array::from_fn(|c| &q[(tile.panel + c) * nb..][..nb]);
    let wd: [_; C] = std::array::from_fn(|c| &scales[(tile.panel + c) * nb..][..nb]);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for b in 0..nb {
        let mut dot = [[_mm512_setzero_si512(); C]; R];
        for (r, dot) in dot.iter_mut().enumerate() {
            // The weights are stored `+ 128`: start at `-128 Σ qx` to take that back (exact:
            // `|Σ qx| ≤ 32 · 127`).
            *dot = [_mm512_set1_epi32(xr.qsums[r][b].wrapping_mul(-128)); C];
        }
        // Not unrolled (`black_box` hides the trip count): unrolled, the compiler computes
        // every broadcast of the block's activations up front and spills them to the stack,
        // which measured 20-50 % slower here than this rolled loop.
        for k in 0..std::hint::black_box(BLOCK / 4) {
            let mut wv = [_mm512_setzero_si512(); C];
            for (c, wv) in wv.iter_mut().enumerate() {
                let (chunks, _) = wq[c][b].as_chunks::<64>();
                *wv = load64(&chunks[k]);
            }
            for (r, dot) in dot.iter_mut().enumerate() {
                let xv = _mm512_set1_epi32(dword(&xr.values[r][b], k));
                for (dot, &wv) in dot.iter_mut().zip(&wv) {
                    *dot = _mm512_dpbusd_epi32(*dot, wv, xv);
                }
            }
        }
        for c in 0..C {
            let d = load16h(&wd[c][b]);
            for r in 0..R {
                let s = _mm512_set1_ps(xr.scales[r][b]);
                let dot = _mm512_cvtepi32_ps(dot[r][c]);
                acc[r][c] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, s), acc[r][c]);
            }
        }
    }
    store_tile(&acc, x.rows, tile, out);
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
    out: &mut [f32],
) {
    let nb = x.blocks;
    let xr = TileRows::<R>::new(x, tile.row);
    let wq: [_; C] = std::array::from_fn(|c| &q[(tile.panel + c) * nb..][..nb]);
    let wd: [_; C] = std::array::from_fn(|c| &scales[(tile.panel + c) * nb..][..nb]);
    let wm: [_; C] = std::array::from_fn(|c| {
        if SYMMETRIC {
            &[][..]
        } else {
            &mins[(tile.panel + c) * nb..][..nb]
        }
    });
    let nibble = _mm512_set1_epi8(15);
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    for b in 0..nb {
        let mut dot = [[_mm512_setzero_si512(); C]; R];
        if SYMMETRIC {
            for (r, dot) in dot.iter_mut().enumerate() {
                // The nibbles are stored `+ 8`: start at `-8 Σ qx` to take that back (exact).
                *dot = [_mm512_set1_epi32(xr.qsums[r][b].wrapping_mul(-8)); C];
            }
        }
        // Not unrolled, as in `q8_tile`.
        for k in 0..std::hint::black_box(BLOCK / 8) {
            let mut lo = [_mm512_setzero_si512(); C];
            let mut hi = [_mm512_setzero_si512(); C];
            for c in 0..C {
                let (chunks, _) = wq[c][b].as_chunks::<64>();
                let v = load64(&chunks[k]);
                lo[c] = _mm512_and_si512(v, nibble);
                hi[c] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
            }
            for (r, dot) in dot.iter_mut().enumerate() {
                let xb = &xr.values[r][b];
                let (xlo, xhi) = (dword(xb, 2 * k), dword(xb, 2 * k + 1));
                let (xlo, xhi) = (_mm512_set1_epi32(xlo), _mm512_set1_epi32(xhi));
                for c in 0..C {
                    dot[c] = _mm512_dpbusd_epi32(dot[c], lo[c], xlo);
                    dot[c] = _mm512_dpbusd_epi32(dot[c], hi[c], xhi);
                }
            }
        }
        for c in 0..C {
            let d = load16h(&wd[c][b]);
            for r in 0..R {
                let s = _mm512_set1_ps(xr.scales[r][b]);
                let dot = _mm512_cvtepi32_ps(dot[r][c]);
                acc[r][c] = _mm512_fmadd_ps(dot, _mm512_mul_ps(d, s), acc[r][c]);
                if !SYMMETRIC {
                    let m = load16h(&wm[c][b]);
                    acc[r][c] = _mm512_fmadd_ps(m, _mm512_set1_ps(xr.sums[r][b]), acc[r][c]);
                }
            }
        }
    }
    store_tile(&acc, x.rows, tile, out);
}

/// A tile's `R` rows of activations, each a slice of the row's `x.blocks` blocks, taken once
/// per tile so that the block loop indexes them without arithmetic of its own.
struct TileRows<'a, const R: usize> {
    values: [&'a [[i8; BLOCK]]; R],
    scales: [&'a [f32]; R],
    sums: [&'a [f32]; R],
    qsums: [&'a [i32]; R],
}

impl<'a, const R: usize> TileRows<'a, R> {
    fn new(x: &'a QuantizedRows, row: usize) -> Self {
        let nb = x.blocks;
        let at = |r: usize| (row + r) * nb..(row + r + 1) * nb;
        Self {
            values: std::array::from_fn(|r| &x.values[at(r)]),
            scales: std::array::from_fn(|r| &x.scales[at(r)]),
            sums: std::array::from_fn(|r| &x.sums[at(r)]),
            qsums: std::array::from_fn(|r| &x.qsums[at(r)]),
        }
    }
}

/// Inputs `4k..4k + 4` of a block of activations as one little-endian `i32`.
fn dword(v: &[i8; BLOCK], k: usize) -> i32 {
    let (dwords, _) = v.as_chunks::<4>();
    i32::from_le_bytes(dwords[k].map(|b| b.to_le_bytes()[0]))
}

#[target_feature(enable = "avx512f")]
fn load64(v: &[u8; 64]) -> __m512i {
    // SAFETY: `v` is 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(v.as_ptr().cast()) }
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
