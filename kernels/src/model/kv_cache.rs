use super::host_attention::HostKv;
use burn::prelude::*;

/// Where a forward step sits: the absolute position of its first token, of the first cached
/// key, and the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepPositions {
    /// Absolute position of the step's first token.
    pub pos0: usize,
    /// Absolute position of the first key still cached.
    pub first_kept: usize,
    /// KV window, `None` for all positions.
    pub window: Option<usize>,
}

/// Keys and values of one attention layer for the positions still in the window.
#[derive(Debug, Default, Clone)]
pub(crate) struct LayerCache {
    /// `[batch, kv_heads, kept, head_dim]`, or `None` before the first step (Burn's path).
    kv: Option<(Tensor<4>, Tensor<4>)>,
    /// The same in host memory, for the packed CPU path (see [`super::host_attention`]).
    pub(crate) host: HostKv,
}

impl LayerCache {
    /// Appends this step's keys and values (for absolute positions `pos0..pos0 + seq`) and
    /// returns the keys and values this step's queries may see, with the absolute position of
    /// the first of them. With a window `W`, the query at `p` sees keys `p + 1 - W ..= p`, so a
    /// single-token step needs no mask; the cache keeps the last `W` positions afterwards.
    pub(crate) fn append(
        &mut self,
        k: Tensor<4>,
        v: Tensor<4>,
        at: StepPositions,
    ) -> (Tensor<4>, Tensor<4>, usize) {
        let StepPositions {
            pos0,
            first_kept,
            window,
        } = at;
        let (k_all, v_all) = match self.kv.take() {
            None => (k, v),
            Some((k0, v0)) => (Tensor::cat(vec![k0, k], 2), Tensor::cat(vec![v0, v], 2)),
        };
        let total = k_all.dims()[2];
        let tail = |t: &Tensor<4>, keep: usize| {
            if keep == total {
                t.clone()
            } else {
                t.clone().narrow(2, total - keep, keep)
            }
        };
        let keep = window.map_or(total, |w| w.min(total));
        self.kv = Some((tail(&k_all, keep), tail(&v_all, keep)));
        let first_visible =
            window.map_or(first_kept, |w| first_kept.max((pos0 + 1).saturating_sub(w)));
        let visible = total - (first_visible - first_kept);
        (tail(&k_all, visible), tail(&v_all, visible), first_visible)
    }

    /// Number of positions held.
    pub(crate) fn len(&self) -> usize {
        self.kv
            .as_ref()
            .map_or(self.host.len(), |(k, _)| k.dims()[2])
    }
}

/// The whole model's cache: the keys and values of every block, and the next absolute position.
/// Cloning shares the tensors' data (Burn tensors are reference-counted) and copies the keys
/// held in host memory; either way a later step appends to the clone without touching the
/// original.
#[derive(Debug, Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerCache>,
    /// Absolute position of the next token.
    pub(crate) next_pos: usize,
    /// Keep only the last `window` positions; `None` keeps all.
    pub(crate) window: Option<usize>,
}

impl KvCache {
    /// Bytes of keys and values held, every block's, at their element size: what the cache
    /// occupies (buffers' spare capacity aside). It grows with the positions run and is never
    /// sized by the model's maximum context.
    pub fn held_bytes(&self) -> u64 {
        self.layers
            .iter()
            .map(|l| {
                let burn = l.kv.as_ref().map_or(0, |(k, v)| {
                    let numel = |t: &Tensor<4>| t.dims().iter().product::<usize>();
                    (numel(k) + numel(v)) * k.dtype().size()
                });
                burn + l.host.held_bytes()
            })
            .sum::<usize>() as u64
    }

    /// Reserves room for `positions` positions per sequence in the host cache's buffers (with
    /// a window, for the window and as many again, what it holds before it compacts), so that
    /// they are allocated once, not moved as a run grows.
    pub fn reserve(&mut self, positions: usize) {
        let positions = self.window.map_or(positions, |w| positions.min(2 * w));
        for layer in &mut self.layers {
            layer.host.reserve = positions;
        }
    }

    /// An empty cache for `n_layers` blocks.
    pub fn new(n_layers: usize, window: Option<usize>) -> Self {
        Self {
            layers: (0..n_layers).map(|_| LayerCache::default()).collect(),
            next_pos: 0,
            window,
        }
    }

    /// Absolute position of the next token.
    pub fn next_position(&self) -> usize {
        self.next_pos
    }

    /// Positions held per layer (at most the window).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::len)
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Absolute position of the first cached key.
    pub(crate) fn first_kept(&self) -> usize {
        self.next_pos - self.len()
    }
}
