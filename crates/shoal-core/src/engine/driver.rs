//! The driver loop: take tasks from the source while the queue is below its window,
//! poll the scheduler, act on its decisions, wait for the next event (an attempt
//! ending, a line of output, a deadline, a task from the source, a stop request, a
//! control request from outside), repeat.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::attempt::{supervise, Finished, KillLevel, Line};
use super::events::{Ended, EngineConfig, Frontend, Report, Started, Stop};
use super::source::{Pulled, Submission, TaskSource, QUEUE_WINDOW};
use crate::process::{limits, resolve_program, spawn, Exited, Limits, MemoryLimit};
use crate::run::kill_all;
use crate::scheduler::{Cancel, Decision, Scheduler};
use crate::store::{ControlAction, ControlRequest};
use crate::tap::TaskStep;
use crate::task::{AttemptOutcome, Output, SlotId, TaskId, TaskStatus};
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

/// Runs the tasks of `tasks` to completion or until `stop`, taking them from the
/// source as the queue runs low ([`QUEUE_WINDOW`]); after a stop it takes no more.
/// Must be called inside a tokio runtime with time and I/O enabled.
pub async fn run<F: Frontend, S: TaskSource<Payload = F::Payload>>(
    config: &EngineConfig,
    tasks: S,
    frontend: &mut F,
    stop: watch::Receiver<Stop>,
) -> Result<Report> {
    drive(config, tasks, frontend, stop, None).await
}

/// [`run`], steered from outside: each request from `controls` (a
/// [`ControlWatcher`](crate::store::ControlWatcher)'s) is applied as it comes, and
/// the front end told what was made of it ([`Frontend::control`]).
pub async fn run_steered<F: Frontend, S: TaskSource<Payload = F::Payload>>(
    config: &EngineConfig,
    tasks: S,
    frontend: &mut F,
    stop: watch::Receiver<Stop>,
    controls: &mut mpsc::UnboundedReceiver<ControlRequest>,
) -> Result<Report> {
    drive(config, tasks, frontend, stop, Some(controls)).await
}

async fn drive<F: Frontend, S: TaskSource<Payload = F::Payload>>(
    config: &EngineConfig,
    mut tasks: S,
    frontend: &mut F,
    mut stop: watch::Receiver<Stop>,
    mut controls: Option<&mut mpsc::UnboundedReceiver<ControlRequest>>,
) -> Result<Report> {
    let mut driver = Driver::new(config, frontend);
    let mut source_open = true;
    let (line_tx, mut line_rx) = mpsc::unbounded_channel::<Line>();
    let mut attempts: JoinSet<(SlotId, Finished)> = JoinSet::new();
    let mut decisions = Vec::new();
    let mut stop_open = true;
    loop {
        // A stop sent while an event was handled (a front end's halt on a task's end)
        // applies before anything more starts.
        if stop_open && stop.has_changed().unwrap_or(false) {
            driver.stop(*stop.borrow_and_update());
        }
        // Tasks at hand go into the queue up to its window; a stopped run takes none.
        while source_open && driver.wants_tasks() {
            match tasks.try_next() {
                Pulled::Task(task) => driver.submit(task),
                Pulled::Empty => break,
                Pulled::Ended => source_open = false,
            }
        }
        driver.sched.poll(driver.now(), &mut decisions);
        // A task that could not start frees its slot at once: poll again before waiting.
        let mut slot_freed = false;
        for decision in decisions.drain(..) {
            match decision {
                Decision::Start { slot, task, attempt } => {
                    let lines = config.line_buffer.then(|| line_tx.clone());
                    slot_freed |= !driver.start(slot, task, attempt, lines, &mut attempts);
                }
                Decision::Kill { slot, .. } => driver.kill(slot, KillLevel::Term),
            }
        }
        let pulling = source_open && driver.wants_tasks();
        if driver.sched.is_idle() && attempts.is_empty() && !pulling {
            break;
        }
        if slot_freed {
            continue;
        }
        // A time past what the clock can hold is never: no wakeup for it.
        let wakeup = driver.sched.next_wakeup().and_then(|at| driver.epoch.checked_add(at));
        tokio::select! {
            Some(joined) = attempts.join_next() => {
                let (slot, finished) = joined.map_err(|e| Error::Os {
                    operation: "supervise an attempt",
                    source: std::io::Error::other(e.to_string()),
                })?;
                // Lines come before their attempt's end.
                while let Ok((task, stream, line)) = line_rx.try_recv() {
                    driver.frontend.line(task, stream, &line);
                }
                driver.finish(slot, finished);
            }
            Some((task, stream, line)) = line_rx.recv() => driver.frontend.line(task, stream, &line),
            task = tasks.next(), if pulling => match task {
                Some(task) => driver.submit(task),
                None => source_open = false,
            },
            _ = sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {}
            changed = stop.changed(), if stop_open => match changed {
                Err(_) => stop_open = false,
                Ok(()) => driver.stop(*stop.borrow_and_update()),
            },
            request = next_request(&mut controls), if controls.is_some() => match request {
                Some(request) => driver.control(request),
                None => controls = None,
            },
        }
    }
    driver.report.unfinished = driver.sched.unfinished() as u64;
    Ok(driver.report)
}

/// The next control request; never ready without a channel.
async fn next_request(
    controls: &mut Option<&mut mpsc::UnboundedReceiver<ControlRequest>>,
) -> Option<ControlRequest> {
    match controls {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The driver's state between events; the event loop is in [`run`].
struct Driver<'a, F: Frontend> {
    config: &'a EngineConfig,
    frontend: &'a mut F,
    sched: Scheduler,
    epoch: Instant,
    /// The CPUs slots are pinned to, in turn.
    cpus: Vec<usize>,
    /// Index 0 is slot 1.
    slots: Vec<Option<InFlight>>,
    /// The payloads of the tasks taken from the source and not ended yet.
    payloads: HashMap<TaskId, F::Payload>,
    /// Program name -> its path on PATH, looked up once per run.
    programs: HashMap<String, String>,
    /// What every task gets in its environment besides its number and slot: the
    /// run's marker.
    env: Vec<(String, String)>,
    report: Report,
}

impl<'a, F: Frontend> Driver<'a, F> {
    fn new(config: &'a EngineConfig, frontend: &'a mut F) -> Self {
        Driver {
            config,
            frontend,
            sched: Scheduler::new(config.scheduler.clone()),
            epoch: Instant::now(),
            cpus: if config.pin { limits::allowed_cpus() } else { Vec::new() },
            slots: (0..config.scheduler.slots).map(|_| None).collect(),
            payloads: HashMap::new(),
            programs: HashMap::new(),
            env: config.marker.iter().map(|marker| marker.env()).collect(),
            report: Report::default(),
        }
    }

    /// The scheduler's clock.
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Whether to take more tasks from the source: the queue is below its window and
    /// the run was not stopped.
    fn wants_tasks(&self) -> bool {
        !self.sched.is_stopped() && self.sched.waiting() < QUEUE_WINDOW
    }

    /// A task from the source goes into the queue.
    fn submit(&mut self, task: Submission<F::Payload>) {
        let Submission { task, meta, attempts, payload } = task;
        self.payloads.insert(task, payload);
        self.sched.submit(task, meta, attempts, self.now());
    }

    /// Starts an attempt and adds its supervision to `attempts`; false when it could
    /// not be started (its end is already reported and its slot free again).
    fn start(
        &mut self,
        slot: SlotId,
        task: TaskId,
        attempt: u32,
        lines: Option<mpsc::UnboundedSender<Line>>,
        attempts: &mut JoinSet<(SlotId, Finished)>,
    ) -> bool {
        let payload = self.payloads.get(&task).expect("a started task has its payload");
        let command = self.frontend.command(task, slot, payload);
        let number = self.frontend.number(task, payload);
        let path = self.resolve(&command.program);
        let (limits, oom_kills) = self.limits(slot);
        let at = SystemTime::now();
        let started = Instant::now();
        match spawn(&command, path.as_deref(), limits, &self.env, number, slot) {
            Ok(spawned) => {
                self.tap(|| TaskStep::Started { task, attempt, slot, at });
                self.frontend.started(Started { task, attempt, slot, pid: spawned.pid, at });
                let (kill, kill_rx) = watch::channel(KillLevel::None);
                let (grace, cap) = (self.config.kill_grace, self.config.output_cap);
                let lines = lines.map(|tx| (task, tx));
                attempts.spawn(async move {
                    (slot, supervise(spawned, kill_rx, grace, cap, lines).await)
                });
                self.slots[slot - 1] = Some(InFlight { task, attempt, started, kill, oom_kills });
                true
            }
            Err(err) => {
                self.tap(|| TaskStep::Started { task, attempt, slot, at });
                self.frontend.started(Started { task, attempt, slot, pid: 0, at });
                let place = command.cwd.as_ref().map(|dir| format!(" in {}", dir.display()));
                let place = place.unwrap_or_default();
                let message = format!("shoal: cannot run '{}'{place}: {err}\n", command.program);
                let stderr = Output { bytes: message.into_bytes(), truncated: false };
                let outcome = AttemptOutcome::Failed { exit_code: NOT_RUNNABLE };
                let run = Ran { task, attempt, slot, started, max_rss_kb: None, exited: None };
                self.ended(run, outcome, Output::default(), stderr);
                false
            }
        }
    }

    /// The path of a program on PATH (cached per run); `None` if it is not there.
    fn resolve(&mut self, program: &str) -> Option<String> {
        if let Some(path) = self.programs.get(program) {
            return Some(path.clone());
        }
        let path = resolve_program(program)?.to_string_lossy().into_owned();
        self.programs.insert(program.to_owned(), path.clone());
        Some(path)
    }

    /// The limits of an attempt on `slot`, and the slot cgroup's OOM-kill count now.
    fn limits(&self, slot: SlotId) -> (Limits, Option<u64>) {
        let mut limits = Limits {
            cpu: self.config.pin.then(|| self.cpus[(slot - 1) % self.cpus.len()]),
            ..self.config.limits
        };
        let mut oom_kills = None;
        match self.config.memory.as_deref() {
            Some(MemoryLimit::Cgroup(cgroups)) => {
                limits.cgroup_procs = Some(cgroups.procs_fd(slot));
                oom_kills = Some(cgroups.oom_kills(slot));
            }
            Some(MemoryLimit::AddressSpace(bytes)) => limits.memory = Some(*bytes),
            None => {}
        }
        (limits, oom_kills)
    }

    /// An attempt's supervision has finished: classify and report it.
    fn finish(&mut self, slot: SlotId, finished: Finished) {
        let flight = self.slots[slot - 1].take().expect("a finished attempt had a slot");
        if *flight.kill.borrow() != KillLevel::None {
            self.kill_escaped(flight.task);
        }
        let memory = self.config.memory.as_deref();
        let outcome = classify(&finished, memory, slot, flight.oom_kills);
        let max_rss_kb = finished.exit.as_ref().ok().map(|e| e.max_rss_kb);
        let exited = finished.exit.as_ref().ok().map(|e| e.exited);
        let InFlight { task, attempt, started, .. } = flight;
        let run = Ran { task, attempt, slot, started, max_rss_kb, exited };
        self.ended(run, outcome, finished.stdout, finished.stderr);
    }

    /// After a task was killed (timeout, cancel, stop): its processes that left its
    /// group (`setsid`) are found by the run's marker and its number in their
    /// environment, and killed too, so that none outlives it. Only then: reading every
    /// process's environment costs milliseconds.
    fn kill_escaped(&self, task: TaskId) {
        let Some(marker) = &self.config.marker else {
            return; // no run marker: the task number alone could name another run's task
        };
        let escaped = marker.task_processes(task);
        if !escaped.is_empty() {
            tracing::info!(
                task,
                count = escaped.len(),
                "killing processes that left the task's group"
            );
            kill_all(&escaped);
        }
    }

    /// Hands a step to the tap's observers, if the run has a tap.
    fn tap(&self, step: impl FnOnce() -> TaskStep) {
        if let Some(tap) = &self.config.tap {
            tap.send(step);
        }
    }

    /// Tells the scheduler and the front end how an attempt ended.
    fn ended(&mut self, run: Ran, outcome: AttemptOutcome, stdout: Output, stderr: Output) {
        let verdict = self.sched.attempt_ended(run.slot, outcome, self.now());
        if verdict.final_status.is_some() {
            self.payloads.remove(&run.task);
        }
        match verdict.final_status {
            None => {}
            Some(TaskStatus::Succeeded) => self.report.succeeded += 1,
            Some(TaskStatus::Cancelled) => self.report.cancelled += 1,
            Some(_) => self.report.failed += 1,
        }
        let (exit_code, signal) = match run.exited {
            Some(Exited::Code(code)) => (Some(code), None),
            Some(Exited::Signal(signal)) => (None, Some(signal)),
            None => (None, None),
        };
        let (at, duration) = (SystemTime::now(), run.started.elapsed());
        self.tap(|| TaskStep::Ended {
            task: run.task,
            attempt: run.attempt,
            outcome: verdict.outcome,
            status: verdict.final_status,
            duration,
            at,
        });
        self.frontend.ended(Ended {
            task: run.task,
            attempt: run.attempt,
            slot: run.slot,
            outcome: verdict.outcome,
            exit_code,
            signal,
            final_status: verdict.final_status,
            retry_in: verdict.retry_in,
            max_attempts: verdict.max_attempts,
            at,
            duration,
            max_rss_kb: run.max_rss_kb,
            stdout,
            stderr,
        });
    }

    /// Raises the kill level of what runs on `slot`.
    fn kill(&self, slot: SlotId, level: KillLevel) {
        if let Some(flight) = &self.slots[slot - 1] {
            flight.kill.send_if_modified(|current| raise(current, level));
        }
    }

    /// Applies a control request, and tells the front end what it made of it.
    fn control(&mut self, request: ControlRequest) {
        let result = match request.action {
            ControlAction::CancelRun => {
                self.stop(Stop::Graceful);
                "stopping the run: no new tasks, running ones get SIGTERM".to_owned()
            }
            ControlAction::CancelTask { task } => {
                let mut kills = Vec::new();
                match self.sched.cancel(task, &mut kills) {
                    Cancel::Dropped => {
                        self.payloads.remove(&task);
                        self.report.cancelled += 1;
                        let (status, at) = (TaskStatus::Cancelled, SystemTime::now());
                        self.tap(|| TaskStep::EndedUnstarted { task, status, at });
                        self.frontend.cancelled(task);
                        format!("task {task} cancelled before it started")
                    }
                    Cancel::Killing => {
                        for decision in kills {
                            if let Decision::Kill { slot, .. } = decision {
                                self.kill(slot, KillLevel::Term);
                            }
                        }
                        format!("stopping task {task}: SIGTERM, SIGKILL after the grace")
                    }
                    Cancel::Unknown => format!("task {task} had already ended"),
                }
            }
            ControlAction::Pause | ControlAction::Unpause => {
                let pause = request.action == ControlAction::Pause;
                let was = self.sched.is_paused();
                self.sched.set_paused(pause);
                match (was, pause) {
                    (false, true) => "paused: no new tasks until unpaused".to_owned(),
                    (true, false) => "unpaused".to_owned(),
                    (true, true) => "already paused".to_owned(),
                    (false, false) => "was not paused".to_owned(),
                }
            }
            ControlAction::SetSlots { slots } => {
                let before = self.sched.slots();
                let cgroups = self.config.memory.as_deref().and_then(MemoryLimit::max_slots);
                let slots = (slots as usize).max(1);
                let given = slots.min(cgroups.unwrap_or(usize::MAX)).min(slots_for_open_files());
                self.sched.set_slots(given);
                let count = self.sched.slot_count();
                if self.slots.len() < count {
                    self.slots.resize_with(count, || None);
                }
                let mut result = format!("slots {before} -> {given}");
                if given < slots {
                    let why = match cgroups {
                        Some(n) if n == given => "the memory limit's cgroups were made for them",
                        _ => "what this process may keep open allows no more",
                    };
                    result += &format!(" (not {slots}: {why})");
                }
                result
            }
        };
        self.frontend.control(&request, &result);
    }

    /// A stop request: start nothing more and stop what runs (unless it drains),
    /// harder for `Immediate`.
    fn stop(&mut self, level: Stop) {
        let kill = match level {
            Stop::Run => return,
            Stop::Drain => return self.sched.drain(),
            Stop::Graceful => KillLevel::Term,
            Stop::Immediate => KillLevel::Kill,
        };
        // The scheduler's Kill decisions name the running slots: all of them.
        self.sched.stop(&mut Vec::new());
        for slot in 1..=self.slots.len() {
            self.kill(slot, kill);
        }
    }
}

/// The most slots the open-file limit serves: a running task holds its two pipes, its
/// pidfd and perhaps a cgroup's file, and shoal keeps some for itself (as `shoal run`
/// checks its `-j` at the start).
fn slots_for_open_files() -> usize {
    const PER_SLOT: u64 = 4;
    const OWN: u64 = 64;
    match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        Some(limit) => (limit.saturating_sub(OWN) / PER_SLOT).max(1) as usize,
        None => usize::MAX,
    }
}

/// What the driver knows of an attempt when it ends.
struct Ran {
    task: TaskId,
    attempt: u32,
    slot: SlotId,
    started: Instant,
    max_rss_kb: Option<u64>,
    /// How its process ended, if it ran and was reaped.
    exited: Option<Exited>,
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
