//! Control requests: how a live run is steered from outside, through the store.
//!
//! Any process that can open the store asks ([`Store::request`](super::Store::request)):
//! the request is a durable row (who asked, when, what), written only while the run
//! is live. The process running the run watches for them ([`ControlWatcher`]: a
//! thread that polls a [`ControlFeed`] every [`POLL_INTERVAL`]; SQLite's feed reads
//! `PRAGMA data_version` and reads the requests only when another connection has
//! committed), hands them to its engine, and records through its writer thread
//! when it applied each and what it made of it (`StoreEvent::ControlApplied`). The
//! asker waits for that record, so it knows the request was taken.
//!
//! Who applies: the engine of `shoal run` (`engine::run_steered`), and a worker pool
//! with a store (`workers/driver.rs`: pause, unpause and cancel). An asker whose run
//! takes no requests (an older shoal's) gives up after its wait and says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::store::records::RunStatus;
use crate::task::{TaskId, TaskStatus};

/// How often a live run looks for requests: well within the 100 ms a request may
/// take to be noticed, and cheap (one `PRAGMA data_version` read) when nothing came.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The most slots a request may set (as `shoal run -j` takes).
pub const MAX_SLOTS: u32 = 4096;

/// What a request asks of a live run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Stop the run as a first Ctrl-C does: start nothing more, stop what runs (with
    /// the grace); the run ends `interrupted`.
    CancelRun,
    /// Cancel one task: it never starts if it waits, it is stopped if it runs; either
    /// way it ends `cancelled` and the rest of the run goes on.
    CancelTask {
        /// The task's number.
        task: TaskId,
    },
    /// Start nothing more until unpaused; what runs goes on.
    Pause,
    /// Start tasks again.
    Unpause,
    /// Run this many tasks at once from now: fewer lets the running ones finish and
    /// starts none on the slots taken away; more starts work on the new slots at once.
    SetSlots {
        /// The number of slots, at least 1.
        slots: u32,
    },
}

impl ControlAction {
    /// The name of the action in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::CancelRun => "cancel",
            ControlAction::CancelTask { .. } => "cancel_task",
            ControlAction::Pause => "pause",
            ControlAction::Unpause => "unpause",
            ControlAction::SetSlots { .. } => "jobs",
        }
    }

    /// The action from its stored columns (name, task, slots); `None` for one this
    /// shoal does not know.
    pub fn from_columns(name: &str, task: Option<i64>, slots: Option<i64>) -> Option<Self> {
        Some(match name {
            "cancel" => ControlAction::CancelRun,
            "cancel_task" => ControlAction::CancelTask { task: u64::try_from(task?).ok()? },
            "pause" => ControlAction::Pause,
            "unpause" => ControlAction::Unpause,
            "jobs" => ControlAction::SetSlots { slots: u32::try_from(slots?).ok()? },
            _ => return None,
        })
    }

    /// The task it names, if any.
    pub fn task(self) -> Option<TaskId> {
        match self {
            ControlAction::CancelTask { task } => Some(task),
            _ => None,
        }
    }

    /// The slot count it sets, if any.
    pub fn slots(self) -> Option<u32> {
        match self {
            ControlAction::SetSlots { slots } => Some(slots),
            _ => None,
        }
    }
}

/// A request for the run to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRequest {
    /// Its id in the store.
    pub id: i64,
    /// The run it is for.
    pub run: i64,
    /// What it asks.
    pub action: ControlAction,
}

/// A request as stored, with what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlRecord {
    /// Its id in the store.
    pub id: i64,
    /// The run it is for.
    pub run: i64,
    /// What it asks.
    #[serde(flatten)]
    pub action: ControlAction,
    /// When it was asked, unix seconds.
    pub requested_at: f64,
    /// Who asked: the program, its pid and user.
    pub requested_by: String,
    /// When the run applied it, unix seconds; `None` until then.
    pub applied_at: Option<f64>,
    /// What the run made of it ("slots 2 -> 4", "task 5 had already ended").
    pub result: Option<String>,
}

/// Who is asking, as recorded with a request: `front` (the program: "shoal cancel"),
/// this process's id and its user.
pub fn requester(front: &str) -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("{front} (pid {}, user {user})", std::process::id())
}

/// A backend's cheap look for new requests of one run, on a connection of its own.
pub trait ControlFeed: Send {
    /// Requests of the run not yet applied and not returned before, oldest first.
    /// Cheap when nothing changed (SQLite: a read of `PRAGMA data_version`).
    fn poll(&mut self) -> Result<Vec<ControlRequest>>;
}

/// The thread that watches a live run's requests and hands them over; stopped when
/// dropped.
#[derive(Debug)]
pub struct ControlWatcher {
    requests: mpsc::UnboundedReceiver<ControlRequest>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlWatcher {
    /// Starts the thread on `feed`.
    pub(super) fn start(mut feed: Box<dyn ControlFeed>) -> Result<ControlWatcher> {
        let (tx, requests) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-control".into())
            .spawn(move || {
                let mut warned = false;
                while !stopping.load(Ordering::Relaxed) {
                    match feed.poll() {
                        Ok(found) => {
                            for request in found {
                                if tx.send(request).is_err() {
                                    return;
                                }
                            }
                        }
                        // A store busy or failing for a moment: the next poll retries.
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(error = %e, "cannot read control requests");
                        }
                        Err(_) => {}
                    }
                    // Woken early by the drop, to stop.
                    std::thread::park_timeout(POLL_INTERVAL);
                }
            })
            .map_err(|source| crate::Error::Os { operation: "start the control thread", source })?;
        Ok(ControlWatcher { requests, stop, thread: Some(thread) })
    }

    /// The requests, as the thread finds them.
    pub fn requests(&mut self) -> &mut mpsc::UnboundedReceiver<ControlRequest> {
        &mut self.requests
    }
}

impl Drop for ControlWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Refuses requests that cannot apply, by the rule of every backend: any for a run
/// that is not live (its `status` as it stands), and one for a task the run does not
/// have or that has ended (`task_status` reads a task's, `None` if there is none).
pub(crate) fn refuse_what_cannot_apply(
    run: i64,
    status: RunStatus,
    actions: &[ControlAction],
    mut task_status: impl FnMut(TaskId) -> Result<Option<TaskStatus>>,
) -> Result<()> {
    if status != RunStatus::Running {
        return Err(Error::RunEnded { run, status });
    }
    for task in actions.iter().filter_map(|a| a.task()) {
        match task_status(task)? {
            None => return Err(Error::NoSuchTask { run, task }),
            Some(TaskStatus::Queued | TaskStatus::Running) => {}
            Some(status) => return Err(Error::TaskEnded { run, task, status }),
        }
    }
    Ok(())
}
