//! The backend interface: what a store must do, whatever keeps it (the embedded SQLite
//! file today, a PostgreSQL database next), and the one place where a store's address
//! chooses its backend (`open`).
//!
//! A backend answers two kinds of caller. The front ends and reports call a
//! [`Backend`] through a [`Store`](super::Store): runs created with their first tasks,
//! a run repaired for a resume, a stored result found by key, and the queries (runs,
//! tasks, attempts, statistics). The engine's events go through the writer thread
//! ([`super::writer`]), which owns one [`Journal`] and hands it batches to commit: the
//! group commit, `on_commit`/`on_failure` and the outage protocol are the writer's, the
//! same for every backend; a backend only applies a batch, all or nothing, and says of
//! a failure what kind it is ([`FailureKind`](crate::error::FailureKind)), which
//! decides whether the store still takes writes. Control requests are a backend's
//! too: written by an asker ([`Backend::request`]), found by the live run through a
//! cheap [`ControlFeed`] it polls ([`super::control`]). A watcher in another process
//! follows a run through a [`ProgressFeed`] ([`super::follow`]), which reads only what
//! changed.
//!
//! A backend must not schedule, spawn or decide anything: it records and answers.

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::Value;

use super::address::StoreAddress;
use super::control::{ControlAction, ControlFeed, ControlRecord};
use super::follow::ProgressFeed;
use super::postgres::PgStore;
use super::read_api::ReadApi;
use super::records::{AttemptRecord, NewRun, NewTask, RunRecord, RunStats, RunSummary, TaskRecord};
use super::sqlite::SqliteStore;
use super::writer::StoreEvent;
use crate::error::Result;
use crate::run::{Liveness, RunHold};
use crate::task::{AttemptOutcome, SlotId, TaskId, TaskStatus};

/// How a store is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// To write into it: created if it does not exist, migrated if older.
    Write,
    /// Only to read it (the reports): nothing is created, migrated or written.
    Read,
}

/// Opens the store at `address` with the backend its address names: the one place a
/// backend is chosen.
pub(super) fn open(address: &StoreAddress, access: Access) -> Result<Box<dyn Backend>> {
    match address {
        StoreAddress::Sqlite(path) => Ok(Box::new(SqliteStore::open(path, access)?)),
        StoreAddress::Postgres(url) => Ok(Box::new(PgStore::open(address, url, access)?)),
    }
}

/// The synchronous calls of a store; [`Store`](super::Store) documents each. The
/// reads of an HTTP front are [`ReadApi`]'s, in files of their own.
pub trait Backend: ReadApi + Send + Sync + fmt::Debug {
    /// See [`Store::create_run_with`](super::Store::create_run_with) and
    /// [`Store::create_streaming_run`](super::Store::create_streaming_run) (`input_open`).
    fn create_run(&self, run: &NewRun, tasks: &[NewTask], input_open: bool) -> Result<RunHold>;
    /// Whether its runs are alive, and holding one (SQLite: a lock file per run).
    fn liveness(&self) -> &dyn Liveness;
    /// See [`Store::set_run_options`](super::Store::set_run_options).
    fn set_run_options(
        &self,
        run: i64,
        options: &Value,
        memory_limit_mode: Option<&str>,
    ) -> Result<()>;
    /// See [`Store::insert_tasks`](super::Store::insert_tasks).
    fn insert_tasks(&self, run: i64, tasks: &[NewTask]) -> Result<()>;
    /// See [`Store::prepare_resume`](super::Store::prepare_resume).
    fn prepare_resume(&self, run: i64) -> Result<RunRecord>;
    /// See [`Store::unsucceeded_tasks`](super::Store::unsucceeded_tasks).
    fn unsucceeded_tasks(&self, run: i64, after: TaskId, limit: usize) -> Result<Vec<TaskRecord>>;
    /// See [`Store::unsucceeded_timeout_extremes`](super::Store::unsucceeded_timeout_extremes).
    fn unsucceeded_timeout_extremes(&self, run: i64) -> Result<Vec<(TaskId, f64)>>;
    /// See [`Store::stored_result`](super::Store::stored_result).
    fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>>;
    /// See [`Store::runs`](super::Store::runs).
    fn runs(&self) -> Result<Vec<RunSummary>>;
    /// See [`Store::run`](super::Store::run).
    fn run(&self, id: i64) -> Result<RunRecord>;
    /// See [`Store::last_run`](super::Store::last_run).
    fn last_run(&self) -> Result<Option<i64>>;
    /// See [`Store::tasks`](super::Store::tasks).
    fn tasks(&self, run: i64, status: Option<TaskStatus>) -> Result<Vec<TaskRecord>>;
    /// See [`Store::attempts`](super::Store::attempts).
    fn attempts(&self, run: i64) -> Result<Vec<AttemptRecord>>;
    /// See [`Store::stats`](super::Store::stats).
    fn stats(&self, run: i64) -> Result<RunStats>;
    /// A journal of its own for the writer thread (SQLite: its own connection).
    fn journal(&self) -> Result<Box<dyn Journal>>;
    /// Records control requests for a live run, in one transaction, and returns their
    /// ids: see [`Store::request`](super::Store::request).
    fn request(&self, run: i64, actions: &[ControlAction], by: &str) -> Result<Vec<i64>>;
    /// Every control request of a run, oldest first, with what became of it.
    fn control_records(&self, run: i64) -> Result<Vec<ControlRecord>>;
    /// A feed of a run's new requests, on a connection of its own, for the thread
    /// that watches them (SQLite: polls `PRAGMA data_version`).
    fn control_feed(&self, run: i64) -> Result<Box<dyn ControlFeed>>;
    /// A view of run `run` for a watcher, brought up to date by polling, on a
    /// read-only connection of its own: see [`Store::follow`](super::Store::follow).
    fn progress_feed(&self, run: i64) -> Result<Box<dyn ProgressFeed>>;
}

/// Where the writer thread makes the engine's events durable.
pub trait Journal: Send {
    /// Applies `batch` in one transaction: every event or none. An event the store
    /// cannot take (an unknown task) fails it with [`Error::StoreMissing`],
    /// [`Error::NoSuchRun`] or a failure of kind
    /// [`Invalid`](crate::error::FailureKind::Invalid); any other kind means the store
    /// takes no more writes.
    fn commit(&mut self, batch: &[StoreEvent]) -> Result<()>;

    /// The store stopped taking writes: let go of what was kept back for the last
    /// writes (SQLite: its reserve of disk space), before they are tried.
    fn release_reserve(&mut self) {}
}

/// The start of an attempt held back until its end: slot, pid, start time, command.
pub(crate) type Start<'a> = (SlotId, u32, f64, Option<&'a str>);

/// Walks a batch as a journal applies it, in order: an attempt that starts and ends
/// within the batch (most of them, under load) is handed over once, at its end, with
/// its start, so that its row is written once, complete, instead of being inserted
/// and then updated; every other event is handed over as it is, with no start.
pub(crate) fn walk_batch<'a>(
    batch: &'a [StoreEvent],
    mut step: impl FnMut(&'a StoreEvent, Option<Start<'a>>) -> Result<()>,
) -> Result<()> {
    let ended: HashSet<(i64, TaskId, u32)> = batch
        .iter()
        .filter_map(|ev| match *ev {
            StoreEvent::AttemptEnded { run, task, attempt, .. } => Some((run, task, attempt)),
            _ => None,
        })
        .collect();
    let mut started: HashMap<(i64, TaskId, u32), Start<'a>> = HashMap::new();
    for ev in batch {
        match *ev {
            StoreEvent::AttemptStarted {
                run,
                task,
                attempt,
                slot,
                pid,
                started_at,
                ref command,
            } if ended.contains(&(run, task, attempt)) => {
                started.insert((run, task, attempt), (slot, pid, started_at, command.as_deref()));
            }
            StoreEvent::AttemptEnded { run, task, attempt, .. } => {
                step(ev, started.remove(&(run, task, attempt)))?
            }
            _ => step(ev, None)?,
        }
    }
    Ok(())
}

/// The exit code and signal an outcome implies, for an end that gave neither.
pub(crate) fn codes(outcome: AttemptOutcome) -> (Option<i32>, Option<i32>) {
    match outcome {
        AttemptOutcome::Succeeded => (Some(0), None),
        AttemptOutcome::Failed { exit_code } => (Some(exit_code), None),
        AttemptOutcome::Crashed { signal } => (None, Some(signal)),
        _ => (None, None),
    }
}
