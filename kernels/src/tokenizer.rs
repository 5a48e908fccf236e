//! The tokenizer stored in a GGUF file's metadata (`tokenizer.ggml.*`), for byte-level BPE
//! (`tokenizer.ggml.model = "gpt2"`) vocabularies such as SmolLM2's and LLaMA-3's.
//!
//! Built on the `tokenizers` crate: a BPE model from the vocabulary and merges, a byte-level
//! pre-tokenizer and decoder, and every control token (`token_type == 3`, e.g. `<|im_start|>`)
//! registered as a special token so that it is recognised as one token inside a prompt.

use crate::gguf::{GgufError, GgufFile};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

/// What can go wrong building or using the tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The GGUF metadata lacks or mistypes a tokenizer key.
    #[error("tokenizer metadata: {0}")]
    Metadata(#[from] GgufError),
    /// A tokenizer model other than byte-level BPE.
    #[error(
        "tokenizer.ggml.model is {0:?}; socbench reads byte-level BPE (\"gpt2\") tokenizers only"
    )]
    UnsupportedModel(String),
    /// A malformed merge rule.
    #[error(
        "tokenizer.ggml.merges entry #{index} ({merge:?}) is not two tokens separated by a space"
    )]
    BadMerge {
        /// Index in the merges array.
        index: usize,
        /// The entry.
        merge: String,
    },
    /// The `tokenizers` crate refused the vocabulary or the input.
    #[error("tokenizer: {0}")]
    Backend(String),
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (0..{vocab})")]
    BadId {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
}

/// A tokenizer read from GGUF metadata.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    vocab_size: usize,
    /// Beginning-of-sequence token id, when the file names one.
    pub bos_id: Option<u32>,
    /// End-of-sequence token id, when the file names one.
    pub eos_id: Option<u32>,
    /// Whether the file asks for a BOS token before the prompt.
    pub add_bos: bool,
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, TokenizerError> {
        let model = file.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(TokenizerError::UnsupportedModel(model.to_string()));
        }
        let tokens = file.get_str_array("tokenizer.ggml.tokens")?;
        let merges = file.get_str_array("tokenizer.ggml.merges")?;
        let types = match file.get_int_array("tokenizer.ggml.token_type") {
            Ok(t) => t,
            Err(GgufError::MissingKey { .. }) => vec![1; tokens.len()],
            Err(e) => return Err(e.into()),
        };
        // The digit split is SmolLM's (and LLaMA-3-style) pre-tokenizer; GPT-2 itself keeps
        // digit runs together.
        let pre = file.get_str("tokenizer.ggml.pre").unwrap_or("default");
        let split_digits = matches!(pre, "smollm" | "llama3" | "llama-bpe" | "smaug-bpe");
        let pre_tokenizer = build_pre_tokenizer(split_digits);
        let opt_id = |key: &str| file.get_usize(key).ok().map(|v| v as u32);
        let add_bos = matches!(
            file.get("tokenizer.ggml.add_bos_token"),
            Ok(crate::gguf::Value::Bool(true))
        );
        Self::build(&tokens, &merges, &types, pre_tokenizer).map(|inner| Self {
            inner,
            vocab_size: tokens.len(),
            bos_id: opt_id("tokenizer.ggml.bos_token_id"),
            eos_id: opt_id("tokenizer.ggml.eos_token_id"),
            add_bos,
        })
    }

    fn build(
        tokens: &[&str],
        merges: &[&str],
        types: &[i64],
        pre_tokenizer: PreTokenizerWrapper,
    ) -> Result<tokenizers::Tokenizer, TokenizerError> {
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges = merges
            .iter()
            .enumerate()
            .map(|(index, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| TokenizerError::BadMerge {
                        index,
                        merge: m.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| TokenizerError::Backend(e.to_string()))?;
        let mut tok = tokenizers::Tokenizer::new(bpe);
        tok.with_pre_tokenizer(Some(pre_tokenizer));
        tok.with_decoder(Some(ByteLevelDecoder::default()));
        // Token type 3 is CONTROL in GGUF: chat markers and end-of-text.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(types)
            .filter(|(_, ty)| **ty == 3)
            .map(|(t, _)| AddedToken::from(t.to_string(), true))
            .collect();
        tok.add_special_tokens(&specials);
        Ok(tok)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Encodes text; special tokens written in the text (e.g. `<|im_start|>`) become their ids.
    /// A BOS token is prepended only when the file asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Backend(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 1);
        if self.add_bos
            && let Some(bos) = self.bos_id
        {
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Decodes ids to text, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(TokenizerError::BadId {
                id,
                vocab: self.vocab_size,
            });
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| TokenizerError::Backend(e.to_string()))
    }

    /// Parses a whitespace- or comma-separated list of token ids, checking each is in range.
    pub fn parse_ids(&self, text: &str) -> Result<Vec<u32>, String> {
        text.split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let id: u32 = s
                    .parse()
                    .map_err(|_| format!("{s:?} is not a token id (a non-negative integer)"))?;
                if id as usize >= self.vocab_size {
                    return Err(format!(
                        "token id {id} is outside the vocabulary (0..{})",
                        self.vocab_size
                    ));
                }
                Ok(id)
            })
            .collect()
    }
}

fn build_pre_tokenizer(split_digits: bool) -> PreTokenizerWrapper {
    let byte_level = ByteLevel::new(false, true, true);
    if split_digits {
        Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
    } else {
        byte_level.into()
    }
}

/// A byte-level vocabulary for the synthetic model: the 256 byte symbols, the control tokens
/// `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, and a few merges, so that encode and decode
/// exercise the same code as the real model.
pub(crate) fn synthetic_vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens = vec![
        "<|endoftext|>".to_string(),
        "<|im_start|>".to_string(),
        "<|im_end|>".to_string(),
    ];
    let mut types = vec![3, 3, 3];
    // GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100+.
    let mut n = 0u32;
    for b in 0u32..256 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let ch = if printable {
            char::from_u32(b)
        } else {
            n += 1;
            char::from_u32(255 + n)
        };
        tokens.push(ch.map(String::from).unwrap_or_default());
        types.push(1);
    }
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (
        tokens,
        merges.iter().map(|s| s.to_string()).collect(),
        types,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    fn synthetic() -> Tokenizer {
        let (tokens, merges, types) = synthetic_vocab();
        let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let merges: Vec<&str> = merges.iter().map(String::as_str).collect();
        let mut w = GgufWriter::default();
        w.string("tokenizer.ggml.model", "gpt2")
            .string("tokenizer.ggml.pre", "smollm")
            .strings("tokenizer.ggml.tokens", &tokens)
            .strings("tokenizer.ggml.merges", &merges)
            .i32s("tokenizer.ggml.token_type", &types)
            .u32("tokenizer.ggml.eos_token_id", 0);
        let file = GgufFile::parse(w.to_bytes()).unwrap();
        Tokenizer::from_gguf(&file).unwrap()
    }

    #[test]
    fn round_trips_text_and_merges() {
        let tok = synthetic();
        let ids = tok.encode("the cat").unwrap();
        // "the" -> t, he ; " cat" -> Ġ c a t (no "Ġc" merge)
        assert_eq!(tok.decode(&ids).unwrap(), "the cat");
        let he = tok.encode("he").unwrap();
        assert_eq!(he.len(), 1, "merge h+e applied: {he:?}");
    }

    #[test]
    fn control_tokens_in_the_prompt_are_single_ids() {
        let tok = synthetic();
        let ids = tok.encode("<|im_start|>hi<|im_end|>").unwrap();
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
    }

    #[test]
    fn digits_are_split_one_by_one() {
        let tok = synthetic();
        let ids = tok.encode("2026").unwrap();
        assert_eq!(ids.len(), 4);
    }

    #[test]
    fn bad_ids_are_errors() {
        let tok = synthetic();
        assert!(tok.decode(&[1_000_000]).is_err());
        assert!(tok.parse_ids("1 2 x").unwrap_err().contains("\"x\""));
        assert!(tok.parse_ids("99999").unwrap_err().contains("outside"));
        assert_eq!(tok.parse_ids("3, 4 5").unwrap(), [3, 4, 5]);
    }

    #[test]
    fn non_bpe_model_is_refused() {
        let mut w = GgufWriter::default();
        w.string("tokenizer.ggml.model", "llama");
        let file = GgufFile::parse(w.to_bytes()).unwrap();
        let err = Tokenizer::from_gguf(&file).unwrap_err();
        assert!(err.to_string().contains("\"llama\""), "{err}");
    }
}
