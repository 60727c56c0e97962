//! A run recorded through its [`Recording`] reads back right through the [`Store`],
//! for a command's attempts and a call's alike, and ends with the status the run
//! earned: on each backend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::store::test_support::{both_backends, fresh_store, Backend};
use crate::store::{NewRun, RunStatus};
use crate::task::TaskMeta;

both_backends!(
    a_run_of_commands_and_calls_reads_back_as_it_was_recorded,
    a_refused_result_fails_its_task,
    a_run_is_finished_when_it_ran_all_it_was_given,
    a_run_with_a_cancelled_task_is_interrupted_whether_it_had_started_or_not,
);

/// Task `task`, `job <task>`, with the affinity key `key <task>`.
fn new_task(task: TaskId) -> NewTask {
    let meta = TaskMeta { key: Some(format!("key {task}")), ..TaskMeta::default() };
    NewTask { task, args: vec![task.to_string()], command: format!("job {task}"), meta }
}

/// A recording of a new run with tasks 1..=`tasks`.
fn recording(store: &Store, tasks: u64) -> Recording {
    let run = NewRun {
        command: vec!["job".into()],
        options: serde_json::json!({}),
        cwd: "/tmp".into(),
        memory_limit_mode: None,
    };
    let tasks: Vec<NewTask> = (1..=tasks).map(new_task).collect();
    let hold = store.create_run_with(&run, &tasks).unwrap();
    Recording::start(store, hold, Box::new(|_| {}), Box::new(|_| {})).unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// The end of attempt `attempt` of `task` at 200 s, after 1.5 s, with nothing kept.
fn end(task: TaskId, attempt: u32, outcome: AttemptOutcome) -> AttemptEnd {
    AttemptEnd {
        task,
        attempt,
        outcome,
        final_status: Some(outcome.status()),
        duration: Duration::from_millis(1500),
        at: at(200),
        exit_code: None,
        signal: None,
        max_rss_kb: None,
        stdout: Output::default(),
        stderr: Output::default(),
        result: None,
    }
}

fn text(bytes: &str, truncated: bool) -> Output {
    Output { bytes: bytes.as_bytes().to_vec(), truncated }
}

fn a_run_of_commands_and_calls_reads_back_as_it_was_recorded(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let recording = recording(&store, 2);
    let run = recording.run();
    assert!(store.is_alive(run), "held while it is recorded");
    recording.added(vec![new_task(3), new_task(4)]);
    recording.input_ended();
    // Task 1, a command: a failed attempt, retried, then one on another slot.
    recording.started(1, 1, 2, 4242, at(100), Some("job 1 on 2".into()));
    let failed = AttemptOutcome::Failed { exit_code: 3 };
    recording.ended(AttemptEnd {
        final_status: None,
        exit_code: Some(3),
        stderr: text("no", false),
        ..end(1, 1, failed)
    });
    recording.started(1, 2, 1, 4243, at(150), None);
    recording.ended(AttemptEnd {
        exit_code: Some(0),
        max_rss_kb: Some(1024),
        stdout: text("out", true),
        ..end(1, 2, AttemptOutcome::Succeeded)
    });
    // Task 2, a call: its result is kept; task 3's raised; task 4 reused one.
    recording.started(2, 1, 1, 77, at(100), None);
    let result = Some(b"42".to_vec());
    recording.ended(AttemptEnd { result, ..end(2, 1, AttemptOutcome::Succeeded) });
    recording.started(3, 1, 1, 77, at(100), None);
    let traceback = text("Traceback: ValueError", false);
    recording.ended(AttemptEnd { stderr: traceback, ..end(3, 1, AttemptOutcome::Raised) });
    recording.reused(4, b"7".to_vec());
    recording.finish(false).unwrap();

    assert!(!store.is_alive(run), "let go once recorded");
    let summary = &store.runs().unwrap()[0];
    assert_eq!(
        (summary.status, summary.total, summary.input_open),
        (RunStatus::Finished, 4, false)
    );
    let tasks = store.tasks(run, None).unwrap();
    let statuses: Vec<TaskStatus> = tasks.iter().map(|t| t.status).collect();
    use TaskStatus::{Failed, Succeeded};
    assert_eq!(statuses, [Succeeded, Succeeded, Failed, Succeeded]);
    let first = &tasks[0];
    assert_eq!(
        (first.attempts, first.slot, first.pid, first.exit_code),
        (2, Some(1), Some(4243), Some(0))
    );
    assert_eq!((first.stdout.as_slice(), first.stdout_truncated), (&b"out"[..], true));
    assert_eq!(
        (first.started_at, first.ended_at, first.duration),
        (Some(150.0), Some(200.0), Some(1.5))
    );
    assert_eq!(tasks[2].stderr, b"Traceback: ValueError");
    let attempts = store.attempts(run).unwrap();
    let retried = &attempts[0];
    assert_eq!((retried.task, retried.attempt, retried.slot, retried.pid), (1, 1, 2, 4242));
    assert_eq!((retried.outcome.as_deref(), retried.exit_code), (Some("failed"), Some(3)));
    assert_eq!(retried.stderr.as_deref(), Some(&b"no"[..]));
    assert_eq!(attempts[1].max_rss_kb, Some(1024));
    assert_eq!(store.stored_result("key 2", "job 2").unwrap(), Some(b"42".to_vec()));
    assert_eq!(store.stored_result("key 4", "job 4").unwrap(), Some(b"7".to_vec()));
    assert_eq!(tasks[3].attempts, 0, "a reused result runs nothing");
}

fn a_refused_result_fails_its_task(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let recording = recording(&store, 1);
    let run = recording.run();
    recording.started(1, 1, 1, 77, at(100), None);
    let result = Some(b"bad".to_vec());
    recording.ended(AttemptEnd { result, ..end(1, 1, AttemptOutcome::Succeeded) });
    recording.refused(1, "cannot unpickle".into());
    recording.finish(false).unwrap();
    let task = &store.tasks(run, None).unwrap()[0];
    assert_eq!(
        (task.status, task.stderr.as_slice()),
        (TaskStatus::Failed, &b"cannot unpickle"[..])
    );
    assert_eq!(store.stored_result("key 1", "job 1").unwrap(), None, "never reused");
}

/// How a run of two tasks ends when task 1 succeeds and task 2 ends as `second` says.
fn run_status(backend: Backend, second: impl FnOnce(&Recording), stopped: bool) -> RunStatus {
    let (_dir, store) = fresh_store(backend);
    let recording = recording(&store, 2);
    recording.started(1, 1, 1, 10, at(100), None);
    recording.ended(end(1, 1, AttemptOutcome::Succeeded));
    second(&recording);
    recording.finish(stopped).unwrap();
    store.runs().unwrap()[0].status
}

fn a_run_is_finished_when_it_ran_all_it_was_given(backend: Backend) {
    let fails = |r: &Recording| {
        r.started(2, 1, 2, 11, at(100), None);
        r.ended(end(2, 1, AttemptOutcome::Failed { exit_code: 1 }));
    };
    assert_eq!(run_status(backend, fails, false), RunStatus::Finished);
    assert_eq!(run_status(backend, fails, true), RunStatus::Interrupted, "stopped");
}

fn a_run_with_a_cancelled_task_is_interrupted_whether_it_had_started_or_not(backend: Backend) {
    let unstarted = |r: &Recording| r.cancelled(2);
    assert_eq!(run_status(backend, unstarted, false), RunStatus::Interrupted);
    let running = |r: &Recording| {
        r.started(2, 1, 2, 11, at(100), None);
        r.ended(end(2, 1, AttemptOutcome::Cancelled));
    };
    assert_eq!(run_status(backend, running, false), RunStatus::Interrupted);
}
