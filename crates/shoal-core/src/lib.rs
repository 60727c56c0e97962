//! shoal-core: the engine of shoal, a fault-tolerant multi-process task scheduler.
//!
//! It owns the task model ([`task`]), the pure scheduler ([`scheduler`]), process
//! supervision ([`process`]), the driver that joins them ([`engine`]), the durable
//! SQLite store ([`store`]), a run's identity, marker and liveness ([`run`]), the tap
//! that observers of a live run read ([`tap`]) and the wire protocol of long-lived
//! workers ([`protocol`]). It knows nothing of command-line parsing, HTTP or Python:
//! front ends hand it tasks as data and receive events back.

pub mod engine;
pub mod error;
pub mod process;
pub mod protocol;
pub mod run;
pub mod scheduler;
pub mod store;
pub mod tap;
pub mod task;
pub mod workers;

pub use error::{Error, Result};
pub use task::{AttemptOutcome, KillReason, Output, SlotId, TaskId, TaskMeta, TaskStatus};
