//! Durations past what the clock can add are "never", not a panic: the engine is a
//! library, and a caller may hand it any `Duration` (a timeout, a kill grace, a
//! retry backoff of `Duration::MAX`). Real processes, through the engine.

use std::time::Duration;

use shoal_core::engine::{self, Ended, EngineConfig, Frontend, Report, Started, Stop, Submission};
use shoal_core::process::{CommandLine, Limits};
use shoal_core::scheduler::{Backoff, SchedulerConfig};
use shoal_core::{AttemptOutcome, SlotId, TaskId, TaskMeta};
use tokio::sync::watch;

/// Runs `sh -c SCRIPT` per task; asks for a graceful stop once `stop_after` attempts
/// have ended (0: never).
struct Scripts {
    scripts: Vec<&'static str>,
    ended: Vec<(TaskId, AttemptOutcome)>,
    stop: watch::Sender<Stop>,
    stop_after: usize,
    started: usize,
}

impl Frontend for Scripts {
    type Payload = ();
    fn command(&mut self, task: TaskId, _slot: SlotId, _: &()) -> CommandLine {
        let script = self.scripts[task as usize - 1].to_owned();
        CommandLine { program: "sh".into(), args: vec!["-c".into(), script], cwd: None }
    }
    fn started(&mut self, _: Started) {
        self.started += 1;
    }
    fn ended(&mut self, e: Ended) {
        self.ended.push((e.task, e.outcome));
        if self.ended.len() == self.stop_after {
            let _ = self.stop.send(Stop::Graceful);
        }
    }
}

fn config(slots: usize) -> EngineConfig {
    EngineConfig {
        scheduler: SchedulerConfig {
            slots,
            aging: Some(Duration::MAX),
            backoff: Backoff { base: Duration::MAX, max: Duration::MAX },
            retry_timeouts: true,
            start_interval: Duration::ZERO,
            start_gate: None,
            median_timeout: None,
        },
        kill_grace: Duration::MAX,
        output_cap: 1 << 20,
        limits: Limits::default(),
        memory: None,
        pin: false,
        line_buffer: false,
        marker: None,
        tap: None,
    }
}

/// Runs the scripts on `slots` slots, each task with `meta`; returns the report and
/// the frontend.
fn run(
    slots: usize,
    scripts: Vec<&'static str>,
    meta: TaskMeta,
    stop_after: usize,
) -> (Report, Scripts) {
    let (stop, stop_rx) = watch::channel(Stop::Run);
    let count = scripts.len() as u64;
    let mut frontend = Scripts { scripts, ended: Vec::new(), stop, stop_after, started: 0 };
    let tasks = engine::from_iter((1..=count).map(|task| Submission {
        task,
        meta: meta.clone(),
        attempts: 0,
        payload: (),
    }));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let report =
        runtime.block_on(engine::run(&config(slots), tasks, &mut frontend, stop_rx)).unwrap();
    (report, frontend)
}

#[test]
fn a_timeout_and_a_kill_grace_of_duration_max_mean_no_limit() {
    let meta = TaskMeta { timeout: Some(Duration::MAX), ..TaskMeta::default() };
    let (report, frontend) = run(2, vec!["sleep 0.05", "true"], meta, 0);
    assert_eq!(report.failed, 0);
    let mut ended = frontend.ended;
    ended.sort_unstable_by_key(|e| e.0);
    assert_eq!(ended, [(1, AttemptOutcome::Succeeded), (2, AttemptOutcome::Succeeded)]);
}

#[test]
fn a_retry_backoff_of_duration_max_waits_until_stopped() {
    // Task 1 fails and waits for its retry (a wakeup past the clock's end); task 2's
    // end then stops the run, which must end without the retry, with task 1 unfinished.
    let meta = TaskMeta { retries: 1, ..TaskMeta::default() };
    let (report, frontend) = run(1, vec!["exit 3", "true"], meta, 2);
    assert_eq!(
        frontend.ended,
        [(1, AttemptOutcome::Failed { exit_code: 3 }), (2, AttemptOutcome::Succeeded)]
    );
    assert_eq!(frontend.started, 2, "no retry started");
    assert_eq!(report.unfinished, 1);
}

#[test]
fn a_stop_with_a_kill_grace_of_duration_max_sends_sigterm_and_waits() {
    // Both start at once; task 1's end stops the run. Task 2 ends on SIGTERM; the
    // SIGKILL after the grace never comes due.
    let (report, frontend) = run(2, vec!["exit 0", "sleep 30"], TaskMeta::default(), 1);
    assert_eq!(frontend.ended.len(), 2, "{:?}", frontend.ended);
    assert_eq!(frontend.ended[1], (2, AttemptOutcome::Cancelled));
    assert_eq!(report.cancelled, 1);
}
