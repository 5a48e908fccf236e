//! The LLaMA-family decoder, written with Burn modules.

mod attention;
mod config;
mod host_attention;
mod kv_cache;
mod mlp;
mod proj;
mod rope;
#[cfg(test)]
mod tests;

pub use attention::Attention;
pub use config::{ConfigError, LLAMA_FAMILY, LlamaConfig};
pub use kv_cache::KvCache;
pub use mlp::Mlp;
pub use proj::{LoraDelta, Proj};
pub use rope::Rope;

use burn::nn::{Embedding, RmsNorm};
use burn::prelude::*;

/// One decoder block: pre-norm attention and pre-norm SwiGLU MLP, each with a residual.
#[derive(Module, Debug)]
pub struct Block {
    /// Norm before attention.
    pub attn_norm: RmsNorm,
    /// Grouped-query attention.
    pub attn: Attention,
    /// Norm before the MLP.
    pub ffn_norm: RmsNorm,
    /// SwiGLU MLP.
    pub mlp: Mlp,
}

impl Block {
    /// The block's seven projections: query, key, value, output, gate, up, down.
    pub fn projections(&self) -> [&Proj; 7] {
        [
            &self.attn.q,
            &self.attn.k,
            &self.attn.v,
            &self.attn.o,
            &self.mlp.gate,
            &self.mlp.up,
            &self.mlp.down,
        ]
    }
}

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation: the output projection is the largest single
    /// matmul, so prefill skips it for every other position).
    Last,
    /// Every position (scoring a continuation).
    All,
}

/// A LLaMA-family decoder: embedding, blocks, final norm, output projection.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embedding `[vocab, d_model]` — `None` when the embedding is tied to the output
    /// projection and that projection can hand out its rows ([`Proj::can_embed`]): the table
    /// is then held once, at the level the model runs at.
    pub embedding: Option<Embedding>,
    /// Decoder blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Output projection, `[d_model, vocab]` (the embedding, transposed, when tied).
    pub output: Proj,
    /// Rotary position tables.
    pub rope: Rope,
}

impl Llama {
    /// Runs `tokens` through the model, continuing from what `cache` holds.
    ///
    /// # Shapes
    ///
    /// - tokens: `[batch, seq]`
    /// - output: `[batch, seq, vocab]` for [`Logits::All`], `[batch, 1, vocab]` for
    ///   [`Logits::Last`]
    pub fn forward(
        &self,
        tokens: Tensor<2, Int>,
        cache: &mut KvCache,
        logits: Logits,
    ) -> Tensor<3> {
        let [_, s] = tokens.dims();
        let device = tokens.device();
        let pos0 = cache.next_pos;
        let first_kept = cache.first_kept();
        let window = cache.window;
        let first_visible =
            window.map_or(first_kept, |w| first_kept.max((pos0 + 1).saturating_sub(w)));
        let at = kv_cache::StepPositions {
            pos0,
            first_kept,
            window,
        };
        let mut x = match &self.embedding {
            Some(table) => table.forward(tokens),
            None => self.output.embed(tokens),
        };
        let mask =
            (s > 1).then(|| causal_mask(pos0, s, first_visible, window, &device).cast(x.dtype()));
        for (block, layer_cache) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let h = block.attn.forward(
                block.attn_norm.forward(x.clone()),
                &self.rope,
                layer_cache,
                at,
                mask.clone(),
            );
            x = x + h;
            x = x.clone() + block.mlp.forward(block.ffn_norm.forward(x));
        }
        cache.next_pos += s;
        let x = match logits {
            Logits::All => x,
            Logits::Last => x.narrow(1, s - 1, 1),
        };
        self.output.forward(self.norm.forward(x))
    }

    /// Casts the float parameters and tables that are not matmul weights to `f16`, so that
    /// activations stay in `f16` from the embedding on (see [`crate::quant`]).
    pub(crate) fn cast_to_f16(&mut self) {
        use burn::tensor::DType::F16;
        if let Some(table) = &mut self.embedding {
            table.weight = table.weight.clone().map(|t| t.cast(F16));
        }
        let norms = self
            .blocks
            .iter_mut()
            .flat_map(|b| [&mut b.attn_norm, &mut b.ffn_norm])
            .chain([&mut self.norm]);
        for norm in norms {
            norm.gamma = norm.gamma.clone().map(|t| t.cast(F16));
        }
        self.rope.cast(F16);
    }

    /// Runs attention as Burn's fused `attention` operation (on Flex, whose implementation
    /// handles grouped key/value heads; see [`Attention::fused`]).
    pub fn use_fused_attention(&mut self, fused: bool) {
        for block in &mut self.blocks {
            block.attn.fused = fused;
        }
    }

    /// Longest sequence the model's position tables cover.
    pub fn max_seq_len(&self) -> usize {
        self.rope.max_seq_len()
    }

    /// Number of decoder blocks.
    pub fn n_layers(&self) -> usize {
        self.blocks.len()
    }
}

/// `[seq, visible]` additive mask: query `i` (position `pos0 + i`) sees key `j` (position
/// `first_visible + j`) when the key is not in its future and, with a window `W`, is one of
/// its last `W` positions.
fn causal_mask(
    pos0: usize,
    s: usize,
    first_visible: usize,
    window: Option<usize>,
    device: &Device,
) -> Tensor<2> {
    let t = pos0 + s - first_visible;
    let mut m = vec![0f32; s * t];
    for i in 0..s {
        let qp = pos0 + i;
        for j in 0..t {
            let kp = first_visible + j;
            let visible = kp <= qp && window.is_none_or(|w| qp - kp < w);
            if !visible {
                m[i * t + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_data(TensorData::new(m, [s, t]), device)
}
