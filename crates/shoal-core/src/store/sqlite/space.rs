//! Telling a full file system from the store's other failures, so that a user reads
//! "its file system is full" rather than SQLite's "disk I/O error"; and the room the
//! writer keeps for its last writes once it is full ([`Reserve`]).
//!
//! SQLite says "database or disk is full" when a write into the database or its log
//! finds no room, but a plain I/O error when its shared-memory file (`-shm`) cannot
//! grow, which is the first write of a connection to a WAL store: so a store opened on
//! a full disk failed with "disk I/O error". SQLite keeps the errno behind an I/O
//! error to itself (no safe way to it through rusqlite), so the file system is asked
//! how much room is left.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::FailureKind;

/// An I/O error of SQLite with less room than this left is taken for a full file
/// system: the writes that fail that way grow the `-shm` file, 32 KiB at a time.
const LOW: u64 = 64 << 10;

/// The bytes this process may still write on the file system holding `store` (root
/// may use the blocks a file system keeps back); `None` if it cannot be asked.
pub(super) fn free_bytes(store: &Path) -> Option<u64> {
    let dir = match store.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fs = rustix::fs::statvfs(dir).ok()?;
    let blocks = if rustix::process::geteuid().is_root() { fs.f_bfree } else { fs.f_bavail };
    Some(blocks.saturating_mul(fs.f_frsize))
}

/// When a failure of `kind`, met writing the store at `store`, comes from its file
/// system being full: the bytes still free, if known.
pub(super) fn full(store: &Path, kind: FailureKind) -> Option<Option<u64>> {
    match kind {
        FailureKind::Full => Some(free_bytes(store)),
        FailureKind::Io => free_bytes(store).filter(|&free| free < LOW).map(Some),
        _ => None,
    }
}

/// Whether an error of the operating system says there is no room.
pub(super) fn no_room(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Bytes kept free for the last writes after the store's file system fills up.
pub const RESERVE: u64 = 1 << 20;

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
