//! The read side of the API: runs, one run with its progress, a page of its tasks,
//! one task with every attempt, statistics and failures grouped by signature. Each
//! answer is read from the store when asked; nothing is cached.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use shoal_core::store::{
    last_line, unix_now, ControlAction, PageStart, RunOverview, RunRecord, RunStatus, Store,
    TaskFilter, TaskRecord,
};
use shoal_core::task::TaskStatus;

use crate::error::ApiError;
use crate::params::Params;
use crate::AppState;

/// The largest page of runs or tasks.
pub const MAX_PAGE: usize = 1000;

/// The default page of runs or tasks.
const DEFAULT_PAGE: usize = 100;

/// How many failed tasks the failure groups read at most.
const FAILURES_SCANNED: usize = 100_000;

/// How many task numbers a failure group lists.
const GROUP_TASKS: usize = 20;

/// Runs `read` on the store, on tokio's blocking pool (store calls are synchronous).
pub async fn read<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || read(&store)).await.map_err(|err| ApiError {
        status: axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("the store's call failed: {err}"),
    })?
}

/// `GET /api/v1/runs?status=&limit=&offset=`: newest first.
pub async fn runs(
    State(state): State<AppState>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let params = Params::new(query, &["status", "limit", "offset"])?;
    let statuses = params
        .list("status")
        .into_iter()
        .map(|s| {
            RunStatus::parse(s).ok_or_else(|| {
                ApiError::bad(format!(
                    "status={s:?}: a run's status is running, finished, interrupted or died"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let limit = params.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let offset = params.number::<usize>("offset")?.unwrap_or(0);
    let mut runs = read(&state, |store| Ok(store.runs()?)).await?;
    runs.retain(|r| statuses.is_empty() || statuses.contains(&r.status));
    let total = runs.len();
    let page: Vec<_> = runs.into_iter().rev().skip(offset).take(limit).collect();
    Ok(Json(json!({ "runs": page, "total": total, "offset": offset, "limit": limit })))
}

/// A run with what its page shows: counts, rate, ETA, slots and their busy time.
#[derive(Debug, Serialize)]
pub struct RunView {
    /// The run as stored (its status as it stands: `died` for a dead holder).
    #[serde(flatten)]
    pub record: RunRecord,
    /// Its tasks so far.
    pub total: u64,
    /// Its input is still being read: `total` is not final.
    pub input_open: bool,
    /// Tasks that reached an end (succeeded, failed in some way, cancelled).
    pub done: u64,
    /// Tasks that failed in some way.
    pub failed: u64,
    /// Tasks in each status.
    pub counts: shoal_core::store::StatusCounts,
    /// Tasks ended per second since the run started (to its end, if it ended).
    pub rate: Option<f64>,
    /// Seconds left at that rate, for a live run whose input is read whole.
    pub eta_seconds: Option<f64>,
    /// Slots open now: the run's first, or the last a `jobs` request set.
    pub slots: Option<u64>,
    /// Slots running an attempt now.
    pub slots_busy: u64,
    /// Per-slot work: attempts and busy seconds.
    pub per_slot: Vec<shoal_core::store::SlotStats>,
}

/// One run's view, read from the store by the run's indexes.
pub fn run_view(store: &Store, id: i64) -> Result<RunView, ApiError> {
    let record = store.run(id)?;
    let overview = store.overview(id)?;
    let slots = open_slots(store, &record)?;
    Ok(view(record, overview, slots, unix_now()))
}

fn view(record: RunRecord, overview: RunOverview, slots: Option<u64>, now: f64) -> RunView {
    let RunOverview { counts, per_slot, input_open } = overview;
    let total: u64 = counts.values().sum();
    let open = counts[&TaskStatus::Queued] + counts[&TaskStatus::Running];
    let done = total - open;
    let failed = counts.iter().filter(|(s, _)| s.is_failure()).map(|(_, n)| n).sum();
    let elapsed = record.ended_at.unwrap_or(now) - record.started_at;
    let rate = (elapsed > 0.0 && done > 0).then(|| done as f64 / elapsed);
    let live = record.status == RunStatus::Running;
    let eta_seconds = rate.filter(|_| live && !input_open).map(|rate| open as f64 / rate);
    RunView {
        total,
        input_open,
        done,
        failed,
        slots_busy: counts[&TaskStatus::Running],
        counts,
        rate,
        eta_seconds,
        slots,
        per_slot,
        record,
    }
}

/// The slots a run has open: the last applied `jobs` request's count (its result
/// reads `slots A -> B`), else what it started with (`jobs` of a command run,
/// `workers` of a Python pool).
pub fn open_slots(store: &Store, run: &RunRecord) -> Result<Option<u64>, ApiError> {
    let set = store.control_records(run.id)?.into_iter().rev().find_map(|r| {
        matches!(r.action, ControlAction::SetSlots { .. })
            .then_some(r.result?)
            .and_then(|result| result.split("-> ").nth(1)?.split(' ').next()?.parse().ok())
    });
    let first = || ["jobs", "workers"].iter().find_map(|key| run.options.get(key)?.as_u64());
    Ok(set.or_else(first))
}

/// `GET /api/v1/runs/{run}`.
pub async fn run(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<RunView>, ApiError> {
    read(&state, move |store| run_view(store, id)).await.map(Json)
}

/// `GET /api/v1/runs/{run}/stats`: as `shoal stats --json`, with the run's
/// memory-limit mechanism.
pub async fn stats(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    read(&state, move |store| {
        let mode = store.run(id)?.memory_limit_mode;
        let mut value = serde_json::to_value(store.stats(id)?).unwrap_or_default();
        value["memory_limit_mode"] = json!(mode);
        Ok(Json(value))
    })
    .await
}

/// The filter of a task page, from its parameters.
fn task_filter(params: &Params) -> Result<TaskFilter, ApiError> {
    let statuses = params
        .list("status")
        .into_iter()
        .map(|s| {
            TaskStatus::parse(s).ok_or_else(|| {
                let names: Vec<_> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad(format!(
                    "status={s:?}: a task's status is one of {}",
                    names.join(", ")
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(TaskFilter {
        statuses,
        text: params.text("q").map(str::to_owned),
        slot: params.number("slot")?,
        exit_code: params.number("exit_code")?,
    })
}

/// A task as a row of the table: no captured output, the last line of its error
/// output as its `message`.
pub fn task_row(task: TaskRecord) -> Value {
    let message = last_line(&task.stderr);
    let mut row = serde_json::to_value(task).unwrap_or_default();
    if let Some(fields) = row.as_object_mut() {
        fields.remove("stdout");
        fields.remove("stderr");
        fields.insert("message".into(), json!(message));
    }
    row
}

/// `GET /api/v1/runs/{run}/tasks?status=&q=&slot=&exit_code=&after=|offset=&limit=`.
pub async fn tasks(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(query): Query<Vec<(String, String)>>,
) -> Result<Json<Value>, ApiError> {
    let params =
        Params::new(query, &["status", "q", "slot", "exit_code", "after", "offset", "limit"])?;
    let filter = task_filter(&params)?;
    let limit = params.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let start = match (params.number("after")?, params.number("offset")?) {
        (Some(_), Some(_)) => return Err(ApiError::bad("give after or offset, not both")),
        (Some(after), None) => PageStart::After(after),
        (None, offset) => PageStart::Offset(offset.unwrap_or(0)),
    };
    let page = read(&state, move |store| Ok(store.task_page(id, &filter, start, limit)?)).await?;
    let next_after = (page.len() == limit).then(|| page.last().map(|t| t.task)).flatten();
    let tasks: Vec<Value> = page.into_iter().map(task_row).collect();
    Ok(Json(json!({ "tasks": tasks, "limit": limit, "next_after": next_after })))
}

/// `GET /api/v1/runs/{run}/tasks/{task}`: the task with every attempt and its output.
pub async fn task(
    State(state): State<AppState>,
    Path((id, number)): Path<(i64, u64)>,
) -> Result<Json<Value>, ApiError> {
    read(&state, move |store| {
        let task = store.task(id, number)?;
        let attempts = store.task_attempts(id, number)?;
        Ok(Json(json!({ "task": task, "attempts": attempts })))
    })
    .await
}

/// What failures share: how they ended and the last line of their error output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
struct Signature {
    status: TaskStatus,
    exit_code: Option<i32>,
    signal: Option<i32>,
    message: Option<String>,
}

/// `GET /api/v1/runs/{run}/failures`: failed tasks grouped by signature, largest
/// group first, each with its first task numbers.
pub async fn failures(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    read(&state, move |store| {
        let filter = TaskFilter {
            statuses: TaskStatus::ALL.into_iter().filter(|s| s.is_failure()).collect(),
            ..TaskFilter::default()
        };
        let mut groups: HashMap<Signature, (u64, Vec<u64>)> = HashMap::new();
        let (mut after, mut scanned) = (0, 0);
        loop {
            let page = store.task_page(id, &filter, PageStart::After(after), MAX_PAGE)?;
            let full = page.len() == MAX_PAGE;
            for task in page {
                after = task.task;
                scanned += 1;
                let signature = Signature {
                    status: task.status,
                    exit_code: task.exit_code,
                    signal: task.signal,
                    message: last_line(&task.stderr),
                };
                let (count, tasks) = groups.entry(signature).or_default();
                *count += 1;
                if tasks.len() < GROUP_TASKS {
                    tasks.push(task.task);
                }
            }
            if !full || scanned >= FAILURES_SCANNED {
                break;
            }
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.1 .1.cmp(&b.1 .1)));
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(signature, (count, tasks))| {
                json!({ "signature": signature, "count": count, "tasks": tasks })
            })
            .collect();
        Ok(Json(json!({
            "groups": groups,
            "scanned": scanned,
            "truncated": scanned >= FAILURES_SCANNED,
        })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_core::store::StatusCounts;

    fn record(status: RunStatus, ended_at: Option<f64>) -> RunRecord {
        RunRecord {
            id: 1,
            started_at: 100.0,
            ended_at,
            status,
            command: vec![],
            options: json!({}),
            cwd: String::new(),
            memory_limit_mode: None,
        }
    }

    fn overview(queued: u64, running: u64, succeeded: u64, input_open: bool) -> RunOverview {
        let mut counts: StatusCounts = TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
        counts.insert(TaskStatus::Queued, queued);
        counts.insert(TaskStatus::Running, running);
        counts.insert(TaskStatus::Succeeded, succeeded);
        RunOverview { counts, per_slot: vec![], input_open }
    }

    #[test]
    fn rate_and_eta_come_from_the_tasks_done_since_the_start() {
        // 30 done in 10 s, 70 open: 3/s, 23.3 s left.
        let v = view(record(RunStatus::Running, None), overview(68, 2, 30, false), Some(2), 110.0);
        assert_eq!((v.done, v.slots_busy), (30, 2));
        assert_eq!(v.rate, Some(3.0));
        assert!((v.eta_seconds.unwrap() - 70.0 / 3.0).abs() < 1e-9);
        // No ETA while the input is still read, nor for an ended run.
        let v = view(record(RunStatus::Running, None), overview(68, 2, 30, true), None, 110.0);
        assert_eq!((v.rate, v.eta_seconds), (Some(3.0), None));
        let v =
            view(record(RunStatus::Finished, Some(120.0)), overview(0, 0, 40, false), None, 500.0);
        assert_eq!((v.rate, v.eta_seconds), (Some(2.0), None));
        // Nothing done yet: no rate.
        let v = view(record(RunStatus::Running, None), overview(10, 0, 0, false), None, 110.0);
        assert_eq!((v.rate, v.eta_seconds), (None, None));
    }
}
