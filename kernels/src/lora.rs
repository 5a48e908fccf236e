//! LoRA adapters on the attention projections (query, key, value, output): a rank-`r` update
//! `W' = W + s · A B` per projection, run either **unmerged** (the base weight as the level
//! stores it, plus the two small products `(x A) B` at every step: how adapters are shipped
//! beside a fixed base model) or **merged** into the weight in f32 before it is quantized (one
//! model, no extra work per step).
//!
//! Adapters come from a PEFT safetensors file ([`LoraAdapters::from_peft`]) or are seeded
//! synthetic ones ([`LoraAdapters::synthetic`]) when no file is given, labelled as such in
//! every row. In socbench's layout a projection is `y = x W` with `W` `[d_in, d_out]`, so
//! `A` is `[d_in, r]` (PEFT's `lora_A.weight`, `[r, d_in]`, transposed) and `B` is
//! `[r, d_out]` (PEFT's `lora_B.weight`, `[d_out, r]`, transposed, with the scale folded in).

use crate::KernelError;
use crate::load::SplitMix64;
use crate::model::LlamaConfig;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

mod safetensors;

pub use safetensors::{read_safetensors, write_safetensors};

/// How the adapters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoraMode {
    /// Base weight unchanged, `(x A) B` added at every step.
    Unmerged,
    /// `A B` added to the f32 weight before it is quantized.
    Merged,
}

impl LoraMode {
    /// `unmerged` or `merged`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unmerged => "unmerged",
            Self::Merged => "merged",
        }
    }
}

impl fmt::Display for LoraMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LoraMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unmerged" => Ok(Self::Unmerged),
            "merged" => Ok(Self::Merged),
            other => Err(format!(
                "unknown LoRA mode {other:?} (valid: none, unmerged, merged)"
            )),
        }
    }
}

/// Largest rank accepted (PEFT adapters for small models use 4–64).
pub const MAX_RANK: usize = 256;

/// Seed of the synthetic adapters (with the rank mixed in): the same on every machine.
pub const SYNTHETIC_SEED: u64 = 0x104A_2026;

/// The adapters a model variant runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// Unmerged or merged.
    pub mode: LoraMode,
    /// Rank of the synthetic adapters; a file's own rank must equal it.
    pub rank: usize,
    /// A PEFT safetensors file; `None`: synthetic adapters seeded from
    /// [`SYNTHETIC_SEED`] and the rank.
    #[serde(default)]
    pub file: Option<String>,
}

impl LoraSpec {
    /// The adapters this spec names, shaped for `config`.
    pub fn adapters(&self, config: &LlamaConfig) -> Result<LoraAdapters, KernelError> {
        let adapters = match &self.file {
            None => LoraAdapters::synthetic(self.rank, config)?,
            Some(path) => LoraAdapters::from_peft(Path::new(path), config)?,
        };
        if adapters.rank != self.rank {
            return Err(KernelError::Invalid(format!(
                "LoRA file {}: rank {}, the plan asks for rank {}",
                self.file.as_deref().unwrap_or("(synthetic)"),
                adapters.rank,
                self.rank
            )));
        }
        Ok(adapters)
    }
}

/// One projection's adapter: `A` `[d_in, r]` and `B` `[r, d_out]`, row-major, scale in `B`.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    /// Inputs.
    pub d_in: usize,
    /// Outputs.
    pub d_out: usize,
    /// Rank.
    pub rank: usize,
    /// `[d_in, rank]`.
    pub a: Vec<f32>,
    /// `[rank, d_out]`, scaled.
    pub b: Vec<f32>,
}

/// Rows at which [`LoraPair::add_product`] splits the work across the thread pool.
const PARALLEL_ROWS: usize = 8;

impl LoraPair {
    /// Adds `(x A) B` for each of `rows` rows of `x` (`[rows, d_in]`) into columns
    /// `offset..offset + d_out` of `y`, whose rows are `stride` wide.
    ///
    /// # Panics
    ///
    /// When `x` or `y` is shorter than the shapes say.
    pub fn add_product(&self, x: &[f32], rows: usize, y: &mut [f32], stride: usize, offset: usize) {
        assert!(x.len() >= rows * self.d_in && y.len() >= rows * stride);
        assert!(offset + self.d_out <= stride);
        let r = self.rank;
        // `t` is the row's `x A` (`rank` values), one buffer reused across the rows of a
        // rayon job (or of the whole call, serially).
        let one = |t: &mut Vec<f32>, (xr, yr): (&[f32], &mut [f32])| {
            t.clear();
            t.resize(r, 0.0);
            for (i, &xi) in xr.iter().enumerate() {
                for (t, &a) in t.iter_mut().zip(&self.a[i * r..(i + 1) * r]) {
                    *t += xi * a;
                }
            }
            let out = &mut yr[offset..offset + self.d_out];
            for (k, &tk) in t.iter().enumerate() {
                for (o, &b) in out
                    .iter_mut()
                    .zip(&self.b[k * self.d_out..(k + 1) * self.d_out])
                {
                    *o += tk * b;
                }
            }
        };
        let x = &x[..rows * self.d_in];
        let y = &mut y[..rows * stride];
        if rows >= PARALLEL_ROWS {
            x.par_chunks(self.d_in)
                .zip(y.par_chunks_mut(stride))
                .for_each_init(|| Vec::with_capacity(r), one);
        } else {
            let mut t = Vec::with_capacity(r);
            x.chunks(self.d_in)
                .zip(y.chunks_mut(stride))
                .for_each(|row| one(&mut t, row));
        }
    }

    /// `W += A B` for a `[d_in, d_out]` row-major weight (merging, in f32).
    ///
    /// # Panics
    ///
    /// When `w` does not hold `d_in * d_out` values.
    pub fn merge_into(&self, w: &mut [f32]) {
        assert_eq!(w.len(), self.d_in * self.d_out, "weight shape");
        let r = self.rank;
        w.par_chunks_mut(self.d_out)
            .enumerate()
            .for_each(|(i, row)| {
                for (k, &a) in self.a[i * r..(i + 1) * r].iter().enumerate() {
                    for (w, &b) in row
                        .iter_mut()
                        .zip(&self.b[k * self.d_out..(k + 1) * self.d_out])
                    {
                        *w += a * b;
                    }
                }
            });
    }

    /// Bytes the pair holds as f32.
    pub fn bytes(&self) -> u64 {
        4 * (self.a.len() + self.b.len()) as u64
    }
}

/// Index of each adapted projection within a layer's `[q, k, v, o]`.
pub const PROJECTIONS: [&str; 4] = ["q", "k", "v", "o"];

/// Adapters for every layer: `layers[l][p]` for projection [`PROJECTIONS`]`[p]`, `None` where
/// the file has none (PEFT adapters often cover only some projections).
#[derive(Debug, Clone)]
pub struct LoraAdapters {
    /// Rank (the same for every pair).
    pub rank: usize,
    /// Per layer, per projection.
    pub layers: Vec<[Option<Arc<LoraPair>>; 4]>,
    /// `synthetic` or the file's name.
    pub source: String,
}

/// `[d_in, d_out]` of projection `p` in a layer of `config`.
fn projection_dims(config: &LlamaConfig, p: usize) -> [usize; 2] {
    let (d, kv) = (config.d_model, config.n_kv_heads * config.head_dim());
    match p {
        0 | 3 => [d, d],
        _ => [d, kv],
    }
}

fn check_rank(rank: usize, what: &str) -> Result<(), KernelError> {
    if rank == 0 || rank > MAX_RANK {
        return Err(KernelError::Invalid(format!(
            "{what}: LoRA rank {rank} (valid: 1 to {MAX_RANK})"
        )));
    }
    Ok(())
}

impl LoraAdapters {
    /// Seeded random adapters of `rank` on all four attention projections of every layer:
    /// `A` uniform with unit-variance columns, `B` small (the update is a few per cent of the
    /// projection's output), so the work is real and the model stays close to its base.
    pub fn synthetic(rank: usize, config: &LlamaConfig) -> Result<Self, KernelError> {
        check_rank(rank, "synthetic adapters")?;
        let mut rng = SplitMix64(SYNTHETIC_SEED ^ rank as u64);
        let mut uniform = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * scale)
                .collect()
        };
        let layers = (0..config.n_layers)
            .map(|_| {
                std::array::from_fn(|p| {
                    let [d_in, d_out] = projection_dims(config, p);
                    let a = uniform(d_in * rank, (3.0 / d_in as f32).sqrt());
                    let b = uniform(rank * d_out, 0.02 / (rank as f32).sqrt());
                    Some(Arc::new(LoraPair {
                        d_in,
                        d_out,
                        rank,
                        a,
                        b,
                    }))
                })
            })
            .collect();
        Ok(Self {
            rank,
            layers,
            source: "synthetic".into(),
        })
    }

    /// Bytes all pairs hold as f32.
    pub fn bytes(&self) -> u64 {
        self.layers
            .iter()
            .flatten()
            .flatten()
            .map(|p| p.bytes())
            .sum()
    }

    /// Reads a PEFT adapter: tensors
    /// `…layers.{l}.self_attn.{q,k,v,o}_proj.lora_A.weight` (`[r, d_in]`) and
    /// `…lora_B.weight` (`[d_out, r]`), F32, F16 or BF16. The scale is `lora_alpha / r`
    /// (`/ sqrt(r)` with `use_rslora`) from `adapter_config.json` beside the file, `1` without
    /// one. The query and key rows of `B` are permuted into GGUF's rotary order, as GGUF
    /// converters permute the base weights. Any other LoRA tensor (an MLP adapter, a layer the
    /// model does not have, a shape that does not fit) is an error naming the tensor.
    pub fn from_peft(path: &Path, config: &LlamaConfig) -> Result<Self, KernelError> {
        let bad =
            |msg: String| KernelError::Invalid(format!("LoRA file {}: {msg}", path.display()));
        let tensors = read_safetensors(path).map_err(bad)?;
        let scale = peft_scale(path).map_err(bad)?;
        let mut parts: Vec<[[Option<Vec<f32>>; 2]; 4]> =
            (0..config.n_layers).map(|_| Default::default()).collect();
        let mut rank = None;
        for (name, shape, values) in tensors {
            let Some((layer, p, which)) = parse_peft_name(&name) else {
                if name.contains("lora_magnitude_vector") {
                    return Err(bad(format!(
                        "tensor {name}: a DoRA adapter (magnitude vectors); socbench runs plain \
                         LoRA (lora_A, lora_B)"
                    )));
                }
                if name.contains("lora_") && name.ends_with(".bias") {
                    return Err(bad(format!(
                        "tensor {name}: an adapter bias; socbench runs bias-free LoRA (lora_A, \
                         lora_B weights)"
                    )));
                }
                if name.contains("lora_") {
                    return Err(bad(format!(
                        "tensor {name}: socbench applies adapters to the attention projections \
                         (self_attn.{{q,k,v,o}}_proj) only"
                    )));
                }
                continue;
            };
            if layer >= config.n_layers {
                return Err(bad(format!(
                    "tensor {name}: layer {layer}, the model has {} layers",
                    config.n_layers
                )));
            }
            let [d_in, d_out] = projection_dims(config, p);
            if shape.len() != 2 {
                return Err(bad(format!(
                    "tensor {name}: shape {shape:?}, expected a matrix"
                )));
            }
            let r = *rank.get_or_insert(if which == 0 { shape[0] } else { shape[1] });
            let want = if which == 0 {
                vec![r, d_in]
            } else {
                vec![d_out, r]
            };
            if shape != want {
                return Err(bad(format!(
                    "tensor {name}: shape {shape:?}, expected {want:?} (rank {r})"
                )));
            }
            parts[layer][p][which] = Some(values);
        }
        let Some(rank) = rank else {
            return Err(bad(
                "no lora_A/lora_B tensors of self_attn.{q,k,v,o}_proj".into()
            ));
        };
        if let Some(r) = config_rank(path).map_err(bad)?
            && r != rank
        {
            return Err(bad(format!(
                "adapter_config.json says r = {r}, its tensors have rank {rank}"
            )));
        }
        check_rank(rank, &path.display().to_string())?;
        let hd = config.head_dim();
        let mut layers = Vec::with_capacity(config.n_layers);
        for (l, layer) in parts.into_iter().enumerate() {
            let mut out: [Option<Arc<LoraPair>>; 4] = Default::default();
            for (p, [a, b]) in layer.into_iter().enumerate() {
                let (a, b) = match (a, b) {
                    (None, None) => continue,
                    (Some(a), Some(b)) => (a, b),
                    _ => {
                        return Err(bad(format!(
                            "layer {l} {}_proj has only one of lora_A and lora_B",
                            PROJECTIONS[p]
                        )));
                    }
                };
                let [d_in, d_out] = projection_dims(config, p);
                let heads = match p {
                    0 => Some(config.n_heads),
                    1 => Some(config.n_kv_heads),
                    _ => None,
                };
                let mut pair = LoraPair {
                    d_in,
                    d_out,
                    rank,
                    a: vec![0.0; d_in * rank],
                    b: vec![0.0; rank * d_out],
                };
                for k in 0..rank {
                    for i in 0..d_in {
                        pair.a[i * rank + k] = a[k * d_in + i];
                    }
                    for o in 0..d_out {
                        let src = heads.map_or(o, |_| hf_row(o, hd));
                        pair.b[k * d_out + o] = scale * b[src * rank + k];
                    }
                }
                out[p] = Some(Arc::new(pair));
            }
            layers.push(out);
        }
        let source = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Ok(Self {
            rank,
            layers,
            source,
        })
    }

    /// Writes these adapters as a PEFT safetensors file (F32, scale 1, query and key rows in
    /// Hugging Face order): the inverse of [`LoraAdapters::from_peft`], for tests and for
    /// trying a file-based run without a trained adapter.
    pub fn write_peft(&self, path: &Path, config: &LlamaConfig) -> Result<(), String> {
        let hd = config.head_dim();
        let mut tensors = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            for (p, pair) in layer.iter().enumerate() {
                let Some(pair) = pair else { continue };
                let (r, d_in, d_out) = (pair.rank, pair.d_in, pair.d_out);
                let mut a = vec![0f32; r * d_in];
                let mut b = vec![0f32; d_out * r];
                for k in 0..r {
                    for i in 0..d_in {
                        a[k * d_in + i] = pair.a[i * r + k];
                    }
                    for o in 0..d_out {
                        let dst = if p < 2 { hf_row(o, hd) } else { o };
                        b[dst * r + k] = pair.b[k * d_out + o];
                    }
                }
                let name = |w: &str| {
                    format!(
                        "base_model.model.model.layers.{l}.self_attn.{}_proj.lora_{w}.weight",
                        PROJECTIONS[p]
                    )
                };
                tensors.push((name("A"), vec![r, d_in], a));
                tensors.push((name("B"), vec![d_out, r], b));
            }
        }
        write_safetensors(path, &tensors)
    }
}

/// The Hugging Face output row of GGUF query/key row `o` (head dimension `hd`): GGUF holds each
/// head's rotary pairs adjacent (`2j`, `2j + 1`), Hugging Face holds them half a head apart
/// (`j`, `j + hd / 2`).
fn hf_row(o: usize, hd: usize) -> usize {
    let (head, within) = (o / hd, o % hd);
    let (j, t) = (within / 2, within % 2);
    head * hd + t * (hd / 2) + j
}

/// `(layer, projection index, 0 for A / 1 for B)` of a PEFT tensor name.
fn parse_peft_name(name: &str) -> Option<(usize, usize, usize)> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let rest = rest.strip_prefix("self_attn.")?;
    let (proj, rest) = rest.split_once("_proj.")?;
    let p = PROJECTIONS.iter().position(|&q| q == proj)?;
    let which = match rest {
        "lora_A.weight" => 0,
        "lora_B.weight" => 1,
        _ => return None,
    };
    Some((layer, p, which))
}

/// `adapter_config.json` beside `path`, when there is one.
fn peft_config(path: &Path) -> Result<Option<serde_json::Value>, String> {
    let config = path.with_file_name("adapter_config.json");
    let Ok(text) = std::fs::read_to_string(&config) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", config.display()))?;
    // Per-module ranks or scales would need per-tensor handling.
    for key in ["rank_pattern", "alpha_pattern"] {
        if v.get(key)
            .and_then(serde_json::Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(format!(
                "{}: {key} (per-module ranks or scales) is not supported; one r and lora_alpha \
                 for every module is",
                config.display()
            ));
        }
    }
    Ok(Some(v))
}

/// The `r` of `adapter_config.json`, when there is one.
fn config_rank(path: &Path) -> Result<Option<usize>, String> {
    Ok(peft_config(path)?
        .and_then(|v| v.get("r").and_then(serde_json::Value::as_u64))
        .map(|r| r as usize))
}

/// `lora_alpha / r` (or `/ sqrt(r)` with `use_rslora`) from `adapter_config.json` beside
/// `path`; 1 when there is none.
fn peft_scale(path: &Path) -> Result<f32, String> {
    let Some(v) = peft_config(path)? else {
        return Ok(1.0);
    };
    let config = path.with_file_name("adapter_config.json");
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    match (num("lora_alpha"), num("r")) {
        (Some(alpha), Some(r)) if r > 0.0 => {
            let rs = v.get("use_rslora").and_then(serde_json::Value::as_bool) == Some(true);
            Ok((alpha / if rs { r.sqrt() } else { r }) as f32)
        }
        _ => Err(format!(
            "{}: needs numbers lora_alpha and r (> 0)",
            config.display()
        )),
    }
}

/// The rank of the PEFT adapter in `path` (what a sweep's `lora_rank` must be with `--lora`).
pub fn peft_rank(path: &Path) -> Result<usize, String> {
    let tensors = read_safetensors(path)?;
    tensors
        .iter()
        .find_map(|(name, shape, _)| match parse_peft_name(name) {
            Some((_, _, 0)) => shape.first().copied(),
            _ => None,
        })
        .ok_or_else(|| {
            format!(
                "{}: no lora_A tensor of self_attn.{{q,k,v,o}}_proj",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests;
