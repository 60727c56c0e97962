//! The `shoal` binary: parse the command line, run the subcommand, map the result
//! to an exit status. Everything else lives in the modules.

/// `eprintln!` that never panics: a closed or full stderr (`2>&1 | head`,
/// `2>/dev/full`) must not take a result, a signal or the exit status with it.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
        // The reader of a report went away (`shoal results | head`): as other tools do.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            note!("shoal: error: {}", message(&err));
            ExitCode::from(USAGE_ERROR)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes on one line, like anyhow's `{:#}`, but without a cause
/// whose text the message already holds: several error types (thiserror's with a
/// `source` shown in their text, rusqlite's) repeat their cause in their own text,
/// which printed "No such file or directory (os error 2)" twice.
fn message(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn dispatch(cli: Cli) -> anyhow::Result<Exit> {
    let store = commands::store_path(cli.store, matches!(cli.command, Command::Run(_)))?;
    name_the_store(&store, run_command(&store, cli.command))
}

/// A failed query or write names the store it failed on (errors from opening it
/// already do).
fn name_the_store<T>(store: &std::path::Path, result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.map_err(|err| {
        let in_store =
            err.chain().any(|e| matches!(e.downcast_ref(), Some(shoal_core::Error::Store { .. })));
        if in_store {
            err.context(format!("in {}", store.display()))
        } else {
            err
        }
    })
}

fn run_command(store: &std::path::Path, command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Run(args) => commands::run::run(store, args),
        Command::Runs(args) => commands::report::runs(store, args).map(|()| Exit::Success),
        Command::Results(args) => commands::report::results(store, args).map(|()| Exit::Success),
        Command::Stats(args) => commands::report::stats(store, args).map(|()| Exit::Success),
        Command::Export(args) => commands::report::export(store, args).map(|()| Exit::Success),
    }
}
