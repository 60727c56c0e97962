//! Following a run in the SQLite backend: the [`ProgressFeed`] of `shoal watch`, on a
//! read-only connection of its own.
//!
//! What it reads, so that a poll costs what changed and not what the run holds:
//!
//! - `PRAGMA data_version` first, outside any transaction: it changes only when
//!   another connection commits, so an idle poll reads nothing else.
//! - Then, in one read transaction (one snapshot): the run's row; tasks numbered past
//!   the last one counted (a Python pool adds tasks as calls are submitted); attempts
//!   past the last rowid read (an attempt's row is inserted when it starts, or whole
//!   when it starts and ends in one commit, and never deleted, so rowids only grow);
//!   the attempts that were open at the last poll, each by its key; and the rows of
//!   the tasks whose attempt ended with something other than success.
//! - A task's old status is known without storing one per task: it was `running`
//!   while one of its attempts was open at the last poll, and `queued` otherwise (a
//!   task that ended gets no new attempt while its run lives).
//! - Changes that leave the attempts alone (a queued task cancelled, a Python call
//!   answered from a stored result, a result its caller refused) are picked up by a
//!   recount of the run's statuses (one scan of the status index), done at most every
//!   [`RECOUNT_COST`] times what the last one took, and at least every
//!   [`RECOUNT_EVERY`]: exact on small runs, about 2% of a core on a run of a million
//!   tasks.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use super::failure::db;
use super::schema;
use crate::error::{Error, Result};
use crate::store::follow::{last_line, ProgressFeed, RunProgress, RunningAttempt, TaskEnd};
use crate::store::records::{zero_counts, RunStatus, StatusCounts};
use crate::task::{TaskId, TaskStatus};

/// The least time between two recounts.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// A recount waits at least this many times what the last one took.
const RECOUNT_COST: u32 = 50;

/// How much of a failed task's error output is read for its message.
const MESSAGE_TAIL: i64 = 2048;

/// The run's row.
const RUN: &str = "SELECT status, ended_at, input_open FROM runs WHERE id = ?1";
/// The same in a store older than `runs.input_open`.
const RUN_BEFORE_INPUT_OPEN: &str = "SELECT status, ended_at, 0 FROM runs WHERE id = ?1";
/// Tasks past the last one counted, by the primary key's range.
const NEW_TASKS: &str =
    "SELECT task, status FROM tasks WHERE run_id = ?1 AND task > ?2 ORDER BY task";
/// Attempts past the last one read: the rowid's range (`+run_id` keeps the planner from
/// scanning the run's attempts by the primary key's index instead).
const NEW_ATTEMPTS: &str = "SELECT rowid, task, attempt, slot, started_at, ended_at, outcome
    FROM attempts WHERE rowid > ?1 AND +run_id = ?2 ORDER BY rowid";
/// The last attempt of the store.
const LAST_ATTEMPT: &str = "SELECT max(rowid) FROM attempts";
/// One attempt that was open, by its key.
const ATTEMPT: &str =
    "SELECT ended_at, outcome FROM attempts WHERE run_id = ?1 AND task = ?2 AND attempt = ?3";
/// One task's end, by its key; the tail of its error output only when it is a
/// failure's only word.
const TASK_END: &str = "SELECT status, attempts, exit_code, signal,
    CASE WHEN exit_code IS NULL AND signal IS NULL THEN substr(stderr, ?3) END
    FROM tasks WHERE run_id = ?1 AND task = ?2";

/// The statements a poll runs, each reading by a key or a range of one: none scans
/// what the run holds (the recount aside).
#[cfg(test)]
pub(super) const POLL_STATEMENTS: [&str; 6] =
    [RUN, NEW_TASKS, NEW_ATTEMPTS, LAST_ATTEMPT, ATTEMPT, TASK_END];

/// A watcher's view of one run of a SQLite store.
#[derive(Debug)]
pub(crate) struct SqliteProgress {
    conn: Connection,
    path: PathBuf,
    /// `PRAGMA data_version` at the last read.
    seen: i64,
    /// Tasks numbered up to this one are counted.
    last_task: TaskId,
    /// Attempts up to this rowid were read.
    last_attempt: i64,
    /// The attempts open at the last read, by task and attempt.
    open: BTreeMap<(TaskId, u32), RunningAttempt>,
    progress: RunProgress,
    /// How the run's row is read in this store's version.
    run_query: &'static str,
    /// When the statuses are next recounted, and how long the last recount took.
    recount_at: Instant,
    /// Polls that read past the change counter (an idle poll must not).
    reads: u64,
}

impl SqliteProgress {
    /// Opens a read-only connection to the store at `path` and reads run `run` as it
    /// is now; [`Error::NoSuchRun`] if the store does not hold it.
    pub(super) fn open(path: &Path, run: i64) -> Result<SqliteProgress> {
        let (conn, version) = schema::reopen_read_only(path)?;
        let run_query =
            if version >= schema::INPUT_OPEN_VERSION { RUN } else { RUN_BEFORE_INPUT_OPEN };
        let fail = db(path, "follow a run");
        let seen = data_version(&conn).map_err(&fail)?;
        let (progress, last_task, last_attempt, open) =
            snapshot(&conn, run, run_query).map_err(&fail)?;
        let progress = progress.ok_or(Error::NoSuchRun { run })?;
        let mut feed = SqliteProgress {
            conn,
            path: path.to_owned(),
            seen,
            last_task,
            last_attempt,
            open,
            progress,
            run_query,
            recount_at: Instant::now(),
            reads: 0,
        };
        feed.progress.running = feed.open.values().copied().collect();
        feed.progress.running.sort_by_key(|a| (a.slot, a.task));
        Ok(feed)
    }

    /// Reads what changed, in one snapshot; returns the tasks that reached an end.
    fn read_changes(&mut self) -> rusqlite::Result<Vec<TaskEnd>> {
        let run = self.progress.run;
        let conn = &self.conn;
        if let Some((status, ended_at, input_open)) = conn
            .prepare_cached(self.run_query)?
            .query_row([run], |r| Ok((r.get::<_, RunStatus>(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
        {
            self.progress.status = status;
            self.progress.ended_at = ended_at;
            self.progress.input_open = input_open;
        }
        let mut ends = Vec::new();
        let counts = &mut self.progress.counts;
        let mut count = |status: TaskStatus, by: i64| {
            let n = counts.entry(status).or_default();
            *n = n.saturating_add_signed(by);
        };

        // Tasks added since: counted in the status they have now.
        let mut fresh = HashSet::new();
        let mut failed_fresh = Vec::new();
        {
            let mut stmt = conn.prepare_cached(NEW_TASKS)?;
            let mut rows = stmt.query(params![run, self.last_task])?;
            while let Some(row) = rows.next()? {
                let (task, status): (TaskId, TaskStatus) = (row.get(0)?, row.get(1)?);
                self.last_task = task;
                self.progress.total += 1;
                count(status, 1);
                fresh.insert(task);
                if status.is_failure() {
                    failed_fresh.push(task);
                } else if !matches!(status, TaskStatus::Queued | TaskStatus::Running) {
                    ends.push(TaskEnd::bare(task, status));
                }
            }
        }

        // Attempts that started or ended since: which tasks changed, and the last
        // attempt of each that ended here, with its outcome.
        let was_running: HashSet<TaskId> = self.open.keys().map(|&(task, _)| task).collect();
        let mut ended: BTreeMap<TaskId, (u32, Option<String>)> = BTreeMap::new();
        let mut end = |task: TaskId, attempt: u32, outcome: Option<String>| {
            let last = ended.entry(task).or_insert((attempt, None));
            if attempt >= last.0 {
                *last = (attempt, outcome);
            }
        };
        {
            let mut stmt = conn.prepare_cached(NEW_ATTEMPTS)?;
            let mut rows = stmt.query(params![self.last_attempt, run])?;
            while let Some(row) = rows.next()? {
                self.last_attempt = row.get(0)?;
                let attempt = RunningAttempt {
                    task: row.get(1)?,
                    attempt: row.get(2)?,
                    slot: row.get(3)?,
                    started_at: row.get(4)?,
                };
                match row.get::<_, Option<f64>>(5)? {
                    None => {
                        self.open.insert((attempt.task, attempt.attempt), attempt);
                    }
                    Some(_) => end(attempt.task, attempt.attempt, row.get(6)?),
                }
            }
            // The rowid of attempts of other runs of the store counts as read too.
            let max: Option<i64> =
                conn.prepare_cached(LAST_ATTEMPT)?.query_row([], |r| r.get(0))?;
            self.last_attempt = self.last_attempt.max(max.unwrap_or(0));
        }
        let mut stmt = conn.prepare_cached(ATTEMPT)?;
        let open: Vec<(TaskId, u32)> = self.open.keys().copied().collect();
        for (task, attempt) in open {
            let row: Option<(Option<f64>, Option<String>)> = stmt
                .query_row(params![run, task, attempt], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            match row {
                Some((None, _)) => {}
                Some((Some(_), outcome)) => {
                    self.open.remove(&(task, attempt));
                    end(task, attempt, outcome);
                }
                None => {
                    self.open.remove(&(task, attempt));
                }
            }
        }
        let running_now: HashSet<TaskId> = self.open.keys().map(|&(task, _)| task).collect();

        // Each changed task moves from its old status to its new one.
        let mut touched: Vec<TaskId> =
            ended.keys().chain(&running_now).copied().filter(|t| !fresh.contains(t)).collect();
        touched.sort_unstable();
        touched.dedup();
        for task in touched {
            let old =
                if was_running.contains(&task) { TaskStatus::Running } else { TaskStatus::Queued };
            let new = if running_now.contains(&task) {
                TaskStatus::Running
            } else if ended[&task].1.as_deref() == Some(TaskStatus::Succeeded.as_str()) {
                ends.push(TaskEnd::bare(task, TaskStatus::Succeeded));
                TaskStatus::Succeeded
            } else {
                match task_end(conn, run, task)? {
                    Some(end) => {
                        let status = end.status;
                        if !matches!(status, TaskStatus::Queued | TaskStatus::Running) {
                            ends.push(end);
                        }
                        status
                    }
                    None => continue,
                }
            };
            if new != old {
                count(old, -1);
                count(new, 1);
            }
        }
        for task in failed_fresh {
            if let Some(end) = task_end(conn, run, task)? {
                ends.push(end);
            }
        }

        if Instant::now() >= self.recount_at {
            let began = Instant::now();
            self.progress.counts = status_counts(conn, run)?;
            self.progress.total = self.progress.counts.values().sum();
            self.recount_at = Instant::now() + RECOUNT_EVERY.max(began.elapsed() * RECOUNT_COST);
        }
        self.progress.running = self.open.values().copied().collect();
        self.progress.running.sort_by_key(|a| (a.slot, a.task));
        Ok(ends)
    }

    /// How many polls read past the change counter.
    #[cfg(test)]
    pub(super) fn reads(&self) -> u64 {
        self.reads
    }
}

impl ProgressFeed for SqliteProgress {
    fn poll(&mut self) -> Result<Vec<TaskEnd>> {
        let path = self.path.clone();
        let fail = db(&path, "follow a run");
        let version = data_version(&self.conn).map_err(&fail)?;
        if version == self.seen {
            return Ok(Vec::new());
        }
        self.reads += 1;
        self.conn.execute_batch("BEGIN").map_err(&fail)?;
        // A read that fails half-way is read again whole at the next poll.
        let before = (self.last_task, self.last_attempt, self.open.clone(), self.progress.clone());
        let read = self.read_changes();
        // A read transaction: ending it only lets the snapshot go.
        let _ = self.conn.execute_batch(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
        match read {
            Ok(ends) => {
                self.seen = version;
                Ok(ends)
            }
            Err(e) => {
                (self.last_task, self.last_attempt, self.open, self.progress) = before;
                Err(fail(e))
            }
        }
    }

    fn progress(&self) -> &RunProgress {
        &self.progress
    }
}

impl TaskEnd {
    /// A task's end with nothing to say but its status.
    fn bare(task: TaskId, status: TaskStatus) -> TaskEnd {
        TaskEnd { task, status, attempts: 0, exit_code: None, signal: None, message: None }
    }
}

/// `PRAGMA data_version`: prepared once, since it runs at every poll.
fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))
}

type Snapshot = (Option<RunProgress>, TaskId, i64, BTreeMap<(TaskId, u32), RunningAttempt>);

/// The run as it is now, read in one transaction: its progress (`None` if the store
/// does not hold it), its last task number, the last attempt's rowid and the attempts
/// open now.
fn snapshot(conn: &Connection, run: i64, run_query: &str) -> rusqlite::Result<Snapshot> {
    conn.execute_batch("BEGIN")?;
    let read = || -> rusqlite::Result<Snapshot> {
        let Some((status, started_at, ended_at)) = conn
            .query_row("SELECT status, started_at, ended_at FROM runs WHERE id = ?1", [run], |r| {
                Ok((r.get::<_, RunStatus>(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?
        else {
            return Ok((None, 0, 0, BTreeMap::new()));
        };
        let input_open: bool = conn.query_row(run_query, [run], |r| r.get(2))?;
        let counts = status_counts(conn, run)?;
        let last_task: Option<TaskId> =
            conn.query_row("SELECT max(task) FROM tasks WHERE run_id = ?1", [run], |r| r.get(0))?;
        let last_attempt: Option<i64> = conn.query_row(LAST_ATTEMPT, [], |r| r.get(0))?;
        let mut stmt = conn.prepare(
            "SELECT task, attempt, slot, started_at FROM attempts
             WHERE run_id = ?1 AND ended_at IS NULL",
        )?;
        let open = stmt
            .query_map([run], |r| {
                Ok(RunningAttempt {
                    task: r.get(0)?,
                    attempt: r.get(1)?,
                    slot: r.get(2)?,
                    started_at: r.get(3)?,
                })
            })?
            .map(|a| a.map(|a| ((a.task, a.attempt), a)))
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()?;
        let progress = RunProgress {
            run,
            status,
            started_at,
            ended_at,
            total: counts.values().sum(),
            input_open,
            counts,
            running: Vec::new(),
        };
        Ok((Some(progress), last_task.unwrap_or(0), last_attempt.unwrap_or(0), open))
    };
    let read = read();
    let _ = conn.execute_batch(if read.is_ok() { "COMMIT" } else { "ROLLBACK" });
    read
}

/// Task counts per status of one run, every status present (one scan of the run's
/// part of the status index).
fn status_counts(conn: &Connection, run: i64) -> rusqlite::Result<StatusCounts> {
    let mut counts = zero_counts();
    let mut stmt = conn
        .prepare_cached("SELECT status, count(*) FROM tasks WHERE run_id = ?1 GROUP BY status")?;
    let rows = stmt.query_map([run], |r| Ok((r.get::<_, TaskStatus>(0)?, r.get::<_, u64>(1)?)))?;
    for row in rows {
        let (status, n) = row?;
        counts.insert(status, n);
    }
    Ok(counts)
}

/// A task's status and how its last attempt ended, with the tail of its error output
/// when a failure has neither exit code nor signal; `None` if the run has no such task.
fn task_end(conn: &Connection, run: i64, task: TaskId) -> rusqlite::Result<Option<TaskEnd>> {
    conn.prepare_cached(TASK_END)?
        .query_row(params![run, task, -MESSAGE_TAIL], |r| {
            let status: TaskStatus = r.get(0)?;
            let tail: Option<Vec<u8>> = r.get(4)?;
            Ok(TaskEnd {
                task,
                status,
                attempts: r.get(1)?,
                exit_code: r.get(2)?,
                signal: r.get(3)?,
                message: tail.filter(|_| status.is_failure()).and_then(|t| last_line(&t)),
            })
        })
        .optional()
}
