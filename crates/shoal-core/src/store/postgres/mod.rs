//! The PostgreSQL backend of the store: the tables live in a schema of their own
//! (`shoal`) in a database that other applications may share.
//!
//! It owns the database format ([`schema`]: DDL, [`SCHEMA_VERSION`], creation and the
//! checks on connect), the synchronous calls of `PgStore` (`store.rs`: writes and
//! queries), the writer thread's `PgJournal` (`journal.rs`), a run's liveness as a
//! lease row renewed by its holder (`lease.rs`), the feeds a live run and a watcher
//! poll (`feed.rs`), and PostgreSQL's errors in the store's terms (`failure.rs`).
//!
//! A shared run's tasks are claimed by agents on any machine (`agent.rs`: the
//! claim, the agents' leases, the rescue of a lost agent's tasks, the waking of idle
//! agents, the end of a shared run) and their attempts recorded through a fenced
//! journal (`fence.rs`); a shared run is submitted by `submit.rs`. See
//! ARCHITECTURE.md.

pub mod agent;
#[cfg(any(test, feature = "test-cluster"))]
pub mod cluster;
mod failure;
mod feed;
mod fence;
mod journal;
mod lease;
mod read;
mod read_api;
pub mod schema;
mod store;
mod submit;

pub use agent::{Agent, AgentTimings, Claimed, Waker};
pub use fence::Rejected;
pub use schema::{init, SCHEMA_VERSION};
pub use submit::Submitter;

/// Runs `f`, which uses the synchronous client: on a thread of its own when called
/// from inside a tokio runtime (the engine's), since the client drives a runtime of
/// its own and tokio refuses to start one inside another.
fn blocking<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
}
pub(crate) use store::PgStore;

#[cfg(test)]
mod agent_tests;
#[cfg(test)]
mod tests;
