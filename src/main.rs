//! `socbench`: benchmark and profile LLM inference on mobile SoCs.

use std::process::ExitCode;

fn main() -> ExitCode {
    match socbench_harness::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
