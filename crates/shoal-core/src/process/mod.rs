//! Process control for the engine, one file per OS concern: starting a task's
//! process in its own process group with its limits ([`spawn`]), signalling the
//! whole group ([`signal`]), reaping it with its resource usage ([`reap`]) and the
//! memory-limit mechanisms ([`limits`]), and finding what an earlier engine left
//! running ([`orphans`]).
//!
//! Nothing here decides anything: the scheduler decides, the engine calls these.
//! Linux only (pidfd, process groups, `RLIMIT_AS`).

pub mod limits;
pub mod orphans;
pub mod reap;
pub mod signal;
pub mod spawn;

pub use limits::{Limits, MemoryMode};
pub use reap::{ExitInfo, Exited};
pub use spawn::{resolve_program, spawn, CommandLine, Spawned};
