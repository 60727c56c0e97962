//! `GET /metrics`: the store in Prometheus' text format (version 0.0.4), following
//! its naming rules: prefix `shoal_`, seconds, `_total` only on counters, and no
//! label of unbounded values (no task ids, no arguments, no run ids).
//!
//! Store-wide: every run's tasks by status (a gauge: a resume moves tasks back to
//! `queued`), ended attempts by outcome (a counter: attempt rows are never deleted),
//! the last-attempt durations of ended tasks (a histogram), runs by status, and the
//! slots of live runs, open and busy.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use shoal_core::store::{RunStatus, Store, StoreMetrics};
use shoal_core::task::TaskStatus;

use crate::api::{open_slots, read};
use crate::error::ApiError;
use crate::AppState;

/// The duration histogram's upper bounds, seconds.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0,
];

/// What the metrics are made of beyond the store-wide counts.
struct Live {
    runs: Vec<(RunStatus, u64)>,
    slots: u64,
    slots_busy: u64,
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (counts, live) =
        read(&state, |store| Ok((store.metrics(&DURATION_BUCKETS)?, live(store)?))).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        render(&counts, &live),
    ))
}

fn live(store: &Store) -> Result<Live, ApiError> {
    let runs = store.runs()?;
    let mut live = Live { runs: Vec::new(), slots: 0, slots_busy: 0 };
    for status in [RunStatus::Running, RunStatus::Finished, RunStatus::Interrupted, RunStatus::Died]
    {
        live.runs.push((status, runs.iter().filter(|r| r.status == status).count() as u64));
    }
    for run in runs.iter().filter(|r| r.status == RunStatus::Running) {
        live.slots += open_slots(store, &store.run(run.id)?)?.unwrap_or(0);
        live.slots_busy += run.counts[&TaskStatus::Running];
    }
    Ok(live)
}

fn render(m: &StoreMetrics, live: &Live) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(out, "# HELP shoal_{name} {help}\n# TYPE shoal_{name} {kind}");
        for (sample, value) in samples {
            let _ = writeln!(out, "shoal_{sample} {value}");
        }
    };
    let sample = |name: &str, value: &dyn std::fmt::Display| (name.to_owned(), value.to_string());
    let tasks: Vec<_> = TaskStatus::ALL
        .iter()
        .map(|s| sample(&format!("tasks{{status=\"{}\"}}", s.as_str()), &m.tasks[s]))
        .collect();
    family("tasks", "gauge", "Tasks in the store, by status.", &tasks);
    let queued = m.tasks[&TaskStatus::Queued];
    family("tasks_queued", "gauge", "Tasks waiting to run.", &[sample("tasks_queued", &queued)]);
    let running = m.tasks[&TaskStatus::Running];
    family("tasks_running", "gauge", "Tasks running now.", &[sample("tasks_running", &running)]);
    let attempts: Vec<_> = m
        .attempts
        .iter()
        .filter(|(outcome, _)| outcome.as_str() != "running")
        .map(|(outcome, n)| sample(&format!("attempts_total{{outcome=\"{outcome}\"}}"), n))
        .collect();
    family("attempts_total", "counter", "Attempts that ended, by outcome.", &attempts);
    let h = &m.durations;
    let mut buckets: Vec<_> = h
        .bounds
        .iter()
        .zip(&h.cumulative)
        .map(|(bound, n)| sample(&format!("task_duration_seconds_bucket{{le=\"{bound}\"}}"), n))
        .collect();
    buckets.push(sample("task_duration_seconds_bucket{le=\"+Inf\"}", &h.count));
    buckets.push(sample("task_duration_seconds_sum", &h.sum));
    buckets.push(sample("task_duration_seconds_count", &h.count));
    family(
        "task_duration_seconds",
        "histogram",
        "How long the last attempt of each task that ran to an end took.",
        &buckets,
    );
    let runs: Vec<_> = live
        .runs
        .iter()
        .map(|(status, n)| sample(&format!("runs{{status=\"{}\"}}", status.as_str()), n))
        .collect();
    family("runs", "gauge", "Runs in the store, by status.", &runs);
    family("slots", "gauge", "Slots open in the live runs.", &[sample("slots", &live.slots)]);
    family(
        "slots_busy",
        "gauge",
        "Slots of the live runs running an attempt now.",
        &[sample("slots_busy", &live.slots_busy)],
    );
    out
}
