//! Queries over the PostgreSQL store (runs, tasks, attempts, statistics, stored
//! results) and the control requests an asker writes. The same answers as the SQLite
//! backend's `read.rs` and `control.rs`, in PostgreSQL's SQL.

use postgres::Row;

use super::failure::{db, invalid};
use super::store::{require_run, PgStore};
use crate::error::Result;
use crate::store::control::{refuse_what_cannot_apply, ControlAction, ControlRecord};
use crate::store::records::{
    open_tasks, unfinished, unix_now, zero_counts, AttemptRecord, RunRecord, RunStats, RunStatus,
    RunSummary, SlotStats, StatusCounts, TaskRecord,
};
use crate::store::StoreAddress;
use crate::task::{TaskId, TaskStatus};

pub(super) const TASK_COLUMNS: &str =
    "run_id, task, args, command, priority, cost, key, timeout, retries,
    status, attempts, exit_code, signal, slot, pid, started_at, ended_at, duration,
    stdout, stderr, stdout_truncated, stderr_truncated";

/// A task status read from column `idx`.
pub(super) fn task_status(store: &StoreAddress, row: &Row, idx: usize) -> Result<TaskStatus> {
    let name: &str = row.get(idx);
    TaskStatus::parse(name)
        .ok_or_else(|| invalid(store, "read a status", format!("unknown status {name:?}")))
}

/// A run status read from column `idx`.
pub(super) fn run_status(store: &StoreAddress, row: &Row, idx: usize) -> Result<RunStatus> {
    let name: &str = row.get(idx);
    RunStatus::parse(name)
        .ok_or_else(|| invalid(store, "read a status", format!("unknown status {name:?}")))
}

/// A JSON text column.
fn json<T: serde::de::DeserializeOwned>(store: &StoreAddress, row: &Row, idx: usize) -> Result<T> {
    serde_json::from_str(row.get(idx))
        .map_err(|e| invalid(store, "read a JSON column", e.to_string()))
}

impl PgStore {
    pub(super) fn runs(&self) -> Result<Vec<RunSummary>> {
        let mut runs = self.stored_runs()?;
        for run in &mut runs {
            run.status = self.live_status(run.id, run.status, open_tasks(&run.counts));
        }
        Ok(runs)
    }

    fn stored_runs(&self) -> Result<Vec<RunSummary>> {
        let a = &self.address;
        let fail = db(a, "list runs");
        let mut client = self.client();
        let rows = client
            .0
            .query(
                "SELECT id, started_at, ended_at, status, command, input_open FROM runs ORDER BY id",
                &[],
            )
            .map_err(&fail)?;
        let mut runs = Vec::with_capacity(rows.len());
        for r in &rows {
            runs.push(RunSummary {
                id: r.get(0),
                started_at: r.get(1),
                ended_at: r.get(2),
                status: run_status(a, r, 3)?,
                command: json(a, r, 4)?,
                total: 0,
                input_open: r.get(5),
                unfinished: 0,
                counts: zero_counts(),
            });
        }
        let counts = client
            .0
            .query("SELECT run_id, status, count(*) FROM tasks GROUP BY run_id, status", &[])
            .map_err(db(a, "count tasks"))?;
        for r in &counts {
            let id: i64 = r.get(0);
            let n = r.get::<_, i64>(2) as u64;
            if let Ok(i) = runs.binary_search_by_key(&id, |run| run.id) {
                runs[i].counts.insert(task_status(a, r, 1)?, n);
                runs[i].total += n;
            }
        }
        for run in &mut runs {
            run.unfinished = unfinished(&run.counts);
        }
        Ok(runs)
    }

    pub(super) fn run(&self, id: i64) -> Result<RunRecord> {
        let a = &self.address;
        let (record, counts) = {
            let mut client = self.client();
            require_run(a, &mut client.0, id)?;
            let r = client
                .0
                .query_one(
                    "SELECT id, started_at, ended_at, status, command, options, cwd,
                            memory_limit_mode FROM runs WHERE id = $1",
                    &[&id],
                )
                .map_err(db(a, "read a run"))?;
            let record = RunRecord {
                id: r.get(0),
                started_at: r.get(1),
                ended_at: r.get(2),
                status: run_status(a, &r, 3)?,
                command: json(a, &r, 4)?,
                options: json(a, &r, 5)?,
                cwd: r.get(6),
                memory_limit_mode: r.get(7),
            };
            (record, status_counts(a, &mut client.0, id)?)
        };
        let status = self.live_status(id, record.status, open_tasks(&counts));
        Ok(RunRecord { status, ..record })
    }

    pub(super) fn last_run(&self) -> Result<Option<i64>> {
        let row = self
            .client()
            .0
            .query_one("SELECT max(id) FROM runs", &[])
            .map_err(db(&self.address, "find the last run"))?;
        Ok(row.get(0))
    }

    pub(super) fn tasks(&self, run: i64, status: Option<TaskStatus>) -> Result<Vec<TaskRecord>> {
        let a = &self.address;
        let mut client = self.client();
        require_run(a, &mut client.0, run)?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE run_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY task"
        );
        let rows = client
            .0
            .query(&sql, &[&run, &status.map(|s| s.as_str())])
            .map_err(db(a, "read tasks"))?;
        rows.iter().map(|r| task_row(a, r)).collect()
    }

    pub(super) fn unsucceeded_tasks(
        &self,
        run: i64,
        after: TaskId,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        let a = &self.address;
        let mut client = self.client();
        require_run(a, &mut client.0, run)?;
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE run_id = $1 AND task > $2 AND status != $3 ORDER BY task LIMIT $4"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .0
            .query(&sql, &[&run, &(after as i64), &TaskStatus::Succeeded.as_str(), &limit])
            .map_err(db(a, "read tasks"))?;
        rows.iter().map(|r| task_row(a, r)).collect()
    }

    pub(super) fn unsucceeded_timeout_extremes(&self, run: i64) -> Result<Vec<(TaskId, f64)>> {
        let a = &self.address;
        let mut client = self.client();
        require_run(a, &mut client.0, run)?;
        let mut extremes = Vec::with_capacity(2);
        for order in ["ASC", "DESC"] {
            let sql = format!(
                "SELECT task, timeout FROM tasks
                 WHERE run_id = $1 AND status != $2 AND timeout IS NOT NULL
                 ORDER BY timeout {order}, task LIMIT 1"
            );
            let row = client
                .0
                .query_opt(&sql, &[&run, &TaskStatus::Succeeded.as_str()])
                .map_err(db(a, "read timeouts"))?;
            extremes.extend(row.map(|r| (r.get::<_, i64>(0) as TaskId, r.get(1))));
        }
        Ok(extremes)
    }

    pub(super) fn attempts(&self, run: i64) -> Result<Vec<AttemptRecord>> {
        self.attempts_of(run, None)
    }

    /// The attempts of a run, or of one of its tasks, by task then attempt number.
    pub(super) fn attempts_of(&self, run: i64, task: Option<TaskId>) -> Result<Vec<AttemptRecord>> {
        let a = &self.address;
        let mut client = self.client();
        require_run(a, &mut client.0, run)?;
        // The output of the last attempt to end is in the task's row; earlier ones
        // keep theirs in their own row (as in the SQLite backend).
        let rows = client
            .0
            .query(
                "WITH last (task, attempt) AS (
                    SELECT task, max(attempt) FROM attempts
                    WHERE run_id = $1 AND ($2::bigint IS NULL OR task = $2)
                      AND outcome IS NOT NULL AND outcome != 'interrupted'
                    GROUP BY task)
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
                 FROM attempts a
                 JOIN tasks t ON t.run_id = a.run_id AND t.task = a.task
                 LEFT JOIN last l ON l.task = a.task AND l.attempt = a.attempt
                 WHERE a.run_id = $1 AND ($2::bigint IS NULL OR a.task = $2)
                 ORDER BY a.task, a.attempt",
                &[&run, &task.map(|t| t as i64)],
            )
            .map_err(db(a, "read attempts"))?;
        Ok(rows
            .iter()
            .map(|r| AttemptRecord {
                run: r.get(0),
                task: r.get::<_, i64>(1) as TaskId,
                attempt: r.get::<_, i64>(2) as u32,
                slot: r.get::<_, i64>(3) as usize,
                pid: r.get::<_, i64>(4) as u32,
                started_at: r.get(5),
                ended_at: r.get(6),
                duration: r.get(7),
                outcome: r.get(8),
                exit_code: r.get(9),
                signal: r.get(10),
                max_rss_kb: r.get::<_, Option<i64>>(11).map(|n| n as u64),
                stdout: r.get(12),
                stderr: r.get(13),
                stdout_truncated: r.get(14),
                stderr_truncated: r.get(15),
            })
            .collect())
    }

    pub(super) fn stats(&self, run: i64) -> Result<RunStats> {
        let a = &self.address;
        let mut client = self.client();
        require_run(a, &mut client.0, run)?;
        let counts = status_counts(a, &mut client.0, run)?;
        let durations: Vec<f64> = client
            .0
            .query(
                "SELECT duration FROM tasks
                 WHERE run_id = $1 AND status NOT IN ($2, $3, $4) AND duration IS NOT NULL
                 ORDER BY duration",
                &[
                    &run,
                    &TaskStatus::Queued.as_str(),
                    &TaskStatus::Running.as_str(),
                    &TaskStatus::Cancelled.as_str(),
                ],
            )
            .map_err(db(a, "read durations"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let per_slot = slot_stats(a, &mut client.0, run)?;
        Ok(RunStats::from_parts(run, counts, &durations, per_slot))
    }

    /// The result of the latest task with this key and command, if it succeeded and
    /// kept one (the SQLite backend's rule).
    pub(super) fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>> {
        let a = &self.address;
        let row = self
            .client()
            .0
            .query_opt(
                "SELECT status, result FROM tasks WHERE key = $1 AND command = $2
                 AND status NOT IN ($3, $4, $5) ORDER BY run_id DESC, task DESC LIMIT 1",
                &[
                    &key,
                    &command,
                    &TaskStatus::Queued.as_str(),
                    &TaskStatus::Running.as_str(),
                    &TaskStatus::Cancelled.as_str(),
                ],
            )
            .map_err(db(a, "look up a stored result"))?;
        match row {
            Some(r) if task_status(a, &r, 0)? == TaskStatus::Succeeded => Ok(r.get(1)),
            _ => Ok(None),
        }
    }

    /// Records `actions` for the live run `run` and returns their ids (refused as the
    /// SQLite backend refuses them).
    pub(super) fn request(
        &self,
        run: i64,
        actions: &[ControlAction],
        by: &str,
    ) -> Result<Vec<i64>> {
        let a = &self.address;
        let status = self.run(run)?.status;
        let mut client = self.client();
        refuse_what_cannot_apply(run, status, actions, |task| {
            let row = client
                .0
                .query_opt(
                    "SELECT status FROM tasks WHERE run_id = $1 AND task = $2",
                    &[&run, &(task as i64)],
                )
                .map_err(db(a, "look up a task"))?;
            row.map(|r| task_status(a, &r, 0)).transpose()
        })?;
        let fail = db(a, "record a control request");
        let mut tx = client.0.transaction().map_err(&fail)?;
        let mut ids = Vec::with_capacity(actions.len());
        for action in actions {
            let id: i64 = tx
                .query_one(
                    "INSERT INTO control (run_id, requested_at, requested_by, action, task, slots)
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    &[
                        &run,
                        &unix_now(),
                        &by,
                        &action.as_str(),
                        &action.task().map(|t| t as i64),
                        &action.slots().map(i64::from),
                    ],
                )
                .map_err(&fail)?
                .get(0);
            ids.push(id);
            apply_to_shared_run(a, &mut tx, run, id, action)?;
        }
        tx.commit().map_err(&fail)?;
        Ok(ids)
    }

    pub(super) fn control_records(&self, run: i64) -> Result<Vec<ControlRecord>> {
        let rows = self
            .client()
            .0
            .query(
                "SELECT id, run_id, action, task, slots, requested_at, requested_by,
                 applied_at, result FROM control WHERE run_id = $1 ORDER BY id",
                &[&run],
            )
            .map_err(db(&self.address, "read control requests"))?;
        // A request of an action this shoal does not know (a newer one's) is left out.
        Ok(rows
            .iter()
            .filter_map(|r| {
                let action = ControlAction::from_columns(r.get(2), r.get(3), r.get(4))?;
                Some(ControlRecord {
                    id: r.get(0),
                    run: r.get(1),
                    action,
                    requested_at: r.get(5),
                    requested_by: r.get(6),
                    applied_at: r.get(7),
                    result: r.get(8),
                })
            })
            .collect())
    }
}

/// Attempts and busy seconds per slot of one run, by slot.
pub(super) fn slot_stats(
    store: &StoreAddress,
    client: &mut impl postgres::GenericClient,
    run: i64,
) -> Result<Vec<SlotStats>> {
    Ok(client
        .query(
            "SELECT slot, count(*), coalesce(sum(duration), 0) FROM attempts
             WHERE run_id = $1 GROUP BY slot ORDER BY slot",
            &[&run],
        )
        .map_err(db(store, "read slot statistics"))?
        .iter()
        .map(|r| SlotStats {
            slot: r.get::<_, i64>(0) as usize,
            tasks: r.get::<_, i64>(1) as u64,
            busy: r.get(2),
        })
        .collect())
}

/// Task counts per status of one run, every status present.
pub(super) fn status_counts(
    store: &StoreAddress,
    client: &mut impl postgres::GenericClient,
    run: i64,
) -> Result<StatusCounts> {
    let mut counts = zero_counts();
    let rows = client
        .query("SELECT status, count(*) FROM tasks WHERE run_id = $1 GROUP BY status", &[&run])
        .map_err(db(store, "count tasks"))?;
    for r in &rows {
        counts.insert(task_status(store, r, 0)?, r.get::<_, i64>(1) as u64);
    }
    Ok(counts)
}

pub(super) fn task_row(a: &StoreAddress, r: &Row) -> Result<TaskRecord> {
    Ok(TaskRecord {
        run: r.get(0),
        task: r.get::<_, i64>(1) as TaskId,
        args: json(a, r, 2)?,
        command: r.get(3),
        priority: r.get(4),
        cost: r.get(5),
        key: r.get(6),
        timeout: r.get(7),
        retries: r.get::<_, i64>(8) as u32,
        status: task_status(a, r, 9)?,
        attempts: r.get::<_, i64>(10) as u32,
        exit_code: r.get(11),
        signal: r.get(12),
        slot: r.get::<_, Option<i64>>(13).map(|n| n as usize),
        pid: r.get::<_, Option<i64>>(14).map(|n| n as u32),
        started_at: r.get(15),
        ended_at: r.get(16),
        duration: r.get(17),
        stdout: r.get(18),
        stderr: r.get(19),
        stdout_truncated: r.get(20),
        stderr_truncated: r.get(21),
    })
}

/// A shared run has no process of its own to apply a request (agents claim its
/// tasks): the asker applies it, in the transaction that writes it. Pause makes the
/// claim skip the run; a cancel ends its queued tasks (running ones finish on their
/// agents); its slots are its agents', so `jobs` is not applied. Nothing is done
/// for a run of one process.
fn apply_to_shared_run(
    a: &StoreAddress,
    tx: &mut postgres::Transaction<'_>,
    run: i64,
    request: i64,
    action: &ControlAction,
) -> Result<()> {
    let fail = db(a, "apply a control request to a shared run");
    let shared: bool =
        tx.query_one("SELECT shared FROM runs WHERE id = $1", &[&run]).map_err(&fail)?.get(0);
    if !shared {
        return Ok(());
    }
    let cancel = |tx: &mut postgres::Transaction<'_>, task: Option<i64>| {
        tx.execute(
            "UPDATE tasks SET status = 'cancelled', changed = nextval('changes')
             WHERE run_id = $1 AND status = 'queued' AND ($2::bigint IS NULL OR task = $2)",
            &[&run, &task],
        )
    };
    let result = match action {
        ControlAction::Pause => {
            tx.execute("UPDATE runs SET paused = true WHERE id = $1", &[&run]).map_err(&fail)?;
            "paused: no agent claims its tasks; running ones go on".to_owned()
        }
        ControlAction::Unpause => {
            tx.execute("UPDATE runs SET paused = false WHERE id = $1", &[&run]).map_err(&fail)?;
            super::agent::notify(a, tx)?;
            "unpaused".to_owned()
        }
        ControlAction::CancelRun => {
            let n = cancel(tx, None).map_err(&fail)?;
            super::agent::end_run_if_done(a, tx, run)?;
            format!("cancelled {n} queued tasks; running ones finish on their agents")
        }
        &ControlAction::CancelTask { task } => {
            let n = cancel(tx, Some(task as i64)).map_err(&fail)?;
            super::agent::end_run_if_done(a, tx, run)?;
            if n > 0 {
                format!("task {task} cancelled")
            } else {
                format!("task {task} not cancelled: it runs on an agent, or has ended")
            }
        }
        ControlAction::SetSlots { .. } => {
            "not applied: a shared run's slots are its agents' (shoal worker -j)".to_owned()
        }
    };
    tx.execute(
        "UPDATE control SET applied_at = $2, result = $3 WHERE id = $1",
        &[&request, &unix_now(), &result],
    )
    .map_err(&fail)?;
    Ok(())
}
