//! The `shoal` binary: parse the command line, run the subcommand, map the result
//! to an exit status. Everything else lives in the modules.

mod cli;
mod commands;
mod inputs;
mod progress;
mod template;
mod units;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// How a subcommand ended, beyond an error.
pub enum Exit {
    Success,
    /// Some task failed (exit status 1).
    TasksFailed,
    /// Stopped by this signal (exit status 128 + signal).
    Interrupted(i32),
}

/// Exit status for bad input and other errors of shoal itself.
const USAGE_ERROR: u8 = 2;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SHOAL_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse(); // clap exits with status 2 on a usage error
    match dispatch(cli) {
        Ok(Exit::Success) => ExitCode::SUCCESS,
        Ok(Exit::TasksFailed) => ExitCode::from(1),
        Ok(Exit::Interrupted(signal)) => ExitCode::from(128 + signal as u8),
        Err(err) => {
            eprintln!("shoal: error: {err:#}");
            ExitCode::from(USAGE_ERROR)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    let store = commands::store_path(cli.store)?;
    match cli.command {
        Command::Run(args) => commands::run::run(&store, args),
        Command::Runs(args) => commands::report::runs(&store, args).map(|()| Exit::Success),
        Command::Results(args) => commands::report::results(&store, args).map(|()| Exit::Success),
        Command::Stats(args) => commands::report::stats(&store, args).map(|()| Exit::Success),
        Command::Export(args) => commands::report::export(&store, args).map(|()| Exit::Success),
    }
}
