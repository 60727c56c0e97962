//! `shoal run`'s task source: the tasks read before the run was recorded, then the
//! rest of the input as it is read ([`crate::reading`]). A task read later is numbered
//! in input order, recorded (through the run's recording, ahead of any of its attempts),
//! counted in the progress total and, for `--keep-order`, put in the printer's order,
//! all when the engine takes it. A resume's tasks come from the store instead, a
//! page at a time as the engine takes them ([`Pages`]), each page put in the
//! printer's order as it is read.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::anyhow;
use shoal_core::engine::{Pulled, Submission, TaskSource};
use shoal_core::store::{NewTask, Recording};
use shoal_core::TaskId;
use tokio::sync::mpsc::{self, error::TryRecvError};

use super::printer::Printer;
use super::resume::Pages;
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
    /// Tasks already recorded, in input order: a new run's first ones, or a
    /// resume's current page.
    pub(super) first: VecDeque<Planned>,
    /// A resume's tasks still in the store.
    pub(super) pages: Option<Pages<'a>>,
    pub(super) reading: Option<Reading>,
    /// How many tasks the run has had so far (a resume: every task it runs, known
    /// from the start).
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

    /// A resume's next page into `first` once it has run out; the end of the
    /// resume's tasks (or a store that fails to give them) ends the pages.
    fn turn_page(&mut self) {
        if !self.first.is_empty() {
            return;
        }
        let Some(pages) = &mut self.pages else { return };
        match pages.next_page() {
            Ok(page) if !page.is_empty() => {
                if let Some(printer) = self.printer {
                    let mut printer = printer.lock().unwrap_or_else(|e| e.into_inner());
                    page.iter().for_each(|p| printer.expect(p.task));
                }
                self.first.extend(page);
            }
            Ok(_) => self.pages = None,
            Err(e) => {
                // What was read ran; the rest is left for another resume.
                self.tasks = pages.read;
                self.failed = Some(e);
                self.pages = None;
            }
        }
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
        self.turn_page();
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
        self.turn_page();
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
