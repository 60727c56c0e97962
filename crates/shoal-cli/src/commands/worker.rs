//! `shoal worker`: an agent of a PostgreSQL store. It claims ready tasks of shared runs
//! as its slots free up and runs each claim's one attempt on the local engine; every
//! attempt's start and end go through the agent's fenced writer (group commit).
//!
//! Threads: the claimer (claims for the free slots, hands each claim to the engine
//! over a bounded channel, waits on `LISTEN` or a poll when there is nothing to
//! claim, and on a freed slot when all are busy), the engine on this thread's
//! runtime, the writer thread, and the agent's heartbeat. Shutdown: a first SIGTERM
//! or SIGINT drains (a watch): the claimer stops (the agent is `draining`) and the
//! engine's source ends at once; the engine runs what it started to its end; the
//! writer finishes; the agent is `stopped`, giving back what it claimed and did not
//! run, and its lease released. A second signal kills the running tasks, records
//! nothing more and leaves the lease to expire: a crash, which the other agents
//! recover from.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal_core::engine::{
    self, Ended, EngineConfig, Frontend, Pulled, Started, Stop, Submission, TaskSource,
};
use shoal_core::process::{CommandLine, Limits};
use shoal_core::scheduler::{Backoff, SchedulerConfig};
use shoal_core::store::postgres::{Agent, AgentTimings, Claimed, Rejected};
use shoal_core::store::{unix_now, Store, StoreAddress, StoreEvent, Writer};
use shoal_core::{Output, SlotId, TaskId, TaskStatus};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

use super::printer::PRINT_LIMIT;
use super::run::RunOptions;
use crate::cli::WorkerArgs;
use crate::jobs;
use crate::template::{display, Template};
use crate::Exit;

/// How long an idle agent waits for a notification before it claims again anyway.
const POLL: Duration = Duration::from_millis(500);

/// Tasks shorter than this (a moving average) are claimed ahead of the free slots,
/// [`AHEAD_PER_SLOT`] per slot: one claim's commit then serves many tasks.
const SHORT_TASK: Duration = Duration::from_millis(20);

/// How many tasks per slot an agent of short tasks holds claimed ahead.
const AHEAD_PER_SLOT: usize = 32;

/// How long a drained agent waits for its claimer to stop.
const CLAIMER_GRACE: Duration = Duration::from_secs(2);

/// The engine's source: the claims handed over, until the agent drains.
struct Claims {
    rx: mpsc::Receiver<Submission<Job>>,
    drained: watch::Receiver<bool>,
}

impl TaskSource for Claims {
    type Payload = Job;

    fn try_next(&mut self) -> Pulled<Job> {
        if *self.drained.borrow() {
            return Pulled::Ended;
        }
        match self.rx.try_recv() {
            Ok(task) => Pulled::Task(task),
            Err(mpsc::error::TryRecvError::Empty) => Pulled::Empty,
            Err(mpsc::error::TryRecvError::Disconnected) => Pulled::Ended,
        }
    }

    async fn next(&mut self) -> Option<Submission<Job>> {
        if *self.drained.borrow() {
            return None;
        }
        tokio::select! {
            task = self.rx.recv() => task,
            _ = self.drained.wait_for(|d| *d) => None,
        }
    }
}

/// Runs `shoal worker`.
pub fn worker(address: &StoreAddress, args: WorkerArgs) -> anyhow::Result<Exit> {
    if !matches!(address, StoreAddress::Postgres(_)) {
        bail!("shoal worker claims tasks from a PostgreSQL store: give --store postgresql://...");
    }
    let slots = match args.jobs {
        Some(form) => form.slots(jobs::cores(), None, jobs::MAX_JOBS)?,
        None => jobs::cores(),
    };
    let name = args.name.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "worker".into())
    });
    let agent = Arc::new(Agent::register(address, &name, slots, AgentTimings::from_env())?);
    note!("shoal: worker {name} (agent {}) on {address}: {slots} slots", agent.id());
    let ran = run_agent(address, agent, &name, slots, &args.runs)?;
    note!(
        "shoal: worker {name}: {} attempts ({} succeeded), {} late results rejected",
        ran.attempts,
        ran.succeeded,
        ran.rejected
    );
    Ok(match ran.crashed {
        Some(signal) => Exit::Interrupted(signal),
        None => Exit::Success,
    })
}

/// What an agent did.
#[derive(Debug, Default)]
pub(super) struct Ran {
    attempts: u64,
    succeeded: u64,
    rejected: u64,
    /// Stopped by a second signal: its tasks are left to the others.
    crashed: Option<i32>,
}

/// A claimed task on its way through the engine.
pub(super) struct Job {
    claim: Claimed,
    spec: Arc<RunSpec>,
}

/// What running a shared run's tasks needs of the run.
pub(super) struct RunSpec {
    template: Template,
    output_limit: usize,
    /// The directory the run was submitted from: its tasks run there, and fail
    /// (saying so) on a machine that has no such directory.
    cwd: Option<PathBuf>,
}

/// Runs the agent's slots until a signal stops it; see the module doc.
pub(super) fn run_agent(
    address: &StoreAddress,
    agent: Arc<Agent>,
    name: &str,
    slots: u32,
    runs: &[i64],
) -> anyhow::Result<Ran> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    // Draining: set by a first signal or a store that takes no more writes; the
    // claimer stops, and the engine's source ends at once (claims it had not taken
    // yet are given back when the agent stops).
    let draining = Arc::new(watch::channel(false).0);
    let crashing = Arc::new(AtomicBool::new(false));
    let busy = Arc::new(AtomicUsize::new(0));
    // The moving average of its tasks' durations, microseconds; none measured yet: MAX.
    let mean_us = Arc::new(AtomicU64::new(u64::MAX));
    let (freed_tx, freed_rx) = std_mpsc::channel::<()>();
    let (jobs_tx, jobs_rx) = mpsc::channel::<Submission<Job>>(slots as usize);
    let mut claims = Claims { rx: jobs_rx, drained: draining.subscribe() };
    let rejected = Arc::new(AtomicUsize::new(0));
    // The claims this agent holds until their end is committed.
    let held: Held = Arc::new(Mutex::new(HashSet::new()));
    let writer = {
        let (rejected, failed, name) = (rejected.clone(), draining.clone(), name.to_owned());
        let held = held.clone();
        agent.writer(
            Box::new(move |batch| {
                let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                for event in batch {
                    if let StoreEvent::AttemptEnded { run, task, attempt, .. } = event {
                        held.remove(&(*run, *task, *attempt));
                    }
                }
            }),
            Box::new(move |e| {
                note!("shoal: worker {name}: the store takes no more writes ({e}): draining");
                failed.send_replace(true);
            }),
            Box::new(move |r: &Rejected| {
                rejected.fetch_add(1, Ordering::Relaxed);
                note!(
                    "shoal: run {}: the late result of task {} attempt {} ({}) was rejected: \
                     the task had been rescued from this agent",
                    r.run,
                    r.task,
                    r.attempt,
                    r.status
                );
            }),
        )?
    };
    let store = Store::open_read_only(address)?;
    let (claimer_done, claimer_ended) = std_mpsc::channel();
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            slots: slots as usize,
            aging: None,
            // One attempt per claim: the store decides on retries.
            backoff: Backoff { base: Duration::ZERO, max: Duration::ZERO },
            retry_timeouts: false,
            start_interval: Duration::ZERO,
            start_gate: None,
            median_timeout: None,
        },
        kill_grace: Duration::from_secs(2),
        output_cap: PRINT_LIMIT as usize,
        limits: Limits::default(),
        memory: None,
        pin: false,
        line_buffer: false,
        marker: None,
        tap: None,
    };
    let mut frontend = AgentFrontend {
        writer: &writer,
        running: HashMap::new(),
        busy: busy.clone(),
        mean_us: mean_us.clone(),
        freed: freed_tx,
        crashing: crashing.clone(),
        ran: Ran::default(),
    };
    let claimer = {
        let (draining, busy, held, mean_us) =
            (draining.clone(), busy.clone(), held.clone(), mean_us.clone());
        let (agent, runs) = (agent.clone(), runs.to_vec());
        std::thread::Builder::new()
            .name("shoal-claimer".into())
            .spawn(move || {
                let shared = (&*draining, &*busy, &*mean_us, &held);
                let ended =
                    claim_loop(&agent, &store, slots as usize, &runs, shared, &freed_rx, jobs_tx);
                let _ = claimer_done.send(ended);
            })
            .context("start the claimer thread")?
    };
    let report = runtime.block_on(async {
        let signals = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        let watcher = match signals {
            (Ok(int), Ok(term)) => Some(tokio::spawn(watch_signals(
                int,
                term,
                draining.clone(),
                crashing.clone(),
                stop_tx,
            ))),
            _ => None,
        };
        let report = engine::run(&config, &mut claims, &mut frontend, stop_rx).await;
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        report
    });
    // The claimer stops within its poll once draining; one stuck in the database is
    // left behind (its claims, if any, are given back below).
    draining.send_replace(true);
    let claimed = match claimer_ended.recv_timeout(CLAIMER_GRACE) {
        Ok(ended) => ended,
        Err(_) => Ok(()),
    };
    if claimer.is_finished() {
        let _ = claimer.join();
    }
    let report = report.map_err(anyhow::Error::from).and(claimed);
    let mut ran = std::mem::take(&mut frontend.ran);
    drop(frontend);
    let written = writer.finish();
    ran.rejected = rejected.load(Ordering::Relaxed) as u64;
    if crashing.load(Ordering::Relaxed) {
        ran.crashed = Some(libc::SIGTERM);
        return Ok(ran);
    }
    report?;
    written.context("record the attempts")?;
    agent.stop()?;
    Ok(ran)
}

/// The claims an agent holds: (run, task, attempt), from the claim to the commit of
/// the attempt's end.
type Held = Arc<Mutex<HashSet<(i64, TaskId, u32)>>>;

/// Claims for the free slots until draining; closes the engine's channel at the end.
/// After a failed claim (a lost connection: it may have committed), the tasks the
/// store says this agent runs but it does not hold are given back first.
fn claim_loop(
    agent: &Agent,
    store: &Store,
    slots: usize,
    runs: &[i64],
    (draining, busy, mean_us, held): (&watch::Sender<bool>, &AtomicUsize, &AtomicU64, &Held),
    freed: &std_mpsc::Receiver<()>,
    jobs: mpsc::Sender<Submission<Job>>,
) -> anyhow::Result<()> {
    let mut waker = agent.waker();
    let mut specs: HashMap<i64, Arc<RunSpec>> = HashMap::new();
    let mut warned = None::<Instant>;
    // The engine's ids: unique among the claims it is handed (tasks of many runs).
    let mut seq: TaskId = 0;
    let mut lost_claim = false;
    while !*draining.borrow() {
        // Short tasks are claimed ahead, so that a claim (a commit) serves many.
        let short = mean_us.load(Ordering::Relaxed) < SHORT_TASK.as_micros() as u64;
        let room = if short { slots * (1 + AHEAD_PER_SLOT) } else { slots };
        let free = room.saturating_sub(busy.load(Ordering::Relaxed));
        // Claimed ahead, the next claim waits until half the room is free.
        if free == 0 || (short && free < room / 2) {
            let _ = freed.recv_timeout(POLL);
            continue;
        }
        if lost_claim {
            let known: Vec<_> =
                held.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect();
            match agent.release_unknown(&known) {
                Ok(_) => lost_claim = false,
                Err(_) => {
                    std::thread::sleep(POLL);
                    continue;
                }
            }
        }
        let claimed = match agent.claim(free, runs) {
            Ok(claimed) => claimed,
            // A lost connection (a restarted server): claim again after a while.
            Err(e) => {
                lost_claim = true;
                if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                    warned = Some(Instant::now());
                    note!("shoal: warning: cannot claim tasks now: {e}");
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        if claimed.is_empty() {
            waker.wait(POLL);
            continue;
        }
        busy.fetch_add(claimed.len(), Ordering::Relaxed);
        let mut holding = held.lock().unwrap_or_else(|p| p.into_inner());
        holding.extend(claimed.iter().map(|c| (c.run, c.task, c.attempt)));
        drop(holding);
        for claim in claimed {
            let spec = match specs.get(&claim.run) {
                Some(spec) => spec.clone(),
                None => {
                    let spec = Arc::new(run_spec(store, claim.run)?);
                    specs.insert(claim.run, spec.clone());
                    spec
                }
            };
            seq += 1;
            let submission = Submission {
                task: seq,
                meta: claim.meta.clone(),
                attempts: claim.attempt - 1,
                payload: Job { claim, spec },
            };
            if jobs.blocking_send(submission).is_err() {
                return Ok(());
            }
        }
    }
    agent.drain()?;
    Ok(())
}

/// The template and options of shared run `run`, from the store.
fn run_spec(store: &Store, run: i64) -> anyhow::Result<RunSpec> {
    let record = store.run(run)?;
    let options: RunOptions = serde_json::from_value(record.options)
        .with_context(|| format!("run {run} has options this shoal cannot read"))?;
    Ok(RunSpec {
        template: Template::parse(&record.command, options.shell)?,
        output_limit: options.output_limit as usize,
        cwd: (!record.cwd.is_empty()).then(|| PathBuf::from(&record.cwd)),
    })
}

/// First SIGINT/SIGTERM: drain; second: kill the running tasks and record nothing more.
async fn watch_signals(
    mut int: tokio::signal::unix::Signal,
    mut term: tokio::signal::unix::Signal,
    draining: Arc<watch::Sender<bool>>,
    crashing: Arc<AtomicBool>,
    stop: watch::Sender<Stop>,
) {
    let mut first = true;
    loop {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        if first {
            first = false;
            note!("shoal: draining: no new tasks; running ones finish (again to kill them now)");
            draining.send_replace(true);
        } else {
            note!("shoal: killing running tasks; the other agents take them over");
            crashing.store(true, Ordering::Relaxed);
            let _ = stop.send(Stop::Immediate);
        }
    }
}

/// The engine's front end of an agent: renders each claim's command and hands its
/// attempt's start and end to the fenced writer.
struct AgentFrontend<'a> {
    writer: &'a Writer,
    /// The engine's task id -> the claim it runs (ids are unique in the engine only).
    running: HashMap<TaskId, (i64, u64, u32, usize, Option<String>)>,
    busy: Arc<AtomicUsize>,
    mean_us: Arc<AtomicU64>,
    freed: std_mpsc::Sender<()>,
    crashing: Arc<AtomicBool>,
    ran: Ran,
}

impl Frontend for AgentFrontend<'_> {
    type Payload = Job;

    fn command(&mut self, task: TaskId, slot: SlotId, job: &Job) -> CommandLine {
        let c = &job.claim;
        let mut command = job.spec.template.render(&c.args, c.task, slot);
        command.cwd = job.spec.cwd.clone();
        let shown = job.spec.template.uses_slot().then(|| display(&command));
        self.running.insert(task, (c.run, c.task, c.attempt, job.spec.output_limit, shown));
        command
    }

    fn number(&self, _task: TaskId, job: &Job) -> TaskId {
        job.claim.task
    }

    fn started(&mut self, event: Started) {
        let Some((run, task, attempt, _, command)) = self.running.get_mut(&event.task) else {
            return;
        };
        let started_at = event
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or_else(|_| unix_now(), |d| d.as_secs_f64());
        self.writer.send(StoreEvent::AttemptStarted {
            run: *run,
            task: *task,
            attempt: *attempt,
            slot: event.slot,
            pid: event.pid,
            started_at,
            command: command.take(),
        });
    }

    fn ended(&mut self, event: Ended) {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        let took = event.duration.as_micros().min(u128::from(u64::MAX / 2)) as u64;
        let mean = match self.mean_us.load(Ordering::Relaxed) {
            u64::MAX => took,
            mean => mean - mean / 8 + took / 8,
        };
        self.mean_us.store(mean, Ordering::Relaxed);
        let _ = self.freed.send(());
        let Some((run, task, attempt, limit, _)) = self.running.remove(&event.task) else {
            return;
        };
        if self.crashing.load(Ordering::Relaxed) {
            return;
        }
        self.ran.attempts += 1;
        if event.outcome.status() == TaskStatus::Succeeded {
            self.ran.succeeded += 1;
        }
        let cut = |o: Output| {
            if o.bytes.len() <= limit {
                o
            } else {
                Output { bytes: o.bytes[..limit].to_vec(), truncated: true }
            }
        };
        let ended_at = event
            .at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or_else(|_| unix_now(), |d| d.as_secs_f64());
        self.writer.send(StoreEvent::AttemptEnded {
            run,
            task,
            attempt,
            ended_at,
            duration: event.duration.as_secs_f64(),
            outcome: event.outcome,
            exit_code: event.exit_code,
            signal: event.signal,
            final_status: event.final_status,
            max_rss_kb: event.max_rss_kb,
            stdout: cut(event.stdout),
            stderr: cut(event.stderr),
        });
    }
}
