//! The writer thread: the hot path of a running pool, with group commit.
//!
//! # Protocol
//!
//! - The channel carries [`StoreEvent`]s from the engine to one thread that owns its
//!   own [`Journal`] (the backend's; SQLite: a connection of its own).
//!   [`Writer::send`] only queues: it never waits for I/O.
//! - The thread blocks for the first event, waits [`LINGER`] for others to join,
//!   then drains what is queued (at most [`MAX_BATCH`] events), applies the whole
//!   batch in ONE transaction and commits ([`Journal::commit`]). Only THEN does it call `on_commit(&batch)`, in send order, so the
//!   caller prints or acknowledges only results that are durable. Under load batches
//!   grow by themselves: one commit (one WAL append) serves many events.
//! - If the batch transaction fails because of an event (an unknown task), it is
//!   rolled back and the events are applied one per transaction, so one bad event
//!   does not take its neighbours down; `on_commit` then gets the events that did
//!   commit. A failure never panics the thread: it is logged with `tracing::error!`,
//!   the first one is kept, and the thread keeps draining so senders never block.
//! - If it fails because the store takes no more writes (a full disk: the kind of
//!   the failure says so), the writer stops writing and holds every event from there on: see [`super::outage`] for
//!   that protocol, `on_failure` and the salvage at the end.
//! - [`Writer::finish`] closes the channel, waits until every queued event has been
//!   written and acknowledged, and returns the first write error. Dropping a
//!   `Writer` does the same but can only log the error.
//!
//! # What survives a kill
//!
//! Every event whose `on_commit` ran is committed. SQLite: it is in the WAL, and with
//! `synchronous=NORMAL` in WAL mode a commit survives a crash or `kill -9` of the
//! process; only a power loss (or OS crash) can drop the last commits. Events still queued when the process
//! dies are lost; a resume finds their tasks `running` with open attempts and
//! repairs them ([`Store::prepare_resume`]).

use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use super::backend::Journal;
use super::handle::Store;
use super::outage::{store_failed, Outage};
use super::records::{NewTask, RunStatus};
use crate::error::{Error, Result};
use crate::task::{AttemptOutcome, Output, SlotId, TaskId, TaskStatus};

/// How long the thread waits after the first event of a batch for others to join.
/// Bounds how late a result is shown; 100 commits a second at most.
pub const LINGER: Duration = Duration::from_millis(10);

/// The most events one transaction takes; bounds the latency of the first one.
pub const MAX_BATCH: usize = 1000;

/// Called by the writer thread with every batch it has committed.
pub type OnCommit = Box<dyn FnMut(&[StoreEvent]) + Send>;

/// Called by the writer thread, once, when the store stops taking writes.
pub type OnFailure = Box<dyn FnOnce(&Error) + Send>;

/// One change the engine asks the writer thread to make durable.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// An attempt's process was started: adds the attempt, the task is `running`.
    AttemptStarted {
        /// The run.
        run: i64,
        /// The task.
        task: TaskId,
        /// Its number among the task's attempts, from 1.
        attempt: u32,
        /// Where it runs.
        slot: SlotId,
        /// Its process id.
        pid: u32,
        /// When it started, unix seconds.
        started_at: f64,
        /// The command as run, when it differs from the one stored with the task
        /// (it uses the slot number).
        command: Option<String>,
    },
    /// An attempt ended: closes the attempt and records its result on the task.
    AttemptEnded {
        /// The run.
        run: i64,
        /// The task.
        task: TaskId,
        /// Which attempt.
        attempt: u32,
        /// When it ended, unix seconds.
        ended_at: f64,
        /// How long it ran, seconds.
        duration: f64,
        /// How it ended.
        outcome: AttemptOutcome,
        /// The exit code of its process, as the kernel reported it (a task that
        /// timed out may still have exited by itself after its SIGTERM).
        exit_code: Option<i32>,
        /// The signal that killed its process (SIGTERM or SIGKILL for a task that
        /// timed out). With neither, the outcome's own code or signal is recorded.
        signal: Option<i32>,
        /// The task's final status if this was its last attempt; `None` sends it
        /// back to `queued` for a retry.
        final_status: Option<TaskStatus>,
        /// Its peak resident memory, if measured.
        max_rss_kb: Option<u64>,
        /// Its captured standard output.
        stdout: Output,
        /// Its captured standard error.
        stderr: Output,
    },
    /// Tasks submitted to a running pool: they enter as `queued`.
    TasksAdded {
        /// The run.
        run: i64,
        /// The tasks.
        tasks: Vec<NewTask>,
    },
    /// A task's result (the return value of a call, as its front end encoded it).
    /// With `reused` the task did not run: the result is the one a task with the same
    /// key returned before, and the task is `succeeded` with no attempt.
    TaskResult {
        /// The run.
        run: i64,
        /// The task.
        task: TaskId,
        /// The encoded result.
        result: Vec<u8>,
        /// Taken from an earlier task with the same key.
        reused: bool,
    },
    /// A task whose result its front end could not take (a Python result that fails
    /// to unpickle in the caller): it is `failed` after all, its result dropped (never
    /// reused by key) and `reason` kept where its error output goes.
    ResultRefused {
        /// The run.
        run: i64,
        /// The task.
        task: TaskId,
        /// Why the front end could not take it.
        reason: String,
    },
    /// A task that never started was cancelled.
    TaskCancelled {
        /// The run.
        run: i64,
        /// The task.
        task: TaskId,
    },
    /// The run applied a control request (`result`: what it made of it).
    ControlApplied {
        /// The request's id.
        request: i64,
        /// When, unix seconds.
        applied_at: f64,
        /// What the run made of it.
        result: String,
    },
    /// A run made with [`Store::create_streaming_run`] has read all its input: its
    /// total is known.
    InputEnded {
        /// The run.
        run: i64,
    },
    /// The run ended (its input too, if it was still open).
    RunEnded {
        /// The run.
        run: i64,
        /// When, unix seconds.
        ended_at: f64,
        /// How it ended.
        status: RunStatus,
    },
}

/// The handle of the writer thread; see the module doc for the protocol.
#[derive(Debug)]
pub struct Writer {
    tx: Option<Sender<StoreEvent>>,
    thread: Option<JoinHandle<Option<Error>>>,
}

impl Store {
    /// Starts the writer thread with its own journal of this store. `on_commit`
    /// runs on that thread after each commit, with the events just made durable. If
    /// the store stops taking writes, the thread logs it once.
    pub fn writer(&self, on_commit: OnCommit) -> Result<Writer> {
        let on_failure: OnFailure = Box::new(|e| {
            tracing::error!(error = %e, "the store takes no more writes; events are held");
        });
        self.writer_with_failure(on_commit, on_failure)
    }

    /// [`Store::writer`], with `on_failure` called on the writer thread, once, when the
    /// store stops taking writes (so the caller can stop its run).
    pub fn writer_with_failure(
        &self,
        on_commit: OnCommit,
        on_failure: OnFailure,
    ) -> Result<Writer> {
        Writer::start(self.journal()?, on_commit, on_failure)
    }
}

impl Writer {
    /// Starts the writer thread on `journal`.
    pub(super) fn start(
        journal: Box<dyn Journal>,
        on_commit: OnCommit,
        on_failure: OnFailure,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("shoal-store-writer".into())
            .spawn(move || {
                // Batching lets the writer lag without cost; the tasks and the driver
                // should get the cores first. (Niceness is per thread on Linux.)
                // SAFETY: a plain system call on this thread.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
                run(journal, rx, on_commit, on_failure)
            })
            .map_err(|source| Error::Os { operation: "start the store writer thread", source })?;
        Ok(Writer { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues an event; never waits for I/O. A failure to write it is reported by
    /// [`Writer::finish`].
    pub fn send(&self, ev: StoreEvent) {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(ev).is_ok());
        if !sent {
            // Only if on_commit panicked and took the thread with it.
            tracing::error!("the store writer thread is gone; an event was dropped");
        }
    }

    /// Closes the channel, waits until every queued event is written and
    /// acknowledged, and returns the first write error if there was one.
    ///
    /// A panic of `on_commit` is resumed here, on the caller's thread.
    pub fn finish(mut self) -> Result<()> {
        match self.close() {
            None => Ok(()),
            Some(Ok(None)) => Ok(()),
            Some(Ok(Some(e))) => Err(e),
            Some(Err(panic)) => std::panic::resume_unwind(panic),
        }
    }

    fn close(&mut self) -> Option<std::thread::Result<Option<Error>>> {
        drop(self.tx.take());
        let thread = self.thread.take()?;
        thread.thread().unpark();
        Some(thread.join())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Waiting here keeps queued events from being lost when the caller forgets
        // `finish`; errors can only be logged (they already were, by the thread).
        let _ = self.close();
    }
}

/// The thread's loop: batch, commit, acknowledge, until the channel closes; then the
/// salvage, if the store stopped taking writes.
fn run(
    mut journal: Box<dyn Journal>,
    rx: Receiver<StoreEvent>,
    mut on_commit: OnCommit,
    on_failure: OnFailure,
) -> Option<Error> {
    let mut first_error = None;
    let mut on_failure = Some(on_failure);
    let mut outage: Option<Outage> = None;
    while let Ok(ev) = rx.recv() {
        // Let a group gather: without this pause a writer faster than its producer
        // would commit every event alone, paying a commit (and a wake-up) per event.
        // Senders never wake it; closing does, so the last batch is not kept waiting.
        std::thread::park_timeout(LINGER);
        let mut batch = vec![ev];
        batch.extend(rx.try_iter().take(MAX_BATCH - 1));
        if let Some(outage) = &mut outage {
            outage.hold(batch);
            continue;
        }
        let failed = match journal.commit(&batch) {
            Ok(()) => {
                on_commit(&batch);
                None
            }
            Err(e) if store_failed(&e) => Some((e, batch)),
            Err(e) => {
                tracing::warn!(error = %e, "group commit failed; retrying its events one by one");
                one_by_one(&mut *journal, batch, &mut on_commit, &mut first_error)
            }
        };
        if let Some((e, unwritten)) = failed {
            // Room for the salvage, and the front end told, before anything else.
            journal.release_reserve();
            if let Some(on_failure) = on_failure.take() {
                on_failure(&e);
            }
            first_error.get_or_insert(e);
            let mut held = Outage::default();
            held.hold(unwritten);
            outage = Some(held);
        }
    }
    if let Some(outage) = outage {
        outage.salvage(&mut *journal, &mut on_commit);
    }
    first_error
}

/// Applies a failed batch one event per transaction, so the good events of a batch
/// with a bad one still land. Returns the store's failure and the events not yet
/// written if the store stops taking writes meanwhile.
fn one_by_one(
    journal: &mut dyn Journal,
    batch: Vec<StoreEvent>,
    on_commit: &mut OnCommit,
    first_error: &mut Option<Error>,
) -> Option<(Error, Vec<StoreEvent>)> {
    let mut done = Vec::with_capacity(batch.len());
    let mut failed = None;
    let mut events = batch.into_iter();
    while let Some(ev) = events.next() {
        match journal.commit(std::slice::from_ref(&ev)) {
            Ok(()) => done.push(ev),
            Err(e) if store_failed(&e) => {
                failed = Some((e, std::iter::once(ev).chain(events).collect()));
                break;
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed");
                first_error.get_or_insert(e);
            }
        }
    }
    if !done.is_empty() {
        on_commit(&done);
    }
    failed
}
