//! What the machine holds: its settings, its tasks and worker places, and what it
//! asks the driver to do (`Action`). Queries that change nothing are here too.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use super::super::config::{End, PoolConfig, PoolStats, TaskEvent, WorkerStats};
use super::super::policy::{Cause, Elastic, Phase, Sent, Silence, StartFailures};
use super::super::slots::SlotTable;
use crate::process::MemoryLimit;
use crate::protocol::MAX_FRAME_LEN;
use crate::scheduler::{Backoff, Decision, Scheduler, SchedulerConfig};
use crate::task::{AttemptOutcome, TaskId, TaskStatus};

/// Task durations kept per place for the p95.
const DURATIONS_KEPT: usize = 1024;

/// What the machine needs of the pool's configuration (no program, no bytes).
#[derive(Debug, Clone)]
pub(in crate::workers) struct Settings {
    /// Worker places at the start; an elastic pool's maximum.
    pub workers: usize,
    /// Scheduler slots per place (the pool's `prefetch`, at least 1).
    pub lanes: usize,
    pub min_workers: Option<usize>,
    pub idle_timeout: Option<Duration>,
    /// The memory limit's cgroups (one per place): the most places there can be.
    pub cap: Option<usize>,
    /// The memory limit is `RLIMIT_AS`: a `MemoryError` is the limit's doing.
    pub address_space_limit: bool,
    /// The pool has an initializer: a worker is sent Init after Welcome.
    pub init: bool,
    pub heartbeat: Duration,
    pub heartbeat_timeout: Duration,
    pub kill_grace: Duration,
    pub retry_delay: Duration,
    pub max_tasks_per_worker: Option<u64>,
    pub recycle_memory: Option<u64>,
    /// Emit `Action::Record`s (the pool has a store, or a tap).
    pub recording: bool,
    /// The records go to a store, which keeps each result and traceback (a tap alone
    /// takes neither, so they are not copied for it).
    pub storing: bool,
    /// The largest frame a worker takes (`MAX_FRAME_LEN`): a Run past it fails.
    pub max_frame: u64,
}

impl Settings {
    pub fn new(config: &PoolConfig, memory: Option<&MemoryLimit>, storing: bool) -> Self {
        Settings {
            workers: config.workers,
            lanes: config.prefetch.max(1),
            min_workers: config.min_workers,
            idle_timeout: config.idle_timeout,
            cap: memory.and_then(MemoryLimit::max_slots),
            address_space_limit: matches!(memory, Some(MemoryLimit::AddressSpace(_))),
            init: config.init.is_some(),
            heartbeat: config.heartbeat,
            heartbeat_timeout: config.heartbeat_timeout,
            kill_grace: config.kill_grace,
            retry_delay: config.retry_delay,
            max_tasks_per_worker: config.max_tasks_per_worker,
            recycle_memory: config.recycle_memory,
            recording: storing || config.tap.is_some(),
            storing,
            max_frame: u64::from(MAX_FRAME_LEN),
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::workers) enum Action {
    /// Start a worker for this place (its cgroup and CPU are the place's). If it
    /// cannot start, the driver says so with `Machine::spawn_failed`.
    Spawn(usize),
    /// Send a message to the worker of this place.
    Send(usize, Out),
    /// SIGKILL the worker of this place (its exit follows).
    Kill(usize),
    /// Write to the pool's store and tap (only with `Settings::recording`).
    Record(Record),
}

/// A message to a worker; the driver makes its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::workers) enum Out {
    Welcome,
    /// The pool's initializer.
    Init,
    /// A task; its payload is `Machine::payload_mut`.
    Run(Sent),
    Shutdown,
}

/// What the store is told.
#[derive(Debug, Clone, PartialEq)]
pub(in crate::workers) enum Record {
    /// An attempt began on `place`; `running`: in its worker (whose pid the driver
    /// knows), not only assigned to it.
    Started {
        task: TaskId,
        attempt: u32,
        place: usize,
        running: bool,
    },
    Ended {
        task: TaskId,
        attempt: u32,
        ran: Duration,
        outcome: AttemptOutcome,
        status: Option<TaskStatus>,
        result: Option<Vec<u8>>,
        why: String,
    },
    Cancelled(TaskId),
    /// Ended at submit with the result a store already held.
    Reused(TaskId, Vec<u8>),
}

/// What the machine may ask of a worker's process, read only when a rule needs it
/// (the driver reads `/proc`; tests give figures).
pub(in crate::workers) trait Probe {
    /// CPU time of the worker of `place`, in clock ticks.
    fn cpu_ticks(&mut self, place: usize) -> Option<u64>;
    /// Its resident size, bytes.
    fn rss(&mut self, place: usize) -> Option<u64>;
}

/// A task submitted to the machine.
#[derive(Debug)]
pub(in crate::workers) struct NewTask {
    pub id: TaskId,
    pub meta: crate::task::TaskMeta,
    pub payload: Vec<u8>,
    /// A store's result for it: it ends at once with it.
    pub reused: Option<Vec<u8>>,
}

/// A task the machine holds until its final event.
#[derive(Debug)]
pub(super) struct Task {
    /// Opaque: the driver sends it.
    pub payload: Vec<u8>,
    pub retries: u32,
    pub timeout: Option<Duration>,
    /// Cancel asked before it started: it ends cancelled when the scheduler picks it.
    pub cancel: bool,
    /// A worker has it (sent, or held for a fresh worker): too late to cancel.
    pub with_worker: bool,
    /// It was among several Runs a worker had when it died: it runs alone next, so
    /// that a death is blamed on the Run that caused it.
    pub suspect: bool,
    /// Attempts that ended with its worker dead.
    pub crashes: u32,
}

/// A worker process, as the rules see it.
#[derive(Debug)]
pub(super) struct Live {
    pub phase: Phase,
    /// Runs sent and not answered, oldest (the one running) first.
    pub in_flight: VecDeque<Sent>,
    /// When the oldest in flight began: its send, or the previous Result.
    pub head_since: Duration,
    /// Runs sent to it (for `max_tasks_per_worker`).
    pub given: u64,
    /// When it was last heard, and its CPU time then (hang detection).
    pub silence: Silence,
    /// Killed after this, unless gone (retiring workers, a closed channel).
    pub kill_at: Option<Duration>,
    /// How its channel ended, if it has: its exit should follow.
    pub closed: Option<String>,
    /// Set once it is killed: why.
    pub cause: Option<Cause>,
    /// It runs a quarantined or suspect task alone.
    pub alone: bool,
    /// Ready with nothing in flight since then (an elastic pool retires it after its
    /// idle timeout).
    pub idle_since: Option<Duration>,
}

impl Live {
    pub fn new(now: Duration) -> Self {
        Live {
            phase: Phase::Starting,
            in_flight: VecDeque::new(),
            head_since: now,
            given: 0,
            silence: Silence::since(now),
            kill_at: None,
            closed: None,
            cause: None,
            alone: false,
            idle_since: None,
        }
    }
}

/// One worker place: its current worker and its figures across workers.
#[derive(Debug, Default)]
pub(super) struct Place {
    pub live: Option<Live>,
    /// A task held for this place's worker to run alone (a suspect waiting for the
    /// worker's queue to empty, or a quarantined task waiting for a fresh worker).
    pub held: Option<Sent>,
    pub started: u64,
    pub tasks: u64,
    pub busy: Duration,
    pub durations: VecDeque<f32>,
    pub rss: u64,
    /// Taken away by a live resize: its worker finishes what it has and is not
    /// replaced; a later resize up may bring the place back.
    pub removed: bool,
}

impl Place {
    pub fn ran(&mut self, ran: Duration) {
        self.tasks += 1;
        self.busy += ran;
        if self.durations.len() == DURATIONS_KEPT {
            self.durations.pop_front();
        }
        self.durations.push_back(ran.as_secs_f32());
    }
}

/// Why the pool can run nothing more.
#[derive(Debug, Clone)]
pub(super) struct Broken {
    pub status: End,
    pub payload: Vec<u8>,
    pub message: String,
}

/// The worker pool's policy as one state machine: handed facts with the time, it
/// answers with `Action`s (`take_actions`) and final `TaskEvent`s (`take_events`).
pub(in crate::workers) struct Machine {
    pub(super) settings: Settings,
    pub(super) sched: Scheduler,
    /// The time of the latest fact.
    pub(super) now: Duration,
    pub(super) tasks: HashMap<TaskId, Task>,
    /// Unfinished tasks with a timeout: none may wait behind another in a worker.
    pub(super) timed: usize,
    pub(super) places: Vec<Place>,
    /// Which place and lane each scheduler slot is.
    pub(super) table: SlotTable,
    /// Moving average of task run time, seconds.
    pub(super) typical: Option<f64>,
    /// Lanes open per ready worker: 1, or more while prefetching.
    pub(super) depth: usize,
    /// An elastic pool's bounds; `None`: a fixed pool.
    pub(super) elastic: Option<Elastic>,
    pub(super) start_failures: StartFailures,
    pub(super) closing: bool,
    pub(super) terminating: bool,
    /// Terminated with tasks unfinished: the stored run is `interrupted`.
    pub(super) cut_short: bool,
    pub(super) broken: Option<Broken>,
    pub(super) submitted: u64,
    pub(super) finished: u64,
    pub(super) actions: Vec<Action>,
    pub(super) events: Vec<TaskEvent>,
    /// The scheduler's decisions, reused from turn to turn.
    pub(super) decisions: Vec<Decision>,
}

impl Machine {
    /// A pool with no worker yet: `start` asks for them.
    pub fn new(settings: Settings) -> Self {
        let (workers, lanes) = (settings.workers, settings.lanes);
        let elastic =
            (settings.min_workers.is_some() || settings.idle_timeout.is_some()).then(|| {
                let max = settings.cap.unwrap_or(workers).min(workers);
                let min = settings.min_workers.unwrap_or(1).min(max);
                Elastic { min, max, idle_timeout: settings.idle_timeout }
            });
        let mut sched = Scheduler::new(SchedulerConfig {
            slots: workers * lanes,
            aging: Some(Duration::from_secs(30)),
            backoff: Backoff { base: settings.retry_delay, max: Duration::from_secs(30) },
            retry_timeouts: false,
            start_interval: Duration::ZERO,
            start_gate: None,
            median_timeout: None,
        });
        for slot in 1..=workers * lanes {
            sched.set_slot_open(slot, false);
        }
        Machine {
            sched,
            now: Duration::ZERO,
            tasks: HashMap::new(),
            timed: 0,
            places: (0..workers).map(|_| Place::default()).collect(),
            table: SlotTable::new(workers, lanes),
            typical: None,
            depth: 1,
            elastic,
            start_failures: StartFailures::default(),
            closing: false,
            terminating: false,
            cut_short: false,
            broken: None,
            submitted: 0,
            finished: 0,
            actions: Vec::new(),
            events: Vec::new(),
            decisions: Vec::new(),
            settings,
        }
    }

    /// Closed or terminated, every task ended and every worker gone.
    pub fn finished(&self) -> bool {
        (self.closing || self.terminating)
            && self.tasks.is_empty()
            && self.places.iter().all(|p| p.live.is_none())
    }

    /// Terminated with tasks unfinished.
    pub fn cut_short(&self) -> bool {
        self.cut_short
    }

    /// Whether submitted tasks are taken (not once terminated or broken).
    pub fn accepts_tasks(&self) -> bool {
        !self.terminating && self.broken.is_none()
    }

    /// Swaps the actions to do into `out` (which must be empty), keeping both
    /// buffers' room.
    pub fn take_actions(&mut self, out: &mut Vec<Action>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.actions, out);
    }

    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The final events since the last call.
    pub fn take_events(&mut self) -> Vec<TaskEvent> {
        std::mem::take(&mut self.events)
    }

    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The payload of an unfinished task, for the driver to send it in a Run.
    pub fn payload_mut(&mut self, task: TaskId) -> Option<&mut Vec<u8>> {
        self.tasks.get_mut(&task).map(|t| &mut t.payload)
    }

    /// When the machine next wants a `tick`: a scheduler deadline or retry, a hang
    /// check, a kill after a grace, an idle worker's retirement.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let mut at = self.sched.next_wakeup();
        let timeout = self.settings.heartbeat_timeout;
        for live in self.places.iter().filter_map(|p| p.live.as_ref()) {
            let hang = self.watches_hang(live).then(|| live.silence.due(timeout));
            for t in [hang, live.kill_at].into_iter().flatten() {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        if let Some(bounds) = self.elastic {
            let (active, _, idle) = self.elastic_view();
            if let Some(t) = super::super::policy::next_retirement(bounds, active, &idle) {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        at
    }

    /// Per-place figures; `pid` gives the pid of a place's worker (0 for none).
    pub fn stats(&self, pid: impl Fn(usize) -> u32) -> PoolStats {
        let workers = self
            .places
            .iter()
            .enumerate()
            .filter(|(_, place)| !place.removed || place.live.is_some())
            .map(|(index, place)| {
                let mut sorted: Vec<f32> = place.durations.iter().copied().collect();
                sorted.sort_by(f32::total_cmp);
                let p95 = sorted
                    .get((sorted.len() * 95).div_ceil(100).saturating_sub(1))
                    .map_or(Duration::ZERO, |&s| Duration::from_secs_f32(s));
                WorkerStats {
                    slot: index + 1,
                    pid: if place.live.is_some() { pid(index) } else { 0 },
                    tasks: place.tasks,
                    busy: place.busy,
                    mean: if place.tasks == 0 {
                        Duration::ZERO
                    } else {
                        place.busy / place.tasks as u32
                    },
                    p95,
                    restarts: place.started.saturating_sub(1),
                    rss: place.rss,
                }
            })
            .collect();
        let running = self.sched.running() as u64;
        PoolStats {
            workers,
            submitted: self.submitted,
            finished: self.finished,
            running,
            queued: (self.tasks.len() as u64).saturating_sub(running),
        }
    }

    /// Places in use, workers that will take a task without a new one (starting, or
    /// ready and idle), and the idle ones with since when.
    pub(super) fn elastic_view(&self) -> (usize, usize, Vec<(usize, Duration)>) {
        let (mut active, mut free, mut idle) = (0, 0, Vec::new());
        for (index, place) in self.places.iter().enumerate().filter(|(_, p)| !p.removed) {
            active += 1;
            let Some(live) = &place.live else { continue };
            if live.cause.is_some() {
                continue;
            }
            match (live.phase, live.idle_since) {
                (Phase::Starting | Phase::Initializing, _) => free += 1,
                (Phase::Ready, Some(since)) if place.held.is_none() => {
                    free += 1;
                    idle.push((index, since));
                }
                _ => {}
            }
        }
        (active, free, idle)
    }

    pub(super) fn watches_hang(&self, live: &Live) -> bool {
        let s = &self.settings;
        super::super::policy::watches_hang(
            live.phase,
            live.cause.is_some(),
            s.heartbeat,
            s.heartbeat_timeout,
        )
    }

    pub(super) fn live_mut(&mut self, place: usize) -> &mut Live {
        self.places[place].live.as_mut().expect("a fact about a place without a worker")
    }

    pub(super) fn record(&mut self, record: Record) {
        if self.settings.recording {
            self.actions.push(Action::Record(record));
        }
    }

    /// How the pool is ending, for a request that comes too late.
    pub(super) fn ending(&self) -> &'static str {
        if self.broken.is_some() {
            "broken"
        } else if self.terminating {
            "terminated"
        } else {
            "closing"
        }
    }
}
