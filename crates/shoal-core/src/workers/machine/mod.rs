//! The worker pool's policy as one pure state machine, as the scheduler is: it owns
//! the pool's state (worker places and each worker's phase, the Runs in flight per
//! worker, lanes, suspects and held Runs, silence and hang watch, start failures,
//! elastic bounds, and the scheduler) and is handed facts with the time (a
//! `Duration` since the pool started): a submit, a cancel, a resize, a control
//! request, a worker's message, its channel's end, its exit, a worker that could not
//! start, a turn of the loop, a wake-up. It answers with [`Action`]s (spawn a place's
//! worker, send it Welcome, Init, a Run or Shutdown, kill it, write to the store) and
//! final [`TaskEvent`](super::config::TaskEvent)s. It reads no clock, touches no
//! process and does no I/O: what it must know of a process (CPU time, size) it asks
//! through a [`Probe`], and only when a rule needs it.
//!
//! The rules themselves are the functions of [`super::policy`]; the machine holds the
//! state they read and the order in which they apply. Task payloads are kept here,
//! opaque, until their task ends: the driver reads them to send a Run.
//!
//! `state.rs` holds the state and the queries, `facts.rs` the facts, `steps.rs` the
//! transitions they share; `tests.rs` drives the machine through a small test
//! environment (`test_env.rs`) with builders, one test per rule.

mod facts;
mod state;
mod steps;

#[cfg(test)]
mod test_env;
#[cfg(test)]
mod tests;

pub(super) use state::{Action, Machine, NewTask, Out, Probe, Record, Settings};
