//! The lock a shoal holds on the run it is running, so that a `--resume` of that run
//! elsewhere is refused while it lives: an advisory lock on a file next to the store,
//! which the kernel releases when its holder dies, `kill -9` included.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rustix::fs::{flock, FlockOperation};

/// Held for as long as this shoal runs the run; the file goes when it is dropped.
pub struct RunLock {
    path: PathBuf,
    _file: File,
}

impl RunLock {
    /// Takes the lock of run `run` of the store at `store`, or says that another
    /// shoal holds it.
    pub fn take(store: &Path, run: i64) -> anyhow::Result<RunLock> {
        let mut name = store.file_name().unwrap_or_default().to_owned();
        name.push(format!(".run-{run}.lock"));
        let path = store.with_file_name(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open the run's lock file {}", path.display()))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            bail!(
                "run {run} is still running in another shoal: stop it (or let it finish) \
                 before resuming"
            );
        }
        Ok(RunLock { path, _file: file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other shoal can lock it in between.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_locked_once_until_its_lock_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        let lock = RunLock::take(&store, 3).unwrap();
        let refused = RunLock::take(&store, 3).err().expect("held");
        assert!(refused.to_string().contains("run 3 is still running"), "{refused}");
        assert!(RunLock::take(&store, 4).is_ok(), "another run is another lock");
        drop(lock);
        assert!(!dir.path().join("s.db.run-3.lock").exists());
        assert!(RunLock::take(&store, 3).is_ok());
    }
}
