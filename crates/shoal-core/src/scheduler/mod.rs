//! The pure scheduler: a state machine that is handed events (a task submitted, an
//! attempt ended, the run stopped) with the current time, and answers with
//! [`Decision`]s (start this task on that slot, kill that slot).
//!
//! It must stay free of I/O, sleeping and clock reads: time is a [`Duration`] since
//! the run began, given by the caller. That keeps it testable without processes and
//! lets any executor (command slots, long-lived workers) drive it. The one thing it
//! asks is the caller's optional [`StartGate`] (free memory, load), before a start.
//!
//! [`Duration`]: std::time::Duration

mod queue;
mod state;

pub use state::{
    Backoff, Cancel, Decision, Scheduler, SchedulerConfig, StartGate, Verdict, GATE_RECHECK,
};
