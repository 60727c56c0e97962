//! The ready queue: which waiting task goes next.
//!
//! Order, from strongest to weakest: effective priority (the task's priority plus one
//! level per `aging` step its bucket's oldest task has waited, so nothing starves),
//! then the affinity key the asking slot ran last, then the longest cost hint, then
//! submission order (FIFO).
//!
//! Every step is O(1) amortized in the queue's length (plus O(distinct priorities)
//! with aging), so the rate holds as the queue grows. Waiting tasks live in a slab.
//! Each index over them ([`Ranked`]) keeps, in a deque, the tasks pushed in rank
//! order, which is the usual case (no cost hint, first attempt), and the others in a
//! B-tree. A task taken through one index leaves a stale handle in the deques of the
//! others; a stale handle is dropped when it reaches the front.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use slab::Slab;

use crate::task::{TaskId, TaskMeta};

/// Position among a priority's tasks: longest cost first, then FIFO.
type Rank = (Reverse<u128>, u64);

/// A task the scheduler holds. It moves, whole, from the queue to a slot to the
/// backoff set and back, so no map of every task is needed: at 100,000 tasks such
/// a map would miss the cache on every step.
#[derive(Debug)]
pub(crate) struct TaskState {
    pub task: TaskId,
    pub meta: TaskMeta,
    /// Submission number: FIFO order, kept across retries.
    pub seq: u64,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made before this run of the scheduler (a resumed run's): backoff
    /// starts afresh after them.
    pub before: u32,
}

/// A waiting task's place in the slab. Slab places are reused; the ticket, unique to
/// each push, tells a live handle from a stale one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle {
    place: usize,
    ticket: u64,
}

/// The waiting tasks, and the ticket of the task in each place: a dense array, so
/// telling a stale handle from a live one does not touch the (colder) task itself.
#[derive(Debug, Default)]
struct Tasks {
    slab: Slab<TaskState>,
    tickets: Vec<u64>,
    next_ticket: u64,
}

impl Tasks {
    fn insert(&mut self, state: TaskState) -> Handle {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let place = self.slab.insert(state);
        if place == self.tickets.len() {
            self.tickets.push(ticket);
        } else {
            self.tickets[place] = ticket;
        }
        Handle { place, ticket }
    }

    fn remove(&mut self, handle: Handle) -> TaskState {
        self.tickets[handle.place] = u64::MAX;
        self.slab.remove(handle.place)
    }

    fn is_live(&self, handle: Handle) -> bool {
        self.tickets.get(handle.place) == Some(&handle.ticket)
    }

    fn len(&self) -> usize {
        self.slab.len()
    }
}

/// Some waiting tasks in rank order.
#[derive(Debug, Default)]
struct Ranked {
    /// Pushed in rank order: appended and taken from the front, O(1).
    in_order: VecDeque<(Rank, Handle)>,
    /// Pushed out of rank order (a cost hint, a retry keeping its old place).
    out_of_order: BTreeMap<Rank, Handle>,
    live: usize,
}

impl Ranked {
    fn push(&mut self, rank: Rank, handle: Handle) {
        if self.in_order.back().is_none_or(|&(last, _)| last < rank) {
            self.in_order.push_back((rank, handle));
        } else {
            self.out_of_order.insert(rank, handle);
        }
        self.live += 1;
    }

    /// The first live task, dropping the stale handles in front of it.
    fn first(&mut self, tasks: &Tasks) -> Option<(Rank, Handle)> {
        while self.in_order.front().is_some_and(|&(_, h)| !tasks.is_live(h)) {
            self.in_order.pop_front();
        }
        let in_order = self.in_order.front().copied();
        let out_of_order = self.out_of_order.first_key_value().map(|(&r, &h)| (r, h));
        match (in_order, out_of_order) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }

    /// Forgets a task taken from the slab; its deque handle, if any, goes stale.
    fn remove(&mut self, rank: Rank, handle: Handle, tasks: &Tasks) {
        if self.out_of_order.get(&rank) == Some(&handle) {
            self.out_of_order.remove(&rank);
        }
        self.live -= 1;
        sweep(&mut self.in_order, self.live, |&(_, h)| tasks.is_live(h));
    }
}

/// Drops the stale handles of a deque once they outnumber the live tasks: a task
/// that stays at the front (another key is always preferred) would otherwise let
/// them pile up behind it. Each sweep follows as many removals as it visits, so
/// the cost stays O(1) amortized.
fn sweep<T>(deque: &mut VecDeque<T>, live: usize, is_live: impl Fn(&T) -> bool) {
    if deque.len() > 2 * live + 32 {
        deque.retain(is_live);
    }
}

#[derive(Debug, Default)]
struct Bucket {
    ranked: Ranked,
    by_key: HashMap<String, Ranked>,
    /// Push order, which is wait order since `now` never goes back: the front is the
    /// task that has waited longest. Kept only with aging.
    by_age: VecDeque<(Duration, Handle)>,
}

/// Tasks ready to start, ordered as the module doc says.
#[derive(Debug)]
pub(crate) struct ReadyQueue {
    aging: Option<Duration>,
    tasks: Tasks,
    buckets: BTreeMap<i32, Bucket>,
}

fn rank_of(state: &TaskState) -> Rank {
    (Reverse(state.meta.cost.map_or(0, |c| c.as_nanos())), state.seq)
}

impl ReadyQueue {
    /// An empty queue; `aging` is the wait that raises a task by one priority level.
    pub fn new(aging: Option<Duration>) -> Self {
        let aging = aging.filter(|step| !step.is_zero());
        ReadyQueue { aging, tasks: Tasks::default(), buckets: BTreeMap::new() }
    }

    /// Number of waiting tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Adds a task; `now` starts its wait and is never earlier than the last push's.
    /// Its `seq` must not be in the queue already.
    pub fn push(&mut self, state: TaskState, now: Duration) {
        let rank = rank_of(&state);
        let priority = state.meta.priority;
        let key = state.meta.key.clone();
        let handle = self.tasks.insert(state);
        let bucket = self.buckets.entry(priority).or_default();
        bucket.ranked.push(rank, handle);
        if self.aging.is_some() {
            bucket.by_age.push_back((now, handle));
        }
        if let Some(key) = key {
            bucket.by_key.entry(key).or_default().push(rank, handle);
        }
    }

    /// Takes the next task for a slot that last ran `last_key`.
    pub fn pop(&mut self, last_key: Option<&str>, now: Duration) -> Option<TaskState> {
        let priority = self.best_bucket(now)?;
        let bucket = self.buckets.get_mut(&priority)?;
        let preferred = last_key.and_then(|k| bucket.by_key.get_mut(k));
        let (rank, handle) = preferred
            .and_then(|ranked| ranked.first(&self.tasks))
            .or_else(|| bucket.ranked.first(&self.tasks))?;
        Some(self.remove(priority, rank, handle))
    }

    /// The priority of the bucket to serve: highest effective priority, ties to the
    /// higher base priority.
    fn best_bucket(&mut self, now: Duration) -> Option<i32> {
        let Some(step) = self.aging else {
            return self.buckets.keys().next_back().copied();
        };
        let step = step.as_nanos() as i128;
        let tasks = &self.tasks;
        self.buckets
            .iter_mut()
            .map(|(&priority, bucket)| {
                while bucket.by_age.front().is_some_and(|&(_, h)| !tasks.is_live(h)) {
                    bucket.by_age.pop_front();
                }
                let oldest = bucket.by_age.front().map_or(now, |&(since, _)| since);
                let waited = now.saturating_sub(oldest).as_nanos() as i128;
                (i128::from(priority) * step + waited, priority)
            })
            .max()
            .map(|(_, priority)| priority)
    }

    /// Takes `task` out of the queue, wherever it waits; `None` if it does not. A scan
    /// of the waiting tasks: for a cancel request, never on the dispatch path.
    pub fn remove_task(&mut self, task: TaskId) -> Option<TaskState> {
        let (place, state) = self.tasks.slab.iter().find(|(_, s)| s.task == task)?;
        let handle = Handle { place, ticket: self.tasks.tickets[place] };
        let (priority, rank) = (state.meta.priority, rank_of(state));
        Some(self.remove(priority, rank, handle))
    }

    fn remove(&mut self, priority: i32, rank: Rank, handle: Handle) -> TaskState {
        let state = self.tasks.remove(handle);
        let tasks = &self.tasks;
        let bucket = self.buckets.get_mut(&priority).expect("bucket of a waiting task");
        bucket.ranked.remove(rank, handle, tasks);
        sweep(&mut bucket.by_age, bucket.ranked.live, |&(_, h)| tasks.is_live(h));
        if let Some(key) = &state.meta.key {
            if let Some(ranked) = bucket.by_key.get_mut(key) {
                ranked.remove(rank, handle, tasks);
                if ranked.live == 0 {
                    bucket.by_key.remove(key);
                }
            }
        }
        if bucket.ranked.live == 0 {
            self.buckets.remove(&priority);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(priority: i32, cost: Option<u64>, key: Option<&str>) -> TaskMeta {
        TaskMeta {
            priority,
            cost: cost.map(Duration::from_secs),
            key: key.map(str::to_owned),
            ..TaskMeta::default()
        }
    }

    fn state(task: TaskId, meta: TaskMeta) -> TaskState {
        TaskState { task, meta, seq: task, attempts: 0, before: 0 }
    }

    fn push(q: &mut ReadyQueue, task: TaskId, meta: TaskMeta, now: Duration) {
        q.push(state(task, meta), now);
    }

    fn pop(q: &mut ReadyQueue, last_key: Option<&str>, now: Duration) -> Option<TaskId> {
        q.pop(last_key, now).map(|s| s.task)
    }

    fn drain(q: &mut ReadyQueue, now: Duration) -> Vec<TaskId> {
        std::iter::from_fn(|| pop(q, None, now)).collect()
    }

    #[test]
    fn a_task_removed_by_id_is_never_served_and_the_rest_keep_their_order() {
        let mut q = ReadyQueue::new(Some(Duration::from_secs(1)));
        for task in 1..=4 {
            push(&mut q, task, meta(0, None, Some("k")), Duration::ZERO);
        }
        push(&mut q, 5, meta(0, Some(3), None), Duration::ZERO);
        assert_eq!(q.remove_task(2).map(|s| s.task), Some(2));
        assert_eq!(q.remove_task(5).map(|s| s.task), Some(5), "an out-of-order task too");
        assert!(q.remove_task(2).is_none(), "gone");
        assert!(q.remove_task(9).is_none(), "never there");
        assert_eq!(pop(&mut q, Some("k"), Duration::ZERO), Some(1));
        assert_eq!(drain(&mut q, Duration::ZERO), vec![3, 4]);
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = ReadyQueue::new(None);
        for (task, p) in [(1, 0), (2, 5), (3, 0), (4, 5), (5, -1)] {
            push(&mut q, task, meta(p, None, None), Duration::ZERO);
        }
        assert_eq!(drain(&mut q, Duration::ZERO), vec![2, 4, 1, 3, 5]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn longest_cost_first_within_a_priority() {
        let mut q = ReadyQueue::new(None);
        push(&mut q, 1, meta(0, Some(1), None), Duration::ZERO);
        push(&mut q, 2, meta(0, Some(9), None), Duration::ZERO);
        push(&mut q, 3, meta(0, None, None), Duration::ZERO);
        push(&mut q, 4, meta(1, Some(1), None), Duration::ZERO);
        assert_eq!(drain(&mut q, Duration::ZERO), vec![4, 2, 1, 3]);
    }

    #[test]
    fn a_slot_prefers_the_key_it_ran_last_within_the_best_priority() {
        let mut q = ReadyQueue::new(None);
        push(&mut q, 1, meta(0, None, Some("a")), Duration::ZERO);
        push(&mut q, 2, meta(0, None, Some("b")), Duration::ZERO);
        push(&mut q, 3, meta(1, None, Some("a")), Duration::ZERO);
        // Priority wins over affinity.
        assert_eq!(pop(&mut q, Some("b"), Duration::ZERO), Some(3));
        assert_eq!(pop(&mut q, Some("b"), Duration::ZERO), Some(2));
        assert_eq!(pop(&mut q, Some("b"), Duration::ZERO), Some(1));
    }

    #[test]
    fn aging_lifts_a_long_waiting_low_priority_task() {
        let step = Duration::from_secs(10);
        let mut q = ReadyQueue::new(Some(step));
        push(&mut q, 1, meta(0, None, None), Duration::ZERO);
        // Fresh priority-2 work keeps arriving; once the priority-0 task has waited
        // two steps, it outranks it.
        push(&mut q, 2, meta(2, None, None), Duration::from_secs(19));
        assert_eq!(pop(&mut q, None, Duration::from_secs(19)), Some(2));
        push(&mut q, 3, meta(2, None, None), Duration::from_secs(25));
        assert_eq!(pop(&mut q, None, Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn a_retry_keeps_its_place_ahead_of_later_tasks() {
        let mut q = ReadyQueue::new(None);
        push(&mut q, 1, meta(0, None, None), Duration::ZERO);
        push(&mut q, 2, meta(0, None, None), Duration::ZERO);
        let first = q.pop(None, Duration::ZERO).expect("task 1");
        push(&mut q, 3, meta(0, None, None), Duration::ZERO);
        // Task 1 comes back (a retry) with its old submission number.
        q.push(first, Duration::ZERO);
        assert_eq!(drain(&mut q, Duration::ZERO), vec![1, 2, 3]);
    }

    #[test]
    fn a_task_taken_by_key_is_not_served_again_when_its_place_is_reused() {
        let mut q = ReadyQueue::new(None);
        push(&mut q, 1, meta(0, None, None), Duration::ZERO);
        push(&mut q, 2, meta(0, None, Some("a")), Duration::ZERO);
        // Task 2 leaves by its key; its slab place goes to task 3, pushed after it.
        assert_eq!(pop(&mut q, Some("a"), Duration::ZERO), Some(2));
        push(&mut q, 3, meta(0, None, None), Duration::ZERO);
        assert_eq!(drain(&mut q, Duration::ZERO), vec![1, 3]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn stale_handles_do_not_pile_up_behind_a_task_that_stays_first() {
        let mut q = ReadyQueue::new(Some(Duration::from_secs(3600)));
        push(&mut q, 0, meta(0, None, None), Duration::ZERO);
        // Every pop prefers key "a": task 0 stays at the front for good.
        for task in 1..10_000 {
            push(&mut q, task, meta(0, None, Some("a")), Duration::ZERO);
            assert_eq!(pop(&mut q, Some("a"), Duration::ZERO), Some(task));
        }
        let bucket = &q.buckets[&0];
        assert!(bucket.ranked.in_order.len() <= 40, "{}", bucket.ranked.in_order.len());
        assert!(bucket.by_age.len() <= 40, "{}", bucket.by_age.len());
        assert_eq!(drain(&mut q, Duration::ZERO), vec![0]);
    }

    /// One step of a random workload against the queue and a plain model of its order.
    #[derive(Debug, Clone)]
    enum Op {
        Push {
            priority: i32,
            cost: Option<u64>,
            key: Option<u8>,
        },
        /// Pushes back the n-th task popped so far (a retry keeps its seq).
        Retry(usize),
        Pop {
            last_key: Option<u8>,
        },
        Wait(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3i32, proptest::option::of(0..3u64), proptest::option::of(0..3u8))
                .prop_map(|(priority, cost, key)| Op::Push { priority, cost, key }),
            1 => any::<usize>().prop_map(Op::Retry),
            4 => proptest::option::of(0..3u8).prop_map(|last_key| Op::Pop { last_key }),
            1 => (0..25u64).prop_map(Op::Wait),
        ]
    }

    /// The order of the module doc, computed over a plain list of waiting tasks.
    fn model_pop(
        waiting: &mut Vec<(TaskState, Duration)>,
        aging: Option<Duration>,
        last_key: Option<&str>,
        now: Duration,
    ) -> Option<TaskState> {
        let step = aging.map(|s| s.as_nanos() as i128);
        let priority = waiting
            .iter()
            .map(|(s, _)| s.meta.priority)
            .map(|p| {
                let oldest = waiting
                    .iter()
                    .filter(|(s, _)| s.meta.priority == p)
                    .map(|&(_, since)| since)
                    .min()
                    .unwrap_or(now);
                let waited = now.saturating_sub(oldest).as_nanos() as i128;
                (step.map_or(0, |step| i128::from(p) * step + waited), p)
            })
            .max()?
            .1;
        let in_bucket = |s: &TaskState| s.meta.priority == priority;
        let best = |keyed: bool| {
            waiting
                .iter()
                .enumerate()
                .filter(|(_, (s, _))| in_bucket(s) && (!keyed || s.meta.key.as_deref() == last_key))
                .min_by_key(|(_, (s, _))| rank_of(s))
                .map(|(i, _)| i)
        };
        let index = last_key.and_then(|_| best(true)).or_else(|| best(false))?;
        Some(waiting.swap_remove(index).0)
    }

    proptest::proptest! {
        #[test]
        fn pops_in_the_documented_order(
            ops in proptest::collection::vec(op(), 1..200),
            aging in proptest::option::of(1..30u64),
        ) {
            let aging = aging.map(Duration::from_secs);
            let mut q = ReadyQueue::new(aging);
            let mut model = Vec::new();
            let mut popped: Vec<TaskState> = Vec::new();
            let mut now = Duration::ZERO;
            let mut next = 0;
            let key_name = |k: u8| format!("k{k}");
            for op in ops {
                match op {
                    Op::Push { priority, cost, key } => {
                        let m = meta(priority, cost, key.map(key_name).as_deref());
                        q.push(state(next, m.clone()), now);
                        model.push((state(next, m), now));
                        next += 1;
                    }
                    Op::Retry(n) if !popped.is_empty() => {
                        let s = popped.swap_remove(n % popped.len());
                        let copy = TaskState { meta: s.meta.clone(), ..s };
                        q.push(s, now);
                        model.push((copy, now));
                    }
                    Op::Retry(_) => {}
                    Op::Pop { last_key } => {
                        let last_key = last_key.map(key_name);
                        let got = q.pop(last_key.as_deref(), now);
                        let want = model_pop(&mut model, aging, last_key.as_deref(), now);
                        proptest::prop_assert_eq!(
                            got.as_ref().map(|s| s.task),
                            want.as_ref().map(|s| s.task)
                        );
                        popped.extend(got);
                    }
                    Op::Wait(secs) => now += Duration::from_secs(secs),
                }
                proptest::prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
