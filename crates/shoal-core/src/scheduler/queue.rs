//! The ready queue: which waiting task goes next.
//!
//! Order, from strongest to weakest: effective priority (the task's priority plus one
//! level per `aging` step its bucket's oldest task has waited, so nothing starves),
//! then the affinity key the asking slot ran last, then the longest cost hint, then
//! submission order (FIFO). Every operation is O(log n) in the queue length plus
//! O(number of distinct priorities), so the rate does not fall as the queue grows.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::task::{TaskId, TaskMeta};

/// Position inside one priority bucket: longest cost first, then FIFO.
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
}

/// A waiting task, stored in its bucket's `order` under its rank.
#[derive(Debug)]
struct Waiting {
    state: TaskState,
    since: Duration,
}

#[derive(Debug, Default)]
struct Bucket {
    order: BTreeMap<Rank, Waiting>,
    by_key: HashMap<String, BTreeSet<Rank>>,
    /// (enqueued at, seq): the front is the task that has waited longest.
    by_age: BTreeSet<(Duration, u64)>,
}

/// Tasks ready to start, ordered as the module doc says.
#[derive(Debug)]
pub(crate) struct ReadyQueue {
    aging: Option<Duration>,
    buckets: BTreeMap<i32, Bucket>,
    len: usize,
}

impl ReadyQueue {
    /// An empty queue; `aging` is the wait that raises a task by one priority level.
    pub fn new(aging: Option<Duration>) -> Self {
        ReadyQueue { aging, buckets: BTreeMap::new(), len: 0 }
    }

    /// Number of waiting tasks.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Adds a task; `now` starts its wait. Its `seq` must be unique.
    pub fn push(&mut self, state: TaskState, now: Duration) {
        let meta = &state.meta;
        let rank = (Reverse(meta.cost.map_or(0, |c| c.as_nanos())), state.seq);
        let bucket = self.buckets.entry(meta.priority).or_default();
        bucket.by_age.insert((now, state.seq));
        if let Some(key) = &meta.key {
            // Look up before inserting: `entry` would allocate a key copy every time.
            match bucket.by_key.get_mut(key) {
                Some(set) => set.insert(rank),
                None => bucket.by_key.entry(key.clone()).or_default().insert(rank),
            };
        }
        bucket.order.insert(rank, Waiting { state, since: now });
        self.len += 1;
    }

    /// Takes the next task for a slot that last ran `last_key`.
    pub fn pop(&mut self, last_key: Option<&str>, now: Duration) -> Option<TaskState> {
        let priority = self.best_bucket(now)?;
        let bucket = &self.buckets[&priority];
        let preferred = last_key.and_then(|k| bucket.by_key.get(k)).and_then(|s| s.first());
        let rank = *preferred.or_else(|| bucket.order.first_key_value().map(|(rank, _)| rank))?;
        Some(self.remove(priority, rank))
    }

    /// The priority of the bucket to serve: highest effective priority, ties to the
    /// higher base priority.
    fn best_bucket(&self, now: Duration) -> Option<i32> {
        let Some(step) = self.aging.filter(|s| !s.is_zero()) else {
            return self.buckets.keys().next_back().copied();
        };
        let step = step.as_nanos() as i128;
        self.buckets
            .iter()
            .map(|(&priority, bucket)| {
                let oldest = bucket.by_age.first().map_or(now, |&(since, _)| since);
                let waited = now.saturating_sub(oldest).as_nanos() as i128;
                (i128::from(priority) * step + waited, priority)
            })
            .max()
            .map(|(_, priority)| priority)
    }

    fn remove(&mut self, priority: i32, rank: Rank) -> TaskState {
        let bucket = self.buckets.get_mut(&priority).expect("bucket of a waiting task");
        let waiting = bucket.order.remove(&rank).expect("ranked task is waiting");
        self.len -= 1;
        bucket.by_age.remove(&(waiting.since, rank.1));
        if let Some(key) = &waiting.state.meta.key {
            if let Some(set) = bucket.by_key.get_mut(key) {
                set.remove(&rank);
                if set.is_empty() {
                    bucket.by_key.remove(key);
                }
            }
        }
        if bucket.order.is_empty() {
            self.buckets.remove(&priority);
        }
        waiting.state
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
        TaskState { task, meta, seq: task, attempts: 0 }
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
}
