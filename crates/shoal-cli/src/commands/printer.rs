//! Printing task output. Runs in the store's writer thread, after each group commit,
//! so a task's output is shown only once its result is on disk: what the user saw
//! is never lost by a crash. Output of a task is written whole, never interleaved.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;

use std::time::Duration;

use shoal_core::engine::{Ended, Stream};
use shoal_core::process::signal::signal_name;
use shoal_core::store::StoreEvent;
use shoal_core::{AttemptOutcome, Output, TaskId, TaskStatus};

use crate::progress::Progress;

/// Output kept in memory per stream and attempt so that it can be printed whole;
/// the store keeps `--output-limit` of it.
pub const PRINT_LIMIT: u64 = 64 << 20;

/// Prints the output of finished tasks, in completion or input order.
pub struct Printer {
    keep_order: bool,
    line_buffer: bool,
    /// Input order of the tasks not printed yet (only with `keep_order`).
    order: VecDeque<TaskId>,
    /// Outputs waiting for an earlier task (only with `keep_order`).
    held: HashMap<TaskId, (Vec<u8>, Vec<u8>)>,
    /// Whole outputs of tasks whose stored output was cut to `--output-limit`.
    whole: HashMap<TaskId, (Output, Output)>,
    /// `--tag`: the tag of each task started and not yet printed.
    tags: HashMap<TaskId, String>,
    progress: Arc<Progress>,
}

impl Printer {
    /// `order` is the run's tasks in input order.
    pub fn new(
        keep_order: bool,
        line_buffer: bool,
        order: Vec<TaskId>,
        progress: Arc<Progress>,
    ) -> Printer {
        let order = if keep_order { order.into() } else { VecDeque::new() };
        Printer {
            keep_order,
            line_buffer,
            order,
            held: HashMap::new(),
            whole: HashMap::new(),
            tags: HashMap::new(),
            progress,
        }
    }

    /// A task read after the printer was made, for `keep_order`: next in input order.
    pub fn expect(&mut self, task: TaskId) {
        if self.keep_order {
            self.order.push_back(task);
        }
    }

    /// Keeps the whole output of a finished task whose stored output was cut, to
    /// print it instead once its result is committed.
    pub fn hold_whole(&mut self, task: TaskId, outputs: (Output, Output)) {
        self.whole.insert(task, outputs);
    }

    /// `--tag`: what each line of the task's output is prefixed with (and a tab).
    pub fn set_tag(&mut self, task: TaskId, tag: String) {
        self.tags.insert(task, tag);
    }

    /// The tag of a running task, if it has one.
    pub fn tag(&self, task: TaskId) -> Option<&str> {
        self.tags.get(&task).map(String::as_str)
    }

    /// Called with every committed batch of store events.
    pub fn committed(&mut self, batch: &[StoreEvent]) {
        let progress = self.progress.clone();
        // Only writes inside: the bar's own methods would deadlock within `suspend`.
        progress.suspend(|| self.print(batch));
        for event in batch {
            match event {
                StoreEvent::AttemptEnded { final_status: Some(status), .. } => {
                    progress.finished(status.is_failure());
                }
                StoreEvent::TaskCancelled { .. } => {
                    progress.finished(TaskStatus::Cancelled.is_failure());
                }
                _ => {}
            }
        }
    }

    fn print(&mut self, batch: &[StoreEvent]) {
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let (mut out, mut err) = (stdout.lock(), stderr.lock());
        let nothing = Output::default();
        for event in batch {
            let (task, final_status, stdout, stderr) = match event {
                StoreEvent::AttemptEnded { task, final_status, stdout, stderr, .. } => {
                    (task, *final_status, stdout, stderr)
                }
                // Cancelled before it started: nothing to print, but no later output
                // waits for it in input order.
                StoreEvent::TaskCancelled { task, .. } => {
                    (task, Some(TaskStatus::Cancelled), &nothing, &nothing)
                }
                _ => continue,
            };
            if final_status.is_none() {
                continue;
            }
            let tag = self.tags.remove(task);
            if self.line_buffer {
                continue;
            }
            let whole = self.whole.remove(task);
            let (stdout, stderr) = whole.as_ref().map_or((stdout, stderr), |(o, e)| (o, e));
            if stdout.truncated || stderr.truncated {
                let mib = PRINT_LIMIT >> 20;
                note!("shoal: task {task}: output past {mib} MiB per stream was dropped");
            }
            let (stdout, stderr) = match &tag {
                Some(tag) => (tagged(tag, &stdout.bytes), tagged(tag, &stderr.bytes)),
                None => (Cow::Borrowed(&stdout.bytes[..]), Cow::Borrowed(&stderr.bytes[..])),
            };
            if self.keep_order {
                self.held.insert(*task, (stdout.into_owned(), stderr.into_owned()));
                while let Some((o, e)) = self.order.front().and_then(|t| self.held.remove(t)) {
                    self.order.pop_front();
                    write_task(&mut out, &mut err, &o, &e);
                }
            } else {
                write_task(&mut out, &mut err, &stdout, &stderr);
            }
        }
        let _ = out.flush();
    }

    /// Prints what `keep_order` still holds (tasks after one that never finished).
    pub fn flush_held(&mut self) {
        let stdout = std::io::stdout();
        let stderr = std::io::stderr();
        let (mut out, mut err) = (stdout.lock(), stderr.lock());
        for task in std::mem::take(&mut self.order) {
            if let Some((o, e)) = self.held.remove(&task) {
                write_task(&mut out, &mut err, &o, &e);
            }
        }
        let _ = out.flush();
    }
}

fn write_task(out: &mut impl Write, err: &mut impl Write, stdout: &[u8], stderr: &[u8]) {
    // A closed stdout (`| head`) must not stop the run: the results are in the store.
    let _ = out.write_all(stdout);
    if !stderr.is_empty() {
        let _ = out.flush();
        let _ = err.write_all(stderr);
    }
}

/// Every line of `output` (the last one too, if it has no newline) prefixed with `tag`
/// and a tab, as GNU parallel's `--tag`.
fn tagged<'a>(tag: &str, output: &[u8]) -> Cow<'a, [u8]> {
    let mut out = Vec::with_capacity(output.len() + 16);
    for line in output.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(tag.as_bytes());
        out.push(b'\t');
        out.extend_from_slice(line);
    }
    Cow::Owned(out)
}

/// `--line-buffer` and `--ungroup`: one complete line, prefixed with `prefix` (the
/// task number, or its `--tag`) and a tab, if any.
pub fn print_line(prefix: Option<&str>, stream: Stream, line: &[u8]) {
    let mut buf = Vec::with_capacity(line.len() + 12);
    if let Some(prefix) = prefix {
        buf.extend_from_slice(prefix.as_bytes());
        buf.push(b'\t');
    }
    buf.extend_from_slice(line);
    let _ = match stream {
        Stream::Stdout => std::io::stdout().lock().write_all(&buf),
        Stream::Stderr => std::io::stderr().lock().write_all(&buf),
    };
}

/// The line announcing a retry, e.g. `shoal: retry 2/3 of task 7 in 4s (exit code 1)`;
/// `None` when the task is not retried.
pub fn retry_line(ended: &Ended) -> Option<String> {
    let wait = ended.retry_in?;
    let why = match ended.outcome {
        AttemptOutcome::Failed { exit_code } => format!("exit code {exit_code}"),
        AttemptOutcome::Crashed { signal } => format!("killed by {}", signal_name(signal)),
        AttemptOutcome::TimedOut => "timed out".to_owned(),
        AttemptOutcome::MemoryExceeded => "past its memory limit".to_owned(),
        other => other.status().to_string(),
    };
    Some(format!(
        "shoal: retry {}/{} of task {} in {} ({why})",
        ended.attempt + 1,
        ended.max_attempts,
        ended.task,
        seconds(wait)
    ))
}

/// A wait as `4s`, `0.5s` or `1.25s`.
fn seconds(wait: Duration) -> String {
    let text = format!("{:.3}", wait.as_secs_f64());
    format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
}
