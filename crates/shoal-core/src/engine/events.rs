//! What the engine is given ([`EngineConfig`], a [`Frontend`]) and what it reports.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::process::{CommandLine, Limits, MemoryLimit};
use crate::run::Marker;
use crate::scheduler::SchedulerConfig;
use crate::store::ControlRequest;
use crate::tap::Tap;
use crate::task::{AttemptOutcome, Output, SlotId, TaskId, TaskStatus};

/// How the engine runs tasks.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub scheduler: SchedulerConfig,
    /// Between SIGTERM and SIGKILL when a task is stopped.
    pub kill_grace: Duration,
    /// Bytes kept per output stream of an attempt; the rest is counted as truncated.
    pub output_cap: usize,
    /// Limits of every task's process (`cpu` is set per slot when `pin` is on).
    pub limits: Limits,
    /// Memory limit per task, applied per slot.
    pub memory: Option<Arc<MemoryLimit>>,
    /// Pin slot n to the n-th CPU this process may use (cycling when slots outnumber them).
    pub pin: bool,
    /// Hand complete output lines to the front end as they arrive.
    pub line_buffer: bool,
    /// The run's marker, put in every task's environment (with `SHOAL_TASK` and
    /// `SHOAL_SLOT`): a killed task's processes that left its group are found by it.
    /// Without one, they cannot be told from another run's and are left alone.
    pub marker: Option<Marker>,
    /// Where observers follow each task's steps as they happen (see [`crate::tap`]).
    pub tap: Option<Tap>,
}

/// Asked to stop the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stop {
    #[default]
    Run,
    /// Start nothing more; running tasks finish (GNU parallel's `--halt soon`).
    Drain,
    /// Start nothing more; SIGTERM running tasks, SIGKILL them after the grace.
    Graceful,
    /// SIGKILL running tasks now.
    Immediate,
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// An attempt has started.
#[derive(Debug, Clone)]
pub struct Started {
    pub task: TaskId,
    pub attempt: u32,
    pub slot: SlotId,
    pub pid: u32,
    pub at: SystemTime,
}

/// An attempt has ended.
#[derive(Debug, Clone)]
pub struct Ended {
    pub task: TaskId,
    pub attempt: u32,
    pub slot: SlotId,
    pub outcome: AttemptOutcome,
    /// The process's exit code or killing signal as the kernel reported it, whatever
    /// the outcome made of it (`None` for both when it could not be started or reaped).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `Some` when the task is finished, `None` when it will be retried.
    pub final_status: Option<TaskStatus>,
    /// When it will be retried: the wait before its next attempt.
    pub retry_in: Option<Duration>,
    /// The most attempts the task may have (its first, then its retries).
    pub max_attempts: u32,
    pub at: SystemTime,
    pub duration: Duration,
    pub max_rss_kb: Option<u64>,
    pub stdout: Output,
    pub stderr: Output,
}

/// The engine's view of a front end.
pub trait Frontend {
    /// What the front end keeps with each task ([`Submission::payload`]): its inputs.
    ///
    /// [`Submission::payload`]: super::Submission::payload
    type Payload;
    /// The command line of an attempt of `task` on `slot`; [`Frontend::started`] (or
    /// the attempt's [`Frontend::ended`], when it could not start) follows at once.
    fn command(&mut self, task: TaskId, slot: SlotId, payload: &Self::Payload) -> CommandLine;
    /// The number the task's process sees as `SHOAL_TASK`: the engine's id unless the
    /// front end numbers its tasks otherwise (an agent runs tasks of many runs).
    fn number(&self, task: TaskId, _payload: &Self::Payload) -> TaskId {
        task
    }
    /// An attempt started.
    fn started(&mut self, event: Started);
    /// An attempt ended (its whole captured output is in the event).
    fn ended(&mut self, event: Ended);
    /// A complete line of output (only with `line_buffer`).
    fn line(&mut self, _task: TaskId, _stream: Stream, _line: &[u8]) {}
    /// A task that never started was cancelled by a control request: it is final,
    /// `cancelled`, with no attempt (only with `run_steered`).
    fn cancelled(&mut self, _task: TaskId) {}
    /// A control request was applied; `result` says what became of it (only with
    /// `run_steered`).
    fn control(&mut self, _request: &ControlRequest, _result: &str) {}
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub succeeded: u64,
    /// Finished with any failure status, cancelled ones excluded.
    pub failed: u64,
    pub cancelled: u64,
    /// Taken from the source but never finished because the run was stopped (what
    /// the source still held after the stop is not counted).
    pub unfinished: u64,
}
