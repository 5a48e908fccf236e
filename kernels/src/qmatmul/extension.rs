//! [`PackedWeight::matmul`] registered with Burn as a backend extension for its CPU backends.
#![allow(deprecated)] // burn-ndarray is deprecated upstream; socbench still measures it.

use super::{PackedWeight, SharedWeight, matmul_concat, matmul_swiglu};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, NdArray, TensorMetadata, backend_extension};
use burn::prelude::*;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// The quantized projections as a backend operation: `x` is `[rows, d_in]`, the result
/// `[rows, Σ d_out]` (the outputs of every weight side by side, see
/// [`super::matmul_concat`]), both `f32`.
///
/// Implemented for the CPU backends (Flex, NdArray), which hold their tensors in host memory,
/// so the operation reads the activations directly and runs the kernels on the backend's rayon
/// pool. Burn's dispatch panics when it is called on a tensor of another backend; socbench
/// packs weights only for CPU backends (see [`crate::quant::quantize_proj`]).
#[backend_extension(Flex, NdArray)]
pub trait PackedMatmulOps: Backend {
    /// `x [W_0 W_1 …]` for packed weights sharing `d_in`.
    fn packed_matmul(x: FloatTensor<Self>, weights: Vec<SharedWeight>) -> FloatTensor<Self>;

    /// `silu(x G) ⊙ (x U)` for packed `[G, U]` (see [`super::matmul_swiglu`]).
    fn packed_swiglu(x: FloatTensor<Self>, weights: Vec<SharedWeight>) -> FloatTensor<Self>;
}

impl PackedMatmulOps for Flex {
    fn packed_matmul(x: FloatTensor<Self>, weights: Vec<SharedWeight>) -> FloatTensor<Self> {
        on_host::<Self>(x, &weights, Epilogue::Concat)
    }

    fn packed_swiglu(x: FloatTensor<Self>, weights: Vec<SharedWeight>) -> FloatTensor<Self> {
        on_host::<Self>(x, &weights, Epilogue::SwiGlu)
    }
}

impl PackedMatmulOps for NdArray {
    fn packed_matmul(x: FloatTensor<Self>, weights: Vec<SharedWeight>) -> FloatTensor<Self> {
        on_host::<Self>(x, &weights, Epilogue::Concat)
    }

    fn packed_swiglu(x: FloatTensor<Self>, weights: Vec<SharedWeight>) -> FloatTensor<Self> {
        on_host::<Self>(x, &weights, Epilogue::SwiGlu)
    }
}

/// What [`on_host`] makes of the products.
#[derive(Clone, Copy)]
enum Epilogue {
    /// Every weight's outputs side by side.
    Concat,
    /// `silu(first) ⊙ second`.
    SwiGlu,
}

/// Runs the products on the activations of a host-memory backend.
fn on_host<B: Backend>(
    x: FloatTensor<B>,
    weights: &[SharedWeight],
    epilogue: Epilogue,
) -> FloatTensor<B> {
    let device = x.device();
    let data = completed(B::float_into_data(x))
        .expect("a CPU backend hands over its host-memory tensor")
        .convert::<f32>();
    let weights: Vec<&PackedWeight> = weights.iter().map(|w| &**w).collect();
    let d_in = weights.first().map_or(1, |w| w.dims()[0]);
    let values = data
        .try_into_vec::<f32>()
        .expect("converted to f32 just above");
    let rows = values.len() / d_in;
    let y = match (epilogue, weights.as_slice()) {
        (Epilogue::SwiGlu, [gate, up]) => matmul_swiglu(gate, up, &values, rows),
        _ => matmul_concat(&weights, &values, rows),
    };
    let d_out = y.len() / rows.max(1);
    B::float_from_data(TensorData::new(y, [rows, d_out]), &device)
}

/// The output of a future that a CPU backend completes without waiting (its `into_data`
/// copies host memory); polled again after a yield should one ever not be ready.
fn completed<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

/// `x W` for a packed `W` through [`PackedMatmulOps`].
///
/// # Shapes
///
/// - x: `[..., d_in]` on a CPU backend
/// - output: `[..., d_out]`
pub fn packed_matmul<const D: usize>(x: Tensor<D>, weight: &SharedWeight) -> Tensor<D> {
    packed_matmul_concat(x, std::slice::from_ref(weight))
}

/// `silu(x G) ⊙ (x U)`, a SwiGLU block's hidden activations, in one call: both products in
/// one parallel loop, the gating on the host (see [`super::matmul_swiglu`]).
///
/// # Shapes
///
/// - x: `[..., d_in]` on a CPU backend
/// - output: `[..., d_ff]`
pub fn packed_swiglu<const D: usize>(
    x: Tensor<D>,
    gate: &SharedWeight,
    up: &SharedWeight,
) -> Tensor<D> {
    let weights = vec![gate.clone(), up.clone()];
    as_rows(x, gate.dims()[1], |x| {
        <Dispatch as PackedMatmulOps>::packed_swiglu(x, weights)
    })
}

/// `x [W_0 W_1 …]` for packed weights sharing `d_in`, in one call (see
/// [`super::matmul_concat`]); the caller splits the result with `narrow`.
///
/// # Shapes
///
/// - x: `[..., d_in]` on a CPU backend
/// - output: `[..., Σ d_out]`
pub fn packed_matmul_concat<const D: usize>(x: Tensor<D>, weights: &[SharedWeight]) -> Tensor<D> {
    let d_out = weights.iter().map(|w| w.dims()[1]).sum();
    as_rows(x, d_out, |x| {
        <Dispatch as PackedMatmulOps>::packed_matmul(x, weights.to_vec())
    })
}

/// Runs `op` on `x` flattened to `[rows, d_in]` and gives its `[rows, d_out]` result `x`'s
/// leading dimensions back.
fn as_rows<const D: usize>(
    x: Tensor<D>,
    d_out: usize,
    op: impl FnOnce(FloatTensor<Dispatch>) -> FloatTensor<Dispatch>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = Tensor::<2>::from_dispatch(op(x.reshape([rows, dims[D - 1]]).into_dispatch()));
    dims[D - 1] = d_out;
    y.reshape(dims)
}
