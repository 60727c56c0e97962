//! The worker pool's rules, pure: lanes and prefetch, where a started Run goes
//! (sent, held for its worker to run it alone, or requeued), blame and suspects
//! when a worker dies, quarantine, hang detection (silence against CPU time),
//! recycling, start-failure breaking, when a worker is replaced, a live resize and an
//! elastic pool's grow and shrink, and shutdown (how
//! a worker is retired, when its grace runs out and why it is then killed). Each rule is a
//! function of the facts the driver hands it, the time included (a `Duration` since
//! the pool started, as the scheduler takes it); none reads the clock, touches a
//! process or does I/O, so each is tested here without processes.
//!
//! What is not here: the state the rules read, the order in which they apply and
//! the scheduler calls (the state machine, `machine/`); processes, the handshake's
//! bytes and the store (`driver.rs`).

use std::time::Duration;

use crate::process::signal::signal_name;
use crate::process::Exited;
use crate::task::{AttemptOutcome, SlotId, TaskId};

/// Tasks shorter than this (a moving average) are prefetched, as many to a worker as
/// fit in this time: batches grow as tasks shrink, and the per-batch cost (a read, a
/// write and a wake-up on each side) is shared by more tasks.
pub(super) const PREFETCH_BUDGET: Duration = Duration::from_millis(1);
/// A worker that exits this many times in a row before it is ready breaks the pool.
pub(super) const MAX_START_FAILURES: u32 = 3;

/// A Run handed to a worker (or held for its fresh replacement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sent {
    pub task: TaskId,
    pub attempt: u32,
    /// The scheduler's slot (lane) it runs on.
    pub slot: SlotId,
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Started; waiting for Hello.
    Starting,
    /// Init sent; waiting for InitDone.
    Initializing,
    Ready,
    /// Shutdown sent: it answers what it has, says Bye and exits.
    Retiring,
}

/// Why the driver killed a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Cause {
    /// The task on this slot ran past its timeout.
    Timeout(SlotId),
    Hung(Duration),
    Protocol(String),
    /// Retiring, it did not exit within the grace.
    Lingered,
    Terminate,
}

// ----- lanes and prefetch -----

/// Lanes to open per worker when tasks typically take `typical` seconds: for tasks
/// shorter than `PREFETCH_BUDGET`, as many as fit in it and at least 2; else 1. Never
/// more than `lanes`. With an unfinished task that has a timeout, 1: a deadline must
/// not tick while its task waits behind another.
pub(super) fn prefetch_depth(typical: Option<f64>, lanes: usize, timed_tasks: usize) -> usize {
    let budget = PREFETCH_BUDGET.as_secs_f64();
    match typical {
        _ if timed_tasks > 0 => 1,
        // The float-to-int cast saturates: a typical time of zero gives every lane.
        Some(t) if t < budget => ((budget / t) as usize).max(2).min(lanes),
        _ => 1,
    }
}

/// The moving average of task run time, seconds, after a task that ran `ran`.
pub(super) fn typical_after(typical: Option<f64>, ran: Duration) -> f64 {
    let secs = ran.as_secs_f64();
    typical.map_or(secs, |t| 0.9 * t + 0.1 * secs)
}

/// What decides whether a worker's lanes are open.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct LaneView {
    /// Ready and not being killed.
    pub ready: bool,
    /// It has had its `max_tasks_per_worker` Runs.
    pub spent: bool,
    /// A task is held for it to run alone.
    pub holding: bool,
    /// It runs a task alone (quarantined or suspect).
    pub alone: bool,
}

/// Whether `lane` (0 = first) of a worker is open at prefetch `depth`: the first while
/// it can take work, the others only while prefetching. None while it holds a task or
/// runs one alone: that task's lane may be any of them.
pub(super) fn lane_open(view: LaneView, lane: usize, depth: usize) -> bool {
    let takes_work = view.ready && !view.spent && !view.holding && !view.alone;
    takes_work && (lane == 0 || lane < depth)
}

// ----- where a started Run goes -----

/// What the driver knows of a task when the scheduler starts it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TaskRisk {
    /// Attempts that ended with its worker dead.
    pub crashes: u32,
    /// It was among several Runs a worker had when it died.
    pub suspect: bool,
    pub retries: u32,
}

/// What the driver knows of the worker a Run's slot leads to.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct WorkerLoad {
    /// Ready, not being killed, not spent: it can be sent a Run.
    pub available: bool,
    /// Runs sent to it so far.
    pub given: u64,
    /// Runs it has not answered.
    pub in_flight: usize,
    /// A task is held for it already.
    pub holding: bool,
    /// It runs a task alone (quarantined or suspect).
    pub alone: bool,
}

/// Where a started Run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placement {
    /// Sent now; `alone`: no other Run goes to that worker until it is answered.
    Send { alone: bool },
    /// Held on the slot until its worker's queue is empty, then sent alone.
    Hold,
    /// Held on the slot for the worker's fresh replacement; the worker is retired.
    HoldAndRetire,
    /// Back to the queue without using an attempt (its worker cannot take it).
    Requeue,
}

/// Quarantine and suspects: the last try of a task that crashed workers runs alone
/// in a fresh worker (held, and the worker retired, if it is not fresh); a suspect
/// runs alone in its worker (held until the worker's queue is empty). A worker that
/// holds a task or runs one alone takes no other (one the scheduler started on its
/// lanes in the same turn goes back to the queue), so it holds one task at most.
pub(super) fn place(task: TaskRisk, attempt: u32, worker: WorkerLoad) -> Placement {
    if !worker.available || worker.holding || worker.alone {
        return Placement::Requeue;
    }
    let quarantine = task.crashes > 0 && attempt == task.retries + 1;
    let busy = worker.in_flight > 0;
    if quarantine && (worker.given > 0 || busy) {
        return Placement::HoldAndRetire;
    }
    if task.suspect && busy {
        return Placement::Hold;
    }
    Placement::Send { alone: quarantine || task.suspect }
}

/// Whether an outcome counts as a crash of the task's worker (towards quarantine).
pub(super) fn is_crash(outcome: AttemptOutcome) -> bool {
    matches!(
        outcome,
        AttemptOutcome::Crashed { .. }
            | AttemptOutcome::Failed { .. }
            | AttemptOutcome::MemoryExceeded
    )
}

// ----- a worker's death -----

/// What becomes of each Run a dead worker had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Its attempt ends with the worker's death (or its timeout). `ran`: the worker
    /// was running it (the head of its queue), so its run time counts.
    Blamed { ran: bool },
    /// Back to the queue without using an attempt; `suspect`: it must run alone next.
    Requeued { suspect: bool },
}

/// Blame: a worker that dies with one Run unanswered dies of that Run; one killed for
/// a timeout dies of the Run whose deadline passed. With several unanswered and no
/// timeout, the one it was running is unknown (Results of prefetched Runs may come
/// together): all go back unblamed, as suspects. One fate per Run, in order.
pub(super) fn blame(in_flight: &[Sent], timed_out: Option<SlotId>) -> Vec<Fate> {
    let head = in_flight.first().map_or(0, |s| s.slot);
    let blamed = timed_out.unwrap_or(head);
    let precise = in_flight.len() <= 1 || timed_out.is_some();
    in_flight
        .iter()
        .map(|sent| {
            if precise && sent.slot == blamed {
                Fate::Blamed { ran: sent.slot == head }
            } else {
                Fate::Requeued { suspect: !precise }
            }
        })
        .collect()
}

/// How a worker's end reads as the outcome of the Run it was blamed for, and why.
/// `oom`: its cgroup counted an OOM kill during its life.
pub(super) fn exit_outcome(
    cause: Option<&Cause>,
    exited: Option<Exited>,
    oom: bool,
    pid: u32,
) -> (AttemptOutcome, String) {
    match (cause, exited) {
        _ if oom => {
            (AttemptOutcome::MemoryExceeded, "the worker went past its memory limit".into())
        }
        (Some(Cause::Hung(silent)), _) => (
            AttemptOutcome::Crashed { signal: 9 },
            format!("the worker stopped answering (nothing heard for {} s)", silent.as_secs_f64()),
        ),
        (Some(Cause::Protocol(e)), _) => {
            (AttemptOutcome::Crashed { signal: 9 }, format!("the worker broke the protocol: {e}"))
        }
        (_, Some(Exited::Signal(signal))) => (
            AttemptOutcome::Crashed { signal },
            format!(
                "the worker (pid {pid}) was killed by signal {signal} ({})",
                signal_name(signal)
            ),
        ),
        (_, Some(Exited::Code(code))) => (
            AttemptOutcome::Failed { exit_code: code },
            format!("the worker (pid {pid}) exited with status {code}"),
        ),
        (_, None) => {
            (AttemptOutcome::Failed { exit_code: -1 }, "the worker could not be reaped".into())
        }
    }
}

/// Whether a worker's end counts as a failure to start: it died before it was ready,
/// and not because the driver stopped it (terminate, a retirement it did not finish,
/// or a clean exit after Shutdown).
pub(super) fn failed_to_start(phase: Phase, cause: Option<&Cause>, exited: Option<Exited>) -> bool {
    let planned = matches!(cause, Some(Cause::Terminate | Cause::Lingered))
        || (phase == Phase::Retiring && exited == Some(Exited::Code(0)));
    phase != Phase::Ready && phase != Phase::Retiring && !planned
}

/// Start failures in a row; any worker that becomes ready resets them.
#[derive(Debug, Default)]
pub(super) struct StartFailures(u32);

impl StartFailures {
    /// One more failure; true once they break the pool (`MAX_START_FAILURES` in a row).
    pub fn failed(&mut self) -> bool {
        self.0 += 1;
        self.0 >= MAX_START_FAILURES
    }

    /// A worker became ready.
    pub fn ready(&mut self) {
        self.0 = 0;
    }

    /// Failures in a row so far.
    pub fn count(&self) -> u32 {
        self.0
    }
}

/// What the pool still wants of a worker place once its worker is gone.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PoolState {
    pub terminating: bool,
    pub broken: bool,
    pub closing: bool,
    /// No unfinished task.
    pub drained: bool,
}

/// Whether a place whose worker just exited gets a new one: not once the pool is
/// terminated or broken, nor once it is closing with nothing left to run (unless a
/// task is held for that place's fresh worker), nor when a resize took the place
/// away. No respawn loop: a worker that never becomes ready counts towards
/// `StartFailures`.
pub(super) fn replace_after_exit(pool: PoolState, holding: bool, removed: bool) -> bool {
    let done_with_it = pool.closing && pool.drained && !holding;
    !(pool.terminating || pool.broken || done_with_it || removed)
}

// ----- hangs -----

/// Whether silence from a worker means it hangs: always before its Hello, afterwards
/// only when it sends heartbeats; never once it is being killed, nor with the check
/// off (`heartbeat_timeout` zero).
pub(super) fn watches_hang(
    phase: Phase,
    killing: bool,
    heartbeat: Duration,
    heartbeat_timeout: Duration,
) -> bool {
    !killing && !heartbeat_timeout.is_zero() && (phase == Phase::Starting || !heartbeat.is_zero())
}

/// What the pool last heard of a worker: when, and its CPU time then.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Silence {
    /// When it last said anything (or its silence was last excused).
    pub last_heard: Duration,
    /// Its CPU time at its last Heartbeat, or when its silence was last excused.
    pub cpu_ticks: u64,
}

/// What a silence check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hang {
    /// Heard within the timeout.
    Heard,
    /// Silent for the timeout, but it used the CPU meanwhile: a long call holding its
    /// heartbeat back (a Python call that keeps the GIL). Its silence restarts now.
    Busy,
    /// Silent and stopped: kill it.
    Hung,
}

impl Silence {
    /// A silence that starts at `now`.
    pub fn since(now: Duration) -> Self {
        Silence { last_heard: now, cpu_ticks: 0 }
    }

    /// When the check is next due.
    pub fn due(&self, timeout: Duration) -> Duration {
        self.last_heard.saturating_add(timeout)
    }

    /// Checks the silence at `now`; `cpu_ticks` reads the worker's CPU time (asked
    /// only once the timeout has passed). Hung means stopped; a task's time is bounded
    /// by its own timeout, not by this.
    pub fn check(
        &mut self,
        now: Duration,
        timeout: Duration,
        cpu_ticks: impl FnOnce() -> Option<u64>,
    ) -> Hang {
        if now.saturating_sub(self.last_heard) < timeout {
            return Hang::Heard;
        }
        match cpu_ticks().filter(|&t| t > self.cpu_ticks) {
            Some(ticks) => {
                self.cpu_ticks = ticks;
                self.last_heard = now;
                Hang::Busy
            }
            None => Hang::Hung,
        }
    }
}

// ----- a live resize -----

/// What a resize does to the worker places.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Resize {
    /// The number of workers it comes to.
    pub given: usize,
    /// Places taken away (their workers retired, not replaced), highest first.
    pub remove: Vec<usize>,
    /// Places taken away earlier that come back, lowest first.
    pub revive: Vec<usize>,
    /// New places to add after the existing ones.
    pub add: usize,
}

/// A live resize to `wanted` workers (at least 1, at most `cap`: the memory limit's
/// cgroups, one per place). `removed[i]`: place `i` was taken away. The places taken
/// away are the highest in use; places come back before new ones are added, so the
/// table grows only past its largest size.
pub(super) fn resize(removed: &[bool], wanted: usize, cap: Option<usize>) -> Resize {
    let given = wanted.max(1).min(cap.unwrap_or(usize::MAX));
    let active = removed.iter().filter(|r| !**r).count();
    let mut plan = Resize { given, ..Resize::default() };
    if active > given {
        let in_use = (0..removed.len()).rev().filter(|&i| !removed[i]);
        plan.remove = in_use.take(active - given).collect();
    } else {
        let away = (0..removed.len()).filter(|&i| removed[i]);
        plan.revive = away.take(given - active).collect();
        plan.add = given - active - plan.revive.len();
    }
    plan
}

// ----- an elastic pool -----

/// The bounds of an elastic pool: it starts `min` workers, adds workers while tasks
/// wait (up to `max`), and retires workers idle for `idle_timeout` (down to `min`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Elastic {
    pub min: usize,
    pub max: usize,
    /// `None`: a worker is never retired for being idle.
    pub idle_timeout: Option<Duration>,
}

/// What an elastic pool's rule sees.
#[derive(Debug, Clone, Copy)]
pub(super) struct Load<'a> {
    /// Tasks not started yet.
    pub waiting: usize,
    /// Worker places in use (not taken away).
    pub active: usize,
    /// Workers that will take a task without a new one: starting, or ready and idle.
    pub free: usize,
    /// Places whose worker is ready with nothing to do, and since when.
    pub idle: &'a [(usize, Duration)],
}

/// What an elastic pool does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Scale {
    Keep,
    /// Resize to this many workers (more than `active`).
    GrowTo(usize),
    /// Take these places away (their workers are idle), longest idle first.
    Retire(Vec<usize>),
}

/// Grow by the tasks that no free worker will take, up to `max`; with nothing waiting,
/// retire the workers idle for `idle_timeout` or longer, down to `min`.
pub(super) fn scale(bounds: Elastic, load: Load<'_>, now: Duration) -> Scale {
    let unserved = load.waiting.saturating_sub(load.free);
    if unserved > 0 && load.active < bounds.max {
        return Scale::GrowTo(bounds.max.min(load.active + unserved));
    }
    let (Some(timeout), true) = (bounds.idle_timeout, load.waiting == 0) else {
        return Scale::Keep;
    };
    let mut expired: Vec<(usize, Duration)> = load
        .idle
        .iter()
        .copied()
        .filter(|&(_, since)| now.saturating_sub(since) >= timeout)
        .collect();
    expired.sort_by_key(|&(index, since)| (since, index));
    let surplus = load.active.saturating_sub(bounds.min);
    let retire: Vec<usize> = expired.into_iter().take(surplus).map(|(index, _)| index).collect();
    if retire.is_empty() {
        Scale::Keep
    } else {
        Scale::Retire(retire)
    }
}

/// When `scale` may next retire an idle worker: the earliest end of an idle timeout,
/// while the pool is above `min`.
pub(super) fn next_retirement(
    bounds: Elastic,
    active: usize,
    idle: &[(usize, Duration)],
) -> Option<Duration> {
    let timeout = bounds.idle_timeout.filter(|_| active > bounds.min)?;
    idle.iter().map(|&(_, since)| since.saturating_add(timeout)).min()
}

/// The bounds after a live resize to `workers`: a fixed pool (min = max) stays fixed
/// at the new size; an elastic one takes it as its maximum, its minimum no higher.
pub(super) fn resized_bounds(bounds: Elastic, workers: usize) -> Elastic {
    let fixed = bounds.min == bounds.max;
    let min = if fixed { workers } else { bounds.min.min(workers) };
    Elastic { min, max: workers, idle_timeout: bounds.idle_timeout }
}

// ----- shutdown -----

/// How a worker is retired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retire {
    /// Retiring or being killed already: nothing more to do.
    Going,
    /// Send Shutdown: it answers what it has, then exits. `kill_at`: when it is killed
    /// if still there (with nothing to answer, the grace runs from now; otherwise from
    /// its last Result, see `after_last_result`).
    Shutdown { kill_at: Option<Duration> },
    /// Not ready yet: nothing to finish, so no grace is owed; kill it.
    Kill,
}

/// Retiring a worker (recycled, the pool closing, a quarantine, a place taken away).
pub(super) fn retire(
    phase: Phase,
    killing: bool,
    in_flight: usize,
    now: Duration,
    grace: Duration,
) -> Retire {
    match phase {
        _ if killing => Retire::Going,
        Phase::Retiring => Retire::Going,
        Phase::Ready => {
            Retire::Shutdown { kill_at: (in_flight == 0).then(|| now.saturating_add(grace)) }
        }
        Phase::Starting | Phase::Initializing => Retire::Kill,
    }
}

/// When a worker that just sent a Result is killed if still there: a retiring worker
/// that has answered everything has the grace to exit; otherwise its deadline stays.
pub(super) fn after_last_result(
    phase: Phase,
    in_flight: usize,
    kill_at: Option<Duration>,
    now: Duration,
    grace: Duration,
) -> Option<Duration> {
    if phase == Phase::Retiring && in_flight == 0 {
        Some(now.saturating_add(grace))
    } else {
        kill_at
    }
}

/// When a worker whose channel ended is killed if it has not exited: its exit should
/// follow (it says how the worker died, so it is not killed at once); an earlier
/// deadline stays.
pub(super) fn after_channel_closed(
    kill_at: Option<Duration>,
    now: Duration,
    grace: Duration,
) -> Option<Duration> {
    kill_at.or(Some(now.saturating_add(grace)))
}

/// Why a worker still there at its `kill_at` is killed: one whose channel ended
/// unasked broke the protocol; a retiring one lingered.
pub(super) fn overdue_cause(closed: Option<&str>, phase: Phase) -> Cause {
    match closed {
        Some(why) if phase != Phase::Retiring => Cause::Protocol(why.to_owned()),
        _ => Cause::Lingered,
    }
}

// ----- recycling -----

/// Whether a worker has had its `max_tasks_per_worker` Runs (it is then retired).
pub(super) fn spent(given: u64, max_tasks_per_worker: Option<u64>) -> bool {
    max_tasks_per_worker.is_some_and(|max| given >= max)
}

/// Whether a worker's resident size is past the pool's `recycle_memory` (it is then
/// retired between two tasks).
pub(super) fn grown(rss: u64, recycle_memory: Option<u64>) -> bool {
    recycle_memory.is_some_and(|max| rss > max)
}

/// The exception line of a task's error when it is an allocation that the pool's
/// `RLIMIT_AS` limit made fail: under that limit, its traceback's last line is
/// `MemoryError`, alone or with a message. Only that exact exception: a user's own
/// error that merely mentions memory stays the task's answer. (Under a cgroup the OOM
/// killer says so instead.)
pub(super) fn allocation_failed(traceback: &str, address_space_limit: bool) -> Option<&str> {
    if !address_space_limit {
        return None;
    }
    let line = traceback.trim_end().lines().last()?;
    (line == "MemoryError" || line.starts_with("MemoryError: ")).then_some(line)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
