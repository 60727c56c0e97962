//! [`SqliteStore`], the SQLite backend: one connection shared by the synchronous calls
//! (their code is in `db.rs`, writes, and `read.rs`, queries) and a connection of its
//! own for each writer thread's journal (`journal.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;
use serde_json::Value;

use super::control::SqliteFeed;
use super::follow::SqliteProgress;
use super::journal::SqliteJournal;
use super::schema;
use crate::error::Result;
use crate::run::{FileLiveness, Liveness, RunHold};
use crate::store::backend::{Access, Backend, Journal};
use crate::store::control::{ControlAction, ControlFeed, ControlRecord};
use crate::store::follow::ProgressFeed;
use crate::store::records::{
    AttemptRecord, NewRun, NewTask, RunRecord, RunStats, RunSummary, TaskRecord,
};
use crate::task::{TaskId, TaskStatus};

/// An open SQLite store. Synchronous calls share one connection behind a mutex, so it
/// can be shared between threads.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    pub(super) path: PathBuf,
    conn: Mutex<Connection>,
    /// The file's schema version: [`schema::SCHEMA_VERSION`] unless opened read-only.
    version: i64,
    /// Its runs' liveness: a lock file beside the store per live run.
    pub(super) liveness: FileLiveness,
}

impl SqliteStore {
    /// Opens the file at `path`: see [`Store::open`](crate::store::Store::open) and
    /// [`Store::open_read_only`](crate::store::Store::open_read_only).
    pub(crate) fn open(path: &Path, access: Access) -> Result<SqliteStore> {
        let (conn, version) = match access {
            Access::Write => (schema::open_store(path)?, schema::SCHEMA_VERSION),
            Access::Read => schema::open_read_only(path)?,
        };
        let liveness = FileLiveness::new(path);
        Ok(SqliteStore { path: path.to_owned(), conn: Mutex::new(conn), version, liveness })
    }

    /// The schema version of the file (older ones are read as they are).
    pub(super) fn version(&self) -> i64 {
        self.version
    }

    /// The shared connection; a panic in another caller leaves it usable, since
    /// every write is a transaction SQLite rolls back on its own.
    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Backend for SqliteStore {
    fn create_run(&self, run: &NewRun, tasks: &[NewTask], input_open: bool) -> Result<RunHold> {
        SqliteStore::create_run(self, run, tasks, input_open)
    }

    fn liveness(&self) -> &dyn Liveness {
        &self.liveness
    }

    fn set_run_options(&self, run: i64, options: &Value, memory_mode: Option<&str>) -> Result<()> {
        SqliteStore::set_run_options(self, run, options, memory_mode)
    }

    fn insert_tasks(&self, run: i64, tasks: &[NewTask]) -> Result<()> {
        SqliteStore::insert_tasks(self, run, tasks)
    }

    fn prepare_resume(&self, run: i64) -> Result<RunRecord> {
        SqliteStore::prepare_resume(self, run)
    }

    fn unsucceeded_tasks(&self, run: i64, after: TaskId, limit: usize) -> Result<Vec<TaskRecord>> {
        SqliteStore::unsucceeded_tasks(self, run, after, limit)
    }

    fn unsucceeded_timeout_extremes(&self, run: i64) -> Result<Vec<(TaskId, f64)>> {
        SqliteStore::unsucceeded_timeout_extremes(self, run)
    }

    fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>> {
        SqliteStore::stored_result(self, key, command)
    }

    fn runs(&self) -> Result<Vec<RunSummary>> {
        SqliteStore::runs(self)
    }

    fn run(&self, id: i64) -> Result<RunRecord> {
        SqliteStore::run(self, id)
    }

    fn last_run(&self) -> Result<Option<i64>> {
        SqliteStore::last_run(self)
    }

    fn tasks(&self, run: i64, status: Option<TaskStatus>) -> Result<Vec<TaskRecord>> {
        SqliteStore::tasks(self, run, status)
    }

    fn attempts(&self, run: i64) -> Result<Vec<AttemptRecord>> {
        SqliteStore::attempts(self, run)
    }

    fn stats(&self, run: i64) -> Result<RunStats> {
        SqliteStore::stats(self, run)
    }

    fn journal(&self) -> Result<Box<dyn Journal>> {
        Ok(Box::new(SqliteJournal::open(&self.path)?))
    }

    fn request(&self, run: i64, actions: &[ControlAction], by: &str) -> Result<Vec<i64>> {
        SqliteStore::request(self, run, actions, by)
    }

    fn control_records(&self, run: i64) -> Result<Vec<ControlRecord>> {
        SqliteStore::control_records(self, run)
    }

    fn control_feed(&self, run: i64) -> Result<Box<dyn ControlFeed>> {
        Ok(Box::new(SqliteFeed::open(&self.path, run)?))
    }

    fn progress_feed(&self, run: i64) -> Result<Box<dyn ProgressFeed>> {
        Ok(Box::new(SqliteProgress::open(&self.path, run)?))
    }
}
