//! The task model shared by the scheduler, the engine and the store: what a task
//! asks for ([`TaskMeta`]), how one attempt ended ([`AttemptOutcome`]) and the
//! status a task is in ([`TaskStatus`]). Plain data, no behaviour beyond naming.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A task's number inside its run, starting at 1 (GNU parallel's `{#}`).
pub type TaskId = u64;

/// A slot of the pool: a place where one task runs at a time, numbered from 1 (`{%}`).
pub type SlotId = usize;

/// What the scheduler needs to know about a task; the payload (a command, a
/// pickled call) stays with the front end.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMeta {
    /// Higher runs first.
    pub priority: i32,
    /// Expected duration; within a priority, longer tasks start first.
    pub cost: Option<Duration>,
    /// Affinity key: a slot prefers the tasks of the key it ran last.
    pub key: Option<String>,
    /// Per-attempt time limit.
    pub timeout: Option<Duration>,
    /// How many more attempts a failed task gets.
    pub retries: u32,
}

/// Output captured from one stream of an attempt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// What was kept, from the start.
    pub bytes: Vec<u8>,
    /// More was written than was kept.
    pub truncated: bool,
}

/// Why a running attempt was stopped by the engine rather than ending by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KillReason {
    /// It ran past its timeout.
    Timeout,
    /// The run was interrupted (SIGINT/SIGTERM).
    Cancel,
}

/// How one attempt of a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Exit status 0.
    Succeeded,
    /// A non-zero exit status.
    Failed { exit_code: i32 },
    /// Killed by a signal it did not ask for (SIGKILL, SIGSEGV, the OOM killer).
    Crashed { signal: i32 },
    /// Stopped by the engine after its timeout.
    TimedOut,
    /// Went past its memory limit.
    MemoryExceeded,
    /// Stopped because the run was interrupted.
    Cancelled,
    /// A long-lived worker's function raised: that is the task's answer, so it is
    /// final and never retried (the worker itself is fine).
    Raised,
}

impl AttemptOutcome {
    /// The status a task takes when this attempt is its last.
    pub fn status(self) -> TaskStatus {
        match self {
            AttemptOutcome::Succeeded => TaskStatus::Succeeded,
            AttemptOutcome::Failed { .. } => TaskStatus::Failed,
            AttemptOutcome::Crashed { .. } => TaskStatus::Crashed,
            AttemptOutcome::TimedOut => TaskStatus::TimedOut,
            AttemptOutcome::MemoryExceeded => TaskStatus::MemoryExceeded,
            AttemptOutcome::Cancelled => TaskStatus::Cancelled,
            AttemptOutcome::Raised => TaskStatus::Failed,
        }
    }

    /// Whether another attempt may change the result (a cancelled run is not
    /// retried, nor a function that raised).
    pub fn is_retryable(self) -> bool {
        !matches!(
            self,
            AttemptOutcome::Succeeded | AttemptOutcome::Cancelled | AttemptOutcome::Raised
        )
    }
}

/// The status of a task, as stored and queried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for a slot (or for its next attempt).
    Queued,
    /// An attempt is running.
    Running,
    /// Its last attempt succeeded.
    Succeeded,
    /// It exited non-zero (or could not start), or its function raised.
    Failed,
    /// Its last attempt ran past its timeout.
    TimedOut,
    /// Its last attempt was killed by a signal it did not ask for, or its worker died
    /// or hung.
    Crashed,
    /// Its last attempt went past its memory limit.
    MemoryExceeded,
    /// It was stopped, or never started, because the run or the task was cancelled.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in the order reports list them.
    pub const ALL: [TaskStatus; 8] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Crashed,
        TaskStatus::MemoryExceeded,
        TaskStatus::Cancelled,
    ];

    /// The name used in the store, on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::TimedOut => "timed_out",
            TaskStatus::Crashed => "crashed",
            TaskStatus::MemoryExceeded => "memory_exceeded",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a name given by [`TaskStatus::as_str`].
    pub fn parse(name: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the task has ended with a failure of some kind. A cancelled task did not
    /// fail: it was stopped (and a resume runs it).
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            TaskStatus::Queued
                | TaskStatus::Running
                | TaskStatus::Succeeded
                | TaskStatus::Cancelled
        )
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
