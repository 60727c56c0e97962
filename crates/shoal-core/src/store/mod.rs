//! The durable store: one embedded SQLite file in WAL mode holding every run, task
//! and attempt, with their timings, slots, outputs and results.
//!
//! It owns the on-disk format ([`schema`]: DDL, [`SCHEMA_VERSION`], recognising a
//! shoal file), the synchronous calls of a [`Store`] (creating runs and tasks,
//! repairing a run for resume, queries and statistics) and the writer thread that
//! makes the engine's events durable with group commit ([`Writer`]; its protocol is
//! written down in [`writer`], and what it does once the store takes no more writes
//! in [`outage`]), and the lock a live run holds ([`RunLock`]).
//!
//! It must not schedule, spawn or decide anything: it records what the engine tells
//! it and answers queries. It never creates directories, never panics on a bad file,
//! and never blocks the engine's hot path on I/O (events go through [`Writer::send`]).

mod lock;
pub mod outage;
mod records;
mod sqlite;
pub mod writer;

pub use lock::RunLock;
pub use records::{
    AttemptRecord, NewRun, NewTask, ResumeInfo, RunRecord, RunStats, RunStatus, RunSummary,
    SlotStats, StatusCounts, TaskRecord,
};
pub use sqlite::db::{now as unix_now, Store};
pub use sqlite::schema;
pub use sqlite::schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use writer::{OnCommit, OnFailure, StoreEvent, Writer, MAX_BATCH};

#[cfg(test)]
mod tests;
