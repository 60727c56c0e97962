//! The submitter of a shared run (`shoal run --detach` on PostgreSQL): the run is
//! created `shared`, so agents claim its tasks; tasks are inserted `queued` in
//! batches (one transaction each, never one per row, with a `NOTIFY` at most every
//! [`NOTIFY_EVERY`]: idle agents poll too); closing the input lets whoever finishes
//! the last task end the run.
//!
//! A shared run is alive while its submitter holds its lease (its input open) and,
//! once its input is closed, until it ends: it no longer needs its submitter. A
//! submitter killed with its input open leaves the run `died` once the lease
//! expires; agents still run the tasks it had submitted.

use std::time::{Duration, Instant};

use postgres::Client;

use super::agent::{end_run_if_done, notify};
use super::failure::db;
use super::lease::LeaseLiveness;
use super::schema;
use super::store::insert_task_rows;
use crate::error::{Error, Result};
use crate::run::RunHold;
use crate::store::records::{unix_now, NewRun, NewTask, RunStatus};
use crate::store::sqlite::db::json_words;
use crate::store::StoreAddress;

/// The least time between two notifications of a submitter.
pub const NOTIFY_EVERY: Duration = Duration::from_millis(250);

/// The submitter of one shared run.
pub struct Submitter {
    address: StoreAddress,
    client: Client,
    run: i64,
    hold: Option<RunHold>,
    notified: Instant,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter").field("run", &self.run).finish()
    }
}

impl Submitter {
    /// Creates a shared run with its first tasks in the store at `address` (the
    /// tables are created when there are none), its input open, its lease held.
    pub fn create(address: &StoreAddress, run: &NewRun, first: &[NewTask]) -> Result<Submitter> {
        let StoreAddress::Postgres(url) = address else {
            return Err(Error::StoreBackend { store: address.clone() });
        };
        let mut client = schema::connect(address, url)?;
        schema::ensure(address, &mut client)?;
        let liveness = LeaseLiveness::new(address, url);
        let fail = db(address, "create a run");
        let mut tx = client.transaction().map_err(&fail)?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO runs (started_at, status, command, options, cwd, memory_limit_mode,
                                   input_open, shared)
                 VALUES ($1, $2, $3, $4, $5, $6, true, true) RETURNING id",
                &[
                    &unix_now(),
                    &RunStatus::Running.as_str(),
                    &json_words(&run.command),
                    &run.options.to_string(),
                    &run.cwd,
                    &run.memory_limit_mode,
                ],
            )
            .map_err(&fail)?
            .get(0);
        insert_task_rows(address, &mut tx, id, first)?;
        liveness.take(&mut tx, id)?;
        notify(address, &mut tx)?;
        tx.commit().map_err(&fail)?;
        let hold = liveness.keep(id)?;
        Ok(Submitter {
            address: address.clone(),
            client,
            run: id,
            hold: Some(hold),
            notified: Instant::now(),
        })
    }

    /// The run's id.
    pub fn run(&self) -> i64 {
        self.run
    }

    /// Adds tasks to the run, `queued`, in one transaction, and wakes idle agents.
    pub fn add(&mut self, tasks: &[NewTask]) -> Result<()> {
        let fail = db(&self.address, "insert tasks");
        let mut tx = self.client.transaction().map_err(&fail)?;
        insert_task_rows(&self.address, &mut tx, self.run, tasks)?;
        if self.notified.elapsed() >= NOTIFY_EVERY {
            notify(&self.address, &mut tx)?;
            self.notified = Instant::now();
        }
        tx.commit().map_err(&fail)
    }

    /// Closes the run's input (ending the run if all its tasks are already final)
    /// and lets go of its lease: the run lives on without its submitter.
    pub fn close(mut self) -> Result<()> {
        let fail = db(&self.address, "end a run's input");
        let mut tx = self.client.transaction().map_err(&fail)?;
        tx.execute("UPDATE runs SET input_open = false WHERE id = $1", &[&self.run])
            .map_err(&fail)?;
        end_run_if_done(&self.address, &mut tx, self.run)?;
        notify(&self.address, &mut tx)?;
        tx.commit().map_err(&fail)?;
        drop(self.hold.take());
        Ok(())
    }
}
