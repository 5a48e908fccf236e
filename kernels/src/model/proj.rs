use crate::lora::LoraPair;
use crate::qmatmul::{PackedWeight, SharedWeight, packed_matmul};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::module::linear;
use std::sync::Arc;

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
    /// An unmerged LoRA adapter, whose `(x A) B` is added to the output ([`crate::lora`]).
    pub lora: Option<LoraDelta>,
}

/// An unmerged LoRA adapter on a projection: as Burn tensors beside a Burn weight, in host
/// memory beside a packed one (whose step runs on the host).
#[derive(Module, Debug)]
pub struct LoraDelta {
    /// `A`, `[d_in, r]` (`[0, 0]` when held on the host).
    pub a: Param<Tensor<2>>,
    /// `B` with the scale folded in, `[r, d_out]` (`[0, 0]` when held on the host).
    pub b: Param<Tensor<2>>,
    /// The pair in host memory, for packed projections.
    #[module(skip)]
    pub host: Option<Arc<LoraPair>>,
}

impl LoraDelta {
    /// The adapter for `proj`: on the host when it is packed, else as tensors of `dtype` (the
    /// activations' float type) on `device`.
    pub fn new(
        pair: Arc<LoraPair>,
        proj: &Proj,
        dtype: burn::tensor::DType,
        device: &Device,
    ) -> Self {
        let empty = || {
            Param::from_tensor(Tensor::from_data(
                TensorData::new(Vec::<f32>::new(), [0, 0]),
                device,
            ))
        };
        if proj.packed.is_some() {
            return Self {
                a: empty(),
                b: empty(),
                host: Some(pair),
            };
        }
        let t = |v: &[f32], shape: [usize; 2]| {
            Param::from_tensor(
                Tensor::<2>::from_data(TensorData::new(v.to_vec(), shape), device).cast(dtype),
            )
        };
        Self {
            a: t(&pair.a, [pair.d_in, pair.rank]),
            b: t(&pair.b, [pair.rank, pair.d_out]),
            host: None,
        }
    }

    /// `(x A) B`.
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let Some(pair) = &self.host else {
            return linear(linear(x, self.a.val(), None), self.b.val(), None);
        };
        let dims = x.dims();
        let device = x.device();
        let rows = dims[..D - 1].iter().product::<usize>();
        let xs = x
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        let mut y = vec![0f32; rows * pair.d_out];
        pair.add_product(&xs, rows, &mut y, pair.d_out, 0);
        let mut shape = dims;
        shape[D - 1] = pair.d_out;
        Tensor::from_data(TensorData::new(y, shape), &device)
    }

    /// Bytes the adapter holds.
    pub fn bytes(&self) -> u64 {
        match &self.host {
            Some(pair) => pair.bytes(),
            None => {
                let n = |p: &Param<Tensor<2>>| {
                    let t = p.val();
                    (t.dims().iter().product::<usize>() * t.dtype().size()) as u64
                };
                n(&self.a) + n(&self.b)
            }
        }
    }
}

impl Proj {
    /// A plain projection from a `[d_in, d_out]` weight.
    pub fn new(weight: Tensor<2>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            offset: None,
            block: 1,
            packed: None,
            lora: None,
        }
    }

    /// A projection run by [`crate::qmatmul`]'s kernels from `packed`; the Burn weight is empty.
    pub fn packed(packed: PackedWeight, device: &Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(Vec::<f32>::new(), [0, 0]),
                device,
            )),
            offset: None,
            block: 1,
            packed: Some(std::sync::Arc::new(packed)),
            lora: None,
        }
    }

    /// Whether [`Proj::embed`] can read token rows from this weight: packed, or a plain float
    /// tensor (not Burn's quantized storage, which has no row lookup).
    pub fn can_embed(&self) -> bool {
        self.packed.is_some() || (self.offset.is_none() && self.weight.val().dtype().is_float())
    }

    /// The weights of outputs `tokens` as embedding rows (a tied embedding table is the output
    /// projection's weight, transposed): packed blocks are dequantized row by row, a float
    /// weight is gathered along its output axis. Only meaningful when [`Proj::can_embed`].
    ///
    /// # Shapes
    ///
    /// - tokens: `[batch, seq]`
    /// - output: `[batch, seq, d_in]`
    ///
    /// # Panics
    ///
    /// On a token id outside `0..d_out`, as Burn's embedding lookup does.
    pub fn embed(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        if let Some(packed) = &self.packed {
            let ids: Vec<i64> = tokens
                .into_data()
                .convert::<i64>()
                .try_to_vec()
                .unwrap_or_default();
            let d = packed.dims()[0];
            let mut rows = vec![0f32; ids.len() * d];
            for (row, &id) in rows.chunks_exact_mut(d).zip(&ids) {
                packed.column_into(usize::try_from(id).unwrap_or(usize::MAX), row);
            }
            return Tensor::from_data(TensorData::new(rows, [b, s, d]), &device);
        }
        let w = self.weight.val();
        let d = w.dims()[0];
        w.select(1, tokens.reshape([b * s]))
            .transpose()
            .reshape([b, s, d])
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
        match &self.lora {
            None => self.forward_base(x),
            Some(lora) => {
                let delta = lora.forward(x.clone());
                self.forward_base(x) + delta
            }
        }
    }

    /// The projection without its adapter.
    fn forward_base<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
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
