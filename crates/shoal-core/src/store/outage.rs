//! The writer thread once the store stops taking writes (a full disk, an I/O error,
//! a write lock held past the busy timeout): what it holds back, and what it still
//! writes at the end.
//!
//! # Protocol
//!
//! - The first commit that fails for the store's sake (not for one bad event) starts
//!   an outage. The failed batch and every later event are held in order and nothing
//!   more is written: the store keeps the state of the last good commit, and no event
//!   lands without one sent before it. The front end hears of it at once
//!   (`on_failure`), so it can stop dispatching.
//! - At that moment the writer lets go of its reserve: room on the store's file
//!   system, taken when the writer started, for the last writes.
//! - When the channel closes, the held events are written in one transaction (the
//!   salvage) and acknowledged through `on_commit` if it lands. If it does not, only
//!   the runs' ends are written, as `interrupted`: the tasks without a recorded end
//!   stay `queued` or `running`, which every report counts as unfinished, and a resume
//!   runs them. If even that fails, the run stays stored as `running`, which the
//!   reports show as `died` once its lock is free.
//! - At most [`MAX_HELD`] events are held (a pool that goes on after the failure);
//!   later ones are dropped, and a run that said it finished is recorded as
//!   `interrupted`, since its record is not whole.

use std::fs::File;
use std::path::Path;

use rusqlite::{Connection, ErrorCode};

use super::records::RunStatus;
use super::writer::{commit, OnCommit, StoreEvent, MAX_BATCH};
use crate::error::Error;

/// Bytes kept free for the last writes after the store's file system fills up.
pub const RESERVE: u64 = 1 << 20;

/// The most events held back during an outage.
pub const MAX_HELD: usize = 10 * MAX_BATCH;

/// Room on the store's file system: an unlinked file of [`RESERVE`] bytes, which
/// nothing else can see and the kernel frees with the process (or when dropped).
#[derive(Debug)]
pub(super) struct Reserve {
    _room: File,
}

impl Reserve {
    /// Takes the room in the directory of `store`; `None` where the file system cannot
    /// hold unnamed files or has no room left: the run goes on without it.
    pub(super) fn take(store: &Path) -> Option<Reserve> {
        use rustix::fs::{fallocate, open, FallocateFlags, Mode, OFlags};
        let dir = match store.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        let fd = open(dir, flags, Mode::from_raw_mode(0o600)).ok()?;
        fallocate(&fd, FallocateFlags::empty(), 0, RESERVE).ok()?;
        Some(Reserve { _room: File::from(fd) })
    }
}

/// Whether a failed write failed for the store's sake rather than for one of its
/// events (an unknown task, a value SQLite refuses): then nothing more can be written.
pub(super) fn store_failed(e: &Error) -> bool {
    let Error::Store { source, .. } = e else {
        return false;
    };
    match source.sqlite_error_code() {
        None => false,
        Some(
            ErrorCode::ConstraintViolation
            | ErrorCode::TypeMismatch
            | ErrorCode::TooBig
            | ErrorCode::ParameterOutOfRange,
        ) => false,
        Some(_) => true,
    }
}

/// The events held back since the store stopped taking writes.
#[derive(Debug, Default)]
pub(super) struct Outage {
    held: Vec<StoreEvent>,
    ends: Vec<StoreEvent>,
    dropped: bool,
}

impl Outage {
    /// Holds events, in order; the runs' ends go last.
    pub(super) fn hold(&mut self, events: impl IntoIterator<Item = StoreEvent>) {
        for ev in events {
            match ev {
                StoreEvent::RunEnded { .. } => self.ends.push(ev),
                _ if self.held.len() < MAX_HELD => self.held.push(ev),
                _ => self.dropped = true,
            }
        }
    }

    /// Writes what was held, or failing that the runs' ends as `interrupted`.
    pub(super) fn salvage(self, conn: &mut Connection, on_commit: &mut OnCommit) {
        let Outage { mut held, ends, dropped } = self;
        let ends = if dropped { interrupted(ends) } else { ends };
        held.extend(ends.iter().cloned());
        match commit(conn, &held) {
            Ok(()) => on_commit(&held),
            Err(e) => {
                tracing::debug!(error = %e, "the store still takes no writes");
                let ends = interrupted(ends);
                if !ends.is_empty() && commit(conn, &ends).is_ok() {
                    on_commit(&ends);
                }
            }
        }
    }
}

/// Runs' ends with `finished` turned into `interrupted`.
fn interrupted(ends: Vec<StoreEvent>) -> Vec<StoreEvent> {
    ends.into_iter()
        .map(|ev| match ev {
            StoreEvent::RunEnded { run, ended_at, status: RunStatus::Finished } => {
                StoreEvent::RunEnded { run, ended_at, status: RunStatus::Interrupted }
            }
            other => other,
        })
        .collect()
}
