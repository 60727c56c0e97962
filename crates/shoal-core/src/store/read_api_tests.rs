//! Tests of an HTTP front's reads (`ReadApi`), on each backend: filtered pages of a
//! run's tasks (keyset and offset), one task with its attempts, store-wide metrics.

use crate::error::Error;
use crate::store::test_support::{both_backends, fresh_store, live_run, started, write, Backend};
use crate::store::*;
use crate::task::{AttemptOutcome, Output, TaskStatus};

both_backends!(
    pages_of_tasks_follow_filters_keysets_and_offsets,
    one_task_comes_with_every_attempt_and_its_output,
    an_overview_counts_a_run_and_its_slots_work,
    metrics_count_tasks_attempts_and_bucket_durations,
);

fn ended(run: i64, task: u64, attempt: u32, duration: f64, code: i32, last: bool) -> StoreEvent {
    let outcome = match code {
        0 => AttemptOutcome::Succeeded,
        exit_code => AttemptOutcome::Failed { exit_code },
    };
    StoreEvent::AttemptEnded {
        run,
        task,
        attempt,
        ended_at: unix_now(),
        duration,
        outcome,
        exit_code: Some(code),
        signal: None,
        final_status: last.then(|| outcome.status()),
        max_rss_kb: None,
        stdout: Output { bytes: format!("out {task}.{attempt}").into_bytes(), truncated: false },
        stderr: Output { bytes: format!("err {task}.{attempt}").into_bytes(), truncated: false },
    }
}

/// A live run of 6 tasks: 1 succeeded on slot 1 (0.1 s), 2 failed twice with exit 3
/// on slot 2 (0.3 s, then 2 s), 3 runs on slot 1, 4 to 6 are queued.
fn known_run(store: &Store) -> (i64, crate::run::RunHold) {
    let (run, hold) = live_run(store, 6);
    write(
        store,
        vec![
            started(run, 1, 1, 1),
            ended(run, 1, 1, 0.1, 0, true),
            started(run, 2, 1, 2),
            ended(run, 2, 1, 0.3, 3, false),
            started(run, 2, 2, 2),
            ended(run, 2, 2, 2.0, 3, true),
            started(run, 3, 1, 1),
        ],
    );
    (run, hold)
}

fn numbers(tasks: Vec<TaskRecord>) -> Vec<u64> {
    tasks.into_iter().map(|t| t.task).collect()
}

fn pages_of_tasks_follow_filters_keysets_and_offsets(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _hold) = known_run(&store);
    let page = |filter: &TaskFilter, start, limit| {
        numbers(store.task_page(run, filter, start, limit).unwrap())
    };
    let all = TaskFilter::default();
    assert_eq!(page(&all, PageStart::After(0), 4), [1, 2, 3, 4]);
    assert_eq!(page(&all, PageStart::After(4), 4), [5, 6]);
    assert_eq!(page(&all, PageStart::Offset(2), 2), [3, 4]);
    assert_eq!(page(&all, PageStart::Offset(9), 2), Vec::<u64>::new());

    let statuses = TaskFilter {
        statuses: vec![TaskStatus::Failed, TaskStatus::Succeeded],
        ..TaskFilter::default()
    };
    assert_eq!(page(&statuses, PageStart::After(0), 10), [1, 2]);
    assert_eq!(page(&statuses, PageStart::After(1), 10), [2]);
    let code = TaskFilter { exit_code: Some(3), ..TaskFilter::default() };
    assert_eq!(page(&code, PageStart::After(0), 10), [2]);
    let slot = TaskFilter { slot: Some(1), ..TaskFilter::default() };
    assert_eq!(page(&slot, PageStart::After(0), 10), [1, 3]);
    // In the command line, ignoring case; in the arguments.
    let text = TaskFilter { text: Some("JOB 5".into()), ..TaskFilter::default() };
    assert_eq!(page(&text, PageStart::After(0), 10), [5]);
    let text = TaskFilter { text: Some("6".into()), ..TaskFilter::default() };
    assert_eq!(page(&text, PageStart::After(0), 10), [6]);
    // A pattern character is text, not a pattern.
    let text = TaskFilter { text: Some("%".into()), ..TaskFilter::default() };
    assert_eq!(page(&text, PageStart::After(0), 10), Vec::<u64>::new());
    let both = TaskFilter { statuses: vec![TaskStatus::Queued], slot: Some(1), ..all.clone() };
    assert_eq!(page(&both, PageStart::After(0), 10), Vec::<u64>::new());

    let missing = store.task_page(run + 1, &all, PageStart::After(0), 10).unwrap_err();
    assert!(matches!(missing, Error::NoSuchRun { .. }), "{missing:?}");
}

fn one_task_comes_with_every_attempt_and_its_output(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _hold) = known_run(&store);
    let task = store.task(run, 2).unwrap();
    assert_eq!((task.status, task.attempts, task.exit_code), (TaskStatus::Failed, 2, Some(3)));
    let attempts = store.task_attempts(run, 2).unwrap();
    let outputs: Vec<_> =
        attempts.iter().map(|a| (a.attempt, a.stderr.clone().unwrap_or_default())).collect();
    assert_eq!(outputs, [(1, b"err 2.1".to_vec()), (2, b"err 2.2".to_vec())]);
    assert_eq!(attempts[1].stdout.as_deref(), Some(&b"out 2.2"[..]));
    let running = store.task_attempts(run, 3).unwrap();
    assert_eq!((running.len(), running[0].outcome.clone()), (1, None));
    assert!(store.task_attempts(run, 4).unwrap().is_empty());

    let missing = store.task(run, 99).unwrap_err();
    assert!(matches!(missing, Error::NoSuchTask { task: 99, .. }), "{missing:?}");
    let missing = store.task(run + 1, 1).unwrap_err();
    assert!(matches!(missing, Error::NoSuchRun { .. }), "{missing:?}");
}

fn metrics_count_tasks_attempts_and_bucket_durations(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let empty = store.metrics(&[1.0]).unwrap();
    assert_eq!((empty.durations.count, empty.durations.cumulative.clone()), (0, vec![0]));
    let (_run, _hold) = known_run(&store);
    let metrics = store.metrics(&[0.05, 0.5, 1.0, 5.0]).unwrap();
    let count = |s| metrics.tasks[&s];
    assert_eq!(
        [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Running, TaskStatus::Queued]
            .map(count),
        [1, 1, 1, 3]
    );
    let attempts: Vec<(&str, u64)> =
        metrics.attempts.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(attempts, [("failed", 2), ("running", 1), ("succeeded", 1)]);
    // The last attempts' durations of the two tasks that ended: 0.1 and 2.0.
    assert_eq!(metrics.durations.cumulative, [0, 1, 1, 2]);
    assert_eq!(metrics.durations.count, 2);
    assert!((metrics.durations.sum - 2.1).abs() < 1e-9, "{}", metrics.durations.sum);
}

fn an_overview_counts_a_run_and_its_slots_work(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _hold) = known_run(&store);
    let overview = store.overview(run).unwrap();
    assert_eq!(overview.counts, store.stats(run).unwrap().counts);
    assert_eq!(overview.per_slot, store.stats(run).unwrap().per_slot);
    assert!(!overview.input_open);
    let missing = store.overview(run + 1).unwrap_err();
    assert!(matches!(missing, Error::NoSuchRun { .. }), "{missing:?}");
    let streaming = NewRun {
        command: vec!["job".into()],
        options: serde_json::json!({}),
        cwd: "/tmp".into(),
        memory_limit_mode: None,
    };
    let hold = store.create_streaming_run(&streaming, &[]).unwrap();
    assert!(store.overview(hold.run()).unwrap().input_open);
}
