//! `shoal run --detach` on a PostgreSQL store: submit the run as a shared run for
//! `shoal worker` agents, print its id, return. Its tasks go in as they are read, in
//! group commits (the first ones with the run, then a batch at most every
//! [`BATCH_WAIT`] or [`BATCH`] tasks, each with one `NOTIFY`), and its input is
//! closed at the end, after which the run needs no submitter.

use std::time::Duration;

use anyhow::{bail, Context};
use shoal_core::store::postgres::Submitter;
use shoal_core::store::{NewRun, NewTask, StoreAddress};
use tokio::sync::mpsc;

use super::run::{parse, Parsed};
use crate::cli::RunArgs;
use crate::halt::Halt;
use crate::reading::Read;
use crate::template::{display, Template};
use crate::units::TimeoutArg;
use crate::Exit;

/// The most tasks in one transaction.
const BATCH: usize = 1000;

/// How long tasks read wait for others before their transaction.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Runs `shoal run --detach`.
pub fn detach(address: &StoreAddress, args: RunArgs) -> anyhow::Result<Exit> {
    if !matches!(address, StoreAddress::Postgres(_)) {
        bail!("--detach submits the run for `shoal worker` agents: it needs a PostgreSQL store (--store postgresql://...)");
    }
    if let Some(option) = not_for_agents(&args) {
        bail!(
            "{option} is not honoured by `shoal worker` agents yet: a shared run (--detach) \
             cannot take it; run without it, or on a SQLite store"
        );
    }
    if args.jobs.is_some() {
        bail!(
            "-j sets the slots of this machine, and a detached run runs none here: \
             give it to `shoal worker -j N` on the machines that run it"
        );
    }
    let Parsed { command, template, mut options, mut rx } = parse(&args)?;
    options.shared = true;
    let default_timeout = options.timeout.map(Duration::from_secs_f64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let retries = options.retries;
    let mut next = 1u64;
    let mut batch = |rx: &mut mpsc::Receiver<Read>| -> anyhow::Result<Option<Vec<NewTask>>> {
        let inputs = runtime.block_on(read_batch(rx))?;
        let Some(inputs) = inputs else { return Ok(None) };
        let mut tasks = Vec::with_capacity(inputs.len());
        for input in inputs {
            template.check_groups(input.args.len())?;
            tasks.push(new_task(&template, next, input.meta(default_timeout, retries), input.args));
            next += 1;
        }
        Ok(Some(tasks))
    };
    let first = batch(&mut rx)?.unwrap_or_default();
    let run = NewRun {
        command,
        options: serde_json::to_value(&options)?,
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        memory_limit_mode: None,
    };
    let mut submitter = Submitter::create(address, &run, &first)?;
    let id = submitter.run();
    if !first.is_empty() {
        while let Some(tasks) = batch(&mut rx)? {
            submitter.add(&tasks)?;
        }
    }
    submitter.close()?;
    println!("{id}");
    Ok(Exit::Success)
}

/// The first option given that the agents cannot honour: they run a shared run's
/// tasks with its command, shell, timeouts, retries and output limit, and in its
/// directory, but keep no per-run pacing, halting, limits, placement or logs.
fn not_for_agents(args: &RunArgs) -> Option<&'static str> {
    let control = &args.control;
    [
        (args.memory_limit.is_some(), "--memory-limit"),
        (matches!(args.timeout, Some(TimeoutArg::Median(_))), "--timeout N%"),
        (args.kill_grace.is_some(), "--kill-grace"),
        (args.retry_delay.is_some(), "--retry-delay"),
        (args.pin, "--pin"),
        (args.nice.is_some(), "--nice"),
        (args.joblog.is_some(), "--joblog"),
        (args.keep_order, "--keep-order"),
        (matches!(control.halt, Some(Halt::Rule(_))), "--halt"),
        (control.delay.is_some(), "--delay"),
        (control.workdir.is_some(), "--workdir"),
    ]
    .into_iter()
    .find_map(|(given, option)| given.then_some(option))
}

fn new_task(
    template: &Template,
    task: u64,
    meta: shoal_core::TaskMeta,
    args: Vec<String>,
) -> NewTask {
    NewTask { task, command: display(&template.render(&args, task, 0)), args, meta }
}

/// The next tasks read: at least one (waiting for it), then what comes within
/// [`BATCH_WAIT`], up to [`BATCH`]; `None` at the input's end.
async fn read_batch(
    rx: &mut mpsc::Receiver<Read>,
) -> anyhow::Result<Option<Vec<crate::inputs::TaskInput>>> {
    let Some(first) = rx.recv().await else { return Ok(None) };
    let mut inputs = vec![first?];
    let deadline = tokio::time::Instant::now() + BATCH_WAIT;
    while inputs.len() < BATCH {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(read)) => inputs.push(read?),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(Some(inputs))
}
