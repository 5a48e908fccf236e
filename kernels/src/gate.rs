//! The quality gate: a model variant is measured only if it computes the model.
//!
//! A level the weights cannot take (one 4-bit scale for a whole tensor of SmolLM2 gives a
//! perplexity of about 4·10⁸), a broken kernel or a GPU driver that miscomputes all run at
//! full speed, and their speed would describe nothing. Before its cells, each model variant
//! scores a short fixed text ([`GATE_TOKENS`] tokens: the start of
//! [`QUALITY_TEXT`]), and is refused when its perplexity is
//! beyond `max_ratio` times the f32 model's ([`QualityGate::check`]). The f32 figure is
//! computed once, on the host's CPU ([`reference_perplexity`]): f32 arithmetic is the same
//! model on every device up to rounding, far below any bound worth setting.
//!
//! Measured (AMD EPYC Zen 4, SmolLM2-135M Q4_1 file; `socbench score --gate`): every usable
//! level stays within a few percent of f32 on these tokens; see the README's quality table.

use crate::KernelError;
use crate::backend::{BackendKind, Runtime};
use crate::generate::{QUALITY_TEXT, perplexity};
use crate::load::ModelSpec;
use crate::quant::QuantLevel;
use serde::{Deserialize, Serialize};

/// Tokens of the gate text (one chunk, scored with an empty cache).
pub const GATE_TOKENS: usize = 64;

/// Default bound: a variant whose gate perplexity is more than this many times f32's is not
/// measured. Usable levels of SmolLM2 stay below 1.2; see the README.
pub const DEFAULT_MAX_RATIO: f64 = 1.5;

/// The gate text's token ids, from the ids of the whole quality text.
pub fn gate_ids(quality_ids: &[u32]) -> &[u32] {
    &quality_ids[..quality_ids.len().min(GATE_TOKENS)]
}

/// The bound a model variant must meet before it is measured (sent to the agent in its plan).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityGate {
    /// The f32 model's perplexity on the gate text.
    pub reference_perplexity: f64,
    /// The most a variant may have, as a multiple of `reference_perplexity`.
    pub max_ratio: f64,
}

impl QualityGate {
    /// `Ok(ratio to f32)` when `perplexity` is within the bound; otherwise the reason the
    /// variant is not measured, with the figures.
    pub fn check(&self, perplexity: f64) -> Result<f64, String> {
        let ratio = perplexity / self.reference_perplexity;
        if ratio.is_finite() && ratio <= self.max_ratio {
            return Ok(ratio);
        }
        let figure = |v: f64| {
            if v.abs() < 1e3 {
                format!("{v:.2}")
            } else {
                format!("{v:.1e}")
            }
        };
        Err(format!(
            "quality gate: perplexity {} on the {GATE_TOKENS}-token gate text is {}× the f32 \
             model's {} (bound {}×): this variant does not compute the model, its speed would \
             describe nothing (`quality_gate = 0` measures it anyway)",
            figure(perplexity),
            figure(ratio),
            figure(self.reference_perplexity),
            self.max_ratio
        ))
    }
}

/// Perplexity of the gate text under `spec` at `quant` on `backend` (one thread).
pub fn gate_perplexity(
    spec: &ModelSpec,
    backend: BackendKind,
    quant: QuantLevel,
) -> Result<f64, KernelError> {
    let session = crate::session::ModelSession::open(spec, backend, quant, 1)?;
    score_gate(&session.rt, &session.loaded)
}

/// Perplexity of the gate text under a loaded model.
pub fn score_gate(rt: &Runtime, loaded: &crate::load::LoadedModel) -> Result<f64, KernelError> {
    let ids = loaded.tokenizer.encode(QUALITY_TEXT)?;
    let ids = gate_ids(&ids);
    Ok(perplexity(rt, &loaded.model, ids, GATE_TOKENS)?.perplexity)
}

/// The f32 model's gate perplexity, computed on the CPU (Flex).
pub fn reference_perplexity(spec: &ModelSpec) -> Result<f64, KernelError> {
    gate_perplexity(spec, BackendKind::Flex, QuantLevel::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_passes_within_the_bound_and_refuses_beyond_or_nan() {
        let gate = QualityGate {
            reference_perplexity: 10.0,
            max_ratio: 1.5,
        };
        assert_eq!(gate.check(10.0), Ok(1.0));
        assert!(gate.check(15.0).is_ok());
        let e = gate.check(15.1).unwrap_err();
        assert!(e.contains("1.51×") && e.contains("bound 1.5×"), "{e}");
        let e = gate.check(4e9).unwrap_err();
        assert!(
            e.contains("perplexity 4.0e9") && e.contains("4.0e8×"),
            "{e}"
        );
        assert!(gate.check(f64::NAN).is_err());
        assert!(gate.check(f64::INFINITY).is_err());
    }

    #[test]
    fn the_gate_text_is_the_start_of_the_quality_text() {
        let ids: Vec<u32> = (0..500).collect();
        assert_eq!(gate_ids(&ids).len(), GATE_TOKENS);
        assert_eq!(gate_ids(&ids[..10]), &ids[..10]);
    }
}
