//! Recording a pool's tasks in the durable store, as the CLI records its runs, so
//! `shoal results` and `shoal stats` read both; and finding the result a task with
//! the same key returned before.
//!
//! Everything goes through the store's writer thread (group commit): the driver
//! never waits for the disk, except for the key lookup at submit, a read.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::run::{Marker, RunHold};
use crate::store::{
    unix_now, ControlWatcher, NewRun, NewTask, RunStatus, Store, StoreAddress, StoreEvent, Writer,
};
use crate::task::{AttemptOutcome, Output, SlotId, TaskId, TaskMeta, TaskStatus};
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

/// The pool's run in the store.
pub(super) struct Recorder {
    store: Store,
    writer: Writer,
    run: i64,
    /// A task was cancelled: the run did not run all it was given.
    cancelled: Cell<bool>,
    /// Held while the pool lives: the run shows `died` if its process is killed.
    hold: RunHold,
}

impl Recorder {
    /// Starts watching the control requests of the pool's run; `None` (logged) if
    /// the store cannot be polled.
    pub fn watch_controls(&self) -> Option<ControlWatcher> {
        self.store
            .watch_controls(self.run)
            .map_err(|e| tracing::warn!(error = %e, "control requests will not be taken"))
            .ok()
    }

    /// A control request was applied: what came of it.
    pub fn control_applied(&self, request: i64, result: String) {
        self.writer.send(StoreEvent::ControlApplied { request, applied_at: unix_now(), result });
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
        let writer = store.writer_with_failure(Box::new(|_| {}), on_failure)?;
        Ok(Recorder { store, writer, run: hold.run(), cancelled: Cell::new(false), hold })
    }

    /// The marker of the pool's run, for its workers' environment.
    pub fn marker(&self) -> Marker {
        self.hold.marker()
    }

    /// The result of an earlier task with this key and label that succeeded, if the
    /// store has one.
    pub fn reusable(&self, key: &str, label: &str) -> Option<Vec<u8>> {
        self.store.stored_result(key, label).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot look up a stored result; the task runs");
            None
        })
    }

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
        self.writer.send(StoreEvent::TasksAdded { run: self.run, tasks });
    }

    pub fn reused(&self, task: TaskId, result: Vec<u8>) {
        self.writer.send(StoreEvent::TaskResult { run: self.run, task, result, reused: true });
    }

    pub fn started(&self, task: TaskId, attempt: u32, slot: SlotId, pid: u32) {
        self.writer.send(StoreEvent::AttemptStarted {
            run: self.run,
            task,
            attempt,
            slot,
            pid,
            started_at: unix_now(),
            command: None,
        });
    }

    /// An attempt ended; `result` is kept when it succeeded, `message` (a traceback,
    /// a reason) goes where a command's stderr would.
    #[allow(clippy::too_many_arguments)]
    pub fn ended(
        &self,
        task: TaskId,
        attempt: u32,
        ran: Duration,
        outcome: AttemptOutcome,
        final_status: Option<TaskStatus>,
        result: Option<Vec<u8>>,
        message: &str,
    ) {
        self.writer.send(StoreEvent::AttemptEnded {
            run: self.run,
            task,
            attempt,
            ended_at: unix_now(),
            duration: ran.as_secs_f64(),
            outcome,
            exit_code: None,
            signal: None,
            final_status,
            max_rss_kb: None,
            stdout: Output::default(),
            stderr: Output { bytes: message.as_bytes().to_vec(), truncated: false },
        });
        if let Some(result) = result {
            self.writer.send(StoreEvent::TaskResult { run: self.run, task, result, reused: false });
        }
    }

    pub fn cancelled(&self, task: TaskId) {
        self.cancelled.set(true);
        self.writer.send(StoreEvent::TaskCancelled { run: self.run, task });
    }

    /// The front end could not take the task's result: it failed after all.
    pub fn refused(&self, task: TaskId, reason: String) {
        self.writer.send(StoreEvent::ResultRefused { run: self.run, task, reason });
    }

    /// Ends the run and waits until everything is written. A run with a cancelled task
    /// is `interrupted`, as a stopped CLI run is: not all it was given ran.
    pub fn finish(self, interrupted: bool) {
        let interrupted = interrupted || self.cancelled.get();
        let status = if interrupted { RunStatus::Interrupted } else { RunStatus::Finished };
        self.writer.send(StoreEvent::RunEnded { run: self.run, ended_at: unix_now(), status });
        if let Err(e) = self.writer.finish() {
            tracing::error!(error = %e, "the pool's store could not record everything");
        }
    }
}
