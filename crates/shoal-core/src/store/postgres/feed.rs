//! The feeds of a PostgreSQL store, polled on connections of their own: a live run's
//! control requests (`PgControlFeed`), and a watcher's view of a run (`PgProgress`).
//!
//! Both read by an index, so that a poll costs what changed, not what the run holds:
//! control requests by the partial index of pending ones; tasks by `changed`, the
//! value of the sequence `shoal.changes` every write to a task takes (index
//! `tasks_changed`). A task's old status is known without reading it: the feed keeps
//! those it has seen change, and any other was `queued` (or `running` when the feed
//! opened, which it reads then). LISTEN/NOTIFY comes with the claim of the next slice.

use std::collections::HashMap;

use postgres::Client;

use super::blocking;
use super::failure::db;
use super::read::{run_status, status_counts, task_status};
use super::schema;
use super::store::DebugClient;
use crate::error::{Error, Result};
use crate::store::control::{ControlAction, ControlFeed, ControlRequest};
use crate::store::follow::{last_line, ProgressFeed, RunProgress, RunningAttempt, TaskEnd};
use crate::store::StoreAddress;
use crate::task::{TaskId, TaskStatus};

/// A live run's look for new requests.
#[derive(Debug)]
pub(crate) struct PgControlFeed {
    client: DebugClient,
    address: StoreAddress,
    url: String,
    run: i64,
    /// Requests up to this id were handed over.
    last: i64,
}

impl PgControlFeed {
    pub(super) fn open(address: &StoreAddress, url: &str, run: i64) -> Result<PgControlFeed> {
        let client = DebugClient(schema::connect(address, url)?);
        Ok(PgControlFeed { client, address: address.clone(), url: url.to_owned(), run, last: 0 })
    }
}

impl ControlFeed for PgControlFeed {
    fn poll(&mut self) -> Result<Vec<ControlRequest>> {
        blocking(|| {
            // A restarted server: the live run keeps taking requests.
            if self.client.0.is_closed() {
                self.client = DebugClient(schema::connect(&self.address, &self.url)?);
            }
            let rows = self
                .client
                .0
                .query(
                    "SELECT id, action, task, slots FROM control
                 WHERE run_id = $1 AND applied_at IS NULL AND id > $2 ORDER BY id",
                    &[&self.run, &self.last],
                )
                .map_err(db(&self.address, "read control requests"))?;
            let mut found = Vec::with_capacity(rows.len());
            for r in rows {
                let (id, name): (i64, &str) = (r.get(0), r.get(1));
                self.last = id;
                match ControlAction::from_columns(name, r.get(2), r.get(3)) {
                    Some(action) => found.push(ControlRequest { id, run: self.run, action }),
                    None => tracing::warn!(id, action = name, "unknown control request left alone"),
                }
            }
            Ok(found)
        })
    }
}

/// How much of a failed task's error output is read for its message.
const MESSAGE_TAIL: i32 = 2048;

/// A watcher's view of one run of a PostgreSQL store.
#[derive(Debug)]
pub(crate) struct PgProgress {
    client: DebugClient,
    address: StoreAddress,
    /// Task writes up to this `changed` were read.
    seen: i64,
    /// The highest task number counted.
    last_task: i64,
    /// The status of each task seen change (and of those running at the opening).
    known: HashMap<TaskId, TaskStatus>,
    progress: RunProgress,
}

impl PgProgress {
    pub(super) fn open(address: &StoreAddress, url: &str, run: i64) -> Result<PgProgress> {
        let mut client = schema::connect(address, url)?;
        let a = address;
        let fail = db(a, "follow a run");
        let mut tx = client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(&fail)?;
        let row = tx
            .query_opt(
                "SELECT status, started_at, ended_at, input_open FROM runs WHERE id = $1",
                &[&run],
            )
            .map_err(&fail)?
            .ok_or(Error::NoSuchRun { run })?;
        let counts = status_counts(a, &mut tx, run)?;
        let marks = tx
            .query_one(
                "SELECT coalesce(max(changed), 0), coalesce(max(task), 0) FROM tasks
                 WHERE run_id = $1",
                &[&run],
            )
            .map_err(&fail)?;
        let mut known = HashMap::new();
        for r in tx
            .query(
                "SELECT task FROM tasks WHERE run_id = $1 AND status = $2",
                &[&run, &TaskStatus::Running.as_str()],
            )
            .map_err(&fail)?
        {
            known.insert(r.get::<_, i64>(0) as TaskId, TaskStatus::Running);
        }
        let running = running(a, &mut tx, run)?;
        tx.commit().map_err(&fail)?;
        let progress = RunProgress {
            run,
            status: run_status(a, &row, 0)?,
            started_at: row.get(1),
            ended_at: row.get(2),
            total: counts.values().sum(),
            input_open: row.get(3),
            counts,
            running,
        };
        Ok(PgProgress {
            client: DebugClient(client),
            address: address.clone(),
            seen: marks.get(0),
            last_task: marks.get(1),
            known,
            progress,
        })
    }
}

/// The attempts of `run` running now, by slot.
fn running(
    a: &StoreAddress,
    client: &mut impl postgres::GenericClient,
    run: i64,
) -> Result<Vec<RunningAttempt>> {
    Ok(client
        .query(
            "SELECT task, attempt, slot, started_at FROM attempts
             WHERE run_id = $1 AND ended_at IS NULL ORDER BY slot",
            &[&run],
        )
        .map_err(db(a, "read running attempts"))?
        .iter()
        .map(|r| RunningAttempt {
            task: r.get::<_, i64>(0) as TaskId,
            attempt: r.get::<_, i64>(1) as u32,
            slot: r.get::<_, i64>(2) as usize,
            started_at: r.get(3),
        })
        .collect())
}

impl ProgressFeed for PgProgress {
    fn poll(&mut self) -> Result<Vec<TaskEnd>> {
        blocking(|| {
            let a = &self.address;
            let run = self.progress.run;
            let client: &mut Client = &mut self.client.0;
            let fail = db(a, "follow a run");
            // The run first: every task write of a run that ended is committed before
            // its end, so it is read below.
            let row = client
                .query_one("SELECT status, ended_at, input_open FROM runs WHERE id = $1", &[&run])
                .map_err(&fail)?;
            self.progress.status = run_status(a, &row, 0)?;
            self.progress.ended_at = row.get(1);
            self.progress.input_open = row.get(2);
            let rows = client
                .query(
                    "SELECT task, status, attempts, exit_code, signal, changed,
                        CASE WHEN exit_code IS NULL AND signal IS NULL
                             THEN substring(stderr from greatest(length(stderr) - $3 + 1, 1))
                        END
                 FROM tasks WHERE run_id = $1 AND changed > $2 ORDER BY changed",
                    &[&run, &self.seen, &MESSAGE_TAIL],
                )
                .map_err(&fail)?;
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            let mut ends = Vec::new();
            // Tasks numbered past the last one counted at the last poll are new.
            let counted = self.last_task;
            for r in &rows {
                let number: i64 = r.get(0);
                let task = number as TaskId;
                let status = task_status(a, r, 1)?;
                self.seen = self.seen.max(r.get(5));
                let old = if number > counted {
                    self.last_task = self.last_task.max(number);
                    self.progress.total += 1;
                    None
                } else {
                    Some(self.known.get(&task).copied().unwrap_or(TaskStatus::Queued))
                };
                if old == Some(status) {
                    continue;
                }
                if let Some(old) = old {
                    if let Some(n) = self.progress.counts.get_mut(&old) {
                        *n = n.saturating_sub(1);
                    }
                }
                *self.progress.counts.entry(status).or_insert(0) += 1;
                self.known.insert(task, status);
                if !matches!(status, TaskStatus::Queued | TaskStatus::Running) {
                    let tail: Option<Vec<u8>> = r.get(6);
                    ends.push(TaskEnd {
                        task,
                        status,
                        attempts: r.get::<_, i64>(2) as u32,
                        exit_code: r.get(3),
                        signal: r.get(4),
                        message: tail.and_then(|t| last_line(&t)),
                    });
                }
            }
            self.progress.running = running(a, client, run)?;
            Ok(ends)
        })
    }

    fn progress(&self) -> &RunProgress {
        &self.progress
    }
}
