//! Run commands, or calls on long-lived workers, on a fault-tolerant process pool:
//! the library of shoal, whose command line and
//! Python package are built on the same engine.
//!
//! Nothing hangs and only the failing task fails: each task's attempts are
//! supervised (timeouts, retries with backoff, a crashed or hung worker replaced and
//! only its task blamed), and every task ends with one status of one vocabulary
//! ([`TaskStatus`]).
//!
//! - [`CommandPool`] runs [`Command`]s, at most `jobs` at once, and returns how
//!   each ended, its output included.
//! - [`workers::WorkerPool`] feeds tasks to long-lived worker processes over a
//!   private channel, in the protocol of `docs/protocol.md`; [`worker::serve`] is that
//!   protocol's worker side, for workers written in Rust.
//! - [`store::Store`] reads the durable record of runs that `shoal` (or a Python pool
//!   with a store) wrote, and steers a live one from outside: cancel it or some of its
//!   tasks, pause it, change its slots.
//!
//! ```
//! use shoal_pool::{Command, CommandPool, TaskStatus};
//! use std::time::Duration;
//!
//! let pool = CommandPool::new(4).retry_delay(Duration::from_millis(10));
//! let results = pool.run((1..=8).map(|n| Command::new("test").args([n.to_string(), "-le".into(), "6".into()])))?;
//! let failed: Vec<_> = results.iter().filter(|r| r.status == TaskStatus::Failed).map(|r| r.task).collect();
//! assert_eq!(failed, [7, 8]);
//! # Ok::<(), shoal_pool::Error>(())
//! ```

#![warn(missing_docs)]

mod commands;
pub mod worker;

pub use commands::{Command, CommandPool, CommandResult};
pub use shoal_core::task::{AttemptOutcome, TaskId, TaskStatus};
pub use shoal_core::{Error, Result};

pub mod workers {
    //! Long-lived workers fed by the pool's scheduler: start a [`WorkerPool`] on a worker
    //! program, submit [`TaskSpec`]s, read one [`TaskEvent`] per task.
    //!
    //! The worker program here is this very program, which [`serve`](crate::worker::serve)s when the
    //! pool starts it (any program that speaks `docs/protocol.md` will do, such as the
    //! Python package's `python -m shoal._worker`):
    //!
    //! ```
    //! use shoal_pool::workers::{Failure, PoolConfig, TaskSpec, WorkerPool};
    //! use shoal_pool::TaskStatus;
    //!
    //! fn main() -> Result<(), Box<dyn std::error::Error>> {
    //!     if shoal_pool::worker::is_worker() {
    //!         // Started by the pool below: sum the bytes of each task, refuse empty ones.
    //!         return Ok(shoal_pool::worker::serve(|payload: &[u8]| match payload {
    //!             [] => Err("nothing to sum".to_string()),
    //!             bytes => Ok(bytes.iter().map(|&b| u64::from(b)).sum::<u64>().to_le_bytes().to_vec()),
    //!         })?);
    //!     }
    //!     let me = std::env::current_exe()?;
    //!     let pool = WorkerPool::start(PoolConfig::new(vec![me.into()], 2))?;
    //!     let task = |payload: Vec<u8>| TaskSpec { payload, ..TaskSpec::default() };
    //!     let first = pool.submit(vec![task(vec![1, 2, 3]), task(vec![])])?;
    //!     pool.close();
    //!     let mut events = Vec::new();
    //!     while events.len() < 2 {
    //!         events.extend(pool.next_events(None, 16));
    //!     }
    //!     events.sort_by_key(|e| e.task);
    //!     assert_eq!((events[0].task, events[0].status), (first, TaskStatus::Succeeded));
    //!     assert_eq!(events[0].payload, 6u64.to_le_bytes());
    //!     assert_eq!((events[1].status, events[1].failure), (TaskStatus::Failed, Some(Failure::Raised)));
    //!     assert_eq!(events[1].message, "nothing to sum");
    //!     assert!(pool.join(None));
    //!     Ok(())
    //! }
    //! ```

    pub use shoal_core::task::{SlotId, TaskMeta};
    pub use shoal_core::workers::{
        Failure, PoolClosed, PoolConfig, PoolStats, PoolStore, ResizeError, TaskEvent, TaskSpec,
        WorkerPool, WorkerStats,
    };
}

pub mod store {
    //! The durable store of runs: what each task did, and the control requests that steer
    //! a live run from outside the process running it.
    //!
    //! ```
    //! # fn main() -> shoal_pool::Result<()> {
    //! use shoal_pool::store::{requester, ControlAction, Store};
    //! use std::time::Duration;
    //!
    //! # let dir = tempfile::tempdir().unwrap();
    //! # let path = dir.path().join("runs.db");
    //! let store = Store::open(path.as_path())?;
    //! for run in store.runs()? {
    //!     println!("run {}: {} of {} tasks unfinished", run.id, run.unfinished, run.total);
    //! }
    //! // Steering needs a live run: this store has none, and says so.
    //! let asked = store.request(1, &[ControlAction::Pause], &requester("my tool"), Duration::from_secs(1));
    //! assert!(matches!(asked, Err(shoal_pool::Error::NoSuchRun { run: 1 })));
    //! # Ok(())
    //! # }
    //! ```

    pub use shoal_core::store::{
        requester, AttemptRecord, ControlAction, ControlRecord, RunRecord, RunStats, RunStatus,
        RunSummary, SlotStats, StatusCounts, Store, StoreAddress, TaskRecord,
    };
}

pub mod tap {
    //! Following a live pool from outside its loop: give a [`Tap`] to the pool
    //! ([`PoolConfig::tap`](crate::workers::PoolConfig)) and read each task's steps
    //! (started, ended) from any number of [`Observer`]s. An observer that falls behind
    //! loses the oldest steps and is told so; the pool never waits for it.

    pub use shoal_core::tap::{Observed, Observer, Tap, TaskStep};
}
