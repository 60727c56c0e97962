//! A run's liveness in a PostgreSQL store: a lease row per live run (`shoal.leases`:
//! owner, last heartbeat, expiry, all on the database's clock), taken in the
//! transaction that creates the run (or by a resume), renewed by a heartbeat thread
//! of its holder, deleted when the hold is dropped. A holder killed with `kill -9`
//! renews it no more: its run shows `died` once the lease has expired. A shared run
//! (`submit.rs`) whose input is closed is alive without a lease: agents run it.
//!
//! Lease and heartbeat default to 10 s and 2 s; `SHOAL_PG_LEASE` and
//! `SHOAL_PG_HEARTBEAT` (seconds) change them (tests use short ones).

use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::{Client, GenericClient};

use super::blocking;
use super::failure::db;
use super::schema;
use super::store::DebugClient;
use crate::error::{Error, Result};
use crate::run::{Liveness, RunHold, RunIdentity};
use crate::store::StoreAddress;

/// The database's clock, in unix seconds.
pub(super) const NOW: &str = "extract(epoch from clock_timestamp())::double precision";

/// How long a lease lasts after each heartbeat, and how often its holder renews it.
pub(super) fn timings() -> (f64, Duration) {
    let seconds = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(default)
    };
    (seconds("SHOAL_PG_LEASE", 10.0), Duration::from_secs_f64(seconds("SHOAL_PG_HEARTBEAT", 2.0)))
}

/// This machine's name.
pub(super) fn owner_host() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host.trim().to_owned()
}

/// Who holds a lease: this machine and process.
fn owner() -> String {
    format!("{}:{}", owner_host(), std::process::id())
}

/// The liveness of the runs of one PostgreSQL store.
#[derive(Debug)]
pub(crate) struct LeaseLiveness {
    address: StoreAddress,
    url: String,
    /// Its own connection for `is_alive`, made on first use.
    client: Mutex<Option<DebugClient>>,
}

impl LeaseLiveness {
    pub(super) fn new(address: &StoreAddress, url: &str) -> LeaseLiveness {
        LeaseLiveness { address: address.clone(), url: url.to_owned(), client: Mutex::new(None) }
    }

    /// Takes run `run`'s lease inside the caller's transaction: refused while another
    /// holder's lease runs.
    pub(super) fn take(&self, tx: &mut impl GenericClient, run: i64) -> Result<()> {
        let (lease, _) = timings();
        let n = tx
            .execute(
                &format!(
                    "INSERT INTO leases (run_id, owner, heartbeat_at, expires_at)
                     VALUES ($1, $2, {NOW}, {NOW} + $3)
                     ON CONFLICT (run_id) DO UPDATE
                     SET owner = excluded.owner, heartbeat_at = excluded.heartbeat_at,
                         expires_at = excluded.expires_at
                     WHERE leases.expires_at < {NOW}"
                ),
                &[&run, &owner(), &lease],
            )
            .map_err(db(&self.address, "take a run's lease"))?;
        if n == 0 {
            return Err(Error::RunBusy { run });
        }
        Ok(())
    }

    /// The hold of a lease just taken: its heartbeat thread, on a connection of its own.
    pub(super) fn keep(&self, run: i64) -> Result<RunHold> {
        let client = schema::connect(&self.address, &self.url)?;
        let (stop, stopped) = mpsc::channel();
        let (lease, every) = timings();
        let (address, url) = (self.address.clone(), self.url.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shoal-lease-{run}"))
            .spawn(move || heartbeat(client, (&address, &url), run, lease, every, stopped))
            .map_err(|source| Error::Os { operation: "start the lease heartbeat", source })?;
        let identity = RunIdentity::new(run, &self.address);
        Ok(RunHold::new(identity, Lease { stop: Mutex::new(Some(stop)), thread: Some(thread) }))
    }
}

/// Renews the lease every `every` until told to stop, then deletes it; connects
/// again when the connection was lost (a restarted server).
fn heartbeat(
    mut client: Client,
    (address, url): (&StoreAddress, &str),
    run: i64,
    lease: f64,
    every: Duration,
    stop: mpsc::Receiver<()>,
) {
    let renew = format!(
        "UPDATE leases SET heartbeat_at = {NOW}, expires_at = {NOW} + $2 WHERE run_id = $1"
    );
    // Until told to stop (or its hold is gone).
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(every) {
        if client.is_closed() {
            match schema::connect(address, url) {
                Ok(new) => client = new,
                Err(_) => continue,
            }
        }
        if let Err(e) = client.execute(&renew, &[&run, &lease]) {
            tracing::warn!(run, store = %address, "cannot renew the run's lease: {e}");
        }
    }
    if client.is_closed() {
        if let Ok(new) = schema::connect(address, url) {
            client = new;
        }
    }
    if let Err(e) = client.execute("DELETE FROM leases WHERE run_id = $1", &[&run]) {
        tracing::warn!(run, store = %address, "cannot release the run's lease: {e}");
    }
}

/// A held lease: dropping it stops the heartbeat and deletes the lease.
#[derive(Debug)]
struct Lease {
    stop: Mutex<Option<Sender<()>>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Liveness for LeaseLiveness {
    fn hold(&self, run: i64) -> Result<RunHold> {
        blocking(|| {
            let fail = db(&self.address, "take a run's lease");
            let mut client = schema::connect(&self.address, &self.url)?;
            let mut tx = client.transaction().map_err(&fail)?;
            self.take(&mut tx, run)?;
            tx.commit().map_err(&fail)?;
            self.keep(run)
        })
    }

    fn is_alive(&self, run: i64) -> bool {
        blocking(|| {
            let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                match schema::connect(&self.address, &self.url) {
                    Ok(client) => *slot = Some(DebugClient(client)),
                    Err(_) => return true,
                }
            }
            let Some(client) = slot.as_mut() else { return true };
            match client.0.query_opt(
                // A shared run whose input is closed needs no holder: agents run it.
                &format!(
                    "SELECT coalesce((SELECT expires_at > {NOW} FROM leases WHERE run_id = $1),
                                     false)
                            OR EXISTS (SELECT 1 FROM runs WHERE id = $1 AND shared
                                       AND NOT input_open)"
                ),
                &[&run],
            ) {
                Ok(row) => row.is_some_and(|r| r.get(0)),
                // Cannot tell: never called dead on a guess.
                Err(_) => {
                    *slot = None;
                    true
                }
            }
        })
    }
}
