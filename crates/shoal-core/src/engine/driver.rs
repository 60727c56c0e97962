//! The driver loop: poll the scheduler, act on its decisions, wait for the next
//! event (an attempt ending, a line of output, a deadline, a stop request), repeat.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::attempt::{supervise, Finished, KillLevel, Line};
use super::events::{Ended, EngineConfig, Frontend, Report, Started, Stop};
use crate::process::{limits, resolve_program, spawn, Exited, Limits, MemoryLimit};
use crate::scheduler::{Decision, Scheduler};
use crate::task::{AttemptOutcome, Output, SlotId, TaskId, TaskMeta, TaskStatus};
use crate::{Error, Result};

/// Exit code of a task whose program could not be started, as shells use.
const NOT_RUNNABLE: i32 = 127;

/// An attempt in flight, seen from the driver.
struct InFlight {
    task: TaskId,
    attempt: u32,
    started: Instant,
    kill: watch::Sender<KillLevel>,
    /// The slot cgroup's OOM-kill count when the attempt started.
    oom_kills: Option<u64>,
}

/// Runs `tasks` (id, meta, attempts already made) to completion or until `stop`.
/// Must be called inside a tokio runtime with time and I/O enabled.
pub async fn run<F: Frontend>(
    config: &EngineConfig,
    tasks: impl IntoIterator<Item = (TaskId, TaskMeta, u32)>,
    frontend: &mut F,
    mut stop: watch::Receiver<Stop>,
) -> Result<Report> {
    let epoch = Instant::now();
    let mut sched = Scheduler::new(config.scheduler.clone());
    for (task, meta, attempts) in tasks {
        sched.submit(task, meta, attempts, Duration::ZERO);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut slots: Vec<Option<InFlight>> = (0..config.scheduler.slots).map(|_| None).collect();
    let mut attempts: JoinSet<(SlotId, Finished)> = JoinSet::new();
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Line>();
    let mut report = Report::default();
    let mut decisions = Vec::new();
    let mut stop_open = true;
    // Program name -> its path on PATH, looked up once per run.
    let mut programs: HashMap<String, String> = HashMap::new();

    loop {
        sched.poll(epoch.elapsed(), &mut decisions);
        // A task that could not start frees its slot at once: poll again before waiting.
        let mut slot_freed = false;
        for decision in decisions.drain(..) {
            match decision {
                Decision::Start { slot, task, attempt } => {
                    let mut command = frontend.command(task, slot);
                    if let Some(path) = programs.get(&command.program) {
                        command.program.clone_from(path);
                    } else if let Some(path) = resolve_program(&command.program) {
                        let path = path.to_string_lossy().into_owned();
                        programs
                            .insert(std::mem::replace(&mut command.program, path.clone()), path);
                    }
                    let mut limits =
                        Limits { cpu: config.pin.then_some((slot - 1) % cores), ..config.limits };
                    let mut oom_kills = None;
                    match config.memory.as_deref() {
                        Some(MemoryLimit::Cgroup(cgroups)) => {
                            limits.cgroup_procs = Some(cgroups.procs_fd(slot));
                            oom_kills = Some(cgroups.oom_kills(slot));
                        }
                        Some(MemoryLimit::AddressSpace(bytes)) => limits.memory = Some(*bytes),
                        None => {}
                    }
                    let at = SystemTime::now();
                    let started = Instant::now();
                    match spawn(&command, limits, &config.env, task, slot) {
                        Ok(spawned) => {
                            frontend.started(Started { task, attempt, slot, pid: spawned.pid, at });
                            let (kill, kill_rx) = watch::channel(KillLevel::None);
                            let lines = config.line_buffer.then(|| (task, line_tx.clone()));
                            let grace = config.kill_grace;
                            let cap = config.output_cap;
                            attempts.spawn(async move {
                                (slot, supervise(spawned, kill_rx, grace, cap, lines).await)
                            });
                            slots[slot - 1] =
                                Some(InFlight { task, attempt, started, kill, oom_kills });
                        }
                        Err(err) => {
                            frontend.started(Started { task, attempt, slot, pid: 0, at });
                            let message =
                                format!("shoal: cannot run '{}': {err}\n", command.program);
                            let outcome = AttemptOutcome::Failed { exit_code: NOT_RUNNABLE };
                            let verdict = sched.attempt_ended(slot, outcome, epoch.elapsed());
                            count(&mut report, verdict.final_status);
                            slot_freed = true;
                            let stderr = Output { bytes: message.into_bytes(), truncated: false };
                            frontend.ended(Ended {
                                task,
                                attempt,
                                slot,
                                outcome: verdict.outcome,
                                final_status: verdict.final_status,
                                at: SystemTime::now(),
                                duration: started.elapsed(),
                                max_rss_kb: None,
                                stdout: Output::default(),
                                stderr,
                            });
                        }
                    }
                }
                Decision::Kill { slot, .. } => {
                    if let Some(flight) = &slots[slot - 1] {
                        flight.kill.send_if_modified(|level| raise(level, KillLevel::Term));
                    }
                }
            }
        }
        if sched.is_idle() && attempts.is_empty() {
            break;
        }
        if slot_freed {
            continue;
        }
        let wakeup = sched.next_wakeup().map(|at| epoch + at);
        tokio::select! {
            Some(joined) = attempts.join_next() => {
                let (slot, finished) = joined.map_err(|e| Error::Os {
                    operation: "supervise an attempt",
                    source: std::io::Error::other(e.to_string()),
                })?;
                while let Ok((task, stream, line)) = line_rx.try_recv() {
                    frontend.line(task, stream, &line);
                }
                let flight = slots[slot - 1].take().expect("a finished attempt had a slot");
                let outcome = classify(&finished, config.memory.as_deref(), slot, flight.oom_kills);
                let verdict = sched.attempt_ended(slot, outcome, epoch.elapsed());
                count(&mut report, verdict.final_status);
                frontend.ended(Ended {
                    task: flight.task,
                    attempt: flight.attempt,
                    slot,
                    outcome: verdict.outcome,
                    final_status: verdict.final_status,
                    at: SystemTime::now(),
                    duration: flight.started.elapsed(),
                    max_rss_kb: finished.exit.as_ref().ok().map(|e| e.max_rss_kb),
                    stdout: finished.stdout,
                    stderr: finished.stderr,
                });
            }
            Some((task, stream, line)) = line_rx.recv() => frontend.line(task, stream, &line),
            _ = sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {}
            changed = stop.changed(), if stop_open => {
                if changed.is_err() {
                    stop_open = false;
                    continue;
                }
                let level = *stop.borrow_and_update();
                if level != Stop::Run {
                    sched.stop(&mut decisions);
                    decisions.clear(); // Kill decisions: done below, harder for Immediate.
                    let kill = if level == Stop::Immediate { KillLevel::Kill } else { KillLevel::Term };
                    for flight in slots.iter().flatten() {
                        flight.kill.send_if_modified(|l| raise(l, kill));
                    }
                }
            }
        }
    }
    report.unfinished = sched.unfinished() as u64;
    Ok(report)
}

/// Raises a kill level, never lowers it; true when it changed.
fn raise(level: &mut KillLevel, to: KillLevel) -> bool {
    let changed = to > *level;
    *level = (*level).max(to);
    changed
}

/// The outcome of an attempt from its exit, its output and, under a cgroup memory
/// limit, the slot's OOM-kill count (`oom_kills` before it started).
fn classify(
    finished: &Finished,
    memory: Option<&MemoryLimit>,
    slot: SlotId,
    oom_kills: Option<u64>,
) -> AttemptOutcome {
    let outcome = match &finished.exit {
        Ok(info) => match info.exited {
            Exited::Code(0) => AttemptOutcome::Succeeded,
            Exited::Code(code) => AttemptOutcome::Failed { exit_code: code },
            Exited::Signal(signal) => AttemptOutcome::Crashed { signal },
        },
        // Could not reap (should not happen): the attempt's fate is unknown.
        Err(_) => AttemptOutcome::Failed { exit_code: -1 },
    };
    if outcome == AttemptOutcome::Succeeded {
        return outcome;
    }
    let exceeded = match memory {
        Some(MemoryLimit::Cgroup(cgroups)) => cgroups.oom_kills(slot) > oom_kills.unwrap_or(0),
        Some(MemoryLimit::AddressSpace(_)) => {
            limits::shows_allocation_failure(&finished.stderr.bytes)
        }
        None => false,
    };
    if exceeded {
        AttemptOutcome::MemoryExceeded
    } else {
        outcome
    }
}

fn count(report: &mut Report, status: Option<TaskStatus>) {
    match status {
        None => {}
        Some(TaskStatus::Succeeded) => report.succeeded += 1,
        Some(TaskStatus::Cancelled) => report.cancelled += 1,
        Some(_) => report.failed += 1,
    }
}
