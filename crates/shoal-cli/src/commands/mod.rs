//! The subcommands of `shoal`, one file each (`report` holds the read-only ones,
//! `logs` one task's attempts, `control` the ones that steer a live run, `watch`
//! follows one, `store` manages the store itself, `manual` prints the completion
//! scripts and the manual page, `serve` serves the store over HTTP).

pub mod control;
mod dry_run;
mod feed;
mod joblog;
pub mod logs;
pub mod manual;
mod printer;
pub mod report;
mod results_dir;
mod resume;
pub mod run;
pub mod serve;
pub mod store;
mod submit;
pub mod watch;
pub mod worker;

pub use dry_run::dry_run;

use std::path::PathBuf;

use anyhow::Context;
use shoal_core::store::{Store, StoreAddress};

/// The default store, relative to the working directory.
pub const DEFAULT_STORE: &str = ".shoal/shoal.db";

/// The store to use: `--store` as given (a path or a URL), or the default file, whose
/// directory is created when `create` (for `shoal run`; reports never create
/// anything). A `--store` in a missing directory is an error.
pub fn store_address(given: Option<PathBuf>, create: bool) -> anyhow::Result<StoreAddress> {
    if let Some(given) = given {
        return Ok(StoreAddress::parse(given));
    }
    let path = PathBuf::from(DEFAULT_STORE);
    if let (true, Some(dir)) = (create, path.parent()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(StoreAddress::Sqlite(path))
}

/// The run a report is about: the one given, or the last one.
pub fn pick_run(store: &Store, run: Option<i64>) -> anyhow::Result<i64> {
    match run {
        Some(id) => Ok(id),
        None => store.last_run()?.context("the store holds no run yet"),
    }
}
