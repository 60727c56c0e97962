//! The lock a process holds on the run it runs: an advisory `flock` on a file next to
//! the store (`<store>.run-<id>.lock`), which the kernel releases when its holder dies,
//! `kill -9` included. It tells a live run from one whose shoal died (the reports show
//! [`RunStatus::Died`](super::RunStatus::Died)), and it keeps a resume from touching a
//! run that a live shoal still runs.

use std::fs::File;
use std::path::{Path, PathBuf};

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
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(Error::RunBusy { run });
        }
        Ok(RunLock { path, _file: file })
    }

    /// Whether a live process holds the lock of run `run`. A probe takes the lock
    /// shared and lets it go at once; it never creates or removes the file.
    pub fn is_held(store: &Path, run: i64) -> bool {
        match File::open(lock_path(store, run)) {
            Ok(file) => flock(&file, FlockOperation::NonBlockingLockShared).is_err(),
            Err(_) => false,
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so that nobody else can lock it in between.
        let _ = std::fs::remove_file(&self.path);
    }
}

fn lock_path(store: &Path, run: i64) -> PathBuf {
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
    fn a_lock_left_by_a_dead_holder_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        // What a killed holder leaves: the file, and no lock on it.
        std::fs::write(dir.path().join("s.db.run-1.lock"), "").unwrap();
        assert!(!RunLock::is_held(&store, 1));
        assert!(RunLock::take(&store, 1).is_ok());
    }
}
