//! `shoal run --resume`: continue a run from the store, after making sure that
//! nothing of it still runs (a live shoal, or what a killed one left behind).

use anyhow::{anyhow, bail, Context};
use shoal_core::run::{kill_all, Marker};
use shoal_core::store::Store;
use shoal_core::{TaskId, TaskMeta, TaskStatus};
use std::time::Duration;

use super::run::{memory_limit, Planned, Prepared, RunOptions};
use crate::cli::RunArgs;
use crate::template::Template;
use crate::units;

/// A resumed run: everything but the options comes from the store.
pub(super) fn resume(store: &Store, run: Option<i64>, args: &RunArgs) -> anyhow::Result<Prepared> {
    if !args.command.is_empty() || args.tasks.is_some() {
        bail!("--resume takes the command and the inputs from the store: give only options");
    }
    let run_id = match run {
        Some(id) => id,
        None => store.last_run()?.context("the store holds no run to resume")?,
    };
    // First the run's liveness: while another shoal runs this run, nothing of it is
    // touched.
    let hold = store.hold_run(run_id)?;
    // The stored options are checked before anything is changed: an older shoal may
    // have stored values this one refuses (a timeout past what the clock can add).
    let stored: RunOptions = serde_json::from_value(store.run(run_id)?.options)
        .with_context(|| format!("run {run_id} has options this shoal cannot read"))?;
    // What it runs: every task that has not succeeded (`-j 0` runs as many slots).
    let stats = store.stats(run_id)?;
    let pending = stats.total.saturating_sub(stats.counts[&TaskStatus::Succeeded]) as usize;
    let options = RunOptions::resolve(args, Some(stored), Some(pending))?;
    options
        .check_ranges()
        .map_err(|e| anyhow!("run {run_id} holds {e}: give {} to resume it", e.option))?;
    options.check_machine()?;
    let memory = memory_limit(&options).with_context(|| format!("cannot resume run {run_id}"))?;
    stop_leftovers(&hold.marker());
    let info = store.prepare_resume(run_id)?;
    // Relative paths in the command and inputs mean what they meant then.
    if !info.run.cwd.is_empty() {
        std::env::set_current_dir(&info.run.cwd).with_context(|| {
            format!("run {run_id} ran in {}, which cannot be entered now", info.run.cwd)
        })?;
    }
    let template = Template::parse(&info.run.command, options.shell)?;
    let total = stats.total;
    let mut planned = Vec::with_capacity(info.pending.len());
    for t in info.pending {
        let timeout = match (args.timeout, t.timeout) {
            (Some(given), _) => Some(given),
            (None, stored) => stored_timeout(run_id, t.task, stored)?,
        };
        planned.push(Planned {
            task: t.task,
            meta: TaskMeta {
                priority: t.priority,
                // Only a hint: one out of range is taken as the nearest in range.
                cost: t.cost.and_then(|c| units::seconds(c.clamp(0.0, units::MAX_SECONDS))),
                key: t.key,
                timeout,
                // Retries count from this resume on: a resumed task gets its full
                // budget on top of the attempts it has had (the scheduler counts the
                // budget in absolute attempt numbers).
                retries: args.retries.unwrap_or(t.retries).saturating_add(t.attempts),
            },
            args: t.args,
            // Attempt numbers continue after those in the store, where (run, task,
            // attempt) is the key: restarting at 1 collided with the old attempts.
            attempts: t.attempts,
        });
    }
    let skipped = total - planned.len() as u64;
    let mode = memory.as_ref().map(|m| m.mode().as_str());
    store.set_run_options(run_id, &serde_json::to_value(&options)?, mode)?;
    Ok(Prepared { template, options, memory, planned, skipped, hold, reading: None })
}

/// A task's stored timeout, refused (with a way out) when out of range.
fn stored_timeout(run: i64, task: TaskId, secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    let Some(secs) = secs else { return Ok(None) };
    units::timeout_seconds(secs).map(Some).ok_or_else(|| {
        anyhow!(
            "run {run}, task {task} holds a timeout of {} s, which must be {}: give \
             --timeout to resume it",
            units::show_seconds(secs),
            units::TIMEOUT_RANGE
        )
    })
}

/// Before a resume, with the run held (so no live shoal runs it): kills what a killed
/// shoal left running of it, found by the run's marker, so no task runs twice at once.
fn stop_leftovers(marker: &Marker) {
    let marked = marker.processes();
    if !marked.is_empty() {
        let killed = kill_all(&marked);
        let run = marker.identity().run();
        note!("shoal: killed {killed} processes that the interrupted run {run} left running");
    }
}
