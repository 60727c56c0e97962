//! An agent (`shoal worker`, or the local slots of a `shoal run` on PostgreSQL): the
//! process on one machine that claims tasks of shared runs and runs them.
//!
//! It owns the agent's row in `shoal.agents` (its lease, renewed once for all its
//! tasks by one heartbeat thread), the claim, the rescue of the tasks of lost agents
//! (a sweep any agent runs after its heartbeat, under an advisory lock, so there is
//! no leader), the waking of an idle agent (`LISTEN shoal_tasks`, with polling as
//! the fallback), and the end of a shared run (whoever finishes its last task ends
//! it, in the same transaction). The results of an agent's attempts go through the
//! writer thread with the fenced journal of `fence.rs`.
//!
//! # The claim
//!
//! One statement per agent and round takes as many ready tasks as it has free slots:
//! `UPDATE tasks ... WHERE ctid = ANY(ARRAY(SELECT ... WHERE status = 'queued' ...
//! ORDER BY priority DESC, cost DESC NULLS LAST, run_id, task LIMIT n FOR UPDATE
//! SKIP LOCKED))`. The state is a literal, so even a generic plan walks the partial
//! index `tasks_ready`; `= ANY(ARRAY(...))` keeps the outer update on the rows found
//! (a TID scan) where `IN (SELECT ...)` may be planned as a scan of the whole table. The
//! claim bumps `attempts` (the fence every later write of the attempt presents with
//! the agent's id) and opens the attempt's row, so a rescue always finds it.
//!
//! # Leases and rescue
//!
//! An agent's lease is `agents.expires_at`, on the database's clock, renewed every
//! heartbeat (`SHOAL_PG_HEARTBEAT`, `SHOAL_PG_LEASE`, as a run's lease). After each
//! heartbeat an agent tries `pg_try_advisory_xact_lock` and, if it gets it, marks
//! the agents whose lease expired `lost` and makes their running tasks claimable
//! again: the open attempt is closed `crashed` with a reason naming the lost agent,
//! the task goes back to `queued` and counts a rescue (rescues spend no retries); a
//! task that was held by [`LOST_AGENTS_LIMIT`] lost agents is `crashed` for good
//! with that reason.

use std::collections::BTreeSet;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres::{Client, GenericClient, Statement};

use super::failure::db;
use super::fence::{FenceJournal, Rejected};
use super::lease::{owner_host, timings, NOW};
use super::schema;
use super::store::DebugClient;
use crate::error::{Error, Result};
use crate::store::writer::{OnCommit, OnFailure, Writer};
use crate::store::StoreAddress;
use crate::task::{TaskId, TaskMeta};

/// The channel of `NOTIFY` that says tasks became claimable.
pub const CHANNEL: &str = "shoal_tasks";

/// A task held by this many agents that were lost while running it has taken them
/// down: it is failed (`crashed`) instead of rescued once more.
pub const LOST_AGENTS_LIMIT: i64 = 3;

/// Serialises the sweeps of all agents (`pg_try_advisory_xact_lock`).
const RESCUE_LOCK: i64 = 0x7368_6f62;

/// Serialises the end of one run (`pg_advisory_xact_lock(RUN_END_LOCK, run)`), so
/// that of two agents finishing its last tasks at once the later one sees the
/// other's and ends it.
const RUN_END_LOCK: i32 = 0x7368_6f63;

/// How long an agent's lease lasts after each heartbeat, and how often it renews it.
#[derive(Debug, Clone, Copy)]
pub struct AgentTimings {
    /// Its lease.
    pub lease: Duration,
    /// Its heartbeat (and sweep) interval.
    pub heartbeat: Duration,
}

impl AgentTimings {
    /// The run lease's: `SHOAL_PG_LEASE` and `SHOAL_PG_HEARTBEAT`, or 10 s and 2 s.
    pub fn from_env() -> AgentTimings {
        let (lease, heartbeat) = timings();
        AgentTimings { lease: Duration::from_secs_f64(lease), heartbeat }
    }
}

/// A task an agent claimed: it runs attempt `attempt` of it, and only that one.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The run.
    pub run: i64,
    /// The task's number in its run.
    pub task: TaskId,
    /// The attempt this claim may run (the fence).
    pub attempt: u32,
    /// Its input arguments.
    pub args: Vec<String>,
    /// What the scheduler knows of it (its retries are the store's to count).
    pub meta: TaskMeta,
}

/// A registered agent of a PostgreSQL store.
#[derive(Debug)]
pub struct Agent {
    address: StoreAddress,
    url: String,
    id: i64,
    host: String,
    client: Mutex<(DebugClient, ClaimStatement)>,
    heartbeat: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

#[derive(Debug)]
struct ClaimStatement(Statement);

fn claim_sql() -> String {
    format!(
        "WITH claimed AS (
           UPDATE tasks t SET status = 'running', attempts = t.attempts + 1, agent = $1,
                  owner = $2, started_at = {NOW}, ended_at = NULL, slot = NULL, pid = NULL,
                  changed = nextval('changes')
           WHERE t.ctid = ANY(ARRAY(
               SELECT q.ctid FROM tasks q JOIN runs r ON r.id = q.run_id
               WHERE q.status = 'queued' AND r.shared AND r.status = 'running'
                 AND NOT r.paused AND (cardinality($4::bigint[]) = 0 OR q.run_id = ANY($4))
               ORDER BY q.priority DESC, q.cost DESC NULLS LAST, q.run_id, q.task
               LIMIT $3
               FOR UPDATE OF q SKIP LOCKED))
             AND t.status = 'queued'
             AND EXISTS (SELECT 1 FROM agents WHERE id = $1 AND state = 'running')
           RETURNING t.run_id, t.task, t.attempts, t.args, t.priority, t.cost, t.key,
                     t.timeout),
         opened AS (
           INSERT INTO attempts (run_id, task, attempt, slot, pid, started_at, agent, host)
           SELECT run_id, task, attempts, 0, 0, {NOW}, $1, $2 FROM claimed)
         SELECT * FROM claimed ORDER BY priority DESC, cost DESC NULLS LAST, run_id, task"
    )
}

/// The claim as a statement, for `EXPLAIN` in tests.
#[cfg(test)]
pub(super) fn claim_statement() -> String {
    claim_sql()
}

fn prepare_claim(address: &StoreAddress, client: &mut Client) -> Result<ClaimStatement> {
    client.prepare(&claim_sql()).map(ClaimStatement).map_err(db(address, "prepare the claim"))
}

impl Agent {
    /// Registers an agent named `name` with `slots` slots in the store at `address`,
    /// which must hold the shoal tables of this version, and starts its heartbeat.
    pub fn register(
        address: &StoreAddress,
        name: &str,
        slots: u32,
        timings: AgentTimings,
    ) -> Result<Agent> {
        let StoreAddress::Postgres(url) = address else {
            return Err(Error::StoreBackend { store: address.clone() });
        };
        let mut client = schema::connect(address, url)?;
        schema::require(address, &mut client)?;
        let host = owner_host();
        let lease = timings.lease.as_secs_f64();
        let id: i64 = client
            .query_one(
                &format!(
                    "INSERT INTO agents (name, host, pid, slots, started_at, heartbeat_at,
                                         expires_at, state)
                     VALUES ($1, $2, $3, $4, {NOW}, {NOW}, {NOW} + $5, 'running') RETURNING id"
                ),
                &[&name, &host, &i64::from(std::process::id()), &i64::from(slots), &lease],
            )
            .map_err(db(address, "register an agent"))?
            .get(0);
        let claim = prepare_claim(address, &mut client)?;
        let agent = Agent {
            address: address.clone(),
            url: url.clone(),
            id,
            host: format!("{host}:{}", std::process::id()),
            client: Mutex::new((DebugClient(client), claim)),
            heartbeat: Mutex::new(None),
        };
        let beat = schema::connect(address, url)?;
        let (stop, stopped) = mpsc::channel();
        let (address, url) = (agent.address.clone(), agent.url.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shoal-agent-{id}"))
            .spawn(move || heartbeat(beat, (&address, &url), id, timings, stopped))
            .map_err(|source| Error::Os { operation: "start the agent's heartbeat", source })?;
        *agent.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Some((stop, thread));
        Ok(agent)
    }

    /// The agent's id (`agents.id`).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// Claims at most `n` ready tasks of shared runs (of `runs` only, unless empty), in
    /// the order priority, cost, run, task. Connects again after a lost connection.
    pub fn claim(&self, n: usize, runs: &[i64]) -> Result<Vec<Claimed>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if guard.0 .0.is_closed() {
            let mut client = schema::connect(&self.address, &self.url)?;
            let claim = prepare_claim(&self.address, &mut client)?;
            *guard = (DebugClient(client), claim);
        }
        let (client, claim) = &mut *guard;
        let rows = client
            .0
            .query(&claim.0, &[&self.id, &self.host, &(n as i64), &runs])
            .map_err(db(&self.address, "claim tasks"))?;
        Ok(rows
            .iter()
            .map(|row| {
                let args: String = row.get("args");
                Claimed {
                    run: row.get("run_id"),
                    task: row.get::<_, i64>("task") as TaskId,
                    attempt: row.get::<_, i64>("attempts") as u32,
                    args: serde_json::from_str(&args).unwrap_or_default(),
                    meta: TaskMeta {
                        priority: row.get("priority"),
                        cost: row.get::<_, Option<f64>>("cost").map(Duration::from_secs_f64),
                        key: row.get("key"),
                        timeout: row
                            .get::<_, Option<f64>>("timeout")
                            .and_then(|s| Duration::try_from_secs_f64(s).ok()),
                        retries: 0,
                    },
                }
            })
            .collect())
    }

    /// The writer thread of this agent's attempts: fenced completions, group-committed;
    /// `on_rejected` hears of each late result the fence turned away.
    pub fn writer(
        &self,
        on_commit: OnCommit,
        on_failure: OnFailure,
        on_rejected: Box<dyn FnMut(&Rejected) + Send>,
    ) -> Result<Writer> {
        let journal = FenceJournal::open(&self.address, &self.url, self.id, on_rejected)?;
        Writer::start(Box::new(journal), on_commit, on_failure)
    }

    /// A connection that listens for claimable tasks.
    pub fn waker(&self) -> Waker {
        Waker { address: self.address.clone(), url: self.url.clone(), client: None }
    }

    /// Draining: the agent claims no more (its running tasks finish).
    pub fn drain(&self) -> Result<()> {
        self.set_state("draining")
    }

    /// Stopped: the heartbeat ends, the tasks it still holds (claimed but not run:
    /// call it once its writer has finished) are given back, and its lease is
    /// released. On a connection of its own, so that a claim stuck in the shared one
    /// cannot hold it up.
    pub fn stop(&self) -> Result<()> {
        if let Some((stop, thread)) =
            self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            drop(stop);
            let _ = thread.join();
        }
        let mut client = schema::connect(&self.address, &self.url)?;
        give_back(&self.address, &mut client, self.id, &[])?;
        client
            .execute(
                &format!(
                    "UPDATE agents SET state = 'stopped', expires_at = {NOW}
                     WHERE id = $1 AND state IN ('running', 'draining')"
                ),
                &[&self.id],
            )
            .map_err(db(&self.address, "stop an agent"))?;
        Ok(())
    }

    fn set_state(&self, state: &str) -> Result<()> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if guard.0 .0.is_closed() {
            let mut client = schema::connect(&self.address, &self.url)?;
            let claim = prepare_claim(&self.address, &mut client)?;
            *guard = (DebugClient(client), claim);
        }
        guard
            .0
             .0
            .execute(
                "UPDATE agents SET state = $2 WHERE id = $1 AND state IN ('running', 'draining')",
                &[&self.id, &state],
            )
            .map_err(db(&self.address, "change an agent's state"))?;
        Ok(())
    }

    /// Gives back the tasks the store says this agent runs but that are not in
    /// `known` (run, task, attempt): a claim that committed while its answer was lost
    /// with the connection. Their attempts are closed `interrupted`; they are queued
    /// again without spending a retry. How many.
    pub fn release_unknown(&self, known: &[(i64, TaskId, u32)]) -> Result<u64> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if guard.0 .0.is_closed() {
            let mut client = schema::connect(&self.address, &self.url)?;
            let claim = prepare_claim(&self.address, &mut client)?;
            *guard = (DebugClient(client), claim);
        }
        give_back(&self.address, &mut guard.0 .0, self.id, known)
    }

    /// Rescues the tasks of lost agents now (see the module doc); how many.
    pub fn rescue(&self) -> Result<u64> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        sweep(&self.address, &mut guard.0 .0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some((stop, thread)) =
            self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Renews the agent's lease every `heartbeat` and sweeps, until told to stop;
/// connects again after a lost connection.
fn heartbeat(
    mut client: Client,
    (address, url): (&StoreAddress, &str),
    id: i64,
    timings: AgentTimings,
    stop: mpsc::Receiver<()>,
) {
    let renew = format!(
        "UPDATE agents SET heartbeat_at = {NOW}, expires_at = {NOW} + $2
         WHERE id = $1 AND state IN ('running', 'draining')"
    );
    let lease = timings.lease.as_secs_f64();
    let mut warned = false;
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(timings.heartbeat) {
        if client.is_closed() {
            match schema::connect(address, url) {
                Ok(new) => client = new,
                Err(_) => continue,
            }
        }
        match client.execute(&renew, &[&id, &lease]) {
            Ok(0) if !warned => {
                warned = true;
                tracing::warn!(agent = id, "this agent was declared lost: its tasks were rescued");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(agent = id, store = %address, "cannot renew the lease: {e}"),
        }
        if let Err(e) = sweep(address, &mut client) {
            tracing::warn!(agent = id, store = %address, "cannot rescue tasks: {e}");
        }
    }
}

/// Marks the agents whose lease expired `lost` and rescues their running tasks, under
/// an advisory lock (another agent sweeping now does it); how many were rescued.
fn sweep(address: &StoreAddress, client: &mut Client) -> Result<u64> {
    let fail = db(address, "rescue the tasks of lost agents");
    let mut tx = client.transaction().map_err(&fail)?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RESCUE_LOCK])
        .map_err(&fail)?
        .get(0);
    if !locked {
        return Ok(0);
    }
    let rows = tx
        .query(
            &format!(
                "WITH lost AS (
                   UPDATE agents SET state = 'lost'
                   WHERE state IN ('running', 'draining') AND expires_at < {NOW}
                   RETURNING id),
                 held AS (
                   SELECT t.run_id, t.task, t.attempts, t.rescues + 1 AS rescues,
                          format('the agent %s (%s:%s) running it was lost: its lease expired',
                                 a.name, a.host, a.pid) AS reason
                   FROM tasks t JOIN agents a ON a.id = t.agent
                   WHERE t.status = 'running'
                     AND (a.state IN ('lost', 'stopped') OR a.id IN (SELECT id FROM lost))),
                 closed AS (
                   UPDATE attempts a SET ended_at = {NOW}, outcome = 'crashed',
                          stderr = convert_to(h.reason, 'UTF8')
                   FROM held h
                   WHERE a.run_id = h.run_id AND a.task = h.task AND a.attempt = h.attempts
                     AND a.ended_at IS NULL)
                 UPDATE tasks t
                 SET status = CASE WHEN h.rescues >= $1 THEN 'crashed' ELSE 'queued' END,
                     rescues = h.rescues, owner = NULL,
                     stderr = CASE WHEN h.rescues >= $1
                         THEN convert_to(h.reason || format(' (it was held by %s lost agents)',
                                                            h.rescues), 'UTF8')
                         ELSE t.stderr END,
                     ended_at = CASE WHEN h.rescues >= $1 THEN {NOW} ELSE t.ended_at END,
                     changed = nextval('changes')
                 FROM held h WHERE t.run_id = h.run_id AND t.task = h.task
                 RETURNING t.run_id, t.status"
            ),
            &[&LOST_AGENTS_LIMIT],
        )
        .map_err(&fail)?;
    let ended: BTreeSet<i64> =
        rows.iter().filter(|r| r.get::<_, &str>(1) != "queued").map(|r| r.get(0)).collect();
    for run in ended {
        end_run_if_done(address, &mut tx, run)?;
    }
    if rows.iter().any(|r| r.get::<_, &str>(1) == "queued") {
        notify(address, &mut tx)?;
    }
    tx.commit().map_err(&fail)?;
    Ok(rows.len() as u64)
}

/// Gives back the running tasks of agent `agent` that are not in `known`: their
/// attempts closed `interrupted`, the tasks queued again without spending a retry.
fn give_back(
    address: &StoreAddress,
    client: &mut Client,
    agent: i64,
    known: &[(i64, TaskId, u32)],
) -> Result<u64> {
    let runs: Vec<i64> = known.iter().map(|k| k.0).collect();
    let tasks: Vec<i64> = known.iter().map(|k| k.1 as i64).collect();
    let attempts: Vec<i64> = known.iter().map(|k| i64::from(k.2)).collect();
    let fail = db(address, "give back an agent's tasks");
    let mut tx = client.transaction().map_err(&fail)?;
    let n = tx
        .execute(
            &format!(
                "WITH gone AS (
                   SELECT t.run_id, t.task, t.attempts FROM tasks t
                   WHERE t.agent = $1 AND t.status = 'running'
                     AND NOT EXISTS (
                       SELECT 1 FROM unnest($2::bigint[], $3::bigint[], $4::bigint[])
                                AS k(run_id, task, attempt)
                       WHERE k.run_id = t.run_id AND k.task = t.task
                         AND k.attempt = t.attempts)),
                 closed AS (
                   UPDATE attempts a SET ended_at = {NOW}, outcome = 'interrupted',
                          stderr = convert_to('given back unrun by its agent', 'UTF8')
                   FROM gone g
                   WHERE a.run_id = g.run_id AND a.task = g.task
                     AND a.attempt = g.attempts AND a.ended_at IS NULL)
                 UPDATE tasks t SET status = 'queued', rescues = t.rescues + 1,
                        owner = NULL, changed = nextval('changes')
                 FROM gone g WHERE t.run_id = g.run_id AND t.task = g.task"
            ),
            &[&agent, &runs, &tasks, &attempts],
        )
        .map_err(&fail)?;
    if n > 0 {
        notify(address, &mut tx)?;
    }
    tx.commit().map_err(&fail)?;
    Ok(n)
}

/// Says that tasks became claimable (one notification per transaction, whatever the
/// number of tasks).
pub(super) fn notify(address: &StoreAddress, tx: &mut impl GenericClient) -> Result<()> {
    tx.batch_execute(&format!("NOTIFY {CHANNEL}")).map_err(db(address, "notify the agents"))
}

/// Ends shared run `run` if its input is closed and none of its tasks is queued or
/// running, inside the caller's transaction: `interrupted` if one was cancelled,
/// `finished` otherwise. Whoever finishes a run's last task calls it.
pub(super) fn end_run_if_done(
    address: &StoreAddress,
    tx: &mut impl GenericClient,
    run: i64,
) -> Result<bool> {
    let fail = db(address, "end a shared run");
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&RUN_END_LOCK, &(run as i32)])
        .map_err(&fail)?;
    let n = tx
        .execute(
            &format!(
                "UPDATE runs SET ended_at = {NOW},
                        status = CASE WHEN EXISTS (SELECT 1 FROM tasks
                                                   WHERE run_id = $1 AND status = 'cancelled')
                                 THEN 'interrupted' ELSE 'finished' END
                 WHERE id = $1 AND shared AND status = 'running' AND NOT input_open
                   AND NOT EXISTS (SELECT 1 FROM tasks
                                   WHERE run_id = $1 AND status IN ('queued', 'running'))"
            ),
            &[&run],
        )
        .map_err(&fail)?;
    Ok(n > 0)
}

/// An idle agent's wait for claimable tasks: a `LISTEN` connection, made on first
/// use and again after a lost one; without it, the wait is a plain poll.
pub struct Waker {
    address: StoreAddress,
    url: String,
    client: Option<Client>,
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waker").field("store", &self.address).finish()
    }
}

impl Waker {
    /// Waits until tasks may have become claimable, `poll` at most.
    pub fn wait(&mut self, poll: Duration) {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = schema::connect(&self.address, &self.url)
                .ok()
                .and_then(|mut c| c.batch_execute(&format!("LISTEN {CHANNEL}")).ok().map(|_| c));
        }
        let Some(client) = self.client.as_mut() else {
            std::thread::sleep(poll);
            return;
        };
        let heard = client.notifications().timeout_iter(poll).next().is_ok();
        // Whatever else came meanwhile says the same.
        let drained = heard && client.notifications().iter().count().is_ok();
        if !drained {
            self.client = None;
        }
    }
}
