//! The engine: drives the pure [`crate::scheduler`] with real processes.
//!
//! Tasks come from a [`TaskSource`]: a list given up front, or a bounded channel that
//! a front end fills as it reads its input. The driver takes them only while fewer
//! than [`QUEUE_WINDOW`] wait in the scheduler's queue, so memory holds a window of
//! the run's tasks, not all of them, and the first ones start before the input ends.
//!
//! One task of a tokio current-thread runtime owns the scheduler; each running
//! attempt is a future in a `JoinSet` that captures the process's output, enforces
//! kills (SIGTERM to the group, SIGKILL after the grace) and reaps it. The front end
//! (the CLI today, long-lived workers' front ends later) plugs in through
//! [`Frontend`]: it renders the command of an attempt and receives its events.
//!
//! Channels: attempt futures return their end through the `JoinSet`; with line
//! buffering they also send each complete output line over an unbounded mpsc channel
//! to the driver, which hands it to the front end before the attempt's end.
//! Shutdown: the stop `watch` goes to `Graceful` (stop dispatching, cancel running
//! attempts: SIGTERM, SIGKILL after the grace) then perhaps `Immediate` (SIGKILL now),
//! or to `Drain` (stop dispatching, let running attempts finish); the driver returns
//! once no attempt runs. A stop sent by the front end while it handles an event takes
//! effect before the next task starts.
//! Control requests (`run_steered`): a channel of [`ControlRequest`]s, fed by the
//! store's watcher thread; each is applied between events (cancel the run as a
//! graceful stop, cancel a task, pause, change the slots) and reported to the front
//! end, which records it.
//!
//! [`ControlRequest`]: crate::store::ControlRequest

mod attempt;
mod driver;
mod events;
mod source;

pub use driver::{run, run_steered};
pub use events::{Ended, EngineConfig, Frontend, Report, Started, Stop, Stream};
pub use source::{from_iter, IterSource, Pulled, Submission, TaskSource, QUEUE_WINDOW};
