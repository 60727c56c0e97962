//! `shoal run`'s task source: the tasks read before the run was recorded, then the
//! rest of the input as it is read ([`crate::reading`]). A task read later is numbered
//! in input order, recorded (through the run's recording, ahead of any of its attempts),
//! counted in the progress total and, for `--keep-order`, put in the printer's order,
//! all when the engine takes it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use shoal_core::engine::{Pulled, Submission, TaskSource};
use shoal_core::store::{NewTask, Recording};
use shoal_core::TaskId;
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::printer::Printer;
use super::run::Planned;
use crate::progress::Progress;
use crate::reading::Read;
use crate::template::{display, Template};

/// The input still being read, once the run is recorded.
pub(super) struct Reading {
    pub(super) rx: mpsc::Receiver<Read>,
    /// The number the next task read gets.
    pub(super) next_task: TaskId,
    pub(super) default_timeout: Option<Duration>,
    pub(super) retries: u32,
}

/// The tasks of a run, for the engine.
pub(super) struct Feed<'a> {
    pub(super) template: &'a Template,
    pub(super) recording: &'a Recording,
    pub(super) progress: &'a Progress,
    /// Only with `--keep-order`.
    pub(super) printer: Option<&'a Mutex<Printer>>,
    /// Tasks already recorded, in input order.
    pub(super) first: VecDeque<Planned>,
    pub(super) reading: Option<Reading>,
    /// How many tasks the run has had so far.
    pub(super) tasks: u64,
    /// Why the input could not be read to its end.
    pub(super) failed: Option<anyhow::Error>,
}

impl Feed<'_> {
    /// Records the rest of the input without running it (after a stop), so that a
    /// resume runs it; returns when the input ends.
    pub(super) async fn record_rest(&mut self) {
        self.first.clear();
        while self.next().await.is_some() {}
    }

    /// A task read from the input; `None` (and the input closed) for an error.
    fn take(&mut self, read: Read) -> Option<Submission<Vec<String>>> {
        let reading = self.reading.as_mut().expect("taken from the input");
        let input = match read {
            Ok(input) => input,
            Err(e) => {
                self.fail(e.into());
                return None;
            }
        };
        let task = reading.next_task;
        // `--tasks` lines each give their own inputs: checked against `{n}` as read.
        if let Err(e) = self.template.check_groups(input.args.len()) {
            self.fail(anyhow!("task {task}: {e}"));
            return None;
        }
        reading.next_task += 1;
        let meta = input.meta(reading.default_timeout, reading.retries);
        let command = display(&self.template.render(&input.args, task, 0));
        let new = NewTask { task, args: input.args.clone(), command, meta: meta.clone() };
        self.recording.added(vec![new]);
        self.tasks += 1;
        self.progress.add_total(1);
        if let Some(printer) = self.printer {
            printer.lock().unwrap_or_else(|e| e.into_inner()).expect(task);
        }
        Some(Submission { task, meta, attempts: 0, payload: input.args })
    }

    fn fail(&mut self, e: anyhow::Error) {
        self.failed = Some(e);
        self.input_ended();
    }

    /// The input has ended (or failed): the run's total is known.
    fn input_ended(&mut self) {
        if self.reading.take().is_some() {
            self.recording.input_ended();
            self.progress.set_input_open(false);
        }
    }
}

fn submission(planned: Planned) -> Submission<Vec<String>> {
    let Planned { task, args, meta, attempts } = planned;
    Submission { task, meta, attempts, payload: args }
}

impl TaskSource for Feed<'_> {
    type Payload = Vec<String>;

    fn try_next(&mut self) -> Pulled<Vec<String>> {
        if let Some(planned) = self.first.pop_front() {
            return Pulled::Task(submission(planned));
        }
        let Some(reading) = &mut self.reading else { return Pulled::Ended };
        match reading.rx.try_recv() {
            Ok(read) => self.take(read).map_or(Pulled::Ended, Pulled::Task),
            Err(TryRecvError::Empty) => Pulled::Empty,
            Err(TryRecvError::Disconnected) => {
                self.input_ended();
                Pulled::Ended
            }
        }
    }

    async fn next(&mut self) -> Option<Submission<Vec<String>>> {
        if let Some(planned) = self.first.pop_front() {
            return Some(submission(planned));
        }
        let read = self.reading.as_mut()?.rx.recv().await;
        match read {
            Some(read) => self.take(read),
            None => {
                self.input_ended();
                None
            }
        }
    }
}
