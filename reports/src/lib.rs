//! socbench's report side: statistics over result records and the HTML, CSV, JSON, Markdown
//! and JUnit exporters (issue #5).
//!
//! So far it holds [`stats`]: the summary of a cell's repetitions (median with a bootstrap
//! confidence interval, mean, spread, outliers) and energy integration.
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

pub mod stats;
