use super::proj::Proj;
use crate::qmatmul::packed_swiglu;
use burn::prelude::*;
use burn::tensor::activation::silu;

/// SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection, `[d_model, d_ff]`.
    pub gate: Proj,
    /// Up projection, `[d_model, d_ff]`.
    pub up: Proj,
    /// Down projection, `[d_ff, d_model]`.
    pub down: Proj,
}

impl Mlp {
    /// Applies the block.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, d_model]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        if let (Some(gate), Some(up)) = (&self.gate.packed, &self.up.packed) {
            return self.down.forward(packed_swiglu(x, gate, up));
        }
        let gate = silu(self.gate.forward(x.clone()));
        self.down.forward(gate * self.up.forward(x))
    }
}
