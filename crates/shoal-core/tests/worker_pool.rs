//! The worker pool with real processes: the reference Python worker of
//! `docs/protocol.md` (extracted from the doc, so the doc's worker is proven to work)
//! runs calls of `eval`, and the tests crash, hang, stop and garble workers.

use std::collections::HashSet;
use std::ffi::OsString;
use std::time::{Duration, Instant};

use shoal_core::store::{RunStatus, Store};
use shoal_core::workers::{Failure, PoolConfig, PoolStore, TaskEvent, TaskSpec, WorkerPool};
use shoal_core::TaskMeta;
use shoal_core::TaskStatus;

/// The reference worker from the protocol doc, written to a temporary file.
fn reference_worker(dir: &tempfile::TempDir) -> Vec<OsString> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md"))
            .expect("docs/protocol.md");
    let section = doc.split("## A reference worker in Python").nth(1).expect("the section");
    let code =
        section.split("```python\n").nth(1).and_then(|c| c.split("```").next()).expect("code");
    let path = dir.path().join("worker.py");
    std::fs::write(&path, code).expect("write the worker");
    vec!["python3".into(), path.into()]
}

/// A payload the reference worker runs: `eval(expr)`, pickled (protocol 0).
fn call(expr: &str) -> Vec<u8> {
    assert!(!expr.contains(['\n', '\\']), "kept simple for protocol 0");
    format!("(c__builtin__\neval\n(V{expr}\ntt.").into_bytes()
}

fn task(expr: &str, meta: TaskMeta) -> TaskSpec {
    TaskSpec { payload: call(expr), label: format!("eval({expr:?})"), meta }
}

fn config(dir: &tempfile::TempDir, workers: usize) -> PoolConfig {
    let mut config = PoolConfig::new(reference_worker(dir), workers);
    config.retry_delay = Duration::from_millis(10);
    config
}

/// Collects exactly `n` events, failing the test after `limit`.
fn collect(pool: &WorkerPool, n: usize, limit: Duration) -> Vec<TaskEvent> {
    let deadline = Instant::now() + limit;
    let mut events = Vec::new();
    while events.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {} of {n} events after {limit:?}: {events:?}", events.len());
        events.extend(pool.next_events(Some(left), usize::MAX));
    }
    assert_eq!(events.len(), n, "more events than tasks: {events:?}");
    events
}

fn contains(payload: &[u8], text: &str) -> bool {
    payload.windows(text.len()).any(|w| w == text.as_bytes())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn runs_every_task_once_and_returns_results() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 2)).unwrap();
    let specs =
        (0..200).map(|i| task(&format!("'r-{i}-' + str({i} * 2)"), TaskMeta::default())).collect();
    let first = pool.submit(specs).unwrap();
    let events = collect(&pool, 200, Duration::from_secs(30));
    let ids: HashSet<u64> = events.iter().map(|e| e.task).collect();
    assert_eq!(ids, (first..first + 200).collect(), "each task exactly once");
    for e in &events {
        let i = e.task - first;
        assert_eq!(e.status, TaskStatus::Succeeded, "{e:?}");
        assert!(contains(&e.payload, &format!("r-{i}-{}", i * 2)), "{e:?}");
        assert!((1..=2).contains(&e.worker));
    }
    let stats = pool.stats();
    assert_eq!(stats.finished, 200);
    assert_eq!(stats.workers.iter().map(|w| w.tasks).sum::<u64>(), 200);
    pool.close();
    assert!(pool.join(Some(Duration::from_secs(10))), "close drains and ends");
    assert!(stats.workers.iter().all(|w| !alive(w.pid)), "no worker outlives the pool");
}

#[test]
fn an_exception_is_the_answer_and_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 1)).unwrap();
    pool.submit(vec![task("1/0", TaskMeta { retries: 3, ..TaskMeta::default() })]).unwrap();
    let e = &collect(&pool, 1, Duration::from_secs(20))[0];
    assert_eq!((e.status, e.failure), (TaskStatus::Failed, Some(Failure::Raised)));
    assert_eq!(e.attempts, 1);
    assert!(e.message.contains("ZeroDivisionError"), "{}", e.message);
    assert_eq!(pool.stats().workers[0].restarts, 0, "the worker survives");
}

#[test]
fn a_killed_worker_fails_only_its_task_after_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 2)).unwrap();
    let kill = "__import__('os').kill(__import__('os').getpid(), 9)";
    let first =
        pool.submit(vec![task(kill, TaskMeta { retries: 1, ..TaskMeta::default() })]).unwrap();
    let others = (0..20).map(|i| task(&format!("'ok-{i}'"), TaskMeta::default())).collect();
    pool.submit(others).unwrap();
    let events = collect(&pool, 21, Duration::from_secs(30));
    let killed = events.iter().find(|e| e.task == first).unwrap();
    assert_eq!(killed.status, TaskStatus::Crashed);
    assert_eq!(killed.attempts, 2, "retried once");
    assert!(killed.message.contains("SIGKILL"), "{}", killed.message);
    assert!(events.iter().filter(|e| e.task != first).all(|e| e.status == TaskStatus::Succeeded));
    assert!(pool.stats().workers.iter().map(|w| w.restarts).sum::<u64>() >= 2);
}

#[test]
fn a_timeout_kills_the_worker_and_the_pool_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 1)).unwrap();
    let timeout =
        TaskMeta { timeout: Some(Duration::from_millis(500)), retries: 2, ..TaskMeta::default() };
    let started = Instant::now();
    let hung = pool.submit(vec![task("__import__('time').sleep(60)", timeout)]).unwrap();
    pool.submit(vec![task("'after'", TaskMeta::default())]).unwrap();
    let events = collect(&pool, 2, Duration::from_secs(20));
    let e = events.iter().find(|e| e.task == hung).unwrap();
    assert_eq!(e.status, TaskStatus::TimedOut, "{e:?}");
    assert_eq!(e.attempts, 1, "a timeout is not retried");
    assert!(e.message.contains("timeout of 0.5 s"), "{}", e.message);
    assert!(started.elapsed() < Duration::from_secs(10));
    let after = events.iter().find(|e| e.task != hung).unwrap();
    assert_eq!(after.status, TaskStatus::Succeeded);
}

#[test]
fn a_worker_that_stops_answering_is_killed_and_its_task_retried() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1);
    config.heartbeat = Duration::from_millis(100);
    config.heartbeat_timeout = Duration::from_millis(600);
    let pool = WorkerPool::start(config).unwrap();
    let stop = "__import__('os').kill(__import__('os').getpid(), 19)"; // SIGSTOP
    let stopped =
        pool.submit(vec![task(stop, TaskMeta { retries: 1, ..TaskMeta::default() })]).unwrap();
    pool.submit(vec![task("'fine'", TaskMeta::default())]).unwrap();
    let events = collect(&pool, 2, Duration::from_secs(20));
    let e = events.iter().find(|e| e.task == stopped).unwrap();
    assert_eq!(e.status, TaskStatus::Crashed);
    assert_eq!(e.attempts, 2);
    assert!(e.message.contains("stopped answering"), "{}", e.message);
    assert!(events.iter().any(|e| e.task != stopped && e.status == TaskStatus::Succeeded));
}

#[test]
fn a_failing_initializer_fails_every_task_without_respawning() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 2);
    config.init = Some(call("1/0"));
    let pool = WorkerPool::start(config).unwrap();
    pool.submit((0..5).map(|_| task("1", TaskMeta::default())).collect()).unwrap();
    let events = collect(&pool, 5, Duration::from_secs(20));
    for e in &events {
        assert_eq!((e.status, e.failure), (TaskStatus::Failed, Some(Failure::InitFailed)));
        assert!(e.message.contains("ZeroDivisionError"), "{}", e.message);
    }
    pool.submit(vec![task("1", TaskMeta::default())]).unwrap();
    let later = &collect(&pool, 1, Duration::from_secs(5))[0];
    assert_eq!(later.failure, Some(Failure::InitFailed));
    let started: u64 = pool.stats().workers.iter().map(|w| w.restarts).sum();
    assert_eq!(started, 0, "no respawn loop");
}

#[test]
fn workers_that_cannot_start_or_speak_garbage_fail_the_tasks_clearly() {
    for argv in [
        vec!["/bin/false".into()],
        vec![
            "python3".into(),
            "-c".into(),
            "import os; os.write(int(os.environ['SHOAL_WORKER_FD']), b'\\xff\\xff\\xff\\xffgarbage')".into(),
        ],
    ] {
        let pool = WorkerPool::start(PoolConfig::new(argv, 1)).unwrap();
        pool.submit(vec![TaskSpec { payload: b"x".to_vec(), ..TaskSpec::default() }]).unwrap();
        let e = &collect(&pool, 1, Duration::from_secs(20))[0];
        assert_eq!((e.status, e.failure), (TaskStatus::Failed, Some(Failure::Refused)));
        assert!(e.message.contains("workers fail to start"), "{}", e.message);
    }
}

/// A worker that cannot even be started (here: pinned to a CPU this machine does not
/// have) is tried again until the failures break the pool, with one worker too; a
/// CPU no CPU set can name is refused up front.
#[test]
fn a_worker_that_cannot_be_started_fails_the_tasks_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let mut missing_cpu = config(&dir, 1);
    missing_cpu.cpus = Some(vec![1000]);
    let pool = WorkerPool::start(missing_cpu).unwrap();
    pool.submit(vec![task("1", TaskMeta::default())]).unwrap();
    let e = &collect(&pool, 1, Duration::from_secs(20))[0];
    assert_eq!((e.status, e.failure), (TaskStatus::Failed, Some(Failure::Refused)));
    assert!(e.message.contains("workers fail to start"), "{}", e.message);

    let mut unnamable_cpu = config(&dir, 1);
    unnamable_cpu.cpus = Some(vec![1 << 40]);
    let refused = WorkerPool::start(unnamable_cpu).err().expect("refused");
    assert!(refused.to_string().contains("CPU 1099511627776"), "{refused}");
}

#[test]
fn workers_are_recycled_after_max_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1);
    config.max_tasks_per_worker = Some(2);
    let pool = WorkerPool::start(config).unwrap();
    pool.submit(
        (0..6).map(|_| task("str(__import__('os').getpid())", TaskMeta::default())).collect(),
    )
    .unwrap();
    let events = collect(&pool, 6, Duration::from_secs(30));
    let pids: HashSet<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(pids.len(), 3, "three workers of two tasks each");
}

#[test]
fn terminate_cancels_the_rest_and_leaves_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 2)).unwrap();
    pool.submit(
        (0..6).map(|_| task("__import__('time').sleep(30)", TaskMeta::default())).collect(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().running < 2 {
        assert!(Instant::now() < deadline, "the workers never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<u32> = pool.stats().workers.iter().map(|w| w.pid).collect();
    pool.terminate();
    let events = collect(&pool, 6, Duration::from_secs(5));
    assert!(events.iter().all(|e| e.status == TaskStatus::Cancelled), "{events:?}");
    assert!(pool.join(Some(Duration::from_secs(5))));
    // Ended, so this returns at once: a timeout past the clock's end is no timeout.
    assert!(pool.join(Some(Duration::MAX)));
    assert!(pids.iter().all(|&pid| pid != 0 && !alive(pid)), "workers {pids:?} are gone");
    assert!(pool.submit(vec![task("1", TaskMeta::default())]).is_err());
}

#[test]
fn cancel_ends_a_queued_task_and_bad_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 1)).unwrap();
    let slow =
        pool.submit(vec![task("__import__('time').sleep(0.5)", TaskMeta::default())]).unwrap();
    let queued = pool.submit(vec![task("1", TaskMeta::default())]).unwrap();
    assert!(pool.cancel(queued), "still queued: in time");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().running < 1 {
        assert!(Instant::now() < deadline, "the first task never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!pool.cancel(slow), "a worker has it: too late");
    let events = collect(&pool, 2, Duration::from_secs(20));
    assert_eq!(events.iter().find(|e| e.task == slow).unwrap().status, TaskStatus::Succeeded);
    assert_eq!(events.iter().find(|e| e.task == queued).unwrap().status, TaskStatus::Cancelled);

    assert!(WorkerPool::start(PoolConfig::new(vec!["python3".into()], 0)).is_err());
    let missing = WorkerPool::start(PoolConfig::new(vec!["no-such-worker-shoal".into()], 1));
    assert!(missing.err().unwrap().to_string().contains("no-such-worker-shoal"));
}

#[test]
fn a_stored_pool_records_every_task_and_reuses_keyed_results() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let keyed = |key: &str| TaskMeta { key: Some(key.into()), ..TaskMeta::default() };
    let run_pool = |exprs: &[(&str, TaskMeta)]| {
        let mut config = config(&dir, 2);
        config.store = Some(PoolStore {
            address: path.clone().into(),
            command: vec!["test".into()],
            refusals: false,
        });
        let pool = WorkerPool::start(config).unwrap();
        let first = pool.submit(exprs.iter().map(|(e, m)| task(e, m.clone())).collect()).unwrap();
        let mut events = collect(&pool, exprs.len(), Duration::from_secs(30));
        events.sort_by_key(|e| e.task);
        pool.close();
        assert!(pool.join(Some(Duration::from_secs(10))));
        (first, events)
    };
    let pid = "str(__import__('os').getpid())";
    let (_, before) =
        run_pool(&[(pid, keyed("a")), ("1/0", keyed("b")), ("'plain'", TaskMeta::default())]);
    assert_eq!(
        before.iter().map(|e| (e.status, e.failure)).collect::<Vec<_>>(),
        [
            (TaskStatus::Succeeded, None),
            (TaskStatus::Failed, Some(Failure::Raised)),
            (TaskStatus::Succeeded, None)
        ]
    );

    // Again: "a" succeeded before, so its stored result comes back without running;
    // "b" failed, so it runs again.
    let (_, after) = run_pool(&[(pid, keyed("a")), ("1/0", keyed("b"))]);
    assert_eq!(after[0].status, TaskStatus::Succeeded);
    assert_eq!(after[0].payload, before[0].payload, "the stored result, not a new pid");
    assert_eq!(after[0].attempts, 0, "it did not run");
    assert_eq!((after[1].failure, after[1].attempts), (Some(Failure::Raised), 1));

    let store = Store::open(&path).unwrap();
    let runs = store.runs().unwrap();
    assert_eq!(runs.len(), 2);
    let first_run = store.tasks(runs[0].id.min(runs[1].id), None).unwrap();
    let statuses: Vec<_> = first_run.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [TaskStatus::Succeeded, TaskStatus::Failed, TaskStatus::Succeeded]);
    assert!(contains(&first_run[1].stderr, "ZeroDivisionError"), "the traceback is kept");
    assert_eq!(first_run[0].attempts, 1);
    let second_run = store.tasks(runs[0].id.max(runs[1].id), None).unwrap();
    assert_eq!((second_run[0].status, second_run[0].attempts), (TaskStatus::Succeeded, 0));
}

/// A front end that decodes results after it reads them may refuse one (it does not
/// decode): before the pool ended, and after (the record waits for `close_record`).
/// Either way the store says the task failed, and its result is never reused by key.
#[test]
fn a_refused_result_is_stored_failed_before_and_after_the_pool_ended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pool.db");
    let mut config = config(&dir, 1);
    config.store =
        Some(PoolStore { address: path.clone().into(), command: vec!["t".into()], refusals: true });
    let pool = WorkerPool::start(config).unwrap();
    let keyed = TaskMeta { key: Some("k".into()), ..TaskMeta::default() };
    let first = pool.submit(vec![task("'early'", keyed.clone())]).unwrap();
    collect(&pool, 1, Duration::from_secs(30));
    pool.refused(first, "refused early".into());
    let last = pool.submit(vec![task("'late'", keyed)]).unwrap();
    collect(&pool, 1, Duration::from_secs(30));
    pool.close();
    assert!(pool.join(Some(Duration::from_secs(10))));
    pool.refused(last, "refused late".into()); // the driver has ended
    pool.close_record();

    let store = Store::open(&path).unwrap();
    let run = store.runs().unwrap()[0].id;
    let tasks = store.tasks(run, None).unwrap();
    for (task, reason) in tasks.iter().zip(["refused early", "refused late"]) {
        assert_eq!(task.status, TaskStatus::Failed, "{reason}");
        assert!(contains(&task.stderr, reason), "{reason}");
        let stored = store.stored_result("k", &task.command).unwrap();
        assert_eq!(stored, None, "{reason}: no result left to reuse");
    }
    assert_eq!(store.runs().unwrap()[0].status, RunStatus::Finished);
}

/// A worker that dies with a frame still unread in its socket (here the Shutdown of
/// a worker recycled after each task, sent with its Run) resets the channel: that is
/// its death, not a protocol error, and the task fails with the signal that killed it.
#[test]
fn a_worker_killed_with_a_frame_unread_is_reported_by_its_signal() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&dir, 1);
    config.max_tasks_per_worker = Some(1);
    let pool = WorkerPool::start(config).unwrap();
    let kill = "__import__('os').kill(__import__('os').getpid(), 9)";
    let once = TaskMeta { retries: 0, ..TaskMeta::default() };
    let killed = pool.submit(vec![task(kill, once)]).unwrap();
    pool.submit(vec![task("'after'", TaskMeta::default())]).unwrap();
    let events = collect(&pool, 2, Duration::from_secs(30));
    let e = events.iter().find(|e| e.task == killed).unwrap();
    assert_eq!((e.status, e.attempts), (TaskStatus::Crashed, 1), "{e:?}");
    assert!(e.message.contains("killed by signal 9 (SIGKILL)"), "{}", e.message);
    let after = events.iter().find(|e| e.task != killed).unwrap();
    assert_eq!(after.status, TaskStatus::Succeeded, "the pool goes on: {after:?}");
}

/// A worker that shuts its channel but does not exit is killed a grace period later
/// (not left until the hang check, which here would take 30 s), its task failed with
/// the reason.
#[test]
fn a_worker_that_closes_its_channel_and_lingers_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pool = WorkerPool::start(config(&dir, 1)).unwrap();
    // The reference worker evaluates in its own globals: `sock` is its channel. Its
    // stderr goes first, so that its heartbeat thread dies quietly.
    let os = "__import__('os')";
    let close = format!(
        "({os}.dup2({os}.open('/dev/null', 1), 2), sock.shutdown(2), __import__('time').sleep(60))"
    );
    let closed = pool.submit(vec![task(&close, TaskMeta { retries: 0, ..TaskMeta::default() })]);
    let e = &collect(&pool, 1, Duration::from_secs(20))[0];
    assert_eq!(e.task, closed.unwrap());
    assert_eq!(e.status, TaskStatus::Crashed, "{e:?}");
    assert!(e.message.contains("closed its channel but did not exit"), "{}", e.message);
}
