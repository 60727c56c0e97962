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

/// A waiting task, stored in its bucket's `order` under its rank.
#[derive(Debug)]
struct Waiting {
    task: TaskId,
    key: Option<String>,
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
pub struct ReadyQueue {
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
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no task waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a task. `seq` is its submission number (unique, kept across retries so a
    /// retried task keeps its place in FIFO order); `now` starts its wait.
    pub fn push(&mut self, task: TaskId, seq: u64, meta: &TaskMeta, now: Duration) {
        let rank = (Reverse(meta.cost.map_or(0, |c| c.as_nanos())), seq);
        let bucket = self.buckets.entry(meta.priority).or_default();
        bucket.by_age.insert((now, seq));
        if let Some(key) = &meta.key {
            bucket.by_key.entry(key.clone()).or_default().insert(rank);
        }
        bucket.order.insert(rank, Waiting { task, key: meta.key.clone(), since: now });
        self.len += 1;
    }

    /// Takes the next task for a slot that last ran `last_key`.
    pub fn pop(&mut self, last_key: Option<&str>, now: Duration) -> Option<TaskId> {
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

    fn remove(&mut self, priority: i32, rank: Rank) -> TaskId {
        let bucket = self.buckets.get_mut(&priority).expect("bucket of a waiting task");
        let waiting = bucket.order.remove(&rank).expect("ranked task is waiting");
        self.len -= 1;
        bucket.by_age.remove(&(waiting.since, rank.1));
        if let Some(key) = &waiting.key {
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
        waiting.task
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

    fn drain(q: &mut ReadyQueue, now: Duration) -> Vec<TaskId> {
        std::iter::from_fn(|| q.pop(None, now)).collect()
    }

    #[test]
    fn higher_priority_first_then_fifo() {
        let mut q = ReadyQueue::new(None);
        for (task, p) in [(1, 0), (2, 5), (3, 0), (4, 5), (5, -1)] {
            q.push(task, task, &meta(p, None, None), Duration::ZERO);
        }
        assert_eq!(drain(&mut q, Duration::ZERO), vec![2, 4, 1, 3, 5]);
        assert!(q.is_empty());
    }

    #[test]
    fn longest_cost_first_within_a_priority() {
        let mut q = ReadyQueue::new(None);
        q.push(1, 1, &meta(0, Some(1), None), Duration::ZERO);
        q.push(2, 2, &meta(0, Some(9), None), Duration::ZERO);
        q.push(3, 3, &meta(0, None, None), Duration::ZERO);
        q.push(4, 4, &meta(1, Some(1), None), Duration::ZERO);
        assert_eq!(drain(&mut q, Duration::ZERO), vec![4, 2, 1, 3]);
    }

    #[test]
    fn a_slot_prefers_the_key_it_ran_last_within_the_best_priority() {
        let mut q = ReadyQueue::new(None);
        q.push(1, 1, &meta(0, None, Some("a")), Duration::ZERO);
        q.push(2, 2, &meta(0, None, Some("b")), Duration::ZERO);
        q.push(3, 3, &meta(1, None, Some("a")), Duration::ZERO);
        // Priority wins over affinity.
        assert_eq!(q.pop(Some("b"), Duration::ZERO), Some(3));
        assert_eq!(q.pop(Some("b"), Duration::ZERO), Some(2));
        assert_eq!(q.pop(Some("b"), Duration::ZERO), Some(1));
    }

    #[test]
    fn aging_lifts_a_long_waiting_low_priority_task() {
        let step = Duration::from_secs(10);
        let mut q = ReadyQueue::new(Some(step));
        q.push(1, 1, &meta(0, None, None), Duration::ZERO);
        // Fresh priority-2 work keeps arriving; once the priority-0 task has waited
        // two steps, it outranks it.
        q.push(2, 2, &meta(2, None, None), Duration::from_secs(19));
        assert_eq!(q.pop(None, Duration::from_secs(19)), Some(2));
        q.push(3, 3, &meta(2, None, None), Duration::from_secs(25));
        assert_eq!(q.pop(None, Duration::from_secs(25)), Some(1));
    }
}
