//! The PostgreSQL backend's [`Journal`]: the writer thread's own connection, which
//! applies a batch of events in one transaction with statements prepared once.
//!
//! As in the SQLite journal, the batch is walked by `backend::walk_batch`: an attempt
//! that starts and ends within it is written once, complete. Every write to a task sets `changed` from the sequence
//! `shoal.changes`, which the progress feed of a watcher reads by.

use postgres::{Client, Statement, Transaction};

use super::failure::db;
use super::schema;
use super::store::{insert_task_rows, DebugClient};
use crate::error::{Error, Result};
use crate::store::backend::{codes, walk_batch, Journal, Start};
use crate::store::writer::StoreEvent;
use crate::store::StoreAddress;
use crate::task::TaskStatus;

/// The statements of a journal, prepared on its connection.
#[derive(Debug)]
struct Statements {
    start_task: Statement,
    start_attempt: Statement,
    end_task: Statement,
    end_attempt: Statement,
    whole_attempt: Statement,
    result: Statement,
    refused: Statement,
    cancelled: Statement,
    applied: Statement,
    input_ended: Statement,
    run_ended: Statement,
}

/// A writer thread's connection to a PostgreSQL store.
#[derive(Debug)]
pub(crate) struct PgJournal {
    client: DebugClient,
    address: StoreAddress,
    url: String,
    statements: Statements,
}

impl PgJournal {
    pub(super) fn open(address: &StoreAddress, url: &str) -> Result<PgJournal> {
        let (client, statements) = connect(address, url)?;
        Ok(PgJournal { client, address: address.clone(), url: url.to_owned(), statements })
    }
}

fn connect(address: &StoreAddress, url: &str) -> Result<(DebugClient, Statements)> {
    let mut client = schema::connect(address, url)?;
    let statements = prepare(&mut client).map_err(db(address, "prepare the journal"))?;
    Ok((DebugClient(client), statements))
}

fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
    Ok(Statements {
        start_task: c.prepare(
            "UPDATE tasks SET status = $3, attempts = $4, slot = $5, pid = $6, started_at = $7,
             command = coalesce($8, command), changed = nextval('changes')
             WHERE run_id = $1 AND task = $2",
        )?,
        start_attempt: c.prepare(
            "INSERT INTO attempts (run_id, task, attempt, slot, pid, started_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )?,
        end_task: c.prepare(
            "UPDATE tasks SET status = $3, exit_code = $4, signal = $5, duration = $6,
             ended_at = $7, stdout = $8, stderr = $9, stdout_truncated = $10,
             stderr_truncated = $11, attempts = coalesce($12, attempts),
             slot = coalesce($13, slot), pid = coalesce($14, pid),
             started_at = coalesce($15, started_at), command = coalesce($16, command),
             owner = NULL, changed = nextval('changes')
             WHERE run_id = $1 AND task = $2",
        )?,
        end_attempt: c.prepare(
            "UPDATE attempts SET ended_at = $4, duration = $5, outcome = $6,
             exit_code = $7, signal = $8, max_rss_kb = $9, stdout = $10, stderr = $11,
             stdout_truncated = $12, stderr_truncated = $13
             WHERE run_id = $1 AND task = $2 AND attempt = $3",
        )?,
        whole_attempt: c.prepare(
            "INSERT INTO attempts (run_id, task, attempt, ended_at, duration, outcome,
             exit_code, signal, max_rss_kb, stdout, stderr, stdout_truncated,
             stderr_truncated, slot, pid, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )?,
        result: c.prepare(
            "UPDATE tasks SET result = $3, status = CASE WHEN $4 THEN $5 ELSE status END,
             changed = nextval('changes') WHERE run_id = $1 AND task = $2",
        )?,
        refused: c.prepare(
            "UPDATE tasks SET status = $3, result = NULL, exit_code = NULL,
             stderr = convert_to($4, 'UTF8'), changed = nextval('changes')
             WHERE run_id = $1 AND task = $2",
        )?,
        cancelled: c.prepare(
            "UPDATE tasks SET status = $3, changed = nextval('changes')
             WHERE run_id = $1 AND task = $2",
        )?,
        applied: c.prepare("UPDATE control SET applied_at = $2, result = $3 WHERE id = $1")?,
        input_ended: c.prepare("UPDATE runs SET input_open = false WHERE id = $1")?,
        run_ended: c.prepare(
            "UPDATE runs SET ended_at = $2, status = $3, input_open = false WHERE id = $1",
        )?,
    })
}

impl Journal for PgJournal {
    fn commit(&mut self, batch: &[StoreEvent]) -> Result<()> {
        // A lost connection (a restarted server) failed the write before this one,
        // which stopped the run (the writer's outage protocol); the salvage of what it
        // held is tried once more on a new connection. Nothing is written twice: a
        // batch whose commit did land fails again on its rows' keys.
        if self.client.0.is_closed() {
            (self.client, self.statements) = connect(&self.address, &self.url)?;
        }
        let a = &self.address;
        let s = &self.statements;
        let mut tx = self.client.0.transaction().map_err(db(a, "begin a write"))?;
        walk_batch(batch, |ev, start| match ev {
            StoreEvent::AttemptEnded { .. } => record_end(a, s, &mut tx, ev, start),
            _ => apply(a, s, &mut tx, ev),
        })?;
        tx.commit().map_err(db(a, "commit a write"))
    }
}

fn record_end(
    a: &StoreAddress,
    s: &Statements,
    tx: &mut Transaction<'_>,
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
    let fail = db(a, "record an attempt end");
    let (exit_code, signal) = match (exit_code, signal) {
        (None, None) => codes(*outcome),
        known => (*known.0, *known.1),
    };
    let (slot, pid, started_at, command) = start
        .map_or((None, None, None, None), |(s, p, t, c)| {
            (Some(s as i64), Some(i64::from(p)), Some(t), c)
        });
    let task_id = *task as i64;
    let n = tx
        .execute(
            &s.end_task,
            &[
                run,
                &task_id,
                &final_status.unwrap_or(TaskStatus::Queued).as_str(),
                &exit_code,
                &signal,
                duration,
                ended_at,
                &stdout.bytes,
                &stderr.bytes,
                &stdout.truncated,
                &stderr.truncated,
                &start.map(|_| i64::from(*attempt)),
                &slot,
                &pid,
                &started_at,
                &command,
            ],
        )
        .map_err(&fail)?;
    if n == 0 {
        return Err(Error::StoreMissing { run: *run, task: *task, what: "task" });
    }
    // The task row keeps the last attempt's output; an attempt followed by a retry
    // keeps its own in its row.
    let own = final_status.is_none();
    let attempt = i64::from(*attempt);
    let rss = max_rss_kb.map(|n| n as i64);
    let out = own.then_some(&stdout.bytes);
    let err = own.then_some(&stderr.bytes);
    let (out_cut, err_cut) = (own && stdout.truncated, own && stderr.truncated);
    let status = outcome.status().as_str();
    let n = match start {
        Some(_) => tx.execute(
            &s.whole_attempt,
            &[
                run,
                &task_id,
                &attempt,
                ended_at,
                duration,
                &status,
                &exit_code,
                &signal,
                &rss,
                &out,
                &err,
                &out_cut,
                &err_cut,
                &slot,
                &pid,
                &started_at,
            ],
        ),
        None => tx.execute(
            &s.end_attempt,
            &[
                run, &task_id, &attempt, ended_at, duration, &status, &exit_code, &signal, &rss,
                &out, &err, &out_cut, &err_cut,
            ],
        ),
    }
    .map_err(&fail)?;
    if n == 0 {
        return Err(Error::StoreMissing { run: *run, task: *task, what: "attempt" });
    }
    Ok(())
}

fn apply(
    a: &StoreAddress,
    s: &Statements,
    tx: &mut Transaction<'_>,
    ev: &StoreEvent,
) -> Result<()> {
    let missing = |run, task, what| Error::StoreMissing { run, task, what };
    match ev {
        &StoreEvent::AttemptStarted { run, task, attempt, slot, pid, started_at, ref command } => {
            let fail = db(a, "record an attempt start");
            let (task_id, attempt, slot, pid) =
                (task as i64, i64::from(attempt), slot as i64, i64::from(pid));
            let n = tx
                .execute(
                    &s.start_task,
                    &[
                        &run,
                        &task_id,
                        &TaskStatus::Running.as_str(),
                        &attempt,
                        &slot,
                        &pid,
                        &started_at,
                        command,
                    ],
                )
                .map_err(&fail)?;
            if n == 0 {
                return Err(missing(run, task, "task"));
            }
            tx.execute(&s.start_attempt, &[&run, &task_id, &attempt, &slot, &pid, &started_at])
                .map_err(&fail)?;
        }
        StoreEvent::AttemptEnded { .. } => record_end(a, s, tx, ev, None)?,
        StoreEvent::TasksAdded { run, tasks } => insert_task_rows(a, tx, *run, tasks)?,
        StoreEvent::TaskResult { run, task, result, reused } => {
            let n = tx
                .execute(
                    &s.result,
                    &[run, &(*task as i64), result, reused, &TaskStatus::Succeeded.as_str()],
                )
                .map_err(db(a, "record a result"))?;
            if n == 0 {
                return Err(missing(*run, *task, "task"));
            }
        }
        StoreEvent::ResultRefused { run, task, reason } => {
            let n = tx
                .execute(&s.refused, &[run, &(*task as i64), &TaskStatus::Failed.as_str(), reason])
                .map_err(db(a, "record a refused result"))?;
            if n == 0 {
                return Err(missing(*run, *task, "task"));
            }
        }
        &StoreEvent::TaskCancelled { run, task } => {
            let n = tx
                .execute(&s.cancelled, &[&run, &(task as i64), &TaskStatus::Cancelled.as_str()])
                .map_err(db(a, "cancel a task"))?;
            if n == 0 {
                return Err(missing(run, task, "task"));
            }
        }
        StoreEvent::ControlApplied { request, applied_at, result } => {
            tx.execute(&s.applied, &[request, applied_at, result])
                .map_err(db(a, "record an applied control request"))?;
        }
        &StoreEvent::InputEnded { run } => {
            let n = tx.execute(&s.input_ended, &[&run]).map_err(db(a, "end a run's input"))?;
            if n == 0 {
                return Err(Error::NoSuchRun { run });
            }
        }
        &StoreEvent::RunEnded { run, ended_at, status } => {
            let n = tx
                .execute(&s.run_ended, &[&run, &ended_at, &status.as_str()])
                .map_err(db(a, "end a run"))?;
            if n == 0 {
                return Err(Error::NoSuchRun { run });
            }
        }
    }
    Ok(())
}
