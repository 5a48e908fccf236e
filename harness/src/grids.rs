//! Extra grids of a sweep (`[[also]]` tables in the sweep file): each one replaces some of
//! the main grid's measurement axes and adds the cells of that smaller grid, so that a sweep
//! can look along an axis (batch, KV window, a second backend) at one configuration instead
//! of multiplying every other axis by it. Cells two grids share are planned once.

use crate::sweep::{Sweep, Threads, axis};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use socbench_kernels::backend::BackendKind;
use socbench_kernels::quant::QuantLevel;
use socbench_kernels::runtime::RuntimeKind;
use toml::Spanned;

/// One `[[also]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlsoFile {
    runtime: Option<Spanned<Vec<toml::Value>>>,
    backend: Option<Spanned<Vec<toml::Value>>>,
    quant: Option<Spanned<Vec<toml::Value>>>,
    threads: Option<Spanned<Vec<toml::Value>>>,
    batch: Option<Spanned<Vec<toml::Value>>>,
    kv_window: Option<Spanned<Vec<toml::Value>>>,
    prompt_tokens: Option<Spanned<Vec<toml::Value>>>,
    gen_tokens: Option<Spanned<Vec<toml::Value>>>,
}

/// An extra grid: the axes it replaces (`None`: the main grid's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GridOverride {
    /// Runtimes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Vec<RuntimeKind>>,
    /// Backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Vec<BackendKind>>,
    /// Quantization levels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<Vec<QuantLevel>>,
    /// Thread counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<Vec<Threads>>,
    /// Batch sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Vec<usize>>,
    /// KV windows (`None`: full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_window: Option<Vec<Option<usize>>>,
    /// Prompt lengths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<usize>>,
    /// Generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen_tokens: Option<Vec<usize>>,
}

/// One axis of an `[[also]]` table, parsed like the main grid's (errors name the line).
fn parse<T>(
    file: &str,
    text: &str,
    key: &str,
    v: Option<Spanned<Vec<toml::Value>>>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Option<Vec<T>>> {
    match v {
        None => Ok(None),
        Some(v) => crate::sweep::parse_axis(
            file,
            text,
            &format!("also.{key}"),
            Some(v),
            Vec::new(),
            parse,
        )
        .map(Some),
    }
}

impl GridOverride {
    /// Parses the `[[also]]` tables of a sweep file.
    pub(crate) fn parse_all(file: &str, text: &str, tables: Vec<AlsoFile>) -> Result<Vec<Self>> {
        tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let g = Self {
                    runtime: parse(file, text, "runtime", t.runtime, axis::runtime)?,
                    backend: parse(file, text, "backend", t.backend, axis::backend)?,
                    quant: parse(file, text, "quant", t.quant, axis::quant)?,
                    threads: parse(file, text, "threads", t.threads, axis::threads)?,
                    batch: parse(file, text, "batch", t.batch, axis::count)?,
                    kv_window: parse(file, text, "kv_window", t.kv_window, axis::kv_window)?,
                    prompt_tokens: parse(
                        file,
                        text,
                        "prompt_tokens",
                        t.prompt_tokens,
                        axis::count,
                    )?,
                    gen_tokens: parse(file, text, "gen_tokens", t.gen_tokens, axis::count)?,
                };
                if g == Self::default() {
                    bail!(
                        "{file}: [[also]] table {} replaces no axis (give one of runtime, \
                         backend, quant, threads, batch, kv_window, prompt_tokens, gen_tokens)",
                        i + 1
                    );
                }
                Ok(g)
            })
            .collect()
    }

    /// `main` with this grid's axes in place of its own (and no extra grids of its own).
    pub fn apply(&self, main: &Sweep) -> Sweep {
        let mut s = main.clone();
        s.also.clear();
        macro_rules! set {
            ($($axis:ident),*) => {$(
                if let Some(v) = &self.$axis {
                    s.$axis = v.clone();
                }
            )*};
        }
        set!(
            runtime,
            backend,
            quant,
            threads,
            batch,
            kv_window,
            prompt_tokens,
            gen_tokens
        );
        s
    }
}

impl Sweep {
    /// The grids this sweep measures: the main one, then each `[[also]]` grid.
    pub fn grids(&self) -> Vec<Sweep> {
        let mut main = self.clone();
        main.also.clear();
        let mut out = vec![main];
        out.extend(self.also.iter().map(|g| g.apply(self)));
        out
    }

    /// Whether any grid has cells of `runtime`.
    pub fn has_runtime(&self, runtime: RuntimeKind) -> bool {
        self.grids().iter().any(|g| g.runtime.contains(&runtime))
    }

    /// The levels llama.cpp runs in some grid, each once, in order.
    pub fn llama_cpp_levels(&self) -> Vec<QuantLevel> {
        let mut out: Vec<QuantLevel> = Vec::new();
        for g in self.grids() {
            if g.runtime.contains(&RuntimeKind::LlamaCpp) {
                for &q in &g.quant {
                    if !out.contains(&q) {
                        out.push(q);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::sweep::{Sweep, plan_device};
    use socbench_devices::DeviceInfo;

    /// Each `[[also]]` grid adds its own cells to the main grid's, a cell two grids share is
    /// planned once, the dry-run count is the sum, and bad tables are errors naming the line.
    #[test]
    fn extra_grids_add_their_cells_once() {
        let info = DeviceInfo::parse("p", socbench_devices::info::DeviceKind::Adb, None, "");
        let text = "quant = [\"f32\", \"q8\"]\nthreads = [1]\nprompt_tokens = [4]\n\
                    gen_tokens = [4]\n\
                    [[also]]\nquant = [\"q8\"]\nbatch = [4]\n\
                    [[also]]\nquant = [\"q8\"]\nkv_window = [2, \"full\"]\n";
        let s = Sweep::parse("s.toml", text).unwrap();
        let keys: Vec<String> = plan_device(&s, &info)
            .unwrap()
            .into_iter()
            .map(|c| c.key)
            .collect();
        assert_eq!(
            keys,
            [
                "p|flex|f32|t1|b1|kvfull|p4|g4|aall",
                "p|flex|q8|t1|b1|kvfull|p4|g4|aall",
                "p|flex|q8|t1|b4|kvfull|p4|g4|aall",
                "p|flex|q8|t1|b1|kv2|p4|g4|aall",
            ]
        );
        // Counted per grid: the shared q8 full-window cell twice.
        assert_eq!(s.cells_per_device(), 5);
        // Every grid is checked: ndarray has no f16 tensors.
        let e = Sweep::parse(
            "s.toml",
            "[[also]]\nbackend = [\"ndarray\"]\nquant = [\"f16\"]\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("[[also]] grid 1"), "{e:#}");
        let e = Sweep::parse("s.toml", "[[also]]\nbatch = [0]\n").unwrap_err();
        assert!(format!("{e:#}").contains("s.toml:2: `also.batch`"), "{e:#}");
        let e = Sweep::parse("s.toml", "[[also]]\nrepetitions = 2\n").unwrap_err();
        assert!(format!("{e:#}").contains("repetitions"), "{e:#}");
        let e = Sweep::parse("s.toml", "[[also]]\n").unwrap_err();
        assert!(format!("{e:#}").contains("replaces no axis"), "{e:#}");
    }
}
