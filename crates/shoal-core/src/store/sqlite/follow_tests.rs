//! Unit tests of following a run in the SQLite backend: the feed's counts agree with
//! the store's after every kind of change, it hands over each task's end once, with
//! its reason (on each backend), and a poll reads by keys and ranges only.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::follow::{SqliteProgress, POLL_STATEMENTS};
use crate::error::Error;
use crate::store::test_support::{
    both_backends, fresh_store, live_run, new_tasks, started, temp, write, Backend,
};
use crate::store::*;
use crate::task::{AttemptOutcome, Output, TaskStatus};

fn ended(
    run: i64,
    task: u64,
    attempt: u32,
    outcome: AttemptOutcome,
    last: bool,
    stderr: &str,
) -> StoreEvent {
    StoreEvent::AttemptEnded {
        run,
        task,
        attempt,
        ended_at: unix_now(),
        duration: 0.1,
        outcome,
        exit_code: None,
        signal: None,
        final_status: last.then(|| outcome.status()),
        max_rss_kb: None,
        stdout: Output::default(),
        stderr: Output { bytes: stderr.as_bytes().to_vec(), truncated: false },
    }
}

both_backends!(
    the_feed_follows_starts_retries_and_ends_and_counts_as_the_store_does,
    tasks_added_while_following_are_counted_with_the_status_they_have,
    another_run_of_the_store_is_not_mistaken_for_the_one_followed,
    a_feed_opened_mid_run_starts_from_what_the_store_holds,
    following_a_run_the_store_does_not_hold_is_refused,
);

/// The feed's counts and total are the store's own.
#[track_caller]
fn agrees(feed: &dyn ProgressFeed, store: &Store, run: i64) {
    let stats = store.stats(run).unwrap();
    assert_eq!(feed.progress().counts, stats.counts, "counts");
    assert_eq!(feed.progress().total, stats.total, "total");
}

/// (task, slot, attempt) of the running attempts the feed shows.
fn running(feed: &dyn ProgressFeed) -> Vec<(u64, usize, u32)> {
    feed.progress().running.iter().map(|a| (a.task, a.slot, a.attempt)).collect()
}

fn the_feed_follows_starts_retries_and_ends_and_counts_as_the_store_does(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _hold) = live_run(&store, 5);
    let mut feed = store.follow(run).unwrap();
    assert_eq!(feed.progress().status, RunStatus::Running);
    assert_eq!((feed.progress().total, feed.progress().done()), (5, 0));
    agrees(&*feed, &store, run);
    assert_eq!(feed.poll().unwrap(), [], "nothing changed");

    write(&store, vec![started(run, 1, 1, 1), started(run, 2, 1, 2)]);
    assert_eq!(feed.poll().unwrap(), []);
    assert_eq!(running(&*feed), [(1, 1, 1), (2, 2, 1)]);
    agrees(&*feed, &store, run);

    // Task 1 succeeds; task 2 fails and is retried on its slot.
    write(
        &store,
        vec![
            ended(run, 1, 1, AttemptOutcome::Succeeded, true, ""),
            ended(run, 2, 1, AttemptOutcome::Failed { exit_code: 3 }, false, "no\n"),
            started(run, 2, 2, 2),
        ],
    );
    let ends = feed.poll().unwrap();
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!((ends[0].task, ends[0].status), (1, TaskStatus::Succeeded));
    assert_eq!(running(&*feed), [(2, 2, 2)]);
    agrees(&*feed, &store, run);

    // Its retry fails for good; task 3 starts and crashes within one commit; task 4's
    // call raises (no exit code, no signal: its message says why).
    write(
        &store,
        vec![
            ended(run, 2, 2, AttemptOutcome::Failed { exit_code: 3 }, true, "no\n"),
            started(run, 3, 1, 1),
            ended(run, 3, 1, AttemptOutcome::Crashed { signal: 9 }, true, ""),
            started(run, 4, 1, 2),
            ended(
                run,
                4,
                1,
                AttemptOutcome::Raised,
                true,
                "Traceback (most recent call last):\n  File \"f.py\", line 2\nValueError: bad input\n",
            ),
        ],
    );
    let ends = feed.poll().unwrap();
    let by_task = |task| ends.iter().find(|e| e.task == task).unwrap_or_else(|| panic!("{ends:?}"));
    assert_eq!(ends.len(), 3, "{ends:?}");
    let two = by_task(2);
    assert_eq!((two.status, two.exit_code, two.attempts), (TaskStatus::Failed, Some(3), 2));
    assert_eq!(two.message, None, "an exit code says why");
    assert_eq!((by_task(3).status, by_task(3).signal), (TaskStatus::Crashed, Some(9)));
    assert_eq!(by_task(4).message.as_deref(), Some("ValueError: bad input"));
    assert_eq!(running(&*feed), []);
    assert_eq!((feed.progress().done(), feed.progress().failed()), (4, 3));
    agrees(&*feed, &store, run);
    assert_eq!(feed.poll().unwrap(), [], "each end once");

    // A queued task cancelled leaves the attempts alone: the recount finds it, within
    // its least interval.
    write(&store, vec![StoreEvent::TaskCancelled { run, task: 5 }]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ended_at = 9.0;
    while feed.progress().count(TaskStatus::Cancelled) == 0 {
        assert!(Instant::now() < deadline, "the cancel was never counted");
        std::thread::sleep(Duration::from_millis(50));
        // A poll reads once something changed: the run's end, a little later each time.
        ended_at += 1.0;
        let status = RunStatus::Finished;
        write(&store, vec![StoreEvent::RunEnded { run, ended_at, status }]);
        feed.poll().unwrap();
    }
    agrees(&*feed, &store, run);
    assert_eq!(feed.progress().status, RunStatus::Finished);
    assert_eq!(feed.progress().ended_at, Some(ended_at));
}

fn tasks_added_while_following_are_counted_with_the_status_they_have(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    // A Python pool's run: no task at first; calls are added as they are submitted.
    let (run, _hold) = live_run(&store, 0);
    let mut feed = store.follow(run).unwrap();
    assert_eq!(feed.progress().total, 0);
    write(
        &store,
        vec![
            StoreEvent::TasksAdded { run, tasks: new_tasks(1..=3) },
            StoreEvent::TaskResult { run, task: 1, result: vec![1], reused: true },
            started(run, 2, 1, 1),
        ],
    );
    let ends = feed.poll().unwrap();
    assert_eq!(
        ends.iter().map(|e| (e.task, e.status)).collect::<Vec<_>>(),
        [(1, TaskStatus::Succeeded)]
    );
    assert_eq!(running(&*feed), [(2, 1, 1)]);
    agrees(&*feed, &store, run);
    // Added, run and failed between two polls: shown as a failure all the same.
    write(
        &store,
        vec![
            StoreEvent::TasksAdded { run, tasks: new_tasks(4..=4) },
            started(run, 4, 1, 2),
            ended(run, 4, 1, AttemptOutcome::Raised, true, "KeyError: 'k'\n"),
            ended(run, 2, 1, AttemptOutcome::Succeeded, true, ""),
        ],
    );
    let mut ends = feed.poll().unwrap();
    ends.sort_by_key(|e| e.task);
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!((ends[0].task, ends[0].status), (2, TaskStatus::Succeeded));
    assert_eq!((ends[1].task, ends[1].status), (4, TaskStatus::Failed));
    assert_eq!(ends[1].message.as_deref(), Some("KeyError: 'k'"));
    agrees(&*feed, &store, run);
}

fn another_run_of_the_store_is_not_mistaken_for_the_one_followed(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _hold) = live_run(&store, 2);
    let (other, _other_hold) = live_run(&store, 2);
    let mut feed = store.follow(run).unwrap();
    write(
        &store,
        vec![
            started(other, 1, 1, 1),
            started(other, 2, 1, 2),
            ended(other, 2, 1, AttemptOutcome::Raised, true, "x"),
        ],
    );
    assert_eq!(feed.poll().unwrap(), []);
    assert_eq!(running(&*feed), []);
    write(&store, vec![started(run, 2, 1, 1)]);
    feed.poll().unwrap();
    assert_eq!(running(&*feed), [(2, 1, 1)]);
    agrees(&*feed, &store, run);
}

fn a_feed_opened_mid_run_starts_from_what_the_store_holds(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _hold) = live_run(&store, 3);
    write(
        &store,
        vec![
            started(run, 1, 1, 1),
            ended(run, 1, 1, AttemptOutcome::Failed { exit_code: 1 }, true, ""),
            started(run, 2, 1, 2),
        ],
    );
    let mut feed = store.follow(run).unwrap();
    assert_eq!(running(&*feed), [(2, 2, 1)]);
    assert_eq!((feed.progress().done(), feed.progress().failed()), (1, 1));
    agrees(&*feed, &store, run);
    write(&store, vec![ended(run, 2, 1, AttemptOutcome::Succeeded, true, "")]);
    let ends = feed.poll().unwrap();
    assert_eq!(ends.iter().map(|e| e.task).collect::<Vec<_>>(), [2], "only what ended since");
    agrees(&*feed, &store, run);
}

fn following_a_run_the_store_does_not_hold_is_refused(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let _run = live_run(&store, 1);
    assert!(matches!(store.follow(7), Err(Error::NoSuchRun { run: 7 })));
}

#[test]
fn a_poll_reads_by_keys_and_ranges_never_by_a_scan() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let _run = live_run(&store, 3);
    let conn = Connection::open(&path).unwrap();
    for sql in POLL_STATEMENTS {
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .and_then(|mut stmt| {
                let ones = vec![1; stmt.parameter_count()];
                stmt.query_map(rusqlite::params_from_iter(ones), |r| r.get(3))?.collect()
            })
            .unwrap();
        let plan = plan.join("; ");
        assert!(!plan.contains("SCAN"), "{sql}\nscans: {plan}");
        if sql.contains("rowid >") {
            assert!(plan.contains("INTEGER PRIMARY KEY (rowid>?)"), "{sql}\n{plan}");
        }
    }
}

#[test]
fn idle_polls_read_only_the_change_counter() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let (run, _hold) = live_run(&store, 1000);
    let mut feed = SqliteProgress::open(&path, run).unwrap();
    let reads = feed.reads();
    for _ in 0..1000 {
        assert_eq!(feed.poll().unwrap(), []);
    }
    assert_eq!(feed.reads(), reads, "an idle poll read past the change counter");
    write(&store, vec![started(run, 1, 1, 1)]);
    assert_eq!(feed.poll().unwrap(), []);
    assert_eq!(feed.progress().running.len(), 1, "the change was read");
    assert_eq!(feed.reads(), reads + 1);
}
