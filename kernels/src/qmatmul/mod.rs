//! Quantized matrix products on the CPU: what the decode loop spends its time in.
//!
//! Burn 0.22's CPU backends run a quantized matmul by dequantizing the whole weight first
//! (measured: a 576×1536 q8 product at one row takes 38 ms on NdArray against 0.56 ms at f32), so
//! at q8 and q4 the CPU backends use these kernels instead, registered with Burn as a backend
//! extension ([`PackedMatmulOps`]).
//!
//! # Layout
//!
//! Weights are stored in GGUF's blocks of [`BLOCK`] inputs, with the blocks of [`LANES`]
//! consecutive outputs interleaved (block `b` of outputs `4g..4g + 4`, then block `b + 1`, …),
//! so a decode step streams each weight once, front to back, in a single stream, and four
//! independent sums hide the arithmetic's latency:
//! - [`BlockFormat::Q8_0`]: 32 signed bytes and one `f32` scale per block, `w = d q`.
//! - [`BlockFormat::Q4_1`]: 32 four-bit values (16 bytes: inputs `0..16` in the low nibbles,
//!   `16..32` in the high ones), an `f32` scale and an `f32` minimum, `w = m + d q`.
//!
//! # Arithmetic
//!
//! Each row of activations is quantized to 8-bit blocks (`s = max|x| / 127`), so the inner
//! product of a block is an integer one; the result is `Σ d s Σ q·qx`, plus for Q4_1 `m Σ x` over
//! the block with the exact float sum. Integer dot products run with AVX2 when the CPU has it
//! (detected at run time, see `x86`), otherwise with the portable code below, which also
//! serves as the reference the SIMD path is tested against.

use rayon::prelude::*;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

mod extension;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use extension::{PackedMatmulOps, packed_matmul};

/// Inputs per quantization block.
pub const BLOCK: usize = 32;

/// Outputs whose blocks are interleaved.
pub const LANES: usize = 4;

/// How a [`PackedWeight`] stores its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockFormat {
    /// 8-bit symmetric: a scale per block.
    Q8_0,
    /// 4-bit asymmetric: a scale and a minimum per block (GGUF's Q4_1).
    Q4_1,
}

impl BlockFormat {
    /// Bytes one weight takes, its share of the block's scale (and minimum) included.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            Self::Q8_0 => 1.0 + 4.0 / BLOCK as f64,
            Self::Q4_1 => 0.5 + 8.0 / BLOCK as f64,
        }
    }
}

impl fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Q8_0 => "q8_0",
            Self::Q4_1 => "q4_1",
        })
    }
}

/// One block of each of [`LANES`] outputs.
type Group<T> = [T; LANES];

#[derive(Clone)]
enum Values {
    Q8(Vec<Group<[i8; BLOCK]>>),
    Q4(Vec<Group<[u8; BLOCK / 2]>>),
}

/// A `[d_in, d_out]` projection weight in quantized blocks, ready for [`PackedWeight::matmul`].
///
/// Every per-block vector is indexed `g * blocks + b` for output group `g` (outputs
/// `LANES g..LANES (g + 1)`, the last group padded with zero weights) and input block `b`.
#[derive(Clone)]
pub struct PackedWeight {
    d_in: usize,
    d_out: usize,
    values: Values,
    scales: Vec<Group<f32>>,
    /// Q4_1 only.
    mins: Vec<Group<f32>>,
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedWeight")
            .field("format", &self.format())
            .field("d_in", &self.d_in)
            .field("d_out", &self.d_out)
            .finish()
    }
}

/// A weight that cannot be packed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    /// The input dimension is not a whole number of blocks.
    #[error("a {d_in}x{d_out} weight cannot be packed: d_in must be a multiple of {BLOCK}")]
    Shape {
        /// Inputs.
        d_in: usize,
        /// Outputs.
        d_out: usize,
    },
    /// The values do not fill the shape.
    #[error("{len} values given for a {d_in}x{d_out} weight")]
    Length {
        /// Values given.
        len: usize,
        /// Inputs.
        d_in: usize,
        /// Outputs.
        d_out: usize,
    },
}

impl PackedWeight {
    /// Quantizes `w`, a row-major `[d_in, d_out]` weight (Burn's `Linear` layout), to `format`.
    ///
    /// Q8_0 takes `d = max|w| / 127` per block; Q4_1 puts the block's minimum and maximum on
    /// the ends of the 16-step grid, so weights that came from a Q4_1 file come back exactly.
    pub fn quantize(
        format: BlockFormat,
        w: &[f32],
        d_in: usize,
        d_out: usize,
    ) -> Result<Self, PackError> {
        if d_in == 0 || !d_in.is_multiple_of(BLOCK) {
            return Err(PackError::Shape { d_in, d_out });
        }
        if w.len() != d_in * d_out {
            return Err(PackError::Length {
                len: w.len(),
                d_in,
                d_out,
            });
        }
        let blocks = d_in / BLOCK;
        let groups = d_out.div_ceil(LANES);
        let n = groups * blocks;
        let mut scales = vec![[0f32; LANES]; n];
        let mut mins = Vec::new();
        // Block `b` of output `o`; zeros past `d_out` (the padding of the last group).
        let block_of = |o: usize, b: usize| -> [f32; BLOCK] {
            std::array::from_fn(|i| {
                if o < d_out {
                    w[(b * BLOCK + i) * d_out + o]
                } else {
                    0.0
                }
            })
        };
        let at = |o: usize, b: usize| ((o / LANES) * blocks + b, o % LANES);
        let values = match format {
            BlockFormat::Q8_0 => {
                let mut qs = vec![[[0i8; BLOCK]; LANES]; n];
                for o in 0..groups * LANES {
                    for b in 0..blocks {
                        let (k, lane) = at(o, b);
                        (scales[k][lane], qs[k][lane]) = quantize_q8(&block_of(o, b));
                    }
                }
                Values::Q8(qs)
            }
            BlockFormat::Q4_1 => {
                mins = vec![[0f32; LANES]; n];
                let mut qs = vec![[[0u8; BLOCK / 2]; LANES]; n];
                for o in 0..groups * LANES {
                    for b in 0..blocks {
                        let x = block_of(o, b);
                        let (lo, hi) = x
                            .iter()
                            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                                (lo.min(v), hi.max(v))
                            });
                        let d = (hi - lo) / 15.0;
                        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                        let q = |v: f32| ((v - lo) * inv).round().clamp(0.0, 15.0) as u8;
                        let (k, lane) = at(o, b);
                        qs[k][lane] = std::array::from_fn(|i| q(x[i]) | (q(x[i + 16]) << 4));
                        scales[k][lane] = d;
                        mins[k][lane] = lo;
                    }
                }
                Values::Q4(qs)
            }
        };
        Ok(Self {
            d_in,
            d_out,
            values,
            scales,
            mins,
        })
    }

    /// The storage format.
    pub fn format(&self) -> BlockFormat {
        match self.values {
            Values::Q8(_) => BlockFormat::Q8_0,
            Values::Q4(_) => BlockFormat::Q4_1,
        }
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.d_in, self.d_out]
    }

    /// Bytes held: values, scales and minimums (the last group's padding included).
    pub fn stored_bytes(&self) -> usize {
        let values = match &self.values {
            Values::Q8(q) => q.len() * LANES * BLOCK,
            Values::Q4(q) => q.len() * LANES * BLOCK / 2,
        };
        values + 4 * LANES * (self.scales.len() + self.mins.len())
    }

    /// The weight the blocks stand for, row-major `[d_in, d_out]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let blocks = self.d_in / BLOCK;
        let mut w = vec![0f32; self.d_in * self.d_out];
        for o in 0..self.d_out {
            let lane = o % LANES;
            for b in 0..blocks {
                let k = (o / LANES) * blocks + b;
                let d = self.scales[k][lane];
                for i in 0..BLOCK {
                    w[(b * BLOCK + i) * self.d_out + o] = match &self.values {
                        Values::Q8(q) => d * f32::from(q[k][lane][i]),
                        Values::Q4(q) => {
                            let byte = q[k][lane][i % 16];
                            let v = if i < 16 { byte & 15 } else { byte >> 4 };
                            self.mins[k][lane] + d * f32::from(v)
                        }
                    };
                }
            }
        }
        w
    }

    /// `x W` for `rows` rows of `x` (row-major `[rows, d_in]`), as row-major `[rows, d_out]`.
    ///
    /// Runs on the current rayon pool (the backend's, inside [`crate::backend::Runtime::run`]),
    /// split over outputs.
    ///
    /// # Panics
    ///
    /// When `x.len() != rows * d_in`: the callers derive both from one tensor shape.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matmul_with(x, rows, Kernel::best())
    }

    /// [`PackedWeight::matmul`] with the portable kernel: the reference the SIMD kernels are
    /// checked against (same quantized activations, same blocks, scalar arithmetic).
    pub fn matmul_portable(&self, x: &[f32], rows: usize) -> Vec<f32> {
        self.matmul_with(x, rows, Kernel::Portable)
    }

    fn matmul_with(&self, x: &[f32], rows: usize, kernel: Kernel) -> Vec<f32> {
        assert_eq!(x.len(), rows * self.d_in, "x is not [rows, d_in]");
        let qx = QuantizedRows::new(x, rows, self.d_in);
        // Output-major result, `[groups * LANES, rows]`: each task owns a run of groups.
        let groups = self.d_out.div_ceil(LANES);
        let mut yt = vec![0f32; groups * LANES * rows];
        let tasks = 4 * rayon::current_num_threads();
        let per_task = groups.div_ceil(tasks).max(4);
        yt.par_chunks_mut(per_task * LANES * rows)
            .enumerate()
            .for_each(|(t, out)| {
                let g0 = t * per_task;
                let groups = g0..g0 + out.len() / (LANES * rows);
                kernel.run(self, &qx, groups, out);
            });
        if rows == 1 {
            yt.truncate(self.d_out);
            return yt;
        }
        let mut y = vec![0f32; rows * self.d_out];
        for (o, col) in yt.chunks_exact(rows).take(self.d_out).enumerate() {
            for (r, v) in col.iter().enumerate() {
                y[r * self.d_out + o] = *v;
            }
        }
        y
    }
}

/// Rows of activations quantized to 8-bit blocks.
#[derive(Debug)]
pub(crate) struct QuantizedRows {
    rows: usize,
    blocks: usize,
    /// `r * blocks + b`.
    values: Vec<[i8; BLOCK]>,
    scales: Vec<f32>,
    /// Exact float sum of each block (Q4_1's minimum term).
    sums: Vec<f32>,
}

impl QuantizedRows {
    fn new(x: &[f32], rows: usize, d_in: usize) -> Self {
        let blocks = d_in / BLOCK;
        let mut values = Vec::with_capacity(rows * blocks);
        let mut scales = Vec::with_capacity(rows * blocks);
        let mut sums = Vec::with_capacity(rows * blocks);
        for chunk in x.chunks_exact(BLOCK) {
            let block: &[f32; BLOCK] = chunk.try_into().unwrap_or(&[0.0; BLOCK]);
            let (d, q) = quantize_q8(block);
            values.push(q);
            scales.push(d);
            sums.push(block.iter().sum());
        }
        Self {
            rows,
            blocks,
            values,
            scales,
            sums,
        }
    }
}

/// Symmetric 8-bit quantization of one block: `(d, q)` with `x ≈ d q`, `q` in `-127..=127`.
fn quantize_q8(x: &[f32; BLOCK]) -> (f32, [i8; BLOCK]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    (
        d,
        std::array::from_fn(|i| (x[i] * inv).round().clamp(-127.0, 127.0) as i8),
    )
}

/// Which inner loops run a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// Computes the outputs of `groups` for every row into `out` (`[groups * LANES, rows]`).
    fn run(self, w: &PackedWeight, x: &QuantizedRows, groups: Range<usize>, out: &mut [f32]) {
        match self {
            Self::Portable => portable(w, x, groups, out),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => x86::run(w, x, groups, out),
        }
    }
}

/// The instruction set the quantized kernels use on this CPU, for reports and logs.
pub fn kernel_name() -> &'static str {
    match Kernel::best() {
        Kernel::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => "avx2",
    }
}

fn portable(w: &PackedWeight, x: &QuantizedRows, groups: Range<usize>, out: &mut [f32]) {
    let nb = x.blocks;
    for (i, g) in groups.enumerate() {
        let ws = &w.scales[g * nb..(g + 1) * nb];
        for lane in 0..LANES {
            for r in 0..x.rows {
                let xq = &x.values[r * nb..(r + 1) * nb];
                let xs = &x.scales[r * nb..(r + 1) * nb];
                let mut acc = 0f32;
                match &w.values {
                    Values::Q8(q) => {
                        for (b, wq) in q[g * nb..(g + 1) * nb].iter().enumerate() {
                            let dot: i32 = (0..BLOCK)
                                .map(|k| i32::from(wq[lane][k]) * i32::from(xq[b][k]))
                                .sum();
                            acc += ws[b][lane] * xs[b] * dot as f32;
                        }
                    }
                    Values::Q4(q) => {
                        let mins = &w.mins[g * nb..(g + 1) * nb];
                        let sums = &x.sums[r * nb..(r + 1) * nb];
                        for (b, wq) in q[g * nb..(g + 1) * nb].iter().enumerate() {
                            let dot: i32 = (0..BLOCK / 2)
                                .map(|k| {
                                    i32::from(wq[lane][k] & 15) * i32::from(xq[b][k])
                                        + i32::from(wq[lane][k] >> 4) * i32::from(xq[b][k + 16])
                                })
                                .sum();
                            acc += ws[b][lane] * xs[b] * dot as f32 + mins[b][lane] * sums[b];
                        }
                    }
                }
                out[(i * LANES + lane) * x.rows + r] = acc;
            }
        }
    }
}

/// A shared, cheaply cloned packed weight, as modules hold it.
pub type SharedWeight = Arc<PackedWeight>;

#[cfg(test)]
mod tests;
