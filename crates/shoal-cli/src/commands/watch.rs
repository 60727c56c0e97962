//! `shoal watch [RUN]`: follow a run that another process runs (a `shoal run`, a Python
//! pool with a store), live, until it ends; then its summary, and its exit status.
//!
//! It only reads the store: a [`ProgressFeed`] polled every [`POLL_EVERY`], which
//! reads only what changed since its last poll (nothing but SQLite's change counter
//! while the run is idle), and the run's liveness every [`ALIVE_EVERY`], which tells a
//! run still going from one whose process died without recording its end. What it
//! shows is `shoal run`'s own bar or status lines (`progress.rs`), with the running
//! tasks listed under the bar, and one line per failed task as the store records it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use shoal_core::process::signal::signal_name;
use shoal_core::store::{
    unix_now, ControlAction, ProgressFeed, RunProgress, RunStatus, Store, StoreAddress, TaskEnd,
};
use shoal_core::TaskStatus;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::report::open_existing;
use super::run::{summary, Resumable, RunOptions};
use crate::cli::{WaitArgs, WatchArgs};
use crate::progress::{Progress, Shown};
use crate::Exit;

/// How often the store is read: failures show within this (plus the run's group
/// commit), and an idle poll costs one read of SQLite's change counter.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// How often the run's liveness is probed (a lock taken shared for an instant).
const ALIVE_EVERY: Duration = Duration::from_millis(500);

/// How the following ended.
enum Followed {
    /// The run's end is recorded, or no live process holds it any more.
    Ended,
    /// The watcher was interrupted by this signal; the run goes on.
    Stopped(i32),
}

/// Runs `shoal watch`.
pub fn watch(address: &StoreAddress, args: WatchArgs) -> anyhow::Result<Exit> {
    let store = open_existing(address)?;
    let run = match args.run {
        Some(run) => run,
        None => latest(&store)?,
    };
    let record = store.run(run)?;
    if record.status != RunStatus::Running {
        return ended(address, run);
    }
    let mut feed = store.follow(run)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    // Handled before the watch says it began: a Ctrl-C from then on stops it with 130.
    let signals = {
        let _in_runtime = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("handle SIGINT")?,
            signal(SignalKind::terminate()).context("handle SIGTERM")?,
        )
    };
    note!("shoal: watching run {run}: {}", record.command.join(" "));
    let elapsed = (unix_now() - feed.progress().started_at).max(0.0);
    let progress = Progress::following(Duration::from_secs_f64(elapsed));
    show(&progress, feed.progress());
    let followed = runtime.block_on(follow(&store, run, &mut *feed, &progress, signals))?;
    progress.finish();
    match followed {
        Followed::Ended => ended(address, run),
        Followed::Stopped(signal) => {
            note!("shoal: stopped watching run {run}; the run goes on");
            Ok(Exit::Interrupted(signal))
        }
    }
}

/// Runs `shoal wait`: follows the run without showing it, then its summary and exit
/// status, as `shoal watch`'s.
pub fn wait(address: &StoreAddress, args: WaitArgs) -> anyhow::Result<Exit> {
    let store = open_existing(address)?;
    let run = args.run;
    if store.run(run)?.status != RunStatus::Running {
        return ended(address, run);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let (mut interrupt, mut terminate) = {
        let _in_runtime = runtime.enter();
        (
            signal(SignalKind::interrupt()).context("handle SIGINT")?,
            signal(SignalKind::terminate()).context("handle SIGTERM")?,
        )
    };
    let mut store = store;
    let stopped = runtime.block_on(async {
        let mut ticks = tokio::time::interval(ALIVE_EVERY);
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Some(libc::SIGINT),
                _ = terminate.recv() => return Some(libc::SIGTERM),
                _ = ticks.tick() => {}
            }
            // A run stored as ended, or one that no live process holds any more.
            match store.run(run) {
                Ok(record) if record.status != RunStatus::Running => return None,
                Ok(_) => {}
                // A lost connection (a restarted server): open the store again.
                Err(_) => {
                    if let Ok(again) = Store::open_read_only(address) {
                        store = again;
                    }
                }
            }
        }
    });
    match stopped {
        None => ended(address, run),
        Some(signal) => {
            note!("shoal: stopped waiting for run {run}; the run goes on");
            Ok(Exit::Interrupted(signal))
        }
    }
}

/// The run to watch when none is given: the latest live one, else the latest.
fn latest(store: &Store) -> anyhow::Result<i64> {
    let runs = store.runs()?;
    let live = runs.iter().rev().find(|r| r.status == RunStatus::Running);
    live.or(runs.last()).map(|r| r.id).context("the store holds no run yet")
}

/// Polls the feed until the run ends or dies, or a signal stops the watching.
async fn follow(
    store: &Store,
    run: i64,
    feed: &mut dyn ProgressFeed,
    progress: &Progress,
    (mut interrupt, mut terminate): (Signal, Signal),
) -> anyhow::Result<Followed> {
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probed = Instant::now();
    let mut warned = false;
    loop {
        tokio::select! {
            _ = interrupt.recv() => return Ok(Followed::Stopped(libc::SIGINT)),
            _ = terminate.recv() => return Ok(Followed::Stopped(libc::SIGTERM)),
            _ = ticks.tick() => {}
        }
        match feed.poll() {
            Ok(ends) => {
                report(progress, &ends);
                show(progress, feed.progress());
            }
            // A store busy for a moment: the next poll reads it again.
            Err(e) if !warned => {
                warned = true;
                progress.suspend(|| note!("shoal: warning: cannot read run {run} now: {e}"));
            }
            Err(_) => {}
        }
        if feed.progress().status != RunStatus::Running {
            return Ok(Followed::Ended);
        }
        if probed.elapsed() >= ALIVE_EVERY {
            probed = Instant::now();
            if !store.is_alive(run) {
                // Its end may have been committed just before its hold was let go.
                if let Ok(ends) = feed.poll() {
                    report(progress, &ends);
                    show(progress, feed.progress());
                }
                return Ok(Followed::Ended);
            }
        }
    }
}

/// Shows the run's counts and running tasks.
fn show(progress: &Progress, run: &RunProgress) {
    progress.show(Shown {
        total: run.total,
        input_open: run.input_open,
        done: run.done(),
        succeeded: run.count(TaskStatus::Succeeded),
        failed: run.failed(),
        running: run.running.clone(),
    });
}

/// One line per task that failed.
fn report(progress: &Progress, ends: &[TaskEnd]) {
    let failures: Vec<String> =
        ends.iter().filter(|end| end.status.is_failure()).map(failure_line).collect();
    if !failures.is_empty() {
        progress.suspend(|| {
            for line in &failures {
                note!("{line}");
            }
        });
    }
}

/// `shoal: task 7 failed (exit code 1)`, `shoal: task 3 crashed (killed by SIGKILL)
/// after 2 attempts`, `shoal: task 5 failed (ValueError: bad input)`.
fn failure_line(end: &TaskEnd) -> String {
    let why = match (end.exit_code, end.signal, &end.message) {
        (Some(code), _, _) => Some(format!("exit code {code}")),
        (None, Some(signal), _) => Some(format!("killed by {}", signal_name(signal))),
        (None, None, message) => message.clone(),
    };
    let mut line = format!("shoal: task {} {}", end.task, end.status);
    if let Some(why) = why {
        line += &format!(" ({why})");
    }
    if end.attempts > 1 {
        line += &format!(" after {} attempts", end.attempts);
    }
    line
}

/// The summary of a run that has ended (or died), read afresh from the store, and the
/// exit status `shoal run` gave it.
fn ended(address: &StoreAddress, run: i64) -> anyhow::Result<Exit> {
    // A connection of its own: the run's writer may have removed the log the feed read.
    let store = Store::open_read_only(address)?;
    let record = store.run(run)?;
    let stats = store.stats(run)?;
    let counts: HashMap<TaskStatus, u64> = stats.counts.into_iter().collect();
    let count = |status| counts.get(&status).copied().unwrap_or(0);
    let open = count(TaskStatus::Queued) + count(TaskStatus::Running);
    if stats.total == 0 {
        note!("shoal: run {run}: no tasks");
    } else {
        let took = record.ended_at.unwrap_or_else(unix_now) - record.started_at;
        let took = Duration::from_secs_f64(took.max(0.0));
        // Only a run of `shoal run` can be resumed by it (a Python pool's options differ).
        let resumable = match serde_json::from_value::<RunOptions>(record.options) {
            Ok(_) => Resumable::Yes,
            Err(_) => Resumable::No,
        };
        note!("{}", summary(run, &counts, 0, open, took, resumable));
    }
    Ok(match record.status {
        RunStatus::Finished
            if stats.finished == stats.total && count(TaskStatus::Succeeded) == stats.total =>
        {
            Exit::Success
        }
        RunStatus::Finished => Exit::TasksFailed,
        RunStatus::Interrupted if open == 0 && only_tasks_cancelled(&store, run)? => {
            Exit::TasksFailed
        }
        RunStatus::Interrupted => Exit::Interrupted(libc::SIGINT),
        RunStatus::Died => {
            note!(
                "shoal: run {run} died: the process running it ended without recording its end \
                 (killed or crashed)"
            );
            Exit::TasksFailed
        }
        // Running again: another process resumed it just as its first one ended.
        RunStatus::Running => {
            note!("shoal: run {run} is running again (resumed); `shoal watch {run}` follows it");
            Exit::TasksFailed
        }
    })
}

/// Whether an `interrupted` run was interrupted only by `shoal cancel RUN --task N`:
/// it ran to its end (`shoal run` exited 1), not stopped (130). Every cancelled task was
/// named by a request it applied, and no request cancelled the whole run.
fn only_tasks_cancelled(store: &Store, run: i64) -> anyhow::Result<bool> {
    let mut named = Vec::new();
    for request in store.control_records(run)?.into_iter().filter(|r| r.applied_at.is_some()) {
        match request.action {
            ControlAction::CancelRun => return Ok(false),
            ControlAction::CancelTask { task } => named.push(task),
            _ => {}
        }
    }
    let cancelled = store.tasks(run, Some(TaskStatus::Cancelled))?;
    Ok(!named.is_empty() && cancelled.iter().all(|t| named.contains(&t.task)))
}
