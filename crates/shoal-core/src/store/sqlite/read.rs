//! Queries over the SQLite store: runs, tasks, attempts and statistics. Reads only;
//! in WAL mode they see the last commit and never wait for the writer thread.

use std::path::Path;

use rusqlite::types::Type;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::db::require_run;
use super::failure::db;
use super::schema::INPUT_OPEN_VERSION;
use super::store::SqliteStore;
use crate::error::Result;
use crate::store::records::{
    open_tasks, unfinished, zero_counts, AttemptRecord, RunRecord, RunStats, RunSummary, SlotStats,
    StatusCounts, TaskRecord,
};
use crate::task::{TaskId, TaskStatus};

pub(super) const TASK_COLUMNS: &str =
    "run_id, task, args, command, priority, cost, key, timeout, retries,
    status, attempts, exit_code, signal, slot, pid, started_at, ended_at, duration,
    stdout, stderr, stdout_truncated, stderr_truncated";

impl SqliteStore {
    /// Every run, oldest first, with its task counts; a run whose shoal died shows
    /// [`RunStatus::Died`](crate::store::RunStatus::Died).
    pub(super) fn runs(&self) -> Result<Vec<RunSummary>> {
        let mut runs = self.stored_runs()?;
        for run in &mut runs {
            run.status = self.live_status(run.id, run.status, open_tasks(&run.counts));
        }
        Ok(runs)
    }

    /// One run; [`Error::NoSuchRun`](crate::Error::NoSuchRun) if the store does not hold
    /// it. A run whose shoal died shows [`RunStatus::Died`](crate::store::RunStatus::Died).
    pub(super) fn run(&self, id: i64) -> Result<RunRecord> {
        let record = self.stored_run(id)?;
        let open = open_tasks(&status_counts(&self.path, &self.conn(), id)?);
        Ok(RunRecord { status: self.live_status(id, record.status, open), ..record })
    }

    /// Every run as stored, with its task counts.
    fn stored_runs(&self) -> Result<Vec<RunSummary>> {
        let conn = self.conn();
        let mut runs = conn
            .prepare(if self.version() >= INPUT_OPEN_VERSION {
                "SELECT id, started_at, ended_at, status, command, input_open FROM runs ORDER BY id"
            } else {
                "SELECT id, started_at, ended_at, status, command, 0 FROM runs ORDER BY id"
            })
            .and_then(|mut stmt| {
                stmt.query_map([], |r| {
                    Ok(RunSummary {
                        id: r.get(0)?,
                        started_at: r.get(1)?,
                        ended_at: r.get(2)?,
                        status: r.get(3)?,
                        command: json(r, 4)?,
                        total: 0,
                        input_open: r.get(5)?,
                        unfinished: 0,
                        counts: zero_counts(),
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db(&self.path, "list runs"))?;
        let mut stmt = conn
            .prepare("SELECT run_id, status, count(*) FROM tasks GROUP BY run_id, status")
            .map_err(db(&self.path, "count tasks"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, TaskStatus>(1)?, r.get(2)?)))
            .and_then(Iterator::collect::<rusqlite::Result<Vec<(i64, TaskStatus, u64)>>>)
            .map_err(db(&self.path, "count tasks"))?;
        for (id, status, n) in rows {
            // Both lists are ordered by run id.
            if let Ok(i) = runs.binary_search_by_key(&id, |r| r.id) {
                runs[i].counts.insert(status, n);
                runs[i].total += n;
            }
        }
        for run in &mut runs {
            run.unfinished = unfinished(&run.counts);
        }
        Ok(runs)
    }

    /// The id of the newest run, if any.
    pub(super) fn last_run(&self) -> Result<Option<i64>> {
        self.conn()
            .query_row("SELECT max(id) FROM runs", [], |r| r.get(0))
            .map_err(db(&self.path, "find the last run"))
    }

    /// One run as stored.
    fn stored_run(&self, id: i64) -> Result<RunRecord> {
        let conn = self.conn();
        require_run(&self.path, &conn, id)?;
        conn.query_row(
            "SELECT id, started_at, ended_at, status, command, options, cwd, memory_limit_mode
             FROM runs WHERE id = ?1",
            [id],
            |r| {
                Ok(RunRecord {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    ended_at: r.get(2)?,
                    status: r.get(3)?,
                    command: json(r, 4)?,
                    options: json(r, 5)?,
                    cwd: r.get(6)?,
                    memory_limit_mode: r.get(7)?,
                })
            },
        )
        .map_err(db(&self.path, "read a run"))
    }

    /// The tasks of a run by task number, all of them or those in one status.
    pub(super) fn tasks(&self, run: i64, status: Option<TaskStatus>) -> Result<Vec<TaskRecord>> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE run_id = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY task"
        );
        let mut stmt = conn.prepare(&sql).map_err(db(&self.path, "read tasks"))?;
        stmt.query_map(params![run, status], task_row)
            .and_then(Iterator::collect)
            .map_err(db(&self.path, "read tasks"))
    }

    /// The tasks of a run that did not succeed numbered after `after`, by number, at
    /// most `limit` of them: what a resume runs, read a page at a time (keyset by task
    /// number, so each page costs the same however far the run has got). The
    /// succeeded ones, most of a long run, are never read.
    pub(super) fn unsucceeded_tasks(
        &self,
        run: i64,
        after: TaskId,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE run_id = ?1 AND task > ?2 AND status != ?3 ORDER BY task LIMIT ?4"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(db(&self.path, "read tasks"))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        stmt.query_map(params![run, after, TaskStatus::Succeeded, limit], task_row)
            .and_then(Iterator::collect)
            .map_err(db(&self.path, "read tasks"))
    }

    /// The lowest and the highest timeout stored for the tasks of a run that did not
    /// succeed, each with the first task that holds it (none when no such task has
    /// one): a resume checks them all by these two before it changes anything.
    pub(super) fn unsucceeded_timeout_extremes(&self, run: i64) -> Result<Vec<(TaskId, f64)>> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        let mut extremes = Vec::with_capacity(2);
        for order in ["ASC", "DESC"] {
            let sql = format!(
                "SELECT task, timeout FROM tasks
                 WHERE run_id = ?1 AND status != ?2 AND timeout IS NOT NULL
                 ORDER BY timeout {order}, task LIMIT 1"
            );
            let extreme = conn
                .query_row(&sql, params![run, TaskStatus::Succeeded], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(db(&self.path, "read timeouts"))?;
            extremes.extend(extreme);
        }
        Ok(extremes)
    }

    /// Every attempt of a run, by task then attempt number, with its output.
    pub(super) fn attempts(&self, run: i64) -> Result<Vec<AttemptRecord>> {
        self.attempts_of(run, None)
    }

    /// The attempts of a run, or of one of its tasks, by task then attempt number.
    pub(super) fn attempts_of(&self, run: i64, task: Option<TaskId>) -> Result<Vec<AttemptRecord>> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        // The output of the last attempt to end is in the task's row (before version 3
        // only that one was kept); earlier ones keep theirs in their own row.
        let own = if self.version() >= 3 {
            "a.stdout, a.stderr, a.stdout_truncated, a.stderr_truncated"
        } else {
            "NULL, NULL, 0, 0"
        };
        let sql = format!(
            "WITH attempt (run_id, task, attempt, slot, pid, started_at, ended_at, duration,
                          outcome, exit_code, signal, max_rss_kb, stdout, stderr,
                          stdout_truncated, stderr_truncated)
                AS (SELECT a.run_id, a.task, a.attempt, a.slot, a.pid, a.started_at,
                           a.ended_at, a.duration, a.outcome, a.exit_code, a.signal,
                           a.max_rss_kb, {own}
                    FROM attempts a WHERE a.run_id = ?1 AND (?2 IS NULL OR a.task = ?2)),
             last (task, attempt)
                AS (SELECT task, max(attempt) FROM attempt
                    WHERE outcome IS NOT NULL AND outcome != 'interrupted' GROUP BY task)
             SELECT a.run_id, a.task, a.attempt, a.slot, a.pid, a.started_at, a.ended_at,
                    a.duration, a.outcome, a.exit_code, a.signal, a.max_rss_kb,
                    CASE WHEN a.stdout IS NULL AND l.attempt IS NOT NULL
                         THEN t.stdout ELSE a.stdout END,
                    CASE WHEN a.stderr IS NULL AND l.attempt IS NOT NULL
                         THEN t.stderr ELSE a.stderr END,
                    CASE WHEN a.stdout IS NULL AND l.attempt IS NOT NULL
                         THEN t.stdout_truncated ELSE a.stdout_truncated END,
                    CASE WHEN a.stderr IS NULL AND l.attempt IS NOT NULL
                         THEN t.stderr_truncated ELSE a.stderr_truncated END
             FROM attempt a
             JOIN tasks t ON t.run_id = a.run_id AND t.task = a.task
             LEFT JOIN last l ON l.task = a.task AND l.attempt = a.attempt
             ORDER BY a.task, a.attempt"
        );
        let mut stmt = conn.prepare(&sql).map_err(db(&self.path, "read attempts"))?;
        stmt.query_map(params![run, task], |r| {
            Ok(AttemptRecord {
                run: r.get(0)?,
                task: r.get(1)?,
                attempt: r.get(2)?,
                slot: r.get(3)?,
                pid: r.get(4)?,
                started_at: r.get(5)?,
                ended_at: r.get(6)?,
                duration: r.get(7)?,
                outcome: r.get(8)?,
                exit_code: r.get(9)?,
                signal: r.get(10)?,
                max_rss_kb: r.get(11)?,
                stdout: r.get(12)?,
                stderr: r.get(13)?,
                stdout_truncated: r.get(14)?,
                stderr_truncated: r.get(15)?,
            })
        })
        .and_then(Iterator::collect)
        .map_err(db(&self.path, "read attempts"))
    }

    /// Counts, success rate, duration percentiles and per-slot work of a run.
    pub(super) fn stats(&self, run: i64) -> Result<RunStats> {
        let conn = self.conn();
        require_run(&self.path, &conn, run)?;
        let counts = status_counts(&self.path, &conn, run)?;
        let mut stmt = conn
            .prepare(
                "SELECT duration FROM tasks
                 WHERE run_id = ?1 AND status NOT IN (?2, ?3, ?4) AND duration IS NOT NULL
                 ORDER BY duration",
            )
            .map_err(db(&self.path, "read durations"))?;
        let durations: Vec<f64> = stmt
            .query_map(
                params![run, TaskStatus::Queued, TaskStatus::Running, TaskStatus::Cancelled],
                |r| r.get(0),
            )
            .and_then(Iterator::collect)
            .map_err(db(&self.path, "read durations"))?;

        let per_slot = slot_stats(&self.path, &conn, run)?;
        Ok(RunStats::from_parts(run, counts, &durations, per_slot))
    }
}

/// Attempts and busy seconds per slot of one run, by slot.
pub(super) fn slot_stats(path: &Path, conn: &Connection, run: i64) -> Result<Vec<SlotStats>> {
    let mut stmt = conn
        .prepare(
            "SELECT slot, count(*), total(duration) FROM attempts
             WHERE run_id = ?1 GROUP BY slot ORDER BY slot",
        )
        .map_err(db(path, "read slot statistics"))?;
    stmt.query_map([run], |r| Ok(SlotStats { slot: r.get(0)?, tasks: r.get(1)?, busy: r.get(2)? }))
        .and_then(Iterator::collect)
        .map_err(db(path, "read slot statistics"))
}

/// Task counts per status of one run, every status present.
pub(super) fn status_counts(path: &Path, conn: &Connection, run: i64) -> Result<StatusCounts> {
    let mut counts = zero_counts();
    let mut stmt = conn
        .prepare("SELECT status, count(*) FROM tasks WHERE run_id = ?1 GROUP BY status")
        .map_err(db(path, "count tasks"))?;
    let rows = stmt
        .query_map([run], |r| Ok((r.get::<_, TaskStatus>(0)?, r.get::<_, u64>(1)?)))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
        .map_err(db(path, "count tasks"))?;
    counts.extend(rows);
    Ok(counts)
}

/// Reads a JSON text column.
fn json<T: serde::de::DeserializeOwned>(row: &Row<'_>, idx: usize) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e)))
}

pub(super) fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRecord> {
    Ok(TaskRecord {
        run: r.get(0)?,
        task: r.get(1)?,
        args: json(r, 2)?,
        command: r.get(3)?,
        priority: r.get(4)?,
        cost: r.get(5)?,
        key: r.get(6)?,
        timeout: r.get(7)?,
        retries: r.get(8)?,
        status: r.get(9)?,
        attempts: r.get(10)?,
        exit_code: r.get(11)?,
        signal: r.get(12)?,
        slot: r.get(13)?,
        pid: r.get(14)?,
        started_at: r.get(15)?,
        ended_at: r.get(16)?,
        duration: r.get(17)?,
        stdout: r.get(18)?,
        stderr: r.get(19)?,
        stdout_truncated: r.get(20)?,
        stderr_truncated: r.get(21)?,
    })
}
