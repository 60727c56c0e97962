//! The SQLite backend of the store: one embedded file in WAL mode.
//!
//! It owns the on-disk format ([`schema`]: DDL, [`SCHEMA_VERSION`], recognising a
//! shoal file, the checks on open), the reading of the write-ahead log for damage
//! (`wal.rs`), the synchronous calls of `SqliteStore` (`db.rs` writes runs and
//! tasks and repairs a run for resume, `read.rs` answers queries), the writer thread's
//! `SqliteJournal` (`journal.rs`), control requests and the feed a live run polls
//! (`control.rs`), the feed a watcher in another process follows a run by
//! (`follow.rs`), and SQLite's errors in the store's terms:
//! their kinds (`failure.rs`), and a full file system told from SQLite's "disk I/O
//! error" (`space.rs`).

mod control;
pub(crate) mod db;
mod failure;
mod follow;
mod journal;
mod read;
mod read_api;
pub mod schema;
mod space;
mod store;
mod values;
mod wal;

pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use space::RESERVE;
pub(crate) use store::SqliteStore;

#[cfg(test)]
mod control_tests;
#[cfg(test)]
mod follow_tests;
#[cfg(test)]
mod tests;
