//! What the SQLite backend's unit tests share: a store path in a temporary directory,
//! a live run of queued tasks, and committing events through a writer.

use std::path::PathBuf;
use std::sync::mpsc;

use crate::run::RunHold;
use crate::store::{NewRun, NewTask, Store, StoreEvent};
use crate::task::TaskMeta;

/// A store path in a fresh temporary directory (kept while the guard lives).
pub(super) fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shoal.db");
    (dir, path)
}

/// Tasks `job 1`, `job 2`, ... numbered as `tasks` says.
pub(super) fn new_tasks(tasks: std::ops::RangeInclusive<u64>) -> Vec<NewTask> {
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
pub(super) fn live_run(store: &Store, tasks: u64) -> (i64, RunHold) {
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
pub(super) fn started(run: i64, task: u64, attempt: u32, slot: usize) -> StoreEvent {
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
pub(super) fn write(store: &Store, events: Vec<StoreEvent>) {
    let (tx, rx) = mpsc::channel();
    let writer = store.writer(Box::new(move |_| tx.send(()).unwrap())).unwrap();
    for event in events {
        writer.send(event);
    }
    writer.finish().unwrap();
    rx.recv().unwrap();
}
