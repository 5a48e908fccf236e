use burn::prelude::*;
use std::sync::Arc;

/// Rotary position embedding in GGUF's LLaMA convention: the pairs `(x[2i], x[2i+1])` of each
/// head are rotated by `pos * theta^(-2i/d)`. (GGUF converters permute the Q/K weights so that
/// this adjacent-pair form equals Hugging Face's rotate-half form.)
#[derive(Module, Debug)]
pub struct Rope {
    /// `cos(pos * freq_i)`, `[max_seq_len, head_dim / 2]`.
    cos: Tensor<2>,
    /// `sin(pos * freq_i)`, `[max_seq_len, head_dim / 2]`.
    sin: Tensor<2>,
    /// The same tables in host memory, `(cos, sin)`, for [`super::host_attention`].
    #[module(skip)]
    host: Arc<(Vec<f32>, Vec<f32>)>,
}

impl Rope {
    /// Precomputes the tables for positions `0..max_seq_len`.
    pub fn new(head_dim: usize, max_seq_len: usize, theta: f64, device: &Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_seq_len * half);
        let mut sin = Vec::with_capacity(max_seq_len * half);
        // In f64 so that long positions keep their precision.
        let freqs: Vec<f64> = (0..half)
            .map(|i| theta.powf(-2.0 * i as f64 / head_dim as f64))
            .collect();
        for pos in 0..max_seq_len {
            for freq in &freqs {
                let (s, c) = (pos as f64 * freq).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        let shape = [max_seq_len, half];
        Self {
            cos: Tensor::from_data(TensorData::new(cos.clone(), shape), device),
            sin: Tensor::from_data(TensorData::new(sin.clone(), shape), device),
            host: Arc::new((cos, sin)),
        }
    }

    /// Casts the tables to `dtype`, the dtype of the activations they multiply.
    pub(crate) fn cast(&mut self, dtype: burn::tensor::DType) {
        self.cos = self.cos.clone().cast(dtype);
        self.sin = self.sin.clone().cast(dtype);
    }

    /// `(cos, sin)` in host memory, each `[max_seq_len, head_dim / 2]` row-major (`f32`
    /// whatever [`Rope::cast`] made of the tensors).
    pub(crate) fn host_tables(&self) -> (&[f32], &[f32]) {
        (&self.host.0, &self.host.1)
    }

    /// Longest sequence the tables cover.
    pub fn max_seq_len(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates `x` as if its sequence axis started at absolute position `start`.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, heads, seq, head_dim]`
    /// - output: `[batch, heads, seq, head_dim]`
    pub fn apply(&self, x: Tensor<4>, start: usize) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let half = d / 2;
        let x = x.reshape([b, h, s, half, 2]);
        let x0 = x.clone().narrow(4, 0, 1);
        let x1 = x.narrow(4, 1, 1);
        let cos = self
            .cos
            .clone()
            .narrow(0, start, s)
            .reshape([1, 1, s, half, 1]);
        let sin = self
            .sin
            .clone()
            .narrow(0, start, s)
            .reshape([1, 1, s, half, 1]);
        let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
        let r1 = x0 * sin + x1 * cos;
        Tensor::cat(vec![r0, r1], 4).reshape([b, h, s, d])
    }
}
