//! The scheduler state machine: tasks, slots, retries with backoff and timeouts.
//!
//! Task life: submitted → ready → running on a slot → (succeeded | failed for good |
//! delayed for a retry → ready …). A running attempt past its deadline gets a
//! [`Decision::Kill`]; when its end is reported, the kill reason decides the outcome.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;
use std::time::Duration;

use super::queue::{ReadyQueue, TaskState};
use crate::task::{AttemptOutcome, KillReason, SlotId, TaskId, TaskMeta, TaskStatus};

/// Exponential backoff between attempts: `base * 2^(n-1)` after the n-th failure,
/// capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `failed_attempt`-th attempt failed.
    pub fn delay(&self, failed_attempt: u32) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Number of slots, numbered 1..=slots.
    pub slots: usize,
    /// Waiting this long raises a task by one priority level; `None` turns aging off.
    pub aging: Option<Duration>,
    /// Wait before a retry.
    pub backoff: Backoff,
    /// Whether a timed-out attempt is retried (under the task's retries) or final.
    pub retry_timeouts: bool,
    /// The least time between two starts (GNU parallel's `--delay`); zero for none.
    pub start_interval: Duration,
    /// A running attempt is timed out at this many times the median duration of the
    /// succeeded ones (GNU parallel's `--timeout N%`), once [`MEDIAN_SAMPLES`] have
    /// succeeded; its own timeout still applies.
    pub median_timeout: Option<f64>,
    /// Asked before an attempt starts: while it says no (the machine is short of free
    /// memory or over a load, GNU parallel's `--memfree` and `--load`) nothing starts,
    /// and it is asked again [`GATE_RECHECK`] later.
    pub start_gate: Option<Arc<dyn StartGate>>,
}

/// Whether the machine can take another task now (see [`SchedulerConfig::start_gate`]).
pub trait StartGate: Send + Sync + std::fmt::Debug {
    fn open(&self) -> bool;
}

/// How long a closed [`StartGate`] holds the starts back before it is asked again.
pub const GATE_RECHECK: Duration = Duration::from_secs(1);

/// Succeeded attempts needed before a [`SchedulerConfig::median_timeout`] applies.
pub const MEDIAN_SAMPLES: usize = 3;

/// The running median of the durations of succeeded attempts: the lower half in a
/// max-heap, the upper half in a min-heap, O(log n) a sample.
#[derive(Debug, Default)]
struct Median {
    lower: BinaryHeap<Duration>,
    upper: BinaryHeap<Reverse<Duration>>,
}

impl Median {
    fn add(&mut self, sample: Duration) {
        if self.lower.peek().is_none_or(|&low| sample <= low) {
            self.lower.push(sample);
        } else {
            self.upper.push(Reverse(sample));
        }
        // `lower` holds the middle one, or the lower of the middle two (as parallel).
        if self.lower.len() > self.upper.len() + 1 {
            self.upper.extend(self.lower.pop().map(Reverse));
        } else if self.upper.len() > self.lower.len() {
            self.lower.extend(self.upper.pop().map(|Reverse(d)| d));
        }
    }

    fn len(&self) -> usize {
        self.lower.len() + self.upper.len()
    }

    fn get(&self) -> Option<Duration> {
        self.lower.peek().copied()
    }
}

/// What the driver must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start attempt `attempt` (1-based) of `task` on `slot`.
    Start { slot: SlotId, task: TaskId, attempt: u32 },
    /// Stop what runs on `slot`; its end will still be reported.
    Kill { slot: SlotId, task: TaskId, reason: KillReason },
}

/// What became of a task when one of its attempts ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub task: TaskId,
    pub attempt: u32,
    /// The attempt's outcome once kill reasons are applied (a killed-at-timeout
    /// attempt is `TimedOut` whatever signal ended it).
    pub outcome: AttemptOutcome,
    /// `Some` when the task is finished; `None` when it will be retried.
    pub final_status: Option<TaskStatus>,
    /// When it will be retried: the wait before its next attempt.
    pub retry_in: Option<Duration>,
    /// The most attempts the task may have (its first, then its retries).
    pub max_attempts: u32,
}

#[derive(Debug)]
struct Running {
    state: TaskState,
    started: Duration,
    deadline: Option<Duration>,
    killing: Option<KillReason>,
}

/// What a cancel request found of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// It was waiting (queued or waiting out a backoff) and is taken out: it ends
    /// `cancelled` now, without an attempt, and never starts.
    Dropped,
    /// It runs: a [`Decision::Kill`] was given (unless a kill was already under way);
    /// its attempt's end will be reported and it ends `cancelled` (or as the kill
    /// already under way decides).
    Killing,
    /// The scheduler does not hold it: it already ended, or it is not of this run.
    Unknown,
}

/// The scheduler. See the module doc of [`crate::scheduler`].
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Tasks submitted and not finished: waiting, delayed or running.
    unfinished: usize,
    ready: ReadyQueue,
    /// Failed tasks waiting out their backoff, by (ready at, seq).
    delayed: BTreeMap<(Duration, u64), TaskState>,
    /// Index 0 is slot 1. Longer than `open_slots` while slots taken away by
    /// [`Scheduler::set_slots`] still finish their attempt.
    slots: Vec<Option<Running>>,
    /// Slots `1..=open_slots` take tasks.
    open_slots: usize,
    last_key: Vec<Option<String>>,
    /// Slots the driver has closed: no task starts there (index 0 is slot 1).
    closed: Vec<bool>,
    deadlines: BTreeSet<(Duration, SlotId)>,
    next_seq: u64,
    stopped: bool,
    /// No task starts while paused; what runs goes on, timeouts still apply.
    paused: bool,
    /// When the last attempt started (kept only under a `start_interval`).
    last_start: Option<Duration>,
    /// The start gate was closed: nothing starts before this time.
    held_until: Option<Duration>,
    /// Durations of the succeeded attempts (kept only under a `median_timeout`).
    succeeded: Median,
}

impl Scheduler {
    /// A scheduler with every slot free and no task.
    pub fn new(config: SchedulerConfig) -> Self {
        let slots = config.slots;
        Scheduler {
            ready: ReadyQueue::new(config.aging),
            config,
            unfinished: 0,
            delayed: BTreeMap::new(),
            slots: (0..slots).map(|_| None).collect(),
            open_slots: slots,
            last_key: vec![None; slots],
            closed: vec![false; slots],
            deadlines: BTreeSet::new(),
            next_seq: 0,
            stopped: false,
            paused: false,
            last_start: None,
            held_until: None,
            succeeded: Median::default(),
        }
    }

    /// Adds a task that has already had `attempts_so_far` attempts (0 for a new task;
    /// more when a run is resumed).
    pub fn submit(&mut self, task: TaskId, meta: TaskMeta, attempts_so_far: u32, now: Duration) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let state =
            TaskState { task, meta, seq, attempts: attempts_so_far, before: attempts_so_far };
        self.ready.push(state, now);
        self.unfinished += 1;
    }

    /// Decisions due at `now`: timeouts to enforce, retries to release, free slots
    /// to fill. Appends to `out`.
    pub fn poll(&mut self, now: Duration, out: &mut Vec<Decision>) {
        while let Some(&(at, slot)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, slot));
            let run = self.slots[slot - 1].as_mut().expect("deadline of a running slot");
            run.killing = Some(KillReason::Timeout);
            out.push(Decision::Kill { slot, task: run.state.task, reason: KillReason::Timeout });
        }
        if let Some(limit) = self.median_limit() {
            for (index, slot) in self.slots.iter_mut().enumerate() {
                let Some(run) = slot.as_mut() else { continue };
                if run.killing.is_none() && now >= run.started.saturating_add(limit) {
                    run.killing = Some(KillReason::Timeout);
                    let (slot, task) = (index + 1, run.state.task);
                    out.push(Decision::Kill { slot, task, reason: KillReason::Timeout });
                }
            }
        }
        while self.delayed.first_key_value().is_some_and(|(&(at, _), _)| at <= now) {
            let (_, state) = self.delayed.pop_first().expect("checked above");
            self.ready.push(state, now);
        }
        if self.stopped || self.paused || self.held_until.is_some_and(|at| now < at) {
            return;
        }
        // The gate is asked once a poll, at its first start.
        let mut gate = self.config.start_gate.clone();
        for index in 0..self.open_slots {
            if self.slots[index].is_some() || self.closed[index] {
                continue;
            }
            if self.paced_until().is_some_and(|at| now < at) || self.ready.len() == 0 {
                break;
            }
            if let Some(gate) = gate.take() {
                if !gate.open() {
                    self.held_until = Some(now.saturating_add(GATE_RECHECK));
                    break;
                }
                self.held_until = None;
            }
            let Some(mut state) = self.ready.pop(self.last_key[index].as_deref(), now) else {
                break;
            };
            if !self.config.start_interval.is_zero() {
                self.last_start = Some(now);
            }
            let slot = index + 1;
            state.attempts += 1;
            // Saturating: a library caller may give any Duration (Duration::MAX = never).
            let deadline = state.meta.timeout.map(|t| now.saturating_add(t));
            if let Some(at) = deadline {
                self.deadlines.insert((at, slot));
            }
            if state.meta.key.is_some() {
                self.last_key[index].clone_from(&state.meta.key);
            }
            out.push(Decision::Start { slot, task: state.task, attempt: state.attempts });
            self.slots[index] = Some(Running { state, started: now, deadline, killing: None });
        }
    }

    /// Records the end of whatever ran on `slot` and decides the task's fate.
    ///
    /// # Panics
    /// If nothing runs on `slot`: that is a bug in the driver.
    pub fn attempt_ended(
        &mut self,
        slot: SlotId,
        outcome: AttemptOutcome,
        now: Duration,
    ) -> Verdict {
        let run = self.slots[slot - 1].take().expect("attempt ended on a free slot");
        self.drop_closed_slots();
        if let Some(at) = run.deadline {
            self.deadlines.remove(&(at, slot));
        }
        let outcome = match (run.killing, outcome) {
            (_, AttemptOutcome::Succeeded) | (None, _) => outcome,
            (Some(KillReason::Timeout), _) => AttemptOutcome::TimedOut,
            (Some(KillReason::Cancel), _) => AttemptOutcome::Cancelled,
        };
        let (task, attempt) = (run.state.task, run.state.attempts);
        if outcome == AttemptOutcome::Succeeded && self.config.median_timeout.is_some() {
            self.succeeded.add(now.saturating_sub(run.started));
        }
        let retry = outcome.is_retryable()
            && (outcome != AttemptOutcome::TimedOut || self.config.retry_timeouts)
            && attempt <= run.state.meta.retries
            && !self.stopped;
        let max_attempts = run.state.meta.retries.saturating_add(1);
        let (final_status, retry_in) = if retry {
            let wait = self.config.backoff.delay(attempt.saturating_sub(run.state.before));
            self.delayed.insert((now.saturating_add(wait), run.state.seq), run.state);
            (None, Some(wait))
        } else {
            self.unfinished -= 1;
            (Some(outcome.status()), None)
        };
        Verdict { task, attempt, outcome, final_status, retry_in, max_attempts }
    }

    /// Opens or closes `slot`: a closed slot gets no new task (what runs there goes on).
    /// The worker pool closes the slots of a worker that is starting or retiring.
    pub fn set_slot_open(&mut self, slot: SlotId, open: bool) {
        self.closed[slot - 1] = !open;
    }

    /// Gives back the attempt on `slot` as if it had never started: the task returns
    /// to the queue in its old place, without using up an attempt. For a task that
    /// was handed to a worker which died before starting it.
    ///
    /// # Panics
    /// If nothing runs on `slot`: that is a bug in the driver.
    pub fn requeue(&mut self, slot: SlotId, now: Duration) {
        let mut run = self.slots[slot - 1].take().expect("requeue of a free slot");
        self.drop_closed_slots();
        if let Some(at) = run.deadline {
            self.deadlines.remove(&(at, slot));
        }
        run.state.attempts -= 1;
        self.ready.push(run.state, now);
    }

    /// Sets the number of slots to `slots` (at least 1) while tasks run. New slots
    /// take tasks at the next poll; a slot taken away starts nothing more, and what
    /// runs there finishes, after which the slot is gone. Slots are always numbered
    /// from 1: the ones taken away are the highest.
    pub fn set_slots(&mut self, slots: usize) {
        let slots = slots.max(1);
        self.open_slots = slots;
        if slots > self.slots.len() {
            self.slots.resize_with(slots, || None);
            self.last_key.resize(slots, None);
            self.closed.resize(slots, false);
        }
        self.drop_closed_slots();
    }

    /// Forgets the slots past `open_slots` that nothing runs on any more, from the top.
    fn drop_closed_slots(&mut self) {
        while self.slots.len() > self.open_slots && self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
            self.last_key.pop();
            self.closed.pop();
        }
    }

    /// The number of slots that take tasks.
    pub fn slots(&self) -> usize {
        self.open_slots
    }

    /// The highest slot number in use or open: what a driver's table of slots must hold.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Pauses or resumes dispatching: while paused no task starts (nor a retry), and
    /// what runs goes on; timeouts still apply.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Whether dispatching is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Cancels one task: a waiting one is taken out and ends now (the caller reports
    /// it `cancelled`), a running one is killed (its end comes as usual, `cancelled`).
    pub fn cancel(&mut self, task: TaskId, out: &mut Vec<Decision>) -> Cancel {
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(run) = slot.as_mut().filter(|run| run.state.task == task) {
                if run.killing.is_none() {
                    run.killing = Some(KillReason::Cancel);
                    out.push(Decision::Kill { slot: index + 1, task, reason: KillReason::Cancel });
                }
                return Cancel::Killing;
            }
        }
        let waiting = self.ready.remove_task(task).is_some() || {
            let key = self.delayed.iter().find(|(_, s)| s.task == task).map(|(&k, _)| k);
            key.and_then(|k| self.delayed.remove(&k)).is_some()
        };
        if waiting {
            self.unfinished -= 1;
            Cancel::Dropped
        } else {
            Cancel::Unknown
        }
    }

    /// Stops dispatching: waiting tasks stay unstarted, running ones are killed.
    pub fn stop(&mut self, out: &mut Vec<Decision>) {
        self.stopped = true;
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Some(run) = slot {
                if run.killing.is_none() {
                    run.killing = Some(KillReason::Cancel);
                    out.push(Decision::Kill {
                        slot: index + 1,
                        task: run.state.task,
                        reason: KillReason::Cancel,
                    });
                }
            }
        }
    }

    /// Stops dispatching and lets running attempts finish: waiting tasks stay
    /// unstarted, and none is retried.
    pub fn drain(&mut self) {
        self.stopped = true;
    }

    /// The earliest time at which [`Scheduler::poll`] has something new to do
    /// without any other event.
    pub fn next_wakeup(&self) -> Option<Duration> {
        let deadline = self.deadlines.first().map(|&(at, _)| at);
        let retry = self.delayed.keys().next().map(|&(at, _)| at).filter(|_| !self.stopped);
        // Paused, a retry becomes ready at its time but starts only on resume.
        let free_slot = (0..self.open_slots).any(|i| self.slots[i].is_none() && !self.closed[i]);
        let can_start = !self.stopped && !self.paused && free_slot && self.ready.len() > 0;
        let paced = self.paced_until().filter(|_| can_start);
        let held = self.held_until.filter(|_| can_start);
        let median = self.median_limit().and_then(|limit| {
            let unkilled = self.slots.iter().flatten().filter(|run| run.killing.is_none());
            unkilled.map(|run| run.started.saturating_add(limit)).min()
        });
        deadline.into_iter().chain(retry).chain(paced).chain(held).chain(median).min()
    }

    /// Under a `median_timeout` with enough samples: how long an attempt may run.
    fn median_limit(&self) -> Option<Duration> {
        let factor = self.config.median_timeout?;
        if self.succeeded.len() < MEDIAN_SAMPLES {
            return None;
        }
        let median = self.succeeded.get()?;
        Some(Duration::try_from_secs_f64(median.as_secs_f64() * factor).unwrap_or(Duration::MAX))
    }

    /// Under a `start_interval`: the earliest time the next attempt may start.
    fn paced_until(&self) -> Option<Duration> {
        self.last_start.map(|at| at.saturating_add(self.config.start_interval))
    }

    /// Number of slots with an attempt running.
    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Tasks submitted but not finished (waiting, delayed or running).
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// Tasks waiting to start: ready, or waiting out a retry's backoff.
    pub fn waiting(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// Whether [`Scheduler::stop`] was called: nothing more starts.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the driver can stop: nothing runs and nothing more will start.
    pub fn is_idle(&self) -> bool {
        self.running() == 0 && (self.stopped || self.unfinished == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn config(slots: usize) -> SchedulerConfig {
        SchedulerConfig {
            slots,
            aging: None,
            backoff: Backoff { base: Duration::from_secs(1), max: Duration::from_secs(8) },
            retry_timeouts: true,
            start_interval: Duration::ZERO,
            start_gate: None,
            median_timeout: None,
        }
    }

    fn poll(s: &mut Scheduler, now: Duration) -> Vec<Decision> {
        let mut out = Vec::new();
        s.poll(now, &mut out);
        out
    }

    #[test]
    fn fills_free_slots_in_priority_order() {
        let mut s = Scheduler::new(config(2));
        for (task, priority) in [(1, 0), (2, 3), (3, 1)] {
            s.submit(task, TaskMeta { priority, ..TaskMeta::default() }, 0, Duration::ZERO);
        }
        assert_eq!(
            poll(&mut s, Duration::ZERO),
            vec![
                Decision::Start { slot: 1, task: 2, attempt: 1 },
                Decision::Start { slot: 2, task: 3, attempt: 1 }
            ]
        );
        let v = s.attempt_ended(2, AttemptOutcome::Succeeded, Duration::from_secs(1));
        assert_eq!(v.final_status, Some(TaskStatus::Succeeded));
        assert_eq!(
            poll(&mut s, Duration::from_secs(1)),
            vec![Decision::Start { slot: 2, task: 1, attempt: 1 }]
        );
    }

    #[test]
    fn timeout_kills_then_classifies_and_retries_after_backoff() {
        let mut s = Scheduler::new(config(1));
        let meta =
            TaskMeta { timeout: Some(Duration::from_secs(5)), retries: 1, ..TaskMeta::default() };
        s.submit(7, meta, 0, Duration::ZERO);
        assert_eq!(poll(&mut s, Duration::ZERO).len(), 1);
        assert_eq!(s.next_wakeup(), Some(Duration::from_secs(5)));
        assert!(poll(&mut s, Duration::from_secs(4)).is_empty());
        assert_eq!(
            poll(&mut s, Duration::from_secs(5)),
            vec![Decision::Kill { slot: 1, task: 7, reason: KillReason::Timeout }]
        );
        let v = s.attempt_ended(1, AttemptOutcome::Crashed { signal: 15 }, Duration::from_secs(6));
        assert_eq!(v.outcome, AttemptOutcome::TimedOut);
        assert_eq!(v.final_status, None, "one retry left");
        assert_eq!(s.next_wakeup(), Some(Duration::from_secs(7)), "backoff base is 1s");
        assert!(poll(&mut s, Duration::from_secs(6)).is_empty());
        assert_eq!(
            poll(&mut s, Duration::from_secs(7)),
            vec![Decision::Start { slot: 1, task: 7, attempt: 2 }]
        );
        let v = s.attempt_ended(1, AttemptOutcome::Failed { exit_code: 3 }, Duration::from_secs(8));
        assert_eq!(v.final_status, Some(TaskStatus::Failed));
        assert!(s.is_idle());
    }

    #[test]
    fn stop_kills_running_and_starts_nothing_more() {
        let mut s = Scheduler::new(config(1));
        s.submit(1, TaskMeta::default(), 0, Duration::ZERO);
        s.submit(2, TaskMeta::default(), 0, Duration::ZERO);
        poll(&mut s, Duration::ZERO);
        let mut out = Vec::new();
        s.stop(&mut out);
        assert_eq!(out, vec![Decision::Kill { slot: 1, task: 1, reason: KillReason::Cancel }]);
        let v = s.attempt_ended(1, AttemptOutcome::Crashed { signal: 15 }, Duration::ZERO);
        assert_eq!(v.final_status, Some(TaskStatus::Cancelled));
        assert!(poll(&mut s, Duration::ZERO).is_empty());
        assert!(s.is_idle());
        assert_eq!(s.unfinished(), 1, "task 2 never started and stays for a resume");
    }

    #[test]
    fn drain_lets_running_finish_and_starts_nothing_more() {
        let mut s = Scheduler::new(config(1));
        let retries = TaskMeta { retries: 2, ..TaskMeta::default() };
        s.submit(1, retries, 0, Duration::ZERO);
        s.submit(2, TaskMeta::default(), 0, Duration::ZERO);
        poll(&mut s, Duration::ZERO);
        s.drain();
        assert!(!s.is_idle(), "task 1 still runs");
        let v = s.attempt_ended(1, AttemptOutcome::Failed { exit_code: 3 }, Duration::ZERO);
        assert_eq!(v.final_status, Some(TaskStatus::Failed), "not cancelled, and no retry");
        assert!(poll(&mut s, Duration::ZERO).is_empty());
        assert!(s.is_idle());
        assert_eq!(s.unfinished(), 1, "task 2 never started and stays for a resume");
    }

    /// A start gate the test opens and closes, counting how often it is asked.
    #[derive(Debug, Default)]
    struct Gate {
        open: std::sync::atomic::AtomicBool,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl StartGate for Gate {
        fn open(&self) -> bool {
            use std::sync::atomic::Ordering::Relaxed;
            self.asked.fetch_add(1, Relaxed);
            self.open.load(Relaxed)
        }
    }

    #[test]
    fn a_closed_start_gate_holds_every_start_and_is_asked_again_a_second_later() {
        use std::sync::atomic::Ordering::Relaxed;
        let gate = Arc::new(Gate::default());
        let config = SchedulerConfig { start_gate: Some(gate.clone()), ..config(2) };
        let mut s = Scheduler::new(config);
        assert!(poll(&mut s, Duration::ZERO).is_empty());
        assert_eq!(gate.asked.load(Relaxed), 0, "nothing to start: not asked");
        submit_plain(&mut s, 1..=3);
        assert!(poll(&mut s, Duration::ZERO).is_empty());
        assert_eq!(gate.asked.load(Relaxed), 1);
        assert_eq!(s.next_wakeup(), Some(GATE_RECHECK));
        assert!(poll(&mut s, Duration::from_millis(500)).is_empty());
        assert_eq!(gate.asked.load(Relaxed), 1, "held: not asked before the recheck");
        gate.open.store(true, Relaxed);
        assert_eq!(started_slots(&poll(&mut s, GATE_RECHECK)), vec![1, 2], "asked once a poll");
        assert_eq!(gate.asked.load(Relaxed), 2);
        assert_eq!(s.next_wakeup(), None, "no free slot: no recheck");
        // Running tasks are left alone when it closes again; the next start waits.
        gate.open.store(false, Relaxed);
        s.attempt_ended(1, AttemptOutcome::Succeeded, Duration::from_secs(2));
        assert!(poll(&mut s, Duration::from_secs(2)).is_empty());
        assert_eq!(s.running(), 1);
        assert_eq!(s.next_wakeup(), Some(Duration::from_secs(2) + GATE_RECHECK));
    }

    #[test]
    fn a_start_interval_paces_the_starts() {
        let mut s =
            Scheduler::new(SchedulerConfig { start_interval: Duration::from_secs(2), ..config(3) });
        submit_plain(&mut s, 1..=3);
        let started = |out: Vec<Decision>| out.len();
        assert_eq!(started(poll(&mut s, Duration::ZERO)), 1, "one start, free slots or not");
        assert_eq!(s.next_wakeup(), Some(Duration::from_secs(2)));
        assert_eq!(started(poll(&mut s, Duration::from_secs(1))), 0);
        assert_eq!(started(poll(&mut s, Duration::from_secs(2))), 1);
        // No free slot: no wakeup for the pace (it would spin).
        s.set_slots(2);
        assert_eq!(s.next_wakeup(), None);
        s.attempt_ended(1, AttemptOutcome::Succeeded, Duration::from_secs(3));
        assert_eq!(s.next_wakeup(), Some(Duration::from_secs(4)));
        assert_eq!(started(poll(&mut s, Duration::from_secs(3))), 0);
        assert_eq!(started(poll(&mut s, Duration::from_secs(4))), 1);
    }

    #[test]
    fn the_median_of_succeeded_attempts_times_out_the_slow_ones() {
        let mut s = Scheduler::new(SchedulerConfig { median_timeout: Some(2.0), ..config(2) });
        let secs = Duration::from_secs;
        submit_plain(&mut s, 1..=6);
        poll(&mut s, secs(0));
        // Slot 2's attempt runs on; three succeed on slot 1 in 1, 3 and 2 seconds.
        let mut now = secs(0);
        for took in [1, 3] {
            now += secs(took);
            s.attempt_ended(1, AttemptOutcome::Succeeded, now);
            assert!(poll(&mut s, now).iter().all(|d| matches!(d, Decision::Start { .. })));
            assert_eq!(s.next_wakeup(), None, "not enough samples yet");
        }
        now += secs(2);
        s.attempt_ended(1, AttemptOutcome::Succeeded, now);
        // The median is 2s, so 4s a run: task 2 (started at 0) is past it.
        assert_eq!(s.next_wakeup(), Some(secs(4)));
        let out = poll(&mut s, now);
        let kill = Decision::Kill { slot: 2, task: 2, reason: KillReason::Timeout };
        assert_eq!(out, vec![kill, Decision::Start { slot: 1, task: 5, attempt: 1 }]);
        assert_eq!(s.next_wakeup(), Some(now + secs(4)), "task 5's limit");
        let v = s.attempt_ended(2, AttemptOutcome::Crashed { signal: 15 }, now);
        assert_eq!(v.final_status, Some(TaskStatus::TimedOut));
        // The median of 1, 2, 3, 4 is the lower middle one, as parallel's.
        let mut median = Median::default();
        [4, 1, 3, 2].into_iter().for_each(|n| median.add(secs(n)));
        assert_eq!(median.get(), Some(secs(2)));
    }

    #[test]
    fn a_resumed_tasks_backoff_starts_afresh() {
        let mut s = Scheduler::new(config(1));
        // Three attempts in earlier sessions; this session allows one more retry.
        s.submit(1, TaskMeta { retries: 4, ..TaskMeta::default() }, 3, Duration::ZERO);
        assert_eq!(
            poll(&mut s, Duration::ZERO),
            vec![Decision::Start { slot: 1, task: 1, attempt: 4 }]
        );
        let v = s.attempt_ended(1, AttemptOutcome::Failed { exit_code: 1 }, Duration::ZERO);
        assert_eq!(v.final_status, None);
        assert_eq!(s.next_wakeup(), Some(Duration::from_secs(1)), "the base, not 2^3 times it");
    }

    fn submit_plain(s: &mut Scheduler, tasks: std::ops::RangeInclusive<TaskId>) {
        for task in tasks {
            s.submit(task, TaskMeta::default(), 0, Duration::ZERO);
        }
    }

    fn started_slots(decisions: &[Decision]) -> Vec<SlotId> {
        decisions
            .iter()
            .filter_map(|d| match d {
                Decision::Start { slot, .. } => Some(*slot),
                Decision::Kill { .. } => None,
            })
            .collect()
    }

    #[test]
    fn added_slots_take_tasks_at_the_next_poll() {
        let mut s = Scheduler::new(config(1));
        submit_plain(&mut s, 1..=5);
        assert_eq!(started_slots(&poll(&mut s, Duration::ZERO)), vec![1]);
        s.set_slots(3);
        assert_eq!(s.slot_count(), 3);
        assert_eq!(
            poll(&mut s, Duration::ZERO),
            vec![
                Decision::Start { slot: 2, task: 2, attempt: 1 },
                Decision::Start { slot: 3, task: 3, attempt: 1 }
            ]
        );
        assert_eq!(s.running(), 3);
    }

    #[test]
    fn removed_slots_finish_their_task_then_start_nothing_and_numbers_stay_low() {
        let mut s = Scheduler::new(config(3));
        submit_plain(&mut s, 1..=6);
        assert_eq!(started_slots(&poll(&mut s, Duration::ZERO)), vec![1, 2, 3]);
        s.set_slots(1);
        assert_eq!(s.slots(), 1);
        assert_eq!(s.slot_count(), 3, "slots 2 and 3 still run their task");
        assert!(poll(&mut s, Duration::ZERO).is_empty(), "nothing is killed, nothing starts");
        assert_eq!(s.running(), 3);
        s.attempt_ended(3, AttemptOutcome::Succeeded, Duration::ZERO);
        assert!(poll(&mut s, Duration::ZERO).is_empty(), "slot 3 is gone");
        s.attempt_ended(2, AttemptOutcome::Succeeded, Duration::ZERO);
        assert_eq!(s.slot_count(), 1);
        s.attempt_ended(1, AttemptOutcome::Succeeded, Duration::ZERO);
        assert_eq!(started_slots(&poll(&mut s, Duration::ZERO)), vec![1]);
        // Up again: numbered from 2, never past the count.
        s.set_slots(2);
        assert_eq!(started_slots(&poll(&mut s, Duration::ZERO)), vec![2]);
    }

    #[test]
    fn a_slot_removed_below_a_running_higher_one_keeps_numbers_in_range_once_both_end() {
        let mut s = Scheduler::new(config(3));
        submit_plain(&mut s, 1..=8);
        poll(&mut s, Duration::ZERO);
        s.attempt_ended(2, AttemptOutcome::Succeeded, Duration::ZERO);
        s.set_slots(2);
        // Slot 2 is free and open again; slot 3 still runs and takes nothing after.
        assert_eq!(started_slots(&poll(&mut s, Duration::ZERO)), vec![2]);
        s.attempt_ended(3, AttemptOutcome::Succeeded, Duration::ZERO);
        assert_eq!(s.slot_count(), 2);
        for slot in [1, 2] {
            s.attempt_ended(slot, AttemptOutcome::Succeeded, Duration::ZERO);
        }
        assert_eq!(started_slots(&poll(&mut s, Duration::ZERO)), vec![1, 2]);
    }

    #[test]
    fn zero_slots_is_read_as_one() {
        let mut s = Scheduler::new(config(2));
        s.set_slots(0);
        assert_eq!(s.slots(), 1);
    }

    #[test]
    fn paused_starts_nothing_while_running_tasks_go_on_and_timeouts_still_fire() {
        let mut s = Scheduler::new(config(2));
        let meta = TaskMeta { timeout: Some(Duration::from_secs(5)), ..TaskMeta::default() };
        s.submit(1, meta, 0, Duration::ZERO);
        submit_plain(&mut s, 2..=4);
        assert_eq!(poll(&mut s, Duration::ZERO).len(), 2);
        s.set_paused(true);
        s.attempt_ended(2, AttemptOutcome::Succeeded, Duration::from_secs(1));
        assert!(poll(&mut s, Duration::from_secs(1)).is_empty(), "paused: slot 2 stays free");
        assert!(!s.is_idle(), "tasks wait for the resume");
        assert_eq!(
            poll(&mut s, Duration::from_secs(5)),
            vec![Decision::Kill { slot: 1, task: 1, reason: KillReason::Timeout }]
        );
        s.set_paused(false);
        assert_eq!(started_slots(&poll(&mut s, Duration::from_secs(6))), vec![2]);
    }

    #[test]
    fn cancel_drops_a_waiting_task_kills_a_running_one_and_ignores_others() {
        let mut s = Scheduler::new(config(1));
        let retried = TaskMeta { retries: 1, ..TaskMeta::default() };
        s.submit(1, retried, 0, Duration::ZERO);
        submit_plain(&mut s, 2..=3);
        poll(&mut s, Duration::ZERO);
        let mut out = Vec::new();
        assert_eq!(s.cancel(3, &mut out), Cancel::Dropped);
        assert!(out.is_empty());
        assert_eq!(s.unfinished(), 2);
        assert_eq!(s.cancel(1, &mut out), Cancel::Killing);
        assert_eq!(out, vec![Decision::Kill { slot: 1, task: 1, reason: KillReason::Cancel }]);
        let v = s.attempt_ended(1, AttemptOutcome::Crashed { signal: 15 }, Duration::ZERO);
        assert_eq!(v.final_status, Some(TaskStatus::Cancelled), "not retried");
        assert_eq!(s.cancel(1, &mut out), Cancel::Unknown, "ended");
        assert_eq!(s.cancel(42, &mut out), Cancel::Unknown, "never submitted");
        assert_eq!(
            poll(&mut s, Duration::ZERO),
            vec![Decision::Start { slot: 1, task: 2, attempt: 1 }],
            "task 3 never starts"
        );
        s.attempt_ended(1, AttemptOutcome::Succeeded, Duration::ZERO);
        assert!(s.is_idle());
        assert_eq!(s.unfinished(), 0);
    }

    #[test]
    fn cancel_drops_a_task_waiting_out_its_backoff() {
        let mut s = Scheduler::new(config(1));
        s.submit(1, TaskMeta { retries: 2, ..TaskMeta::default() }, 0, Duration::ZERO);
        poll(&mut s, Duration::ZERO);
        let v = s.attempt_ended(1, AttemptOutcome::Failed { exit_code: 1 }, Duration::ZERO);
        assert_eq!(v.final_status, None);
        assert_eq!(s.cancel(1, &mut Vec::new()), Cancel::Dropped);
        assert_eq!(s.next_wakeup(), None);
        assert!(poll(&mut s, Duration::from_secs(10)).is_empty());
        assert!(s.is_idle());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff { base: Duration::from_millis(100), max: Duration::from_millis(500) };
        let delays: Vec<_> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 500, 500]);
    }
}
