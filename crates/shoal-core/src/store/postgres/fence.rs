//! The journal of an agent's attempts: the writer thread's connection, applying a
//! batch of attempt starts and ends in one transaction, each write fenced.
//!
//! Every write presents the attempt and the agent: `WHERE run_id, task AND attempts =
//! $attempt AND agent = $me AND status = 'running'`. An end that finds no such row
//! (the task was rescued from this agent and perhaps run elsewhere) changes nothing of
//! the task: it is recorded on its attempt's row as rejected (`late_outcome`,
//! `late_at`) and handed to `on_rejected`. A failed attempt with retries left (the
//! store counts them: `attempts - rescues <= retries`) goes back to `queued`, for any
//! agent; the attempt's end that leaves a shared run with nothing queued or running
//! (its input closed) ends the run in the same transaction. A lost connection (a
//! restarted server) is connected again with backoff and the batch applied again: an
//! end already committed is recognised by its attempt's `ended_at`, never taken for a
//! late one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use postgres::{Client, Statement, Transaction};

use super::agent::{end_run_if_done, notify};
use super::failure::db;
use super::schema;
use super::store::DebugClient;
use crate::error::{Error, FailureKind, Result};
use crate::store::backend::{codes, Journal};
use crate::store::writer::StoreEvent;
use crate::store::StoreAddress;
use crate::task::TaskStatus;

/// A late result the fence turned away.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The run.
    pub run: i64,
    /// The task.
    pub task: u64,
    /// The attempt that no longer held the task.
    pub attempt: u32,
    /// What the attempt said.
    pub status: TaskStatus,
}

/// How long a lost connection is tried again before the batch fails.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

#[derive(Debug)]
struct Statements {
    start_task: Statement,
    start_attempt: Statement,
    end_task: Statement,
    end_attempt: Statement,
    late: Statement,
}

/// An agent's journal; see the module doc.
pub(super) struct FenceJournal {
    client: DebugClient,
    statements: Statements,
    address: StoreAddress,
    url: String,
    agent: i64,
    on_rejected: Box<dyn FnMut(&Rejected) + Send>,
}

impl std::fmt::Debug for FenceJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FenceJournal").field("agent", &self.agent).finish()
    }
}

fn prepare(c: &mut Client) -> Result<Statements, postgres::Error> {
    let fenced =
        "run_id = $1 AND task = $2 AND attempts = $3 AND agent = $4 AND status = 'running'";
    Ok(Statements {
        start_task: c.prepare(&format!(
            "UPDATE tasks SET slot = $5, pid = $6, started_at = $7,
             command = coalesce($8, command), changed = nextval('changes')
             WHERE {fenced}"
        ))?,
        start_attempt: c.prepare(
            "UPDATE attempts SET slot = $5, pid = $6, started_at = $7
             WHERE run_id = $1 AND task = $2 AND attempt = $3 AND agent = $4
               AND ended_at IS NULL",
        )?,
        end_task: c.prepare(&format!(
            "UPDATE tasks SET
             status = CASE WHEN $5 AND attempts - rescues <= retries THEN 'queued' ELSE $6 END,
             exit_code = $7, signal = $8, duration = $9, ended_at = $10, stdout = $11,
             stderr = $12, stdout_truncated = $13, stderr_truncated = $14, owner = NULL,
             slot = coalesce($15, slot), pid = coalesce($16, pid),
             started_at = coalesce($17, started_at), command = coalesce($18, command),
             changed = nextval('changes')
             WHERE {fenced}
             RETURNING status"
        ))?,
        end_attempt: c.prepare(
            "UPDATE attempts SET ended_at = $4, duration = $5, outcome = $6, exit_code = $7,
             signal = $8, max_rss_kb = $9, stdout = $10, stderr = $11,
             stdout_truncated = $12, stderr_truncated = $13, slot = coalesce($14, slot),
             pid = coalesce($15, pid), started_at = coalesce($16, started_at)
             WHERE run_id = $1 AND task = $2 AND attempt = $3",
        )?,
        // The end of an attempt already closed by a rescue, unless it is this very
        // end committed before a lost connection (the same `ended_at`).
        late: c.prepare(
            "UPDATE attempts SET late_outcome = $4, late_at = $5
             WHERE run_id = $1 AND task = $2 AND attempt = $3
               AND ended_at IS DISTINCT FROM $5",
        )?,
    })
}

fn connect(address: &StoreAddress, url: &str) -> Result<(DebugClient, Statements)> {
    let mut client = schema::connect(address, url)?;
    let statements = prepare(&mut client).map_err(db(address, "prepare the agent's journal"))?;
    Ok((DebugClient(client), statements))
}

impl FenceJournal {
    pub(super) fn open(
        address: &StoreAddress,
        url: &str,
        agent: i64,
        on_rejected: Box<dyn FnMut(&Rejected) + Send>,
    ) -> Result<FenceJournal> {
        let (client, statements) = connect(address, url)?;
        Ok(FenceJournal {
            client,
            statements,
            address: address.clone(),
            url: url.to_owned(),
            agent,
            on_rejected,
        })
    }

    fn apply(&mut self, batch: &[StoreEvent]) -> Result<Vec<Rejected>> {
        let (a, s, agent) = (&self.address, &self.statements, self.agent);
        let mut tx = self.client.0.transaction().map_err(db(a, "begin a write"))?;
        let mut rejected = Vec::new();
        let mut ended = BTreeSet::new();
        let mut requeued = false;
        // An attempt that starts and ends within the batch is written once, whole.
        let mut starts = HashMap::new();
        let mut ends = HashSet::new();
        for ev in batch {
            match ev {
                StoreEvent::AttemptStarted { run, task, attempt, .. } => {
                    starts.insert((*run, *task, *attempt), ev);
                }
                StoreEvent::AttemptEnded { run, task, attempt, .. } => {
                    ends.insert((*run, *task, *attempt));
                }
                _ => {}
            }
        }
        for ev in batch {
            match ev {
                StoreEvent::AttemptStarted { run, task, attempt, .. }
                    if ends.contains(&(*run, *task, *attempt)) => {}
                StoreEvent::AttemptStarted {
                    run,
                    task,
                    attempt,
                    slot,
                    pid,
                    started_at,
                    command,
                } => {
                    let fail = db(a, "record an attempt start");
                    let key = (*task as i64, i64::from(*attempt), *slot as i64, i64::from(*pid));
                    let n = tx
                        .execute(
                            &s.start_task,
                            &[run, &key.0, &key.1, &agent, &key.2, &key.3, started_at, command],
                        )
                        .map_err(&fail)?;
                    if n > 0 {
                        tx.execute(
                            &s.start_attempt,
                            &[run, &key.0, &key.1, &agent, &key.2, &key.3, started_at],
                        )
                        .map_err(&fail)?;
                    }
                }
                StoreEvent::AttemptEnded { run, task, attempt, .. } => {
                    let start = starts.get(&(*run, *task, *attempt)).copied();
                    match end(a, s, &mut tx, agent, ev, start)? {
                        Ended::Requeued => requeued = true,
                        Ended::Final(run) => {
                            ended.insert(run);
                        }
                        Ended::Late(r) => rejected.push(r),
                        Ended::Again => {}
                    }
                }
                other => {
                    return Err(Error::Store {
                        operation: "record an agent's event",
                        store: a.clone(),
                        source: crate::error::BackendError::new(
                            FailureKind::Invalid,
                            format!("an agent records only its attempts, not {other:?}"),
                        ),
                    })
                }
            }
        }
        for run in ended {
            end_run_if_done(a, &mut tx, run)?;
        }
        if requeued {
            notify(a, &mut tx)?;
        }
        tx.commit().map_err(db(a, "commit a write"))?;
        Ok(rejected)
    }
}

/// What became of an attempt's end.
enum Ended {
    /// The task is queued again for a retry.
    Requeued,
    /// The task is final, in this run.
    Final(i64),
    /// Fenced out: the task was no longer this attempt's.
    Late(Rejected),
    /// Already recorded, by a commit whose answer was lost.
    Again,
}

fn end(
    a: &StoreAddress,
    s: &Statements,
    tx: &mut Transaction<'_>,
    agent: i64,
    ev: &StoreEvent,
    start: Option<&StoreEvent>,
) -> Result<Ended> {
    let StoreEvent::AttemptEnded {
        run,
        task,
        attempt,
        ended_at,
        duration,
        outcome,
        exit_code,
        signal,
        final_status: _,
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
    let (task_id, attempt_no) = (*task as i64, i64::from(*attempt));
    let (slot, pid, started_at, command) = match start {
        Some(StoreEvent::AttemptStarted { slot, pid, started_at, command, .. }) => {
            (Some(*slot as i64), Some(i64::from(*pid)), Some(*started_at), command.clone())
        }
        _ => (None, None, None, None),
    };
    let status = outcome.status();
    let retryable = outcome.is_retryable();
    let row = tx
        .query_opt(
            &s.end_task,
            &[
                run,
                &task_id,
                &attempt_no,
                &agent,
                &retryable,
                &status.as_str(),
                &exit_code,
                &signal,
                duration,
                ended_at,
                &stdout.bytes,
                &stderr.bytes,
                &stdout.truncated,
                &stderr.truncated,
                &slot,
                &pid,
                &started_at,
                &command,
            ],
        )
        .map_err(&fail)?;
    let Some(row) = row else {
        let n = tx
            .execute(&s.late, &[run, &task_id, &attempt_no, &status.as_str(), ended_at])
            .map_err(&fail)?;
        return Ok(if n == 0 {
            Ended::Again
        } else {
            Ended::Late(Rejected { run: *run, task: *task, attempt: *attempt, status })
        });
    };
    let requeued = row.get::<_, &str>(0) == TaskStatus::Queued.as_str();
    // As in the local journal: the task row keeps the last attempt's output; an
    // attempt followed by a retry keeps its own.
    let out = requeued.then_some(&stdout.bytes);
    let err = requeued.then_some(&stderr.bytes);
    let (out_cut, err_cut) = (requeued && stdout.truncated, requeued && stderr.truncated);
    let rss = max_rss_kb.map(|n| n as i64);
    tx.execute(
        &s.end_attempt,
        &[
            run,
            &task_id,
            &attempt_no,
            ended_at,
            duration,
            &status.as_str(),
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
    )
    .map_err(&fail)?;
    Ok(if requeued { Ended::Requeued } else { Ended::Final(*run) })
}

impl Journal for FenceJournal {
    fn commit(&mut self, batch: &[StoreEvent]) -> Result<()> {
        // A lost connection is the server's, not this agent's: connect again and apply
        // the batch again, for a while, rather than stop.
        let started = std::time::Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            if self.client.0.is_closed() {
                match connect(&self.address, &self.url) {
                    Ok((client, statements)) => {
                        (self.client, self.statements) = (client, statements)
                    }
                    Err(e) if started.elapsed() > RECONNECT_FOR => return Err(e),
                    Err(_) => {
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            match self.apply(batch) {
                Ok(rejected) => {
                    for r in &rejected {
                        (self.on_rejected)(r);
                    }
                    return Ok(());
                }
                Err(Error::Store { source, .. })
                    if source.kind() == FailureKind::Io && started.elapsed() < RECONNECT_FOR =>
                {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
