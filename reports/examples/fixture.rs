//! Writes the hand-made fixture result directory, to try `socbench report` and
//! `socbench compare` without a device:
//!
//! ```text
//! cargo run -p socbench-reports --example fixture -- /tmp/base
//! cargo run -p socbench-reports --example fixture -- /tmp/new 0.8   # 20 % slower
//! socbench compare /tmp/base /tmp/new
//! ```

use socbench_reports::fixture::Fixture;

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: fixture DIR [SPEED] [NOISE]");
        return std::process::ExitCode::from(2);
    };
    let mut f = Fixture::default();
    for (slot, name) in [(&mut f.speed, "SPEED"), (&mut f.noise, "NOISE")] {
        if let Some(v) = args.next() {
            match v.parse() {
                Ok(x) => *slot = x,
                Err(_) => {
                    eprintln!("{name} must be a number, not {v}");
                    return std::process::ExitCode::from(2);
                }
            }
        }
    }
    if let Err(e) = f.write(std::path::Path::new(&dir)) {
        eprintln!("writing {dir}: {e}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
