//! A run's identity and liveness, whatever machine or store it lives on.
//!
//! It owns what names a run ([`RunIdentity`]: its id and its store's address), the
//! marker every process of the run carries in its environment ([`Marker`],
//! `SHOAL_RUN=<run>@<store>`, and finding the live processes that carry it), and
//! whether a run is alive ([`Liveness`]: a process takes a run's liveness and keeps it
//! in a [`RunHold`] while it runs the run; anyone can ask whether a run is alive). The
//! one liveness today is a file lock beside a SQLite store ([`FileLiveness`]); a lease
//! row in a shared database can implement the same trait without the engine or the
//! front ends knowing.
//!
//! It must not schedule, spawn or record anything: the store creates runs (and hands
//! out their hold), the engine and the worker pool put the marker in what they start.

mod identity;
mod liveness;
mod marker;

pub use identity::RunIdentity;
pub use liveness::{FileLiveness, Liveness, RunHold};
pub use marker::{kill_all, Marked, Marker};
