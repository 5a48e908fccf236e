use crate::qmatmul::{SharedWeight, packed_matmul};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;

/// A bias-free projection `y = x W`, whose weight may be held as a symmetric quantized part plus
/// a per-block offset: `W[i, o] = Wq[i, o] + offset[i / block, o]`.
///
/// The offset is how asymmetric block quantization (GGUF's Q4_1: a scale and a minimum per
/// block of 32 inputs) runs on Burn, whose quantized tensors are symmetric: `x Wq` is Burn's
/// quantized matmul, and `x · offset` is `(sums of x over each block) @ offset`, a matmul
/// `block` times smaller.
///
/// On the CPU backends at q8 and q4 the weight is instead [`packed`](Proj::packed) into
/// socbench's own blocks and run by [`crate::qmatmul`]'s kernels; `weight` is then empty.
#[derive(Module, Debug)]
pub struct Proj {
    /// `[d_in, d_out]`, float or quantized; `[0, 0]` when the weight is packed.
    pub weight: Param<Tensor<2>>,
    /// `[d_in / block, d_out]` offsets added to every weight of a block, when quantized
    /// asymmetrically.
    pub offset: Option<Param<Tensor<2>>>,
    /// Inputs per offset block.
    pub block: usize,
    /// The weight in [`crate::qmatmul`] blocks, when the CPU kernels run this projection.
    #[module(skip)]
    pub packed: Option<SharedWeight>,
}

impl Proj {
    /// A plain projection from a `[d_in, d_out]` weight.
    pub fn new(weight: Tensor<2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            offset: None,
            block: 1,
            packed: None,
        }
    }

    /// `[d_in, d_out]`, however the weight is stored.
    pub fn dims(&self) -> [usize; 2] {
        match &self.packed {
            Some(p) => p.dims(),
            None => self.weight.val().dims(),
        }
    }

    /// Applies the projection.
    ///
    /// # Shapes
    ///
    /// - x: `[..., d_in]`
    /// - output: `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if let Some(packed) = &self.packed {
            return packed_matmul(x, packed);
        }
        let y = linear(x.clone(), self.weight.val(), None);
        let Some(offset) = &self.offset else {
            return y;
        };
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product::<usize>();
        let sums = x
            .reshape([rows, d_in / self.block, self.block])
            .sum_dim(2)
            .reshape([rows, d_in / self.block]);
        let shift = linear(sums, offset.val(), None);
        y.clone() + shift.reshape(y.shape())
    }
}
