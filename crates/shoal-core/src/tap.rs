//! The tap: one stream of a live run's task life, the same for every kind of task (a
//! spawned command, a call on a long-lived worker), that any number of observers (the
//! HTTP server and metrics to come, a test) follow without slowing the run.
//!
//! The engine sends each event once into a ring of `capacity` events
//! (`tokio::sync::broadcast`): sending never waits and costs nothing more with more
//! observers; an observer that falls more than `capacity` events behind loses the
//! oldest and is told how many ([`Observed::Lost`]). The engine is never the one that
//! waits. Events carry no output: what a task printed stays with the front end and the
//! store.

use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use crate::task::{AttemptOutcome, SlotId, TaskId, TaskStatus};

/// One step of a task's life.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskStep {
    /// Attempt `attempt` (from 1) started on `slot`.
    Started {
        /// The task.
        task: TaskId,
        /// Its attempt, from 1.
        attempt: u32,
        /// The slot it runs on.
        slot: SlotId,
        /// When.
        at: SystemTime,
    },
    /// Attempt `attempt` ended: `status` is the task's final status, or `None` when it
    /// will be retried.
    Ended {
        /// The task.
        task: TaskId,
        /// Its attempt, from 1.
        attempt: u32,
        /// How the attempt ended.
        outcome: AttemptOutcome,
        /// The task's final status, if this attempt was its last.
        status: Option<TaskStatus>,
        /// How long the attempt ran.
        duration: Duration,
        /// When.
        at: SystemTime,
    },
    /// The task ended without an attempt (cancelled while it waited, found in the
    /// store, refused by a broken pool).
    EndedUnstarted {
        /// The task.
        task: TaskId,
        /// Its final status.
        status: TaskStatus,
        /// When.
        at: SystemTime,
    },
}

/// The sending end, held by the engine; cloning it gives another handle on the same
/// stream.
#[derive(Debug, Clone)]
pub struct Tap {
    sender: broadcast::Sender<TaskStep>,
}

impl Tap {
    /// A tap whose observers may each fall `capacity` events behind before they lose
    /// some (at least 1).
    pub fn new(capacity: usize) -> Tap {
        Tap { sender: broadcast::channel(capacity.max(1)).0 }
    }

    /// A new observer: it sees the events sent from now on.
    pub fn observe(&self) -> Observer {
        Observer { receiver: self.sender.subscribe() }
    }

    /// Sends `step` to every observer; never waits, and costs one check when nobody
    /// observes.
    pub fn send(&self, step: impl FnOnce() -> TaskStep) {
        if self.sender.receiver_count() > 0 {
            // An error only says that nobody observes any more.
            let _ = self.sender.send(step());
        }
    }
}

/// What an [`Observer`] reads next.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The next step.
    Step(TaskStep),
    /// This many steps were lost: the observer fell too far behind.
    Lost(u64),
    /// The run's engine has ended and every step was read.
    Ended,
}

/// One observer of a tap.
#[derive(Debug)]
pub struct Observer {
    receiver: broadcast::Receiver<TaskStep>,
}

impl Observer {
    /// Waits for the next step (for async observers).
    pub async fn next(&mut self) -> Observed {
        Self::read(self.receiver.recv().await)
    }

    /// The next step if one is there, without waiting; `None` if none yet.
    pub fn try_next(&mut self) -> Option<Observed> {
        match self.receiver.try_recv() {
            Err(broadcast::error::TryRecvError::Empty) => None,
            Ok(step) => Some(Observed::Step(step)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Observed::Lost(n)),
            Err(broadcast::error::TryRecvError::Closed) => Some(Observed::Ended),
        }
    }

    /// Waits for the next step, blocking this thread (for observers outside a runtime).
    pub fn blocking_next(&mut self) -> Observed {
        Self::read(self.receiver.blocking_recv())
    }

    fn read(received: Result<TaskStep, broadcast::error::RecvError>) -> Observed {
        match received {
            Ok(step) => Observed::Step(step),
            Err(broadcast::error::RecvError::Lagged(n)) => Observed::Lost(n),
            Err(broadcast::error::RecvError::Closed) => Observed::Ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended_unstarted(task: TaskId) -> TaskStep {
        TaskStep::EndedUnstarted { task, status: TaskStatus::Cancelled, at: SystemTime::UNIX_EPOCH }
    }

    #[test]
    fn every_observer_sees_every_step_in_order() {
        let tap = Tap::new(16);
        let (mut a, mut b) = (tap.observe(), tap.observe());
        for task in 1..=3 {
            tap.send(|| ended_unstarted(task));
        }
        for observer in [&mut a, &mut b] {
            for task in 1..=3 {
                assert_eq!(observer.try_next(), Some(Observed::Step(ended_unstarted(task))));
            }
            assert_eq!(observer.try_next(), None);
        }
    }

    #[test]
    fn a_slow_observer_loses_the_oldest_steps_and_the_sender_never_waits() {
        let tap = Tap::new(4);
        let mut slow = tap.observe();
        for task in 1..=10 {
            tap.send(|| ended_unstarted(task));
        }
        assert_eq!(slow.try_next(), Some(Observed::Lost(6)));
        assert_eq!(slow.try_next(), Some(Observed::Step(ended_unstarted(7))));
    }

    #[test]
    fn nothing_is_made_when_nobody_observes() {
        let tap = Tap::new(4);
        tap.send(|| unreachable!("a step was built for no observer"));
    }

    #[test]
    fn an_observer_learns_that_the_engine_ended() {
        let tap = Tap::new(4);
        let mut observer = tap.observe();
        tap.send(|| ended_unstarted(1));
        drop(tap);
        assert_eq!(observer.blocking_next(), Observed::Step(ended_unstarted(1)));
        assert_eq!(observer.blocking_next(), Observed::Ended);
    }
}
