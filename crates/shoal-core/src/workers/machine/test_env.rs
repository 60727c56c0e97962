//! A small environment that drives the machine as the driver does, with no
//! processes: facts at chosen times, each followed by the driver's turn (`tick`,
//! then `poll`), and every action and final event kept for the test to read.

use std::collections::HashMap;
use std::time::Duration;

use super::super::config::{End, TaskEvent};
use super::super::policy::Sent;
use super::state::{Action, Machine, NewTask, Out, Probe, Record, Settings};
use crate::process::Exited;
use crate::protocol::{Message, MAX_FRAME_LEN};
use crate::task::{TaskId, TaskMeta};

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A fixed pool of `workers`, one lane each, no initializer, no store, the pool's
/// default supervision (`PoolConfig::new`). Tests change what their rule needs.
pub fn pool(workers: usize) -> Settings {
    Settings {
        workers,
        lanes: 1,
        min_workers: None,
        idle_timeout: None,
        cap: None,
        address_space_limit: false,
        init: false,
        heartbeat: secs(1),
        heartbeat_timeout: secs(30),
        kill_grace: secs(1),
        retry_delay: ms(50),
        max_tasks_per_worker: None,
        recycle_memory: None,
        recording: false,
        storing: false,
        max_frame: u64::from(MAX_FRAME_LEN),
    }
}

/// A task with `retries` and no timeout.
pub fn task(retries: u32) -> TaskMeta {
    TaskMeta { retries, ..TaskMeta::default() }
}

/// What a test's workers' processes look like to the machine.
#[derive(Debug, Default)]
pub struct FakeProbe {
    pub cpu_ticks: HashMap<usize, u64>,
    pub rss: HashMap<usize, u64>,
}

impl Probe for FakeProbe {
    fn cpu_ticks(&mut self, place: usize) -> Option<u64> {
        self.cpu_ticks.get(&place).copied()
    }

    fn rss(&mut self, place: usize) -> Option<u64> {
        self.rss.get(&place).copied()
    }
}

pub struct Env {
    pub machine: Machine,
    pub now: Duration,
    pub probe: FakeProbe,
    /// Spawns still to fail (each gets `spawn_failed`).
    pub failing_spawns: usize,
    /// Every action since the last `take`.
    pub actions: Vec<Action>,
    /// Every final event so far.
    pub events: Vec<TaskEvent>,
}

impl Env {
    /// The machine, not started.
    pub fn unstarted(settings: Settings) -> Env {
        Env {
            machine: Machine::new(settings),
            now: Duration::ZERO,
            probe: FakeProbe::default(),
            failing_spawns: 0,
            actions: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The machine started at time 0; its workers have not said Hello.
    pub fn starting(settings: Settings) -> Env {
        let mut env = Env::unstarted(settings);
        env.start();
        env
    }

    pub fn start(&mut self) {
        self.machine.start(self.now);
        self.turn();
    }

    /// The machine started, every worker ready (Hello), the actions so far taken.
    pub fn ready(settings: Settings) -> Env {
        let mut env = Env::starting(settings);
        for place in env.spawned() {
            env.hello(place);
        }
        env.take();
        env
    }

    /// Moves the clock to `t` since the start.
    pub fn at(&mut self, t: Duration) -> &mut Self {
        assert!(t >= self.now, "time goes forward");
        self.now = t;
        self
    }

    /// The driver's turn after a fact: the actions done, a tick, a poll.
    pub fn turn(&mut self) {
        self.drain();
        self.machine.tick(self.now, &mut self.probe);
        self.drain();
        self.machine.poll(self.now);
        self.drain();
        self.events.extend(self.machine.take_events());
    }

    fn drain(&mut self) {
        let mut batch = Vec::new();
        while self.machine.has_actions() {
            self.machine.take_actions(&mut batch);
            for action in batch.drain(..) {
                if let Action::Spawn(place) = action {
                    if self.failing_spawns > 0 {
                        self.failing_spawns -= 1;
                        self.machine.spawn_failed(self.now, place, "no such program".into());
                    }
                }
                self.actions.push(action);
            }
        }
    }

    /// The actions since the last call.
    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    // ----- facts -----

    pub fn submit(&mut self, id: TaskId, meta: TaskMeta) -> &mut Self {
        let new = NewTask { id, meta, payload: vec![id as u8], reused: None };
        self.machine.submit(self.now, [new]);
        self.turn();
        self
    }

    /// Tasks `ids`, each with `meta`.
    pub fn submit_all(&mut self, ids: impl IntoIterator<Item = TaskId>, meta: TaskMeta) {
        let tasks = ids.into_iter().map(|id| NewTask {
            id,
            meta: meta.clone(),
            payload: vec![id as u8],
            reused: None,
        });
        self.machine.submit(self.now, tasks);
        self.turn();
    }

    pub fn hello(&mut self, place: usize) -> &mut Self {
        let hello =
            Message::Hello { protocol_version: 1, pid: 100 + place as u32, runtime: "t".into() };
        self.heard(place, hello)
    }

    pub fn init_done(&mut self, place: usize, ok: bool) -> &mut Self {
        let traceback = if ok { String::new() } else { "ValueError: no model".into() };
        self.heard(place, Message::InitDone { ok, payload: b"err".to_vec(), traceback })
    }

    /// The Result of the Run at the head of the worker's queue.
    pub fn answer(&mut self, place: usize, ok: bool) -> &mut Self {
        let Sent { task, attempt, .. } = self.in_flight(place)[0];
        let traceback = if ok { String::new() } else { "ValueError: bad".into() };
        self.heard(place, Message::Result { task, attempt, ok, payload: vec![7], traceback })
    }

    /// A failed Result with this traceback.
    pub fn raise(&mut self, place: usize, traceback: &str) -> &mut Self {
        let Sent { task, attempt, .. } = self.in_flight(place)[0];
        let traceback = traceback.to_owned();
        self.heard(place, Message::Result { task, attempt, ok: false, payload: vec![], traceback })
    }

    pub fn heartbeat(&mut self, place: usize, rss_bytes: u64) -> &mut Self {
        self.heard(place, Message::Heartbeat { rss_bytes })
    }

    pub fn heard(&mut self, place: usize, message: Message) -> &mut Self {
        self.machine.heard(self.now, place, message, &mut self.probe);
        self.turn();
        self
    }

    /// The worker of `place` exited so.
    pub fn exit(&mut self, place: usize, exited: Exited) -> &mut Self {
        self.machine.exited(self.now, place, Some(exited), false, 100 + place as u32);
        self.turn();
        self
    }

    /// Its cgroup's OOM killer took it.
    pub fn oom_killed(&mut self, place: usize) -> &mut Self {
        self.machine.exited(self.now, place, Some(Exited::Signal(9)), true, 100 + place as u32);
        self.turn();
        self
    }

    pub fn channel_closed(&mut self, place: usize) -> &mut Self {
        self.machine.channel_closed(self.now, place, None);
        self.turn();
        self
    }

    /// A wake-up with no other fact.
    pub fn tick(&mut self) -> &mut Self {
        self.turn();
        self
    }

    pub fn close(&mut self) -> &mut Self {
        self.machine.close(self.now);
        self.turn();
        self
    }

    // ----- what the machine did -----

    /// The Runs in flight in the worker of `place`, the running one first.
    pub fn in_flight(&self, place: usize) -> Vec<Sent> {
        let live = self.machine.places[place].live.as_ref().expect("a worker at that place");
        live.in_flight.iter().copied().collect()
    }

    /// The tasks of the Runs sent to `place` among `actions`, in order.
    pub fn runs_to(actions: &[Action], place: usize) -> Vec<TaskId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(p, Out::Run(sent)) if *p == place => Some(sent.task),
                _ => None,
            })
            .collect()
    }

    /// Places spawned among the actions since the last `take`.
    pub fn spawned(&self) -> Vec<usize> {
        spawns(&self.actions)
    }

    /// The final event of `task`.
    pub fn event(&self, task: TaskId) -> &TaskEvent {
        self.events.iter().find(|e| e.task == task).expect("the task has ended")
    }

    pub fn status(&self, task: TaskId) -> End {
        self.event(task).end()
    }

    pub fn ended(&self, task: TaskId) -> bool {
        self.events.iter().any(|e| e.task == task)
    }

    /// Records among the actions since the last `take`.
    pub fn records(&self) -> Vec<&Record> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Record(r) => Some(r),
                _ => None,
            })
            .collect()
    }
}

/// The places of the actions that `pick` picks, in order.
fn places(actions: &[Action], pick: impl Fn(&Action) -> Option<usize>) -> Vec<usize> {
    actions.iter().filter_map(pick).collect()
}

pub fn spawns(actions: &[Action]) -> Vec<usize> {
    places(actions, |a| if let Action::Spawn(p) = a { Some(*p) } else { None })
}

pub fn kills(actions: &[Action]) -> Vec<usize> {
    places(actions, |a| if let Action::Kill(p) = a { Some(*p) } else { None })
}

pub fn shutdowns(actions: &[Action]) -> Vec<usize> {
    places(actions, |a| if let Action::Send(p, Out::Shutdown) = a { Some(*p) } else { None })
}
