use crate::gguf::{GgufError, GgufFile};
use burn::config::Config;

/// Hyper-parameters of a LLaMA-family decoder, read from GGUF metadata (`{arch}.*` keys).
#[derive(Config, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Number of tokens in the vocabulary (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream (`{arch}.embedding_length`).
    pub d_model: usize,
    /// Number of decoder blocks (`{arch}.block_count`).
    pub n_layers: usize,
    /// Number of query heads (`{arch}.attention.head_count`).
    pub n_heads: usize,
    /// Number of key/value heads, fewer than `n_heads` for grouped-query attention.
    pub n_kv_heads: usize,
    /// Hidden width of the SwiGLU MLP (`{arch}.feed_forward_length`).
    pub d_ff: usize,
    /// RoPE base frequency (`{arch}.rope.freq_base`).
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Longest sequence the position tables cover (`{arch}.context_length`).
    #[config(default = 2048)]
    pub max_seq_len: usize,
}

/// Architectures whose GGUF layout is LLaMA's (same tensor names and RoPE convention).
pub const LLAMA_FAMILY: &[&str] = &["llama", "mistral"];

impl LlamaConfig {
    /// Reads the configuration from GGUF metadata.
    ///
    /// Fails when `general.architecture` is not LLaMA-family or a dimension is inconsistent.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ConfigError> {
        let arch = file.get_str("general.architecture")?;
        if !LLAMA_FAMILY.contains(&arch) {
            return Err(ConfigError::Architecture(arch.to_string()));
        }
        let key = |k: &str| format!("{arch}.{k}");
        let n_heads = file.get_usize(&key("attention.head_count"))?;
        let vocab_size = match file.get_usize(&key("vocab_size")) {
            Ok(v) => v,
            Err(GgufError::MissingKey { .. }) => file.get_str_array("tokenizer.ggml.tokens")?.len(),
            Err(e) => return Err(e.into()),
        };
        let config = Self {
            vocab_size,
            d_model: file.get_usize(&key("embedding_length"))?,
            n_layers: file.get_usize(&key("block_count"))?,
            n_heads,
            n_kv_heads: match file.get_usize(&key("attention.head_count_kv")) {
                Ok(v) => v,
                Err(GgufError::MissingKey { .. }) => n_heads,
                Err(e) => return Err(e.into()),
            },
            d_ff: file.get_usize(&key("feed_forward_length"))?,
            rope_theta: file.get_f64(&key("rope.freq_base")).unwrap_or(10000.0),
            norm_eps: file.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            max_seq_len: file.get_usize(&key("context_length")).unwrap_or(2048),
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks that the dimensions fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError::Inconsistent(what));
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.n_layers == 0 || self.vocab_size == 0 {
            return bad(format!("zero-sized dimension in {self:?}"));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "embedding_length {} is not a multiple of head_count {}",
                self.d_model, self.n_heads
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "head dimension {} is odd; RoPE needs pairs",
                self.head_dim()
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Number of parameters (with the output projection counted once when tied).
    pub fn n_params(&self) -> usize {
        let kv = self.n_kv_heads * self.head_dim();
        let per_layer = 2 * self.d_model * self.d_model
            + 2 * self.d_model * kv
            + 3 * self.d_model * self.d_ff
            + 2 * self.d_model;
        self.vocab_size * self.d_model + self.n_layers * per_layer + self.d_model
    }
}

/// A GGUF file whose metadata does not describe a model socbench can run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Missing or mistyped metadata.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Not a LLaMA-family model.
    #[error(
        "general.architecture is {0:?}; socbench runs LLaMA-family models ({families})",
        families = LLAMA_FAMILY.join(", ")
    )]
    Architecture(String),
    /// Dimensions that do not fit together.
    #[error("inconsistent model dimensions: {0}")]
    Inconsistent(String),
}
