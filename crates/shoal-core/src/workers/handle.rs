//! The front end's handle on a pool: [`WorkerPool`]. Its methods may be called from
//! any thread; they talk to the driver thread through channels and never block on
//! it, except [`WorkerPool::next_events`], [`WorkerPool::join`] and
//! [`WorkerPool::stats`], which wait by design.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::config::{PoolConfig, PoolStats, TaskEvent, TaskSpec};
use super::driver;
use super::record::{Recorder, StoreFailure};
use crate::process::{resolve_program, MemoryLimit};
use crate::task::TaskId;
use crate::{Error, Result};

/// What the handle asks of the driver thread.
#[derive(Debug)]
pub(super) enum Command {
    Submit(Vec<(TaskId, TaskSpec)>),
    /// Cancel a task no worker has; the reply says whether it was in time.
    Cancel(TaskId, Option<std_mpsc::Sender<bool>>),
    /// No more submits will come: run what is queued, then stop the workers.
    Close,
    /// Kill every worker now; unfinished tasks end cancelled.
    Terminate,
    Stats(std_mpsc::Sender<PoolStats>),
    /// The front end could not take this task's result (see [`WorkerPool::refused`]).
    Refused(TaskId, String),
    /// A live resize to this many workers; the reply says what came of it.
    Resize(usize, std_mpsc::Sender<Result<String, ResizeError>>),
}

/// Where a pool whose front end may refuse results (`PoolStore::refusals`) leaves its
/// record when the driver ends, with whether the run was cut short, until
/// [`WorkerPool::close_record`]. Its lock orders a refusal against the parking: a
/// refusal sent while the slot is empty reaches the driver before it parks.
pub(super) type ParkedRecord = Arc<Mutex<Option<(Recorder, bool)>>>;

/// Refused: the pool was closed or terminated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pool is closed: no more tasks can be submitted")]
pub struct PoolClosed;

/// Refused: why a pool could not be resized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// Closed, terminated or broken: its workers are going.
    #[error("the pool is {0}: it cannot be resized")]
    Ending(&'static str),
    #[error("a pool needs at least 1 worker, not 0")]
    Zero,
    /// Past the memory limit's budget: one cgroup per worker, made at the start.
    #[error("{wanted} workers is more than the {cap} the memory limit's cgroups were made for")]
    OverCap { wanted: usize, cap: usize },
}

/// Events received from the driver and not yet handed out.
struct Events {
    rx: std_mpsc::Receiver<Vec<TaskEvent>>,
    buffered: VecDeque<TaskEvent>,
}

/// Set by the driver thread as it ends, with the pool's last figures.
#[derive(Default)]
pub(super) struct Ended {
    pub done: bool,
    pub stats: PoolStats,
}

/// Publishes the driver thread's end when dropped, panic or not.
struct EndGuard {
    ended: Arc<(Mutex<Ended>, Condvar)>,
    stats: PoolStats,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.ended;
        let mut ended = lock.lock().unwrap_or_else(|e| e.into_inner());
        *ended = Ended { done: true, stats: std::mem::take(&mut self.stats) };
        cvar.notify_all();
    }
}

/// A pool of long-lived workers run by its own driver thread. Dropping it
/// terminates the pool and waits for the thread.
pub struct WorkerPool {
    /// `None` once closed; the lock makes "closed" and "sent" one step, so no
    /// submit can slip in behind a Close.
    commands: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    /// Kept for terminate and stats after close.
    control: mpsc::UnboundedSender<Command>,
    events: Mutex<Events>,
    next_task: AtomicU64,
    submitted: AtomicU64,
    delivered: AtomicU64,
    ended: Arc<(Mutex<Ended>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The run's record once the driver ended, with `PoolStore::refusals`.
    parked: Option<ParkedRecord>,
    /// Why the store stopped taking writes, once it did.
    store_failure: StoreFailure,
}

impl WorkerPool {
    /// Checks `config`, then starts the driver thread, which starts the workers.
    pub fn start(mut config: PoolConfig) -> Result<WorkerPool> {
        if config.workers == 0 {
            return Err(Error::InvalidConfig {
                what: "workers",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(&cpu) = config.cpus.iter().flatten().find(|&&c| c >= libc::CPU_SETSIZE as usize)
        {
            return Err(Error::InvalidConfig {
                what: "cpus",
                reason: format!("CPU {cpu} is past the {} a CPU set can name", libc::CPU_SETSIZE),
            });
        }
        // A worker would be handed another file, or fail to start, much later.
        if let Some(&fd) = config.pass_fds.iter().find(|&&fd| {
            // SAFETY: F_GETFD only reads the descriptor's flags.
            fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1
        }) {
            return Err(Error::InvalidConfig {
                what: "pass_fds",
                reason: format!("{fd} is not an open descriptor above the standard streams"),
            });
        }
        if config.min_workers.is_some_and(|min| min == 0 || min > config.workers) {
            return Err(Error::InvalidConfig {
                what: "min_workers",
                reason: format!("must be from 1 to workers ({})", config.workers),
            });
        }
        if config.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(Error::InvalidConfig {
                what: "idle_timeout",
                reason: "must be above 0".into(),
            });
        }
        if config.threads.is_some() {
            let process_only = [
                ("memory_limit", config.memory_limit.is_some()),
                ("recycle_memory", config.recycle_memory.is_some()),
                ("cpus", config.cpus.is_some()),
                ("nice", config.nice.is_some()),
                ("pass_fds", !config.pass_fds.is_empty()),
            ];
            if let Some((what, _)) = process_only.into_iter().find(|(_, set)| *set) {
                return Err(Error::InvalidConfig {
                    what,
                    reason: "applies to worker processes, not to thread workers".into(),
                });
            }
        }
        let Some(program) = config.argv.first() else {
            return Err(Error::InvalidConfig { what: "argv", reason: "is empty".into() });
        };
        let name = program.to_string_lossy().into_owned();
        if resolve_program(&name).is_none_or(|path| !path.is_file()) {
            return Err(Error::WorkerProgram {
                program: name,
                reason: "not found, or not an executable file".into(),
            });
        }
        let memory = config.memory_limit.map(|bytes| MemoryLimit::new(bytes, config.workers));
        let store_failure = StoreFailure::default();
        let recorder = match &config.store {
            Some(store) => Some(Recorder::open(
                store,
                config.workers,
                memory.as_ref().map(|m| m.mode().as_str()),
                store_failure.clone(),
            )?),
            None => None,
        };
        if let Some(recorder) = &recorder {
            // Its workers carry the run's marker, as a CLI run's tasks do: a resume's
            // cleanup and `ps`-based tools find them.
            let (name, value) = recorder.recording().marker().env();
            config.env.retain(|(given, _)| given.as_os_str() != name.as_str());
            config.env.push((name.into(), value.into()));
        }
        let parked = config.store.as_ref().filter(|s| s.refusals).map(|_| ParkedRecord::default());
        let driver_parked = parked.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Os { operation: "start the pool's runtime", source })?;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = std_mpsc::channel();
        let ended = Arc::new((Mutex::new(Ended::default()), Condvar::new()));
        let thread_ended = Arc::clone(&ended);
        let thread = std::thread::Builder::new()
            .name("shoal-pool".into())
            .spawn(move || {
                // Marks the end even if the driver panics, so that no join waits forever.
                let mut guard = EndGuard { ended: thread_ended, stats: PoolStats::default() };
                guard.stats = runtime.block_on(driver::run(
                    config,
                    memory,
                    recorder,
                    driver_parked,
                    command_rx,
                    event_tx,
                ));
            })
            .map_err(|source| Error::Os { operation: "start the pool's thread", source })?;
        Ok(WorkerPool {
            control: commands.clone(),
            commands: Mutex::new(Some(commands)),
            events: Mutex::new(Events { rx: event_rx, buffered: VecDeque::new() }),
            next_task: AtomicU64::new(1),
            submitted: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            ended,
            thread: Mutex::new(Some(thread)),
            parked,
            store_failure,
        })
    }

    /// Queues tasks; returns the id of the first (the ids are consecutive).
    pub fn submit(&self, specs: Vec<TaskSpec>) -> Result<TaskId, PoolClosed> {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let sender = commands.as_ref().ok_or(PoolClosed)?;
        let n = specs.len() as u64;
        let first = self.next_task.fetch_add(n, Ordering::Relaxed);
        let tasks = (first..).zip(specs).collect();
        sender.send(Command::Submit(tasks)).map_err(|_| PoolClosed)?;
        self.submitted.fetch_add(n, Ordering::Relaxed);
        Ok(first)
    }

    /// Cancels `task` if no worker has it yet: it then ends
    /// `cancelled` and this returns true. False when a worker
    /// has it (it runs to its end), or it has ended, or the pool has.
    pub fn cancel(&self, task: TaskId) -> bool {
        let (tx, rx) = std_mpsc::channel();
        self.control.send(Command::Cancel(task, Some(tx))).is_ok() && rx.recv().unwrap_or(false)
    }

    /// Up to `max` final events, in completion order. Waits until there is one, or
    /// `timeout` passes (then returns none), or the pool has ended and everything
    /// was handed out (returns none at once).
    pub fn next_events(&self, timeout: Option<Duration>, max: usize) -> Vec<TaskEvent> {
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.buffered.is_empty() {
            let received = match timeout {
                None => events.rx.recv().ok(),
                Some(t) => events.rx.recv_timeout(t).ok(),
            };
            events.buffered.extend(received.into_iter().flatten());
            while let Ok(more) = events.rx.try_recv() {
                events.buffered.extend(more);
            }
        }
        let n = max.max(1).min(events.buffered.len());
        let out: Vec<_> = events.buffered.drain(..n).collect();
        self.delivered.fetch_add(out.len() as u64, Ordering::Relaxed);
        out
    }

    /// Submitted tasks whose event has not been handed out yet.
    pub fn pending(&self) -> u64 {
        self.submitted.load(Ordering::Relaxed) - self.delivered.load(Ordering::Relaxed)
    }

    /// Refuses further submits; queued tasks still run, then the workers exit.
    pub fn close(&self) {
        let mut commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = commands.take() {
            let _ = sender.send(Command::Close);
        }
    }

    /// Refuses further submits and kills every worker now; unfinished tasks end
    /// cancelled.
    pub fn terminate(&self) {
        self.commands.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.control.send(Command::Terminate);
    }

    /// Resizes the pool to `workers` now, as `shoal jobs` does: workers taken away
    /// finish what they have and exit (a running task is never killed); workers added
    /// start at once. An elastic pool takes `workers` as its new maximum (its minimum
    /// no higher). Returns once applied, saying what it did.
    pub fn resize(&self, workers: usize) -> Result<String, ResizeError> {
        if workers == 0 {
            return Err(ResizeError::Zero);
        }
        if self.commands.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(ResizeError::Ending("closed"));
        }
        let (tx, rx) = std_mpsc::channel();
        if self.control.send(Command::Resize(workers, tx)).is_err() {
            return Err(ResizeError::Ending("closed"));
        }
        rx.recv().unwrap_or(Err(ResizeError::Ending("closed")))
    }

    /// Waits until the pool has ended (after [`close`](Self::close) and its tasks,
    /// or [`terminate`](Self::terminate)); false if `timeout` passed first.
    pub fn join(&self, timeout: Option<Duration>) -> bool {
        // A timeout past what the clock can hold is no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let (lock, cvar) = &*self.ended;
        let mut ended = lock.lock().unwrap_or_else(|e| e.into_inner());
        while !ended.done {
            ended = match deadline {
                None => cvar.wait(ended).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    cvar.wait_timeout(ended, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        drop(ended);
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
        true
    }

    /// The front end could not take `task`'s result (it did not decode): the store
    /// records the task `failed` with `reason`, its result dropped, so that no keyed
    /// call reuses it. With `PoolStore::refusals` this holds until
    /// [`close_record`](Self::close_record); without it, until the pool has ended.
    pub fn refused(&self, task: TaskId, reason: String) {
        match &self.parked {
            Some(slot) => {
                let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                match &*slot {
                    Some((recorder, _)) => recorder.recording().refused(task, reason),
                    // Sent under the lock: the driver drains it before it parks.
                    None => {
                        let _ = self.control.send(Command::Refused(task, reason));
                    }
                }
            }
            None => {
                let _ = self.control.send(Command::Refused(task, reason));
            }
        }
    }

    /// Waits until the pool has ended, then ends its run in the store and waits until
    /// everything is written (with `PoolStore::refusals`; the driver does it otherwise).
    pub fn close_record(&self) {
        let Some(slot) = &self.parked else { return };
        self.join(None);
        let parked = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((recorder, cut_short)) = parked {
            recorder.finish(cut_short);
        }
    }

    /// Why the store stopped taking writes, if it did: the pool goes on, and what it
    /// could not record is held and written at its end if the store takes it then.
    pub fn store_failure(&self) -> Option<String> {
        self.store_failure.get().cloned()
    }

    /// Per-worker figures and task counts, now (or as they were when the pool ended).
    pub fn stats(&self) -> PoolStats {
        let (tx, rx) = std_mpsc::channel();
        if self.control.send(Command::Stats(tx)).is_ok() {
            if let Ok(stats) = rx.recv() {
                return stats;
            }
        }
        self.join(None);
        self.ended.0.lock().unwrap_or_else(|e| e.into_inner()).stats.clone()
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.terminate();
        self.join(None);
        self.close_record();
    }
}
