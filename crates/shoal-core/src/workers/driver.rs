//! The pool's driver loop: only I/O. It owns the worker processes and their
//! conversations, the clock, the store's recorder and the channels to the front end;
//! every decision is the [`Machine`]'s. Each fact (a command, a control request, a
//! worker's message, channel end or exit, a due wake-up) goes to the machine with the
//! time since the pool started, then the driver does the actions it answers, in
//! order: start a place's worker, encode a message into its outbox, kill it, write to
//! the store. A worker that cannot start is a fact too (`spawn_failed`).
//!
//! A turn of the loop: `poll` (the scheduler's decisions, an elastic pool's scale),
//! do the actions, `flush` (each worker's frames of the turn in one write, the turn's
//! final events to the front end in one batch), wait for the next fact or the
//! machine's next wake-up, hand it over, `tick`.
//!
//! Shutdown: on Close the machine runs what is queued, then sends every worker
//! Shutdown and kills the ones not gone `kill_grace` after their last Result. On
//! Terminate (or when the handle is dropped) it kills every worker at once and ends
//! every unfinished task as cancelled. Either way the loop returns only once every
//! worker has been reaped (the machine is `finished`).

use std::io;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use super::config::{PoolConfig, PoolStats, TaskEvent, TaskSpec};
use super::handle::{Command, ParkedRecord};
use super::machine::{Action, Machine, NewTask, Out, Probe, Record, Settings};
use super::record::Recorder;
use super::worker::{Inbox, Process, WorkerEvent};
use crate::process::{stat, ExitInfo, Limits, MemoryLimit};
use crate::protocol::{encode, Conversation, Message, PROTOCOL_VERSION};
use crate::store::{AttemptEnd, ControlRequest, ControlWatcher};
use crate::tap::TaskStep;
use crate::task::{Output, TaskId, TaskStatus};

/// Runs the pool until it is closed and drained, or terminated; returns its last
/// figures.
pub(super) async fn run(
    config: PoolConfig,
    memory: Option<MemoryLimit>,
    recorder: Option<Recorder>,
    parked: Option<ParkedRecord>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: std_mpsc::Sender<Vec<TaskEvent>>,
) -> PoolStats {
    let (inbox, mut worker_events) = mpsc::unbounded_channel();
    // With a store, the run takes control requests (pause, unpause, cancel).
    let mut controls = recorder.as_ref().and_then(Recorder::watch_controls);
    let mut driver = Driver::new(config, memory, recorder, inbox, events);
    let now = driver.now();
    driver.machine.start(now);
    driver.apply();
    let mut commands_open = true;
    while !driver.machine.finished() {
        let now = driver.now();
        driver.machine.poll(now);
        driver.apply();
        driver.flush();
        let wakeup = driver.machine.next_wakeup().map(|d| driver.epoch.checked_add(d));
        // A deadline past what the clock can hold never comes: no wake-up for it.
        let wakeup = wakeup.flatten();
        tokio::select! {
            biased;
            Some((id, event)) = worker_events.recv() => {
                driver.on_worker(id, event);
                while let Ok((id, event)) = worker_events.try_recv() {
                    driver.on_worker(id, event);
                }
            }
            command = commands.recv(), if commands_open => match command {
                Some(command) => {
                    driver.on_command(command);
                    while let Ok(command) = commands.try_recv() {
                        driver.on_command(command);
                    }
                }
                // The handle is gone without closing: nobody can read results.
                None => {
                    commands_open = false;
                    let now = driver.now();
                    driver.machine.terminate(now);
                    driver.apply();
                }
            },
            _ = sleep_until(wakeup.unwrap_or_else(Instant::now)), if wakeup.is_some() => {}
            request = next_request(&mut controls), if controls.is_some() => match request {
                Some(request) => driver.on_control(request),
                None => controls = None,
            },
        }
        let now = driver.now();
        driver.machine.tick(now, &mut ProcessProbe(&driver.workers));
        driver.apply();
    }
    driver.flush();
    let stats = driver.stats();
    let cut_short = driver.machine.cut_short();
    if let Some(recorder) = driver.recorder.take() {
        match parked {
            // The front end may still refuse results it has not decoded yet: the
            // record waits for it, in the handle. Refusals sent before the slot's lock
            // was taken are in the channel; later ones find the record in the slot.
            Some(slot) => {
                let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
                while let Ok(command) = commands.try_recv() {
                    if let Command::Refused(task, reason) = command {
                        recorder.recording().refused(task, reason);
                    }
                }
                *slot = Some((recorder, cut_short));
            }
            None => recorder.finish(cut_short),
        }
    }
    stats
}

/// The next control request of the pool's run; never ready without a watcher.
async fn next_request(controls: &mut Option<ControlWatcher>) -> Option<ControlRequest> {
    match controls {
        Some(watcher) => watcher.requests().recv().await,
        None => std::future::pending().await,
    }
}

/// A running worker process, and the driver's side of its conversation.
struct Worker {
    id: u64,
    process: Process,
    conversation: Conversation,
    /// Frames encoded this turn, handed to the writer in one piece by `flush`.
    outbox: Vec<u8>,
    /// The place cgroup's OOM-kill count when it started.
    oom_before: u64,
}

/// What the machine asks of a worker's process, read from `/proc`.
struct ProcessProbe<'a>(&'a [Option<Worker>]);

impl Probe for ProcessProbe<'_> {
    fn cpu_ticks(&mut self, place: usize) -> Option<u64> {
        self.0.get(place)?.as_ref().and_then(|w| stat::cpu_ticks(w.process.pid))
    }

    fn rss(&mut self, place: usize) -> Option<u64> {
        self.0.get(place)?.as_ref().and_then(|w| stat::rss_bytes(w.process.pid))
    }
}

/// The driver's state; the loop is in [`run`].
struct Driver {
    config: PoolConfig,
    machine: Machine,
    epoch: Instant,
    /// Indexed by place, as the machine's.
    workers: Vec<Option<Worker>>,
    memory: Option<MemoryLimit>,
    recorder: Option<Recorder>,
    inbox: Inbox,
    next_worker: u64,
    /// The machine's actions being done (its buffer and this one swap each time).
    actions: Vec<Action>,
    events: std_mpsc::Sender<Vec<TaskEvent>>,
}

impl Driver {
    fn new(
        config: PoolConfig,
        memory: Option<MemoryLimit>,
        recorder: Option<Recorder>,
        inbox: Inbox,
        events: std_mpsc::Sender<Vec<TaskEvent>>,
    ) -> Self {
        let settings = Settings::new(&config, memory.as_ref(), recorder.is_some());
        Driver {
            machine: Machine::new(settings),
            epoch: Instant::now(),
            workers: Vec::new(),
            memory,
            recorder,
            config,
            inbox,
            next_worker: 1,
            actions: Vec::new(),
            events,
        }
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    // ----- facts -----

    fn on_command(&mut self, command: Command) {
        let now = self.now();
        match command {
            Command::Submit(tasks) => self.submit(now, tasks),
            Command::Cancel(task, reply) => {
                let cancelled = self.machine.cancel(task);
                if let Some(reply) = reply {
                    let _ = reply.send(cancelled);
                }
            }
            Command::Close => self.machine.close(now),
            Command::Terminate => self.machine.terminate(now),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Refused(task, reason) => {
                if let Some(recorder) = &self.recorder {
                    recorder.recording().refused(task, reason);
                }
            }
            Command::Resize(wanted, reply) => {
                let answer = self.machine.resize(now, wanted);
                self.apply();
                let _ = reply.send(answer);
            }
        }
        self.apply();
    }

    /// Applies a control request of the pool's run and records what came of it.
    fn on_control(&mut self, request: ControlRequest) {
        let now = self.now();
        let result = self.machine.control(now, request.action);
        self.apply();
        if let Some(recorder) = &self.recorder {
            recorder.recording().control_applied(request.id, result);
        }
    }

    fn submit(&mut self, now: Duration, tasks: Vec<(TaskId, TaskSpec)>) {
        let recorder = self.recorder.as_ref();
        if let Some(recorder) = recorder {
            recorder.added(
                tasks.iter().map(|(id, t)| (*id, t.label.clone(), t.meta.clone())).collect(),
            );
        }
        // A terminated or broken pool ends its tasks without looking for them.
        let look_up = self.machine.accepts_tasks();
        let tasks = tasks.into_iter().map(|(id, spec)| {
            let reused = match (recorder, &spec.meta.key) {
                (Some(recorder), Some(key)) if look_up => recorder.reusable(key, &spec.label),
                _ => None,
            };
            NewTask { id, meta: spec.meta, payload: spec.payload, reused }
        });
        self.machine.submit(now, tasks);
    }

    fn on_worker(&mut self, id: u64, event: WorkerEvent) {
        let Some(place) = self.workers.iter().position(|w| w.as_ref().is_some_and(|w| w.id == id))
        else {
            return; // from a worker already replaced
        };
        let now = self.now();
        match event {
            WorkerEvent::Message(message) => {
                let worker = self.workers[place].as_mut().expect("found above");
                match worker.conversation.received(&message) {
                    Ok(()) => {
                        let probe = &mut ProcessProbe(&self.workers);
                        self.machine.heard(now, place, message, probe);
                    }
                    Err(e) => self.machine.broke_protocol(now, place, e),
                }
            }
            WorkerEvent::Broken(e) => self.machine.broke_protocol(now, place, e),
            WorkerEvent::Closed(cut) => self.machine.channel_closed(now, place, cut),
            WorkerEvent::Exited(info) => self.on_exit(now, place, info),
        }
        self.apply();
    }

    fn on_exit(&mut self, now: Duration, place: usize, info: io::Result<ExitInfo>) {
        let worker = self.workers[place].take().expect("found by on_worker");
        let oom = match &self.memory {
            Some(MemoryLimit::Cgroup(cgroups)) => cgroups.oom_kills(place + 1) > worker.oom_before,
            _ => false,
        };
        let exited = info.as_ref().map(|i| i.exited).ok();
        self.machine.exited(now, place, exited, oom, worker.process.pid);
    }

    // ----- actions -----

    /// Does what the machine asked, in order, until it asks nothing more (a worker
    /// that cannot start is handed back to it, which may ask again).
    fn apply(&mut self) {
        while self.machine.has_actions() {
            let mut actions = std::mem::take(&mut self.actions);
            self.machine.take_actions(&mut actions);
            for action in actions.drain(..) {
                match action {
                    Action::Spawn(place) => self.spawn(place),
                    Action::Send(place, out) => self.send(place, out),
                    Action::Kill(place) => {
                        if let Some(worker) = self.workers.get(place).and_then(Option::as_ref) {
                            let _ = worker.process.kill.send(true);
                        }
                    }
                    Action::Record(record) => self.record(record),
                }
            }
            self.actions = actions;
        }
    }

    fn spawn(&mut self, place: usize) {
        let id = self.next_worker;
        self.next_worker += 1;
        let slot = place + 1;
        let mut limits = Limits { nice: self.config.nice, ..Limits::default() };
        let mut oom_before = 0;
        match &self.memory {
            _ if self.config.threads.is_some() => limits = Limits::default(), // a thread's are the host's
            Some(MemoryLimit::Cgroup(cgroups)) => {
                limits.cgroup_procs = Some(cgroups.procs_fd(slot));
                oom_before = cgroups.oom_kills(slot);
            }
            Some(MemoryLimit::AddressSpace(bytes)) => limits.memory = Some(*bytes),
            None => {}
        }
        if let Some(cpus) = self.config.cpus.as_ref().filter(|c| !c.is_empty()) {
            limits.cpu = Some(cpus[place % cpus.len()]);
        }
        if self.workers.len() <= place {
            self.workers.resize_with(place + 1, || None);
        }
        match Process::start(id, &self.config, limits, &self.inbox) {
            Ok(process) => {
                let conversation = Conversation::new();
                let outbox = Vec::new();
                self.workers[place] =
                    Some(Worker { id, process, conversation, outbox, oom_before });
            }
            Err(e) => {
                let now = self.now();
                self.machine.spawn_failed(now, place, format!("cannot start a worker: {e}"));
            }
        }
    }

    /// Encodes a message into the worker's outbox (written at `flush`).
    fn send(&mut self, place: usize, out: Out) {
        let worker = self.workers[place].as_mut().expect("the machine sends to a live worker");
        let message = match out {
            Out::Welcome => Message::Welcome {
                protocol_version: PROTOCOL_VERSION,
                worker_id: worker.id,
                heartbeat_ms: self.config.heartbeat.as_millis().min(u32::MAX as u128) as u32,
                config: self.config.worker_config.clone(),
            },
            Out::Init => Message::Init { payload: self.config.init.clone().unwrap_or_default() },
            Out::Shutdown => Message::Shutdown,
            Out::Run(sent) => {
                let payload = self.machine.payload_mut(sent.task).expect("a sent task is held");
                let (task, attempt) = (sent.task, sent.attempt);
                let message = Message::Run { task, attempt, payload: std::mem::take(payload) };
                // The machine checked the frame's size.
                encode(&message, &mut worker.outbox).expect("a Run the machine sends fits");
                let Message::Run { payload: taken, .. } = message else { unreachable!() };
                *payload = taken;
                let header = Message::Run { task, attempt, payload: Vec::new() };
                worker.conversation.sent(&header).expect("Runs are sent only to ready workers");
                return;
            }
        };
        worker.conversation.sent(&message).expect("the machine follows the protocol");
        encode(&message, &mut worker.outbox).expect("control messages are small");
    }

    /// Hands a step of a task's life to its sinks: the tap's observers, the store.
    fn record(&self, record: Record) {
        if let Some(tap) = &self.config.tap {
            tap.send(|| step(&record));
        }
        let Some(recorder) = &self.recorder else { return };
        let recording = recorder.recording();
        match record {
            Record::Started { task, attempt, place, running } => {
                let pid = self.workers.get(place).and_then(Option::as_ref);
                let pid = pid.filter(|_| running).map_or(0, |w| w.process.pid);
                recording.started(task, attempt, place + 1, pid, SystemTime::now(), None);
            }
            Record::Ended { task, attempt, ran, outcome, status, result, why } => {
                recording.ended(AttemptEnd {
                    task,
                    attempt,
                    outcome,
                    final_status: status,
                    duration: ran,
                    at: SystemTime::now(),
                    exit_code: None,
                    signal: None,
                    max_rss_kb: None,
                    stdout: Output::default(),
                    // A traceback or a reason goes where a command's stderr would.
                    stderr: Output { bytes: why.into_bytes(), truncated: false },
                    result,
                })
            }
            Record::Cancelled(task) => recording.cancelled(task),
            Record::Reused(task, result) => recording.reused(task, result),
        }
    }

    /// Hands this turn's frames to each worker's writer, and its events to the front
    /// end, in one batch each.
    fn flush(&mut self) {
        for worker in self.workers.iter_mut().flatten() {
            if !worker.outbox.is_empty() {
                let _ = worker.process.out.send(std::mem::take(&mut worker.outbox));
            }
        }
        if self.machine.has_events() {
            let _ = self.events.send(self.machine.take_events());
        }
    }

    fn stats(&self) -> PoolStats {
        self.machine.stats(|place| {
            self.workers.get(place).and_then(Option::as_ref).map_or(0, |w| w.process.pid)
        })
    }
}

/// What observers of the tap see of a record: the same life the store is told.
fn step(record: &Record) -> TaskStep {
    let at = SystemTime::now();
    match *record {
        Record::Started { task, attempt, place, .. } => {
            TaskStep::Started { task, attempt, slot: place + 1, at }
        }
        Record::Ended { task, attempt, ran, outcome, status, .. } => {
            TaskStep::Ended { task, attempt, outcome, status, duration: ran, at }
        }
        Record::Cancelled(task) => {
            TaskStep::EndedUnstarted { task, status: TaskStatus::Cancelled, at }
        }
        Record::Reused(task, _) => {
            TaskStep::EndedUnstarted { task, status: TaskStatus::Succeeded, at }
        }
    }
}
