//! The `shoal` command line, as a library: parse, run the subcommand, map the result
//! to an exit status ([`main_from`]). The `shoal` binary (`src/main.rs`) and the
//! Python package's `shoal` command (the extension's `cli_main`) both run it, so they
//! behave alike. Everything else lives in the modules.

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
mod halt;
mod inputs;
mod jobs;
mod progress;
mod reading;
mod start_gate;
mod template;
mod units;

use std::ffi::OsString;
use std::io::{IsTerminal as _, Write as _};

use clap::Parser;
use shoal_core::store::StoreAddress;

use cli::{Cli, Command, StoreCommand};

/// How a subcommand ended, beyond an error.
pub enum Exit {
    Success,
    /// Some task failed (exit status 1).
    TasksFailed,
    /// This exit status, as GNU parallel's under `--halt`.
    Status(u8),
    /// Stopped by this signal (exit status 128 + signal).
    Interrupted(i32),
    /// The store stopped taking writes mid-run (exit status 74, sysexits' EX_IOERR);
    /// a store that cannot be opened or written for a full disk exits so too.
    StoreFailed,
}

/// Exit status for bad input and other errors of shoal itself.
const USAGE_ERROR: u8 = 2;

/// Exit status when the store takes no more writes (sysexits' EX_IOERR).
const STORE_FAILED: u8 = 74;

/// Runs the command line `args` (the first names the program) and returns the exit
/// status. It never exits the process itself (a host such as Python goes on), and
/// flushes what it wrote before it returns.
pub fn main_from<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    // A host may have set its own subscriber, or run us before: keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SHOAL_LOG"))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let status = match Cli::try_parse_from(args) {
        // What clap's exit() does, without the exit: help and version on stdout
        // (status 0), a usage error on stderr (status 2), with shoal's prefix as
        // every other error has.
        Err(err) if err.use_stderr() => {
            let text = err.render().to_string();
            note!("shoal: {}", text.trim_end());
            err.exit_code() as u8
        }
        Err(err) => {
            let _ = err.print();
            err.exit_code() as u8
        }
        Ok(cli) => match dispatch(cli) {
            Ok(Exit::Success) => 0,
            Ok(Exit::TasksFailed) => 1,
            Ok(Exit::Status(status)) => status,
            Ok(Exit::Interrupted(signal)) => 128 + signal as u8,
            Ok(Exit::StoreFailed) => STORE_FAILED,
            // The reader of a report went away (`shoal results | head`): as other tools do.
            Err(err) if is_broken_pipe(&err) => 0,
            Err(err) => {
                note!("shoal: error: {}", message(&err));
                if is_store_full(&err) {
                    STORE_FAILED
                } else {
                    USAGE_ERROR
                }
            }
        },
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    status
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A store that could not be opened or written because its file system is full.
fn is_store_full(err: &anyhow::Error) -> bool {
    err.chain().any(|e| matches!(e.downcast_ref(), Some(shoal_core::Error::StoreFull { .. })))
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
    let create = matches!(&cli.command, Command::Run(run) if run.resume.is_none() && !run.dry_run && !run.detach)
        || matches!(&cli.command, Command::Store(_));
    let store = commands::store_address(cli.store, create)?;
    name_the_store(run_command(&store, cli.command))
}

/// A failed query or write names the store it failed on (errors from opening it
/// already do).
fn name_the_store<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.map_err(|err| {
        let store = err.chain().find_map(|e| match e.downcast_ref() {
            Some(shoal_core::Error::Store { store, .. }) => Some(store.to_string()),
            _ => None,
        });
        match store {
            Some(store) => err.context(format!("in {store}")),
            None => err,
        }
    })
}

fn run_command(store: &StoreAddress, command: Command) -> anyhow::Result<Exit> {
    match command {
        Command::Run(args) if args.dry_run => commands::dry_run(*args),
        Command::Run(args) => commands::run::run(store, *args),
        Command::Runs(args) => commands::report::runs(store, args).map(|()| Exit::Success),
        Command::Results(args) => commands::report::results(store, args).map(|()| Exit::Success),
        Command::Stats(args) => commands::report::stats(store, args).map(|()| Exit::Success),
        Command::Export(args) => commands::report::export(store, args).map(|()| Exit::Success),
        Command::Cancel(args) => commands::control::cancel(store, args),
        Command::Pause(args) => commands::control::pause(store, args),
        Command::Unpause(args) => commands::control::unpause(store, args),
        Command::Jobs(args) => commands::control::jobs(store, args),
        Command::Watch(args) => commands::watch::watch(store, args),
        Command::Worker(args) => commands::worker::worker(store, args),
        Command::Wait(args) => commands::watch::wait(store, args),
        Command::Store(StoreCommand::Init) => commands::store::init(store).map(|()| Exit::Success),
        Command::Logs(args) => commands::logs::logs(store, args).map(|()| Exit::Success),
        Command::Completions(args) => commands::manual::completions(args).map(|()| Exit::Success),
        Command::Man => commands::manual::man().map(|()| Exit::Success),
        Command::Serve(args) => commands::serve::serve(store, args).map(|()| Exit::Success),
    }
}
