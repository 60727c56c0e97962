//! Steering a live `shoal run` from another process through the store: `shoal
//! cancel`, `pause`, `unpause` and `jobs`, each against a real run of real tasks,
//! counted through marker files the tasks write; and every request refused with a
//! clear message and exit status 2 where it cannot apply. The steering itself is
//! tested on a SQLite and on a PostgreSQL store.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{int_of, read_pids, str_of, task, wait_for, Env, Running, HANG};
use shoal_core::store::{ControlAction, Store};

both_stores!(
    cancel_of_a_whole_run_stops_it_promptly_as_a_ctrl_c_does,
    cancel_of_one_running_and_one_queued_task_lets_the_rest_run,
    pause_starts_no_new_task_until_unpause,
    jobs_adds_slots_at_once_and_takes_them_away_as_their_tasks_end,
    a_request_is_recorded_with_who_asked_and_what_the_run_made_of_it,
);

/// Files in `dir` whose name ends with `suffix`.
fn count(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(suffix)).count()
        })
        .unwrap_or(0)
}

/// Runs a control command and expects it taken (exit 0); returns its stdout.
#[track_caller]
fn steer(env: &Env, args: &[&str]) -> String {
    let out = env.run(args);
    out.expect_code(0);
    out.stdout
}

/// Starts `shoal run` of `command` over `inputs` on `jobs` slots, and waits until
/// `running` of its tasks have written their `.on` marker.
fn start(env: &Env, jobs: &str, command: &str, inputs: usize, running: usize) -> Running {
    let numbers: Vec<String> = (1..=inputs).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "-j", jobs, "--no-progress", command, ":::"];
    args.extend(numbers.iter().map(String::as_str));
    let run = env.spawn(&args);
    wait_for("tasks to start", HANG, || (count(env.path(), ".on") >= running).then_some(()));
    run
}

fn cancel_of_a_whole_run_stops_it_promptly_as_a_ctrl_c_does(env: Env) {
    let run = start(&env, "2", "touch {#}.on; exec sleep 30", 20, 2);
    let asked = Instant::now();
    let said = steer(&env, &["cancel", "1"]);
    assert!(said.contains("run 1: stopping the run"), "{said}");
    let out = run.wait(HANG);
    let took = asked.elapsed();
    // Noticed within 100 ms, then SIGTERM ends `sleep` at once; the bound is for busy CI.
    assert!(took < Duration::from_secs(5), "the run took {took:?} to end after the cancel");
    out.expect_code(130);
    assert!(out.stderr.contains("stopping the run"), "{}", out.stderr);
    assert!(out.stderr.contains("2 cancelled"), "{}", out.stderr);
    let runs = env.runs();
    assert_eq!(str_of(&runs[0], "status"), "interrupted");
    let tasks = env.results(&[]);
    let of = |status: &str| tasks.iter().filter(|t| str_of(t, "status") == status).count();
    assert_eq!((of("cancelled"), of("queued")), (2, 18), "{tasks:#?}");
    // As after a Ctrl-C: a resume continues it.
    assert_eq!(count(env.path(), ".on"), 2, "no task started after the cancel");
}

fn cancel_of_one_running_and_one_queued_task_lets_the_rest_run(env: Env) {
    // One slot: task 1 runs (long), task 2 and 3 wait; task 3 is cancelled before it
    // starts, task 1 while it runs, and task 2 then runs to its end.
    let run =
        start(&env, "1", "touch {#}.on; if [ {#} = 2 ]; then exit 0; fi; exec sleep 30", 3, 1);
    let said = steer(&env, &["cancel", "1", "--task", "3", "--task", "1"]);
    assert!(said.contains("task 3 cancelled before it started"), "{said}");
    assert!(said.contains("stopping task 1"), "{said}");
    let out = run.wait(HANG);
    // Cancelled tasks count against the run, as the docs say: exit status 1.
    out.expect_code(1);
    assert!(out.stderr.contains("1 succeeded"), "{}", out.stderr);
    assert!(out.stderr.contains("2 cancelled"), "{}", out.stderr);
    let tasks = env.results(&[]);
    assert_eq!(str_of(task(&tasks, 1), "status"), "cancelled");
    assert_eq!(int_of(task(&tasks, 1), "attempts"), 1);
    assert_eq!(str_of(task(&tasks, 2), "status"), "succeeded");
    assert_eq!(str_of(task(&tasks, 3), "status"), "cancelled");
    assert_eq!(int_of(task(&tasks, 3), "attempts"), 0, "it never started");
    assert!(!env.path().join("3.on").exists(), "task 3 never ran");
    // It went on to its end, but did not run all it was given: interrupted, as a Python
    // pool's run with a cancelled call is (a resume runs the cancelled tasks).
    assert_eq!(str_of(&env.runs()[0], "status"), "interrupted");
    // A watch of it exits as the run did: 1, not the 130 of a stopped run.
    let watched = env.run(&["watch", "1"]);
    watched.expect_code(1);
    assert!(watched.stderr.contains("2 cancelled"), "{}", watched.stderr);
}

fn pause_starts_no_new_task_until_unpause(env: Env) {
    let run = start(&env, "2", "touch {#}.on; sleep 0.3", 8, 1);
    let said = steer(&env, &["pause", "1"]);
    assert!(said.contains("paused"), "{said}");
    // What ran when the pause was taken finishes; nothing starts after.
    std::thread::sleep(Duration::from_millis(700));
    let started = count(env.path(), ".on");
    assert!(started < 8, "some tasks must still wait: {started}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(env.path(), ".on"), started, "a task started while paused");
    assert_eq!(str_of(&env.runs()[0], "status"), "running");
    assert!(steer(&env, &["unpause", "1"]).contains("unpaused"));
    let out = run.wait(HANG);
    out.expect_code(0);
    assert_eq!(count(env.path(), ".on"), 8);
    assert!(out.stderr.contains("paused: no new tasks until unpaused"), "{}", out.stderr);
}

fn jobs_adds_slots_at_once_and_takes_them_away_as_their_tasks_end(env: Env) {
    // Each task is `.on` while it runs and records its slot number.
    let command = "touch {#}.on; echo {%} > {#}.slot; sleep 0.3; rm {#}.on; touch {#}.done";
    let run = start(&env, "1", command, 60, 1);
    let said = steer(&env, &["jobs", "1", "4"]);
    assert!(said.contains("slots 1 -> 4"), "{said}");
    wait_for("4 tasks at once", Duration::from_secs(10), || {
        (count(env.path(), ".on") == 4).then_some(())
    });
    assert!(steer(&env, &["jobs", "1", "2"]).contains("slots 4 -> 2"));
    // The tasks running on the slots taken away finish (0.3 s); then at most 2 run.
    std::thread::sleep(Duration::from_millis(600));
    let done_before = count(env.path(), ".done");
    let watch_until = Instant::now() + Duration::from_secs(1);
    let mut most = 0;
    while Instant::now() < watch_until {
        most = most.max(count(env.path(), ".on"));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most <= 2, "{most} tasks ran at once on 2 slots");
    assert!(count(env.path(), ".done") > done_before, "the run went on");
    run.wait(HANG).expect_code(0);
    // `{%}` stayed within the slots there were: never past 4.
    for n in 1..=60 {
        let slot = std::fs::read_to_string(env.path().join(format!("{n}.slot"))).unwrap();
        let slot: u32 = slot.trim().parse().unwrap();
        assert!((1..=4).contains(&slot), "task {n} ran on slot {slot}");
    }
    let stats = env.stats(&[]);
    let slots: Vec<i64> =
        stats["per_slot"].as_array().unwrap().iter().map(|s| int_of(s, "slot")).collect();
    assert!(slots.contains(&4), "slot 4 did work: {slots:?}");
}

fn a_request_is_recorded_with_who_asked_and_what_the_run_made_of_it(env: Env) {
    let run = start(&env, "1", "touch {#}.on; sleep 0.2", 3, 1);
    steer(&env, &["jobs", "1", "2"]);
    run.wait(HANG).expect_code(0);
    let records = Store::open_read_only(&env.store).unwrap().control_records(1).unwrap();
    let [record] = records.as_slice() else { panic!("one request: {records:#?}") };
    assert!(record.requested_by.starts_with("shoal jobs (pid "), "{record:?}");
    assert_eq!(record.action, ControlAction::SetSlots { slots: 2 });
    assert_eq!(record.result.as_deref(), Some("slots 1 -> 2"));
    assert!(record.applied_at.is_some_and(|at| at >= record.requested_at), "{record:?}");
}

/// Runs a control command that must be refused: exit 2, one line naming what is wrong,
/// nothing on stdout.
#[track_caller]
#[test]
fn jobs_reads_n_as_run_reads_j() {
    let env = Env::new();
    let run = start(&env, "1", "touch {#}.on; exec sleep 30", 4, 1);
    let cores = std::thread::available_parallelism().unwrap().get();
    // `+1` is one more than the cores (as `-j +1`), not one slot.
    let said = steer(&env, &["jobs", "1", "+1"]);
    assert!(said.contains(&format!("slots 1 -> {}", cores + 1)), "{said}");
    let said = steer(&env, &["jobs", "1", "-1"]);
    let fewer = cores.saturating_sub(1).max(1);
    assert!(said.contains(&format!("slots {} -> {fewer}", cores + 1)), "{said}");
    steer(&env, &["cancel", "1"]);
    run.wait(HANG).expect_code(130);
}

fn refused(env: &Env, args: &[&str], says: &str) {
    let out = env.run(args);
    out.expect_code(2);
    assert!(out.stderr.contains(says), "{args:?} said:\n{}", out.stderr);
    assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn refusals_read_as_snapshotted() {
    let env = Env::new();
    let snapshot = |args: &[&str]| {
        let out = env.run(args);
        out.expect_code(2);
        env.redact(&out.stderr)
    };
    insta::assert_snapshot!("control_no_store", snapshot(&["cancel", "1"]));
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    insta::assert_snapshot!("control_ended_run", snapshot(&["jobs", "1", "2"]));
    insta::assert_snapshot!("control_no_such_run", snapshot(&["pause", "5"]));
    insta::assert_snapshot!("control_jobs_zero", snapshot(&["jobs", "1", "0"]));
}

#[test]
fn a_request_to_a_run_that_is_not_live_is_refused() {
    let env = Env::new();
    env.run(&["run", "true", ":::", "a", "b"]).expect_code(0);
    for command in [&["cancel", "1"][..], &["pause", "1"], &["unpause", "1"], &["jobs", "1", "3"]] {
        refused(&env, command, "run 1 has ended (finished)");
    }
    refused(&env, &["pause", "9"], "no run 9 in the store");
    // A run whose shoal was killed is not live either.
    let run = start(&env, "1", "echo $$ > {#}.pid; touch {#}.on; exec sleep 30", 2, 1);
    run.signal(libc::SIGKILL);
    let _ = run.wait(HANG);
    let left = read_pids(&env.file("1.pid"));
    refused(&env, &["cancel", "2"], "run 2 has ended (died)");
    for pid in left {
        // SAFETY: a plain system call on the task the killed shoal left behind.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // Nothing was written for the refused requests.
    let store = Store::open_read_only(&env.store).unwrap();
    for run in [1, 2] {
        assert_eq!(store.control_records(run).unwrap(), []);
    }
}

#[test]
fn bad_control_requests_are_refused_with_exit_2() {
    let env = Env::new();
    refused(&env, &["pause", "1"], "no store at");
    assert!(!env.store.exists(), "a control command creates no store");
    let run = start(&env, "1", "touch {#}.on; exec sleep 30", 2, 1);
    refused(&env, &["cancel", "1", "--task", "7"], "run 1 has no task 7");
    let out = env.run(&["jobs", "1", "0"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("0 (as many as possible) is for a run's start only"),
        "{}",
        out.stderr
    );
    let out = env.run(&["jobs", "1", "x"]);
    out.expect_code(2);
    assert!(out.stderr.contains("invalid value 'x'"), "{}", out.stderr);
    let out = env.run(&["cancel", "one"]);
    out.expect_code(2);
    assert!(out.stderr.contains("invalid value 'one'"), "{}", out.stderr);
    steer(&env, &["cancel", "1", "--task", "2"]);
    refused(&env, &["cancel", "1", "--task", "2"], "task 2 of run 1 has ended (cancelled)");
    steer(&env, &["cancel", "1"]);
    run.wait(HANG).expect_code(130);
}

#[test]
fn a_store_that_cannot_be_written_is_refused() {
    let mut env = Env::new();
    let dir = env.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    env.store = dir.join("s.db");
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    // Root ignores permission bits: the directory is made immutable instead, where the
    // machine allows it.
    let made = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        eprintln!("skipped: chattr +i is not possible here");
        return;
    }
    let out = env.run(&["pause", "1"]);
    let _ = std::process::Command::new("chattr").arg("-i").arg(&dir).status();
    out.expect_code(2);
    assert!(out.stderr.contains("is not writable"), "{}", out.stderr);
}

#[test]
fn jobs_grows_no_further_than_the_memory_limits_cgroups() {
    let env = Env::new();
    let numbers: Vec<String> = (1..=6).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "-j", "1", "--no-progress", "--memory-limit", "64M"];
    args.extend(["touch {#}.on; sleep 0.3", ":::"]);
    args.extend(numbers.iter().map(String::as_str));
    let run = env.spawn(&args);
    wait_for("a task to start", HANG, || (count(env.path(), ".on") >= 1).then_some(()));
    let said = steer(&env, &["jobs", "1", "3"]);
    run.wait(HANG).expect_code(0);
    let mode = env.stats(&[])["memory_limit_mode"].as_str().unwrap_or_default().to_owned();
    if mode.starts_with("cgroup") {
        // One cgroup per slot was made at the start: a slot past them would be unlimited.
        let expected = "slots 1 -> 1 (not 3: the memory limit's cgroups were made for them)";
        assert!(said.contains(expected), "{mode}: {said}");
    } else {
        assert!(said.contains("slots 1 -> 3"), "{mode}: {said}");
    }
}
