//! The SQLite backend of the store: one embedded file in WAL mode.

pub(super) mod db;
pub(super) mod read;
pub mod schema;
mod space;
mod wal;
