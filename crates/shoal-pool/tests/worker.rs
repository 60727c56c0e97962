//! `worker::serve` against the real engine: this test binary is its own worker (the
//! pool starts it again running only `worker_main`), told what to do by each payload.

use std::ffi::OsString;
use std::time::Duration;

use shoal_pool::tap::{Observed, Tap, TaskStep};
use shoal_pool::worker::{self, Handler, WorkerError};
use shoal_pool::workers::{Failure, PoolConfig, TaskEvent, TaskSpec, WorkerPool};
use shoal_pool::{AttemptOutcome, TaskStatus};

/// The worker: `echo:X` answers X, `panic:X` panics with X, `sleep:MS` sleeps quietly,
/// `abort:` kills the process, `init:` answers the initializer's payload.
#[test]
fn worker_main() {
    if !worker::is_worker() {
        return;
    }
    struct Tasks {
        init: Option<Vec<u8>>,
    }
    impl Handler for Tasks {
        fn run(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
            let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
            let (what, arg) = text.split_once(':').ok_or("no verb")?;
            match what {
                "echo" => Ok(arg.as_bytes().to_vec()),
                "panic" => panic!("{arg}"),
                "sleep" => {
                    std::thread::sleep(Duration::from_millis(arg.parse().unwrap()));
                    Ok(b"slept".to_vec())
                }
                "abort" => std::process::abort(),
                "init" => self.init.clone().ok_or("no initializer ran".into()),
                _ => Err(format!("unknown verb {what}")),
            }
        }
        fn init(&mut self, payload: &[u8]) -> Result<(), String> {
            if std::env::var_os("REFUSE_INIT").is_some() {
                return Err("this worker takes no initializer".into());
            }
            self.init = Some(payload.to_vec());
            Ok(())
        }
    }
    worker::serve(Tasks { init: None }).unwrap();
    // Not back to the test harness, whose summary would join the real run's output.
    std::process::exit(0);
}

fn config(workers: usize) -> PoolConfig {
    let me = std::env::current_exe().unwrap();
    let argv = [me.into_os_string(), "--exact".into(), "worker_main".into(), "--quiet".into()];
    let mut config = PoolConfig::new(argv.into_iter().collect::<Vec<OsString>>(), workers);
    config.retry_delay = Duration::from_millis(10);
    config
}

fn task(payload: &str) -> TaskSpec {
    TaskSpec { payload: payload.into(), ..TaskSpec::default() }
}

/// Runs `tasks` on a pool of `config` to their ends; their events by task id.
fn run(config: PoolConfig, tasks: Vec<TaskSpec>) -> Vec<TaskEvent> {
    let n = tasks.len();
    let pool = WorkerPool::start(config).unwrap();
    pool.submit(tasks).unwrap();
    pool.close();
    let mut events = Vec::new();
    while events.len() < n {
        events.extend(pool.next_events(Some(Duration::from_secs(60)), n));
    }
    assert!(pool.join(Some(Duration::from_secs(60))), "the pool did not end");
    events.sort_by_key(|e| e.task);
    events
}

#[test]
fn a_panicking_task_fails_alone_and_its_worker_serves_on() {
    let pool = WorkerPool::start(config(1)).unwrap();
    pool.submit(vec![task("panic:boom"), task("echo:after")]).unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        events.extend(pool.next_events(Some(Duration::from_secs(60)), 2));
    }
    assert_eq!(
        (events[0].status, events[0].failure, events[0].message.as_str()),
        (TaskStatus::Failed, Some(Failure::Raised), "panicked: boom")
    );
    assert_eq!((events[1].status, &events[1].payload[..]), (TaskStatus::Succeeded, &b"after"[..]));
    assert_eq!(pool.stats().workers[0].restarts, 0, "the worker was replaced");
    pool.close();
    assert!(pool.join(Some(Duration::from_secs(60))));
}

#[test]
fn heartbeats_keep_a_long_quiet_task_from_being_taken_for_a_hang() {
    let mut config = config(1);
    config.heartbeat = Duration::from_millis(50);
    config.heartbeat_timeout = Duration::from_millis(300);
    let events = run(config, vec![task("sleep:1200")]);
    assert_eq!((events[0].status, events[0].message.as_str()), (TaskStatus::Succeeded, ""));
}

#[test]
fn a_worker_that_dies_is_blamed_on_its_task_alone_and_replaced() {
    let mut crash = task("abort:");
    crash.meta.retries = 1;
    let events = run(config(1), vec![crash, task("echo:fine")]);
    assert_eq!((events[0].status, events[0].attempts), (TaskStatus::Crashed, 2));
    assert_eq!((events[1].status, &events[1].payload[..]), (TaskStatus::Succeeded, &b"fine"[..]));
}

#[test]
fn the_initializer_runs_once_before_tasks() {
    let mut config = config(1);
    config.init = Some(b"weights".to_vec());
    let events = run(config, vec![task("init:"), task("init:")]);
    for event in events {
        assert_eq!((event.status, &event.payload[..]), (TaskStatus::Succeeded, &b"weights"[..]));
    }
}

#[test]
fn an_initializer_that_fails_fails_every_task_with_its_reason() {
    let mut config = config(2);
    config.init = Some(b"weights".to_vec());
    config.env.push(("REFUSE_INIT".into(), "1".into()));
    for event in run(config, vec![task("echo:a"), task("echo:b")]) {
        assert_eq!((event.status, event.failure), (TaskStatus::Failed, Some(Failure::InitFailed)));
        assert!(event.message.contains("this worker takes no initializer"), "{}", event.message);
    }
}

#[test]
fn serving_outside_a_pool_says_so() {
    assert!(!worker::is_worker());
    let refused = worker::serve(|_: &[u8]| Ok(Vec::new()));
    assert!(matches!(refused, Err(WorkerError::NotAWorker)), "{refused:?}");
}

#[test]
fn observers_follow_each_task_through_the_tap_as_the_store_would_record_it() {
    let tap = Tap::new(64);
    let mut observer = tap.observe();
    let mut config = config(1);
    config.tap = Some(tap);
    let mut crash = task("abort:");
    crash.meta.retries = 1;
    run(config, vec![task("echo:a"), crash]);
    let mut steps = Vec::new();
    while let Some(Observed::Step(step)) = observer.try_next() {
        steps.push(match step {
            TaskStep::Started { task, attempt, slot, .. } => (task, attempt, Some(slot), None),
            TaskStep::Ended { task, attempt, outcome, status, .. } => {
                (task, attempt, None, Some((outcome, status)))
            }
            other => panic!("no task of this pool ends unstarted: {other:?}"),
        });
    }
    let crashed = AttemptOutcome::Crashed { signal: 6 };
    assert_eq!(
        steps,
        [
            (1, 1, Some(1), None),
            (1, 1, None, Some((AttemptOutcome::Succeeded, Some(TaskStatus::Succeeded)))),
            (2, 1, Some(1), None),
            (2, 1, None, Some((crashed, None))),
            (2, 2, Some(1), None),
            (2, 2, None, Some((crashed, Some(TaskStatus::Crashed)))),
        ]
    );
}
