//! The SQLite backend's [`Journal`]: the writer thread's own connection, which applies
//! a batch of events in one transaction, and the room kept for its last writes.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::db::insert_task_rows;
use super::failure::db;
use super::schema;
use super::space::Reserve;
use crate::error::{Error, Result};
use crate::store::backend::{codes, walk_batch, Journal, Start};
use crate::store::writer::StoreEvent;
use crate::task::TaskStatus;

/// A writer thread's connection to a SQLite store.
#[derive(Debug)]
pub(crate) struct SqliteJournal {
    conn: Connection,
    path: PathBuf,
    /// Room on the store's file system for the last writes, let go once it is full.
    reserve: Option<Reserve>,
}

impl SqliteJournal {
    /// A new connection to the store at `path`, and the room for its last writes.
    pub(super) fn open(path: &Path) -> Result<SqliteJournal> {
        let conn = schema::connect(path)?;
        Ok(SqliteJournal { conn, path: path.to_owned(), reserve: Reserve::take(path) })
    }

    /// A journal on a connection configured by the caller (tests: one that may not grow
    /// the file).
    #[cfg(test)]
    pub(crate) fn with_connection(path: &Path, conn: Connection) -> SqliteJournal {
        SqliteJournal { conn, path: path.to_owned(), reserve: None }
    }
}

impl Journal for SqliteJournal {
    fn commit(&mut self, batch: &[StoreEvent]) -> Result<()> {
        commit(&self.path, &mut self.conn, batch)
    }

    fn release_reserve(&mut self) {
        drop(self.reserve.take());
    }
}

/// Applies events in one transaction; rolled back (on drop) unless all succeed.
///
/// An attempt that starts and ends within the batch (most of them, under load) is
/// written once, complete, instead of being inserted and then updated.
fn commit(path: &Path, conn: &mut Connection, batch: &[StoreEvent]) -> Result<()> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db(path, "begin a write"))?;
    walk_batch(batch, |ev, start| match ev {
        StoreEvent::AttemptEnded { .. } => record_end(path, &tx, ev, start),
        _ => apply(path, &tx, ev),
    })?;
    tx.commit().map_err(db(path, "commit a write"))
}

/// Records the end of an attempt: the task's result, and the attempt's row. With
/// `start` (the attempt also began in this batch) the row is inserted complete;
/// otherwise the row written at its start is closed.
fn record_end(
    path: &Path,
    tx: &Transaction<'_>,
    ev: &StoreEvent,
    start: Option<Start<'_>>,
) -> Result<()> {
    let StoreEvent::AttemptEnded {
        run,
        task,
        attempt,
        ended_at,
        duration,
        outcome,
        exit_code,
        signal,
        final_status,
        max_rss_kb,
        stdout,
        stderr,
    } = ev
    else {
        unreachable!("called with an AttemptEnded event");
    };
    let (exit_code, signal) = match (exit_code, signal) {
        (None, None) => codes(*outcome),
        known => (*known.0, *known.1),
    };
    let (slot, pid, started_at, command) =
        start.map_or((None, None, None, None), |(s, p, t, c)| (Some(s), Some(p), Some(t), c));
    // The task first, so an unknown task gets a clear error, not a foreign key failure.
    let n = tx
        .prepare_cached(
            "UPDATE tasks SET status = ?3, exit_code = ?4, signal = ?5, duration = ?6,
             ended_at = ?7, stdout = ?8, stderr = ?9, stdout_truncated = ?10,
             stderr_truncated = ?11, attempts = coalesce(?12, attempts),
             slot = coalesce(?13, slot), pid = coalesce(?14, pid),
             started_at = coalesce(?15, started_at), command = coalesce(?16, command)
             WHERE run_id = ?1 AND task = ?2",
        )
        .and_then(|mut s| {
            s.execute(params![
                run,
                task,
                final_status.unwrap_or(TaskStatus::Queued),
                exit_code,
                signal,
                duration,
                ended_at,
                stdout.bytes,
                stderr.bytes,
                stdout.truncated,
                stderr.truncated,
                start.map(|_| attempt),
                slot,
                pid,
                started_at,
                command
            ])
        })
        .map_err(db(path, "record an attempt end"))?;
    if n == 0 {
        return Err(Error::StoreMissing { run: *run, task: *task, what: "task" });
    }
    // The task row keeps the last attempt's output; an attempt followed by a retry
    // keeps its own in its row, so that every attempt's output is stored once.
    let own = final_status.is_none();
    let end = params![
        run,
        task,
        attempt,
        ended_at,
        duration,
        outcome.status(),
        exit_code,
        signal,
        max_rss_kb,
        own.then_some(&stdout.bytes),
        own.then_some(&stderr.bytes),
        own && stdout.truncated,
        own && stderr.truncated
    ];
    let n = match start {
        Some(_) => tx
            .prepare_cached(
                "INSERT INTO attempts (run_id, task, attempt, ended_at, duration, outcome,
                 exit_code, signal, max_rss_kb, stdout, stderr, stdout_truncated,
                 stderr_truncated, slot, pid, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .and_then(|mut s| {
                let mut values = end.to_vec();
                values.extend_from_slice(params![slot, pid, started_at]);
                s.execute(values.as_slice())
            }),
        None => tx
            .prepare_cached(
                "UPDATE attempts SET ended_at = ?4, duration = ?5, outcome = ?6,
                 exit_code = ?7, signal = ?8, max_rss_kb = ?9, stdout = ?10, stderr = ?11,
                 stdout_truncated = ?12, stderr_truncated = ?13
                 WHERE run_id = ?1 AND task = ?2 AND attempt = ?3",
            )
            .and_then(|mut s| s.execute(end)),
    }
    .map_err(db(path, "record an attempt end"))?;
    if n == 0 {
        return Err(Error::StoreMissing { run: *run, task: *task, what: "attempt" });
    }
    Ok(())
}

fn apply(path: &Path, tx: &Transaction<'_>, ev: &StoreEvent) -> Result<()> {
    let missing = |run, task, what| Error::StoreMissing { run, task, what };
    match ev {
        &StoreEvent::AttemptStarted { run, task, attempt, slot, pid, started_at, ref command } => {
            // The task first, so an unknown task gets a clear error, not a foreign
            // key failure.
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET status = ?3, attempts = ?4, slot = ?5, pid = ?6,
                     started_at = ?7, command = coalesce(?8, command) WHERE run_id = ?1 AND task = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        run,
                        task,
                        TaskStatus::Running,
                        attempt,
                        slot,
                        pid,
                        started_at,
                        command
                    ])
                })
                .map_err(db(path, "record an attempt start"))?;
            if n == 0 {
                return Err(missing(run, task, "task"));
            }
            tx.prepare_cached(
                "INSERT INTO attempts (run_id, task, attempt, slot, pid, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| s.execute(params![run, task, attempt, slot, pid, started_at]))
            .map_err(db(path, "record an attempt start"))?;
        }
        StoreEvent::AttemptEnded { .. } => record_end(path, tx, ev, None)?,
        StoreEvent::TasksAdded { run, tasks } => insert_task_rows(path, tx, *run, tasks)?,
        StoreEvent::TaskResult { run, task, result, reused } => {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET result = ?3,
                     status = CASE WHEN ?4 THEN ?5 ELSE status END WHERE run_id = ?1 AND task = ?2",
                )
                .and_then(|mut s| {
                    s.execute(params![run, task, result, reused, TaskStatus::Succeeded])
                })
                .map_err(db(path, "record a result"))?;
            if n == 0 {
                return Err(missing(*run, *task, "task"));
            }
        }
        StoreEvent::ResultRefused { run, task, reason } => {
            let n = tx
                .prepare_cached(
                    "UPDATE tasks SET status = ?3, result = NULL, exit_code = NULL,
                     stderr = CAST(?4 AS BLOB) WHERE run_id = ?1 AND task = ?2",
                )
                .and_then(|mut s| s.execute(params![run, task, TaskStatus::Failed, reason]))
                .map_err(db(path, "record a refused result"))?;
            if n == 0 {
                return Err(missing(*run, *task, "task"));
            }
        }
        &StoreEvent::TaskCancelled { run, task } => {
            let n = tx
                .prepare_cached("UPDATE tasks SET status = ?3 WHERE run_id = ?1 AND task = ?2")
                .and_then(|mut s| s.execute(params![run, task, TaskStatus::Cancelled]))
                .map_err(db(path, "cancel a task"))?;
            if n == 0 {
                return Err(missing(run, task, "task"));
            }
        }
        StoreEvent::ControlApplied { request, applied_at, result } => {
            tx.prepare_cached("UPDATE control SET applied_at = ?2, result = ?3 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![request, applied_at, result]))
                .map_err(db(path, "record an applied control request"))?;
        }
        &StoreEvent::InputEnded { run } => {
            let n = tx
                .prepare_cached("UPDATE runs SET input_open = 0 WHERE id = ?1")
                .and_then(|mut s| s.execute([run]))
                .map_err(db(path, "end a run's input"))?;
            if n == 0 {
                return Err(Error::NoSuchRun { run });
            }
        }
        &StoreEvent::RunEnded { run, ended_at, status } => {
            let n = tx
                .prepare_cached(
                    "UPDATE runs SET ended_at = ?2, status = ?3, input_open = 0 WHERE id = ?1",
                )
                .and_then(|mut s| s.execute(params![run, ended_at, status]))
                .map_err(db(path, "end a run"))?;
            if n == 0 {
                return Err(Error::NoSuchRun { run });
            }
        }
    }
    Ok(())
}
