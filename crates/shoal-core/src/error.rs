//! The one error type of the engine. Every variant names what it was doing and on
//! what (a path, a task, an operation), so a front end can print it as it is.

use std::io;
use std::path::PathBuf;

use crate::store::StoreAddress;
use crate::task::TaskId;

/// Everything that can go wrong inside shoal-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store's directory is missing, unwritable, or SQLite cannot open the file.
    #[error("cannot open the store {}: {reason}", path.display())]
    StoreOpen { path: PathBuf, reason: String },

    /// The file exists but is not a readable shoal database.
    #[error("the store {} is not a shoal database or is corrupt: {reason}", path.display())]
    StoreCorrupt { path: PathBuf, reason: String },

    /// The file is a shoal store but damaged: SQLite's check found bad pages, or its
    /// write-ahead log holds commits that SQLite would drop without a word.
    #[error("the store {} is damaged: {reason}", path.display())]
    StoreDamaged { path: PathBuf, reason: String },

    /// The store's file system is full: the store could not be opened, created or
    /// written. `operation` reads "cannot {operation} the store" ("open", "record a
    /// run in"); `free` is the room left, where the file system says.
    #[error("cannot {operation} the store {}: its file system is full{}", path.display(), show_free(*free))]
    StoreFull { path: PathBuf, operation: &'static str, free: Option<u64> },

    /// The database was written by a shoal with another schema version.
    #[error("the store {} has schema version {found}; this shoal reads version {expected}", path.display())]
    StoreSchema { path: PathBuf, found: i64, expected: i64 },

    /// A query or write failed after the store was opened.
    #[error("store {operation} failed: {source}")]
    Store {
        operation: &'static str,
        /// The store it failed on.
        store: StoreAddress,
        #[source]
        source: BackendError,
    },

    /// A database store cannot be reached or entered: a wrong URL, no server there,
    /// a refused login, a user who may not create the tables.
    #[error("cannot connect to the store {store}: {reason}")]
    StoreConnect { store: StoreAddress, reason: String },

    /// A database store without shoal's tables, opened only to read.
    #[error(
        "the store {store} holds no shoal tables: create them with `shoal store init --store URL` \
         (or by a first `shoal run`)"
    )]
    StoreNoSchema { store: StoreAddress },

    /// A database store whose shoal tables are of another schema version.
    #[error(
        "the store {store} has shoal schema version {found}; this shoal reads version {expected}"
    )]
    StoreVersion { store: StoreAddress, found: i64, expected: i64 },

    /// The store's address names a backend this shoal does not have.
    #[error("cannot open the store {store}: {} stores are not supported yet", store.backend())]
    StoreBackend { store: StoreAddress },

    /// A live process holds the run's lock: it is running it now.
    #[error(
        "run {run} is still running in another shoal: stop it (or let it finish) before resuming"
    )]
    RunBusy { run: i64 },

    /// The lock file of a run cannot be opened.
    #[error("cannot open the run's lock file {}", path.display())]
    LockFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The store holds no run with this id.
    #[error("no run {run} in the store")]
    NoSuchRun { run: i64 },

    /// A control request for a run that no live process runs any more.
    #[error("run {run} has ended ({}): only a live run can be steered", status.as_str())]
    RunEnded { run: i64, status: crate::store::RunStatus },

    /// A control request named a task the run does not have.
    #[error("run {run} has no task {task}")]
    NoSuchTask { run: i64, task: TaskId },

    /// A control request named a task that has already ended.
    #[error("task {task} of run {run} has ended ({status})")]
    TaskEnded { run: i64, task: TaskId, status: crate::task::TaskStatus },

    /// The process running the run did not take a control request in time.
    #[error(
        "run {run} did not take the request within {}s: the process running it takes no \
         requests (an older shoal?); the request stays in the store",
        waited.as_secs()
    )]
    ControlNotTaken { run: i64, waited: std::time::Duration },

    /// A store event named a task, or an attempt of it, that the store does not hold.
    #[error("the store holds no {what} for task {task} of run {run}")]
    StoreMissing { run: i64, task: TaskId, what: &'static str },

    /// A task's process could not be set up (pipes, pidfd, ...).
    #[error("task {task}: cannot {operation}: {source}")]
    Spawn {
        task: TaskId,
        operation: &'static str,
        #[source]
        source: io::Error,
    },

    /// An operating-system call of the engine itself failed.
    #[error("cannot {operation}: {source}")]
    Os {
        operation: &'static str,
        #[source]
        source: io::Error,
    },

    /// A resource limit was asked for that this machine cannot enforce.
    #[error("{what} cannot be enforced here: {reason}")]
    Unsupported { what: &'static str, reason: String },

    /// A setting of a worker pool is out of range.
    #[error("invalid pool setting {what}: {reason}")]
    InvalidConfig { what: &'static str, reason: String },

    /// The worker program cannot be run.
    #[error("cannot start workers with {program}: {reason}")]
    WorkerProgram { program: String, reason: String },

    /// A worker broke the wire protocol, or its channel failed.
    #[error("worker protocol: {0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
}

/// Why a store's backend failed, in terms every backend can give: the kind of failure,
/// which decides whether the store still takes writes (`store/outage.rs`), and the
/// backend's own error, whose words are shown as they are.
#[derive(Debug)]
pub struct BackendError {
    kind: FailureKind,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

/// What kind of failure a backend met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No room left: a full disk, a quota.
    Full,
    /// The store's data is damaged, or is not a store's.
    Damaged,
    /// Another writer held the store for longer than a writer waits.
    Busy,
    /// The store may not be written: a read-only file or connection.
    ReadOnly,
    /// Its storage failed: an I/O error, a lost connection.
    Io,
    /// This request, not the store: a value the store refuses (a broken constraint,
    /// the wrong type, too big) or one read back that means nothing.
    Invalid,
    /// Anything else the backend reports.
    Other,
}

impl BackendError {
    /// A failure of `kind`, told in the backend's own error.
    pub fn new(
        kind: FailureKind,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        BackendError { kind, cause: cause.into() }
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }

    /// The backend's own error.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.cause
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.cause.fmt(f)
    }
}

impl std::error::Error for BackendError {
    /// The cause's own cause: its words are this error's.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.source()
    }
}

/// " (N bytes free)", when known.
fn show_free(free: Option<u64>) -> String {
    free.map(|n| format!(" ({n} bytes free)")).unwrap_or_default()
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
