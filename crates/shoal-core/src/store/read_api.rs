//! The reads an HTTP front needs beyond the reports': a filtered page of a run's
//! tasks, one task and its attempts, and the store-wide counts behind Prometheus
//! metrics. Each backend answers them ([`ReadApi`] is a supertrait of
//! [`Backend`](super::Backend)) in a file of its own (`sqlite/read_api.rs`,
//! `postgres/read_api.rs`), with the same answers; the shared tests check both.
//!
//! Reads only, and each costs what it returns: a page is read by the index of
//! `(run_id, task)`, keyset (after a task number) or by offset, never the whole run.

use std::collections::BTreeMap;

use serde::Serialize;

use super::records::{AttemptRecord, SlotStats, StatusCounts, TaskRecord};
use crate::error::Result;
use crate::task::{SlotId, TaskId, TaskStatus};

/// Which tasks of a run a page holds. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// Tasks in any of these statuses; empty: any status.
    pub statuses: Vec<TaskStatus>,
    /// Text found in the task's arguments or command line, ignoring ASCII case.
    pub text: Option<String>,
    /// Tasks whose last attempt ran on this slot.
    pub slot: Option<SlotId>,
    /// Tasks whose last ended attempt exited with this code.
    pub exit_code: Option<i32>,
}

/// Where a page of tasks starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStart {
    /// After this task number (keyset: each page costs the same however far it is).
    After(TaskId),
    /// After skipping this many matching tasks (costs what it skips).
    Offset(u64),
}

/// What a run's page shows beyond its record, read by the run's indexes (none of its
/// tasks' durations, unlike [`Store::stats`](super::Store::stats)).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOverview {
    /// Tasks in each status, every status present.
    pub counts: StatusCounts,
    /// Attempts and busy seconds per slot.
    pub per_slot: Vec<SlotStats>,
    /// Its input is still being read: its task count is not final.
    pub input_open: bool,
}

/// Store-wide counts for metrics: every run's tasks and attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreMetrics {
    /// Tasks in each status, every status present.
    pub tasks: StatusCounts,
    /// Attempts by outcome (a [`TaskStatus`] name, or `interrupted`); those still
    /// running are under `running`.
    pub attempts: BTreeMap<String, u64>,
    /// The last-attempt durations of tasks that ran to an end.
    pub durations: Histogram,
}

/// A cumulative histogram, as Prometheus keeps one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// The upper bounds, ascending, seconds.
    pub bounds: Vec<f64>,
    /// For each bound, how many values are at or below it.
    pub cumulative: Vec<u64>,
    /// How many values in all.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

/// The reads of an HTTP front, answered by every backend.
pub trait ReadApi {
    /// The tasks of run `run` that match `filter`, by task number, from `start`, at
    /// most `limit`. [`Error::NoSuchRun`](crate::Error::NoSuchRun) if the store does
    /// not hold the run.
    fn task_page(
        &self,
        run: i64,
        filter: &TaskFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<Vec<TaskRecord>>;

    /// A run's counts, per-slot work and whether its input is still read;
    /// [`Error::NoSuchRun`](crate::Error::NoSuchRun) without the run.
    fn overview(&self, run: i64) -> Result<RunOverview>;

    /// One task; [`Error::NoSuchTask`](crate::Error::NoSuchTask) if the run does not
    /// have it, [`Error::NoSuchRun`](crate::Error::NoSuchRun) without the run.
    fn task(&self, run: i64, task: TaskId) -> Result<TaskRecord>;

    /// Every attempt of one task, by attempt number, with its output.
    fn task_attempts(&self, run: i64, task: TaskId) -> Result<Vec<AttemptRecord>>;

    /// Store-wide counts, the durations bucketed by `bounds` (ascending, finite).
    fn metrics(&self, bounds: &[f64]) -> Result<StoreMetrics>;
}

/// The SQL condition on `status` for `statuses` (names from the enum, never from
/// the caller's text), or none when empty.
pub(crate) fn status_condition(statuses: &[TaskStatus]) -> String {
    if statuses.is_empty() {
        return String::new();
    }
    let names: Vec<String> = statuses.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!(" AND status IN ({})", names.join(", "))
}

/// The SQL sums that bucket `duration` by `bounds` (finite numbers, printed by Rust).
pub(crate) fn bucket_sums(bounds: &[f64]) -> String {
    bounds.iter().map(|b| format!(", sum(CASE WHEN duration <= {b:?} THEN 1 ELSE 0 END)")).collect()
}

/// The offset and the lowest task number a page starts from.
pub(crate) fn page_bounds(start: PageStart) -> (i64, i64) {
    match start {
        PageStart::After(task) => (0, i64::try_from(task).unwrap_or(i64::MAX)),
        PageStart::Offset(n) => (i64::try_from(n).unwrap_or(i64::MAX), 0),
    }
}
