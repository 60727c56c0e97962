//! Unit tests of control requests in the SQLite backend: recorded, refused, found by
//! the feed once and cheaply, applied through the writer, migrated, dropped on resume;
//! what does not depend on SQLite, on each backend.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::control::SqliteFeed;
use crate::error::Error;
use crate::store::control::MAX_SLOTS;
use crate::store::test_support::{both_backends, fresh_store, live_run, temp, write, Backend};
use crate::store::*;
use crate::task::TaskStatus;

both_backends!(
    an_applied_request_is_recorded_with_its_result_and_never_handed_over_again,
    request_waits_until_the_run_takes_it_and_returns_what_it_made_of_it,
    a_request_that_cannot_apply_is_refused_and_writes_nothing,
    a_resume_drops_the_requests_its_dead_shoal_never_took,
);

/// Records `actions` without waiting for a run to take them.
fn ask(store: &Store, run: i64, actions: &[ControlAction]) {
    match store.request(run, actions, "test", Duration::ZERO) {
        Err(Error::ControlNotTaken { .. }) => {}
        other => panic!("expected the request recorded and not taken: {other:?}"),
    }
}

#[test]
fn the_feed_hands_over_each_request_once_and_reads_nothing_while_nothing_changes() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let (run, _lock) = live_run(&store, 3);
    let (other, _other_lock) = live_run(&store, 1);
    let mut feed = SqliteFeed::open(&path, run).unwrap();
    assert_eq!(feed.poll().unwrap(), []);
    let actions = [
        ControlAction::Pause,
        ControlAction::SetSlots { slots: 3 },
        ControlAction::CancelTask { task: 2 },
    ];
    ask(&store, run, &actions);
    ask(&store, other, &[ControlAction::CancelRun]);
    let found = feed.poll().unwrap();
    assert_eq!(found.iter().map(|r| r.action).collect::<Vec<_>>(), actions, "in order, its run's");
    assert!(found.iter().all(|r| r.run == run));
    assert_eq!(feed.poll().unwrap(), [], "each once");
    ask(&store, run, &[ControlAction::Unpause]);
    let found = feed.poll().unwrap();
    assert_eq!(found.iter().map(|r| r.action).collect::<Vec<_>>(), [ControlAction::Unpause]);
    // Idle polls read the change counter only, never the table.
    let reads = feed.reads();
    for _ in 0..1000 {
        assert_eq!(feed.poll().unwrap(), []);
    }
    assert_eq!(feed.reads(), reads, "an idle poll read the table");
    ask(&store, run, &[ControlAction::Pause]);
    assert_eq!(feed.poll().unwrap().len(), 1);
    assert_eq!(feed.reads(), reads + 1, "a change is read once");
}

fn an_applied_request_is_recorded_with_its_result_and_never_handed_over_again(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _lock) = live_run(&store, 2);
    ask(&store, run, &[ControlAction::SetSlots { slots: 4 }]);
    let id = store.control_feed(run).unwrap().poll().unwrap()[0].id;
    let result = "slots 1 -> 4".to_owned();
    write(&store, vec![StoreEvent::ControlApplied { request: id, applied_at: 5.0, result }]);
    let records = store.control_records(run).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].action, ControlAction::SetSlots { slots: 4 });
    assert_eq!(records[0].requested_by, "test");
    assert_eq!(records[0].applied_at, Some(5.0));
    assert_eq!(records[0].result.as_deref(), Some("slots 1 -> 4"));
    assert_eq!(store.control_feed(run).unwrap().poll().unwrap(), [], "a new feed skips it");
}

fn request_waits_until_the_run_takes_it_and_returns_what_it_made_of_it(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, _lock) = live_run(&store, 1);
    // The run's side: a watcher, and the writer recording what it applied.
    let applier = {
        let store = Store::open(store.address()).unwrap();
        std::thread::spawn(move || {
            let mut watcher = store.watch_controls(run).unwrap();
            let start = Instant::now();
            let request = loop {
                if let Ok(request) = watcher.requests().try_recv() {
                    break request;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "never handed over");
                std::thread::sleep(Duration::from_millis(5));
            };
            let result = "paused".to_owned();
            write(
                &store,
                vec![StoreEvent::ControlApplied {
                    request: request.id,
                    applied_at: unix_now(),
                    result,
                }],
            );
        })
    };
    let asked = Instant::now();
    let records = store.request(run, &[ControlAction::Pause], "test", Duration::from_secs(20));
    let took = asked.elapsed();
    applier.join().unwrap();
    let records = records.unwrap();
    assert_eq!(records[0].result.as_deref(), Some("paused"));
    // Noticed within a poll (50 ms) plus a commit; generous for a busy machine.
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

fn a_request_that_cannot_apply_is_refused_and_writes_nothing(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, lock) = live_run(&store, 2);
    let refuse = |run, action| store.request(run, &[action], "test", Duration::ZERO).unwrap_err();
    assert!(matches!(refuse(9, ControlAction::Pause), Error::NoSuchRun { run: 9 }));
    let e = refuse(run, ControlAction::CancelTask { task: 7 });
    assert_eq!(e.to_string(), format!("run {run} has no task 7"));
    let e = refuse(run, ControlAction::SetSlots { slots: 0 });
    assert!(matches!(e, Error::InvalidConfig { what: "slots", .. }), "{e}");
    let e = refuse(run, ControlAction::SetSlots { slots: MAX_SLOTS + 1 });
    assert!(e.to_string().contains("must be from 1 to 4096"), "{e}");
    write(&store, vec![StoreEvent::TaskCancelled { run, task: 2 }]);
    let e = refuse(run, ControlAction::CancelTask { task: 2 });
    assert_eq!(e.to_string(), format!("task 2 of run {run} has ended (cancelled)"));
    drop(lock);
    let e = refuse(run, ControlAction::Pause);
    assert!(matches!(e, Error::RunEnded { status: RunStatus::Died, .. }), "{e}");
    assert!(e.to_string().starts_with(&format!("run {run} has ended (died)")), "{e}");
    write(
        &store,
        vec![StoreEvent::RunEnded { run, ended_at: 1.0, status: RunStatus::Interrupted }],
    );
    let e = refuse(run, ControlAction::CancelRun);
    assert!(matches!(e, Error::RunEnded { status: RunStatus::Interrupted, .. }), "{e}");
    assert_eq!(store.control_records(run).unwrap(), []);
}

#[test]
fn a_version_3_store_is_migrated_and_takes_requests() {
    let (_dir, path) = temp();
    drop(Store::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "ALTER TABLE runs DROP COLUMN input_open; DROP TABLE control; \
             PRAGMA user_version = 3;",
        )
        .unwrap();
    // A report reads it as it is, with no requests.
    let old = Store::open_read_only(&path).unwrap();
    assert_eq!(old.control_records(1).unwrap(), []);
    drop(old);
    let store = Store::open(&path).unwrap();
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let (run, _lock) = live_run(&store, 1);
    ask(&store, run, &[ControlAction::Pause]);
    assert_eq!(store.control_records(run).unwrap().len(), 1);
}

fn a_resume_drops_the_requests_its_dead_shoal_never_took(backend: Backend) {
    let (_dir, store) = fresh_store(backend);
    let (run, lock) = live_run(&store, 2);
    ask(&store, run, &[ControlAction::CancelRun]);
    drop(lock); // the shoal died before it took it
    store.prepare_resume(run).unwrap();
    let pending = store.unsucceeded_tasks(run, 0, 10).unwrap();
    assert!(pending.iter().all(|t| t.status == TaskStatus::Queued));
    let records = store.control_records(run).unwrap();
    assert_eq!(records[0].result.as_deref(), Some("dropped: the run had died"));
    let _hold = store.hold_run(run).unwrap();
    assert_eq!(store.control_feed(run).unwrap().poll().unwrap(), [], "the resume skips it");
}
