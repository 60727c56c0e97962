//! Unit tests of the store and its SQLite backend against real SQLite files in
//! temporary directories.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

use super::journal::SqliteJournal;
use super::schema;
use crate::error::{Error, FailureKind};
use crate::run::RunHold;
use crate::store::records::nearest_rank;
use crate::store::test_support::{started, temp};
use crate::store::*;
use crate::task::{AttemptOutcome, Output, TaskMeta, TaskStatus};

/// A new run, held alive as by the shoal that runs it.
fn new_live_run(store: &Store) -> RunHold {
    store
        .create_run(&NewRun {
            command: vec!["echo".into(), "{}".into()],
            options: serde_json::json!({"jobs": 2}),
            cwd: "/tmp".into(),
            memory_limit_mode: Some("rlimit_as".into()),
        })
        .unwrap()
}

/// A new run whose hold was let go at once (for tests that do not look at its status).
fn new_run(store: &Store) -> i64 {
    new_live_run(store).run()
}

fn new_tasks(n: u64) -> Vec<NewTask> {
    (1..=n)
        .map(|i| NewTask {
            task: i,
            args: vec![format!("arg{i}")],
            command: format!("echo arg{i}"),
            meta: TaskMeta {
                priority: (i % 3) as i32,
                cost: Some(Duration::from_millis(1500)),
                key: Some("k".into()),
                timeout: None,
                retries: 2,
            },
        })
        .collect()
}

fn ended(
    run: i64,
    task: u64,
    attempt: u32,
    duration: f64,
    outcome: AttemptOutcome,
    last: bool,
) -> StoreEvent {
    StoreEvent::AttemptEnded {
        run,
        task,
        attempt,
        ended_at: 100.0 + duration,
        duration,
        outcome,
        exit_code: None,
        signal: None,
        final_status: last.then(|| outcome.status()),
        max_rss_kb: Some(2048),
        stdout: Output { bytes: format!("out{task}\n").into_bytes(), truncated: false },
        stderr: Output { bytes: b"err".to_vec(), truncated: task == 2 },
    }
}

/// Runs events through a writer and returns what on_commit saw.
fn write_all(store: &Store, events: Vec<StoreEvent>) -> (crate::Result<()>, Vec<StoreEvent>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let writer = store
        .writer(Box::new(move |batch: &[StoreEvent]| sink.lock().unwrap().extend_from_slice(batch)))
        .unwrap();
    for ev in events {
        writer.send(ev);
    }
    let result = writer.finish();
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

fn pragma<T: rusqlite::types::FromSql>(path: &Path, name: &str) -> T {
    Connection::open(path).unwrap().query_row(&format!("PRAGMA {name}"), [], |r| r.get(0)).unwrap()
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
    check::<Writer>();
}

#[test]
fn open_creates_a_private_wal_file_and_reopens() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(pragma::<String>(&path, "journal_mode"), "wal");
    assert_eq!(pragma::<i64>(&path, "application_id"), APPLICATION_ID);
    assert_eq!(pragma::<i64>(&path, "user_version"), SCHEMA_VERSION);
    assert_eq!(store.last_run().unwrap(), None);
    let hold = new_live_run(&store);
    let run = hold.run();
    assert!(store.is_alive(run));
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.last_run().unwrap(), Some(run));
    let record = store.run(run).unwrap();
    assert_eq!(record.command, vec!["echo", "{}"]);
    assert_eq!(record.options, serde_json::json!({"jobs": 2}));
    assert_eq!(record.cwd, "/tmp");
    assert_eq!(record.memory_limit_mode.as_deref(), Some("rlimit_as"));
    assert_eq!(record.status, RunStatus::Running);
    assert_eq!(record.ended_at, None);
    assert_eq!(store.runs().unwrap()[0].status, RunStatus::Running);
    // Its holder gone without recording the end (killed): the run shows it died.
    drop(hold);
    assert!(!store.is_alive(run));
    assert_eq!(store.run(run).unwrap().status, RunStatus::Died);
    assert_eq!(store.runs().unwrap()[0].status, RunStatus::Died);
}

#[test]
fn missing_directory_is_an_open_error_naming_the_path() {
    let (dir, _) = temp();
    let path = dir.path().join("nope").join("shoal.db");
    match Store::open(&path) {
        Err(Error::StoreOpen { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("does not exist"), "{reason}");
            assert!(reason.contains("nope"), "{reason}");
        }
        other => panic!("expected StoreOpen, got {other:?}"),
    }
    assert!(!dir.path().join("nope").exists(), "the directory must not be created");
}

/// Tests run as root, who ignores mode bits, so an unwritable directory cannot be
/// made with chmod; a parent that is a regular file is refused the same way.
#[test]
fn parent_that_is_a_file_is_an_open_error() {
    let (dir, _) = temp();
    let file = dir.path().join("plain");
    std::fs::write(&file, "x").unwrap();
    let path = file.join("shoal.db");
    match Store::open(&path) {
        Err(Error::StoreOpen { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("is not a directory"), "{reason}");
        }
        other => panic!("expected StoreOpen, got {other:?}"),
    }
    let deeper = file.join("sub").join("shoal.db");
    match Store::open(&deeper) {
        Err(Error::StoreOpen { reason, .. }) => {
            assert_eq!(reason, format!("{} is not a directory", file.display()));
        }
        other => panic!("expected StoreOpen, got {other:?}"),
    }
}

#[test]
fn path_that_is_a_directory_is_an_open_error() {
    let (dir, _) = temp();
    assert!(matches!(Store::open(dir.path()), Err(Error::StoreOpen { .. })));
}

#[test]
fn garbage_and_text_files_are_corrupt() {
    let (_dir, path) = temp();
    let garbage: Vec<u8> =
        (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for content in [garbage, b"hello, I am a text file\n".to_vec()] {
        std::fs::write(&path, content).unwrap();
        match Store::open(&path) {
            Err(Error::StoreCorrupt { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(reason.contains("not a database"), "{reason}");
            }
            other => panic!("expected StoreCorrupt, got {other:?}"),
        }
    }
}

#[test]
fn another_applications_database_is_corrupt() {
    let (_dir, path) = temp();
    Connection::open(&path).unwrap().execute_batch("CREATE TABLE notes (body TEXT)").unwrap();
    match Store::open(&path) {
        Err(Error::StoreCorrupt { reason, .. }) => assert!(reason.contains("not a shoal database")),
        other => panic!("expected StoreCorrupt, got {other:?}"),
    }
}

#[test]
fn another_schema_version_is_refused() {
    let (_dir, path) = temp();
    drop(Store::open(&path).unwrap());
    Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 7").unwrap();
    match Store::open(&path) {
        Err(Error::StoreSchema { found, expected, .. }) => {
            assert_eq!((found, expected), (7, SCHEMA_VERSION))
        }
        other => panic!("expected StoreSchema, got {other:?}"),
    }
}

#[test]
fn writer_events_are_reflected_by_reads() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(3)).unwrap();
    let events = vec![
        started(run, 1, 1, 1),
        ended(run, 1, 1, 0.5, AttemptOutcome::Succeeded, true),
        started(run, 2, 1, 2),
        ended(run, 2, 1, 1.0, AttemptOutcome::Failed { exit_code: 3 }, false),
        started(run, 2, 2, 1),
        ended(run, 2, 2, 2.0, AttemptOutcome::Crashed { signal: 9 }, true),
        StoreEvent::TaskCancelled { run, task: 3 },
        StoreEvent::RunEnded { run, ended_at: 200.0, status: RunStatus::Finished },
    ];
    let (result, seen) = write_all(&store, events.clone());
    result.unwrap();
    assert_eq!(seen, events);

    let tasks = store.tasks(run, None).unwrap();
    assert_eq!(tasks.len(), 3);
    let (t1, t2, t3) = (&tasks[0], &tasks[1], &tasks[2]);
    assert_eq!(
        (t1.status, t1.attempts, t1.exit_code, t1.signal),
        (TaskStatus::Succeeded, 1, Some(0), None)
    );
    assert_eq!((t1.stdout.as_slice(), t1.stdout_truncated), (&b"out1\n"[..], false));
    assert_eq!((t1.slot, t1.pid, t1.duration), (Some(1), Some(1001), Some(0.5)));
    assert_eq!(
        (t2.status, t2.attempts, t2.exit_code, t2.signal),
        (TaskStatus::Crashed, 2, None, Some(9))
    );
    assert_eq!((t2.stderr.as_slice(), t2.stderr_truncated), (&b"err"[..], true));
    assert_eq!((t2.slot, t2.ended_at), (Some(1), Some(102.0)));
    assert_eq!((t3.status, t3.attempts), (TaskStatus::Cancelled, 0));
    assert_eq!(t3.args, vec!["arg3"]);
    assert_eq!((t3.cost, t3.timeout, t3.retries, t3.priority), (Some(1.5), None, 2, 0));

    let crashed = store.tasks(run, Some(TaskStatus::Crashed)).unwrap();
    assert_eq!(crashed.iter().map(|t| t.task).collect::<Vec<_>>(), vec![2]);

    let attempts = store.attempts(run).unwrap();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.task, a.attempt, a.slot, a.outcome.as_deref(), a.exit_code, a.signal))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 1, 1, Some("succeeded"), Some(0), None),
            (2, 1, 2, Some("failed"), Some(3), None),
            (2, 2, 1, Some("crashed"), None, Some(9)),
        ]
    );
    assert_eq!(attempts[0].max_rss_kb, Some(2048));

    let record = store.run(run).unwrap();
    assert_eq!((record.status, record.ended_at), (RunStatus::Finished, Some(200.0)));
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].total, 3);
    assert_eq!(runs[0].counts[&TaskStatus::Succeeded], 1);
    assert_eq!(runs[0].counts[&TaskStatus::Queued], 0);

    let json = serde_json::to_value(t1).unwrap();
    assert_eq!(json["stdout"], "out1\n");
    assert_eq!(json["status"], "succeeded");
}

#[test]
fn on_commit_sees_every_event_once_after_it_is_durable() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(200)).unwrap();
    let mut events = Vec::new();
    for t in 1..=200 {
        events.push(started(run, t, 1, 1 + (t as usize % 2)));
        events.push(ended(run, t, 1, 0.1, AttemptOutcome::Succeeded, true));
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let other = path.clone();
    let writer = store
        .writer(Box::new(move |batch: &[StoreEvent]| {
            // A fresh connection must already see every event of the batch.
            let conn = Connection::open(&other).unwrap();
            for ev in batch {
                let (sql, run, task) = match ev {
                    StoreEvent::AttemptStarted { run, task, .. } => {
                        ("SELECT count(*) FROM attempts WHERE run_id = ?1 AND task = ?2", run, task)
                    }
                    StoreEvent::AttemptEnded { run, task, .. } => (
                        "SELECT count(*) FROM attempts WHERE run_id = ?1 AND task = ?2
                         AND outcome IS NOT NULL",
                        run,
                        task,
                    ),
                    _ => unreachable!(),
                };
                let n: i64 =
                    conn.query_row(sql, rusqlite::params![run, task], |r| r.get(0)).unwrap();
                assert_eq!(n, 1, "{ev:?} not visible in on_commit");
            }
            sink.lock().unwrap().extend_from_slice(batch);
        }))
        .unwrap();
    for ev in events.clone() {
        writer.send(ev);
    }
    writer.finish().unwrap();
    assert_eq!(*seen.lock().unwrap(), events);
}

#[test]
fn queued_events_are_grouped_into_few_commits() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(1500)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    let (c, a) = (Arc::clone(&calls), Arc::clone(&acked));
    let writer = store
        .writer(Box::new(move |batch: &[StoreEvent]| {
            // Hold the first acknowledgement until everything is queued, so the rest
            // is waiting in the channel: no timing involved.
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                gate_rx.recv().unwrap();
            }
            assert!(batch.len() <= MAX_BATCH);
            a.fetch_add(batch.len(), Ordering::SeqCst);
        }))
        .unwrap();
    for t in 1..=1500 {
        writer.send(started(run, t, 1, 1));
    }
    for t in 1..=1500 {
        writer.send(ended(run, t, 1, 0.1, AttemptOutcome::Succeeded, true));
    }
    gate_tx.send(()).unwrap();
    writer.finish().unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 3000);
    let commits = calls.load(Ordering::SeqCst);
    assert!(commits <= 5, "{commits} commits for 3000 events");
    assert_eq!(store.tasks(run, Some(TaskStatus::Succeeded)).unwrap().len(), 1500);
}

#[test]
fn a_bad_event_is_reported_at_finish_and_spares_its_batch() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(2)).unwrap();
    let events = vec![
        started(run, 1, 1, 1),
        started(run, 99, 1, 1),
        ended(run, 2, 1, 1.0, AttemptOutcome::Succeeded, true),
        started(run, 2, 1, 1),
        StoreEvent::RunEnded { run: 42, ended_at: 1.0, status: RunStatus::Finished },
    ];
    let (result, seen) = write_all(&store, events.clone());
    match result {
        Err(Error::StoreMissing { run: r, task: 99, what: "task" }) => assert_eq!(r, run),
        other => panic!("expected StoreMissing, got {other:?}"),
    }
    assert_eq!(seen, vec![events[0].clone(), events[3].clone()]);
    let statuses: Vec<_> = store.tasks(run, None).unwrap().iter().map(|t| t.status).collect();
    assert_eq!(statuses, vec![TaskStatus::Running, TaskStatus::Running]);
}

#[test]
fn dropping_a_writer_still_writes_its_queue() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    let writer = store.writer(Box::new(|_: &[StoreEvent]| {})).unwrap();
    writer.send(StoreEvent::RunEnded { run, ended_at: 5.0, status: RunStatus::Interrupted });
    drop(writer);
    assert_eq!(store.run(run).unwrap().status, RunStatus::Interrupted);
}

/// A resume reads the tasks to run in pages: each one once, in order, past the
/// succeeded ones, whatever the page size; an empty page is the end.
#[test]
fn unsucceeded_tasks_come_in_pages_by_task_number() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(10)).unwrap();
    let mut events = Vec::new();
    for task in [1, 4, 5, 6, 10] {
        events.push(started(run, task, 1, 1));
        events.push(ended(run, task, 1, 1.0, AttemptOutcome::Succeeded, true));
    }
    write_all(&store, events).0.unwrap();
    assert!(matches!(store.unsucceeded_tasks(run + 1, 0, 2), Err(Error::NoSuchRun { .. })));
    for size in [1, 2, 3, 5, 100] {
        let (mut pages, mut after) = (Vec::new(), 0);
        loop {
            let page: Vec<u64> =
                store.unsucceeded_tasks(run, after, size).unwrap().iter().map(|t| t.task).collect();
            let Some(&last) = page.last() else { break };
            assert!(page.len() <= size);
            after = last;
            pages.push(page);
        }
        assert_eq!(pages.concat(), [2, 3, 7, 8, 9], "pages of {size}");
    }
}

/// A resume checks the stored timeouts of the tasks it would run by the lowest and
/// the highest, each with the first task holding it; succeeded tasks do not count.
#[test]
fn unsucceeded_timeout_extremes_name_the_first_task_of_each() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    let timeouts = [Some(0.5), None, Some(3.0), Some(9.0), Some(0.5), Some(9.0)];
    let tasks: Vec<NewTask> = new_tasks(6)
        .into_iter()
        .zip(timeouts)
        .map(|(mut t, secs)| {
            t.meta.timeout = secs.map(Duration::from_secs_f64);
            t
        })
        .collect();
    store.insert_tasks(run, &tasks).unwrap();
    assert_eq!(store.unsucceeded_timeout_extremes(run).unwrap(), [(1, 0.5), (4, 9.0)]);
    let events = vec![
        started(run, 1, 1, 1),
        ended(run, 1, 1, 1.0, AttemptOutcome::Succeeded, true),
        started(run, 4, 1, 1),
        ended(run, 4, 1, 1.0, AttemptOutcome::Succeeded, true),
    ];
    write_all(&store, events).0.unwrap();
    assert_eq!(store.unsucceeded_timeout_extremes(run).unwrap(), [(5, 0.5), (6, 9.0)]);
    let bare = new_run(&store);
    store.insert_tasks(bare, &new_tasks(2)).unwrap();
    assert_eq!(store.unsucceeded_timeout_extremes(bare).unwrap(), []);
}

#[test]
fn prepare_resume_requeues_running_tasks_and_closes_open_attempts() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(4)).unwrap();
    let events = vec![
        started(run, 1, 1, 1),
        ended(run, 1, 1, 1.0, AttemptOutcome::Succeeded, true),
        started(run, 2, 1, 2),
        ended(run, 2, 1, 1.0, AttemptOutcome::Failed { exit_code: 1 }, false),
        started(run, 2, 2, 2),
        started(run, 3, 1, 1),
        ended(run, 3, 1, 1.0, AttemptOutcome::TimedOut, true),
        StoreEvent::RunEnded { run, ended_at: 300.0, status: RunStatus::Interrupted },
    ];
    write_all(&store, events).0.unwrap();
    assert!(matches!(store.prepare_resume(run + 1), Err(Error::NoSuchRun { .. })));

    let _resuming = store.hold_run(run).unwrap();
    assert!(matches!(store.hold_run(run), Err(Error::RunBusy { .. })));
    let resumed = store.prepare_resume(run).unwrap();
    assert_eq!((resumed.id, resumed.status, resumed.ended_at), (run, RunStatus::Running, None));
    let pending: Vec<_> = store
        .unsucceeded_tasks(run, 0, 100)
        .unwrap()
        .iter()
        .map(|t| (t.task, t.status, t.attempts))
        .collect();
    assert_eq!(
        pending,
        vec![(2, TaskStatus::Queued, 2), (3, TaskStatus::TimedOut, 1), (4, TaskStatus::Queued, 0)]
    );
    let open: Vec<_> = store
        .attempts(run)
        .unwrap()
        .into_iter()
        .filter(|a| a.outcome.as_deref() == Some("interrupted"))
        .collect();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].task, open[0].attempt, open[0].duration), (2, 2, None));
    assert!(open[0].ended_at.is_some());
    assert!(store.attempts(run).unwrap().iter().all(|a| a.ended_at.is_some()));
}

#[test]
fn stats_on_known_data() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(11)).unwrap();
    let mut events = Vec::new();
    for t in 1..=10u64 {
        let outcome = if t <= 2 {
            AttemptOutcome::Failed { exit_code: 1 }
        } else {
            AttemptOutcome::Succeeded
        };
        events.push(started(run, t, 1, 1 + (t as usize + 1) % 2));
        events.push(ended(run, t, 1, t as f64, outcome, true));
    }
    write_all(&store, events).0.unwrap();

    let stats = store.stats(run).unwrap();
    assert_eq!(stats.total, 11);
    assert_eq!(stats.counts[&TaskStatus::Succeeded], 8);
    assert_eq!(stats.counts[&TaskStatus::Failed], 2);
    assert_eq!(stats.counts[&TaskStatus::Queued], 1);
    assert_eq!(stats.counts.len(), TaskStatus::ALL.len());
    assert_eq!((stats.finished, stats.unfinished), (10, 1));
    assert_eq!(stats.success_rate, Some(0.8));
    let writer = store.writer(Box::new(|_: &[StoreEvent]| {})).unwrap();
    writer.send(StoreEvent::RunEnded { run, ended_at: 9.0, status: RunStatus::Finished });
    writer.finish().unwrap();
    // Stored as finished with a task still queued: it did not finish.
    assert_eq!(store.run(run).unwrap().status, RunStatus::Interrupted);
    assert_eq!(store.runs().unwrap()[0].status, RunStatus::Interrupted);
    assert_eq!(store.runs().unwrap()[0].unfinished, 1);
    assert_eq!(
        (stats.duration_p50, stats.duration_p95, stats.duration_max),
        (Some(5.0), Some(10.0), Some(10.0))
    );
    assert_eq!(
        stats.per_slot,
        vec![
            SlotStats { slot: 1, tasks: 5, busy: 25.0 },
            SlotStats { slot: 2, tasks: 5, busy: 30.0 }
        ]
    );

    let empty = new_run(&store);
    let stats = store.stats(empty).unwrap();
    assert_eq!((stats.total, stats.success_rate, stats.duration_p50), (0, None, None));
    assert!(stats.per_slot.is_empty());
    assert!(matches!(store.stats(empty + 1), Err(Error::NoSuchRun { .. })));
}

#[test]
fn nearest_rank_percentiles() {
    assert_eq!(nearest_rank(&[], 50.0), None);
    assert_eq!(nearest_rank(&[7.0], 95.0), Some(7.0));
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 95.0), Some(4.0));
    assert_eq!(nearest_rank(&[1.0, 2.0, 3.0, 4.0], 0.0), Some(1.0));
}

#[test]
fn reads_of_an_unknown_run_fail_cleanly() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    assert!(matches!(store.run(1), Err(Error::NoSuchRun { run: 1 })));
    assert!(matches!(store.tasks(1, None), Err(Error::NoSuchRun { run: 1 })));
    assert!(matches!(store.attempts(1), Err(Error::NoSuchRun { run: 1 })));
    assert!(matches!(store.insert_tasks(1, &new_tasks(1)), Err(Error::NoSuchRun { run: 1 })));
}

#[test]
fn inserts_a_hundred_thousand_tasks() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(100_000)).unwrap();
    assert_eq!(store.stats(run).unwrap().counts[&TaskStatus::Queued], 100_000);
    assert_eq!(store.runs().unwrap()[0].total, 100_000);
}

#[test]
fn a_resume_can_replace_the_run_options() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    let options = serde_json::json!({"jobs": 8, "timeout": 7.5});
    store.set_run_options(run, &options, Some("cgroup_v1")).unwrap();
    let record = store.run(run).unwrap();
    assert_eq!(record.options, options);
    assert_eq!(record.memory_limit_mode.as_deref(), Some("cgroup_v1"));
    assert!(matches!(
        store.set_run_options(run + 1, &options, None),
        Err(Error::NoSuchRun { run: r }) if r == run + 1
    ));
}

#[test]
fn results_of_keyed_tasks_are_kept_and_found_again() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    let mut tasks = new_tasks(3);
    tasks[0].meta.key = Some("a".into());
    tasks[1].meta.key = Some("b".into());
    tasks[2].meta.key = Some("c".into());
    let events = vec![
        StoreEvent::TasksAdded { run, tasks },
        started(run, 1, 1, 1),
        ended(run, 1, 1, 0.5, AttemptOutcome::Succeeded, true),
        StoreEvent::TaskResult { run, task: 1, result: b"value-a".to_vec(), reused: false },
        started(run, 2, 1, 1),
        ended(run, 2, 1, 0.5, AttemptOutcome::Raised, true),
        StoreEvent::TaskResult { run, task: 3, result: b"value-c".to_vec(), reused: true },
    ];
    let (result, seen) = write_all(&store, events);
    result.unwrap();
    assert_eq!(seen.len(), 7);
    assert_eq!(store.stored_result("a", "echo arg1").unwrap(), Some(b"value-a".to_vec()));
    assert_eq!(store.stored_result("b", "echo arg2").unwrap(), None, "b raised: nothing to reuse");
    assert_eq!(store.stored_result("c", "echo arg3").unwrap(), Some(b"value-c".to_vec()));
    assert_eq!(store.stored_result("a", "echo arg2").unwrap(), None);
    let statuses: Vec<_> = store.tasks(run, None).unwrap().iter().map(|t| t.status).collect();
    assert_eq!(statuses, [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Succeeded]);
}

/// Turns a store of the current version back into what schema version `to` was.
fn downgrade(path: &Path, to: i64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("ALTER TABLE runs DROP COLUMN input_open; PRAGMA user_version = 4;")
        .unwrap();
    if to == 4 {
        return;
    }
    conn.execute_batch("DROP TABLE control; PRAGMA user_version = 3;").unwrap();
    if to == 3 {
        return;
    }
    conn.execute_batch(
        "ALTER TABLE attempts DROP COLUMN stdout; ALTER TABLE attempts DROP COLUMN stderr;
         ALTER TABLE attempts DROP COLUMN stdout_truncated;
         ALTER TABLE attempts DROP COLUMN stderr_truncated; PRAGMA user_version = 2;",
    )
    .unwrap();
    if to == 1 {
        conn.execute_batch(
            "DROP INDEX tasks_by_key; ALTER TABLE tasks DROP COLUMN result; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
}

/// A run of two tasks: task 1 fails once ("out1" each time), then succeeds.
fn retried_run(store: &Store) -> i64 {
    let run = new_run(store);
    store.insert_tasks(run, &new_tasks(2)).unwrap();
    let mut first = ended(run, 1, 1, 1.0, AttemptOutcome::Failed { exit_code: 3 }, false);
    if let StoreEvent::AttemptEnded { stdout, stderr, .. } = &mut first {
        stdout.bytes = b"first try\n".to_vec();
        stderr.truncated = true;
    }
    let events = vec![
        started(run, 1, 1, 1),
        first,
        started(run, 1, 2, 1),
        ended(run, 1, 2, 1.0, AttemptOutcome::Succeeded, true),
        started(run, 2, 1, 2),
    ];
    write_all(store, events).0.unwrap();
    run
}

#[test]
fn every_attempt_keeps_its_own_output() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = retried_run(&store);
    let attempts = store.attempts(run).unwrap();
    let outputs: Vec<_> = attempts
        .iter()
        .map(|a| (a.task, a.attempt, a.stdout.clone(), a.stdout_truncated, a.stderr_truncated))
        .collect();
    assert_eq!(
        outputs,
        [
            (1, 1, Some(b"first try\n".to_vec()), false, true),
            (1, 2, Some(b"out1\n".to_vec()), false, false),
            (2, 1, None, false, false), // still running: nothing captured yet
        ]
    );
    // The task shows its last attempt's output, stored once: in the task's row.
    assert_eq!(store.tasks(run, None).unwrap()[0].stdout, b"out1\n");
    let own: Option<Vec<u8>> = Connection::open(&path)
        .unwrap()
        .query_row("SELECT stdout FROM attempts WHERE task = 1 AND attempt = 2", [], |r| r.get(0))
        .unwrap();
    assert_eq!(own, None);
}

#[test]
fn a_timed_out_attempt_records_the_signal_that_ended_it() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(2)).unwrap();
    let mut killed = ended(run, 1, 1, 1.0, AttemptOutcome::TimedOut, true);
    let mut exited = ended(run, 2, 1, 1.0, AttemptOutcome::TimedOut, true);
    if let StoreEvent::AttemptEnded { signal, .. } = &mut killed {
        *signal = Some(libc::SIGKILL);
    }
    // A task that caught its SIGTERM and exited by itself.
    if let StoreEvent::AttemptEnded { exit_code, .. } = &mut exited {
        *exit_code = Some(143);
    }
    let events = vec![started(run, 1, 1, 1), killed, started(run, 2, 1, 2), exited];
    write_all(&store, events).0.unwrap();
    let codes: Vec<_> =
        store.tasks(run, None).unwrap().iter().map(|t| (t.status, t.exit_code, t.signal)).collect();
    assert_eq!(
        codes,
        [
            (TaskStatus::TimedOut, None, Some(libc::SIGKILL)),
            (TaskStatus::TimedOut, Some(143), None)
        ]
    );
    let attempts: Vec<_> =
        store.attempts(run).unwrap().iter().map(|a| (a.exit_code, a.signal)).collect();
    assert_eq!(attempts, [(None, Some(libc::SIGKILL)), (Some(143), None)]);
}

#[test]
fn a_version_1_store_is_migrated_in_place() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        let run = new_run(&store);
        store.insert_tasks(run, &new_tasks(2)).unwrap();
    }
    downgrade(&path, 1);
    let store = Store::open(&path).unwrap();
    assert_eq!(pragma::<i64>(&path, "user_version"), SCHEMA_VERSION);
    let run = store.last_run().unwrap().unwrap();
    assert_eq!(store.tasks(run, None).unwrap().len(), 2, "rows survive the migration");
    assert_eq!(store.stored_result("k", "echo arg1").unwrap(), None);
}

#[test]
fn a_version_2_store_is_migrated_and_its_old_attempts_keep_what_they_had() {
    let (_dir, path) = temp();
    let run = retried_run(&Store::open(&path).unwrap());
    downgrade(&path, 2);
    let store = Store::open(&path).unwrap();
    assert_eq!(pragma::<i64>(&path, "user_version"), SCHEMA_VERSION);
    let outputs: Vec<_> = store.attempts(run).unwrap().into_iter().map(|a| a.stdout).collect();
    // Version 2 kept only the task's last output; the first attempt's is not known.
    assert_eq!(outputs, [None, Some(b"out1\n".to_vec()), None]);
}

#[test]
fn a_read_only_open_reads_an_old_store_as_it_is_and_writes_nothing() {
    let (dir, path) = temp();
    let run = retried_run(&Store::open(&path).unwrap());
    downgrade(&path, 2);
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let (names, bytes) = (listing(), std::fs::read(&path).unwrap());
    assert_eq!(names, ["shoal.db"]);
    let store = Store::open_read_only(&path).unwrap();
    let outputs: Vec<_> = store.attempts(run).unwrap().into_iter().map(|a| a.stdout).collect();
    assert_eq!(outputs, [None, Some(b"out1\n".to_vec()), None]);
    assert_eq!(store.runs().unwrap().len(), 1);
    let refused = store.insert_tasks(run, &new_tasks(1)).expect_err("a read-only store");
    assert!(refused.to_string().contains("readonly"), "{refused}");
    drop(store);
    assert_eq!(listing(), names, "no -wal or -shm was created");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not migrated, not written");
    assert_eq!(pragma::<i64>(&path, "user_version"), 2);
}

#[test]
fn a_read_only_open_refuses_what_is_not_a_store() {
    let (_dir, path) = temp();
    assert!(matches!(Store::open_read_only(&path), Err(Error::StoreOpen { .. })), "missing");
    std::fs::write(&path, "").unwrap();
    match Store::open_read_only(&path) {
        Err(Error::StoreOpen { reason, .. }) => assert!(reason.contains("empty"), "{reason}"),
        other => panic!("expected StoreOpen, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), b"", "an empty file stays empty");
    std::fs::write(&path, "hello, I am a text file\n").unwrap();
    assert!(matches!(Store::open_read_only(&path), Err(Error::StoreCorrupt { .. })));
}

#[test]
fn a_damaged_page_is_found_before_anything_is_written() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        let run = retried_run(&store);
        store
            .insert_tasks(run, &(3..=300).map(|i| new_tasks(i).pop().unwrap()).collect::<Vec<_>>())
            .unwrap();
    }
    // Scribble over the page holding the attempts table's root: queries of runs and
    // tasks never read it, so only a check of the whole file notices.
    let (root, page_size): (i64, i64) = {
        let conn = Connection::open(&path).unwrap();
        let root = conn
            .query_row("SELECT rootpage FROM sqlite_master WHERE name = 'attempts'", [], |r| {
                r.get(0)
            })
            .unwrap();
        (root, conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap())
    };
    let mut bytes = std::fs::read(&path).unwrap();
    let at = ((root - 1) * page_size) as usize;
    for (i, b) in bytes[at..at + 64].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0xa5;
    }
    std::fs::write(&path, &bytes).unwrap();
    for opened in [Store::open(&path), Store::open_read_only(&path)] {
        match opened {
            Err(Error::StoreDamaged { path: p, reason }) => {
                assert_eq!(p, path);
                assert!(reason.contains("quick check"), "{reason}");
            }
            other => panic!("expected StoreDamaged, got {other:?}"),
        }
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was written into it");
}

/// A journal of `path` whose connection may not grow the file past its size now:
/// SQLite's own SQLITE_FULL, as on a full disk.
fn full_journal(path: &Path) -> SqliteJournal {
    let conn = schema::connect(path).unwrap();
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
    conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).unwrap();
    SqliteJournal::with_connection(path, conn)
}

/// A journal of `path` as a writer thread has it.
fn journal(path: &Path) -> SqliteJournal {
    SqliteJournal::with_connection(path, schema::connect(path).unwrap())
}

/// An attempt's end with `kib` KiB of output, which needs new pages to store.
fn big_end(run: i64, task: u64, kib: usize) -> StoreEvent {
    let mut ev = ended(run, task, 1, 1.0, AttemptOutcome::Succeeded, true);
    if let StoreEvent::AttemptEnded { stdout, .. } = &mut ev {
        stdout.bytes = vec![b'x'; kib << 10];
    }
    ev
}

#[test]
fn a_full_store_is_told_from_a_bad_event() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(3)).unwrap();
    let mut full = full_journal(&path);
    let err = full.commit(&[started(run, 1, 1, 1), big_end(run, 1, 64)]).expect_err("no room");
    assert!(outage::store_failed(&err), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    let mut journal = journal(&path);
    let unknown = journal.commit(&[started(run, 99, 1, 1)]).expect_err("unknown");
    assert!(!outage::store_failed(&unknown), "{unknown}");
    journal.commit(&[started(run, 2, 1, 1)]).unwrap();
    let twice = journal.commit(&[started(run, 2, 1, 1)]).expect_err("twice");
    assert!(!outage::store_failed(&twice), "{twice}");
}

/// The kind of a failed write or query, checking that it names the store it failed on.
fn kind_of(path: &Path, e: Error) -> FailureKind {
    match e {
        Error::Store { store, source, .. } => {
            assert_eq!(store, StoreAddress::Sqlite(path.to_owned()));
            source.kind()
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
}

/// What SQLite really does, in the store's terms: a file that may not grow is full, a
/// write lock held by another connection is busy, a store opened read-only is read
/// only, a damaged page is damaged, a second start of one attempt is the request's
/// fault. The words stay SQLite's.
#[test]
fn real_sqlite_failures_have_their_kind() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(3)).unwrap();

    let full = full_journal(&path).commit(&[big_end(run, 1, 64)]).expect_err("no room");
    assert!(full.to_string().ends_with("failed: database or disk is full"), "{full}");
    assert_eq!(kind_of(&path, full), FailureKind::Full);

    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let conn = schema::connect(&path).unwrap();
    conn.busy_timeout(Duration::ZERO).unwrap();
    let busy = SqliteJournal::with_connection(&path, conn)
        .commit(&[started(run, 1, 1, 1)])
        .expect_err("locked");
    assert!(busy.to_string().ends_with("failed: database is locked"), "{busy}");
    assert_eq!(kind_of(&path, busy), FailureKind::Busy);
    holder.execute_batch("ROLLBACK").unwrap();

    let mut journal = journal(&path);
    journal.commit(&[started(run, 2, 1, 1)]).unwrap();
    let twice = journal.commit(&[started(run, 2, 1, 1)]).expect_err("twice");
    assert_eq!(kind_of(&path, twice), FailureKind::Invalid);

    let read_only = Store::open_read_only(&path).unwrap();
    let refused = read_only.insert_tasks(run, &new_tasks(1)).expect_err("read-only");
    assert_eq!(kind_of(&path, refused), FailureKind::ReadOnly);
    drop((read_only, journal, store, holder));

    // A page of the tasks table scribbled over (the last connection closed, so it is
    // in the file, not the log): the store is opened (and checked) first, so the
    // damage is met by a query, as when it happens meanwhile.
    assert!(!path.with_extension("db-wal").exists(), "checkpointed into the file");
    let store = Store::open(&path).unwrap();
    let root: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT rootpage FROM sqlite_master WHERE name = 'tasks'", [], |r| r.get(0))
        .unwrap();
    let page_size: i64 = pragma(&path, "page_size");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = ((root - 1) * page_size) as usize;
    bytes[at..at + 64].fill(0xa5);
    std::fs::write(&path, &bytes).unwrap();
    // A write elsewhere makes the connection drop its cache and read the file again.
    Connection::open(&path).unwrap().execute("UPDATE runs SET cwd = '/'", []).unwrap();
    let damaged = store.tasks(run, None).expect_err("a damaged page");
    assert_eq!(kind_of(&path, damaged), FailureKind::Damaged);
}

#[test]
fn a_salvage_writes_what_was_held_or_else_ends_the_run_as_interrupted() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(1)).unwrap();
    let held = || {
        let mut outage = outage::Outage::default();
        outage.hold(vec![
            started(run, 1, 1, 1),
            StoreEvent::RunEnded { run, ended_at: 9.0, status: RunStatus::Finished },
            big_end(run, 1, 64),
        ]);
        outage
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut on_commit: OnCommit = {
        let seen = seen.clone();
        Box::new(move |batch: &[StoreEvent]| seen.lock().unwrap().extend_from_slice(batch))
    };
    // Still no room for the held events: only the run's end lands, as interrupted.
    held().salvage(&mut full_journal(&path), &mut on_commit);
    let ended = StoreEvent::RunEnded { run, ended_at: 9.0, status: RunStatus::Interrupted };
    assert_eq!(*seen.lock().unwrap(), [ended]);
    assert_eq!(store.run(run).unwrap().status, RunStatus::Interrupted);
    assert_eq!(store.tasks(run, None).unwrap()[0].status, TaskStatus::Queued);
    // Room again: everything held lands, in order, the end last, as it was sent.
    seen.lock().unwrap().clear();
    held().salvage(&mut journal(&path), &mut on_commit);
    let kinds: Vec<_> = seen.lock().unwrap().iter().map(std::mem::discriminant).collect();
    let expected: Vec<_> = [
        started(run, 1, 1, 1),
        big_end(run, 1, 64),
        StoreEvent::RunEnded { run, ended_at: 9.0, status: RunStatus::Finished },
    ]
    .iter()
    .map(std::mem::discriminant)
    .collect();
    assert_eq!(kinds, expected);
    assert_eq!(store.run(run).unwrap().status, RunStatus::Finished);
    assert_eq!(store.tasks(run, None).unwrap()[0].stdout.len(), 64 << 10);
}

#[test]
fn past_the_most_held_events_a_finished_run_is_recorded_interrupted() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let run = new_run(&store);
    store.insert_tasks(run, &new_tasks(1)).unwrap();
    let mut outage = outage::Outage::default();
    outage.hold((0..=outage::MAX_HELD).map(|_| StoreEvent::TaskCancelled { run, task: 1 }));
    outage.hold([StoreEvent::RunEnded { run, ended_at: 9.0, status: RunStatus::Finished }]);
    let mut on_commit: OnCommit = Box::new(|_: &[StoreEvent]| {});
    outage.salvage(&mut journal(&path), &mut on_commit);
    assert_eq!(store.run(run).unwrap().status, RunStatus::Interrupted, "its record is not whole");
}

/// The files of a store (the database, its log, its `-shm`), or `None` where absent.
fn store_files(path: &Path) -> [Option<Vec<u8>>; 3] {
    ["", "-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        std::fs::read(PathBuf::from(name)).ok()
    })
}

/// Puts `files` (as [`store_files`] gives them) in place at `path`.
fn put_store_files(path: &Path, files: &[Option<Vec<u8>>; 3]) {
    for (suffix, bytes) in ["", "-wal", "-shm"].iter().zip(files) {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        match bytes {
            Some(bytes) => std::fs::write(PathBuf::from(name), bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(PathBuf::from(name));
            }
        }
    }
}

/// What a shoal that could not open the store on a full disk leaves (an empty log and
/// a `-shm` of 3 bytes), the stale `-shm` of a killed one, and either file alone: a
/// report reads the store past each of them, trusting no index that no live writer
/// keeps, and writes nothing. (SQLite grew the 3-byte file to 32 KiB, which on a full
/// disk failed with "disk I/O error", rewrote a stale index, and created a `-shm`
/// beside a lone log.)
#[test]
fn a_report_reads_past_a_short_or_stale_shm_and_writes_nothing() {
    let (dir, path) = temp();
    // A killed shoal: its log holds the last three runs, its -shm indexes them.
    let live = dir.path().join("live.db");
    let store = Store::open(&live).unwrap();
    for _ in 0..3 {
        let run = new_run(&store);
        store.insert_tasks(run, &new_tasks(2)).unwrap();
    }
    let killed = store_files(&live);
    drop(store);
    let [Some(db), Some(log), Some(index)] = killed.clone() else {
        panic!("a live store has its log and -shm")
    };
    assert!(log.len() > 32 && index.len() >= 32 << 10, "{} {}", log.len(), index.len());
    let garbage = vec![0xa5; index.len()];
    // The same store closed cleanly: everything is in the file.
    let closed = {
        let store = Store::open(&live).unwrap();
        drop(store);
        store_files(&live)
    };
    assert!(closed[1].is_none() && closed[2].is_none(), "closed cleanly: no log, no -shm");
    let clean = closed[0].clone();
    let cases = [
        ("full-disk leftovers", [clean.clone(), Some(vec![]), Some(vec![0; 3])]),
        ("a stale index", [clean.clone(), Some(vec![]), Some(garbage.clone())]),
        ("an empty log alone", [clean.clone(), Some(vec![]), None]),
        ("a short index alone", [clean.clone(), None, Some(vec![0; 3])]),
        ("a killed shoal's files", [Some(db.clone()), Some(log.clone()), Some(index.clone())]),
        ("its log with a short index", [Some(db.clone()), Some(log.clone()), Some(vec![0; 3])]),
        ("its log with a stale index", [Some(db), Some(log), Some(garbage)]),
    ];
    for (what, files) in cases {
        put_store_files(&path, &files);
        let store = Store::open_read_only(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        let totals: Vec<u64> = store.runs().unwrap().iter().map(|r| r.total).collect();
        assert_eq!(totals, [2, 2, 2], "{what}: every commit is read");
        drop(store);
        assert!(store_files(&path) == files, "{what}: a report wrote into the store's files");
    }
}

#[test]
fn a_streaming_runs_input_is_open_until_it_ends_and_an_old_store_reads_as_closed() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let new = NewRun {
        command: vec!["job".into()],
        options: serde_json::json!({}),
        cwd: "/tmp".into(),
        memory_limit_mode: None,
    };
    let hold = store.create_streaming_run(&new, &new_tasks(2)).unwrap();
    let run = hold.run();
    let listed = |store: &Store| {
        let runs = store.runs().unwrap();
        (runs[0].total, runs[0].input_open)
    };
    let mut feed = store.follow(run).unwrap();
    assert!(feed.progress().input_open);
    assert_eq!(listed(&store), (2, true));
    write_all(&store, vec![StoreEvent::TasksAdded { run, tasks: new_tasks(3).split_off(2) }])
        .0
        .unwrap();
    assert_eq!(listed(&store), (3, true), "the total grows as the input is read");
    write_all(&store, vec![StoreEvent::InputEnded { run }]).0.unwrap();
    assert_eq!(listed(&store), (3, false));
    feed.poll().unwrap();
    assert_eq!((feed.progress().total, feed.progress().input_open), (3, false));
    // A run's end closes its input too.
    let other = store.create_streaming_run(&new, &[]).unwrap();
    let ended =
        StoreEvent::RunEnded { run: other.run(), ended_at: 1.0, status: RunStatus::Interrupted };
    write_all(&store, vec![ended]).0.unwrap();
    assert!(!store.runs().unwrap()[1].input_open);
    drop((hold, other, feed, store));

    // A version 4 store has no such column: read as it is, every input reads closed;
    // migrated, the same.
    downgrade(&path, 4);
    let old = Store::open_read_only(&path).unwrap();
    assert!(old.runs().unwrap().iter().all(|r| !r.input_open));
    assert!(!old.follow(run).unwrap().progress().input_open);
    drop(old);
    let store = Store::open(&path).unwrap();
    assert_eq!(pragma::<i64>(&path, "user_version"), SCHEMA_VERSION);
    assert!(store.runs().unwrap().iter().all(|r| !r.input_open));
}
