//! The machine's transitions, in the order the rules apply: dispatch (where a
//! started Run goes), a Result, a worker's ready and retired, attempts ended by a
//! death, final events, lanes, a live resize and the pool's end (terminated,
//! broken). Each pushes `Action`s and events; none does I/O.

use std::time::Duration;

use super::super::config::{end, failed, End, Failure, TaskEvent};
use super::super::policy::{
    self, after_last_result, allocation_failed, grown, lane_open, place, prefetch_depth, spent,
    typical_after, Cause, LaneView, Phase, Placement, Retire, Sent, TaskRisk, WorkerLoad,
};
use super::facts::timeout_message;
use super::state::Broken;
use super::state::{Action, Live, Machine, Out, Place, Probe, Record};
use crate::protocol::ProtocolError;
use crate::scheduler::Decision;
use crate::task::{AttemptOutcome, SlotId, TaskId, TaskStatus};

/// A Run's frame: its kind, task and attempt (12 bytes), and the payload with its
/// 4-byte length (`docs/protocol.md`).
fn run_frame_len(payload: &[u8]) -> u64 {
    1 + 12 + 4 + payload.len() as u64
}

impl Machine {
    // ----- dispatch -----

    /// Acts on the scheduler's decisions until it has none.
    pub(super) fn dispatch(&mut self) {
        if !self.accepts_tasks() {
            return;
        }
        let mut decisions = std::mem::take(&mut self.decisions);
        loop {
            self.sched.poll(self.now, &mut decisions);
            if decisions.is_empty() {
                break;
            }
            for decision in decisions.drain(..) {
                match decision {
                    Decision::Start { slot, task, attempt } => {
                        self.start_run(Sent { task, attempt, slot })
                    }
                    Decision::Kill { slot, .. } => self.kill_slot(slot),
                }
            }
        }
        self.decisions = decisions;
        if self.closing && self.tasks.is_empty() {
            self.retire_idle();
        }
    }

    fn start_run(&mut self, sent: Sent) {
        let index = self.table.worker_of(sent.slot);
        let task = self.tasks.get(&sent.task).expect("a started task is held");
        if task.cancel {
            self.end_attempt(sent, AttemptOutcome::Cancelled, "cancelled".into());
            return;
        }
        let risk = TaskRisk { crashes: task.crashes, suspect: task.suspect, retries: task.retries };
        // An earlier start of this same batch may have retired the worker.
        let max = self.settings.max_tasks_per_worker;
        let load = match &self.places[index].live {
            Some(live) => WorkerLoad {
                available: live.phase == Phase::Ready
                    && live.cause.is_none()
                    && !spent(live.given, max),
                given: live.given,
                in_flight: live.in_flight.len(),
                holding: self.places[index].held.is_some(),
                alone: live.alone,
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
            Placement::Requeue => self.sched.requeue(sent.slot, self.now),
        }
    }

    /// Keeps a started task on its slot until its worker can run it alone (a worker
    /// holds one at most: `policy::place` requeues a second).
    fn hold(&mut self, index: usize, sent: Sent) {
        debug_assert!(self.places[index].held.is_none(), "a worker holds one task at most");
        self.places[index].held = Some(sent);
        self.set_with_worker(sent.task, true);
        self.update_lanes(index);
    }

    fn send_run(&mut self, index: usize, sent: Sent, alone: bool) {
        let now = self.now;
        let task = self.tasks.get_mut(&sent.task).expect("a started task is held");
        let length = run_frame_len(&task.payload);
        if length > self.settings.max_frame {
            let e = ProtocolError::FrameTooLarge { length, max: self.settings.max_frame as u32 };
            self.end_attempt(sent, AttemptOutcome::Raised, format!("cannot send the task: {e}"));
            return;
        }
        task.with_worker = true;
        let live = self.places[index].live.as_mut().expect("open lanes have a worker");
        let first = live.in_flight.is_empty();
        if first {
            live.head_since = now;
            live.idle_since = None;
        }
        live.in_flight.push_back(sent);
        live.given += 1;
        live.alone |= alone;
        let recycle = spent(live.given, self.settings.max_tasks_per_worker);
        self.actions.push(Action::Send(index, Out::Run(sent)));
        if first {
            self.head_started(index);
        }
        if recycle || alone {
            self.update_lanes(index);
        }
        if recycle {
            self.retire(index);
        }
    }

    pub(super) fn set_with_worker(&mut self, task: TaskId, with_worker: bool) {
        if let Some(t) = self.tasks.get_mut(&task) {
            t.with_worker = with_worker;
        }
    }

    /// The Run at the head of a worker's queue has begun: the store learns of it.
    fn head_started(&mut self, index: usize) {
        if !self.settings.recording {
            return;
        }
        let head = self.places[index].live.as_ref().and_then(|l| l.in_flight.front().copied());
        if let Some(head) = head {
            let (task, attempt) = (head.task, head.attempt);
            self.record(Record::Started { task, attempt, place: index, running: true });
        }
    }

    /// Ends an attempt the machine decided itself (cancelled, unsendable).
    fn end_attempt(&mut self, sent: Sent, outcome: AttemptOutcome, message: String) {
        let verdict = self.sched.attempt_ended(sent.slot, outcome, self.now);
        if self.settings.recording {
            if outcome == AttemptOutcome::Cancelled {
                self.record(Record::Cancelled(sent.task));
            } else {
                let (task, attempt) = (sent.task, sent.attempt);
                let place = self.table.worker_of(sent.slot);
                self.record(Record::Started { task, attempt, place, running: false });
                self.record(Record::Ended {
                    task,
                    attempt,
                    ran: Duration::ZERO,
                    outcome,
                    status: verdict.final_status,
                    result: None,
                    why: message.clone(),
                });
            }
        }
        let status = match outcome {
            AttemptOutcome::Cancelled => end(TaskStatus::Cancelled),
            _ => failed(Failure::Refused),
        };
        if verdict.final_status.is_some() {
            self.finish(sent, status, Vec::new(), message, Duration::ZERO);
        }
    }

    /// A timeout on `slot`: kill the worker running it (or drop it if still held).
    fn kill_slot(&mut self, slot: SlotId) {
        let index = self.table.worker_of(slot);
        if let Some(held) = self.places[index].held.filter(|h| h.slot == slot) {
            self.places[index].held = None;
            let timeout = self.tasks.get(&held.task).and_then(|t| t.timeout).unwrap_or_default();
            let crashed = AttemptOutcome::Crashed { signal: 9 };
            self.end_attempt_with_failure(held, crashed, timeout_message(timeout), None);
            return;
        }
        self.kill(index, Cause::Timeout(slot));
    }

    // ----- a Result -----

    pub(super) fn on_result(
        &mut self,
        index: usize,
        ok: bool,
        payload: Vec<u8>,
        traceback: String,
        probe: &mut impl Probe,
    ) {
        let (now, grace) = (self.now, self.settings.kill_grace);
        let place = &mut self.places[index];
        let live = place.live.as_mut().expect("a Result from a place's worker");
        let sent = live.in_flight.pop_front().expect("the conversation checked a Run was owed");
        let ran = now.saturating_sub(live.head_since);
        live.head_since = now;
        if live.in_flight.is_empty() {
            live.idle_since = Some(now);
        }
        let alone_done = live.alone && live.in_flight.is_empty();
        if alone_done {
            live.alone = false;
        }
        live.kill_at =
            after_last_result(live.phase, live.in_flight.len(), live.kill_at, now, grace);
        let next = !live.in_flight.is_empty();
        place.ran(ran);
        self.typical = Some(typical_after(self.typical, ran));

        let address_space = self.settings.address_space_limit;
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
            let verdict = self.sched.attempt_ended(sent.slot, outcome, now);
            debug_assert!(verdict.final_status.is_some(), "returning and raising are final");
            if self.settings.recording {
                self.record(Record::Ended {
                    task: sent.task,
                    attempt: sent.attempt,
                    ran,
                    outcome,
                    status: verdict.final_status,
                    result: (ok && self.settings.storing).then(|| payload.clone()),
                    why: if self.settings.storing { traceback.clone() } else { String::new() },
                });
            }
        }
        if next {
            self.head_started(index);
        }
        let idle_ready = self.places[index].live.as_ref().is_some_and(|l| l.phase == Phase::Ready);
        if !next && idle_ready {
            if let Some(held) = self.places[index].held.take() {
                self.send_run(index, held, true);
            }
        }
        if out_of_memory.is_none() {
            let status = if ok { end(TaskStatus::Succeeded) } else { failed(Failure::Raised) };
            self.finish(sent, status, payload, traceback, ran);
        }
        if self.settings.recycle_memory.is_some() && self.places[index].live.is_some() {
            // Between two tasks: its heartbeats say so too, but only once per interval.
            if let Some(rss) = probe.rss(index) {
                self.note_size(index, rss);
            }
        }
        self.update_prefetch();
        if alone_done {
            self.update_lanes(index);
        }
        if self.closing && self.tasks.is_empty() {
            self.retire_idle();
        }
    }

    /// Records a worker's resident size; past the pool's memory size, it is retired.
    pub(super) fn note_size(&mut self, index: usize, rss: u64) {
        self.places[index].rss = rss;
        if grown(rss, self.settings.recycle_memory) {
            self.retire(index);
        }
    }

    // ----- a worker's life -----

    pub(super) fn spawn(&mut self, index: usize) {
        self.places[index].started += 1;
        self.places[index].live = Some(Live::new(self.now));
        self.actions.push(Action::Spawn(index));
    }

    pub(super) fn ready(&mut self, index: usize) {
        self.start_failures.ready();
        let (now, closing, drained) = (self.now, self.closing, self.tasks.is_empty());
        let place = &mut self.places[index];
        let live = place.live.as_mut().expect("a ready place's worker");
        live.phase = Phase::Ready;
        if (closing && drained) || place.removed {
            self.retire(index);
            return;
        }
        live.idle_since = Some(now);
        if let Some(held) = place.held.take() {
            self.send_run(index, held, true);
        }
        self.update_lanes(index);
    }

    /// A worker could not start or died before it was ready.
    pub(super) fn start_failed(&mut self, why: String) {
        let breaks = self.start_failures.failed();
        let failures = self.start_failures.count();
        tracing::warn!(%why, failures, "a worker failed to start");
        if breaks && self.broken.is_none() {
            self.break_pool(Broken {
                status: failed(Failure::Refused),
                payload: Vec::new(),
                message: format!(
                    "workers fail to start ({failures} times in a row); the last: {why}"
                ),
            });
        }
    }

    /// Sends Shutdown: the worker answers what it has, then exits.
    pub(super) fn retire(&mut self, index: usize) {
        let (now, grace) = (self.now, self.settings.kill_grace);
        let Some(live) = self.places[index].live.as_mut() else { return };
        let retire =
            policy::retire(live.phase, live.cause.is_some(), live.in_flight.len(), now, grace);
        live.phase = match retire {
            Retire::Going => return,
            _ => Phase::Retiring,
        };
        match retire {
            Retire::Shutdown { kill_at } => {
                live.kill_at = kill_at.or(live.kill_at);
                self.actions.push(Action::Send(index, Out::Shutdown));
            }
            _ => self.kill(index, Cause::Lingered),
        }
        self.update_lanes(index);
    }

    /// Retires the workers with nothing to do, once nothing is left to run.
    pub(super) fn retire_idle(&mut self) {
        if self.closing && self.tasks.is_empty() {
            for index in 0..self.places.len() {
                self.retire(index);
            }
        }
    }

    pub(super) fn kill(&mut self, index: usize, cause: Cause) {
        if let Some(live) = self.places[index].live.as_mut() {
            if live.cause.is_none() {
                live.cause = Some(cause);
            }
            self.actions.push(Action::Kill(index));
            self.update_lanes(index);
        }
    }

    // ----- attempts and final events -----

    /// Ends an attempt whose worker died: a retry, or the final event. `ran`: how
    /// long the worker had been running it; `None` if it had not started it (it was
    /// held, or waiting behind another).
    pub(super) fn end_attempt_with_failure(
        &mut self,
        sent: Sent,
        outcome: AttemptOutcome,
        why: String,
        ran: Option<Duration>,
    ) {
        let verdict = self.sched.attempt_ended(sent.slot, outcome, self.now);
        if self.settings.recording {
            let (task, attempt) = (sent.task, sent.attempt);
            if ran.is_none() {
                let place = self.table.worker_of(sent.slot);
                self.record(Record::Started { task, attempt, place, running: false });
            }
            self.record(Record::Ended {
                task,
                attempt,
                ran: ran.unwrap_or_default(),
                outcome: verdict.outcome,
                status: verdict.final_status,
                result: None,
                why: why.clone(),
            });
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
            AttemptOutcome::TimedOut => end(TaskStatus::TimedOut),
            AttemptOutcome::MemoryExceeded => end(TaskStatus::MemoryExceeded),
            AttemptOutcome::Cancelled => end(TaskStatus::Cancelled),
            _ => end(TaskStatus::Crashed),
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
        status: End,
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
            status: status.0,
            failure: status.1,
            payload,
            message,
            attempts: sent.attempt,
            worker: self.table.worker_of(sent.slot) + 1,
            duration: ran,
        });
    }

    pub(super) fn emit(&mut self, event: TaskEvent) {
        self.finished += 1;
        self.events.push(event);
    }

    /// Ends a task outside the scheduler (terminate, a broken pool, a cancel).
    pub(super) fn end_unstarted(
        &mut self,
        id: TaskId,
        status: End,
        payload: Vec<u8>,
        message: String,
    ) {
        if let Some(task) = self.tasks.remove(&id) {
            if task.timeout.is_some() {
                self.timed -= 1;
            }
            self.record(Record::Cancelled(id));
            self.emit(TaskEvent::unstarted(id, status, payload, message));
        }
    }

    /// The pool cannot go on (the initializer raised, workers cannot start): every
    /// task, now and later, ends with `broken`'s status.
    pub(super) fn break_pool(&mut self, broken: Broken) {
        tracing::warn!(message = %broken.message, "the worker pool is broken");
        let ids: Vec<TaskId> = self.tasks.keys().copied().collect();
        for id in ids {
            self.end_unstarted(id, broken.status, broken.payload.clone(), broken.message.clone());
        }
        self.broken = Some(broken);
        for index in 0..self.places.len() {
            self.places[index].held = None;
            self.kill(index, Cause::Terminate);
        }
    }

    // ----- lanes -----

    /// Prefetch while tasks are tiny and none has a timeout (a deadline must not
    /// tick while its task waits behind another).
    pub(super) fn update_prefetch(&mut self) {
        let depth = prefetch_depth(self.typical, self.settings.lanes, self.timed);
        if depth != self.depth {
            self.depth = depth;
            for index in 0..self.places.len() {
                self.update_lanes(index);
            }
        }
    }

    pub(super) fn update_lanes(&mut self, index: usize) {
        let place = &self.places[index];
        let view = match &place.live {
            Some(live) => LaneView {
                ready: live.phase == Phase::Ready && live.cause.is_none(),
                spent: spent(live.given, self.settings.max_tasks_per_worker),
                holding: place.held.is_some(),
                alone: live.alone,
            },
            None => LaneView::default(),
        };
        for (lane, &slot) in self.table.slots_of(index).iter().enumerate() {
            self.sched.set_slot_open(slot, lane_open(view, lane, self.depth));
        }
    }

    // ----- a live resize -----

    /// A live resize to `wanted` workers (at least 1; no more than the memory limit's
    /// cgroups). Places taken away are the highest: their workers get Shutdown, so
    /// they answer what they have and exit, and are not replaced; a task held for one
    /// goes back to the queue. Places added take the next slots of the table; places
    /// taken away earlier come back first. Says what it did, as `shoal jobs` does.
    pub(super) fn set_workers(&mut self, wanted: usize) -> String {
        let removed: Vec<bool> = self.places.iter().map(|p| p.removed).collect();
        let before = removed.iter().filter(|r| !**r).count();
        let plan = policy::resize(&removed, wanted, self.settings.cap);
        for index in plan.remove {
            self.remove_place(index);
        }
        for index in plan.revive {
            self.places[index].removed = false;
            // A worker still retiring is replaced when it exits.
            if self.places[index].live.is_none() {
                self.spawn(index);
            }
        }
        for _ in 0..plan.add {
            let index = self.table.add_place(self.settings.lanes);
            self.sched.set_slots(self.table.slot_count());
            for &slot in self.table.slots_of(index) {
                self.sched.set_slot_open(slot, false);
            }
            self.places.push(Place::default());
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
    pub(super) fn remove_place(&mut self, index: usize) {
        self.places[index].removed = true;
        if let Some(held) = self.places[index].held.take() {
            self.sched.requeue(held.slot, self.now);
            self.set_with_worker(held.task, false);
        }
        self.retire(index);
        self.update_lanes(index);
    }
}
