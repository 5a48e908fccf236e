//! socbench's report side: statistics over result records and the HTML, CSV, JSON, Markdown
//! and JUnit exporters.
//!
//! This crate is the home of issue #5; it holds nothing yet, so that the workspace has its
//! final shape and the dependency direction (harness → reports) is fixed.
#![warn(missing_docs)]
