use super::host_attention::{HeadShape, rope_rows};
use super::kv_cache::{LayerCache, StepPositions};
use super::proj::Proj;
use super::rope::Rope;
use crate::lora::LoraPair;
use crate::qmatmul::{PackedWeight, matmul_concat};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

/// Grouped-query self-attention: `n_heads` query heads share `n_kv_heads` key/value heads,
/// query head `h` reading key/value head `h / (n_heads / n_kv_heads)`.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection, `[d_model, n_heads * head_dim]`.
    pub q: Proj,
    /// Key projection, `[d_model, n_kv_heads * head_dim]`.
    pub k: Proj,
    /// Value projection, `[d_model, n_kv_heads * head_dim]`.
    pub v: Proj,
    /// Output projection, `[n_heads * head_dim, d_model]`.
    pub o: Proj,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads.
    pub n_kv_heads: usize,
    /// Run the scores, softmax and weighted sum as Burn's one `attention` operation, which
    /// Flex implements natively for grouped heads (reading the cached keys in place); the
    /// other backends' `attention` falls back to separate matmuls that need equal head counts,
    /// so they take the explicit path below. See [`super::Llama::use_fused_attention`].
    #[module(skip)]
    pub fused: bool,
}

impl Attention {
    /// Attends from this step's tokens (absolute positions `pos0..pos0 + seq`) to themselves
    /// and the cached ones, then appends this step's keys and values to `cache`.
    ///
    /// `mask`, when given, is added to the scores of every head: `0` where a query may see a
    /// key and `-inf` where it may not. It is needed whenever `seq > 1`. When all four
    /// projections are packed, the whole step runs on the host ([`forward_host`]), which
    /// applies the same causal and window rule itself.
    ///
    /// # Shapes
    ///
    /// - x: `[batch, seq, d_model]`
    /// - mask: `[seq, visible_keys]`
    /// - output: `[batch, seq, d_model]`
    pub(crate) fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        cache: &mut LayerCache,
        at: StepPositions,
        mask: Option<Tensor<2>>,
    ) -> Tensor<3> {
        if let Some(weights) = self.packed_weights() {
            let loras = [&self.q, &self.k, &self.v, &self.o]
                .map(|p| p.lora.as_ref().and_then(|l| l.host.as_deref()));
            return forward_host(
                x,
                (weights, loras),
                (self.n_heads, self.n_kv_heads),
                rope,
                cache,
                at,
            );
        }
        let [b, s, _] = x.dims();
        let (h, kvh) = (self.n_heads, self.n_kv_heads);
        let q = self.q.forward(x.clone());
        let k = self.k.forward(x.clone());
        let v = self.v.forward(x);
        let hd = q.dims()[2] / h;
        let heads = |t: Tensor<3>, n: usize| t.reshape([b, s, n, hd]).swap_dims(1, 2);
        let q = rope.apply(heads(q, h), at.pos0);
        let k = rope.apply(heads(k, kvh), at.pos0);
        let v = heads(v, kvh);
        let (k, v, _) = cache.append(k, v, at);
        let t = k.dims()[2];
        if self.fused {
            // `true` where the additive mask holds `-inf`: the keys a query may not see.
            let mask = mask.map(|m| m.lower_elem(-1.0).reshape([1, 1, s, t]));
            let out = attention(q, k, v, mask, None, AttentionModuleOptions::default());
            return self.o.forward(out.swap_dims(1, 2).reshape([b, s, h * hd]));
        }
        let g = h / kvh;
        // Fold each group's query heads into the row axis, so one batched matmul per KV head
        // serves all of them without materialising repeated keys.
        let q = q.reshape([b, kvh, g * s, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
        let scores = match mask {
            Some(mask) => {
                let m = mask.reshape([1, 1, 1, s, t]);
                (scores.reshape([b, kvh, g, s, t]) + m).reshape([b, kvh, g * s, t])
            }
            _ => scores,
        };
        let out = softmax(scores, 3).matmul(v);
        let out = out
            .reshape([b, h, s, hd])
            .swap_dims(1, 2)
            .reshape([b, s, h * hd]);
        self.o.forward(out)
    }

    /// The four projections' packed weights `[q, k, v, o]`, when all of them are packed
    /// (the CPU backends at q8/q4), which sends the step to [`forward_host`].
    fn packed_weights(&self) -> Option<[&PackedWeight; 4]> {
        let [Some(q), Some(k), Some(v), Some(o)] =
            [&self.q, &self.k, &self.v, &self.o].map(|p| p.packed.as_deref())
        else {
            return None;
        };
        Some([q, k, v, o])
    }
}

/// An attention step on the host: the projections by [`crate::qmatmul`]'s kernels, rotation,
/// cache and attention by [`super::host_attention`]; one copy of `x` out of the backend and one
/// of the result back. Unmerged LoRA adapters add their products to the query, key and value
/// rows before rotation and to the output.
fn forward_host(
    x: Tensor<3>,
    ([wq, wk, wv, wo], loras): ([&PackedWeight; 4], [Option<&LoraPair>; 4]),
    (heads, kv_heads): (usize, usize),
    rope: &Rope,
    cache: &mut LayerCache,
    at: StepPositions,
) -> Tensor<3> {
    let [b, s, _] = x.dims();
    let device = x.device();
    let rows = x
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32 just above");
    let mut qkv = matmul_concat(&[wq, wk, wv], &rows, b * s);
    let widths = [wq, wk, wv].map(|w| w.dims()[1]);
    let stride = widths.iter().sum::<usize>();
    let mut offset = 0;
    for (lora, width) in loras.iter().zip(widths) {
        if let Some(pair) = lora {
            pair.add_product(&rows, b * s, &mut qkv, stride, offset);
        }
        offset += width;
    }
    let shape = HeadShape {
        batch: b,
        seq: s,
        heads,
        kv_heads,
        head_dim: wq.dims()[1] / heads,
    };
    let (cos, sin) = rope.host_tables();
    rope_rows(&mut qkv, shape, at.pos0, cos, sin);
    let out = cache.host.attend(&qkv, shape, at);
    let mut y = matmul_concat(&[wo], &out, b * s);
    let d_out = wo.dims()[1];
    if let Some(pair) = loras[3] {
        pair.add_product(&out, b * s, &mut y, d_out, 0);
    }
    Tensor::from_data(TensorData::new(y, [b, s, d_out]), &device)
}
