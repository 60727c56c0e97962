//! The read-only subcommands: `shoal runs`, `results`, `stats` and `export`.

use std::io::Write;

use anyhow::{bail, Context};
use shoal_core::process::signal::signal_name;
use shoal_core::store::{AttemptRecord, RunStatus, RunSummary, Store, StoreAddress, TaskRecord};
use shoal_core::TaskStatus;

use super::pick_run;
use crate::cli::{ExportArgs, ResultsArgs, RunsArgs, StatsArgs};

/// Opens an existing store read-only: reports never create, migrate or write
/// anything, and need no write access to the store or its directory.
pub(super) fn open_existing(address: &StoreAddress) -> anyhow::Result<Store> {
    if let Some(path) = address.path().filter(|path| !path.exists()) {
        bail!("no store at {} (`shoal run` creates it; --store names another)", path.display());
    }
    Ok(Store::open_read_only(address)?)
}

/// `shoal runs`.
pub fn runs(address: &StoreAddress, args: RunsArgs) -> anyhow::Result<()> {
    let store = open_existing(address)?;
    let runs = store.runs()?;
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:>4}  {:<11}  {:>6}  {:>9}  {:>6}  {:>10}  {:<19}  command",
            "run", "status", "tasks", "succeeded", "failed", "unfinished", "started"
        )?;
    }
    for run in runs {
        if args.json {
            writeln!(out, "{}", serde_json::to_string(&run)?)?;
            continue;
        }
        let failed: u64 = run.counts.iter().filter(|(s, _)| s.is_failure()).map(|(_, n)| n).sum();
        let succeeded = run.counts.get(&TaskStatus::Succeeded).copied().unwrap_or(0);
        writeln!(
            out,
            "{:>4}  {:<11}  {:>6}  {:>9}  {:>6}  {:>10}  {:<19}  {}",
            run.id,
            run.status.as_str(),
            total_so_far(&run),
            succeeded,
            failed,
            run.unfinished,
            local_time(run.started_at),
            run.command.join(" ")
        )?;
    }
    Ok(())
}

/// A run's total; while its input is still being read, what was read so far: `1234+`.
fn total_so_far(run: &RunSummary) -> String {
    let more = run.input_open && run.status == RunStatus::Running;
    format!("{}{}", run.total, if more { "+" } else { "" })
}

/// `shoal results`.
pub fn results(address: &StoreAddress, args: ResultsArgs) -> anyhow::Result<()> {
    let statuses =
        args.status.iter().map(|name| parse_status(name)).collect::<Result<Vec<_>, _>>()?;
    let store = open_existing(address)?;
    let run = pick_run(&store, args.run)?;
    store.run(run)?;
    // One status is filtered by the store; several, here.
    let mut tasks = match statuses.as_slice() {
        [one] => store.tasks(run, Some(*one))?,
        _ => store.tasks(run, None)?,
    };
    tasks.retain(|t| statuses.is_empty() || statuses.contains(&t.status));
    if !args.tasks.is_empty() {
        if let Some(missing) = args.tasks.iter().find(|&&n| !tasks.iter().any(|t| t.task == n)) {
            // Not there at all, or not in the statuses asked for.
            if !store.tasks(run, None)?.iter().any(|t| t.task == *missing) {
                bail!("run {run} has no task {missing}");
            }
        }
        tasks.retain(|t| args.tasks.contains(&t.task));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        for task in &tasks {
            writeln!(out, "{}", serde_json::to_string(task)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<15}  {:>8}  {:>9}  {:>8}  command",
        "task", "status", "attempts", "exit", "seconds"
    )?;
    for task in &tasks {
        writeln!(
            out,
            "{:>6}  {:<15}  {:>8}  {:>9}  {:>8}  {}",
            task.task,
            task.status.as_str(),
            task.attempts,
            exit_text(task),
            task.duration.map_or(String::new(), |d| format!("{d:.3}")),
            task.command
        )?;
    }
    Ok(())
}

/// A status by its name, or an error that lists the names.
pub(super) fn parse_status(name: &str) -> anyhow::Result<TaskStatus> {
    TaskStatus::parse(name).with_context(|| {
        let names: Vec<&str> = TaskStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown status '{name}': use one of {}", names.join(", "))
    })
}

/// How a task's last attempt ended, in a few characters.
pub(super) fn exit_text(task: &TaskRecord) -> String {
    match (task.exit_code, task.signal) {
        (_, Some(signal)) => signal_name(signal),
        (Some(code), None) => code.to_string(),
        (None, None) => String::new(),
    }
}

/// `shoal stats`.
pub fn stats(address: &StoreAddress, args: StatsArgs) -> anyhow::Result<()> {
    let store = open_existing(address)?;
    let run = pick_run(&store, args.run)?;
    let record = store.run(run)?;
    let stats = store.stats(run)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut value = serde_json::to_value(&stats)?;
        value["memory_limit_mode"] = serde_json::json!(record.memory_limit_mode);
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(out, "run {run} ({}): {} tasks", record.status.as_str(), stats.total)?;
    for (status, n) in stats.counts.iter().filter(|(_, n)| **n > 0) {
        writeln!(out, "  {:<16} {n}", status.as_str())?;
    }
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}s"));
    let rate = stats.success_rate.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    // Over the tasks that ran to an end; the others are counted, not hidden.
    let succeeded = stats.counts.get(&TaskStatus::Succeeded).copied().unwrap_or(0);
    writeln!(
        out,
        "success rate {rate} ({succeeded} of {} finished tasks; {} unfinished)",
        stats.finished, stats.unfinished
    )?;
    writeln!(
        out,
        "duration p50 {} p95 {} max {}",
        secs(stats.duration_p50),
        secs(stats.duration_p95),
        secs(stats.duration_max)
    )?;
    if let Some(mode) = &record.memory_limit_mode {
        writeln!(out, "memory limit enforced with {mode}")?;
    }
    writeln!(out, "{:>6}  {:>8}  {:>10}", "slot", "attempts", "busy")?;
    for slot in &stats.per_slot {
        writeln!(out, "{:>6}  {:>8}  {:>9.3}s", slot.slot, slot.tasks, slot.busy)?;
    }
    Ok(())
}

/// `shoal export`: one JSON object per task, with its attempts.
pub fn export(address: &StoreAddress, args: ExportArgs) -> anyhow::Result<()> {
    let store = open_existing(address)?;
    let run = pick_run(&store, args.run)?;
    store.run(run)?;
    let mut attempts: std::collections::HashMap<u64, Vec<AttemptRecord>> =
        std::collections::HashMap::new();
    for attempt in store.attempts(run)? {
        attempts.entry(attempt.task).or_default().push(attempt);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for task in store.tasks(run, None)? {
        let mut value = serde_json::to_value(&task)?;
        value["attempt_log"] =
            serde_json::to_value(attempts.remove(&task.task).unwrap_or_default())?;
        writeln!(out, "{value}")?;
    }
    out.flush()?;
    Ok(())
}

/// Unix seconds as local `YYYY-MM-DD HH:MM:SS`.
fn local_time(unix: f64) -> String {
    let secs = unix as libc::time_t;
    // SAFETY: localtime_r writes into the tm we own.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}
