//! [`PgStore`], the PostgreSQL backend: one connection shared by the synchronous calls
//! (writes here, queries in `read.rs`), and a connection of its own for each writer
//! thread's journal, control feed, progress feed and lease heartbeat.

use std::sync::{Mutex, MutexGuard};

use postgres::{Client, GenericClient};
use serde_json::Value;

use super::blocking;
use super::failure::db;
use super::feed::{PgControlFeed, PgProgress};
use super::journal::PgJournal;
use super::lease::LeaseLiveness;
use super::schema;
use crate::error::{Error, Result};
use crate::run::{Liveness, RunHold};
use crate::store::backend::{Access, Backend, Journal};
use crate::store::control::{ControlAction, ControlFeed, ControlRecord};
use crate::store::follow::ProgressFeed;
use crate::store::records::{
    live_status, unix_now as now, AttemptRecord, NewRun, NewTask, RunRecord, RunStats, RunStatus,
    RunSummary, TaskRecord,
};
use crate::store::sqlite::db::json_words;
use crate::store::StoreAddress;
use crate::task::{TaskId, TaskStatus};

/// An open PostgreSQL store.
#[derive(Debug)]
pub(crate) struct PgStore {
    pub(super) address: StoreAddress,
    pub(super) url: String,
    client: Mutex<DebugClient>,
    pub(super) liveness: LeaseLiveness,
}

/// `postgres::Client` shows nothing of itself; the store's address says which it is.
pub(super) struct DebugClient(pub(super) Client);

impl std::fmt::Debug for DebugClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

impl PgStore {
    /// Connects to the database at `url`: a writer creates the tables when there are
    /// none; a reader needs them.
    pub(crate) fn open(address: &StoreAddress, url: &str, access: Access) -> Result<PgStore> {
        blocking(|| PgStore::connect(address, url, access))
    }

    fn connect(address: &StoreAddress, url: &str, access: Access) -> Result<PgStore> {
        let mut client = schema::connect(address, url)?;
        match access {
            Access::Write => schema::ensure(address, &mut client).map(drop)?,
            Access::Read => schema::require(address, &mut client)?,
        }
        Ok(PgStore {
            address: address.clone(),
            url: url.to_owned(),
            client: Mutex::new(DebugClient(client)),
            liveness: LeaseLiveness::new(address, url),
        })
    }

    /// The shared connection; a panic in another caller leaves it usable, since
    /// every write is a transaction.
    pub(super) fn client(&self) -> MutexGuard<'_, DebugClient> {
        self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn create(&self, run: &NewRun, tasks: &[NewTask], input_open: bool) -> Result<RunHold> {
        let fail = db(&self.address, "create a run");
        let mut client = self.client();
        let mut tx = client.0.transaction().map_err(&fail)?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO runs (started_at, status, command, options, cwd, memory_limit_mode,
                                   input_open)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[
                    &now(),
                    &RunStatus::Running.as_str(),
                    &json_words(&run.command),
                    &run.options.to_string(),
                    &run.cwd,
                    &run.memory_limit_mode,
                    &input_open,
                ],
            )
            .map_err(&fail)?
            .get(0);
        insert_task_rows(&self.address, &mut tx, id, tasks)?;
        self.liveness.take(&mut tx, id)?;
        tx.commit().map_err(&fail)?;
        self.liveness.keep(id)
    }

    /// A stored status as it stands (`records::live_status`, the rule of every backend):
    /// `running` whose lease expired is `died`; `finished` with open tasks is
    /// `interrupted`.
    pub(super) fn live_status(&self, run: i64, stored: RunStatus, open: u64) -> RunStatus {
        let reread = || {
            let row = self.client().0.query_opt("SELECT status FROM runs WHERE id = $1", &[&run]);
            row.ok().flatten().and_then(|r| RunStatus::parse(r.get(0)))
        };
        live_status(stored, open, || self.liveness.is_alive(run), reread)
    }

    fn repair(&self, run: i64) -> Result<()> {
        let fail = db(&self.address, "prepare a resume");
        let mut client = self.client();
        let mut tx = client.0.transaction().map_err(&fail)?;
        require_run(&self.address, &mut tx, run)?;
        tx.execute(
            "UPDATE attempts SET outcome = 'interrupted', ended_at = $2
             WHERE run_id = $1 AND ended_at IS NULL",
            &[&run, &now()],
        )
        .map_err(&fail)?;
        tx.execute(
            "UPDATE tasks SET status = $2, owner = NULL, changed = nextval('changes')
             WHERE run_id = $1 AND status = $3",
            &[&run, &TaskStatus::Queued.as_str(), &TaskStatus::Running.as_str()],
        )
        .map_err(&fail)?;
        tx.execute(
            "UPDATE control SET applied_at = $2, result = 'dropped: the run had died'
             WHERE run_id = $1 AND applied_at IS NULL",
            &[&run, &now()],
        )
        .map_err(&fail)?;
        tx.execute(
            "UPDATE runs SET status = $2, ended_at = NULL, input_open = false WHERE id = $1",
            &[&run, &RunStatus::Running.as_str()],
        )
        .map_err(&fail)?;
        tx.commit().map_err(&fail)
    }
}

/// Fails with [`Error::NoSuchRun`] unless the run exists.
pub(super) fn require_run(
    store: &StoreAddress,
    client: &mut impl GenericClient,
    run: i64,
) -> Result<()> {
    client
        .query_opt("SELECT 1 FROM runs WHERE id = $1", &[&run])
        .map_err(db(store, "look up a run"))?
        .map(drop)
        .ok_or(Error::NoSuchRun { run })
}

/// Inserts tasks, `queued` with no attempts, inside the caller's transaction: one
/// statement for all of them (columns as arrays), not one per task.
pub(super) fn insert_task_rows(
    store: &StoreAddress,
    tx: &mut impl GenericClient,
    run: i64,
    tasks: &[NewTask],
) -> Result<()> {
    require_run(store, tx, run)?;
    if tasks.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = tasks.iter().map(|t| t.task as i64).collect();
    let args: Vec<String> = tasks.iter().map(|t| json_words(&t.args)).collect();
    let commands: Vec<&str> = tasks.iter().map(|t| t.command.as_str()).collect();
    let priorities: Vec<i32> = tasks.iter().map(|t| t.meta.priority).collect();
    let costs: Vec<Option<f64>> =
        tasks.iter().map(|t| t.meta.cost.map(|d| d.as_secs_f64())).collect();
    let keys: Vec<Option<&str>> = tasks.iter().map(|t| t.meta.key.as_deref()).collect();
    let timeouts: Vec<Option<f64>> =
        tasks.iter().map(|t| t.meta.timeout.map(|d| d.as_secs_f64())).collect();
    let retries: Vec<i64> = tasks.iter().map(|t| i64::from(t.meta.retries)).collect();
    tx.execute(
        "INSERT INTO tasks (run_id, task, args, command, priority, cost, key,
                            timeout, retries, status, attempts)
         SELECT $1, t.*, $10, 0
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::int4[], $6::float8[],
                     $7::text[], $8::float8[], $9::bigint[]) AS t",
        &[
            &run,
            &ids,
            &args,
            &commands,
            &priorities,
            &costs,
            &keys,
            &timeouts,
            &retries,
            &TaskStatus::Queued.as_str(),
        ],
    )
    .map_err(db(store, "insert tasks"))?;
    Ok(())
}

impl Backend for PgStore {
    fn create_run(&self, run: &NewRun, tasks: &[NewTask], input_open: bool) -> Result<RunHold> {
        blocking(|| self.create(run, tasks, input_open))
    }

    fn liveness(&self) -> &dyn Liveness {
        blocking(|| &self.liveness)
    }

    fn set_run_options(&self, run: i64, options: &Value, memory_mode: Option<&str>) -> Result<()> {
        blocking(|| {
            let n = self
                .client()
                .0
                .execute(
                    "UPDATE runs SET options = $2, memory_limit_mode = $3 WHERE id = $1",
                    &[&run, &options.to_string(), &memory_mode],
                )
                .map_err(db(&self.address, "update a run's options"))?;
            if n == 0 {
                return Err(Error::NoSuchRun { run });
            }
            Ok(())
        })
    }

    fn insert_tasks(&self, run: i64, tasks: &[NewTask]) -> Result<()> {
        blocking(|| {
            let fail = db(&self.address, "insert tasks");
            let mut client = self.client();
            let mut tx = client.0.transaction().map_err(&fail)?;
            insert_task_rows(&self.address, &mut tx, run, tasks)?;
            tx.commit().map_err(&fail)
        })
    }

    fn prepare_resume(&self, run: i64) -> Result<RunRecord> {
        blocking(|| {
            self.repair(run)?;
            self.run(run)
        })
    }

    fn unsucceeded_tasks(&self, run: i64, after: TaskId, limit: usize) -> Result<Vec<TaskRecord>> {
        blocking(|| PgStore::unsucceeded_tasks(self, run, after, limit))
    }

    fn unsucceeded_timeout_extremes(&self, run: i64) -> Result<Vec<(TaskId, f64)>> {
        blocking(|| PgStore::unsucceeded_timeout_extremes(self, run))
    }

    fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>> {
        blocking(|| PgStore::stored_result(self, key, command))
    }

    fn runs(&self) -> Result<Vec<RunSummary>> {
        blocking(|| PgStore::runs(self))
    }

    fn run(&self, id: i64) -> Result<RunRecord> {
        blocking(|| PgStore::run(self, id))
    }

    fn last_run(&self) -> Result<Option<i64>> {
        blocking(|| PgStore::last_run(self))
    }

    fn tasks(&self, run: i64, status: Option<TaskStatus>) -> Result<Vec<TaskRecord>> {
        blocking(|| PgStore::tasks(self, run, status))
    }

    fn attempts(&self, run: i64) -> Result<Vec<AttemptRecord>> {
        blocking(|| PgStore::attempts(self, run))
    }

    fn stats(&self, run: i64) -> Result<RunStats> {
        blocking(|| PgStore::stats(self, run))
    }

    fn journal(&self) -> Result<Box<dyn Journal>> {
        blocking(|| Ok(Box::new(PgJournal::open(&self.address, &self.url)?) as Box<dyn Journal>))
    }

    fn request(&self, run: i64, actions: &[ControlAction], by: &str) -> Result<Vec<i64>> {
        blocking(|| PgStore::request(self, run, actions, by))
    }

    fn control_records(&self, run: i64) -> Result<Vec<ControlRecord>> {
        blocking(|| PgStore::control_records(self, run))
    }

    fn control_feed(&self, run: i64) -> Result<Box<dyn ControlFeed>> {
        blocking(|| {
            Ok(Box::new(PgControlFeed::open(&self.address, &self.url, run)?)
                as Box<dyn ControlFeed>)
        })
    }

    fn progress_feed(&self, run: i64) -> Result<Box<dyn ProgressFeed>> {
        blocking(|| {
            Ok(Box::new(PgProgress::open(&self.address, &self.url, run)?) as Box<dyn ProgressFeed>)
        })
    }
}
