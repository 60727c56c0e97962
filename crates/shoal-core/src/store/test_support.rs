//! What the store's unit tests share: a store path in a temporary directory, a fresh
//! store of either backend (`Backend`, and `both_backends!`, which makes a test of a
//! function taking one run on each), a live run of queued tasks, and committing
//! events through a writer.

use std::path::PathBuf;
use std::sync::mpsc;

use crate::run::RunHold;
use crate::store::{NewRun, NewTask, Store, StoreAddress, StoreEvent};
use crate::task::TaskMeta;

/// The backends a shared test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// What keeps a fresh store alive: its temporary directory (SQLite).
pub(crate) type Guard = Option<tempfile::TempDir>;

/// The address of a fresh, empty store of `backend`: a file in a new temporary
/// directory, or a new database of the test process's PostgreSQL cluster.
pub(crate) fn fresh(backend: Backend) -> (Guard, StoreAddress) {
    match backend {
        Backend::Sqlite => {
            let (dir, path) = temp();
            (Some(dir), StoreAddress::Sqlite(path))
        }
        Backend::Postgres => {
            let url = crate::store::postgres::cluster::Cluster::shared().database();
            (None, StoreAddress::Postgres(url))
        }
    }
}

/// A fresh store of `backend`, open to write.
pub(crate) fn fresh_store(backend: Backend) -> (Guard, Store) {
    let (guard, address) = fresh(backend);
    (guard, Store::open(address).unwrap())
}

/// Makes a test on each backend of each function named, which takes the backend:
/// `mod name { fn sqlite(); fn postgres() }`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::store::test_support::Backend;
            #[test]
            fn sqlite() {
                super::$name(Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                super::$name(Backend::Postgres)
            }
        }
    )*};
}
pub(crate) use both_backends;

/// A store path in a fresh temporary directory (kept while the guard lives).
pub(crate) fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.db");
    (dir, path)
}

/// Tasks `job 1`, `job 2`, ... numbered as `tasks` says.
pub(crate) fn new_tasks(tasks: std::ops::RangeInclusive<u64>) -> Vec<NewTask> {
    tasks
        .map(|task| NewTask {
            task,
            args: vec![task.to_string()],
            command: format!("job {task}"),
            meta: TaskMeta::default(),
        })
        .collect()
}

/// A run of `tasks` queued tasks held alive, as by the process running it.
pub(crate) fn live_run(store: &Store, tasks: u64) -> (i64, RunHold) {
    let run = NewRun {
        command: vec!["job".into()],
        options: serde_json::json!({"jobs": 2}),
        cwd: "/tmp".into(),
        memory_limit_mode: None,
    };
    let hold = store.create_run_with(&run, &new_tasks(1..=tasks)).unwrap();
    (hold.run(), hold)
}

/// Attempt `attempt` of `task` started on `slot` (pid 1000 + task, at 100.0).
pub(crate) fn started(run: i64, task: u64, attempt: u32, slot: usize) -> StoreEvent {
    StoreEvent::AttemptStarted {
        run,
        task,
        attempt,
        slot,
        pid: 1000 + task as u32,
        started_at: 100.0,
        command: None,
    }
}

/// Commits events through a writer and waits until they are durable.
pub(crate) fn write(store: &Store, events: Vec<StoreEvent>) {
    let (tx, rx) = mpsc::channel();
    let writer = store.writer(Box::new(move |_| tx.send(()).unwrap())).unwrap();
    for event in events {
        writer.send(event);
    }
    writer.finish().unwrap();
    rx.recv().unwrap();
}
