//! `shoal logs [RUN] TASK`: one task of a run, every attempt of it with what it
//! printed, read from the store.

use std::io::Write;

use anyhow::bail;
use shoal_core::process::signal::signal_name;
use shoal_core::store::{AttemptRecord, StoreAddress};

use super::pick_run;
use super::report::{exit_text, open_existing};
use crate::cli::LogsArgs;

/// `shoal logs`.
pub fn logs(address: &StoreAddress, args: LogsArgs) -> anyhow::Result<()> {
    let (run, task) = match args.ids[..] {
        [task] => (None, task),
        [run, task] => (Some(run), task),
        _ => bail!("give the task, or the run and the task"),
    };
    let store = open_existing(address)?;
    let run = pick_run(&store, run)?;
    store.run(run)?;
    let Some(record) = store.tasks(run, None)?.into_iter().find(|t| t.task as i64 == task) else {
        bail!("run {run} has no task {task}");
    };
    let mut attempts: Vec<AttemptRecord> =
        store.attempts(run)?.into_iter().filter(|a| a.task == record.task).collect();
    attempts.sort_by_key(|a| a.attempt);
    let mut out = std::io::stdout().lock();
    if args.json {
        for attempt in &attempts {
            writeln!(out, "{}", serde_json::to_string(attempt)?)?;
        }
        return Ok(());
    }
    let exit = exit_text(&record);
    let exit = if exit.is_empty() { String::new() } else { format!(", exit {exit}") };
    writeln!(
        out,
        "run {run} task {}: {}{exit}, {} attempt{}: {}",
        record.task,
        record.status.as_str(),
        attempts.len(),
        if attempts.len() == 1 { "" } else { "s" },
        record.command
    )?;
    for attempt in &attempts {
        writeln!(out, "--- attempt {}: {}", attempt.attempt, attempt_line(attempt))?;
        for (name, output, truncated) in [
            ("stdout", &attempt.stdout, attempt.stdout_truncated),
            ("stderr", &attempt.stderr, attempt.stderr_truncated),
        ] {
            match output {
                None => writeln!(out, "[{name}: not kept]")?,
                Some(bytes) if bytes.is_empty() => {}
                Some(bytes) => {
                    writeln!(out, "[{name}]")?;
                    out.write_all(bytes)?;
                    if !bytes.ends_with(b"\n") {
                        writeln!(out)?;
                    }
                    if truncated {
                        writeln!(out, "[{name} truncated: the store keeps --output-limit]")?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// How an attempt went, on one line: "failed, exit 3, 0.012s on slot 1".
fn attempt_line(attempt: &AttemptRecord) -> String {
    let mut line = attempt.outcome.clone().unwrap_or_else(|| "running".to_owned());
    match (attempt.exit_code, attempt.signal) {
        (_, Some(signal)) => line += &format!(", {}", signal_name(signal)),
        (Some(code), None) => line += &format!(", exit {code}"),
        (None, None) => {}
    }
    if let Some(duration) = attempt.duration {
        line += &format!(", {duration:.3}s");
    }
    line + &format!(" on slot {} (pid {})", attempt.slot, attempt.pid)
}
