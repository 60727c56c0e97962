//! Where the engine takes its tasks from: a [`TaskSource`], pulled as the queue runs
//! low, so that a run of a million tasks never holds them all. A list given up front
//! is a source ([`from_iter`]); so is a bounded channel that a front end fills as it
//! reads its input (a `tokio::sync::mpsc::Receiver`), which also lets the first tasks
//! run before the input has ended.

use std::future::Future;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use crate::task::{TaskId, TaskMeta};

/// The most tasks the engine keeps waiting in its queue (ready or waiting out a
/// retry's backoff); it pulls the next from its source only below this. Priorities,
/// cost hints and affinity keys order the tasks within this window: a task read
/// later than that is not yet known to the scheduler.
pub const QUEUE_WINDOW: usize = 10_000;

/// A task handed to the engine.
#[derive(Debug, Clone)]
pub struct Submission<P> {
    /// Its id, unique in the run.
    pub task: TaskId,
    /// What the scheduler knows of it.
    pub meta: TaskMeta,
    /// Attempts it has already had (0 for a new task; more when a run is resumed).
    pub attempts: u32,
    /// What the front end needs to run it (handed back with each attempt's
    /// [`Frontend::command`](super::Frontend::command)); the engine drops it once the
    /// task has ended.
    pub payload: P,
}

/// What [`TaskSource::try_next`] found.
#[derive(Debug)]
pub enum Pulled<P> {
    /// A task.
    Task(Submission<P>),
    /// None at hand now; more may come ([`TaskSource::next`] waits for it).
    Empty,
    /// The source has ended: no more tasks.
    Ended,
}

/// A stream of tasks that the engine pulls from as its queue runs low.
pub trait TaskSource {
    /// What the front end keeps with each task.
    type Payload;
    /// The next task if one is at hand, without waiting.
    fn try_next(&mut self) -> Pulled<Self::Payload>;
    /// Waits for the next task; `None` once the source has ended. Must be cancel
    /// safe: dropped before it is ready, it loses no task.
    fn next(&mut self) -> impl Future<Output = Option<Submission<Self::Payload>>>;
}

impl<P> TaskSource for mpsc::Receiver<Submission<P>> {
    type Payload = P;

    fn try_next(&mut self) -> Pulled<P> {
        match self.try_recv() {
            Ok(task) => Pulled::Task(task),
            Err(TryRecvError::Empty) => Pulled::Empty,
            Err(TryRecvError::Disconnected) => Pulled::Ended,
        }
    }

    fn next(&mut self) -> impl Future<Output = Option<Submission<P>>> {
        self.recv()
    }
}

impl<S: TaskSource> TaskSource for &mut S {
    type Payload = S::Payload;

    fn try_next(&mut self) -> Pulled<S::Payload> {
        (**self).try_next()
    }

    fn next(&mut self) -> impl Future<Output = Option<Submission<S::Payload>>> {
        (**self).next()
    }
}

/// A source of tasks known up front: see [`from_iter`].
#[derive(Debug)]
pub struct IterSource<I>(I);

/// The tasks of `tasks`, taken one at a time as the queue runs low.
pub fn from_iter<P, I: IntoIterator<Item = Submission<P>>>(tasks: I) -> IterSource<I::IntoIter> {
    IterSource(tasks.into_iter())
}

impl<P, I: Iterator<Item = Submission<P>>> TaskSource for IterSource<I> {
    type Payload = P;

    fn try_next(&mut self) -> Pulled<P> {
        match self.0.next() {
            Some(task) => Pulled::Task(task),
            None => Pulled::Ended,
        }
    }

    async fn next(&mut self) -> Option<Submission<P>> {
        self.0.next()
    }
}
