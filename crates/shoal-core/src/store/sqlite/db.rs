//! The synchronous writes of the SQLite backend: runs, tasks, and the repair a resume
//! does. The hot-path writes of a running pool go through the
//! [`Writer`](crate::store::Writer) instead.

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::failure::db;
use super::space;
use super::store::SqliteStore;
use crate::error::{Error, Result};
use crate::run::{Liveness, RunHold};
use crate::store::records::{live_status, unix_now as now, NewRun, NewTask, RunRecord, RunStatus};
use crate::task::TaskStatus;

/// Encodes a list of words as a JSON array.
pub(crate) fn json_words(words: &[String]) -> String {
    // Serialising strings into JSON cannot fail.
    serde_json::to_string(words).unwrap_or_else(|_| "[]".to_owned())
}

impl SqliteStore {
    /// A failed write as it is, or [`Error::StoreFull`] where the store's file system
    /// is full (`doing` reads "cannot {doing} the store").
    fn full_or(&self, e: Error, doing: &'static str) -> Error {
        match &e {
            Error::Store { source, .. } => match space::full(&self.path, source.kind()) {
                Some(free) => Error::StoreFull { path: self.path.clone(), operation: doing, free },
                None => e,
            },
            _ => e,
        }
    }

    /// A new run with its first tasks, in one transaction, and its hold, taken before
    /// the run is committed.
    /// `input_open`: more tasks will come as its input is read.
    pub(super) fn create_run(
        &self,
        run: &NewRun,
        tasks: &[NewTask],
        input_open: bool,
    ) -> Result<RunHold> {
        self.insert_run(run, tasks, input_open).map_err(|e| self.full_or(e, "record a run in"))
    }

    fn insert_run(&self, run: &NewRun, tasks: &[NewTask], input_open: bool) -> Result<RunHold> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, "create a run"))?;
        tx.execute(
            "INSERT INTO runs (started_at, status, command, options, cwd, memory_limit_mode,
                               input_open)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                now(),
                RunStatus::Running,
                json_words(&run.command),
                run.options.to_string(),
                run.cwd,
                run.memory_limit_mode,
                input_open
            ],
        )
        .map_err(db(&self.path, "create a run"))?;
        let id = tx.last_insert_rowid();
        insert_task_rows(&self.path, &tx, id, tasks)?;
        let hold = self.liveness.hold(id)?;
        tx.commit().map_err(db(&self.path, "create a run"))?;
        Ok(hold)
    }

    /// A stored status as it stands: `running` that is not alive (no live process
    /// holds it) is [`RunStatus::Died`]. The status is read again once the run is seen
    /// dead: a run that was just ending committed its end before it let its hold go. A run
    /// stored as `finished` with tasks still `queued` or `running` (`open`) did not
    /// finish: it shows as [`RunStatus::Interrupted`].
    pub(super) fn live_status(&self, run: i64, stored: RunStatus, open: u64) -> RunStatus {
        let reread = || {
            self.conn().query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| r.get(0)).ok()
        };
        live_status(stored, open, || self.liveness.is_alive(run), reread)
    }

    /// Replaces a run's options and memory-limit mechanism: a resume may change them,
    /// and the next resume starts from what this one used.
    pub(super) fn set_run_options(
        &self,
        run: i64,
        options: &serde_json::Value,
        memory_limit_mode: Option<&str>,
    ) -> Result<()> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE runs SET options = ?2, memory_limit_mode = ?3 WHERE id = ?1",
                params![run, options.to_string(), memory_limit_mode],
            )
            .map_err(|e| {
                self.full_or(db(&self.path, "update a run's options")(e), "update a run in")
            })?;
        if n == 0 {
            return Err(Error::NoSuchRun { run });
        }
        Ok(())
    }

    /// Adds tasks to a run, `queued` with no attempts, in one transaction.
    pub(super) fn insert_tasks(&self, run: i64, tasks: &[NewTask]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, "insert tasks"))?;
        insert_task_rows(&self.path, &tx, run, tasks)?;
        tx.commit().map_err(db(&self.path, "insert tasks"))
    }

    /// The result of the latest task with this key and command (a call's label), in
    /// any run of the store, if that task succeeded and kept one. A later failure of
    /// the same call (a stored result its front end could not take any more) means
    /// the call must run again: an earlier success is not reused past it.
    pub(super) fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>> {
        self.conn()
            .prepare_cached(
                "SELECT status, result FROM tasks WHERE key = ?1 AND command = ?2
                 AND status NOT IN (?3, ?4, ?5) ORDER BY run_id DESC, task DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        key,
                        command,
                        TaskStatus::Queued,
                        TaskStatus::Running,
                        TaskStatus::Cancelled
                    ],
                    |r| Ok((r.get::<_, TaskStatus>(0)?, r.get::<_, Option<Vec<u8>>>(1)?)),
                )
                .optional()
            })
            .map(|latest| match latest {
                Some((TaskStatus::Succeeded, result)) => result,
                _ => None,
            })
            .map_err(db(&self.path, "look up a stored result"))
    }

    /// Repairs a run whose shoal was killed so it can be resumed: attempts left open
    /// end as `interrupted` now, `running` tasks go back to `queued`, and the run is
    /// `running` again. Returns the run.
    pub(super) fn prepare_resume(&self, run: i64) -> Result<RunRecord> {
        self.repair(run).map_err(|e| self.full_or(e, "prepare a resume in"))?;
        self.run(run)
    }

    /// The writes of [`SqliteStore::prepare_resume`], in one transaction.
    fn repair(&self, run: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db(&self.path, "prepare a resume"))?;
        require_run(&self.path, &tx, run)?;
        tx.execute(
            "UPDATE attempts SET outcome = 'interrupted', ended_at = ?2
             WHERE run_id = ?1 AND ended_at IS NULL",
            params![run, now()],
        )
        .map_err(db(&self.path, "prepare a resume"))?;
        tx.execute(
            "UPDATE tasks SET status = ?2 WHERE run_id = ?1 AND status = ?3",
            params![run, TaskStatus::Queued, TaskStatus::Running],
        )
        .map_err(db(&self.path, "prepare a resume"))?;
        // Requests its dead shoal never took: a resume starts without them.
        tx.execute(
            "UPDATE control SET applied_at = ?2, result = 'dropped: the run had died'
             WHERE run_id = ?1 AND applied_at IS NULL",
            params![run, now()],
        )
        .map_err(db(&self.path, "prepare a resume"))?;
        tx.execute(
            // What its dead shoal had not read of its input is not in the store: a
            // resume runs the tasks recorded.
            "UPDATE runs SET status = ?2, ended_at = NULL, input_open = 0 WHERE id = ?1",
            params![run, RunStatus::Running],
        )
        .map_err(db(&self.path, "prepare a resume"))?;
        tx.commit().map_err(db(&self.path, "prepare a resume"))
    }
}

/// Fails with [`Error::NoSuchRun`] unless the run exists (in the store at `path`).
pub(super) fn require_run(path: &Path, conn: &Connection, run: i64) -> Result<()> {
    conn.query_row("SELECT 1 FROM runs WHERE id = ?1", [run], |_| Ok(()))
        .optional()
        .map_err(db(path, "look up a run"))?
        .ok_or(Error::NoSuchRun { run })
}

/// Inserts tasks, `queued` with no attempts, inside the caller's transaction.
pub(super) fn insert_task_rows(
    path: &Path,
    tx: &Transaction<'_>,
    run: i64,
    tasks: &[NewTask],
) -> Result<()> {
    require_run(path, tx, run)?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO tasks (run_id, task, args, command, priority, cost, key,
                                timeout, retries, status, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)",
        )
        .map_err(db(path, "insert tasks"))?;
    for t in tasks {
        insert
            .execute(params![
                run,
                t.task,
                json_words(&t.args),
                t.command,
                t.meta.priority,
                t.meta.cost.map(|d| d.as_secs_f64()),
                t.meta.key,
                t.meta.timeout.map(|d| d.as_secs_f64()),
                t.meta.retries,
                TaskStatus::Queued,
            ])
            .map_err(db(path, "insert tasks"))?;
    }
    Ok(())
}
