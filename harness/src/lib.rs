//! socbench's command line and the work behind it.
//!
//! The binary's `main` calls [`run`]; every subcommand lives in [`commands`].
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod grids;
pub mod model_cache;
pub mod progress;
pub mod runner;
pub mod session;
pub mod store;
pub mod sweep;

use clap::Parser;
use std::process::ExitCode;

/// Parses the command line and runs the chosen command. Started under the name
/// `socbench-agent` (how it is deployed to a virtual device of this host's ABI), the program
/// is the agent.
pub fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().collect();
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if name.as_deref() == Some("socbench-agent") {
        return Ok(socbench_agent::main_with(&args[1..]));
    }
    let cli = cli::Cli::parse();
    match &cli.command {
        cli::Command::Generate(args) => commands::generate::run(args)?,
        cli::Command::Score(args) => {
            if !commands::score::run(args)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        cli::Command::FetchModel(args) => {
            let path = model_cache::fetch(args.quiet)?;
            println!("{}", path.display());
        }
        cli::Command::Devices(args) => commands::devices::run(args)?,
        cli::Command::Run(args) => return commands::run::run(args),
        cli::Command::Init(args) => commands::run::init(args)?,
        cli::Command::Report(args) => commands::report::report(args)?,
        cli::Command::Compare(args) => return commands::report::compare(args),
        cli::Command::VirtualDevice(args) => commands::virtual_device::run(args)?,
        cli::Command::Probe(args) => commands::probe::run(args)?,
        cli::Command::Agent(args) => return Ok(socbench_agent::main_with(&args.args)),
    }
    Ok(ExitCode::SUCCESS)
}
