//! The [`Store`] handle and its synchronous writes: runs, tasks, and the repair a
//! resume does. The hot-path writes of a running pool go through the
//! [`Writer`](super::Writer) instead.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{schema, space};
use crate::error::{Error, Result};
use crate::store::lock::RunLock;
use crate::store::records::{NewRun, NewTask, ResumeInfo, RunStatus};
use crate::task::TaskStatus;

/// An open shoal store. Synchronous calls share one connection behind a mutex, so a
/// `Store` can be shared between threads; the writer thread has its own connection.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// The file's schema version: [`schema::SCHEMA_VERSION`] unless opened read-only.
    version: i64,
}

/// Wraps a SQLite error with the operation that failed.
pub(crate) fn db(operation: &'static str) -> impl Fn(rusqlite::Error) -> Error {
    move |source| Error::Store { operation, source }
}

/// The current time as unix seconds.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Encodes a list of words as a JSON array.
pub(crate) fn json_words(words: &[String]) -> String {
    // Serialising strings into JSON cannot fail.
    serde_json::to_string(words).unwrap_or_else(|_| "[]".to_owned())
}

impl Store {
    /// Opens the store at `path` to write into it, creating it (mode 0600) if it does
    /// not exist; a store of an older schema version is migrated.
    ///
    /// The parent directory must exist and be writable ([`Error::StoreOpen`]). A
    /// file that is not a shoal database gives [`Error::StoreCorrupt`]; one of a
    /// newer schema version gives [`Error::StoreSchema`]; an existing store is
    /// checked first and a damaged one gives [`Error::StoreDamaged`].
    pub fn open(path: &Path) -> Result<Store> {
        let conn = schema::open_store(path)?;
        let version = schema::SCHEMA_VERSION;
        Ok(Store { path: path.to_owned(), conn: Mutex::new(conn), version })
    }

    /// Opens an existing store only to read it: it needs no write access to the file
    /// or its directory, and nothing is created, migrated or written. Writes through
    /// it fail. The same errors as [`Store::open`]; a missing or empty file is an
    /// [`Error::StoreOpen`].
    pub fn open_read_only(path: &Path) -> Result<Store> {
        let (conn, version) = schema::open_read_only(path)?;
        Ok(Store { path: path.to_owned(), conn: Mutex::new(conn), version })
    }

    /// The schema version of the file (older ones are read as they are).
    pub(crate) fn version(&self) -> i64 {
        self.version
    }

    /// The path the store was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A failed write as it is, or [`Error::StoreFull`] where the store's file system
    /// is full (`doing` reads "cannot {doing} the store").
    fn full_or(&self, e: Error, doing: &'static str) -> Error {
        match &e {
            Error::Store { source, .. } => match space::full(&self.path, source) {
                Some(free) => Error::StoreFull { path: self.path.clone(), operation: doing, free },
                None => e,
            },
            _ => e,
        }
    }

    /// The shared connection; a panic in another caller leaves it usable, since
    /// every write is a transaction SQLite rolls back on its own.
    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a new run, `running` from now, and returns its id and its lock, which
    /// the caller holds for as long as it runs the run. The lock is taken before the
    /// run is committed, so no reader ever sees the run without it.
    pub fn create_run(&self, run: &NewRun) -> Result<(i64, RunLock)> {
        self.create_run_with(run, &[])
    }

    /// [`Store::create_run`] with its first tasks, in the same transaction: a run is
    /// never stored without the tasks it was started with (a full disk).
    pub fn create_run_with(&self, run: &NewRun, tasks: &[NewTask]) -> Result<(i64, RunLock)> {
        self.insert_run(run, tasks).map_err(|e| self.full_or(e, "record a run in"))
    }

    fn insert_run(&self, run: &NewRun, tasks: &[NewTask]) -> Result<(i64, RunLock)> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("create a run"))?;
        tx.execute(
            "INSERT INTO runs (started_at, status, command, options, cwd, memory_limit_mode)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                now(),
                RunStatus::Running,
                json_words(&run.command),
                run.options.to_string(),
                run.cwd,
                run.memory_limit_mode
            ],
        )
        .map_err(db("create a run"))?;
        let id = tx.last_insert_rowid();
        insert_task_rows(&tx, id, tasks)?;
        let lock = RunLock::take(&self.path, id)?;
        tx.commit().map_err(db("create a run"))?;
        Ok((id, lock))
    }

    /// A stored status as it stands: `running` whose lock no live process holds is
    /// [`RunStatus::Died`]. The status is read again once the lock is seen free: a
    /// run that was just ending committed its end before it let its lock go. A run
    /// stored as `finished` with tasks still `queued` or `running` (`open`) did not
    /// finish: it shows as [`RunStatus::Interrupted`].
    pub(crate) fn live_status(&self, run: i64, stored: RunStatus, open: u64) -> RunStatus {
        let status = if stored != RunStatus::Running || RunLock::is_held(&self.path, run) {
            stored
        } else {
            let now: Option<RunStatus> = self
                .conn()
                .query_row("SELECT status FROM runs WHERE id = ?1", [run], |r| r.get(0))
                .ok();
            match now {
                Some(RunStatus::Running) | None => RunStatus::Died,
                Some(status) => status,
            }
        };
        match status {
            RunStatus::Finished if open > 0 => RunStatus::Interrupted,
            status => status,
        }
    }

    /// Replaces a run's options and memory-limit mechanism: a resume may change them,
    /// and the next resume starts from what this one used.
    pub fn set_run_options(
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
            .map_err(|e| self.full_or(db("update a run's options")(e), "update a run in"))?;
        if n == 0 {
            return Err(Error::NoSuchRun { run });
        }
        Ok(())
    }

    /// Adds tasks to a run, `queued` with no attempts, in one transaction.
    pub fn insert_tasks(&self, run: i64, tasks: &[NewTask]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("insert tasks"))?;
        insert_task_rows(&tx, run, tasks)?;
        tx.commit().map_err(db("insert tasks"))
    }

    /// The result of the latest task with this key and command (a call's label), in
    /// any run of the store, if that task succeeded and kept one. A later failure of
    /// the same call (a stored result its front end could not take any more) means
    /// the call must run again: an earlier success is not reused past it.
    pub fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>> {
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
            .map_err(db("look up a stored result"))
    }

    /// Repairs a run whose shoal was killed so it can be resumed: attempts left open
    /// end as `interrupted` now, `running` tasks go back to `queued`, and the run is
    /// `running` again. Returns the run and every task that did not succeed.
    pub fn prepare_resume(&self, run: i64) -> Result<ResumeInfo> {
        self.repair(run).map_err(|e| self.full_or(e, "prepare a resume in"))?;
        let mut pending = self.tasks(run, None)?;
        pending.retain(|t| t.status != TaskStatus::Succeeded);
        Ok(ResumeInfo { run: self.run(run)?, pending })
    }

    /// The writes of [`Store::prepare_resume`], in one transaction.
    fn repair(&self, run: i64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("prepare a resume"))?;
        require_run(&tx, run)?;
        tx.execute(
            "UPDATE attempts SET outcome = 'interrupted', ended_at = ?2
             WHERE run_id = ?1 AND ended_at IS NULL",
            params![run, now()],
        )
        .map_err(db("prepare a resume"))?;
        tx.execute(
            "UPDATE tasks SET status = ?2 WHERE run_id = ?1 AND status = ?3",
            params![run, TaskStatus::Queued, TaskStatus::Running],
        )
        .map_err(db("prepare a resume"))?;
        tx.execute(
            "UPDATE runs SET status = ?2, ended_at = NULL WHERE id = ?1",
            params![run, RunStatus::Running],
        )
        .map_err(db("prepare a resume"))?;
        tx.commit().map_err(db("prepare a resume"))
    }
}

/// Fails with [`Error::NoSuchRun`] unless the run exists.
pub(crate) fn require_run(conn: &Connection, run: i64) -> Result<()> {
    conn.query_row("SELECT 1 FROM runs WHERE id = ?1", [run], |_| Ok(()))
        .optional()
        .map_err(db("look up a run"))?
        .ok_or(Error::NoSuchRun { run })
}

/// Inserts tasks, `queued` with no attempts, inside the caller's transaction.
pub(crate) fn insert_task_rows(tx: &Transaction<'_>, run: i64, tasks: &[NewTask]) -> Result<()> {
    require_run(tx, run)?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO tasks (run_id, task, args, command, priority, cost, key,
                                timeout, retries, status, attempts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0)",
        )
        .map_err(db("insert tasks"))?;
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
            .map_err(db("insert tasks"))?;
    }
    Ok(())
}
