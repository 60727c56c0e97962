//! Long-lived worker processes fed by the scheduler: the engine behind the Python
//! package (and any front end whose tasks are calls rather than commands).
//!
//! A [`WorkerPool`] owns a thread running the pool's driver: it starts the workers,
//! speaks the wire protocol of [`crate::protocol`] with each over a private
//! socketpair, hands them tasks in the order the [`crate::scheduler`] decides, and
//! supervises them: timeouts, crashes, hung workers (heartbeats), memory limits,
//! recycling and quarantine. Payloads stay opaque bytes: the front end made them and
//! reads the results. Nothing here knows of Python.
//!
//! Threads and channels: the front end's threads call [`WorkerPool`] methods, which
//! send [`handle::Command`]s over an unbounded channel to the driver thread and read
//! batches of [`TaskEvent`]s from a std channel. Inside the driver thread, each worker
//! has three tokio tasks (reader, writer, exit watcher) that talk to the driver loop
//! through one channel of [`worker::WorkerEvent`]s.
//!
//! Every decision is the pool's state machine's ([`machine::Machine`], pure, handed
//! facts with the time, answering with actions); the driver loop only does I/O.

mod config;
mod driver;
mod handle;
mod machine;
mod policy;
mod record;
mod slots;
mod worker;

pub use config::{
    Failure, PoolConfig, PoolStats, PoolStore, TaskEvent, TaskSpec, ThreadStarter, WorkerStats,
};
pub use handle::{PoolClosed, ResizeError, WorkerPool};
