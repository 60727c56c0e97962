//! `shoal run --resume`: continue a run from the store, after making sure that
//! nothing of it still runs (a live shoal, or what a killed one left behind). The
//! tasks it runs are read from the store a page at a time as the engine takes them
//! ([`Pages`]), so a resume of a million tasks holds no more of them than a new run.

use anyhow::{anyhow, bail, Context};
use shoal_core::run::{kill_all, Marker};
use shoal_core::store::{Store, TaskRecord};
use shoal_core::{TaskId, TaskMeta, TaskStatus};
use std::time::Duration;

use super::run::{memory_limit, Planned, Prepared, RunOptions};
use crate::cli::RunArgs;
use crate::units;

/// Tasks read from the store at a time.
pub(super) const PAGE: usize = 1000;

/// A resumed run: everything but the options comes from the store.
pub(super) fn resume<'a>(
    store: &'a Store,
    run: Option<i64>,
    args: &RunArgs,
) -> anyhow::Result<Prepared<'a>> {
    let input_options = !args.input.arg_file.is_empty()
        || args.input.null
        || args.input.delimiter.is_some()
        || args.input.trim.is_some()
        || args.input.eof.is_some()
        || args.input.colsep.is_some()
        || args.input.header.is_some()
        || args.input.link
        || args.input.shuf
        || args.input.max_replace_args.is_some()
        || args.input.max_args.is_some()
        || args.input.multiple
        || args.input.context_replace
        || args.input.max_chars.is_some();
    // `--resume-failed` was given the command line of the run it resumes.
    let retyped = args.control.resume_failed;
    if !retyped && (!args.command.is_empty() || args.tasks.is_some() || input_options) {
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
    if stored.shared {
        bail!(
            "run {run_id} was submitted with --detach: `shoal worker` agents run it, not a \
             resume (`shoal wait {run_id}` waits for its end)"
        );
    }
    // What it runs: every task that has not succeeded (`-j 0` runs as many slots).
    let stats = store.stats(run_id)?;
    let pending = stats.total.saturating_sub(stats.counts[&TaskStatus::Succeeded]);
    let options = RunOptions::resolve(args, Some(stored), Some(pending as usize))?;
    options
        .check_ranges()
        .map_err(|e| anyhow!("run {run_id} holds {e}: give {} to resume it", e.option))?;
    // The tasks' own timeouts too, all of them by the lowest and the highest (the
    // valid ones are a range), before anything is changed or read page by page.
    if args.fixed_timeout().is_none() {
        for (task, secs) in store.unsucceeded_timeout_extremes(run_id)? {
            check_stored_timeout(run_id, task, secs)?;
        }
    }
    options.check_machine()?;
    let memory = memory_limit(&options).with_context(|| format!("cannot resume run {run_id}"))?;
    stop_leftovers(&hold.marker());
    let resumed = store.prepare_resume(run_id)?;
    // Relative paths in the command and inputs mean what they meant then.
    if !resumed.cwd.is_empty() {
        std::env::set_current_dir(&resumed.cwd).with_context(|| {
            format!("run {run_id} ran in {}, which cannot be entered now", resumed.cwd)
        })?;
    }
    options.check_workdir()?;
    let template = options.template(&resumed.command)?;
    let pages = Pages {
        store,
        run: run_id,
        after: 0,
        read: 0,
        timeout: args.fixed_timeout(),
        retries: args.retries,
    };
    let mode = memory.as_ref().map(|m| m.mode().as_str());
    store.set_run_options(run_id, &serde_json::to_value(&options)?, mode)?;
    Ok(Prepared {
        template,
        options,
        memory,
        planned: Vec::new(),
        tasks: pending,
        pages: Some(pages),
        skipped: stats.total - pending,
        hold,
        reading: None,
    })
}

/// A resumed run's tasks, read from the store in task order a page at a time (keyset
/// by task number: each page starts after the last task read).
pub(super) struct Pages<'a> {
    store: &'a Store,
    run: i64,
    /// The last task read.
    after: TaskId,
    /// How many tasks have been read.
    pub(super) read: u64,
    /// `--timeout` and `--retries` given on this resume, over the stored ones.
    timeout: Option<Duration>,
    retries: Option<u32>,
}

impl Pages<'_> {
    /// The next page of tasks; empty once all have been read.
    pub(super) fn next_page(&mut self) -> anyhow::Result<Vec<Planned>> {
        let page = self
            .store
            .unsucceeded_tasks(self.run, self.after, PAGE)
            .with_context(|| format!("read the tasks of run {} to resume", self.run))?;
        if let Some(last) = page.last() {
            self.after = last.task;
        }
        self.read += page.len() as u64;
        Ok(page.into_iter().map(|t| self.planned(t)).collect())
    }

    fn planned(&self, t: TaskRecord) -> Planned {
        Planned {
            task: t.task,
            meta: TaskMeta {
                priority: t.priority,
                // Only a hint: one out of range is taken as the nearest in range.
                cost: t.cost.and_then(|c| units::seconds(c.clamp(0.0, units::MAX_SECONDS))),
                key: t.key,
                // The stored ones were checked before the resume changed anything.
                timeout: self.timeout.or_else(|| t.timeout.and_then(units::timeout_seconds)),
                // Retries count from this resume on: a resumed task gets its full
                // budget on top of the attempts it has had (the scheduler counts the
                // budget in absolute attempt numbers).
                retries: self.retries.unwrap_or(t.retries).saturating_add(t.attempts),
            },
            args: t.args,
            // Attempt numbers continue after those in the store, where (run, task,
            // attempt) is the key: restarting at 1 collided with the old attempts.
            attempts: t.attempts,
        }
    }
}

/// Refuses a task's stored timeout (with a way out) when out of range.
fn check_stored_timeout(run: i64, task: TaskId, secs: f64) -> anyhow::Result<()> {
    units::timeout_seconds(secs).map(drop).ok_or_else(|| {
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
