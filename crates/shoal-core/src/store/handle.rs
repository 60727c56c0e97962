//! [`Store`]: an open store, whatever its backend, and its synchronous calls. The
//! hot-path writes of a running pool go through its [`Writer`](super::Writer) instead.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::address::StoreAddress;
use super::backend::{self, Access, Backend, Journal};
use super::control::{ControlAction, ControlRecord, ControlWatcher, MAX_SLOTS};
use super::follow::ProgressFeed;
use super::read_api::{PageStart, RunOverview, StoreMetrics, TaskFilter};
use super::records::{
    AttemptRecord, NewRun, NewTask, RunRecord, RunStats, RunStatus, RunSummary, TaskRecord,
};
use crate::error::{Error, Result};
use crate::run::RunHold;
use crate::task::{TaskId, TaskStatus};

/// An open shoal store. It can be shared between threads; the writer thread has a
/// journal (SQLite: a connection) of its own.
#[derive(Debug)]
pub struct Store {
    address: StoreAddress,
    backend: Box<dyn Backend>,
}

impl Store {
    /// Opens the store at `address` (a path, or what [`StoreAddress::parse`] reads) to
    /// write into it, creating it (SQLite: a file of mode 0600) if it does not exist; a
    /// store of an older schema version is migrated.
    ///
    /// The parent directory must exist and be writable ([`Error::StoreOpen`]). A
    /// file that is not a shoal database gives [`Error::StoreCorrupt`]; one of a
    /// newer schema version gives [`Error::StoreSchema`]; an existing store is
    /// checked first and a damaged one gives [`Error::StoreDamaged`]. An address of a
    /// backend this shoal does not have gives [`Error::StoreBackend`].
    ///
    /// [`Error::StoreOpen`]: crate::Error::StoreOpen
    /// [`Error::StoreCorrupt`]: crate::Error::StoreCorrupt
    /// [`Error::StoreSchema`]: crate::Error::StoreSchema
    /// [`Error::StoreDamaged`]: crate::Error::StoreDamaged
    /// [`Error::StoreBackend`]: crate::Error::StoreBackend
    pub fn open(address: impl Into<StoreAddress>) -> Result<Store> {
        Store::open_with(address.into(), Access::Write)
    }

    /// Opens an existing store only to read it: it needs no write access to the file
    /// or its directory, and nothing is created, migrated or written. Writes through
    /// it fail. The same errors as [`Store::open`]; a missing or empty file is an
    /// [`Error::StoreOpen`](crate::Error::StoreOpen).
    pub fn open_read_only(address: impl Into<StoreAddress>) -> Result<Store> {
        Store::open_with(address.into(), Access::Read)
    }

    fn open_with(address: StoreAddress, access: Access) -> Result<Store> {
        let backend = backend::open(&address, access)?;
        Ok(Store { address, backend })
    }

    /// Where the store is, as it was opened.
    pub fn address(&self) -> &StoreAddress {
        &self.address
    }

    /// A journal for a writer thread.
    pub(super) fn journal(&self) -> Result<Box<dyn Journal>> {
        self.backend.journal()
    }

    /// Records a new run, `running` from now, and returns its hold (its id and
    /// marker with it), which the caller keeps for as long as it runs the run. The
    /// hold is taken before the run is committed, so no reader ever sees the run
    /// without it, alive.
    pub fn create_run(&self, run: &NewRun) -> Result<RunHold> {
        self.backend.create_run(run, &[], false)
    }

    /// A new run with the `first` tasks its input gave, whose others are recorded as
    /// they are read
    /// ([`StoreEvent::TasksAdded`](super::StoreEvent::TasksAdded)): until
    /// [`StoreEvent::InputEnded`](super::StoreEvent::InputEnded) (or its end), the
    /// reports show its total as not known yet ([`RunSummary::input_open`]).
    ///
    /// [`RunSummary::input_open`]: super::RunSummary::input_open
    pub fn create_streaming_run(&self, run: &NewRun, first: &[NewTask]) -> Result<RunHold> {
        self.backend.create_run(run, first, true)
    }

    /// [`Store::create_run`] with its first tasks, in the same transaction: a run is
    /// never stored without the tasks it was started with (a full disk).
    pub fn create_run_with(&self, run: &NewRun, tasks: &[NewTask]) -> Result<RunHold> {
        self.backend.create_run(run, tasks, false)
    }

    /// Takes run `run`'s liveness, for a process that is to run it again (a resume):
    /// [`Error::RunBusy`](crate::Error::RunBusy) while a live process holds it. It does
    /// not look the run up.
    pub fn hold_run(&self, run: i64) -> Result<RunHold> {
        self.backend.liveness().hold(run)
    }

    /// Whether a live process holds run `run`.
    pub fn is_alive(&self, run: i64) -> bool {
        self.backend.liveness().is_alive(run)
    }

    /// Replaces a run's options and memory-limit mechanism: a resume may change them,
    /// and the next resume starts from what this one used.
    pub fn set_run_options(
        &self,
        run: i64,
        options: &Value,
        memory_limit_mode: Option<&str>,
    ) -> Result<()> {
        self.backend.set_run_options(run, options, memory_limit_mode)
    }

    /// Adds tasks to a run, `queued` with no attempts, in one transaction.
    pub fn insert_tasks(&self, run: i64, tasks: &[NewTask]) -> Result<()> {
        self.backend.insert_tasks(run, tasks)
    }

    /// Repairs a run whose shoal was killed so it can be resumed: attempts left open
    /// end as `interrupted` now, `running` tasks go back to `queued`, and the run is
    /// `running` again. Returns the run; its tasks to run are read with
    /// [`Store::unsucceeded_tasks`].
    pub fn prepare_resume(&self, run: i64) -> Result<RunRecord> {
        self.backend.prepare_resume(run)
    }

    /// The tasks of a run that did not succeed (what a resume runs), numbered after
    /// `after`, by number, at most `limit` of them: a page, so that a resume of a
    /// million tasks never holds them all. Each task's `attempts` says how many it
    /// has had. The next page starts after the last task of this one; an empty page
    /// is the end.
    pub fn unsucceeded_tasks(
        &self,
        run: i64,
        after: TaskId,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        self.backend.unsucceeded_tasks(run, after, limit)
    }

    /// The lowest and the highest timeout stored for the tasks of a run that did not
    /// succeed, in that order, each with the first task that holds it; empty when
    /// none of them has a timeout. A range check of these two is a check of every
    /// task's, without reading the tasks.
    pub fn unsucceeded_timeout_extremes(&self, run: i64) -> Result<Vec<(TaskId, f64)>> {
        self.backend.unsucceeded_timeout_extremes(run)
    }

    /// The result of the latest task with this key and command (a call's label), in
    /// any run of the store, if that task succeeded and kept one. A later failure of
    /// the same call (a stored result its front end could not take any more) means
    /// the call must run again: an earlier success is not reused past it.
    pub fn stored_result(&self, key: &str, command: &str) -> Result<Option<Vec<u8>>> {
        self.backend.stored_result(key, command)
    }

    /// Every run, oldest first, with its task counts; a run whose shoal died shows
    /// [`RunStatus::Died`](super::RunStatus::Died).
    pub fn runs(&self) -> Result<Vec<RunSummary>> {
        self.backend.runs()
    }

    /// One run; [`Error::NoSuchRun`](crate::Error::NoSuchRun) if the store does not hold
    /// it. A run whose shoal died shows [`RunStatus::Died`](super::RunStatus::Died).
    pub fn run(&self, id: i64) -> Result<RunRecord> {
        self.backend.run(id)
    }

    /// The id of the newest run, if any.
    pub fn last_run(&self) -> Result<Option<i64>> {
        self.backend.last_run()
    }

    /// The tasks of a run by task number, all of them or those in one status.
    pub fn tasks(&self, run: i64, status: Option<TaskStatus>) -> Result<Vec<TaskRecord>> {
        self.backend.tasks(run, status)
    }

    /// Every attempt of a run, by task then attempt number, with its output.
    pub fn attempts(&self, run: i64) -> Result<Vec<AttemptRecord>> {
        self.backend.attempts(run)
    }

    /// Counts, success rate, duration percentiles and per-slot work of a run.
    pub fn stats(&self, run: i64) -> Result<RunStats> {
        self.backend.stats(run)
    }

    /// Asks the live run `run` to apply `actions` (recorded as asked by `by`: see
    /// [`requester`](super::requester)), in one transaction, then waits up to `wait`
    /// for the run to take them all; returns their records, with what the run made
    /// of each.
    ///
    /// Refused before anything is written: a run that is not live
    /// ([`Error::RunEnded`]; [`Error::NoSuchRun`]), a task it does not have
    /// ([`Error::NoSuchTask`]) or that has ended ([`Error::TaskEnded`]), slots out of
    /// 1..=[`MAX_SLOTS`] ([`Error::InvalidConfig`]). A run that ends before it took them gives
    /// [`Error::RunEnded`]; one that does not take them in time
    /// [`Error::ControlNotTaken`] (they stay in the store).
    pub fn request(
        &self,
        run: i64,
        actions: &[ControlAction],
        by: &str,
        wait: Duration,
    ) -> Result<Vec<ControlRecord>> {
        let bad_slots =
            actions.iter().find_map(|a| a.slots()).filter(|n| !(1..=MAX_SLOTS).contains(n));
        if let Some(slots) = bad_slots {
            return Err(Error::InvalidConfig {
                what: "slots",
                reason: format!("{slots}: must be from 1 to {MAX_SLOTS}"),
            });
        }
        let ids = self.backend.request(run, actions, by)?;
        let deadline = Instant::now() + wait;
        let taken = || -> Result<Option<Vec<ControlRecord>>> {
            let mut records = self.backend.control_records(run)?;
            records.retain(|r| ids.contains(&r.id));
            Ok(records.iter().all(|r| r.applied_at.is_some()).then_some(records))
        };
        loop {
            if let Some(records) = taken()? {
                return Ok(records);
            }
            let status = self.backend.run(run)?.status;
            if status != RunStatus::Running {
                // It may have taken them just before it ended.
                return taken()?.ok_or(Error::RunEnded { run, status });
            }
            if Instant::now() >= deadline {
                return Err(Error::ControlNotTaken { run, waited: wait });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every control request of a run, oldest first, with what became of each.
    pub fn control_records(&self, run: i64) -> Result<Vec<ControlRecord>> {
        self.backend.control_records(run)
    }

    /// Starts watching the control requests of run `run`, which the caller runs: a
    /// thread polls the store every [`POLL_INTERVAL`](super::control::POLL_INTERVAL)
    /// and hands over each new request; it stops when the watcher is dropped.
    pub fn watch_controls(&self, run: i64) -> Result<ControlWatcher> {
        ControlWatcher::start(self.backend.control_feed(run)?)
    }

    /// A feed of a run's new requests, as the run's watcher thread polls it.
    #[cfg(test)]
    pub(crate) fn control_feed(&self, run: i64) -> Result<Box<dyn super::ControlFeed>> {
        self.backend.control_feed(run)
    }

    /// Follows run `run` from outside the process that runs it (`shoal watch`): a feed
    /// of its progress and of the tasks that reach an end, which reads only what
    /// changed since its last poll, on a read-only connection of its own (the store
    /// needs no write access). [`Error::NoSuchRun`] if the store does not hold it.
    /// Whether the run is still alive is [`Store::is_alive`]'s to say.
    pub fn follow(&self, run: i64) -> Result<Box<dyn ProgressFeed>> {
        self.backend.progress_feed(run)
    }

    /// The tasks of run `run` that match `filter`, by task number, from `start`, at
    /// most `limit`: a page, read by the run's index, never the whole run.
    pub fn task_page(
        &self,
        run: i64,
        filter: &TaskFilter,
        start: PageStart,
        limit: usize,
    ) -> Result<Vec<TaskRecord>> {
        self.backend.task_page(run, filter, start, limit)
    }

    /// A run's task counts, per-slot work and whether its input is still read, by its
    /// indexes: what a run's page shows, without [`Store::stats`]'s durations.
    pub fn overview(&self, run: i64) -> Result<RunOverview> {
        self.backend.overview(run)
    }

    /// One task of a run; [`Error::NoSuchTask`] if the run does not have it.
    pub fn task(&self, run: i64, task: TaskId) -> Result<TaskRecord> {
        self.backend.task(run, task)
    }

    /// Every attempt of one task, by attempt number, with its output.
    pub fn task_attempts(&self, run: i64, task: TaskId) -> Result<Vec<AttemptRecord>> {
        self.backend.task_attempts(run, task)
    }

    /// Store-wide counts of tasks and attempts, and the durations of the tasks that
    /// ran to an end bucketed by `bounds` (ascending, finite seconds), for metrics.
    pub fn metrics(&self, bounds: &[f64]) -> Result<StoreMetrics> {
        self.backend.metrics(bounds)
    }
}
