//! The lock a process holds on the run it runs: an advisory `flock` on a file next to
//! the store (`<store>.run-<id>.lock`), which the kernel releases when its holder dies,
//! `kill -9` included. It tells a live run from one whose shoal died (the reports show
//! [`RunStatus::Died`](super::RunStatus::Died)), and it keeps a resume from touching a
//! run that a live shoal still runs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, Result};

/// Held for as long as its holder runs the run; the file goes when it is dropped.
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    _file: File,
}

impl RunLock {
    /// Takes the lock of run `run` of the store at `store`; [`Error::RunBusy`] when a
    /// live process holds it.
    pub fn take(store: &Path, run: i64) -> Result<RunLock> {
        let path = lock_path(store, run);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::LockFile { path: path.clone(), source })?;
        // A few tries: a reader's probe (`is_held`) holds it shared for an instant.
        for pause in PROBE_WAITS {
            if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                return Ok(RunLock { path, _file: file });
            }
            std::thread::sleep(pause);
        }
        Err(Error::RunBusy { run })
    }

    /// Whether a live process holds the lock of run `run` (assumed when its file
    /// cannot be opened). A probe takes the lock shared and lets it go at once; it
    /// never creates or removes the file.
    pub fn is_held(store: &Path, run: i64) -> bool {
        match File::open(lock_path(store, run)) {
            Ok(file) => flock(&file, FlockOperation::NonBlockingLockShared).is_err(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            // A lock file this reader may not open cannot be probed: no claim it died.
            Err(_) => true,
        }
    }
}

impl Drop for RunLock {
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

/// Next to the store's real path, however it was named (a symlink, a relative path
/// from another directory): every process finds the same file.
fn lock_path(store: &Path, run: i64) -> PathBuf {
    let store = std::fs::canonicalize(store).unwrap_or_else(|_| store.to_owned());
    let mut name = store.file_name().unwrap_or_default().to_owned();
    name.push(format!(".run-{run}.lock"));
    store.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_locked_once_until_its_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        assert!(!RunLock::is_held(&store, 3));
        let lock = RunLock::take(&store, 3).unwrap();
        assert!(RunLock::is_held(&store, 3));
        let refused = RunLock::take(&store, 3).expect_err("held");
        assert!(refused.to_string().contains("run 3 is still running"), "{refused}");
        assert!(RunLock::take(&store, 4).is_ok(), "another run is another lock");
        drop(lock);
        assert!(!dir.path().join("s.db.run-3.lock").exists());
        assert!(!RunLock::is_held(&store, 3));
        assert!(RunLock::take(&store, 3).is_ok());
    }

    #[test]
    fn the_lock_is_the_same_however_the_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        std::fs::write(&store, "").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        let _lock = RunLock::take(&link, 2).unwrap();
        assert!(RunLock::is_held(&store, 2));
        assert!(matches!(RunLock::take(&store, 2), Err(Error::RunBusy { run: 2 })));
    }

    #[test]
    fn a_lock_left_by_a_dead_holder_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        // What a killed holder leaves: the file, and no lock on it.
        std::fs::write(dir.path().join("s.db.run-1.lock"), "").unwrap();
        assert!(!RunLock::is_held(&store, 1));
        assert!(RunLock::take(&store, 1).is_ok());
    }
}
