//! Quantized matrix products on the CPU: what the decode loop spends its time in.
//!
//! Burn 0.22's CPU backends run a quantized matmul by dequantizing the whole weight first
//! (measured: a 576×1536 q8 product at one row takes 38 ms on NdArray against 0.56 ms at f32), so
//! at q8 and q4 the CPU backends use these kernels instead, registered with Burn as a backend
//! extension ([`PackedMatmulOps`]).
//!
//! # Layout
//!
//! Weights are stored in GGUF's blocks of [`BLOCK`] inputs — [`BlockFormat::Q8_0`] (signed
//! bytes and an `f32` scale, `w = d q`) or [`BlockFormat::Q4_1`] (four-bit values, an `f32`
//! scale and an `f32` minimum, `w = m + d q`) — grouped by outputs so that a decode step streams
//! each weight once, front to back. The grouping ([`Layout`]) follows the kernel:
//! - [`Layout::Panels`] (x86 AVX2 and AVX-512 VNNI, arm64): 16 outputs per panel, each block
//!   storing 4 consecutive inputs of all 16 outputs side by side, so one 64-byte load is the
//!   unsigned operand of one `vpdpbusd` against 4 broadcast activations (two `vpmaddubsw` halves
//!   on AVX2). Tiles of up to 6 rows × 2 panels (VNNI) or 6 rows × 1 panel (AVX2) reuse each
//!   load in prefill.
//! - [`Layout::Lanes`] (portable, on CPUs without SIMD kernels): the blocks of [`LANES`]
//!   outputs one after the other.
//!
//! Every x86 and arm64 variant runs the same panels, so a forced variant ([`KernelTier`])
//! runs the weights as they were packed.
//!
//! # Arithmetic
//!
//! Each row of activations is quantized to 8-bit blocks (`s = max|x| / 127`), so the inner
//! product of a block is an integer one; the result is `Σ d s Σ q·qx`, plus for Q4_1 `m Σ x` over
//! the block with the exact float sum. `vpdpbusd` multiplies unsigned by signed bytes, so Q8_0
//! panels store `q + 128` and each sum starts at `-128 Σ qx`. The SIMD paths are chosen at run
//! time (see `x86`); the portable code below reads either layout and is the reference the SIMD
//! kernels are tested against.
//!
//! # Calls
//!
//! [`matmul_concat`] runs several weights that share their input (a layer's query, key and
//! value; its gate and up) as one parallel loop, and [`matmul_swiglu`] adds SwiGLU's gating, so
//! that a decoder block wakes the thread pool four times per token, not seven.

use crate::gguf::GgmlType;
use arena::ArenaVec;
use half::f16;
use rayon::prelude::*;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

mod arena;
#[cfg(target_arch = "aarch64")]
mod arm;
mod extension;
mod pack;
mod tier;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use extension::{PackedMatmulOps, packed_matmul, packed_matmul_concat, packed_swiglu};
pub use tier::KernelTier;
pub(crate) use tier::set_thread_tier;

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
    /// 4-bit symmetric: a scale per block, `w = d (q - 8)` (GGUF's Q4_0).
    Q4_0,
}

impl BlockFormat {
    /// Bytes one weight takes, its share of the block's `f16` scale (and minimum) included:
    /// the same as GGUF's blocks of the format.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            Self::Q8_0 => 1.0 + 2.0 / BLOCK as f64,
            Self::Q4_1 => 0.5 + 4.0 / BLOCK as f64,
            Self::Q4_0 => 0.5 + 2.0 / BLOCK as f64,
        }
    }
}

impl fmt::Display for BlockFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Q8_0 => "q8_0",
            Self::Q4_1 => "q4_1",
            Self::Q4_0 => "q4_0",
        })
    }
}

/// One block of each of [`LANES`] outputs.
type Group<T> = [T; LANES];

/// How the blocks of consecutive outputs are interleaved in memory, chosen at packing time for
/// the kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Blocks of [`LANES`] outputs one after the other (block `b` of output `4g`, of `4g + 1`,
    /// …): the portable kernel's, where no SIMD kernel runs.
    Lanes,
    /// Panels of [`PANEL`] outputs: each block of a panel stores four consecutive inputs of
    /// every output next to each other, so one 64-byte register holds 4 inputs × 16 outputs
    /// and one AVX-512 VNNI `vpdpbusd` adds all 64 products into the 16 outputs' sums (AVX2
    /// and NEON read it as halves and quarters).
    Panels,
}

impl Layout {
    /// Outputs interleaved per unit.
    pub fn width(self) -> usize {
        match self {
            Self::Lanes => LANES,
            Self::Panels => PANEL,
        }
    }

    /// The layout of the fastest kernel on this CPU.
    pub fn best() -> Self {
        #[cfg(target_arch = "x86_64")]
        if x86::available() {
            return Self::Panels;
        }
        // The NEON kernel (every arm64 CPU).
        #[cfg(target_arch = "aarch64")]
        return Self::Panels;
        #[cfg(not(target_arch = "aarch64"))]
        Self::Lanes
    }
}

/// Outputs per [`Layout::Panels`] unit.
pub const PANEL: usize = 16;

/// Bytes of one Q8_0 panel block.
const Q8_PANEL_BYTES: usize = PANEL * BLOCK;
/// Bytes of one Q4_1 panel block.
const Q4_PANEL_BYTES: usize = PANEL * BLOCK / 2;

/// The bytes of one [`Layout::Panels`] block, aligned to a cache line, so that each 64-byte
/// load of the kernels is one line, never a load split over two (a weight of its own mapping
/// would otherwise start 16 bytes into a page, and every load of it would be split).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PanelBlock<const N: usize>([u8; N]);

impl<const N: usize> std::ops::Deref for PanelBlock<N> {
    type Target = [u8; N];

    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> std::ops::DerefMut for PanelBlock<N> {
    fn deref_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }
}

#[derive(Clone)]
enum Values {
    /// [`Layout::Lanes`], signed values.
    Q8(ArenaVec<Group<[i8; BLOCK]>>),
    /// [`Layout::Lanes`]: inputs `0..16` in the low nibbles, `16..32` in the high ones (Q4_1
    /// and Q4_0: the nibble `q` of `w = m + d q` or of `w = d (q - 8)`).
    Q4(ArenaVec<Group<[u8; BLOCK / 2]>>),
    /// [`Layout::Panels`]: byte `64 c + 4 o + t` is `q + 128` of input `4 c + t` of output `o`
    /// (offset so that the weights are `vpdpbusd`'s unsigned operand).
    Q8Panel(ArenaVec<PanelBlock<Q8_PANEL_BYTES>>),
    /// [`Layout::Panels`]: byte `64 c + 4 o + t` holds input `8 c + t` of output `o` in its low
    /// nibble and input `8 c + 4 + t` in its high one.
    Q4Panel(ArenaVec<PanelBlock<Q4_PANEL_BYTES>>),
}

/// A `[d_in, d_out]` projection weight in quantized blocks, ready for [`PackedWeight::matmul`].
///
/// Outputs are grouped in units of [`Layout::width`] (the last unit padded with zero weights).
/// Every per-block vector is indexed by `u * blocks + b` for unit `u` and input block `b`;
/// `scales` and `mins` hold `width` values at each such index.
#[derive(Clone)]
pub struct PackedWeight {
    d_in: usize,
    d_out: usize,
    format: BlockFormat,
    layout: Layout,
    values: Values,
    /// One `f16` per block and output, as GGUF stores them: a decode step is bound by the bytes
    /// it streams, and `f32` scales made q4 weights 20 % larger than the file's.
    scales: ArenaVec<f16>,
    /// Q4_1 only (empty otherwise).
    mins: ArenaVec<f16>,
}

impl fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PackedWeight")
            .field("format", &self.format())
            .field("layout", &self.layout)
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
    /// Stored data of a type that cannot be decoded.
    #[error(
        "{ty} data cannot be packed (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K can)"
    )]
    Type {
        /// The stored type.
        ty: GgmlType,
    },
    /// Stored data whose size does not match the shape.
    #[error("{len} bytes of {ty} data given for a {d_in}x{d_out} weight")]
    Bytes {
        /// The stored type.
        ty: GgmlType,
        /// Bytes given.
        len: usize,
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

/// One quantized block of one output: `w = m + d q`.
struct QBlock {
    d: f32,
    m: f32,
    /// Q8_0: `-127..=127`; Q4_1: `0..=15`; Q4_0: `-8..=7` (stored as the nibble `q + 8`).
    q: [i32; BLOCK],
}

impl PackedWeight {
    /// The storage format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// How the blocks are interleaved.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `[d_in, d_out]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.d_in, self.d_out]
    }

    /// Bytes held: values, scales and minimums (the last unit's padding included).
    pub fn stored_bytes(&self) -> usize {
        let values = match &self.values {
            Values::Q8(q) => q.len() * LANES * BLOCK,
            Values::Q4(q) => q.len() * LANES * BLOCK / 2,
            Values::Q8Panel(q) => q.len() * Q8_PANEL_BYTES,
            Values::Q4Panel(q) => q.len() * Q4_PANEL_BYTES,
        };
        values + 2 * (self.scales.len() + self.mins.len())
    }

    /// Input block `b` of output `o` (`o` may be a padding output of the last unit).
    fn block(&self, o: usize, b: usize) -> QBlock {
        let width = self.layout.width();
        let (k, j) = ((o / width) * (self.d_in / BLOCK) + b, o % width);
        let mut q = self.values.load(k, j);
        if self.format == BlockFormat::Q4_0 {
            q = q.map(|q| q - 8);
        }
        QBlock {
            d: self.scales[k * width + j].to_f32(),
            m: self.mins.get(k * width + j).map_or(0.0, |m| m.to_f32()),
            q,
        }
    }

    /// The weight the blocks stand for, row-major `[d_in, d_out]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.d_in * self.d_out];
        for o in 0..self.d_out {
            for b in 0..self.d_in / BLOCK {
                let QBlock { d, m, q } = self.block(o, b);
                for (i, q) in q.into_iter().enumerate() {
                    w[(b * BLOCK + i) * self.d_out + o] = m + d * q as f32;
                }
            }
        }
        w
    }

    /// The `d_in` weights of output `o` (column `o` of the `[d_in, d_out]` weight) into
    /// `out`: the row of a tied embedding table, read where the output projection keeps it.
    ///
    /// # Panics
    ///
    /// When `o >= d_out` or `out.len() != d_in`.
    pub fn column_into(&self, o: usize, out: &mut [f32]) {
        assert!(
            o < self.d_out && out.len() == self.d_in,
            "column {o} of {self:?}"
        );
        for (b, chunk) in out.chunks_exact_mut(BLOCK).enumerate() {
            let QBlock { d, m, q } = self.block(o, b);
            for (v, q) in chunk.iter_mut().zip(q) {
                *v = m + d * q as f32;
            }
        }
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
        matmul_with(&[self], x, rows, None)
    }

    /// [`PackedWeight::matmul`] with the portable kernel: the reference the SIMD kernels are
    /// checked against (same quantized activations, same blocks, scalar arithmetic).
    pub fn matmul_portable(&self, x: &[f32], rows: usize) -> Vec<f32> {
        matmul_with(&[self], x, rows, Some(Kernel::Portable))
    }

    /// The kernel [`PackedWeight::matmul`] runs for this weight on this CPU (on this thread:
    /// a runtime's forced [`KernelTier`] counts).
    pub fn kernel_name(&self) -> &'static str {
        Kernel::chosen(self.layout, tier::thread_tier()).name()
    }

    /// Copies this weight's outputs, as [`Kernel::run`] left them in `yt` (chunks of
    /// `per_task` units), into columns `col0..col0 + d_out` of the row-major `y`.
    fn gather(&self, yt: &[f32], kernel: Kernel, per_task: usize, y: &mut [f32], col0: usize) {
        let rows = yt.len() / self.d_out.next_multiple_of(self.layout.width());
        let stride = y.len() / rows;
        match kernel.order() {
            Order::OutputMajor => {
                for (o, col) in yt.chunks_exact(rows).take(self.d_out).enumerate() {
                    for (r, v) in col.iter().enumerate() {
                        y[r * stride + col0 + o] = *v;
                    }
                }
            }
            Order::RowMajor => {
                let chunk = per_task * self.layout.width() * rows;
                for (t, out) in yt.chunks(chunk).enumerate() {
                    let (o0, n) = (t * per_task * self.layout.width(), out.len() / rows);
                    let cols = n.min(self.d_out - o0);
                    for (r, src) in out.chunks_exact(n).enumerate() {
                        y[r * stride + col0 + o0..][..cols].copy_from_slice(&src[..cols]);
                    }
                }
            }
        }
    }
}

/// `x [W_0 W_1 …]` for packed weights that share `d_in` (a layer's query, key and value
/// projections; its gate and up projections), as row-major `[rows, Σ d_out]`: the activations
/// are quantized once and one parallel loop covers every weight's outputs, so the pool wakes
/// once instead of once per weight.
///
/// # Panics
///
/// When `weights` is empty, their `d_in` differ, or `x.len() != rows * d_in`: the callers
/// derive all of them from one layer's shapes.
pub fn matmul_concat(weights: &[&PackedWeight], x: &[f32], rows: usize) -> Vec<f32> {
    matmul_with(weights, x, rows, None)
}

/// `silu(x G) ⊙ (x U)` (SwiGLU's hidden activations, `silu(v) = v / (1 + e^-v)`), row-major
/// `[rows, d_ff]`: both products as one [`matmul_concat`], the gating in parallel over rows.
///
/// # Panics
///
/// As [`matmul_concat`], and when `gate` and `up` differ in `d_out`.
pub fn matmul_swiglu(gate: &PackedWeight, up: &PackedWeight, x: &[f32], rows: usize) -> Vec<f32> {
    assert_eq!(gate.d_out, up.d_out, "gate and up differ in width");
    let d_ff = gate.d_out;
    let both = matmul_concat(&[gate, up], x, rows);
    let mut y = vec![0f32; rows * d_ff];
    let gating = |(out, row): (&mut [f32], &[f32])| {
        let (g, u) = row.split_at(d_ff);
        for ((y, &g), &u) in out.iter_mut().zip(g).zip(u) {
            *y = g / (1.0 + (-g).exp()) * u;
        }
    };
    if rows >= PARALLEL_ROWS {
        y.par_chunks_mut(d_ff)
            .zip(both.par_chunks(2 * d_ff))
            .for_each(gating);
    } else {
        y.chunks_mut(d_ff)
            .zip(both.chunks(2 * d_ff))
            .for_each(gating);
    }
    y
}

/// The product with `kernel` (one this CPU has, for the weights' layout), or the best one.
fn matmul_with(
    weights: &[&PackedWeight],
    x: &[f32],
    rows: usize,
    kernel: Option<Kernel>,
) -> Vec<f32> {
    let d_in = weights.first().expect("at least one weight").d_in;
    assert!(
        weights.iter().all(|w| w.d_in == d_in),
        "weights of different d_in"
    );
    assert_eq!(x.len(), rows * d_in, "x is not [rows, d_in]");
    // Chosen on the calling thread (a runtime's worker, which carries the runtime's tier).
    let tier = tier::thread_tier();
    let kernel = |w: &PackedWeight| kernel.unwrap_or_else(|| Kernel::chosen(w.layout, tier));
    let avx512 = matches!(tier, KernelTier::Auto | KernelTier::X86Avx512Vnni);
    let qx = QuantizedRows::new(x, rows, d_in, avx512);
    LAST_KERNEL.with(|k| k.set(Some(kernel(weights[0]).name())));
    // Each task owns a run of one weight's units and writes their outputs for every row into
    // its chunk of that weight's `yt`, in the kernel's `Order`.
    let units = |w: &PackedWeight| w.d_out.div_ceil(w.layout.width());
    let all_units: usize = weights.iter().map(|w| units(w)).sum();
    let tasks = 4 * rayon::current_num_threads();
    // An even number of units per task: the VNNI kernel runs panels in pairs.
    let per_task = all_units.div_ceil(tasks).max(4).next_multiple_of(2);
    let mut yts: Vec<Vec<f32>> = weights
        .iter()
        .map(|w| vec![0f32; units(w) * w.layout.width() * rows])
        .collect();
    let mut jobs = Vec::new();
    for (w, yt) in weights.iter().zip(&mut yts) {
        let chunk = per_task * w.layout.width() * rows;
        for (t, out) in yt.chunks_mut(chunk).enumerate() {
            jobs.push((*w, t * per_task, out));
        }
    }
    jobs.into_par_iter().for_each(|(w, u0, out)| {
        let units = u0..u0 + out.len() / (w.layout.width() * rows);
        kernel(w).run(w, &qx, units, out);
    });
    if let ([w], 1) = (weights, rows) {
        // One row in either order is the outputs in order.
        let mut y = yts.pop().unwrap_or_default();
        y.truncate(w.d_out);
        return y;
    }
    let d_out: usize = weights.iter().map(|w| w.d_out).sum();
    let mut y = vec![0f32; rows * d_out];
    let mut col0 = 0;
    for (w, yt) in weights.iter().zip(&yts) {
        w.gather(yt, kernel(w), per_task, &mut y, col0);
        col0 += w.d_out;
    }
    y
}

thread_local! {
    /// The variant the calling thread's last product dispatched to.
    static LAST_KERNEL: std::cell::Cell<Option<&'static str>> = const { std::cell::Cell::new(None) };
}

/// The kernel variant the calling thread's last quantized product ran (`None` before any):
/// what a runtime's products really dispatched to, observed, not derived from the asked tier.
pub fn last_kernel() -> Option<&'static str> {
    LAST_KERNEL.with(std::cell::Cell::get)
}

/// How a kernel lays out a task's chunk of outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// `[units * width, rows]`: output `o` of every row together.
    OutputMajor,
    /// `[rows, units * width]`: each row's outputs together.
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )] // the VNNI and NEON kernels'
    RowMajor,
}

impl Values {
    /// Writes the integer values of block `k`, output `j` of its unit.
    fn store(&mut self, k: usize, j: usize, q: &[i32; BLOCK]) {
        // Every value is in range by construction (Q8_0: -128..=127, Q4_1: 0..=15), so the
        // casts keep them; the loops run over whole chunks so that loading a model (which
        // stores every block of every weight) is a few copies, not a bounds check per byte.
        match self {
            Self::Q8(v) => v[k][j] = q.map(|v| v as i8),
            Self::Q4(v) => {
                v[k][j] = std::array::from_fn(|i| (q[i] as u8 & 15) | ((q[i + 16] as u8) << 4));
            }
            Self::Q8Panel(v) => {
                for (chunk, q) in v[k].chunks_exact_mut(64).zip(q.chunks_exact(4)) {
                    let out = &mut chunk[j * 4..j * 4 + 4];
                    for t in 0..4 {
                        out[t] = (q[t] + 128) as u8;
                    }
                }
            }
            Self::Q4Panel(v) => {
                for (chunk, q) in v[k].chunks_exact_mut(64).zip(q.chunks_exact(8)) {
                    let out = &mut chunk[j * 4..j * 4 + 4];
                    for t in 0..4 {
                        out[t] = (q[t] as u8 & 15) | ((q[t + 4] as u8) << 4);
                    }
                }
            }
        }
    }

    /// The integer values of block `k`, output `j` of its unit.
    fn load(&self, k: usize, j: usize) -> [i32; BLOCK] {
        std::array::from_fn(|i| match self {
            Self::Q8(v) => i32::from(v[k][j][i]),
            Self::Q4(v) => {
                let byte = v[k][j][i % 16];
                i32::from(if i < 16 { byte & 15 } else { byte >> 4 })
            }
            Self::Q8Panel(v) => i32::from(v[k][(i / 4) * 64 + j * 4 + i % 4]) - 128,
            Self::Q4Panel(v) => {
                let (c, r) = (i / 8, i % 8);
                let byte = v[k][c * 64 + j * 4 + r % 4];
                i32::from(if r < 4 { byte & 15 } else { byte >> 4 })
            }
        })
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
    /// Sum of each block's quantized values (the `+ 128` and `+ 8` offset terms of the SIMD
    /// kernels).
    #[cfg_attr(
        not(any(target_arch = "x86_64", target_arch = "aarch64")),
        allow(dead_code)
    )]
    qsums: Vec<i32>,
}

/// One block of activations, quantized: `x ≈ d q`, with the exact float sum and the sum of `q`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ActBlock {
    pub(crate) q: [i8; BLOCK],
    pub(crate) d: f32,
    pub(crate) sum: f32,
    pub(crate) qsum: i32,
}

impl ActBlock {
    /// The portable quantizer (and the reference for the SIMD one).
    fn new(x: &[f32; BLOCK]) -> Self {
        let (d, q) = quantize_q8(x);
        Self {
            q,
            d,
            sum: x.iter().sum(),
            qsum: q.iter().map(|&v| i32::from(v)).sum(),
        }
    }
}

/// Rows at or above which activations are quantized in parallel.
const PARALLEL_ROWS: usize = 16;

impl QuantizedRows {
    /// `avx512`: whether the AVX-512 quantizer may run (not for a forced tier below it: an
    /// `x86-avx2` cell measures what an AVX2-only CPU runs; the values are the same).
    fn new(x: &[f32], rows: usize, d_in: usize, avx512: bool) -> Self {
        let blocks = d_in / BLOCK;
        let _ = avx512;
        let quantize_row = |row: &[f32]| -> Vec<ActBlock> {
            let (chunks, _) = row.as_chunks::<BLOCK>();
            #[cfg(target_arch = "x86_64")]
            if avx512 && x86::avx512_available() {
                return x86::quantize_blocks(chunks);
            }
            #[cfg(target_arch = "x86_64")]
            if x86::available() {
                return x86::quantize_blocks_avx2(chunks);
            }
            chunks.iter().map(ActBlock::new).collect()
        };
        // Few rows (decode): the rows are contiguous, so quantize them as one run of blocks.
        let quantized: Vec<ActBlock> = if rows >= PARALLEL_ROWS {
            let per_row: Vec<Vec<ActBlock>> = x.par_chunks(d_in).map(quantize_row).collect();
            per_row.into_iter().flatten().collect()
        } else {
            quantize_row(x)
        };
        let n = rows * blocks;
        let (mut values, mut scales) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let (mut sums, mut qsums) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for b in quantized {
            values.push(b.q);
            scales.push(b.d);
            sums.push(b.sum);
            qsums.push(b.qsum);
        }
        Self {
            rows,
            blocks,
            values,
            scales,
            sums,
            qsums,
        }
    }
}

/// One block of 32 weights quantized to `format`. Scales and minimums are rounded to `f16`
/// (what the weight stores) before the values are, so each value is rounded against the step
/// it will be multiplied by.
fn quantize_block(format: BlockFormat, x: &[f32; BLOCK]) -> QBlock {
    match format {
        BlockFormat::Q8_0 => {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = to_f16(amax / 127.0);
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            QBlock {
                d,
                m: 0.0,
                q: x.map(|v| round(v * inv).clamp(-127, 127)),
            }
        }
        BlockFormat::Q4_1 => quantize_q4_1(x),
        BlockFormat::Q4_0 => quantize_q4_0(x),
    }
}

/// `v` rounded to the nearest `f16`, back as `f32`.
fn to_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// Symmetric 8-bit quantization of one block of activations: `(d, q)` with `x ≈ d q`, `q` in
/// `-127..=127`.
fn quantize_q8(x: &[f32; BLOCK]) -> (f32, [i8; BLOCK]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    (
        d,
        std::array::from_fn(|i| round(x[i] * inv).clamp(-127, 127) as i8),
    )
}

/// `v` rounded to the nearest integer, ties to even, for `|v| < 2^22`: adding and taking back
/// `1.5 · 2^23` leaves no fraction bits, so the addition rounds in the FPU's default mode (the
/// mode SIMD conversions use, so both quantizers agree). No libm call (`f32::round`'s dominated
/// packing the model and quantizing activations).
fn round(v: f32) -> i32 {
    const SHIFT: f32 = 12_582_912.0;
    ((v + SHIFT) - SHIFT) as i32
}

/// Asymmetric 4-bit quantization of one block: the minimum and maximum on the ends of the grid.
fn quantize_q4_1(x: &[f32; BLOCK]) -> QBlock {
    let (lo, hi) = x
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (d, m) = (to_f16((hi - lo) / 15.0), to_f16(lo));
    let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
    QBlock {
        d,
        m,
        q: x.map(|v| round((v - m) * inv).clamp(0, 15)),
    }
}

/// Symmetric 4-bit quantization of one block, as GGUF's Q4_0 reference quantizer does it: the
/// value of largest magnitude maps to `q = -8` (`d = v / -8`), the others round to the nearest
/// step, clamped to `-8..=7`.
fn quantize_q4_0(x: &[f32; BLOCK]) -> QBlock {
    let extreme = x
        .iter()
        .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
    let d = to_f16(extreme / -8.0);
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    QBlock {
        d,
        m: 0.0,
        q: x.map(|v| round(v * inv).clamp(-8, 7)),
    }
}

/// Which inner loops run a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// Baseline NEON (`smull`/`sadalp`): every arm64 CPU.
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// `sdot` (FEAT_DotProd, Armv8.2+).
    #[cfg(target_arch = "aarch64")]
    Dotprod,
    /// `smmla` for pairs of rows, `sdot` for the rest (FEAT_I8MM, Armv8.6+).
    #[cfg(target_arch = "aarch64")]
    I8mm,
}

impl Kernel {
    /// `tier` where this CPU has it for `layout`, else the fastest one (a forced tier was
    /// checked before any weight was packed; a weight in another layout, which only tests
    /// make, runs on what reads it).
    fn chosen(layout: Layout, tier: KernelTier) -> Self {
        if tier != KernelTier::Auto
            && let Some(k) = Self::available(layout)
                .into_iter()
                .find(|k| k.name() == tier.name())
        {
            return k;
        }
        Self::best(layout)
    }

    /// The fastest kernel this CPU has for `layout`.
    fn best(layout: Layout) -> Self {
        Self::available(layout)
            .last()
            .copied()
            .unwrap_or(Self::Portable)
    }

    /// Every kernel this CPU can run for `layout`, slowest first (the portable one first).
    fn available(layout: Layout) -> Vec<Self> {
        let mut kernels = vec![Self::Portable];
        #[cfg(target_arch = "x86_64")]
        if layout == Layout::Panels {
            if x86::available() {
                kernels.push(Self::Avx2);
            }
            if x86::vnni_available() {
                kernels.push(Self::Vnni);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if layout == Layout::Panels {
            kernels.push(Self::Neon);
            if arm::dotprod_available() {
                kernels.push(Self::Dotprod);
            }
            if arm::i8mm_available() {
                kernels.push(Self::I8mm);
            }
        }
        let _ = layout;
        kernels
    }

    /// How [`Kernel::run`] fills its chunk of outputs.
    fn order(self) -> Order {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 | Self::Vnni => Order::RowMajor,
            #[cfg(target_arch = "aarch64")]
            Self::Neon | Self::Dotprod | Self::I8mm => Order::RowMajor,
            _ => Order::OutputMajor,
        }
    }

    /// The variant's name in results (`kernel` column), manifests and `socbench-agent info`.
    fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "x86-avx2",
            #[cfg(target_arch = "x86_64")]
            Self::Vnni => "x86-avx512vnni",
            #[cfg(target_arch = "aarch64")]
            Self::Neon => "arm-neon",
            #[cfg(target_arch = "aarch64")]
            Self::Dotprod => "arm-dotprod",
            #[cfg(target_arch = "aarch64")]
            Self::I8mm => "arm-i8mm",
        }
    }

    /// Computes the outputs of `units` for every row into `out`, in [`Kernel::order`].
    fn run(self, w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
        match self {
            Self::Portable => portable(w, x, units, out),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => x86::run_panels_avx2(w, x, units, out),
            #[cfg(target_arch = "x86_64")]
            Self::Vnni => x86::run_vnni(w, x, units, out),
            #[cfg(target_arch = "aarch64")]
            Self::Neon => arm::run_panels(w, x, units, out),
            #[cfg(target_arch = "aarch64")]
            Self::Dotprod => arm::run_dotprod(w, x, units, out),
            #[cfg(target_arch = "aarch64")]
            Self::I8mm => arm::run_i8mm(w, x, units, out),
        }
    }
}

/// The kernel variant the quantized products run on this CPU (`x86-avx512vnni`, `x86-avx2`,
/// `arm-i8mm`, `arm-dotprod`, `arm-neon` or `portable`): what the `kernel` column, the
/// manifest and `socbench-agent info` report.
pub fn kernel_name() -> &'static str {
    kernel_name_for(KernelTier::Auto)
}

/// The kernel variant the quantized products run with `tier` forced on this CPU (`auto`: as
/// [`kernel_name`]; a tier this CPU lacks: the best, as the products would).
pub fn kernel_name_for(tier: KernelTier) -> &'static str {
    Kernel::chosen(Layout::best(), tier).name()
}

/// Every kernel variant this CPU can run, the portable one first.
pub fn kernel_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Kernel::available(Layout::Lanes)
        .into_iter()
        .chain(Kernel::available(Layout::best()))
        .map(Kernel::name)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// Any layout, scalar arithmetic: `Σ_b d_b s_b Σ q·qx + m_b Σ x_b` per row and output.
///
/// The float steps are the SIMD kernels', in their order: per block, `y + dot · (d s)` fused,
/// then (Q4_1) `y + m Σx` fused. Every variant then gives the same outputs bit for bit, which
/// matters beyond rounding: the next product quantizes these outputs to 8 bits again, and a
/// last-bit difference that moves one activation across a rounding boundary grows layer by
/// layer (measured: perplexity of a short text 10 % apart on SmolLM2 at q8 when only the
/// fusing differed).
fn portable(w: &PackedWeight, x: &QuantizedRows, units: Range<usize>, out: &mut [f32]) {
    let (nb, rows, width) = (x.blocks, x.rows, w.layout.width());
    let minimums = w.format == BlockFormat::Q4_1;
    for (i, u) in units.enumerate() {
        for j in 0..width {
            let col = &mut out[(i * width + j) * rows..][..rows];
            for b in 0..nb {
                let QBlock { d, m, q } = w.block(u * width + j, b);
                for (r, y) in col.iter_mut().enumerate() {
                    let k = r * nb + b;
                    let dot: i32 = q
                        .iter()
                        .zip(&x.values[k])
                        .map(|(&q, &v)| q * i32::from(v))
                        .sum();
                    *y = (dot as f32).mul_add(d * x.scales[k], *y);
                    if minimums {
                        *y = m.mul_add(x.sums[k], *y);
                    }
                }
            }
        }
    }
}

/// One comparison of [`self_check`]: the fast kernel against the portable one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelCheck {
    /// Block format.
    pub format: String,
    /// Weight layout.
    pub layout: String,
    /// The kernel that ran.
    pub kernel: String,
    /// Rows of activations.
    pub rows: usize,
    /// Largest difference from the portable kernel.
    pub max_error: f32,
    /// What is allowed: float rounding of the same integer sums.
    pub tolerance: f32,
}

impl KernelCheck {
    /// Whether the difference is within the tolerance.
    pub fn ok(&self) -> bool {
        self.max_error <= self.tolerance
    }
}

/// Runs every kernel variant this CPU has against the portable reference on fixed
/// pseudo-random weights and activations (every format, every layout this CPU packs, decode
/// and prefill row counts, odd and even, an odd number of units), so that a device can show its SIMD paths are right before it is
/// measured (`socbench-agent selftest`).
pub fn self_check() -> Vec<KernelCheck> {
    let (d_in, d_out) = (96, 3 * PANEL + 5);
    let mut rng = crate::load::SplitMix64(0x5e1f);
    let mut random =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect() };
    let w = random(d_in * d_out);
    let mut checks = Vec::new();
    let layouts = if Layout::best() == Layout::Lanes {
        vec![Layout::Lanes]
    } else {
        vec![Layout::Lanes, Layout::best()]
    };
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::Q4_0] {
        for &layout in &layouts {
            let Ok(packed) = PackedWeight::quantize_in(format, layout, &w, d_in, d_out) else {
                continue;
            };
            for rows in [1, 2, 3, 7, 8] {
                let x = random(rows * d_in);
                let reference = packed.matmul_portable(&x, rows);
                let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
                for kernel in Kernel::available(layout) {
                    if kernel == Kernel::Portable {
                        continue;
                    }
                    let fast = matmul_with(&[&packed], &x, rows, Some(kernel));
                    let max_error = fast
                        .iter()
                        .zip(&reference)
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                    checks.push(KernelCheck {
                        format: format.to_string(),
                        layout: format!("{layout:?}"),
                        kernel: kernel.name().to_owned(),
                        rows,
                        max_error,
                        tolerance: 1e-5 * scale,
                    });
                }
            }
        }
    }
    checks
}

/// A shared, cheaply cloned packed weight, as modules hold it.
pub type SharedWeight = Arc<PackedWeight>;

#[cfg(test)]
mod tests;
