//! The pool's driver loop: the I/O around the pool's rules. It owns the scheduler,
//! the workers and the tasks' payloads, reads the clock and the workers' CPU time,
//! and hands the facts (commands, control requests, worker messages, exits, silence)
//! to the pure rules of [`super::policy`], then acts on what they answer: Runs,
//! Shutdowns, kills, replacements, final events and the store's records. What it
//! still decides itself is the order in which the rules apply and the per-worker
//! state they read (`Live`, `Slot`).
//!
//! Slots and lanes: the scheduler sees `workers * prefetch` slots, and the
//! [`SlotTable`] says which worker place and lane each is; at the start slots
//! `1..=workers` are each worker's first lane, the next `workers` their second, and
//! so on, and a place added by a live resize (`set_workers`) takes the next numbers.
//! An elastic pool resizes itself on the same path: after each dispatch, `scale`
//! hands `policy::scale` the counts and applies what it answers.
//! A worker's first lane is open while it is ready; its other lanes open only while
//! tasks are tiny (prefetch), so a worker can be handed its next task before it
//! answers the last. As many lanes open as tasks fit in `PREFETCH_BUDGET` at the
//! typical task time (at most `prefetch`), so the work queued in a worker stays about
//! that short however tiny the tasks.
//!
//! Shutdown: on Close the driver runs what is queued, then sends every worker
//! Shutdown and kills the ones not gone `kill_grace` after their last Result. On
//! Terminate (or when the handle is dropped) it kills every worker at once and ends
//! every unfinished task as cancelled. Either way it returns only once every worker
//! has been reaped.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::config::{EventStatus, PoolConfig, PoolStats, TaskEvent, TaskSpec, WorkerStats};
use super::handle::{Command, ParkedRecord, ResizeError};
use super::policy::{
    self, after_channel_closed, after_last_result, allocation_failed, blame, exit_outcome,
    failed_to_start, grown, lane_open, next_retirement, overdue_cause, place, prefetch_depth,
    replace_after_exit, resized_bounds, scale, spent, typical_after, watches_hang, Cause, Elastic,
    Fate, Hang, LaneView, Load, Phase, Placement, PoolState, Retire, Scale, Sent, Silence,
    StartFailures, TaskRisk, WorkerLoad,
};
use super::record::Recorder;
use super::slots::SlotTable;
use super::worker::{Inbox, Process, WorkerEvent};
use crate::process::{stat, ExitInfo, Limits, MemoryLimit};
use crate::protocol::{encode, Conversation, Message, ProtocolError, PROTOCOL_VERSION};
use crate::scheduler::{Backoff, Cancel, Decision, Scheduler, SchedulerConfig};
use crate::store::ControlWatcher;
use crate::store::{ControlAction, ControlRequest};
use crate::task::{AttemptOutcome, SlotId, TaskId, TaskMeta};

/// Task durations kept per slot for the p95.
const DURATIONS_KEPT: usize = 1024;

/// A task the driver holds until its final event.
struct Task {
    payload: Vec<u8>,
    retries: u32,
    timeout: Option<Duration>,
    /// Cancel asked before it started: it ends cancelled when the scheduler picks it.
    cancel: bool,
    /// A worker has it (sent, or held for a fresh worker): too late to cancel.
    with_worker: bool,
    /// It was among several Runs a worker had when it died: it runs alone next, so
    /// that a death is blamed on the Run that caused it.
    suspect: bool,
    /// Attempts that ended with its worker dead.
    crashes: u32,
}

/// A running worker process.
struct Live {
    id: u64,
    process: Process,
    conversation: Conversation,
    phase: Phase,
    /// Frames encoded this turn, handed to the writer in one piece by `flush`.
    outbox: Vec<u8>,
    /// Runs sent and not answered, oldest (the one running) first.
    in_flight: VecDeque<Sent>,
    /// When the oldest in flight began: its send, or the previous Result.
    head_since: Instant,
    /// Runs sent to it (for `max_tasks_per_worker`).
    given: u64,
    /// When it was last heard, and its CPU time then (hang detection).
    silence: Silence,
    /// Killed after this, unless gone (retiring workers, a closed channel).
    kill_at: Option<Duration>,
    /// How its channel ended, if it has: its exit should follow.
    closed: Option<String>,
    cause: Option<Cause>,
    /// The slot cgroup's OOM-kill count when it started.
    oom_before: u64,
    /// It runs a quarantined task alone.
    alone: bool,
    /// Ready with nothing in flight since then (an elastic pool retires it after its
    /// idle timeout).
    idle_since: Option<Duration>,
}

/// One worker place: its current process and its figures across processes.
#[derive(Default)]
struct Slot {
    live: Option<Live>,
    /// A quarantined task waiting for this slot's next fresh worker.
    held: Option<Sent>,
    started: u64,
    tasks: u64,
    busy: Duration,
    durations: VecDeque<f32>,
    rss: u64,
    /// Taken away by a live resize: its worker finishes what it has and is not
    /// replaced; a later resize up may bring the place back.
    removed: bool,
}

/// Why the pool can run nothing more.
#[derive(Debug, Clone)]
struct Broken {
    status: EventStatus,
    payload: Vec<u8>,
    message: String,
}

/// Runs the pool until it is closed and drained, or terminated; returns its last
/// figures.
pub(super) async fn run(
    config: PoolConfig,
    memory: Option<MemoryLimit>,
    recorder: Option<Recorder>,
    parked: Option<ParkedRecord>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: std_mpsc::Sender<Vec<TaskEvent>>,
) -> PoolStats {
    let (inbox, mut worker_events) = mpsc::unbounded_channel();
    // With a store, the run takes control requests (pause, unpause, cancel).
    let mut controls = recorder.as_ref().and_then(Recorder::watch_controls);
    let mut driver = Driver::new(config, memory, recorder, inbox, events);
    // An elastic pool starts its minimum: its other places wait, taken away, until
    // tasks wait for them (`scale`).
    let start = driver.elastic.map_or(driver.slots.len(), |bounds| bounds.min);
    for index in 0..driver.slots.len() {
        if index < start {
            driver.spawn(index);
        } else {
            driver.slots[index].removed = true;
        }
    }
    let mut commands_open = true;
    while !driver.finished() {
        driver.dispatch();
        driver.scale();
        driver.flush();
        let wakeup = driver.next_wakeup();
        tokio::select! {
            biased;
            Some((id, event)) = worker_events.recv() => {
                driver.on_worker(id, event);
                while let Ok((id, event)) = worker_events.try_recv() {
                    driver.on_worker(id, event);
                }
            }
            command = commands.recv(), if commands_open => match command {
                Some(command) => {
                    driver.on_command(command);
                    while let Ok(command) = commands.try_recv() {
                        driver.on_command(command);
                    }
                }
                // The handle is gone without closing: nobody can read results.
                None => {
                    commands_open = false;
                    driver.terminate();
                }
            },
            _ = sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {}
            request = next_request(&mut controls), if controls.is_some() => match request {
                Some(request) => driver.on_control(request),
                None => controls = None,
            },
        }
        driver.check_timers();
    }
    driver.flush();
    let stats = driver.stats();
    if let Some(recorder) = driver.recorder.take() {
        match parked {
            // The front end may still refuse results it has not decoded yet: the
            // record waits for it, in the handle. Refusals sent before the slot's lock
            // was taken are in the channel; later ones find the record in the slot.
            Some(slot) => {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                while let Ok(command) = commands.try_recv() {
                    if let Command::Refused(task, reason) = command {
                        recorder.refused(task, reason);
                    }
                }
                *slot = Some((recorder, driver.cut_short));
            }
            None => recorder.finish(driver.cut_short),
        }
    }
    stats
}

/// The next control request of the pool's run; never ready without a watcher.
async fn next_request(controls: &mut Option<ControlWatcher>) -> Option<ControlRequest> {
    match controls {
        Some(watcher) => watcher.requests().recv().await,
        None => std::future::pending().await,
    }
}

/// The driver's state; the loop is in [`run`].
struct Driver {
    config: PoolConfig,
    sched: Scheduler,
    epoch: Instant,
    tasks: HashMap<TaskId, Task>,
    /// Unfinished tasks with a timeout: none may wait behind another in a worker.
    timed: usize,
    slots: Vec<Slot>,
    /// Which place and lane each scheduler slot is.
    table: SlotTable,
    memory: Option<MemoryLimit>,
    recorder: Option<Recorder>,
    inbox: Inbox,
    next_worker: u64,
    /// Moving average of task run time, seconds.
    typical: Option<f64>,
    /// Lanes open per ready worker: 1, or more while prefetching.
    depth: usize,
    /// An elastic pool's bounds; `None`: a fixed pool.
    elastic: Option<Elastic>,
    start_failures: StartFailures,
    closing: bool,
    terminating: bool,
    /// Terminated with tasks unfinished: the stored run is `interrupted`.
    cut_short: bool,
    broken: Option<Broken>,
    submitted: u64,
    finished: u64,
    out: Vec<TaskEvent>,
    events: std_mpsc::Sender<Vec<TaskEvent>>,
}

impl Driver {
    fn new(
        config: PoolConfig,
        memory: Option<MemoryLimit>,
        recorder: Option<Recorder>,
        inbox: Inbox,
        events: std_mpsc::Sender<Vec<TaskEvent>>,
    ) -> Self {
        let workers = config.workers;
        let lanes = config.prefetch.max(1);
        let elastic = (config.min_workers.is_some() || config.idle_timeout.is_some()).then(|| {
            let max =
                memory.as_ref().and_then(MemoryLimit::max_slots).unwrap_or(workers).min(workers);
            let min = config.min_workers.unwrap_or(1).min(max);
            Elastic { min, max, idle_timeout: config.idle_timeout }
        });
        let mut sched = Scheduler::new(SchedulerConfig {
            slots: workers * lanes,
            aging: Some(Duration::from_secs(30)),
            backoff: Backoff { base: config.retry_delay, max: Duration::from_secs(30) },
            retry_timeouts: false,
        });
        for slot in 1..=workers * lanes {
            sched.set_slot_open(slot, false);
        }
        Driver {
            memory,
            recorder,
            config,
            sched,
            epoch: Instant::now(),
            tasks: HashMap::new(),
            timed: 0,
            slots: (0..workers).map(|_| Slot::default()).collect(),
            table: SlotTable::new(workers, lanes),
            inbox,
            next_worker: 1,
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
            out: Vec::new(),
            events,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn finished(&self) -> bool {
        (self.closing || self.terminating)
            && self.tasks.is_empty()
            && self.slots.iter().all(|s| s.live.is_none())
    }

    // ----- commands -----

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Submit(tasks) => self.submit(tasks),
            Command::Cancel(task, reply) => {
                let cancelled = match self.tasks.get_mut(&task) {
                    Some(t) if !t.with_worker => {
                        t.cancel = true;
                        true
                    }
                    _ => false,
                };
                if let Some(reply) = reply {
                    let _ = reply.send(cancelled);
                }
            }
            Command::Close => {
                self.closing = true;
                self.retire_idle();
            }
            Command::Terminate => self.terminate(),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Refused(task, reason) => {
                if let Some(recorder) = &self.recorder {
                    recorder.refused(task, reason);
                }
            }
            Command::Resize(wanted, reply) => {
                let _ = reply.send(self.on_resize(wanted));
            }
        }
    }

    /// Applies a control request of the pool's run and records what came of it. A
    /// call that a worker has is not stopped (that would take its worker, and the
    /// Runs queued in it, along); a pool's slots do not change yet.
    fn on_control(&mut self, request: ControlRequest) {
        let result = match request.action {
            ControlAction::CancelRun => {
                self.terminate();
                "the pool was terminated: its workers killed, its calls cancelled".to_owned()
            }
            ControlAction::CancelTask { task } => match self.tasks.get(&task) {
                Some(t) if t.with_worker => {
                    format!("task {task} is running in a worker: a running call is not cancelled")
                }
                Some(_) => match self.sched.cancel(task, &mut Vec::new()) {
                    Cancel::Dropped => {
                        self.end_unstarted(
                            task,
                            EventStatus::Cancelled,
                            Vec::new(),
                            "cancelled by a control request".into(),
                        );
                        format!("task {task} cancelled before it started")
                    }
                    // Sent this turn, or ending now: left to finish.
                    _ => format!(
                        "task {task} is running in a worker: a running call is not cancelled"
                    ),
                },
                None => format!("task {task} had already ended"),
            },
            ControlAction::Pause | ControlAction::Unpause => {
                let pause = request.action == ControlAction::Pause;
                let was = self.sched.is_paused();
                self.sched.set_paused(pause);
                match (was, pause) {
                    (false, true) => "paused: no new calls until unpaused".to_owned(),
                    (true, false) => "unpaused".to_owned(),
                    (true, true) => "already paused".to_owned(),
                    (false, false) => "was not paused".to_owned(),
                }
            }
            ControlAction::SetSlots { slots } => self.resize_to(slots as usize),
        };
        if let Some(recorder) = &self.recorder {
            recorder.control_applied(request.id, result);
        }
    }

    /// A resize asked through the handle: refused past the memory limit's cgroups
    /// (`shoal jobs` clamps instead, saying so) and once the pool is ending.
    fn on_resize(&mut self, wanted: usize) -> Result<String, ResizeError> {
        if self.terminating || self.broken.is_some() || self.closing {
            return Err(ResizeError::Ending(self.ending()));
        }
        let cap = self.memory.as_ref().and_then(MemoryLimit::max_slots);
        if let Some(cap) = cap.filter(|&cap| wanted > cap) {
            return Err(ResizeError::OverCap { wanted, cap });
        }
        Ok(self.resize_to(wanted))
    }

    /// A live resize asked from outside (`shoal jobs`, `pool.resize`): a fixed pool
    /// comes to `wanted` workers; an elastic one takes it as its maximum (its minimum
    /// no higher) and comes within its new bounds, growing later as tasks wait.
    fn resize_to(&mut self, wanted: usize) -> String {
        if self.terminating || self.broken.is_some() || self.closing {
            return format!("not applied: the pool is {}", self.ending());
        }
        let Some(bounds) = self.elastic else { return self.set_workers(wanted) };
        let cap = self.memory.as_ref().and_then(MemoryLimit::max_slots);
        let given = wanted.max(1).min(cap.unwrap_or(usize::MAX));
        let bounds = resized_bounds(bounds, given);
        self.elastic = Some(bounds);
        let active = self.slots.iter().filter(|s| !s.removed).count();
        let mut result = self.set_workers(active.clamp(bounds.min, bounds.max));
        result += &format!(" (elastic: {} to {})", bounds.min, bounds.max);
        if given < wanted {
            result += &format!(" (not {wanted}: the memory limit's cgroups were made for {given})");
        }
        result
    }

    /// An elastic pool's rule (`policy::scale`), applied through the resize path:
    /// workers added while tasks wait, idle ones past their timeout taken away.
    fn scale(&mut self) {
        let Some(bounds) = self.elastic else { return };
        // Closing, it still grows for the calls left (an executor's `with` block ends
        // with calls waiting); once drained, `retire_idle` retires every worker.
        if self.terminating || self.broken.is_some() {
            return;
        }
        let (active, free, idle) = self.elastic_view();
        let running = self.sched.running();
        let waiting =
            if self.sched.is_paused() { 0 } else { self.tasks.len().saturating_sub(running) };
        match scale(bounds, Load { waiting, active, free, idle: &idle }, self.now()) {
            Scale::Keep => {}
            Scale::GrowTo(workers) => {
                self.set_workers(workers);
            }
            Scale::Retire(places) => {
                for index in places {
                    self.remove_place(index);
                }
            }
        }
    }

    /// Places in use, workers that will take a task without a new one (starting, or
    /// ready and idle), and the idle ones with since when.
    fn elastic_view(&self) -> (usize, usize, Vec<(usize, Duration)>) {
        let (mut active, mut free, mut idle) = (0, 0, Vec::new());
        for (index, slot) in self.slots.iter().enumerate().filter(|(_, s)| !s.removed) {
            active += 1;
            let Some(live) = &slot.live else { continue };
            if live.cause.is_some() {
                continue;
            }
            match (live.phase, live.idle_since) {
                (Phase::Starting | Phase::Initializing, _) => free += 1,
                (Phase::Ready, Some(since)) if slot.held.is_none() => {
                    free += 1;
                    idle.push((index, since));
                }
                _ => {}
            }
        }
        (active, free, idle)
    }

    /// A live resize to `wanted` workers (at least 1; no more than the memory limit's
    /// cgroups). Places taken away are the highest: their workers get Shutdown, so
    /// they answer what they have and exit, and are not replaced; a task held for one
    /// goes back to the queue. Places added take the next slots of the table; places
    /// taken away earlier come back first. Says what it did, as `shoal jobs` does.
    fn set_workers(&mut self, wanted: usize) -> String {
        let removed: Vec<bool> = self.slots.iter().map(|s| s.removed).collect();
        let before = removed.iter().filter(|r| !**r).count();
        let cgroups = self.memory.as_ref().and_then(MemoryLimit::max_slots);
        let plan = policy::resize(&removed, wanted, cgroups);
        for index in plan.remove {
            self.remove_place(index);
        }
        for index in plan.revive {
            self.slots[index].removed = false;
            // A worker still retiring is replaced when it exits.
            if self.slots[index].live.is_none() {
                self.spawn(index);
            }
        }
        for _ in 0..plan.add {
            let index = self.table.add_place(self.lanes());
            self.sched.set_slots(self.table.slot_count());
            for &slot in self.table.slots_of(index) {
                self.sched.set_slot_open(slot, false);
            }
            self.slots.push(Slot::default());
            self.spawn(index);
        }
        let given = plan.given;
        let mut result = format!("workers {before} -> {given}");
        if given < wanted {
            result += &format!(" (not {wanted}: the memory limit's cgroups were made for them)");
        }
        result
    }

    /// Takes a worker place away (see `set_workers`).
    fn remove_place(&mut self, index: usize) {
        self.slots[index].removed = true;
        if let Some(held) = self.slots[index].held.take() {
            let now = self.now();
            self.sched.requeue(held.slot, now);
            self.set_with_worker(held.task, false);
        }
        self.retire(index);
        self.update_lanes(index);
    }

    /// How the pool is ending, for a request that comes too late.
    fn ending(&self) -> &'static str {
        if self.broken.is_some() {
            "broken"
        } else if self.terminating {
            "terminated"
        } else {
            "closing"
        }
    }

    fn submit(&mut self, tasks: Vec<(TaskId, TaskSpec)>) {
        let now = self.now();
        if let Some(recorder) = &self.recorder {
            recorder.added(
                tasks.iter().map(|(id, t)| (*id, t.label.clone(), t.meta.clone())).collect(),
            );
        }
        for (id, spec) in tasks {
            self.submitted += 1;
            if self.terminating || self.broken.is_some() {
                let (status, payload, message) = match &self.broken {
                    Some(b) => (b.status, b.payload.clone(), b.message.clone()),
                    None => (EventStatus::Cancelled, Vec::new(), "the pool was terminated".into()),
                };
                self.emit(TaskEvent::unstarted(id, status, payload, message));
                continue;
            }
            let reused = match (&self.recorder, &spec.meta.key) {
                (Some(recorder), Some(key)) => recorder.reusable(key, &spec.label),
                _ => None,
            };
            if let Some(result) = reused {
                self.recorder.as_ref().expect("reused from it").reused(id, result.clone());
                self.emit(TaskEvent::unstarted(id, EventStatus::Ok, result, String::new()));
                continue;
            }
            let TaskMeta { timeout, retries, .. } = spec.meta;
            if timeout.is_some() {
                self.timed += 1;
            }
            self.tasks.insert(
                id,
                Task {
                    payload: spec.payload,
                    retries,
                    timeout,
                    cancel: false,
                    with_worker: false,
                    suspect: false,
                    crashes: 0,
                },
            );
            self.sched.submit(id, spec.meta, 0, now);
        }
        self.update_prefetch();
    }

    /// Kills every worker and ends every unfinished task as cancelled.
    fn terminate(&mut self) {
        self.terminating = true;
        self.cut_short |= !self.tasks.is_empty();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            self.end_unstarted(
                id,
                EventStatus::Cancelled,
                Vec::new(),
                "the pool was terminated".into(),
            );
        }
        for index in 0..self.slots.len() {
            self.slots[index].held = None;
            self.kill(index, Cause::Terminate);
        }
    }

    /// Ends a task outside the scheduler (terminate, a broken pool).
    fn end_unstarted(
        &mut self,
        id: TaskId,
        status: EventStatus,
        payload: Vec<u8>,
        message: String,
    ) {
        if let Some(task) = self.tasks.remove(&id) {
            if task.timeout.is_some() {
                self.timed -= 1;
            }
            if let Some(recorder) = &self.recorder {
                recorder.cancelled(id);
            }
            self.emit(TaskEvent::unstarted(id, status, payload, message));
        }
    }

    /// The pool cannot go on (the initializer raised, workers cannot start): every
    /// task, now and later, ends with `broken`'s status.
    fn break_pool(&mut self, broken: Broken) {
        tracing::warn!(message = %broken.message, "the worker pool is broken");
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            self.end_unstarted(id, broken.status, broken.payload.clone(), broken.message.clone());
        }
        self.broken = Some(broken);
        for index in 0..self.slots.len() {
            self.slots[index].held = None;
            self.kill(index, Cause::Terminate);
        }
    }

    // ----- dispatch -----

    /// Acts on the scheduler's decisions until it has none.
    fn dispatch(&mut self) {
        if self.terminating || self.broken.is_some() {
            return;
        }
        let mut decisions = Vec::new();
        loop {
            self.sched.poll(self.now(), &mut decisions);
            if decisions.is_empty() {
                break;
            }
            for decision in decisions.drain(..) {
                match decision {
                    Decision::Start { slot, task, attempt } => {
                        self.start(Sent { task, attempt, slot })
                    }
                    Decision::Kill { slot, .. } => self.kill_slot(slot),
                }
            }
        }
        if self.closing && self.tasks.is_empty() {
            self.retire_idle();
        }
    }

    fn start(&mut self, sent: Sent) {
        let index = self.worker_of(sent.slot);
        let task = self.tasks.get(&sent.task).expect("a started task is held");
        if task.cancel {
            self.end_attempt(sent, AttemptOutcome::Cancelled, "cancelled".into());
            return;
        }
        let risk = TaskRisk { crashes: task.crashes, suspect: task.suspect, retries: task.retries };
        // An earlier start of this same batch may have retired the worker.
        let max = self.config.max_tasks_per_worker;
        let load = match &self.slots[index].live {
            Some(live) => WorkerLoad {
                available: live.phase == Phase::Ready
                    && live.cause.is_none()
                    && !spent(live.given, max),
                given: live.given,
                in_flight: live.in_flight.len(),
                holding: self.slots[index].held.is_some(),
            },
            None => WorkerLoad::default(),
        };
        match place(risk, sent.attempt, load) {
            Placement::Send { alone } => self.send_run(index, sent, alone),
            // Sent when the worker's queue is empty (`on_result`).
            Placement::Hold => self.hold(index, sent),
            Placement::HoldAndRetire => {
                self.hold(index, sent);
                self.retire(index);
            }
            Placement::Requeue => {
                let now = self.now();
                self.sched.requeue(sent.slot, now);
            }
        }
    }

    /// Keeps a started task on its slot until its worker can run it alone (a worker
    /// holds one at most: `policy::place` requeues a second).
    fn hold(&mut self, index: usize, sent: Sent) {
        debug_assert!(self.slots[index].held.is_none(), "a worker holds one task at most");
        self.slots[index].held = Some(sent);
        self.set_with_worker(sent.task, true);
        self.update_lanes(index);
    }

    fn send_run(&mut self, index: usize, sent: Sent, alone: bool) {
        let task = self.tasks.get_mut(&sent.task).expect("a started task is held");
        let live = self.slots[index].live.as_mut().expect("open lanes have a worker");
        let message = Message::Run {
            task: sent.task,
            attempt: sent.attempt,
            payload: std::mem::take(&mut task.payload),
        };
        let encoded = encode(&message, &mut live.outbox);
        if let Message::Run { payload, .. } = message {
            task.payload = payload;
        }
        if let Err(e) = encoded {
            self.end_attempt(sent, AttemptOutcome::Raised, format!("cannot send the task: {e}"));
            return;
        }
        let first = live.in_flight.is_empty();
        if first {
            live.head_since = Instant::now();
            live.idle_since = None;
        }
        live.conversation.sent(&message_header(sent)).expect("Runs are sent only to ready workers");
        live.in_flight.push_back(sent);
        task.with_worker = true;
        if first {
            self.head_started(index);
        }
        let live = self.slots[index].live.as_mut().expect("open lanes have a worker");
        live.given += 1;
        live.alone |= alone;
        let recycle = spent(live.given, self.config.max_tasks_per_worker);
        if recycle || alone {
            self.update_lanes(index);
        }
        if recycle {
            self.retire(index);
        }
    }

    fn set_with_worker(&mut self, task: TaskId, with_worker: bool) {
        if let Some(t) = self.tasks.get_mut(&task) {
            t.with_worker = with_worker;
        }
    }

    /// The Run at the head of a worker's queue has begun: the store learns of it.
    fn head_started(&self, index: usize) {
        if let (Some(recorder), Some(live)) = (&self.recorder, &self.slots[index].live) {
            if let Some(head) = live.in_flight.front() {
                recorder.started(head.task, head.attempt, index + 1, live.process.pid);
            }
        }
    }

    /// Ends an attempt the driver decided itself (cancelled, unsendable).
    fn end_attempt(&mut self, sent: Sent, outcome: AttemptOutcome, message: String) {
        let verdict = self.sched.attempt_ended(sent.slot, outcome, self.now());
        if let Some(recorder) = &self.recorder {
            if outcome == AttemptOutcome::Cancelled {
                recorder.cancelled(sent.task);
            } else {
                recorder.started(sent.task, sent.attempt, self.worker_of(sent.slot) + 1, 0);
                let status = verdict.final_status;
                recorder.ended(
                    sent.task,
                    sent.attempt,
                    Duration::ZERO,
                    outcome,
                    status,
                    None,
                    &message,
                );
            }
        }
        let status = match outcome {
            AttemptOutcome::Cancelled => EventStatus::Cancelled,
            _ => EventStatus::Error,
        };
        if verdict.final_status.is_some() {
            self.finish(sent, status, Vec::new(), message, Duration::ZERO);
        }
    }

    /// A timeout on `slot`: kill the worker running it (or drop it if still held).
    fn kill_slot(&mut self, slot: SlotId) {
        let index = self.worker_of(slot);
        if let Some(held) = self.slots[index].held.filter(|h| h.slot == slot) {
            self.slots[index].held = None;
            let timeout = self.tasks.get(&held.task).and_then(|t| t.timeout).unwrap_or_default();
            self.end_attempt_with_failure(
                held,
                AttemptOutcome::Crashed { signal: 9 },
                timeout_message(timeout),
                None,
            );
            return;
        }
        self.kill(index, Cause::Timeout(slot));
    }

    // ----- worker life -----

    fn worker_of(&self, slot: SlotId) -> usize {
        self.table.worker_of(slot)
    }

    fn lanes(&self) -> usize {
        self.config.prefetch.max(1)
    }

    fn spawn(&mut self, index: usize) {
        let id = self.next_worker;
        self.next_worker += 1;
        let slot = index + 1;
        let mut limits = Limits { nice: self.config.nice, ..Limits::default() };
        let mut oom_before = 0;
        match &self.memory {
            Some(MemoryLimit::Cgroup(cgroups)) => {
                limits.cgroup_procs = Some(cgroups.procs_fd(slot));
                oom_before = cgroups.oom_kills(slot);
            }
            Some(MemoryLimit::AddressSpace(bytes)) => limits.memory = Some(*bytes),
            None => {}
        }
        if let Some(cpus) = self.config.cpus.as_ref().filter(|c| !c.is_empty()) {
            limits.cpu = Some(cpus[index % cpus.len()]);
        }
        match Process::start(id, &self.config, limits, &self.inbox) {
            Ok(process) => {
                let now = Instant::now();
                let since = self.now();
                self.slots[index].started += 1;
                self.slots[index].live = Some(Live {
                    id,
                    process,
                    conversation: Conversation::new(),
                    phase: Phase::Starting,
                    outbox: Vec::new(),
                    in_flight: VecDeque::new(),
                    head_since: now,
                    given: 0,
                    silence: Silence::since(since),
                    kill_at: None,
                    closed: None,
                    cause: None,
                    oom_before,
                    alone: false,
                    idle_since: None,
                });
            }
            Err(e) => {
                self.start_failed(format!("cannot start a worker: {e}"));
                // No exit will come to start this slot again: retry now, until the
                // failures in a row break the pool.
                if self.broken.is_none() && !self.terminating {
                    self.spawn(index);
                }
            }
        }
    }

    /// A worker could not start or died before it was ready.
    fn start_failed(&mut self, why: String) {
        let breaks = self.start_failures.failed();
        let failures = self.start_failures.count();
        tracing::warn!(%why, failures, "a worker failed to start");
        if breaks && self.broken.is_none() {
            self.break_pool(Broken {
                status: EventStatus::Error,
                payload: Vec::new(),
                message: format!(
                    "workers fail to start ({failures} times in a row); the last: {why}"
                ),
            });
        }
    }

    /// Sends Shutdown: the worker answers what it has, then exits.
    fn retire(&mut self, index: usize) {
        let (now, grace) = (self.now(), self.config.kill_grace);
        let Some(live) = self.slots[index].live.as_mut() else { return };
        let retire =
            policy::retire(live.phase, live.cause.is_some(), live.in_flight.len(), now, grace);
        match retire {
            Retire::Going => return,
            Retire::Shutdown { kill_at } if live.conversation.sent(&Message::Shutdown).is_ok() => {
                encode(&Message::Shutdown, &mut live.outbox).expect("Shutdown encodes");
                live.phase = Phase::Retiring;
                live.kill_at = kill_at.or(live.kill_at);
            }
            Retire::Shutdown { .. } | Retire::Kill => {
                live.phase = Phase::Retiring;
                self.kill(index, Cause::Lingered);
            }
        }
        self.update_lanes(index);
    }

    /// Retires the workers with nothing to do, once nothing is left to run.
    fn retire_idle(&mut self) {
        if self.closing && self.tasks.is_empty() {
            for index in 0..self.slots.len() {
                self.retire(index);
            }
        }
    }

    fn kill(&mut self, index: usize, cause: Cause) {
        if let Some(live) = self.slots[index].live.as_mut() {
            if live.cause.is_none() {
                live.cause = Some(cause);
            }
            let _ = live.process.kill.send(true);
            self.update_lanes(index);
        }
    }

    fn on_worker(&mut self, id: u64, event: WorkerEvent) {
        let Some(index) =
            self.slots.iter().position(|s| s.live.as_ref().is_some_and(|l| l.id == id))
        else {
            return; // from a worker already replaced
        };
        match event {
            WorkerEvent::Message(message) => self.on_message(index, message),
            WorkerEvent::Broken(e) => self.protocol_error(index, e),
            WorkerEvent::Closed(cut) => self.channel_closed(index, cut),
            WorkerEvent::Exited(info) => self.on_exit(index, info),
        }
    }

    /// The worker's channel ended. A worker that dies while frames wait unread in its
    /// socket resets it, and one killed mid-write ends inside a frame: neither is a
    /// protocol error, so it is not killed (which would hide its cause): its exit
    /// follows and says how it died. One still there after the grace is killed.
    fn channel_closed(&mut self, index: usize, cut: Option<ProtocolError>) {
        let (now, grace) = (self.now(), self.config.kill_grace);
        let Some(live) = self.slots[index].live.as_mut() else { return };
        live.closed = Some(match cut {
            Some(e) => e.to_string(),
            None => "it closed its channel but did not exit".into(),
        });
        live.kill_at = after_channel_closed(live.kill_at, now, grace);
    }

    fn protocol_error(&mut self, index: usize, error: ProtocolError) {
        if let ProtocolError::IncompatibleVersion { .. } = error {
            self.break_pool(Broken {
                status: EventStatus::Error,
                payload: Vec::new(),
                message: error.to_string(),
            });
            return;
        }
        self.kill(index, Cause::Protocol(error.to_string()));
    }

    fn on_message(&mut self, index: usize, message: Message) {
        let now = self.now();
        let live = self.slots[index].live.as_mut().expect("checked by on_worker");
        live.silence.last_heard = now;
        if live.cause.is_some() {
            return; // being killed: its last words change nothing
        }
        if let Err(e) = live.conversation.received(&message) {
            self.protocol_error(index, e);
            return;
        }
        match message {
            Message::Hello { .. } => {
                let welcome = Message::Welcome {
                    protocol_version: PROTOCOL_VERSION,
                    worker_id: live.id,
                    heartbeat_ms: self.config.heartbeat.as_millis().min(u32::MAX as u128) as u32,
                    config: self.config.worker_config.clone(),
                };
                send(live, &welcome);
                match &self.config.init {
                    Some(payload) => {
                        send(live, &Message::Init { payload: payload.clone() });
                        live.phase = Phase::Initializing;
                    }
                    None => self.ready(index),
                }
            }
            Message::InitDone { ok: true, .. } => self.ready(index),
            Message::InitDone { ok: false, payload, traceback } => self.break_pool(Broken {
                status: EventStatus::InitFailed,
                payload,
                message: traceback,
            }),
            Message::Result { ok, payload, traceback, .. } => {
                self.on_result(index, ok, payload, traceback)
            }
            Message::Heartbeat { rss_bytes } => {
                if let Some(live) = self.slots[index].live.as_mut() {
                    // What a later silence is measured against (see `check_timers`).
                    let ticks = stat::cpu_ticks(live.process.pid);
                    live.silence.cpu_ticks = ticks.unwrap_or(live.silence.cpu_ticks);
                }
                self.note_size(index, rss_bytes);
            }
            // Its exit follows.
            Message::Bye => {}
            // The conversation check lets only worker messages through.
            _ => {}
        }
    }

    fn ready(&mut self, index: usize) {
        self.start_failures.ready();
        let slot = &mut self.slots[index];
        let live = slot.live.as_mut().expect("checked by on_worker");
        live.phase = Phase::Ready;
        if (self.closing && self.tasks.is_empty()) || slot.removed {
            self.retire(index);
            return;
        }
        live.idle_since = Some(self.epoch.elapsed());
        if let Some(held) = slot.held.take() {
            self.send_run(index, held, true);
        }
        self.update_lanes(index);
    }

    fn on_result(&mut self, index: usize, ok: bool, payload: Vec<u8>, traceback: String) {
        let now = Instant::now();
        let since = self.now();
        let slot = &mut self.slots[index];
        let live = slot.live.as_mut().expect("checked by on_worker");
        let sent = live.in_flight.pop_front().expect("the conversation checked a Run was owed");
        let ran = now - live.head_since;
        live.head_since = now;
        if live.in_flight.is_empty() {
            live.idle_since = Some(since);
        }
        let alone_done = live.alone && live.in_flight.is_empty();
        if alone_done {
            live.alone = false;
        }
        let (phase, left, grace) = (live.phase, live.in_flight.len(), self.config.kill_grace);
        live.kill_at = after_last_result(phase, left, live.kill_at, since, grace);
        slot.tasks += 1;
        slot.busy += ran;
        if slot.durations.len() == DURATIONS_KEPT {
            slot.durations.pop_front();
        }
        slot.durations.push_back(ran.as_secs_f32());
        self.typical = Some(typical_after(self.typical, ran));

        let next = !live.in_flight.is_empty();
        let address_space = matches!(self.memory, Some(MemoryLimit::AddressSpace(_)));
        let out_of_memory = if ok { None } else { allocation_failed(&traceback, address_space) };
        if let Some(error) = out_of_memory {
            // Under RLIMIT_AS the limit shows only as a failed allocation in the task:
            // it is the limit's doing, as an OOM kill under a cgroup, and retried the
            // same way; the worker, its heap grown to the limit, is replaced.
            let why = format!("the task went past the worker's memory limit (RLIMIT_AS): {error}");
            self.end_attempt_with_failure(sent, AttemptOutcome::MemoryExceeded, why, Some(ran));
            self.retire(index);
        } else {
            let outcome = if ok { AttemptOutcome::Succeeded } else { AttemptOutcome::Raised };
            let verdict = self.sched.attempt_ended(sent.slot, outcome, self.now());
            debug_assert!(verdict.final_status.is_some(), "returning and raising are final");
            if let Some(recorder) = &self.recorder {
                let result = ok.then(|| payload.clone());
                let status = verdict.final_status;
                recorder.ended(sent.task, sent.attempt, ran, outcome, status, result, &traceback);
            }
        }
        if next {
            self.head_started(index);
        }
        let idle_ready = self.slots[index].live.as_ref().is_some_and(|l| l.phase == Phase::Ready);
        if !next && idle_ready {
            if let Some(held) = self.slots[index].held.take() {
                self.send_run(index, held, true);
            }
        }
        if out_of_memory.is_none() {
            let status = if ok { EventStatus::Ok } else { EventStatus::Raised };
            self.finish(sent, status, payload, traceback, ran);
        }
        self.recycle_if_grown(index);
        self.update_prefetch();
        if alone_done {
            self.update_lanes(index);
        }
        if self.closing && self.tasks.is_empty() {
            self.retire_idle();
        }
    }

    /// Between two tasks, replaces a worker grown past the pool's memory size (its
    /// heartbeats say so too, but only once per interval).
    fn recycle_if_grown(&mut self, index: usize) {
        if self.config.recycle_memory.is_none() {
            return;
        }
        let Some(live) = &self.slots[index].live else { return };
        if let Some(rss) = stat::rss_bytes(live.process.pid) {
            self.note_size(index, rss);
        }
    }

    /// Records a worker's resident size; past the pool's memory size, it is retired.
    fn note_size(&mut self, index: usize, rss: u64) {
        self.slots[index].rss = rss;
        if grown(rss, self.config.recycle_memory) {
            self.retire(index);
        }
    }

    fn on_exit(&mut self, index: usize, info: io::Result<ExitInfo>) {
        let live = self.slots[index].live.take().expect("checked by on_worker");
        let oom = match &self.memory {
            Some(MemoryLimit::Cgroup(cgroups)) => cgroups.oom_kills(index + 1) > live.oom_before,
            _ => false,
        };
        let exited = info.as_ref().map(|i| i.exited).ok();
        let (outcome, why) = exit_outcome(live.cause.as_ref(), exited, oom, live.process.pid);
        if failed_to_start(live.phase, live.cause.as_ref(), exited) {
            self.start_failed(why.clone());
        }
        // The Run that was running ends with the worker; the ones queued behind it
        // never started and go back to the queue as they were (`policy::blame`).
        let timed_out = match live.cause {
            Some(Cause::Timeout(slot)) => Some(slot),
            _ => None,
        };
        let head_ran = live.head_since.elapsed();
        let now = self.now();
        // Terminated or broken: its tasks have had their final events already.
        let in_flight: Vec<Sent> = if self.terminating || self.broken.is_some() {
            Vec::new()
        } else {
            live.in_flight.into()
        };
        let fates = blame(&in_flight, timed_out);
        for (sent, fate) in in_flight.into_iter().zip(fates) {
            match fate {
                Fate::Blamed { ran } => {
                    let why = match (timed_out, self.tasks.get(&sent.task)) {
                        (Some(_), Some(task)) => timeout_message(task.timeout.unwrap_or_default()),
                        _ => why.clone(),
                    };
                    let ran = ran.then_some(head_ran);
                    self.end_attempt_with_failure(sent, outcome, why, ran);
                }
                Fate::Requeued { suspect } => {
                    self.sched.requeue(sent.slot, now);
                    if let Some(task) = self.tasks.get_mut(&sent.task) {
                        task.with_worker = false;
                        task.suspect |= suspect;
                    }
                }
            }
        }
        self.update_lanes(index);
        let pool = PoolState {
            terminating: self.terminating,
            broken: self.broken.is_some(),
            closing: self.closing,
            drained: self.tasks.is_empty(),
        };
        let slot = &self.slots[index];
        if replace_after_exit(pool, slot.held.is_some(), slot.removed) {
            self.spawn(index);
        }
    }

    /// Ends an attempt whose worker died: a retry, or the final event. `ran`: how
    /// long the worker had been running it; `None` if it had not started it (it was
    /// held, or waiting behind another).
    fn end_attempt_with_failure(
        &mut self,
        sent: Sent,
        outcome: AttemptOutcome,
        why: String,
        ran: Option<Duration>,
    ) {
        let verdict = self.sched.attempt_ended(sent.slot, outcome, self.now());
        if let Some(recorder) = &self.recorder {
            if ran.is_none() {
                recorder.started(sent.task, sent.attempt, self.worker_of(sent.slot) + 1, 0);
            }
            let (status, ran) = (verdict.final_status, ran.unwrap_or_default());
            recorder.ended(sent.task, sent.attempt, ran, verdict.outcome, status, None, &why);
        }
        let task = self.tasks.get_mut(&sent.task).expect("an attempt's task is held");
        if policy::is_crash(verdict.outcome) {
            task.crashes += 1;
        }
        if verdict.final_status.is_none() {
            task.with_worker = false;
            return;
        }
        let status = match verdict.outcome {
            AttemptOutcome::TimedOut => EventStatus::TimedOut,
            AttemptOutcome::MemoryExceeded => EventStatus::MemoryExceeded,
            AttemptOutcome::Cancelled => EventStatus::Cancelled,
            _ => EventStatus::Crashed,
        };
        let message = if sent.attempt > 1 {
            format!("{why} (attempt {} of {})", sent.attempt, sent.attempt)
        } else {
            why
        };
        self.finish(sent, status, Vec::new(), message, ran.unwrap_or_default());
    }

    /// Emits a task's final event and forgets it.
    fn finish(
        &mut self,
        sent: Sent,
        status: EventStatus,
        payload: Vec<u8>,
        message: String,
        ran: Duration,
    ) {
        if let Some(task) = self.tasks.remove(&sent.task) {
            if task.timeout.is_some() {
                self.timed -= 1;
            }
        }
        self.emit(TaskEvent {
            task: sent.task,
            status,
            payload,
            message,
            attempts: sent.attempt,
            worker: self.worker_of(sent.slot) + 1,
            duration: ran,
        });
    }

    fn emit(&mut self, event: TaskEvent) {
        self.finished += 1;
        self.out.push(event);
    }

    /// Hands this turn's frames to each worker's writer, and its events to the front
    /// end, in one batch each.
    fn flush(&mut self) {
        for live in self.slots.iter_mut().filter_map(|s| s.live.as_mut()) {
            if !live.outbox.is_empty() {
                let _ = live.process.out.send(std::mem::take(&mut live.outbox));
            }
        }
        if !self.out.is_empty() {
            let _ = self.events.send(std::mem::take(&mut self.out));
        }
    }

    // ----- lanes and timers -----

    /// Prefetch while tasks are tiny and none has a timeout (a deadline must not
    /// tick while its task waits behind another).
    fn update_prefetch(&mut self) {
        let depth = prefetch_depth(self.typical, self.lanes(), self.timed);
        if depth != self.depth {
            self.depth = depth;
            for index in 0..self.slots.len() {
                self.update_lanes(index);
            }
        }
    }

    fn update_lanes(&mut self, index: usize) {
        let view = match &self.slots[index].live {
            Some(live) => LaneView {
                ready: live.phase == Phase::Ready && live.cause.is_none(),
                spent: spent(live.given, self.config.max_tasks_per_worker),
                holding: self.slots[index].held.is_some(),
                alone: live.alone,
            },
            None => LaneView::default(),
        };
        for (lane, &slot) in self.table.slots_of(index).iter().enumerate() {
            self.sched.set_slot_open(slot, lane_open(view, lane, self.depth));
        }
    }

    fn next_wakeup(&self) -> Option<Instant> {
        // A deadline past what the clock can hold never comes: no wake-up for it.
        let mut at = self.sched.next_wakeup().and_then(|d| self.epoch.checked_add(d));
        let timeout = self.config.heartbeat_timeout;
        for live in self.slots.iter().filter_map(|s| s.live.as_ref()) {
            let hang = self.watches_hang(live).then(|| live.silence.due(timeout));
            let hang = hang.and_then(|d| self.epoch.checked_add(d));
            let kill = live.kill_at.and_then(|d| self.epoch.checked_add(d));
            for t in [hang, kill].into_iter().flatten() {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        if let Some(bounds) = self.elastic {
            let (active, _, idle) = self.elastic_view();
            let retire = next_retirement(bounds, active, &idle);
            if let Some(t) = retire.and_then(|d| self.epoch.checked_add(d)) {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        }
        at
    }

    fn watches_hang(&self, live: &Live) -> bool {
        let config = &self.config;
        watches_hang(live.phase, live.cause.is_some(), config.heartbeat, config.heartbeat_timeout)
    }

    fn check_timers(&mut self) {
        let since = self.now();
        let timeout = self.config.heartbeat_timeout;
        for index in 0..self.slots.len() {
            let Some(live) = &self.slots[index].live else { continue };
            if self.watches_hang(live) {
                let live = self.slots[index].live.as_mut().expect("checked above");
                let pid = live.process.pid;
                match live.silence.check(since, timeout, || stat::cpu_ticks(pid)) {
                    Hang::Hung => {
                        self.kill(index, Cause::Hung(timeout));
                        continue;
                    }
                    Hang::Busy => continue,
                    Hang::Heard => {}
                }
            }
            let Some(live) = &self.slots[index].live else { continue };
            if live.kill_at.is_some_and(|t| t <= since) {
                let cause = overdue_cause(live.closed.as_deref(), live.phase);
                self.kill(index, cause);
            }
        }
    }

    fn stats(&self) -> PoolStats {
        let workers = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| !slot.removed || slot.live.is_some())
            .map(|(index, slot)| {
                let mut sorted: Vec<f32> = slot.durations.iter().copied().collect();
                sorted.sort_by(f32::total_cmp);
                let p95 = sorted
                    .get((sorted.len() * 95).div_ceil(100).saturating_sub(1))
                    .map_or(Duration::ZERO, |&s| Duration::from_secs_f32(s));
                WorkerStats {
                    slot: index + 1,
                    pid: slot.live.as_ref().map_or(0, |l| l.process.pid),
                    tasks: slot.tasks,
                    busy: slot.busy,
                    mean: if slot.tasks == 0 {
                        Duration::ZERO
                    } else {
                        slot.busy / slot.tasks as u32
                    },
                    p95,
                    restarts: slot.started.saturating_sub(1),
                    rss: slot.rss,
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
}

/// Records and sends `message` (Welcome, Init) to a worker the conversation allows.
fn send(live: &mut Live, message: &Message) {
    live.conversation.sent(message).expect("the driver follows the protocol");
    encode(message, &mut live.outbox).expect("control messages are small");
}

/// A Run without its payload, for the conversation's bookkeeping.
fn message_header(sent: Sent) -> Message {
    Message::Run { task: sent.task, attempt: sent.attempt, payload: Vec::new() }
}

fn timeout_message(timeout: Duration) -> String {
    format!("the task ran past its timeout of {} s", timeout.as_secs_f64())
}
