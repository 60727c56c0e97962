//! A plain advisory lock on a file: an exclusive `flock`, which the kernel releases
//! when its holder dies, `kill -9` included. It knows nothing of runs: the file lock
//! liveness ([`FileLiveness`](crate::run::FileLiveness)) names one file per run next
//! to a SQLite store and holds it while the run lives.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};

/// Held for as long as it lives; the file goes when it is dropped.
#[derive(Debug)]
pub struct FileLock {
    path: PathBuf,
    _file: File,
}

impl FileLock {
    /// Takes the lock on `path`, creating the file if needed; `Ok(None)` when a live
    /// process holds it. An error only when the file cannot be opened.
    pub fn try_take(path: PathBuf) -> io::Result<Option<FileLock>> {
        let file = File::options().create(true).truncate(false).write(true).open(&path)?;
        // A few tries: a reader's probe (`is_held`) holds it shared for an instant.
        for pause in PROBE_WAITS {
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                return Ok(Some(FileLock { path, _file: file }));
            }
            std::thread::sleep(pause);
        }
        Ok(None)
    }

    /// Whether a live process holds the lock on `path` (assumed when the file cannot
    /// be opened). A probe takes the lock shared and lets it go at once; it never
    /// creates or removes the file.
    pub fn is_held(path: &Path) -> bool {
        match File::open(path) {
            Ok(file) => flock(&file, FlockOperation::NonBlockingLockShared).is_err(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            // A lock file this reader may not open cannot be probed: no claim it is free.
            Err(_) => true,
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Removed while still locked, so that nobody else can lock it in between.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pauses between tries to take a lock (50 ms in all).
const PROBE_WAITS: [Duration; 5] = [
    Duration::from_millis(2),
    Duration::from_millis(4),
    Duration::from_millis(8),
    Duration::from_millis(16),
    Duration::from_millis(20),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_locked_once_until_its_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        assert!(!FileLock::is_held(&path));
        let lock = FileLock::try_take(path.clone()).unwrap().expect("free");
        assert!(FileLock::is_held(&path));
        assert!(FileLock::try_take(path.clone()).unwrap().is_none(), "held");
        assert!(FileLock::try_take(dir.path().join("y.lock")).unwrap().is_some());
        drop(lock);
        assert!(!path.exists());
        assert!(!FileLock::is_held(&path));
        assert!(FileLock::try_take(path).unwrap().is_some());
    }

    #[test]
    fn a_lock_left_by_a_dead_holder_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        // What a killed holder leaves: the file, and no lock on it.
        std::fs::write(&path, "").unwrap();
        assert!(!FileLock::is_held(&path));
        assert!(FileLock::try_take(path).unwrap().is_some());
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("x.lock");
        assert!(FileLock::try_take(path).is_err());
    }
}
