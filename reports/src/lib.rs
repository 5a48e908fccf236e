//! socbench's report side: it reads result directories (the schema of `socbench run`'s output,
//! never how it was produced) and turns them into statistics, a self-contained HTML report,
//! summary exports for CI (CSV, JSON, Markdown, JUnit) and comparisons against a baseline.
//!
//! - [`row`]: the result records, typed once ([`row::ResultRow`], [`row::SampleRow`]) and
//!   read and written with the `csv` crate by `socbench run` and every reader alike.
//! - [`schema`]: the result directory's files and their reader ([`schema::ResultSet`]).
//! - [`derive`](mod@derive): per-repetition figures from sensor series (energy, hottest zone, throttling).
//! - [`stats`]: median with a bootstrap confidence interval, outliers, energy integration.
//! - [`analysis`]: per-cell summaries, battery impact, thermal behaviour, session spread;
//!   [`conditions`]: the run conditions of rows, compared between repetitions and cells.
//! - [`html`], [`charts`]: the report page and its plotters SVG charts.
//! - [`export`]: CSV, JSON, Markdown and JUnit summaries.
//! - [`compare`]: change detection between two result sets.
//! - [`fixture`]: hand-made result directories for tests and trying things out.
//!
//! ```
//! use socbench_reports::stats::summarize;
//!
//! let decode_tok_per_s = [17.1, 17.4, 16.9, 17.3, 9.8];
//! let s = summarize(&decode_tok_per_s, 0).expect("finite samples");
//! assert_eq!(s.median, 17.1);
//! assert_eq!(s.outliers, 1); // the 9.8 run, flagged and kept
//! assert!(s.median_ci95.0 <= s.median && s.median <= s.median_ci95.1);
//! ```
#![warn(missing_docs)]

pub mod analysis;
pub mod charts;
pub mod compare;
pub mod conditions;
pub mod derive;
pub mod escape;
pub mod export;
pub mod fixture;
pub mod html;
pub mod row;
pub mod runtimes;
pub mod schema;
pub mod stats;
pub mod sustained;

pub use analysis::{Analysis, analyze};
pub use schema::{ResultSet, SchemaError};
