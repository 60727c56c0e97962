//! Reliability of `shoal run` with real processes and real kills: timeouts that take
//! the task's whole process group down, crashes and retries, memory limits, `kill -9`
//! of shoal itself followed by `--resume`, and SIGINT.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{
    alive, assert_all_dead, int_of, json_lines, read_pids, run_command, str_of, task, wait_for, Env,
};
use serde_json::Value;

/// A task script: with input `hang` it starts children that all ignore SIGTERM, one
/// of them in a session of its own (out of the task's process group), and records
/// every pid; with any other input it prints `ran INPUT`.
fn hang_script(env: &Env) -> String {
    let pids = env.file("pids");
    env.write(
        "hang.sh",
        &format!(
            r#"if [ "$1" != hang ]; then echo "ran $1"; exit 0; fi
trap "" TERM
echo $$ >> {pids}
sh -c 'trap "" TERM; sleep 1000 & echo $! >> "$1"; echo $$ >> "$1"; wait' _ {pids} &
sleep 1000 &
echo $! >> {pids}
setsid sh -c 'trap "" TERM; echo $$ >> "$1"; exec sleep 1000' _ {pids} &
wait
"#
        ),
    )
}

#[test]
fn a_hung_task_ignoring_sigterm_is_killed_with_all_its_children_and_the_queue_goes_on() {
    let env = Env::new();
    let script = hang_script(&env);
    let out = env.run(&[
        "run",
        "-j1",
        "--timeout",
        "1",
        "--kill-grace",
        "0.5",
        "sh",
        &script,
        "{}",
        ":::",
        "hang",
        "a",
        "b",
    ]);
    out.expect_code(1);
    // timeout + grace is 1.5 s; anything near the hang guard means it waited on the children.
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    assert!(out.stderr.contains("2 succeeded, 1 failed (1 timed_out)"), "{}", out.stderr);

    // The leader, the inner shell, the two sleeps and the one that left the group:
    // every one of them is gone.
    let pids = read_pids(&env.file("pids"));
    assert_eq!(pids.len(), 5, "the task recorded all its processes: {pids:?}");
    assert_all_dead(&pids);

    let results = env.results(&[]);
    assert_eq!(results.len(), 3);
    let hung = task(&results, 1);
    assert_eq!(str_of(hung, "status"), "timed_out");
    assert!(pids.contains(&(int_of(hung, "pid") as i32)), "the leader is one of the pids");
    assert!(hung["duration"].as_f64().unwrap() >= 1.0, "killed before its timeout: {hung}");
    assert_eq!(hung["exit_code"], Value::Null);
    for (n, input) in [(2, "a"), (3, "b")] {
        let t = task(&results, n);
        assert_eq!(str_of(t, "status"), "succeeded", "{t}");
        assert_eq!(str_of(t, "stdout"), format!("ran {input}\n"));
    }
    // The queued tasks started only once the hung one was gone (one slot).
    let exported = env.export(&[]);
    let hung_end = task(&exported, 1)["ended_at"].as_f64().unwrap();
    for n in [2, 3] {
        assert!(task(&exported, n)["started_at"].as_f64().unwrap() >= hung_end);
    }
    let attempts = task(&exported, 1)["attempt_log"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 1);
    assert_eq!(str_of(&attempts[0], "outcome"), "timed_out");
}

#[test]
fn a_timed_out_task_makes_the_exit_status_1_and_the_summary_names_it() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j2",
        "--timeout",
        "0.3",
        "--kill-grace",
        "0.2",
        "sleep {}",
        ":::",
        "20",
        "0",
    ]);
    out.expect_code(1);
    assert!(out.took < Duration::from_secs(10), "took {:?}", out.took);
    let summary = out.stderr.lines().last().unwrap_or_default();
    assert!(summary.starts_with("shoal: run 1: 1 succeeded, 1 failed (1 timed_out)"), "{summary}");
    assert!(summary.contains("shoal results --run 1 --status timed_out"), "{summary}");
    let results = env.results(&["--status", "timed_out"]);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["args"], serde_json::json!(["20"]));
}

#[test]
fn a_task_killed_by_a_signal_is_crashed_and_retried() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j1",
        "--retries",
        "2",
        "--retry-delay",
        "0.05",
        "echo {}; kill -9 $$",
        ":::",
        "x",
    ]);
    out.expect_code(1);
    assert!(out.stderr.contains("0 succeeded, 1 failed (1 crashed)"), "{}", out.stderr);

    let exported = env.export(&[]);
    assert_eq!(exported.len(), 1);
    let t = &exported[0];
    assert_eq!(str_of(t, "status"), "crashed");
    assert_eq!(int_of(t, "signal"), libc::SIGKILL as i64);
    assert_eq!(t["exit_code"], Value::Null);
    assert_eq!(int_of(t, "attempts"), 3);
    assert_eq!(str_of(t, "stdout"), "x\n", "output before the crash is kept");
    let log = t["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3, "1 attempt + 2 retries: {log:#?}");
    for (i, attempt) in log.iter().enumerate() {
        assert_eq!(int_of(attempt, "attempt"), i as i64 + 1);
        assert_eq!(str_of(attempt, "outcome"), "crashed");
        assert_eq!(int_of(attempt, "signal"), libc::SIGKILL as i64);
    }
    let pids: BTreeSet<i64> = log.iter().map(|a| int_of(a, "pid")).collect();
    assert_eq!(pids.len(), 3, "each attempt is a new process");
}

#[test]
fn a_task_that_crashes_once_succeeds_on_its_retry() {
    let env = Env::new();
    let marker = env.file("crashed-once");
    let out = env.run(&[
        "run",
        "-j1",
        "--retries",
        "2",
        "--retry-delay",
        "0.05",
        "if [ -e {} ]; then echo second; else touch {}; kill -9 $$; fi",
        ":::",
        &marker,
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, "second\n");

    let exported = env.export(&[]);
    let t = &exported[0];
    assert_eq!(str_of(t, "status"), "succeeded");
    assert_eq!(int_of(t, "attempts"), 2);
    assert_eq!(int_of(t, "exit_code"), 0);
    assert_eq!(t["signal"], Value::Null);
    let log = t["attempt_log"].as_array().unwrap();
    let outcomes: Vec<&str> = log.iter().map(|a| str_of(a, "outcome")).collect();
    assert_eq!(outcomes, ["crashed", "succeeded"]);
    assert_eq!(int_of(&log[0], "signal"), libc::SIGKILL as i64);
}

/// `shoal run` of two tasks under a 64 MiB limit: a 512 MiB hog, then `other`.
fn hog_and(other: &str) -> [&str; 10] {
    let hog = r#"python3 -c "b = bytearray(512*1024*1024)""#;
    ["run", "-j2", "--memory-limit", "64M", "sh", "-c", "{}", ":::", hog, other]
}

#[test]
fn a_task_past_its_memory_limit_is_memory_exceeded_and_the_others_are_untouched() {
    let env = Env::new();
    let out = env.run(&hog_and("echo ok"));
    out.expect_code(1);
    assert!(out.stderr.contains("1 succeeded, 1 failed (1 memory_exceeded)"), "{}", out.stderr);

    let results = env.results(&[]);
    let hog = task(&results, 1);
    assert_eq!(str_of(hog, "status"), "memory_exceeded", "{hog}");
    let ok = task(&results, 2);
    assert_eq!(str_of(ok, "status"), "succeeded");
    assert_eq!(str_of(ok, "stdout"), "ok\n");

    let stats = env.stats(&[]);
    // The mechanism is the best this machine allows; each leaves its own evidence.
    match stats["memory_limit_mode"].as_str() {
        // The OOM killer's SIGKILL leaves no Python traceback.
        Some("cgroup_v1" | "cgroup_v2") => {
            assert!(!str_of(hog, "stderr").contains("MemoryError"), "{hog}")
        }
        Some("rlimit_as") => assert!(str_of(hog, "stderr").contains("MemoryError"), "{hog}"),
        other => panic!("unknown memory_limit_mode {other:?}"),
    }
    assert_eq!(stats["counts"]["memory_exceeded"], 1);
    assert_eq!(stats["counts"]["succeeded"], 1);
    let exported = env.export(&[]);
    assert_eq!(str_of(&task(&exported, 1)["attempt_log"][0], "outcome"), "memory_exceeded");
}

/// Runs a command with every cgroup hierarchy hidden (a private mount namespace
/// without them), so that shoal has to fall back to `RLIMIT_AS`.
const WITHOUT_CGROUPS: [&str; 8] = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    r#"umount -R /sys/fs/cgroup 2>/dev/null; exec "$@""#,
    "sh",
];

#[test]
fn where_no_cgroup_can_be_had_rlimit_as_limits_memory_and_the_run_says_so() {
    if !cgroups_can_be_hidden() {
        eprintln!("skipped: no private mount namespace without cgroups can be had here");
        return;
    }
    let env = Env::new();
    let args = hog_and("grep -c cgroup /proc/self/mounts || true");
    let out = run_command(env.command_under(&WITHOUT_CGROUPS, &args), None);
    out.expect_code(1);
    assert!(out.stderr.contains("1 succeeded, 1 failed (1 memory_exceeded)"), "{}", out.stderr);

    let stats = env.stats(&[]);
    assert_eq!(str_of(&stats, "memory_limit_mode"), "rlimit_as");
    let results = env.results(&[]);
    let hog = task(&results, 1);
    assert_eq!(str_of(hog, "status"), "memory_exceeded", "{hog}");
    // The allocation failed inside the task, which said so: that is the evidence.
    assert!(str_of(hog, "stderr").contains("MemoryError"), "{hog}");
    let other = task(&results, 2);
    assert_eq!(str_of(other, "status"), "succeeded", "{other}");
    assert_eq!(str_of(other, "stdout"), "0\n", "no cgroup is mounted where the tasks ran");
}

/// Whether `WITHOUT_CGROUPS` really hides every cgroup mount here (root with
/// CAP_SYS_ADMIN).
fn cgroups_can_be_hidden() -> bool {
    let probe = std::process::Command::new(WITHOUT_CGROUPS[0])
        .args(&WITHOUT_CGROUPS[1..])
        .args(["grep", "-c", "cgroup", "/proc/self/mounts"])
        .output();
    probe.is_ok_and(|p| String::from_utf8_lossy(&p.stdout).trim() == "0")
}

/// Small programs, directly and through a shell, under `--memory-limit LIMIT`.
fn small_programs_under(limit: &str) -> [&str; 10] {
    ["run", "-j2", "--memory-limit", limit, "sh", "-c", "{}", ":::", "true", "bash -c ls"]
}

/// A memory limit below what a program can start with is refused up front, naming
/// the floor (every task was `memory_exceeded`); at the floor, small programs run.
#[test]
fn a_memory_limit_no_program_can_start_with_is_refused_and_the_floor_runs() {
    let env = Env::new();
    let out = env.run(&small_programs_under("1k"));
    out.expect_code(2);
    assert!(
        out.stderr.contains("invalid size '1k': a memory limit must be at least 1M"),
        "{}",
        out.stderr
    );
    assert!(!env.store.exists() || env.runs().is_empty(), "nothing was recorded");

    // 1M is the floor of a cgroup; where only RLIMIT_AS can be had, it is refused too.
    let out = env.run(&small_programs_under("1M"));
    if out.code() == 2 {
        assert!(out
            .stderr
            .contains("is below 4M, the least a program starts with under rlimit_as"));
    } else {
        out.expect_code(0);
        let mode = env.stats(&[])["memory_limit_mode"].as_str().map(str::to_owned);
        assert!(matches!(mode.as_deref(), Some("cgroup_v1" | "cgroup_v2")), "{mode:?}");
    }
}

#[test]
fn under_rlimit_as_the_floor_is_higher_and_small_programs_run_at_it() {
    if !cgroups_can_be_hidden() {
        eprintln!("skipped: no private mount namespace without cgroups can be had here");
        return;
    }
    let env = Env::new();
    let out = run_command(env.command_under(&WITHOUT_CGROUPS, &small_programs_under("2M")), None);
    out.expect_code(2);
    assert!(
        out.stderr.contains(
            "shoal: error: --memory-limit 2M is below 4M, the least a program starts with \
             under rlimit_as"
        ),
        "{}",
        out.stderr
    );
    assert!(env.runs().is_empty(), "nothing was recorded");
    let out = run_command(env.command_under(&WITHOUT_CGROUPS, &small_programs_under("4M")), None);
    out.expect_code(0);
    assert_eq!(str_of(&env.stats(&[]), "memory_limit_mode"), "rlimit_as");
    assert_eq!(env.results(&["--status", "succeeded"]).len(), 2);
}

both_stores!(
    kill_9_of_shoal_mid_run_then_resume_finishes_every_task_exactly_once,
    resume_kills_what_a_killed_shoal_left_running_and_refuses_a_live_run,
);

/// Per task of an export: (status, attempts, started_at, attempt_log).
fn snapshot(exported: &[Value]) -> BTreeMap<i64, (String, i64, f64, Value)> {
    exported
        .iter()
        .map(|t| {
            let status = str_of(t, "status").to_owned();
            let started = t["started_at"].as_f64().unwrap_or(-1.0); // null: never started
            (int_of(t, "task"), (status, int_of(t, "attempts"), started, t["attempt_log"].clone()))
        })
        .collect()
}

fn kill_9_of_shoal_mid_run_then_resume_finishes_every_task_exactly_once(env: Env) {
    const TASKS: i64 = 1000;
    let inputs: String = (1..=TASKS).map(|n| format!("{n}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    let script = env.write("task.sh", "sleep 0.005\necho \"$1\"\n");

    let shoal = env.spawn(&["run", "-j2", "sh", &script, "{}", "::::", &inputs]);
    // Wait until the store holds some finished tasks, then kill shoal without warning.
    wait_for("tasks to succeed", Duration::from_secs(20), || {
        let out = env.run(&["stats", "--json"]);
        let stats: Value = serde_json::from_str(out.stdout.trim()).ok()?;
        (stats["counts"]["succeeded"].as_i64()? >= 50).then_some(())
    });
    assert_eq!(str_of(&env.runs()[0], "status"), "running", "a live shoal holds the run's lock");
    shoal.signal(libc::SIGKILL);
    let killed = shoal.wait(Duration::from_secs(10));
    assert_eq!(killed.status.code(), None, "shoal died of SIGKILL");
    std::thread::sleep(env.lease_expiry());

    let before = snapshot(&env.export(&[]));
    assert_eq!(before.len() as i64, TASKS, "every task is in the store from the start");
    let done_before: Vec<i64> =
        before.iter().filter(|(_, t)| t.0 == "succeeded").map(|(&n, _)| n).collect();
    assert!(done_before.len() >= 50, "{} succeeded before the kill", done_before.len());
    assert!(
        (done_before.len() as i64) < TASKS,
        "the kill came after the end: the test proves nothing; make the tasks longer"
    );
    // It never said it ended, and no live shoal holds its lock (or its lease ran out):
    // it shows it died.
    assert_eq!(str_of(&env.runs()[0], "status"), "died");

    let resumed = env.run(&["run", "--resume"]);
    resumed.expect_code(0);
    let already = format!("{} already done", done_before.len());
    assert!(resumed.stderr.contains(&already), "{}", resumed.stderr);

    let exported = env.export(&[]);
    let numbers: Vec<i64> = exported.iter().map(|t| int_of(t, "task")).collect();
    assert_eq!(numbers, (1..=TASKS).collect::<Vec<_>>(), "one row per task");
    let after = snapshot(&exported);
    for t in &exported {
        let n = int_of(t, "task");
        assert_eq!(str_of(t, "status"), "succeeded", "{t}");
        assert_eq!(str_of(t, "stdout"), format!("{n}\n"));
        // Exactly one successful attempt, the last; earlier ones were cut by the kill.
        let log = t["attempt_log"].as_array().unwrap();
        assert_eq!(log.len() as i64, int_of(t, "attempts"), "{t}");
        for (i, attempt) in log.iter().enumerate() {
            assert_eq!(int_of(attempt, "attempt"), i as i64 + 1, "{t}");
            let expected = if i + 1 == log.len() { "succeeded" } else { "interrupted" };
            assert_eq!(attempt["outcome"], expected, "{t}");
        }
    }
    // What had succeeded before the kill was not run again.
    for n in &done_before {
        assert_eq!(before[n], after[n], "task {n} was re-run by the resume");
    }
    let runs = env.runs();
    assert_eq!(runs.len(), 1, "a resume continues the run, it does not make a new one");
    assert_eq!(str_of(&runs[0], "status"), "finished");
    assert_eq!(runs[0]["counts"]["succeeded"], TASKS);
}

#[test]
fn sigint_stops_the_run_and_resume_finishes_it() {
    let env = Env::new();
    let slow = env.write("slow", "");
    // While `slow` exists a task ignores SIGTERM (its sleep too) and sleeps long:
    // only the SIGKILL after the grace stops it. Each records its pids.
    let script = env.write(
        "task.sh",
        &format!(
            r#"if [ -e {slow} ]; then
  trap "" TERM
  echo $$ >> {dir}/pids.$1
  sleep 1000 &
  echo $! >> {dir}/pids.$1
  wait
fi
echo "done $1"
"#,
            dir = env.path().display()
        ),
    );
    let shoal = env.spawn(&[
        "run",
        "-j2",
        "--kill-grace",
        "0.5",
        "sh",
        &script,
        "{}",
        ":::",
        "a",
        "b",
        "c",
        "d",
    ]);
    let running = |name: &str| {
        std::fs::read_to_string(env.file(&format!("pids.{name}")))
            .is_ok_and(|t| t.lines().count() == 2)
    };
    wait_for("two running tasks", Duration::from_secs(20), || {
        (running("a") && running("b")).then_some(())
    });
    shoal.signal(libc::SIGINT);
    let out = shoal.wait(Duration::from_secs(15));
    out.expect_code(130);
    assert!(out.stderr.contains("shoal: stopping"), "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "0 succeeded, 4 unfinished (2 cancelled; continue with `shoal run --resume 1`)"
        ),
        "{}",
        out.stderr
    );
    let mut pids = read_pids(&env.file("pids.a"));
    pids.extend(read_pids(&env.file("pids.b")));
    assert_all_dead(&pids);
    assert!(!env.path().join("pids.c").exists(), "no task started after the SIGINT");

    let runs = env.runs();
    assert_eq!(str_of(&runs[0], "status"), "interrupted");
    // Cancelled is not failed: no success rate yet (nothing ran to its end), no
    // "failed" in the runs table.
    assert_eq!(env.stats(&[])["success_rate"], Value::Null);
    let table = env.run(&["runs"]).expect_code(0).stdout.clone();
    let row = table.lines().nth(1).expect("a row for run 1");
    let failed_column = row.split_whitespace().nth(4).expect("the failed column");
    assert_eq!(failed_column, "0", "{table}");
    let results = env.results(&[]);
    let statuses: Vec<(&str, i64)> =
        results.iter().map(|t| (str_of(t, "status"), int_of(t, "attempts"))).collect();
    assert_eq!(statuses, [("cancelled", 1), ("cancelled", 1), ("queued", 0), ("queued", 0)]);

    std::fs::remove_file(&slow).unwrap();
    let resumed = env.run(&["run", "--resume"]);
    resumed.expect_code(0);
    let results = env.results(&[]);
    for (t, input) in results.iter().zip(["a", "b", "c", "d"]) {
        assert_eq!(str_of(t, "status"), "succeeded", "{t}");
        assert_eq!(str_of(t, "stdout"), format!("done {input}\n"));
    }
    let attempts: Vec<i64> = results.iter().map(|t| int_of(t, "attempts")).collect();
    assert_eq!(attempts, [2, 2, 1, 1], "cancelled tasks ran again, queued ones once");
    let exported = env.export(&[]);
    let outcomes: Vec<&str> = task(&exported, 1)["attempt_log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "outcome"))
        .collect();
    assert_eq!(outcomes, ["cancelled", "succeeded"]);
    assert_eq!(str_of(&env.runs()[0], "status"), "finished");
}

#[test]
fn a_second_signal_kills_at_once_and_the_first_one_sets_the_exit_status() {
    let env = Env::new();
    let dir = env.path().display().to_string();
    // The task notes the SIGTERM of the graceful stop and keeps going; its sleep
    // ignores SIGTERM. Only a SIGKILL ends it, and the grace is a minute.
    let script = env.write(
        "task.sh",
        &format!(
            r#"trap 'echo term >> {dir}/term.$1' TERM
sh -c 'trap "" TERM; echo $$ >> "$1"; exec sleep 1000' _ {dir}/pids.$1 &
echo $$ >> {dir}/pids.$1
wait
wait
"#
        ),
    );
    let shoal =
        env.spawn(&["run", "-j1", "--kill-grace", "60", "sh", &script, "{}", ":::", "a", "b"]);
    let pids_file = env.file("pids.a");
    wait_for("the task to start", Duration::from_secs(20), || {
        std::fs::read_to_string(&pids_file).ok().filter(|t| t.lines().count() == 2)
    });
    shoal.signal(libc::SIGTERM);
    wait_for("the task to get SIGTERM", Duration::from_secs(20), || {
        env.path().join("term.a").exists().then_some(())
    });
    shoal.signal(libc::SIGINT);
    let out = shoal.wait(Duration::from_secs(20));
    out.expect_code(128 + libc::SIGTERM);
    assert!(out.stderr.contains("shoal: killing running tasks"), "{}", out.stderr);
    assert_all_dead(&read_pids(&pids_file));
    let results = env.results(&[]);
    assert_eq!(str_of(&results[0], "status"), "cancelled");
    assert_eq!(str_of(&results[1], "status"), "queued");
    assert_eq!(str_of(&env.runs()[0], "status"), "interrupted");
}

#[test]
fn a_resumed_task_keeps_its_attempt_history_and_gets_its_retries_again() {
    let env = Env::new();
    let out = env.run(&["run", "--retries", "1", "--retry-delay", "0.05", "exit {}", ":::", "3"]);
    out.expect_code(1);
    let resumed = env.run(&["run", "--resume"]);
    resumed.expect_code(1);
    assert!(resumed.stderr.contains("0 succeeded, 1 failed in "), "{}", resumed.stderr);

    let exported = env.export(&[]);
    let t = &exported[0];
    assert_eq!(str_of(t, "status"), "failed");
    assert_eq!(int_of(t, "exit_code"), 3);
    assert_eq!(int_of(t, "attempts"), 4, "two attempts per run: {t}");
    let log = t["attempt_log"].as_array().unwrap();
    let numbers: Vec<i64> = log.iter().map(|a| int_of(a, "attempt")).collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert!(log.iter().all(|a| a["outcome"] == "failed" && a["exit_code"] == 3), "{log:#?}");
}

#[test]
fn a_sigterm_right_at_the_start_is_a_graceful_stop() {
    let env = Env::new();
    // The first task signals shoal (its parent) as soon as it runs: the handlers
    // must already be in place, or shoal dies of the SIGTERM and leaves the task behind.
    let out = env.run(&[
        "run",
        "-j1",
        "--kill-grace",
        "0.2",
        "kill -TERM $PPID; sleep 30; echo {}",
        ":::",
        "a",
        "b",
    ]);
    out.expect_code(128 + libc::SIGTERM);
    assert!(out.stderr.contains("shoal: stopping"), "{}", out.stderr);
    let results = env.results(&[]);
    let statuses: Vec<&str> = results.iter().map(|t| str_of(t, "status")).collect();
    assert_eq!(statuses, ["cancelled", "queued"]);
    assert_all_dead(&[int_of(&results[0], "pid") as i32]);
    assert_eq!(str_of(&env.runs()[0], "status"), "interrupted");
}

/// After a `kill -9` of shoal its tasks live on; a resume kills them (and their
/// children) before running those tasks again, so no task runs twice at once. A
/// resume while the run is still going on under another shoal is refused.
fn resume_kills_what_a_killed_shoal_left_running_and_refuses_a_live_run(env: Env) {
    let slow = env.write("slow", "");
    let script = env.write(
        "task.sh",
        &format!(
            r#"if [ -e {slow} ]; then
  sleep 1000 &
  echo $$ $! > {dir}/pids.$1.tmp && mv {dir}/pids.$1.tmp {dir}/pids.$1
  wait
fi
echo "done $1"
"#,
            dir = env.path().display()
        ),
    );
    let shoal = env.spawn(&["run", "-j2", "sh", &script, "{}", ":::", "a", "b"]);
    let pids: Vec<i32> = wait_for("both tasks to run", Duration::from_secs(20), || {
        let mut pids = Vec::new();
        for name in ["a", "b"] {
            let text = std::fs::read_to_string(env.file(&format!("pids.{name}"))).ok()?;
            pids.extend(text.split_whitespace().map(|p| p.parse::<i32>().unwrap()));
        }
        (pids.len() == 4).then_some(pids)
    });

    // While the first shoal lives, a resume must not touch its tasks.
    let refused = env.run(&["run", "--resume"]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("is still running in another shoal"), "{}", refused.stderr);
    assert!(pids.iter().all(|&p| alive(p)), "a refused resume killed nothing");

    shoal.signal(libc::SIGKILL);
    shoal.wait(Duration::from_secs(10));
    assert!(pids.iter().all(|&p| alive(p)), "the tasks outlive a kill -9 of shoal");
    std::thread::sleep(env.lease_expiry());

    std::fs::remove_file(&slow).unwrap();
    let resumed = env.run(&["run", "--resume"]);
    resumed.expect_code(0);
    assert!(
        resumed.stderr.contains("killed 4 processes that the interrupted run 1 left running"),
        "{}",
        resumed.stderr
    );
    assert_all_dead(&pids);
    let tasks = env.results(&[]);
    assert!(tasks.iter().all(|t| str_of(t, "status") == "succeeded"), "{tasks:?}");
}

/// The run's lock, not its processes, says a shoal still runs it: a resume is refused
/// while the live shoal has nothing running (its task waits out a retry delay).
#[test]
fn a_resume_is_refused_while_the_live_shoal_waits_to_retry() {
    let env = Env::new();
    let shoal = env.spawn(&["run", "--retries", "3", "--retry-delay", "30", "false", ":::", "a"]);
    wait_for("the first attempt to fail", Duration::from_secs(20), || {
        let out = env.run(&["export"]);
        (out.code() == 0 && out.stdout.contains("\"outcome\":\"failed\"")).then_some(())
    });
    let refused = env.run(&["run", "--resume"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("run 1 is still running in another shoal"),
        "{}",
        refused.stderr
    );
    shoal.signal(libc::SIGKILL);
    shoal.wait(Duration::from_secs(10));
    // Once that shoal is gone, the lock is free.
    env.run(&["run", "--resume", "--retries", "0"]).expect_code(1);
}

/// A resume runs the tasks where the run began, whatever directory it is started
/// from: relative paths in the command mean what they meant.
#[test]
fn a_resume_runs_in_the_runs_own_directory() {
    let env = Env::new();
    let gate = env.write("gate", "");
    env.write(
        "job.sh",
        &format!("while [ -e {gate} ] && [ $1 = b ]; do sleep 0.05; done; echo ran $1\n"),
    );
    let shoal = env.spawn(&["run", "-j2", "sh", "./job.sh", ":::", "a", "b"]);
    wait_for("task a to finish", Duration::from_secs(20), || {
        let out = env.run(&["results", "--json", "--status", "succeeded"]);
        (out.code() == 0 && json_lines(&out.stdout).len() == 1).then_some(())
    });
    shoal.signal(libc::SIGKILL);
    shoal.wait(Duration::from_secs(10));
    std::fs::remove_file(&gate).unwrap();
    let mut resume = env.command(&["run", "--resume"]);
    resume.current_dir("/");
    let out = resume.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran b\n");
}
