//! The durable store: every run, task and attempt, with their timings, slots, outputs
//! and results, kept by a backend behind one interface.
//!
//! It owns the store's address ([`StoreAddress`]: a file path, or a `postgresql://`
//! URL, told apart in one place), the backend interface ([`backend`]: the synchronous
//! calls of a [`Store`] and the [`Journal`] of the writer thread) with the one place
//! that picks a backend for an address, the writer thread that makes the engine's
//! events durable with group commit ([`Writer`]; its protocol is written down in
//! [`writer`], and what it does once the store takes no more writes in [`outage`]),
//! the plain records that go in and come out, the recording of a run ([`Recording`]:
//! the one sink that turns the engine's task life, for commands and calls alike, into
//! the writer's events), the control requests that steer a live
//! run from outside ([`control`]), the view of a run a watcher follows from another
//! process ([`follow`]), the reads of an HTTP front ([`read_api`]), and the plain file lock ([`lock::FileLock`]) that
//! the SQLite backend's run liveness ([`FileLiveness`](crate::run::FileLiveness))
//! takes. The embedded SQLite file is the one backend today ([`sqlite`]). A run's
//! identity and liveness are [`crate::run`]'s.
//!
//! It must not schedule, spawn or decide anything: it records what the engine tells
//! it (its one rule of its own: a run with a cancelled task ends `interrupted`) and
//! answers queries. It never creates directories, never panics on a bad file,
//! and never blocks the engine's hot path on I/O (events go through [`Writer::send`]).

mod address;
pub mod backend;
pub mod control;
pub mod follow;
mod handle;
pub(crate) mod lock;
pub mod outage;
pub mod postgres;
pub mod read_api;
#[cfg(test)]
mod read_api_tests;
mod recording;
mod records;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod test_support;
pub mod writer;

pub use address::StoreAddress;
pub use backend::{Backend, Journal};
pub use control::{
    requester, ControlAction, ControlFeed, ControlRecord, ControlRequest, ControlWatcher,
};
pub use follow::{last_line, ProgressFeed, RunProgress, RunningAttempt, TaskEnd};
pub use handle::Store;
pub use read_api::{Histogram, PageStart, RunOverview, StoreMetrics, TaskFilter};
pub use recording::{AttemptEnd, Recording};
pub use records::{
    unix_now, AttemptRecord, NewRun, NewTask, RunRecord, RunStats, RunStatus, RunSummary,
    SlotStats, StatusCounts, TaskRecord,
};
pub use sqlite::{APPLICATION_ID, SCHEMA_VERSION};
pub use writer::{OnCommit, OnFailure, StoreEvent, Writer, MAX_BATCH};
