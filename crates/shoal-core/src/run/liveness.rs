//! Whether a run is alive: [`Liveness`], what holds it ([`RunHold`]), and its one
//! implementation today, a file lock beside a SQLite store ([`FileLiveness`]).
//!
//! A run is alive while some process holds it. Holding is taken before the run is
//! first committed (so no reader ever sees a new run without it) and before a resume
//! touches anything (so a run is never run by two processes at once), and it must end
//! by itself when its holder dies, `kill -9` included: the kernel frees a file lock;
//! a lease in a shared database expires. A run stored as `running` that is not alive
//! is shown `died`.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Marker, RunIdentity};
use crate::error::{Error, Result};
use crate::store::lock::FileLock;
use crate::store::StoreAddress;

/// The liveness of the runs of one store.
pub trait Liveness: Send + Sync + fmt::Debug {
    /// Takes run `run`'s liveness for this process, for as long as the hold lives;
    /// [`Error::RunBusy`] when a live process holds it.
    fn hold(&self, run: i64) -> Result<RunHold>;

    /// Whether a live process holds run `run`. When that cannot be told, it is
    /// assumed alive: a run is never called dead on a guess.
    fn is_alive(&self, run: i64) -> bool;
}

/// Keeps a run alive while held (a hold on its liveness); dropping it lets the run go.
#[derive(Debug)]
#[must_use = "the run is alive only while this is held"]
pub struct RunHold {
    identity: RunIdentity,
    _held: Box<dyn fmt::Debug + Send + Sync>,
}

impl RunHold {
    /// A hold on run `identity`, alive while `held` (a lock, a lease) is kept.
    pub fn new(identity: RunIdentity, held: impl fmt::Debug + Send + Sync + 'static) -> RunHold {
        RunHold { identity, _held: Box::new(held) }
    }

    /// The run held.
    pub fn identity(&self) -> &RunIdentity {
        &self.identity
    }

    /// The run's id in its store.
    pub fn run(&self) -> i64 {
        self.identity.run()
    }

    /// The marker to put in every process the run starts.
    pub fn marker(&self) -> Marker {
        Marker::new(self.identity.clone())
    }
}

/// A run is alive while a process holds an advisory lock on `<store>.run-<id>.lock`,
/// a file beside the store's real path; the kernel frees it when its holder dies.
#[derive(Debug, Clone)]
pub struct FileLiveness {
    /// The store's real path, however it was named: every process finds the same file.
    store: PathBuf,
}

impl FileLiveness {
    /// The liveness of the runs of the store file at `store`.
    pub fn new(store: &Path) -> FileLiveness {
        FileLiveness { store: std::fs::canonicalize(store).unwrap_or_else(|_| store.to_owned()) }
    }

    fn lock_path(&self, run: i64) -> PathBuf {
        let mut name = self.store.file_name().unwrap_or_default().to_owned();
        name.push(format!(".run-{run}.lock"));
        self.store.with_file_name(name)
    }
}

impl Liveness for FileLiveness {
    fn hold(&self, run: i64) -> Result<RunHold> {
        let path = self.lock_path(run);
        match FileLock::try_take(path.clone()) {
            Ok(Some(lock)) => {
                let identity = RunIdentity::new(run, &StoreAddress::Sqlite(self.store.clone()));
                Ok(RunHold::new(identity, lock))
            }
            Ok(None) => Err(Error::RunBusy { run }),
            Err(source) => Err(Error::LockFile { path, source }),
        }
    }

    fn is_alive(&self, run: i64) -> bool {
        FileLock::is_held(&self.lock_path(run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_held_once_until_its_hold_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        std::fs::write(&store, "").unwrap();
        let liveness = FileLiveness::new(&store);
        assert!(!liveness.is_alive(3));
        let hold = liveness.hold(3).unwrap();
        assert_eq!(hold.run(), 3);
        assert_eq!(hold.identity(), &RunIdentity::new(3, &StoreAddress::Sqlite(store.clone())));
        assert!(liveness.is_alive(3));
        assert!(dir.path().join("s.db.run-3.lock").exists());
        let refused = liveness.hold(3).expect_err("held");
        assert!(refused.to_string().contains("run 3 is still running"), "{refused}");
        assert!(liveness.hold(4).is_ok(), "another run is another lock");
        drop(hold);
        assert!(!dir.path().join("s.db.run-3.lock").exists());
        assert!(!liveness.is_alive(3));
        assert!(liveness.hold(3).is_ok());
    }

    #[test]
    fn the_liveness_is_the_same_however_the_store_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("s.db");
        std::fs::write(&store, "").unwrap();
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&store, &link).unwrap();
        let _hold = FileLiveness::new(&link).hold(2).unwrap();
        let liveness = FileLiveness::new(&store);
        assert!(liveness.is_alive(2));
        assert!(matches!(liveness.hold(2), Err(Error::RunBusy { run: 2 })));
    }

    #[test]
    fn a_lock_file_that_cannot_be_made_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let liveness = FileLiveness::new(&dir.path().join("missing").join("s.db"));
        match liveness.hold(1) {
            Err(Error::LockFile { path, .. }) => assert!(path.ends_with("missing/s.db.run-1.lock")),
            other => panic!("{other:?}"),
        }
    }
}
