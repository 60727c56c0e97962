//! The facts the machine is handed, each with the time: the front end's commands
//! and control requests, what a worker said, its channel's end and its exit, a
//! worker that could not start, and the turns of the driver's loop (`poll` after
//! facts, `tick` when a wake-up is due).

use std::time::Duration;

use super::super::config::{end, failed, Failure, TaskEvent};
use super::super::handle::ResizeError;
use super::super::policy::{
    after_channel_closed, blame, exit_outcome, failed_to_start, overdue_cause, replace_after_exit,
    resized_bounds, scale, Cause, Fate, Hang, Load, Phase, PoolState, Scale, Sent,
};
use super::state::Broken;
use super::state::{Action, Live, Machine, NewTask, Out, Probe, Record, Task};
use crate::process::Exited;
use crate::protocol::{Message, ProtocolError};
use crate::scheduler::Cancel;
use crate::store::ControlAction;
use crate::task::{TaskId, TaskMeta, TaskStatus};

impl Machine {
    /// Starts the pool's first workers: all of them, or an elastic pool's minimum
    /// (its other places wait, taken away, until tasks wait for them).
    pub fn start(&mut self, now: Duration) {
        self.now = now;
        let start = self.elastic.map_or(self.places.len(), |bounds| bounds.min);
        for index in 0..self.places.len() {
            if index < start {
                self.spawn(index);
            } else {
                self.places[index].removed = true;
            }
        }
    }

    // ----- the front end -----

    /// New tasks. A terminated or broken pool ends them at once; one with a stored
    /// result ends with it.
    pub fn submit(&mut self, now: Duration, tasks: impl IntoIterator<Item = NewTask>) {
        self.now = now;
        for NewTask { id, meta, payload, reused } in tasks {
            self.submitted += 1;
            if !self.accepts_tasks() {
                let (status, payload, message) = match &self.broken {
                    Some(b) => (b.status, b.payload.clone(), b.message.clone()),
                    None => {
                        (end(TaskStatus::Cancelled), Vec::new(), "the pool was terminated".into())
                    }
                };
                self.emit(TaskEvent::unstarted(id, status, payload, message));
                continue;
            }
            if let Some(result) = reused {
                self.record(Record::Reused(id, result.clone()));
                self.emit(TaskEvent::unstarted(
                    id,
                    end(TaskStatus::Succeeded),
                    result,
                    String::new(),
                ));
                continue;
            }
            let TaskMeta { timeout, retries, .. } = meta;
            if timeout.is_some() {
                self.timed += 1;
            }
            let task = Task {
                payload,
                retries,
                timeout,
                cancel: false,
                with_worker: false,
                suspect: false,
                crashes: 0,
            };
            self.tasks.insert(id, task);
            self.sched.submit(id, meta, 0, now);
        }
        self.update_prefetch();
    }

    /// Cancels a task no worker has yet; says whether it was in time.
    pub fn cancel(&mut self, task: TaskId) -> bool {
        match self.tasks.get_mut(&task) {
            Some(t) if !t.with_worker => {
                t.cancel = true;
                true
            }
            _ => false,
        }
    }

    /// No more tasks will come: run what is queued, then retire every worker.
    pub fn close(&mut self, now: Duration) {
        self.now = now;
        self.closing = true;
        self.retire_idle();
    }

    /// Kills every worker and ends every unfinished task as cancelled.
    pub fn terminate(&mut self, now: Duration) {
        self.now = now;
        self.terminating = true;
        self.cut_short |= !self.tasks.is_empty();
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            let why = "the pool was terminated".to_owned();
            self.end_unstarted(id, end(TaskStatus::Cancelled), Vec::new(), why);
        }
        for index in 0..self.places.len() {
            self.places[index].held = None;
            self.kill(index, Cause::Terminate);
        }
    }

    /// A resize asked through the handle: refused past the memory limit's cgroups
    /// (`shoal jobs` clamps instead, saying so) and once the pool is ending.
    pub fn resize(&mut self, now: Duration, wanted: usize) -> Result<String, ResizeError> {
        self.now = now;
        if self.terminating || self.broken.is_some() || self.closing {
            return Err(ResizeError::Ending(self.ending()));
        }
        if let Some(cap) = self.settings.cap.filter(|&cap| wanted > cap) {
            return Err(ResizeError::OverCap { wanted, cap });
        }
        Ok(self.resize_to(wanted))
    }

    /// Applies a control request of the pool's run; says what came of it. A call that
    /// a worker has is not stopped (that would take its worker, and the Runs queued
    /// in it, along).
    pub fn control(&mut self, now: Duration, action: ControlAction) -> String {
        self.now = now;
        match action {
            ControlAction::CancelRun => {
                self.terminate(now);
                "the pool was terminated: its workers killed, its calls cancelled".to_owned()
            }
            ControlAction::CancelTask { task } => {
                let running =
                    format!("task {task} is running in a worker: a running call is not cancelled");
                match self.tasks.get(&task) {
                    Some(t) if t.with_worker => running,
                    Some(_) => match self.sched.cancel(task, &mut Vec::new()) {
                        Cancel::Dropped => {
                            let why = "cancelled by a control request".to_owned();
                            self.end_unstarted(task, end(TaskStatus::Cancelled), Vec::new(), why);
                            format!("task {task} cancelled before it started")
                        }
                        // Sent this turn, or ending now: left to finish.
                        _ => running,
                    },
                    None => format!("task {task} had already ended"),
                }
            }
            ControlAction::Pause | ControlAction::Unpause => {
                let pause = action == ControlAction::Pause;
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
        }
    }

    /// A live resize asked from outside (`shoal jobs`, `pool.resize`): a fixed pool
    /// comes to `wanted` workers; an elastic one takes it as its maximum (its minimum
    /// no higher) and comes within its new bounds, growing later as tasks wait.
    fn resize_to(&mut self, wanted: usize) -> String {
        if self.terminating || self.broken.is_some() || self.closing {
            return format!("not applied: the pool is {}", self.ending());
        }
        let Some(bounds) = self.elastic else { return self.set_workers(wanted) };
        let given = wanted.max(1).min(self.settings.cap.unwrap_or(usize::MAX));
        let bounds = resized_bounds(bounds, given);
        self.elastic = Some(bounds);
        let active = self.places.iter().filter(|p| !p.removed).count();
        let mut result = self.set_workers(active.clamp(bounds.min, bounds.max));
        result += &format!(" (elastic: {} to {})", bounds.min, bounds.max);
        if given < wanted {
            result += &format!(" (not {wanted}: the memory limit's cgroups were made for {given})");
        }
        result
    }

    // ----- the loop's turns -----

    /// After facts: starts what the scheduler decides, and lets an elastic pool
    /// grow or shrink.
    pub fn poll(&mut self, now: Duration) {
        self.now = now;
        self.dispatch();
        self.scale();
    }

    /// A wake-up: silent workers are checked for a hang (their CPU time read through
    /// `probe` only once the silence has lasted), and workers past their `kill_at`
    /// are killed.
    pub fn tick(&mut self, now: Duration, probe: &mut impl Probe) {
        self.now = now;
        let timeout = self.settings.heartbeat_timeout;
        for index in 0..self.places.len() {
            let Some(live) = &self.places[index].live else { continue };
            if self.watches_hang(live) {
                let live = self.live_mut(index);
                match live.silence.check(now, timeout, || probe.cpu_ticks(index)) {
                    Hang::Hung => {
                        self.kill(index, Cause::Hung(timeout));
                        continue;
                    }
                    Hang::Busy => continue,
                    Hang::Heard => {}
                }
            }
            let Some(live) = &self.places[index].live else { continue };
            if live.kill_at.is_some_and(|t| t <= now) {
                let cause = overdue_cause(live.closed.as_deref(), live.phase);
                self.kill(index, cause);
            }
        }
    }

    /// An elastic pool's rule (`policy::scale`), applied through the resize path:
    /// workers added while tasks wait, idle ones past their timeout taken away.
    fn scale(&mut self) {
        let Some(bounds) = self.elastic else { return };
        // Closing, it still grows for the calls left (an executor's `with` block ends
        // with calls waiting); once drained, `retire_idle` retires every worker.
        if !self.accepts_tasks() {
            return;
        }
        let (active, free, idle) = self.elastic_view();
        let running = self.sched.running();
        let waiting =
            if self.sched.is_paused() { 0 } else { self.tasks.len().saturating_sub(running) };
        match scale(bounds, Load { waiting, active, free, idle: &idle }, self.now) {
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

    // ----- a worker -----

    /// The worker asked for by `Action::Spawn(place)` could not start.
    pub fn spawn_failed(&mut self, now: Duration, place: usize, why: String) {
        self.now = now;
        self.places[place].live = None;
        self.places[place].started -= 1;
        self.start_failed(why);
        // No exit will come to start this place again: retry now, until the failures
        // in a row break the pool.
        if self.accepts_tasks() {
            self.spawn(place);
        }
    }

    /// A message from the worker of `place`, in an order its conversation allows.
    /// `probe` is read for its CPU time at a Heartbeat and, with `recycle_memory`,
    /// its size after a Result.
    pub fn heard(&mut self, now: Duration, place: usize, message: Message, probe: &mut impl Probe) {
        self.now = now;
        let live = self.live_mut(place);
        live.silence.last_heard = now;
        if live.cause.is_some() {
            return; // being killed: its last words change nothing
        }
        match message {
            Message::Hello { .. } => {
                self.actions.push(Action::Send(place, Out::Welcome));
                if self.settings.init {
                    self.actions.push(Action::Send(place, Out::Init));
                    self.live_mut(place).phase = Phase::Initializing;
                } else {
                    self.ready(place);
                }
            }
            Message::InitDone { ok: true, .. } => self.ready(place),
            Message::InitDone { ok: false, payload, traceback } => self.break_pool(Broken {
                status: failed(Failure::InitFailed),
                payload,
                message: traceback,
            }),
            Message::Result { ok, payload, traceback, .. } => {
                self.on_result(place, ok, payload, traceback, probe)
            }
            Message::Heartbeat { rss_bytes } => {
                // What a later silence is measured against (see `tick`).
                let ticks = probe.cpu_ticks(place);
                let live = self.live_mut(place);
                live.silence.cpu_ticks = ticks.unwrap_or(live.silence.cpu_ticks);
                self.note_size(place, rss_bytes);
            }
            // Its exit follows; the conversation lets only worker messages through.
            _ => {}
        }
    }

    /// The worker of `place` sent something its conversation does not allow then, or
    /// that its codec refuses.
    pub fn broke_protocol(&mut self, now: Duration, place: usize, error: ProtocolError) {
        self.now = now;
        let live = self.live_mut(place);
        live.silence.last_heard = now;
        if live.cause.is_some() {
            return;
        }
        self.protocol_error(place, error);
    }

    /// The worker's channel ended. A worker that dies while frames wait unread in its
    /// socket resets it, and one killed mid-write ends inside a frame: neither is a
    /// protocol error, so it is not killed (which would hide its cause): its exit
    /// follows and says how it died. One still there after the grace is killed.
    pub fn channel_closed(&mut self, now: Duration, place: usize, cut: Option<ProtocolError>) {
        self.now = now;
        let grace = self.settings.kill_grace;
        let live = self.live_mut(place);
        live.closed = Some(match cut {
            Some(e) => e.to_string(),
            None => "it closed its channel but did not exit".into(),
        });
        live.kill_at = after_channel_closed(live.kill_at, now, grace);
    }

    /// The worker of `place` is gone and reaped. `exited`: how (`None`: it could not
    /// be reaped); `oom`: its cgroup counted an OOM kill during its life.
    pub fn exited(
        &mut self,
        now: Duration,
        place: usize,
        exited: Option<Exited>,
        oom: bool,
        pid: u32,
    ) {
        self.now = now;
        let live: Live = self.places[place].live.take().expect("an exit of a place's worker");
        let (outcome, why) = exit_outcome(live.cause.as_ref(), exited, oom, pid);
        if failed_to_start(live.phase, live.cause.as_ref(), exited) {
            self.start_failed(why.clone());
        }
        // The Run that was running ends with the worker; the ones queued behind it
        // never started and go back to the queue as they were (`policy::blame`).
        let timed_out = match live.cause {
            Some(Cause::Timeout(slot)) => Some(slot),
            _ => None,
        };
        let head_ran = now.saturating_sub(live.head_since);
        // Terminated or broken: its tasks have had their final events already.
        let in_flight: Vec<Sent> =
            if self.accepts_tasks() { live.in_flight.into() } else { Vec::new() };
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
        self.update_lanes(place);
        let pool = PoolState {
            terminating: self.terminating,
            broken: self.broken.is_some(),
            closing: self.closing,
            drained: self.tasks.is_empty(),
        };
        let p = &self.places[place];
        if replace_after_exit(pool, p.held.is_some(), p.removed) {
            self.spawn(place);
        }
    }

    fn protocol_error(&mut self, place: usize, error: ProtocolError) {
        if let ProtocolError::IncompatibleVersion { .. } = error {
            self.break_pool(Broken {
                status: failed(Failure::Refused),
                payload: Vec::new(),
                message: error.to_string(),
            });
            return;
        }
        self.kill(place, Cause::Protocol(error.to_string()));
    }
}

pub(super) fn timeout_message(timeout: Duration) -> String {
    format!("the task ran past its timeout of {} s", timeout.as_secs_f64())
}
