//! Recording a pool's tasks in the durable store, as the CLI records its runs, so
//! `shoal results` and `shoal stats` read both; and finding the result a task with
//! the same key returned before.
//!
//! The task life is recorded by the store's [`Recording`], as a CLI run's is; this is
//! what only a pool needs around it. Everything goes through the store's writer
//! thread (group commit): the driver never waits for the disk, except for the key
//! lookup at submit, a read.

use std::sync::{Arc, OnceLock};

use crate::store::{ControlWatcher, NewRun, NewTask, Recording, Store, StoreAddress};
use crate::task::{TaskId, TaskMeta};
use crate::Result;

/// Where and under what name a pool records its tasks.
#[derive(Debug, Clone)]
pub struct PoolStore {
    /// The store: a file (created if absent; its directory must exist), or what
    /// [`StoreAddress::parse`] reads.
    pub address: StoreAddress,
    /// How the run is listed (`shoal runs`), e.g. `["python", "Pool(2)"]`.
    pub command: Vec<String>,
    /// The front end may still refuse results after the pool has ended (it decodes them
    /// after it reads them): the run's record stays open until
    /// [`WorkerPool::close_record`](super::WorkerPool::close_record), or the pool is
    /// dropped.
    pub refusals: bool,
}

/// Why the store stopped taking writes, once it did: set by the writer thread, read by
/// the front end ([`WorkerPool::store_failure`](super::WorkerPool::store_failure)).
pub type StoreFailure = Arc<OnceLock<String>>;

/// The pool's run in the store: its [`Recording`] (the one sink that records every
/// kind of task) and the store it reads stored results and control requests from.
pub(super) struct Recorder {
    store: Store,
    recording: Recording,
}

impl Recorder {
    /// Starts watching the control requests of the pool's run; `None` (logged) if
    /// the store cannot be polled.
    pub fn watch_controls(&self) -> Option<ControlWatcher> {
        self.store
            .watch_controls(self.recording.run())
            .map_err(|e| tracing::warn!(error = %e, "control requests will not be taken"))
            .ok()
    }

    /// Opens the store and starts a run for the pool.
    pub fn open(
        config: &PoolStore,
        workers: usize,
        memory_mode: Option<&str>,
        failure: StoreFailure,
    ) -> Result<Recorder> {
        let store = Store::open(&config.address)?;
        let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
        let hold = store.create_run(&NewRun {
            command: config.command.clone(),
            options: serde_json::json!({ "workers": workers }),
            cwd,
            memory_limit_mode: memory_mode.map(str::to_owned),
        })?;
        let on_failure = Box::new(move |e: &crate::Error| {
            let _ = failure.set(e.to_string());
        });
        let recording = Recording::start(&store, hold, Box::new(|_| {}), on_failure)?;
        Ok(Recorder { store, recording })
    }

    /// Where the pool's task life is recorded.
    pub fn recording(&self) -> &Recording {
        &self.recording
    }

    /// The result of an earlier task with this key and label that succeeded, if the
    /// store has one.
    pub fn reusable(&self, key: &str, label: &str) -> Option<Vec<u8>> {
        self.store.stored_result(key, label).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot look up a stored result; the task runs");
            None
        })
    }

    /// Tasks submitted: each is listed by its label.
    pub fn added(&self, tasks: Vec<(TaskId, String, TaskMeta)>) {
        let tasks = tasks
            .into_iter()
            .map(|(task, label, meta)| NewTask {
                task,
                args: vec![label.clone()],
                command: label,
                meta,
            })
            .collect();
        self.recording.added(tasks);
    }

    /// Ends the run (`interrupted` if the pool was `cut_short`) and waits until
    /// everything is written.
    pub fn finish(self, cut_short: bool) {
        if let Err(e) = self.recording.finish(cut_short) {
            tracing::error!(error = %e, "the pool's store could not record everything");
        }
    }
}
