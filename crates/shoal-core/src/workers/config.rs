//! What a worker pool is asked to do ([`PoolConfig`], [`TaskSpec`]) and what it
//! answers ([`TaskEvent`], [`PoolStats`]). Plain data.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

pub use super::record::PoolStore;
use crate::tap::Tap;
use crate::task::{SlotId, TaskId, TaskMeta, TaskStatus};

/// How a pool starts and supervises its workers.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The worker program and its arguments.
    pub argv: Vec<OsString>,
    /// Extra environment for the workers. With a store, the pool adds the run's
    /// marker (`SHOAL_RUN`, see [`crate::run::Marker`]).
    pub env: Vec<(OsString, OsString)>,
    /// Number of workers (slots), at least 1; an elastic pool's maximum.
    pub workers: usize,
    /// An elastic pool's minimum: it starts this many workers and adds workers while
    /// tasks wait, up to `workers`. `None`: `workers` (a fixed pool), or 1 with an
    /// `idle_timeout`.
    pub min_workers: Option<usize>,
    /// Retire a worker idle this long, down to the minimum (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Sent to every worker in Welcome (opaque to the engine).
    pub worker_config: Vec<u8>,
    /// Descriptors every worker inherits at the same number (as multiprocessing's
    /// spawn passes a child the pipes and shared memory of what it was given); the
    /// front end names them in what it sends and keeps them open until the pool ended.
    pub pass_fds: Vec<RawFd>,
    /// Sent once to every worker as Init (the initializer), if any.
    pub init: Option<Vec<u8>>,
    /// Replace a worker after it has been given this many tasks.
    pub max_tasks_per_worker: Option<u64>,
    /// Replace a worker whose heartbeat reports more resident memory than this.
    pub recycle_memory: Option<u64>,
    /// Hard per-worker memory limit: a memory cgroup where the machine allows, else
    /// `RLIMIT_AS`.
    pub memory_limit: Option<u64>,
    /// Worker `k` (from 0) is pinned to `cpus[k % len]`.
    pub cpus: Option<Vec<usize>>,
    /// Niceness added to every worker.
    pub nice: Option<i32>,
    /// Heartbeat interval asked of the workers; zero turns hang detection off.
    pub heartbeat: Duration,
    /// A worker silent this long (no frame at all) is hung: it is killed.
    pub heartbeat_timeout: Duration,
    /// After Shutdown, a worker not gone this long later is killed.
    pub kill_grace: Duration,
    /// Backoff base before a retry (doubling, capped at 30 s).
    pub retry_delay: Duration,
    /// Most tasks handed to one worker at once when tasks are tiny (1: never more
    /// than the one it runs); fewer when fewer fit in 1 ms (see `policy::prefetch_depth`).
    pub prefetch: usize,
    /// Record every task in this store, and reuse the stored result of a task whose
    /// key and label already succeeded there.
    pub store: Option<PoolStore>,
    /// Where observers follow each task's steps as they happen (see [`crate::tap`]).
    pub tap: Option<Tap>,
    /// Workers are threads of the host, started by this, not processes (the Python
    /// front's thread pools). `argv`, `env`, `pass_fds`, the memory limit, CPUs and
    /// niceness do not apply to them; hang detection needs `heartbeat` zero (off).
    pub threads: Option<ThreadStarter>,
}

/// Starts a thread worker: handed the worker's id and its end of the channel, which it
/// owns from then on, it starts a thread of the host that speaks the worker protocol
/// on it. Called from the driver's thread.
#[derive(Clone)]
pub struct ThreadStarter(pub Arc<dyn Fn(u64, OwnedFd) -> io::Result<()> + Send + Sync>);

impl ThreadStarter {
    /// Starts worker `id` on `channel`.
    pub fn start(&self, id: u64, channel: OwnedFd) -> io::Result<()> {
        (self.0)(id, channel)
    }
}

impl fmt::Debug for ThreadStarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ThreadStarter")
    }
}

impl PoolConfig {
    /// A pool of `workers` running `argv`, with the default supervision settings.
    pub fn new(argv: Vec<OsString>, workers: usize) -> PoolConfig {
        PoolConfig {
            argv,
            env: Vec::new(),
            workers,
            min_workers: None,
            idle_timeout: None,
            worker_config: Vec::new(),
            pass_fds: Vec::new(),
            init: None,
            max_tasks_per_worker: None,
            recycle_memory: None,
            memory_limit: None,
            cpus: None,
            nice: None,
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(1),
            retry_delay: Duration::from_millis(50),
            prefetch: 32,
            store: None,
            tap: None,
            threads: None,
        }
    }
}

/// One task: the payload the worker runs, and what the scheduler needs.
#[derive(Debug, Clone, Default)]
pub struct TaskSpec {
    /// What the worker runs, in the front end's encoding (opaque to the engine).
    pub payload: Vec<u8>,
    /// How the task is shown in the store (its call, briefly); unused without one.
    pub label: String,
    /// `retries` counts attempts after a worker-level failure (crash, hang, memory);
    /// a task whose function raised is never retried, nor one that timed out.
    pub meta: TaskMeta,
}

/// What failed in a task that ended [`TaskStatus::Failed`] on a worker pool: the front
/// end turns each into its own error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The function raised: the payload is the error, the message its traceback. A
    /// call's answer, so it is final and never retried.
    Raised,
    /// The pool's initializer raised: payload and message are its error, and no task
    /// of the pool can run.
    InitFailed,
    /// The engine could not run it: a payload too large to send, workers that cannot
    /// start or that speak another protocol version. The message says which.
    Refused,
}

impl Failure {
    /// The name front ends see.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Raised => "raised",
            Failure::InitFailed => "init_failed",
            Failure::Refused => "refused",
        }
    }
}

/// A task's end as the pool reports it: its status, and what failed if it failed.
pub(super) type End = (TaskStatus, Option<Failure>);

/// The end of a task with `status` (not a failed call: see [`failed`]).
pub(super) const fn end(status: TaskStatus) -> End {
    (status, None)
}

/// The end of a task that failed with `failure`.
pub(super) const fn failed(failure: Failure) -> End {
    (TaskStatus::Failed, Some(failure))
}

/// The final outcome of one task: exactly one per submitted task.
#[derive(Debug, Clone)]
pub struct TaskEvent {
    /// The task's id, as [`WorkerPool::submit`](super::WorkerPool::submit) gave it.
    pub task: TaskId,
    /// Its final status, in the vocabulary of every task (the store's).
    pub status: TaskStatus,
    /// For a `failed` task, what failed; `None` for every other status.
    pub failure: Option<Failure>,
    /// The worker's answer: the result, or the error (empty when no worker answered).
    pub payload: Vec<u8>,
    /// A traceback or the reason of a failure; empty on success.
    pub message: String,
    /// Attempts made (0 when it never started).
    pub attempts: u32,
    /// The slot of its last attempt; 0 when it never started.
    pub worker: SlotId,
    /// How long its last attempt ran.
    pub duration: Duration,
}

impl TaskEvent {
    /// The name front ends see: what failed for a failed task, else its status.
    pub fn name(&self) -> &'static str {
        self.failure.map_or(self.status.as_str(), Failure::as_str)
    }

    /// Its status and what failed.
    #[cfg(test)]
    pub(super) fn end(&self) -> End {
        (self.status, self.failure)
    }

    /// The event of a task that ends without running (cancelled, reused from the
    /// store, refused by a broken pool).
    pub(super) fn unstarted(
        task: TaskId,
        (status, failure): End,
        payload: Vec<u8>,
        message: String,
    ) -> Self {
        TaskEvent {
            task,
            status,
            failure,
            payload,
            message,
            attempts: 0,
            worker: 0,
            duration: Duration::ZERO,
        }
    }
}

/// Per-slot figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    /// The slot, from 1.
    pub slot: SlotId,
    /// The current worker's pid; 0 when none runs.
    pub pid: u32,
    /// Tasks finished on this slot (by any of its successive workers).
    pub tasks: u64,
    /// Time spent running them.
    pub busy: Duration,
    /// Their mean run time.
    pub mean: Duration,
    /// Their 95th percentile run time.
    pub p95: Duration,
    /// Workers started on this slot after the first (crashes, timeouts, recycling).
    pub restarts: u64,
    /// Resident memory at the last heartbeat.
    pub rss: u64,
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStats {
    /// Per slot, by slot.
    pub workers: Vec<WorkerStats>,
    /// Tasks submitted so far.
    pub submitted: u64,
    /// Tasks that have ended.
    pub finished: u64,
    /// Tasks a worker has now.
    pub running: u64,
    /// Tasks waiting for a worker.
    pub queued: u64,
}
