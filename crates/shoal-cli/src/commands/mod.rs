//! The subcommands of `shoal`, one file each (`report` holds the read-only ones).

mod printer;
pub mod report;
mod resume;
pub mod run;

use std::path::{Path, PathBuf};

use anyhow::Context;
use shoal_core::store::Store;

/// The default store, relative to the working directory.
pub const DEFAULT_STORE: &str = ".shoal/shoal.db";

/// The store path to use: `--store` as given, or the default (whose directory is
/// created on first use; a `--store` in a missing directory is an error).
pub fn store_path(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let path = PathBuf::from(DEFAULT_STORE);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(path)
}

/// Opens the store, for a read-only command only if it exists already.
pub fn open_store(path: &Path) -> anyhow::Result<Store> {
    Ok(Store::open(path)?)
}

/// The run a report is about: the one given, or the last one.
pub fn pick_run(store: &Store, run: Option<i64>) -> anyhow::Result<i64> {
    match run {
        Some(id) => Ok(id),
        None => store.last_run()?.context("the store holds no run yet"),
    }
}
