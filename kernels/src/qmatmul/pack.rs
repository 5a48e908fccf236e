//! Building a [`PackedWeight`]: quantizing float weights, or taking a GGUF tensor's blocks
//! as they are stored (copied where the formats agree, re-quantized block by block
//! otherwise), so that loading a model never needs a float copy of a weight.

use super::arena::ArenaVec;
use super::{
    BLOCK, BlockFormat, LANES, Layout, PANEL, PackError, PackedWeight, PanelBlock, Q4_PANEL_BYTES,
    Q8_PANEL_BYTES, QBlock, Values, quantize_block,
};
use crate::gguf::GgmlType;
use half::f16;

impl PackedWeight {
    /// Quantizes `w`, a row-major `[d_in, d_out]` weight (Burn's `Linear` layout), to `format`,
    /// in the [`Layout`] of this CPU's fastest kernel.
    ///
    /// Q8_0 takes `d = max|w| / 127` per block; Q4_1 puts the block's minimum and maximum on
    /// the ends of the 16-step grid, so weights that came from a Q4_1 file come back exactly.
    pub fn quantize(
        format: BlockFormat,
        w: &[f32],
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, PackError> {
        Self::quantize_in(format, Layout::best(), w, d_in, d_out)
    }

    /// [`PackedWeight::quantize`] into a given layout.
    pub fn quantize_in(
        format: BlockFormat,
        layout: Layout,
        w: &[f32],
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, PackError> {
        check_shape(d_in, d_out)?;
        if w.len() != d_in * d_out {
            return Err(PackError::Length {
                len: w.len(),
                d_in,
                d_out,
            });
        }
        Self::build(format, layout, d_in, d_out, |o, b| {
            let x: [f32; BLOCK] = std::array::from_fn(|i| w[(b * BLOCK + i) * d_out + o]);
            quantize_block(format, &x)
        })
    }

    /// Packs a weight stored as GGML rows — `bytes` of type `ty`, `d_out` rows of `d_in`
    /// values, GGUF's layout of a `[d_in, d_out]` projection — one block at a time, without a
    /// float copy of the weight. Blocks already in `format` (Q8_0, Q4_1 and Q4_0 into
    /// themselves) are copied exactly, Q4_0 into Q4_1 keeps its values (`m = -8 d`, equal up to float
    /// rounding); any other block is decoded to its 32 floats and quantized as
    /// [`PackedWeight::quantize`] does.
    pub fn from_ggml_rows(
        format: BlockFormat,
        ty: GgmlType,
        bytes: &[u8],
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, PackError> {
        Self::from_ggml_rows_in(format, Layout::best(), ty, bytes, d_in, d_out)
    }

    /// [`PackedWeight::from_ggml_rows`] into a given layout.
    pub fn from_ggml_rows_in(
        format: BlockFormat,
        layout: Layout,
        ty: GgmlType,
        bytes: &[u8],
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, PackError> {
        check_shape(d_in, d_out)?;
        let Some((elems, block_bytes)) = ty.block_layout().filter(|_| ty.decodable()) else {
            return Err(PackError::Type { ty });
        };
        let (elems, block_bytes) = (elems as usize, block_bytes as usize);
        let expected = (d_in * d_out).div_ceil(elems) * block_bytes;
        if elems > BLOCK && bytes.len() == expected && d_in.is_multiple_of(elems) {
            // Blocks of 256 (the K-quants): an output's row is decoded when `build` (which goes
            // output by output) asks for its first block, then its blocks of 32 quantized to
            // `format` as any other decoded data is: one row of floats at a time.
            let row_bytes = d_in / elems * block_bytes;
            let mut row = vec![0f32; d_in];
            let mut decoded = None;
            return Self::build(format, layout, d_in, d_out, |o, b| {
                if decoded != Some(o) {
                    // The sizes were checked above and the type decodes: cannot fail (zeros if
                    // it did).
                    let at = o * row_bytes;
                    let _ = crate::dequant::dequantize(ty, &bytes[at..at + row_bytes], &mut row);
                    decoded = Some(o);
                }
                let (blocks, _) = row.as_chunks::<BLOCK>();
                quantize_block(format, &blocks[b])
            });
        }
        if bytes.len() != expected || !BLOCK.is_multiple_of(elems) {
            return Err(PackError::Bytes {
                ty,
                len: bytes.len(),
                d_in,
                d_out,
            });
        }
        // Bytes of the 32 stored values of one block.
        let span = BLOCK / elems * block_bytes;
        // The formats the kernels run from, in the layout of the SIMD kernels: plain copies.
        match (ty, format, layout) {
            (GgmlType::Q8_0, BlockFormat::Q8_0, Layout::Panels) => {
                return Ok(copy_panels(
                    format,
                    bytes,
                    span,
                    [d_in, d_out],
                    128,
                    copy_q8_0_block,
                    Values::Q8Panel,
                ));
            }
            (GgmlType::Q4_1, BlockFormat::Q4_1, Layout::Panels) => {
                return Ok(copy_panels(
                    format,
                    bytes,
                    span,
                    [d_in, d_out],
                    0,
                    copy_q4_1_block,
                    Values::Q4Panel,
                ));
            }
            (GgmlType::Q4_0, BlockFormat::Q4_0, Layout::Panels) => {
                return Ok(copy_panels(
                    format,
                    bytes,
                    span,
                    [d_in, d_out],
                    0x88,
                    copy_q4_0_block,
                    Values::Q4Panel,
                ));
            }
            _ => {}
        }
        let blocks = d_in / BLOCK;
        Self::build(format, layout, d_in, d_out, |o, b| {
            let at = (o * blocks + b) * span;
            let raw = &bytes[at..at + span];
            let h = |i: usize| half::f16::from_le_bytes([raw[i], raw[i + 1]]).to_f32();
            match (ty, format) {
                (GgmlType::Q8_0, BlockFormat::Q8_0) => QBlock {
                    d: h(0),
                    m: 0.0,
                    q: std::array::from_fn(|i| i32::from(raw[2 + i] as i8)),
                },
                (GgmlType::Q4_0, BlockFormat::Q4_0) => QBlock {
                    d: h(0),
                    m: 0.0,
                    q: std::array::from_fn(|i| {
                        let byte = raw[2 + i % 16];
                        i32::from(if i < 16 { byte & 15 } else { byte >> 4 }) - 8
                    }),
                },
                (GgmlType::Q4_1 | GgmlType::Q4_0, BlockFormat::Q4_1) => {
                    let (d, nibbles) = (h(0), if ty == GgmlType::Q4_1 { 4 } else { 2 });
                    let m = if ty == GgmlType::Q4_1 { h(2) } else { -8.0 * d };
                    QBlock {
                        d,
                        m,
                        q: std::array::from_fn(|i| {
                            let byte = raw[nibbles + i % 16];
                            i32::from(if i < 16 { byte & 15 } else { byte >> 4 })
                        }),
                    }
                }
                _ => {
                    let mut x = [0f32; BLOCK];
                    // The sizes were checked above, so decoding cannot fail; zeros if it did.
                    let _ = crate::dequant::dequantize(ty, raw, &mut x);
                    quantize_block(format, &x)
                }
            }
        })
    }

    /// Allocates the blocks of a `[d_in, d_out]` weight and fills them from `block(o, b)`, the
    /// quantized input block `b` of output `o` (called for `o < d_out`; the padding outputs of
    /// the last unit are zeros).
    fn build(
        format: BlockFormat,
        layout: Layout,
        d_in: usize,
        d_out: usize,
        mut block_of: impl FnMut(usize, usize) -> QBlock,
    ) -> Result<Self, PackError> {
        check_shape(d_in, d_out)?;
        let blocks = d_in / BLOCK;
        let width = layout.width();
        let units = d_out.div_ceil(width);
        let n = units * blocks;
        let mut scales = ArenaVec::filled(n * width, f16::ZERO);
        let mut mins = match format {
            BlockFormat::Q4_1 => ArenaVec::filled(n * width, f16::ZERO),
            BlockFormat::Q8_0 | BlockFormat::Q4_0 => ArenaVec::default(),
        };
        let mut values = match (format, layout) {
            (BlockFormat::Q8_0, Layout::Lanes) => {
                Values::Q8(ArenaVec::filled(n, [[0; BLOCK]; LANES]))
            }
            (BlockFormat::Q4_1 | BlockFormat::Q4_0, Layout::Lanes) => {
                Values::Q4(ArenaVec::filled(n, [[0; BLOCK / 2]; LANES]))
            }
            (BlockFormat::Q8_0, Layout::Panels) => {
                Values::Q8Panel(ArenaVec::filled(n, PanelBlock([0; Q8_PANEL_BYTES])))
            }
            (BlockFormat::Q4_1 | BlockFormat::Q4_0, Layout::Panels) => {
                Values::Q4Panel(ArenaVec::filled(n, PanelBlock([0; Q4_PANEL_BYTES])))
            }
        };
        // Q4_0 stores `q + 8` (a nibble); the others their values as they are.
        let zero = if format == BlockFormat::Q4_0 { 8 } else { 0 };
        for o in 0..units * width {
            let (u, j) = (o / width, o % width);
            for b in 0..blocks {
                let block = if o < d_out {
                    block_of(o, b)
                } else {
                    quantize_block(format, &[0.0; BLOCK])
                };
                let k = u * blocks + b;
                scales[k * width + j] = f16::from_f32(block.d);
                if let Some(m) = mins.get_mut(k * width + j) {
                    *m = f16::from_f32(block.m);
                }
                values.store(k, j, &block.q.map(|q| q + zero));
            }
        }
        Ok(Self {
            d_in,
            d_out,
            format,
            layout,
            values,
            scales,
            mins,
        })
    }
}

/// A weight packs when its inputs are a whole, non-zero number of blocks.
fn check_shape(d_in: usize, d_out: usize) -> Result<(), PackError> {
    if d_in == 0 || !d_in.is_multiple_of(BLOCK) {
        return Err(PackError::Shape { d_in, d_out });
    }
    Ok(())
}

#[inline]
fn f16_at(raw: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([raw[at], raw[at + 1]])
}

/// Copies one stored block into output `j` of a panel block; returns its scale and minimum.
type CopyBlock<const N: usize> = fn(&[u8], &mut [u8; N], usize) -> (f16, f16);

/// A [`Layout::Panels`] weight whose stored blocks (`span` bytes each, GGUF rows of `d_in`
/// values) are already in `format`: `copy` writes block `raw` into output `j` of its panel block
/// and returns the block's scale and minimum. Padding outputs of the last panel hold `fill`
/// (the byte of a zero value) with a zero scale, as [`PackedWeight::quantize`] leaves them.
fn copy_panels<const N: usize>(
    format: BlockFormat,
    bytes: &[u8],
    span: usize,
    [d_in, d_out]: [usize; 2],
    fill: u8,
    copy: CopyBlock<N>,
    wrap: fn(ArenaVec<PanelBlock<N>>) -> Values,
) -> PackedWeight {
    let blocks = d_in / BLOCK;
    let n = d_out.div_ceil(PANEL) * blocks;
    let mut values = ArenaVec::filled(n, PanelBlock([fill; N]));
    let mut scales = ArenaVec::filled(n * PANEL, f16::ZERO);
    let mut mins = match format {
        BlockFormat::Q4_1 => ArenaVec::filled(n * PANEL, f16::ZERO),
        BlockFormat::Q8_0 | BlockFormat::Q4_0 => ArenaVec::default(),
    };
    for (o, row) in bytes.chunks_exact(blocks * span).enumerate() {
        let (u, j) = (o / PANEL, o % PANEL);
        for (b, raw) in row.chunks_exact(span).enumerate() {
            let k = u * blocks + b;
            let (d, m) = copy(raw, &mut values[k], j);
            scales[k * PANEL + j] = d;
            if let Some(slot) = mins.get_mut(k * PANEL + j) {
                *slot = m;
            }
        }
    }
    PackedWeight {
        d_in,
        d_out,
        format,
        layout: Layout::Panels,
        values: wrap(values),
        scales,
        mins,
    }
}

/// A Q8_0 block (f16 scale, 32 signed bytes) into output `j` of a panel block: byte
/// `64 c + 4 j + t` is `q + 128` of input `4 c + t` (the sign bit flipped).
fn copy_q8_0_block(raw: &[u8], out: &mut [u8; Q8_PANEL_BYTES], j: usize) -> (f16, f16) {
    for (c, q) in raw[2..2 + BLOCK].chunks_exact(4).enumerate() {
        let at = c * 64 + j * 4;
        let four = u32::from_ne_bytes([q[0], q[1], q[2], q[3]]) ^ 0x8080_8080;
        out[at..at + 4].copy_from_slice(&four.to_ne_bytes());
    }
    (f16_at(raw, 0), f16::ZERO)
}

/// A Q4_1 block (f16 scale and minimum; byte `i` holds input `i` low and `i + 16` high) into
/// output `j` of a panel block: byte `64 c + 4 j + t` holds input `8 c + t` low and
/// `8 c + 4 + t` high.
fn copy_q4_1_block(raw: &[u8], out: &mut [u8; Q4_PANEL_BYTES], j: usize) -> (f16, f16) {
    copy_nibbles(&raw[4..4 + BLOCK / 2], out, j);
    (f16_at(raw, 0), f16_at(raw, 2))
}

/// A Q4_0 block (f16 scale, then nibbles as Q4_1's) into output `j` of a panel block.
fn copy_q4_0_block(raw: &[u8], out: &mut [u8; Q4_PANEL_BYTES], j: usize) -> (f16, f16) {
    copy_nibbles(&raw[2..2 + BLOCK / 2], out, j);
    (f16_at(raw, 0), f16::ZERO)
}

/// GGUF's 16 bytes of nibbles (byte `i`: input `i` low, `i + 16` high) into output `j` of a
/// panel block (byte `64 c + 4 j + t`: input `8 c + t` low, `8 c + 4 + t` high).
fn copy_nibbles(nibbles: &[u8], out: &mut [u8; Q4_PANEL_BYTES], j: usize) {
    let value = |i: usize| {
        if i < 16 {
            nibbles[i] & 15
        } else {
            nibbles[i - 16] >> 4
        }
    };
    for c in 0..BLOCK / 8 {
        let at = c * 64 + j * 4;
        for t in 0..4 {
            out[at + t] = value(8 * c + t) | (value(8 * c + 4 + t) << 4);
        }
    }
}
