//! The database format: the DDL of the schema `shoal` (version 1, then the
//! migrations to the current version), how a
//! connection is made (with a connect timeout: an unreachable server fails within
//! seconds, never hangs), and how the tables are created (`shoal store init`, or the
//! first writer) and checked.
//!
//! The version is the one row of `shoal.shoal_schema`, written in the same
//! transaction as the tables, under an advisory lock so that two shoals creating
//! them at once do it once. A writer migrates an older version in one transaction
//! under the same lock (`MIGRATIONS`, as the SQLite backend does); a new database
//! gets version 1 and every migration, so both paths give the same tables. Every
//! column is documented in docs/store.md.

use std::time::Duration;

use postgres::{Client, NoTls};

use super::failure::{db, said};
use crate::error::{Error, Result};
use crate::store::StoreAddress;

/// The schema version this shoal reads and writes (`shoal.shoal_schema.version`).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a connection attempt may take when the URL does not say
/// (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Serialises the creation and migration of the tables (`pg_advisory_xact_lock`).
const SCHEMA_LOCK: i64 = 0x7368_6f61;

/// The tables of version 1. `tasks.status` is the task's state: the claim takes
/// `queued` tasks through the partial index `tasks_ready` and bumps `attempts` (the
/// fence every completion presents).
pub(super) const DDL_1: &str = "
CREATE SCHEMA IF NOT EXISTS shoal;
CREATE TABLE shoal.shoal_schema (version bigint NOT NULL);
CREATE SEQUENCE shoal.changes;
CREATE TABLE shoal.runs (
    id                bigserial PRIMARY KEY,
    started_at        double precision NOT NULL,
    ended_at          double precision,
    status            text NOT NULL,
    command           text NOT NULL,
    options           text NOT NULL,
    cwd               text NOT NULL,
    memory_limit_mode text,
    input_open        boolean NOT NULL DEFAULT false
);
CREATE TABLE shoal.tasks (
    run_id           bigint NOT NULL REFERENCES shoal.runs(id),
    task             bigint NOT NULL,
    args             text NOT NULL,
    command          text NOT NULL,
    priority         integer NOT NULL,
    cost             double precision,
    key              text,
    timeout          double precision,
    retries          bigint NOT NULL,
    status           text NOT NULL,
    attempts         bigint NOT NULL DEFAULT 0,
    exit_code        integer,
    signal           integer,
    slot             bigint,
    pid              bigint,
    started_at       double precision,
    ended_at         double precision,
    duration         double precision,
    stdout           bytea NOT NULL DEFAULT '',
    stderr           bytea NOT NULL DEFAULT '',
    stdout_truncated boolean NOT NULL DEFAULT false,
    stderr_truncated boolean NOT NULL DEFAULT false,
    result           bytea,
    owner            text,
    changed          bigint NOT NULL DEFAULT nextval('shoal.changes'),
    PRIMARY KEY (run_id, task)
);
CREATE INDEX tasks_by_status ON shoal.tasks (run_id, status);
CREATE INDEX tasks_by_key ON shoal.tasks (key, status) WHERE key IS NOT NULL;
CREATE INDEX tasks_changed ON shoal.tasks (run_id, changed);
CREATE INDEX tasks_ready ON shoal.tasks (priority DESC, cost DESC NULLS LAST, run_id, task)
    WHERE status = 'queued';
CREATE TABLE shoal.attempts (
    run_id           bigint NOT NULL,
    task             bigint NOT NULL,
    attempt          bigint NOT NULL,
    slot             bigint NOT NULL,
    pid              bigint NOT NULL,
    started_at       double precision NOT NULL,
    ended_at         double precision,
    duration         double precision,
    outcome          text,
    exit_code        integer,
    signal           integer,
    max_rss_kb       bigint,
    stdout           bytea,
    stderr           bytea,
    stdout_truncated boolean NOT NULL DEFAULT false,
    stderr_truncated boolean NOT NULL DEFAULT false,
    PRIMARY KEY (run_id, task, attempt),
    FOREIGN KEY (run_id, task) REFERENCES shoal.tasks (run_id, task)
);
CREATE INDEX attempts_open ON shoal.attempts (run_id) WHERE ended_at IS NULL;
CREATE TABLE shoal.control (
    id           bigserial PRIMARY KEY,
    run_id       bigint NOT NULL REFERENCES shoal.runs(id),
    requested_at double precision NOT NULL,
    requested_by text NOT NULL,
    action       text NOT NULL,
    task         bigint,
    slots        bigint,
    applied_at   double precision,
    result       text
);
CREATE INDEX control_pending ON shoal.control (run_id, id) WHERE applied_at IS NULL;
CREATE TABLE shoal.leases (
    run_id       bigint PRIMARY KEY REFERENCES shoal.runs(id),
    owner        text NOT NULL,
    heartbeat_at double precision NOT NULL,
    expires_at   double precision NOT NULL
);
";

/// Version 2: agents that claim tasks from shared runs (`shoal worker`). Each agent
/// has a row with its lease; a task and each attempt name the agent that holds or
/// ran it; `tasks.rescues` counts the agents lost while holding the task (they do not
/// spend its retries); an attempt whose late result was rejected by the fence keeps
/// what it said in `late_outcome` and `late_at`; `runs.shared` marks a run whose
/// tasks agents claim (a run of one process keeps its tasks to itself) and
/// `runs.paused` one whose tasks are not claimed for now.
const MIGRATION_2: &str = "
CREATE TABLE shoal.agents (
    id           bigserial PRIMARY KEY,
    name         text NOT NULL,
    host         text NOT NULL,
    pid          bigint NOT NULL,
    slots        bigint NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    expires_at   double precision NOT NULL,
    state        text NOT NULL
);
CREATE INDEX agents_live ON shoal.agents (expires_at) WHERE state IN ('running', 'draining');
ALTER TABLE shoal.runs ADD COLUMN shared boolean NOT NULL DEFAULT false;
ALTER TABLE shoal.runs ADD COLUMN paused boolean NOT NULL DEFAULT false;
ALTER TABLE shoal.tasks ADD COLUMN agent bigint REFERENCES shoal.agents(id);
ALTER TABLE shoal.tasks ADD COLUMN rescues bigint NOT NULL DEFAULT 0;
CREATE INDEX tasks_by_agent ON shoal.tasks (agent) WHERE status = 'running';
ALTER TABLE shoal.attempts ADD COLUMN agent bigint REFERENCES shoal.agents(id);
ALTER TABLE shoal.attempts ADD COLUMN host text;
ALTER TABLE shoal.attempts ADD COLUMN late_outcome text;
ALTER TABLE shoal.attempts ADD COLUMN late_at double precision;
";

/// The migration to each version after 1, in order: `MIGRATIONS[i]` makes version `i + 2`.
const MIGRATIONS: [&str; 1] = [MIGRATION_2];

/// What [`init`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// The tables were created, at this version.
    Created(i64),
    /// They were there already, at this version.
    Present(i64),
    /// They were of an older version, now migrated to this one.
    Migrated { from: i64, to: i64 },
}

/// Connects to the database at `url` (the store `store`), with a connect timeout and
/// the search path set to `shoal`.
pub(super) fn connect(store: &StoreAddress, url: &str) -> Result<Client> {
    let refused = |reason: String| Error::StoreConnect { store: store.clone(), reason };
    let mut config: postgres::Config =
        url.parse().map_err(|e: postgres::Error| refused(said(&e)))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("shoal");
    }
    let mut client = config.connect(NoTls).map_err(|e| refused(said(&e)))?;
    // A process cut off mid-transaction (a network partition) must not hold its
    // locks past its lease: the rescue of its tasks would wait on them.
    let lease_ms = (super::lease::timings().0 * 1000.0).ceil() as u64;
    client
        .batch_execute(&format!(
            "SET search_path = shoal; SET idle_in_transaction_session_timeout = {lease_ms}"
        ))
        .map_err(|e| refused(said(&e)))?;
    Ok(client)
}

/// The schema version of the database, `None` when it has no shoal tables.
fn version(store: &StoreAddress, client: &mut Client) -> Result<Option<i64>> {
    let fail = db(store, "read the schema version");
    let present: bool = client
        .query_one("SELECT to_regclass('shoal.shoal_schema') IS NOT NULL", &[])
        .map_err(&fail)?
        .get(0);
    if !present {
        return Ok(None);
    }
    let row =
        client.query_opt("SELECT max(version) FROM shoal.shoal_schema", &[]).map_err(&fail)?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Creates the tables when the database has none, migrates older ones; fails on a
/// newer version.
pub(super) fn ensure(store: &StoreAddress, client: &mut Client) -> Result<Init> {
    if let Some(found) = version(store, client)? {
        if found >= SCHEMA_VERSION {
            return check(store, found).map(|_| Init::Present(found));
        }
    }
    let fail = db(store, "create the shoal schema in");
    let denied = |e: postgres::Error| match e.code() {
        Some(code) if *code == postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => {
            Error::StoreConnect {
                store: store.clone(),
                reason: format!(
                    "this user may not create the shoal schema ({}): grant it CREATE on the \
                     database, or have its owner run `shoal store init`",
                    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
                ),
            }
        }
        _ => fail(e),
    };
    let mut tx = client.transaction().map_err(&fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK]).map_err(&fail)?;
    // Another shoal may have created or migrated them while this one waited for the lock.
    let present: bool = tx
        .query_one("SELECT to_regclass('shoal.shoal_schema') IS NOT NULL", &[])
        .map_err(&fail)?
        .get(0);
    let found: Option<i64> = if present {
        tx.query_one("SELECT max(version) FROM shoal.shoal_schema", &[]).map_err(&fail)?.get(0)
    } else {
        None
    };
    if let Some(found) = found.filter(|v| *v >= SCHEMA_VERSION) {
        drop(tx);
        return check(store, found).map(|_| Init::Present(found));
    }
    if found.is_none() {
        tx.batch_execute(DDL_1).map_err(denied)?;
    }
    let from = found.unwrap_or(1);
    for migration in &MIGRATIONS[(from - 1) as usize..] {
        tx.batch_execute(migration).map_err(denied)?;
    }
    tx.execute("DELETE FROM shoal.shoal_schema", &[]).map_err(&fail)?;
    tx.execute("INSERT INTO shoal.shoal_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])
        .map_err(&fail)?;
    tx.commit().map_err(&fail)?;
    Ok(match found {
        None => Init::Created(SCHEMA_VERSION),
        Some(from) => Init::Migrated { from, to: SCHEMA_VERSION },
    })
}

/// A read-only opening: the tables must be there, at this version.
pub(super) fn require(store: &StoreAddress, client: &mut Client) -> Result<()> {
    match version(store, client)? {
        Some(found) => check(store, found),
        None => Err(Error::StoreNoSchema { store: store.clone() }),
    }
}

fn check(store: &StoreAddress, found: i64) -> Result<()> {
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(Error::StoreVersion { store: store.clone(), found, expected: SCHEMA_VERSION })
    }
}

/// `shoal store init`: creates the tables of the database at `address` unless they are
/// there; says which.
pub fn init(address: &StoreAddress) -> Result<Init> {
    let StoreAddress::Postgres(url) = address else {
        return Err(Error::StoreBackend { store: address.clone() });
    };
    let mut client = connect(address, url)?;
    ensure(address, &mut client)
}
