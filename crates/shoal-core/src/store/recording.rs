//! A run's recording: the sink of the engine's task stream that makes it durable,
//! written once for every kind of task (a `shoal run` command, a call on a pool's
//! worker). Its steps are the tap's ([`crate::tap::TaskStep`]: an attempt started,
//! an attempt ended, a task ended unstarted) with what only the store keeps (the
//! pid, the command as run, the output, the result); it turns them into
//! [`StoreEvent`]s here and nowhere else, and decides the run's final status.
//!
//! It owns the run's [`Writer`] (so nothing waits for the disk: every step only
//! queues) and its [`RunHold`] (the run stays alive until the recording ends). The
//! front end keeps what differs: what the writer's `on_commit` does with durable
//! events (printing, progress), how much output is kept, the results' bytes.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::handle::Store;
use super::records::{unix_now, NewTask, RunStatus};
use super::writer::{OnCommit, OnFailure, StoreEvent, Writer};
use crate::error::Result;
use crate::run::{Marker, RunHold};
use crate::task::{AttemptOutcome, Output, SlotId, TaskId, TaskStatus};

/// The end of an attempt, as the store keeps it.
#[derive(Debug, Clone)]
pub struct AttemptEnd {
    /// The task.
    pub task: TaskId,
    /// Which attempt, from 1.
    pub attempt: u32,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The task's final status if this was its last attempt; `None`: it is retried.
    pub final_status: Option<TaskStatus>,
    /// How long it ran.
    pub duration: Duration,
    /// When it ended.
    pub at: SystemTime,
    /// The exit code of its process as the kernel reported it, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed its process, if one did.
    pub signal: Option<i32>,
    /// Its peak resident memory, if measured.
    pub max_rss_kb: Option<u64>,
    /// What it printed, as much as is kept.
    pub stdout: Output,
    /// Its error output (a call's traceback or reason), as much as is kept.
    pub stderr: Output,
    /// What it returned (a call's encoded result), kept with the task.
    pub result: Option<Vec<u8>>,
}

/// One run being recorded; see the module doc.
#[derive(Debug)]
pub struct Recording {
    run: i64,
    writer: Writer,
    /// A task ended `cancelled`: the run did not run all it was given.
    cancelled: Cell<bool>,
    /// Held until the recording ends: the run shows `died` if its process is killed.
    hold: RunHold,
}

impl Recording {
    /// Starts recording the run `hold` holds, through a writer thread of `store`;
    /// `on_commit` and `on_failure` are the writer's ([`Store::writer_with_failure`]).
    pub fn start(
        store: &Store,
        hold: RunHold,
        on_commit: OnCommit,
        on_failure: OnFailure,
    ) -> Result<Recording> {
        let writer = store.writer_with_failure(on_commit, on_failure)?;
        Ok(Recording { run: hold.run(), writer, cancelled: Cell::new(false), hold })
    }

    /// The run's id.
    pub fn run(&self) -> i64 {
        self.run
    }

    /// The run's marker, for the environment of every process it starts.
    pub fn marker(&self) -> Marker {
        self.hold.marker()
    }

    /// Tasks joined the run: they are `queued`.
    pub fn added(&self, tasks: Vec<NewTask>) {
        self.writer.send(StoreEvent::TasksAdded { run: self.run, tasks });
    }

    /// The run's input has ended: its total is known.
    pub fn input_ended(&self) {
        self.writer.send(StoreEvent::InputEnded { run: self.run });
    }

    /// Attempt `attempt` of `task` started on `slot` as process `pid`; `command` is the
    /// command as run when it differs from the task's stored one.
    pub fn started(
        &self,
        task: TaskId,
        attempt: u32,
        slot: SlotId,
        pid: u32,
        at: SystemTime,
        command: Option<String>,
    ) {
        self.writer.send(StoreEvent::AttemptStarted {
            run: self.run,
            task,
            attempt,
            slot,
            pid,
            started_at: unix(at),
            command,
        });
    }

    /// An attempt ended; its result, if any, is kept with its task.
    pub fn ended(&self, end: AttemptEnd) {
        let AttemptEnd { task, attempt, final_status, result, .. } = end;
        if final_status == Some(TaskStatus::Cancelled) {
            self.cancelled.set(true);
        }
        self.writer.send(StoreEvent::AttemptEnded {
            run: self.run,
            task,
            attempt,
            ended_at: unix(end.at),
            duration: end.duration.as_secs_f64(),
            outcome: end.outcome,
            exit_code: end.exit_code,
            signal: end.signal,
            final_status,
            max_rss_kb: end.max_rss_kb,
            stdout: end.stdout,
            stderr: end.stderr,
        });
        if let Some(result) = result {
            self.writer.send(StoreEvent::TaskResult { run: self.run, task, result, reused: false });
        }
    }

    /// A task that never started was cancelled.
    pub fn cancelled(&self, task: TaskId) {
        self.cancelled.set(true);
        self.writer.send(StoreEvent::TaskCancelled { run: self.run, task });
    }

    /// A task ended without running, `succeeded` with the result an earlier task with
    /// the same key returned.
    pub fn reused(&self, task: TaskId, result: Vec<u8>) {
        self.writer.send(StoreEvent::TaskResult { run: self.run, task, result, reused: true });
    }

    /// The front end could not take the task's result: it failed after all.
    pub fn refused(&self, task: TaskId, reason: String) {
        self.writer.send(StoreEvent::ResultRefused { run: self.run, task, reason });
    }

    /// A control request was applied; `result` says what came of it.
    pub fn control_applied(&self, request: i64, result: String) {
        self.writer.send(StoreEvent::ControlApplied { request, applied_at: unix_now(), result });
    }

    /// Ends the run, waits until everything is written, and lets the run go; returns
    /// the first write error. The run is `interrupted` if it was `stopped` or a task
    /// of it was cancelled (not all it was given ran: a resume runs the rest), and
    /// `finished` otherwise.
    pub fn finish(self, stopped: bool) -> Result<()> {
        let interrupted = stopped || self.cancelled.get();
        let status = if interrupted { RunStatus::Interrupted } else { RunStatus::Finished };
        self.writer.send(StoreEvent::RunEnded { run: self.run, ended_at: unix_now(), status });
        // The hold is let go after this, once everything is written.
        self.writer.finish()
    }
}

fn unix(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
#[path = "recording_tests.rs"]
mod tests;
