//! Process control for the engine, one file per OS concern: starting a task's
//! process in its own process group with its limits ([`mod@spawn`]), signalling the
//! whole group ([`signal`]), reaping it with its resource usage ([`reap`]), the
//! memory-limit mechanisms ([`cgroup`], [`limits`]), and a live process's CPU time
//! and parent ([`stat`]). Finding a run's processes by their marker is
//! [`crate::run::Marker`]'s.
//!
//! Nothing here decides anything: the scheduler decides, the engine calls these.
//! Linux only (pidfd, process groups, cgroups, `RLIMIT_AS`).

pub mod cgroup;
pub mod limits;
pub mod reap;
pub mod signal;
pub mod spawn;
pub mod stat;

pub use cgroup::{MemoryLimit, MemoryLimiter, MemoryMode, MIN_MEMORY_LIMIT};
pub use limits::Limits;
pub use reap::{ExitInfo, Exited};
pub use spawn::{resolve_program, spawn, spawn_worker, CommandLine, Spawned};
