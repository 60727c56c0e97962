//! Property tests of the scheduler's invariants, driven through its public API
//! with random workloads and no processes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proptest::prelude::*;
use shoal_core::scheduler::{Backoff, Cancel, Decision, Scheduler, SchedulerConfig};
use shoal_core::{AttemptOutcome, TaskMeta, TaskStatus};

fn config(slots: usize, aging: Option<Duration>) -> SchedulerConfig {
    SchedulerConfig {
        slots,
        aging,
        backoff: Backoff { base: Duration::from_millis(10), max: Duration::from_millis(40) },
        retry_timeouts: true,
        start_interval: Duration::ZERO,
        start_gate: None,
        median_timeout: None,
    }
}

fn outcome(code: u8) -> AttemptOutcome {
    match code % 4 {
        0 | 1 => AttemptOutcome::Succeeded,
        2 => AttemptOutcome::Failed { exit_code: 1 },
        _ => AttemptOutcome::Crashed { signal: 9 },
    }
}

#[derive(Debug, Clone)]
struct Spec {
    priority: i32,
    retries: u32,
    timeout_ms: Option<u64>,
    outcomes: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (-2..3i32, 0..3u32, proptest::option::of(5..50u64), proptest::collection::vec(any::<u8>(), 4))
        .prop_map(|(priority, retries, timeout_ms, outcomes)| Spec {
            priority,
            retries,
            timeout_ms,
            outcomes,
        })
}

/// A request from outside, applied to a running scheduler.
#[derive(Debug, Clone)]
enum Steer {
    Slots(usize),
    Pause,
    Unpause,
    Cancel(u64),
}

fn steer(tasks: u64) -> impl Strategy<Value = Steer> {
    prop_oneof![
        (0..6usize).prop_map(Steer::Slots),
        Just(Steer::Pause),
        Just(Steer::Unpause),
        (1..=tasks + 2).prop_map(Steer::Cancel),
    ]
}

proptest! {
    /// Steered while it runs (slots up and down, pause, cancel of any task), the
    /// scheduler starts tasks only on free slots within the open ones, never starts a
    /// cancelled task, and every task ends exactly once: run to its end, or cancelled.
    #[test]
    fn steering_keeps_starts_on_open_free_slots_and_every_task_ends_once(
        slots in 1..4usize,
        (tasks, ops) in (1..30u64).prop_flat_map(|n| (Just(n), proptest::collection::vec(steer(n), 0..16))),
        outcomes in proptest::collection::vec(any::<u8>(), 64),
        durations in proptest::collection::vec(1..30u64, 64),
    ) {
        let mut s = Scheduler::new(config(slots, None));
        for task in 1..=tasks {
            s.submit(task, TaskMeta { retries: 1, ..TaskMeta::default() }, 0, Duration::ZERO);
        }
        let mut now = Duration::ZERO;
        let mut open = slots;
        let mut paused = false;
        let mut ops = ops.into_iter();
        let mut running: HashMap<usize, (u64, Duration)> = HashMap::new(); // slot -> (task, ends at)
        let mut ended: HashMap<u64, TaskStatus> = HashMap::new();
        let mut step = 0usize;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            out.clear();
            match ops.next() {
                Some(Steer::Slots(n)) => {
                    s.set_slots(n);
                    open = n.max(1);
                }
                Some(Steer::Pause) => { s.set_paused(true); paused = true; }
                Some(Steer::Unpause) => { s.set_paused(false); paused = false; }
                Some(Steer::Cancel(task)) => {
                    let is_running = running.values().any(|&(t, _)| t == task);
                    match s.cancel(task, &mut out) {
                        Cancel::Dropped => {
                            prop_assert!(!is_running && task <= tasks && !ended.contains_key(&task));
                            ended.insert(task, TaskStatus::Cancelled);
                        }
                        Cancel::Killing => prop_assert!(is_running, "task {} is not running", task),
                        Cancel::Unknown => prop_assert!(
                            task > tasks || ended.contains_key(&task), "task {} is still pending", task
                        ),
                    }
                }
                None if paused => { s.set_paused(false); paused = false; }
                None => {}
            }
            s.poll(now, &mut out);
            for d in &out {
                match *d {
                    Decision::Start { slot, task, .. } => {
                        prop_assert!(!paused, "task {} started while paused", task);
                        prop_assert!((1..=open).contains(&slot), "slot {} of {}", slot, open);
                        prop_assert!(!running.contains_key(&slot), "slot {} busy", slot);
                        prop_assert!(!ended.contains_key(&task), "task {} started after its end", task);
                        step += 1;
                        running.insert(slot, (task, now + Duration::from_millis(durations[step % durations.len()])));
                    }
                    Decision::Kill { slot, .. } => {
                        let entry = running.get_mut(&slot).expect("kill of a running slot");
                        entry.1 = now + Duration::from_millis(1);
                    }
                }
            }
            prop_assert!(s.slot_count() >= open);
            if s.is_idle() && ops.len() == 0 {
                break;
            }
            let next_end = running.values().map(|&(_, at)| at).min();
            if let Some(next) = next_end.into_iter().chain(s.next_wakeup()).min() {
                now = now.max(next);
            }
            let done: Vec<usize> = running.iter().filter(|(_, &(_, at))| at <= now).map(|(&slot, _)| slot).collect();
            for slot in done {
                let (task, _) = running.remove(&slot).unwrap();
                step += 1;
                let v = s.attempt_ended(slot, outcome(outcomes[step % outcomes.len()]), now);
                if let Some(status) = v.final_status {
                    prop_assert!(ended.insert(task, status).is_none(), "task {} ended twice", task);
                }
            }
        }
        prop_assert_eq!(ended.len() as u64, tasks, "every task ended");
        prop_assert_eq!(s.unfinished(), 0);
        prop_assert_eq!(s.slot_count(), open, "the slots taken away are gone once idle");
    }

    /// Every task is started once per attempt, never on two slots, never past its
    /// retries, always on a free slot, never below a waiting task's priority (aging
    /// off), and ends exactly once.
    #[test]
    fn every_task_ends_exactly_once_and_priorities_hold(
        slots in 1..4usize,
        specs in proptest::collection::vec(spec(), 1..40),
        durations in proptest::collection::vec(1..30u64, 64),
    ) {
        let mut s = Scheduler::new(config(slots, None));
        let mut now = Duration::ZERO;
        for (i, sp) in specs.iter().enumerate() {
            let meta = TaskMeta {
                priority: sp.priority,
                retries: sp.retries,
                timeout: sp.timeout_ms.map(Duration::from_millis),
                ..TaskMeta::default()
            };
            s.submit(i as u64 + 1, meta, 0, now);
        }
        let mut attempts: HashMap<u64, u32> = HashMap::new();
        let mut running: HashMap<usize, (u64, Duration)> = HashMap::new(); // slot -> (task, ends at)
        let mut finished: HashMap<u64, TaskStatus> = HashMap::new();
        let mut waiting: HashSet<u64> = (1..=specs.len() as u64).collect();
        let mut step = 0usize;
        let mut out = Vec::new();
        for _ in 0..10_000 {
            out.clear();
            s.poll(now, &mut out);
            for d in &out {
                match *d {
                    Decision::Start { slot, task, attempt } => {
                        prop_assert!(!running.contains_key(&slot), "slot {} busy", slot);
                        prop_assert!(running.values().all(|&(t, _)| t != task), "task {} twice", task);
                        let n = attempts.entry(task).or_default();
                        *n += 1;
                        prop_assert_eq!(attempt, *n);
                        let sp = &specs[task as usize - 1];
                        prop_assert!(attempt <= sp.retries + 1);
                        let best = waiting.iter().map(|t| specs[*t as usize - 1].priority).max().unwrap_or(i32::MIN);
                        // Retried tasks in backoff are not waiting yet; all others are.
                        prop_assert!(sp.priority >= best || !waiting.contains(&task),
                            "task {} (priority {}) started before one of priority {}", task, sp.priority, best);
                        waiting.remove(&task);
                        step += 1;
                        running.insert(slot, (task, now + Duration::from_millis(durations[step % durations.len()])));
                    }
                    Decision::Kill { slot, .. } => {
                        // The killed process dies a little later.
                        let entry = running.get_mut(&slot).expect("kill of a running slot");
                        entry.1 = now + Duration::from_millis(1);
                    }
                }
            }
            if s.is_idle() {
                break;
            }
            // Advance to the next event: an attempt ending or the scheduler's wakeup.
            let next_end = running.values().map(|&(_, at)| at).min();
            let next = next_end.into_iter().chain(s.next_wakeup()).min().expect("something pending");
            now = now.max(next);
            let ended: Vec<usize> = running.iter().filter(|(_, &(_, at))| at <= now).map(|(&slot, _)| slot).collect();
            for slot in ended {
                let (task, _) = running.remove(&slot).unwrap();
                let sp = &specs[task as usize - 1];
                let v = s.attempt_ended(slot, outcome(sp.outcomes[(attempts[&task] - 1) as usize]), now);
                prop_assert_eq!(v.task, task);
                match v.final_status {
                    Some(status) => prop_assert!(finished.insert(task, status).is_none(), "task {} ended twice", task),
                    // A retried task is not put back in `waiting`: it waits out its backoff
                    // first, so the priority check only judges first attempts.
                    None => prop_assert!(v.attempt <= sp.retries),
                }
            }
        }
        prop_assert_eq!(finished.len(), specs.len(), "every task finished");
        prop_assert_eq!(s.unfinished(), 0);
    }

    /// With aging on, a low-priority task starts within (priority gap) aging steps
    /// even while higher-priority work keeps arriving.
    #[test]
    fn aging_prevents_starvation(gap in 1..6i32, step_ms in 10..200u64) {
        let step = Duration::from_millis(step_ms);
        let mut s = Scheduler::new(config(1, Some(step)));
        s.submit(0, TaskMeta { priority: 0, ..TaskMeta::default() }, 0, Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut next_id = 1;
        let mut out = Vec::new();
        let tick = Duration::from_millis(5);
        let bound = step * (gap as u32 + 1);
        loop {
            // One fresh high-priority task per tick.
            s.submit(next_id, TaskMeta { priority: gap, ..TaskMeta::default() }, 0, now);
            next_id += 1;
            out.clear();
            s.poll(now, &mut out);
            if out.iter().any(|d| matches!(d, Decision::Start { task: 0, .. })) {
                break;
            }
            prop_assert!(now <= bound, "low-priority task still waiting at {:?}", now);
            now += tick;
            if s.running() > 0 {
                s.attempt_ended(1, AttemptOutcome::Succeeded, now);
            }
        }
    }
}
