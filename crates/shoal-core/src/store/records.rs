//! The plain data that goes into the store and comes out of it. Times are `f64`
//! unix seconds and durations `f64` seconds, as stored, so the CLI can print the
//! records as JSON unchanged.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

use crate::task::{SlotId, TaskId, TaskMeta, TaskStatus};

/// The current time as unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Counts of tasks per status; every status is present, zero or not, so JSON
/// consumers never meet a missing key.
pub type StatusCounts = BTreeMap<TaskStatus, u64>;

/// A new run, as [`Store::create_run`](super::Store::create_run) records it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The command words as typed.
    pub command: Vec<String>,
    /// The run's options, opaque to the store (a resume reads them back).
    pub options: serde_json::Value,
    /// The working directory the run started in.
    pub cwd: String,
    /// How memory limits are enforced: `"cgroup_v2"`, `"rlimit_as"` or none.
    pub memory_limit_mode: Option<String>,
}

/// A new task of a run; it enters the store as `queued` with no attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The task's number inside its run, from 1.
    pub task: TaskId,
    /// The input arguments of the task.
    pub args: Vec<String>,
    /// The command line as run, for display.
    pub command: String,
    /// What the scheduler knows of it.
    pub meta: TaskMeta,
}

/// The status of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Being run now: a live process holds its lock.
    Running,
    /// Every task reached an end.
    Finished,
    /// Stopped before every task reached an end (SIGINT/SIGTERM, a store that stopped
    /// taking writes); it can be resumed. Also shown for a run stored as `finished`
    /// that still has `queued` or `running` tasks.
    Interrupted,
    /// Stored as running, but not alive (no live process holds it): its shoal died
    /// (`kill -9`, a crash) without a chance to say so. It can be resumed. Never
    /// stored: the queries tell it from `Running` by the run's
    /// [`Liveness`](crate::run::Liveness).
    Died,
}

impl RunStatus {
    /// The name used in the store and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Died => "died",
        }
    }

    /// Parses a name given by [`RunStatus::as_str`].
    pub fn parse(name: &str) -> Option<RunStatus> {
        [RunStatus::Running, RunStatus::Finished, RunStatus::Interrupted, RunStatus::Died]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// A run as listed by [`Store::runs`](super::Store::runs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub id: i64,
    /// When it started.
    pub started_at: f64,
    /// When it ended; `None` while running or after a crash.
    pub ended_at: Option<f64>,
    /// Its status.
    pub status: RunStatus,
    /// The command words as typed.
    pub command: Vec<String>,
    /// How many tasks it has.
    pub total: u64,
    /// Its input is still being read: `total` counts the tasks read so far.
    pub input_open: bool,
    /// How many were not run to an end: queued, running or cancelled.
    pub unfinished: u64,
    /// How many tasks are in each status.
    pub counts: StatusCounts,
}

/// One run with everything stored about it but its tasks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: i64,
    /// When it started.
    pub started_at: f64,
    /// When it ended; `None` while running or after a crash.
    pub ended_at: Option<f64>,
    /// Its status.
    pub status: RunStatus,
    /// The command words as typed.
    pub command: Vec<String>,
    /// The options it was started with, as given to [`NewRun`].
    pub options: serde_json::Value,
    /// The working directory it started in.
    pub cwd: String,
    /// How memory limits were enforced, if at all.
    pub memory_limit_mode: Option<String>,
}

/// One task with every stored column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRecord {
    /// The run it belongs to.
    pub run: i64,
    /// Its number inside the run.
    pub task: TaskId,
    /// Its input arguments.
    pub args: Vec<String>,
    /// The command line as run.
    pub command: String,
    /// Higher runs first.
    pub priority: i32,
    /// The expected duration hint, seconds.
    pub cost: Option<f64>,
    /// The affinity key.
    pub key: Option<String>,
    /// The per-attempt time limit, seconds.
    pub timeout: Option<f64>,
    /// How many retries it was allowed.
    pub retries: u32,
    /// Its status.
    pub status: TaskStatus,
    /// How many attempts have started so far.
    pub attempts: u32,
    /// Exit code of the last ended attempt, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that killed the last ended attempt, if one did.
    pub signal: Option<i32>,
    /// Slot of the last attempt.
    pub slot: Option<SlotId>,
    /// Process id of the last attempt.
    pub pid: Option<u32>,
    /// When the last attempt started.
    pub started_at: Option<f64>,
    /// When the last attempt ended.
    pub ended_at: Option<f64>,
    /// How long the last attempt ran, seconds.
    pub duration: Option<f64>,
    /// Captured standard output of the last attempt (JSON: lossy UTF-8 text).
    #[serde(serialize_with = "lossy_text")]
    pub stdout: Vec<u8>,
    /// Captured standard error of the last attempt (JSON: lossy UTF-8 text).
    #[serde(serialize_with = "lossy_text")]
    pub stderr: Vec<u8>,
    /// Whether stdout was cut at the capture limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the capture limit.
    pub stderr_truncated: bool,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRecord {
    /// The run it belongs to.
    pub run: i64,
    /// The task it belongs to.
    pub task: TaskId,
    /// Its number among the task's attempts, from 1.
    pub attempt: u32,
    /// The slot it ran on.
    pub slot: SlotId,
    /// Its process id.
    pub pid: u32,
    /// When it started.
    pub started_at: f64,
    /// When it ended; `None` while it runs.
    pub ended_at: Option<f64>,
    /// How long it ran as measured by the engine; `None` if interrupted.
    pub duration: Option<f64>,
    /// A [`TaskStatus`] name, or `"interrupted"` for an attempt lost when shoal
    /// itself was killed; `None` while it runs.
    pub outcome: Option<String>,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Its peak resident memory, if measured.
    pub max_rss_kb: Option<u64>,
    /// Its captured standard output (JSON: lossy UTF-8 text); `None` when it was not
    /// kept: an attempt still running or cut by a kill of shoal, or one recorded by a
    /// shoal older than schema version 3 that was not its task's last.
    #[serde(serialize_with = "lossy_text_or_null")]
    pub stdout: Option<Vec<u8>>,
    /// Its captured standard error, likewise.
    #[serde(serialize_with = "lossy_text_or_null")]
    pub stderr: Option<Vec<u8>>,
    /// Whether stdout was cut at the capture limit.
    pub stdout_truncated: bool,
    /// Whether stderr was cut at the capture limit.
    pub stderr_truncated: bool,
}

/// Work done on one slot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlotStats {
    /// The slot.
    pub slot: SlotId,
    /// How many attempts ran on it.
    pub tasks: u64,
    /// Sum of its measured attempt durations, seconds.
    pub busy: f64,
}

/// Statistics of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStats {
    /// The run.
    pub run: i64,
    /// How many tasks it has.
    pub total: u64,
    /// How many ran to an end: succeeded or failed in some way.
    pub finished: u64,
    /// How many did not: queued, running or cancelled (a resume runs them).
    pub unfinished: u64,
    /// How many tasks are in each status.
    pub counts: StatusCounts,
    /// Succeeded over finished tasks (not queued, running or cancelled); `None` if none.
    pub success_rate: Option<f64>,
    /// Median of finished tasks' last-attempt durations (nearest rank).
    pub duration_p50: Option<f64>,
    /// 95th percentile of the same (nearest rank).
    pub duration_p95: Option<f64>,
    /// Longest of the same.
    pub duration_max: Option<f64>,
    /// Per-slot work, by slot.
    pub per_slot: Vec<SlotStats>,
}

impl RunStats {
    /// A run's statistics from its task counts, the durations of its tasks that ran
    /// to an end (ascending) and its per-slot work: what every backend reads.
    pub(crate) fn from_parts(
        run: i64,
        counts: StatusCounts,
        durations: &[f64],
        per_slot: Vec<SlotStats>,
    ) -> RunStats {
        let total = counts.values().sum();
        let unfinished = unfinished(&counts);
        let finished = total - unfinished;
        let success_rate =
            (finished > 0).then(|| counts[&TaskStatus::Succeeded] as f64 / finished as f64);
        RunStats {
            run,
            total,
            finished,
            unfinished,
            counts,
            success_rate,
            duration_p50: nearest_rank(durations, 50.0),
            duration_p95: nearest_rank(durations, 95.0),
            duration_max: durations.last().copied(),
            per_slot,
        }
    }
}

/// Tasks not run to an end: `queued`, `running`, or `cancelled` (stopped: a resume
/// runs them again). They count neither as succeeded nor as failed.
pub(crate) fn unfinished(counts: &StatusCounts) -> u64 {
    open_tasks(counts) + counts[&TaskStatus::Cancelled]
}

/// Tasks still `queued` or `running`: none remain in a run that finished.
pub(crate) fn open_tasks(counts: &StatusCounts) -> u64 {
    counts[&TaskStatus::Queued] + counts[&TaskStatus::Running]
}

/// The nearest-rank percentile `p` of ascending `sorted` values: the smallest value
/// with at least `p` percent of the values at or below it.
pub(crate) fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A stored status as it stands, by the rule of every backend: `running` that is not
/// alive (no live process holds it) is [`RunStatus::Died`], its status read again
/// (`reread`) once seen dead, since a run that was just ending committed its end
/// before it let its hold go; a run stored as `finished` with tasks still `queued` or
/// `running` (`open`) did not finish: it shows as [`RunStatus::Interrupted`].
pub(crate) fn live_status(
    stored: RunStatus,
    open: u64,
    alive: impl FnOnce() -> bool,
    reread: impl FnOnce() -> Option<RunStatus>,
) -> RunStatus {
    let status = if stored != RunStatus::Running || alive() {
        stored
    } else {
        match reread() {
            Some(RunStatus::Running) | None => RunStatus::Died,
            Some(status) => status,
        }
    };
    match status {
        RunStatus::Finished if open > 0 => RunStatus::Interrupted,
        status => status,
    }
}

fn lossy_text<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

fn lossy_text_or_null<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => lossy_text(bytes, s),
        None => s.serialize_none(),
    }
}

/// Every status with a zero count, to be filled in.
pub(super) fn zero_counts() -> StatusCounts {
    TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect()
}
