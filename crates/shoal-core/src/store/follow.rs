//! Following a run from another process (`shoal watch`), by reading its store only.
//!
//! A [`ProgressFeed`] keeps what a watcher shows of one run ([`RunProgress`]: its
//! counts, its open attempts) and brings it up to date at each
//! [`poll`](ProgressFeed::poll), reading only what changed since the last one: a
//! backend must make an idle poll cheap (SQLite: one `PRAGMA data_version` read) and
//! a busy one cost what changed, not what the run holds, so that following a run of a
//! million tasks stays cheap. It returns the tasks that reached an end meanwhile, so a
//! failure is shown as it happens.
//!
//! A feed does not tell whether the run is alive: its stored status says `running`
//! until its end is recorded; the run's [`Liveness`](crate::run::Liveness)
//! ([`Store::is_alive`](super::Store::is_alive)) tells a live run from one whose holder
//! died.

use serde::Serialize;

use super::records::{RunStatus, StatusCounts};
use crate::error::Result;
use crate::task::{SlotId, TaskId, TaskStatus};

/// A run as a watcher sees it, as of the feed's last poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunProgress {
    /// The run.
    pub run: i64,
    /// Its status as stored: `running` until its end is recorded (never `died`: see
    /// the module's doc).
    pub status: RunStatus,
    /// When it started, unix seconds.
    pub started_at: f64,
    /// When it ended, once it has.
    pub ended_at: Option<f64>,
    /// How many tasks it has (a Python pool's run grows as calls are submitted; a
    /// `shoal run`'s as its input is read).
    pub total: u64,
    /// Its input is still being read: `total` counts the tasks read so far.
    pub input_open: bool,
    /// How many tasks are in each status, every status present.
    pub counts: StatusCounts,
    /// The attempts running now, by slot.
    pub running: Vec<RunningAttempt>,
}

impl RunProgress {
    /// Tasks that reached an end (succeeded, failed in some way, or cancelled).
    pub fn done(&self) -> u64 {
        self.total.saturating_sub(self.count(TaskStatus::Queued) + self.count(TaskStatus::Running))
    }

    /// Tasks that failed in some way (cancelled ones did not: see
    /// [`TaskStatus::is_failure`]).
    pub fn failed(&self) -> u64 {
        self.counts.iter().filter(|(s, _)| s.is_failure()).map(|(_, n)| n).sum()
    }

    /// How many tasks are in `status`.
    pub fn count(&self, status: TaskStatus) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }
}

/// An attempt running now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunningAttempt {
    /// Its task.
    pub task: TaskId,
    /// Its number among the task's attempts, from 1.
    pub attempt: u32,
    /// The slot it runs on.
    pub slot: SlotId,
    /// When it started, unix seconds.
    pub started_at: f64,
}

/// A task that reached its end (its last attempt's, or a cancel's) since the last poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEnd {
    /// The task.
    pub task: TaskId,
    /// Its final status.
    pub status: TaskStatus,
    /// How many attempts it had.
    pub attempts: u32,
    /// The exit code of its last attempt, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended its last attempt, if one did.
    pub signal: Option<i32>,
    /// For a failure with neither: the last line of what it left where its error
    /// output goes (a Python call's exception, `ValueError: bad input`).
    pub message: Option<String>,
}

/// A backend's view of one run for a watcher, brought up to date by polling.
pub trait ProgressFeed: Send {
    /// Reads what changed since the last poll and returns the tasks that reached an
    /// end meanwhile, in the order found; [`ProgressFeed::progress`] is then up to
    /// date. Cheap when nothing changed (SQLite: a read of `PRAGMA data_version`).
    fn poll(&mut self) -> Result<Vec<TaskEnd>>;

    /// The run as of the last poll (or the feed's opening).
    fn progress(&self) -> &RunProgress;
}

/// The line a failure's message is shown by: the last that is not blank, trimmed and
/// cut to `MESSAGE_CHARS` characters.
pub fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    Some(match line.char_indices().nth(MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    })
}

/// The longest message a [`TaskEnd`] carries, in characters.
const MESSAGE_CHARS: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_is_the_last_line_that_is_not_blank() {
        let traceback =
            b"Traceback (most recent call last):\n  File \"x.py\", line 3\nValueError: bad\n\n";
        assert_eq!(last_line(traceback).as_deref(), Some("ValueError: bad"));
        assert_eq!(last_line(b" \n\n"), None);
        assert_eq!(last_line(b""), None);
        let long = "x".repeat(300);
        assert_eq!(last_line(long.as_bytes()).unwrap().chars().count(), MESSAGE_CHARS + 3);
        // Invalid UTF-8 and a multi-byte character at the cut do not panic.
        let mut bytes = vec![0xff; 3];
        bytes.extend("é".repeat(250).as_bytes());
        assert!(last_line(&bytes).unwrap().ends_with("é..."));
    }
}
