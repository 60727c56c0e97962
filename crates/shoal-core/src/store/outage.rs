//! The writer thread once the store stops taking writes (a full disk, an I/O error,
//! a write lock held past the busy timeout): what it holds back, and what it still
//! writes at the end.
//!
//! # Protocol
//!
//! - The first commit that fails for the store's sake (not for one bad event) starts
//!   an outage. The failed batch and every later event are held in order and nothing
//!   more is written: the store keeps the state of the last good commit, and no event
//!   lands without one sent before it. The front end hears of it at once
//!   (`on_failure`), so it can stop dispatching.
//! - At that moment the writer tells its journal to let go of what it kept back for
//!   the last writes ([`Journal::release_reserve`]; SQLite: room on the store's file
//!   system, taken when the writer started).
//! - When the channel closes, the held events are written in one transaction (the
//!   salvage) and acknowledged through `on_commit` if it lands. If it does not, only
//!   the runs' ends are written, as `interrupted`: the tasks without a recorded end
//!   stay `queued` or `running`, which every report counts as unfinished, and a resume
//!   runs them. If even that fails, the run stays stored as `running`, which the
//!   reports show as `died` once its lock is free.
//! - At most [`MAX_HELD`] events are held (a pool that goes on after the failure);
//!   later ones are dropped, and a run that said it finished is recorded as
//!   `interrupted`, since its record is not whole.

use super::backend::Journal;
use super::records::RunStatus;
use super::writer::{OnCommit, StoreEvent, MAX_BATCH};
use crate::error::{Error, FailureKind};

/// The most events held back during an outage.
pub const MAX_HELD: usize = 10 * MAX_BATCH;

/// Whether a failed write failed for the store's sake rather than for one of its
/// events (an unknown task, a value the store refuses): then nothing more can be
/// written. Decided on the failure's kind, whatever the backend.
pub(super) fn store_failed(e: &Error) -> bool {
    match e {
        Error::Store { source, .. } => source.kind() != FailureKind::Invalid,
        _ => false,
    }
}

/// The events held back since the store stopped taking writes.
#[derive(Debug, Default)]
pub(super) struct Outage {
    held: Vec<StoreEvent>,
    ends: Vec<StoreEvent>,
    dropped: bool,
}

impl Outage {
    /// Holds events, in order; the runs' ends go last.
    pub(super) fn hold(&mut self, events: impl IntoIterator<Item = StoreEvent>) {
        for ev in events {
            match ev {
                StoreEvent::RunEnded { .. } => self.ends.push(ev),
                _ if self.held.len() < MAX_HELD => self.held.push(ev),
                _ => self.dropped = true,
            }
        }
    }

    /// Writes what was held, or failing that the runs' ends as `interrupted`.
    pub(super) fn salvage(self, journal: &mut dyn Journal, on_commit: &mut OnCommit) {
        let Outage { mut held, ends, dropped } = self;
        let ends = if dropped { interrupted(ends) } else { ends };
        held.extend(ends.iter().cloned());
        match journal.commit(&held) {
            Ok(()) => on_commit(&held),
            Err(e) => {
                tracing::debug!(error = %e, "the store still takes no writes");
                let ends = interrupted(ends);
                if !ends.is_empty() && journal.commit(&ends).is_ok() {
                    on_commit(&ends);
                }
            }
        }
    }
}

/// Runs' ends with `finished` turned into `interrupted`.
fn interrupted(ends: Vec<StoreEvent>) -> Vec<StoreEvent> {
    ends.into_iter()
        .map(|ev| match ev {
            StoreEvent::RunEnded { run, ended_at, status: RunStatus::Finished } => {
                StoreEvent::RunEnded { run, ended_at, status: RunStatus::Interrupted }
            }
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::error::BackendError;
    use crate::store::{OnFailure, StoreAddress, Writer};

    /// A journal that is no database: it keeps what it commits, and refuses every
    /// batch that cancels task 99 with a failure of `kind`.
    struct Fake {
        kind: FailureKind,
        committed: Arc<Mutex<Vec<StoreEvent>>>,
        released: Arc<AtomicBool>,
    }

    impl Journal for Fake {
        fn commit(&mut self, batch: &[StoreEvent]) -> crate::Result<()> {
            if batch.iter().any(|ev| matches!(ev, StoreEvent::TaskCancelled { task: 99, .. })) {
                return Err(Error::Store {
                    operation: "cancel a task",
                    store: StoreAddress::parse("fake"),
                    source: BackendError::new(self.kind, "the fake refuses task 99"),
                });
            }
            self.committed.lock().unwrap().extend_from_slice(batch);
            Ok(())
        }

        fn release_reserve(&mut self) {
            self.released.store(true, Ordering::SeqCst);
        }
    }

    fn cancel(task: u64) -> StoreEvent {
        StoreEvent::TaskCancelled { run: 1, task }
    }

    fn end(status: RunStatus) -> StoreEvent {
        StoreEvent::RunEnded { run: 1, ended_at: 9.0, status }
    }

    /// What a writer on a [`Fake`] of `kind` commits of: task 1 (waited for), then
    /// task 99 (refused), task 2 and the run's end; and how often it said the store
    /// failed, and whether it let go of its reserve.
    fn write_through(kind: FailureKind) -> (Vec<StoreEvent>, usize, bool) {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let released = Arc::new(AtomicBool::new(false));
        let fake = Fake { kind, committed: committed.clone(), released: released.clone() };
        let (acked, acks) = mpsc::channel();
        let failures = Arc::new(Mutex::new(0));
        let on_failure: OnFailure = {
            let failures = failures.clone();
            Box::new(move |e: &Error| {
                assert!(e.to_string().contains("the fake refuses"), "{e}");
                *failures.lock().unwrap() += 1;
            })
        };
        let on_commit: OnCommit = Box::new(move |batch: &[StoreEvent]| {
            let _ = acked.send(batch.to_vec());
        });
        let writer = Writer::start(Box::new(fake), on_commit, on_failure).unwrap();
        writer.send(cancel(1));
        // Task 1 alone in its batch (a guard against a hang, not a timing).
        let first = acks.recv_timeout(Duration::from_secs(30)).expect("task 1 committed");
        assert_eq!(first, [cancel(1)]);
        for ev in [cancel(99), cancel(2), end(RunStatus::Finished)] {
            writer.send(ev);
        }
        let error = writer.finish().expect_err("task 99 was refused");
        assert!(matches!(&error, Error::Store { source, .. } if source.kind() == kind));
        let committed = committed.lock().unwrap().clone();
        let failures = *failures.lock().unwrap();
        (committed, failures, released.load(Ordering::SeqCst))
    }

    /// The writer's outage protocol runs on the kind of a failure, whatever the
    /// backend: a refused event spares its neighbours; any other kind stops the writes
    /// (nothing after the failed batch lands, the run ends `interrupted`).
    #[test]
    fn the_kind_of_a_failure_decides_whether_the_store_takes_writes() {
        let (committed, failures, released) = write_through(FailureKind::Invalid);
        assert_eq!(committed, [cancel(1), cancel(2), end(RunStatus::Finished)]);
        assert_eq!((failures, released), (0, false), "one bad event is no outage");
        let kinds = [
            FailureKind::Full,
            FailureKind::Damaged,
            FailureKind::Busy,
            FailureKind::ReadOnly,
            FailureKind::Io,
            FailureKind::Other,
        ];
        for kind in kinds {
            let (committed, failures, released) = write_through(kind);
            assert_eq!(committed, [cancel(1), end(RunStatus::Interrupted)], "{kind:?}");
            assert_eq!((failures, released), (1, true), "{kind:?}");
        }
    }
}
