//! `shoal watch`: a run of real tasks started by one `shoal` process, followed live by
//! another that only reads the store (not a terminal here: its status lines and one
//! line per failure), until the run ends, dies or the watcher is interrupted; and
//! every bad input refused with a clear message and exit status 2.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{read_pids, wait_for, Env, Running, HANG};

/// A `shoal watch` in the background whose stderr lines are kept with the moment each
/// arrived, so a test can tell what was shown while the run still ran.
struct Watcher {
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(env: &Env, args: &[&str]) -> Watcher {
        let mut all = vec!["watch"];
        all.extend_from_slice(args);
        let mut child = env
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start shoal watch");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push((Instant::now(), line));
                }
            })
        };
        Watcher { child, lines, reader: Some(reader) }
    }

    /// When the first line containing `text` arrived, if one has.
    fn seen(&self, text: &str) -> Option<Instant> {
        self.lines.lock().unwrap().iter().find(|(_, l)| l.contains(text)).map(|(at, _)| *at)
    }

    /// Waits for the watcher to end (at most `HANG`): its exit code, its stderr, and
    /// when it ended.
    fn wait(mut self) -> (i32, String, Instant) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > HANG {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("shoal watch hung; stderr:\n{}", self.text());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let ended = Instant::now();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let text = self.text();
        common::assert_no_panic(&text);
        let code = status.code().unwrap_or_else(|| panic!("killed by a signal: {text}"));
        (code, text, ended)
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: a plain system call on our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `shoal run -j JOBS COMMAND ::: 1..=inputs` in the background, and waits until
/// the store holds its run.
fn start_run(env: &Env, jobs: &str, command: &str, inputs: usize) -> Running {
    let numbers: Vec<String> = (1..=inputs).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "-j", jobs, "--no-progress", command, ":::"];
    args.extend(numbers.iter().map(String::as_str));
    let before = if env.store.exists() { env.runs().len() } else { 0 };
    let run = env.spawn(&args);
    wait_for("the run to be recorded", HANG, || env.store.exists().then_some(()));
    // This run's own row: every run's counts name a "running" status too.
    wait_for("the run to be recorded", HANG, || {
        let out = env.run(&["runs", "--json"]);
        let runs = common::json_lines(&out.stdout);
        let recorded = out.code() == 0 && runs.len() > before;
        (recorded && runs.last().is_some_and(|r| r["status"] == "running")).then_some(())
    });
    run
}

#[test]
fn watch_shows_failures_as_they_happen_and_ends_with_the_runs_summary_and_status() {
    let env = Env::new();
    // Two slots: task 2 fails once the watch has begun (the file `go`), task 5 soon
    // after; the others sleep 1 s, so the run goes on about 3 s after task 2 failed.
    let command = "case {} in 2) while [ ! -e go ]; do sleep 0.02; done; exit 3;; \
                   5) sleep 0.5; exit 4;; *) sleep 1;; esac";
    let run = start_run(&env, "2", command, 8);
    let watcher = Watcher::start(&env, &["1"]);
    wait_for("the watch to begin", HANG, || watcher.seen("watching run 1").map(|_| ()));
    std::fs::write(env.path().join("go"), "").unwrap();
    let out = run.wait(HANG);
    let run_ended = Instant::now();
    out.expect_code(1);
    let failed_at = watcher.seen("shoal: task 2 failed (exit code 3)");
    let (code, text, watch_ended) = watcher.wait();
    assert_eq!(code, 1, "the run's own exit status:\n{text}");
    assert!(text.contains("shoal: watching run 1: case {} in 2)"), "{text}");
    for (task, code) in [(2, 3), (5, 4)] {
        let line = format!("shoal: task {task} failed (exit code {code})");
        assert_eq!(text.matches(&line).count(), 1, "one line for task {task}:\n{text}");
    }
    // Shown as it happened: well before the run's end (about 3 s; bound generous).
    let failed_at = failed_at.expect("the failure was shown before the run ended");
    assert!(run_ended.duration_since(failed_at) > Duration::from_secs(1), "{text}");
    // And the watch ended with the run.
    assert!(watch_ended.duration_since(run_ended) < Duration::from_secs(5), "{text}");
    // The same summary as `shoal run`'s, but for its time.
    let cut = |s: &str| s.split(" in ").next().unwrap().to_owned();
    let summary = out.stderr.lines().last().unwrap();
    let watched = text.lines().last().unwrap();
    assert_eq!(cut(watched), cut(summary), "{text}");
    assert!(watched.contains("6 succeeded, 2 failed"), "{watched}");
    // Not a terminal: status lines, one a second or so.
    let lines = text.lines().filter(|l| l.contains("/8 done, succeeded ")).count();
    assert!((1..=8).contains(&lines), "{lines} status lines:\n{text}");
}

#[test]
fn a_run_whose_tasks_all_succeed_exits_0_and_one_cancelled_exits_130() {
    let env = Env::new();
    let run = start_run(&env, "2", "sleep 0.3 #", 4);
    let watcher = Watcher::start(&env, &[]);
    run.wait(HANG).expect_code(0);
    let (code, text, _) = watcher.wait();
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("shoal: run 1: 4 succeeded in "), "{text}");

    let run = start_run(&env, "1", "sleep 30 #", 3);
    // Without RUN: the latest live run, 2.
    let watcher = Watcher::start(&env, &[]);
    wait_for("the watch to begin", HANG, || watcher.seen("watching run 2").map(|_| ()));
    env.run(&["cancel", "2"]).expect_code(0);
    run.wait(HANG).expect_code(130);
    let (code, text, _) = watcher.wait();
    assert_eq!(code, 130, "as the run's own:\n{text}");
    assert!(
        text.contains("unfinished (1 cancelled; continue with `shoal run --resume 2`)"),
        "{text}"
    );
}

#[test]
fn without_a_run_the_latest_live_one_is_watched_even_when_a_later_one_ended() {
    let env = Env::new();
    let live = start_run(&env, "1", "sleep 1.5 #", 1);
    env.run(&["run", "true", ":::", "x"]).expect_code(0);
    let watcher = Watcher::start(&env, &[]);
    let (code, text, _) = watcher.wait();
    live.wait(HANG).expect_code(0);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("shoal: watching run 1"), "{text}");
    assert!(text.contains("shoal: run 1: 1 succeeded"), "{text}");
}

#[test]
fn a_run_that_has_ended_gives_its_summary_and_status_at_once() {
    let env = Env::new();
    env.run(&["run", "exit {}", ":::", "0", "1", "0"]).expect_code(1);
    let out = env.run(&["watch", "1"]);
    out.expect_code(1);
    assert_eq!(
        out.stderr.trim(),
        "shoal: run 1: 2 succeeded, 1 failed in ".to_owned()
            + out.stderr.trim().split(" in ").nth(1).unwrap_or_default(),
        "one summary line"
    );
    assert!(out.stderr.contains("see `shoal results --run 1 --status failed`"), "{}", out.stderr);
    // Without RUN and no live run: the latest.
    env.run(&["run", "true", ":::", "x"]).expect_code(0);
    let out = env.run(&["watch"]);
    out.expect_code(0);
    assert!(out.stderr.starts_with("shoal: run 2: 1 succeeded in "), "{}", out.stderr);
}

#[test]
fn a_run_killed_with_sigkill_ends_the_watch_with_died_and_a_non_zero_status() {
    let env = Env::new();
    let run = start_run(&env, "2", "echo $$ >> pids; exec sleep 30 #", 4);
    wait_for("tasks to start", HANG, || {
        std::fs::read_to_string(env.path().join("pids")).ok().filter(|p| p.lines().count() >= 2)
    });
    let watcher = Watcher::start(&env, &["1"]);
    wait_for("the watch to begin", HANG, || watcher.seen("watching run 1").map(|_| ()));
    let killed = Instant::now();
    run.signal(libc::SIGKILL);
    let _ = run.wait(HANG);
    let (code, text, ended) = watcher.wait();
    for pid in read_pids(&env.file("pids")) {
        // SAFETY: a plain system call on the tasks the killed shoal left behind.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    assert_eq!(code, 1, "{text}");
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("shoal: run 1 died"), "ends with it:\n{text}");
    assert!(text.contains("4 unfinished (continue with `shoal run --resume 1`)"), "{text}");
    // Noticed by the liveness probe (every 0.5 s); bound generous for a busy machine.
    assert!(ended.duration_since(killed) < Duration::from_secs(5), "{text}");
}

#[test]
fn ctrl_c_stops_the_watch_with_130_and_the_run_goes_on() {
    let env = Env::new();
    let run = start_run(&env, "2", "sleep 1 #", 4);
    let watcher = Watcher::start(&env, &["1"]);
    wait_for("the watch to begin", HANG, || watcher.seen("watching run 1").map(|_| ()));
    watcher.signal(libc::SIGINT);
    let (code, text, _) = watcher.wait();
    assert_eq!(code, 130, "{text}");
    assert!(text.contains("shoal: stopped watching run 1; the run goes on"), "{text}");
    let out = run.wait(HANG);
    out.expect_code(0);
    assert!(out.stderr.contains("4 succeeded"), "{}", out.stderr);
}

#[test]
fn bad_input_is_refused_with_exit_2_as_snapshotted() {
    let env = Env::new();
    let snapshot = |args: &[&str]| {
        let out = env.run(args);
        out.expect_code(2);
        assert!(out.stdout.is_empty(), "{}", out.stdout);
        env.redact(&out.stderr)
    };
    let one_line = |text: String| {
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
        text
    };
    insta::assert_snapshot!("watch_no_store", one_line(snapshot(&["watch"])));
    assert!(!env.store.exists(), "watch creates no store");
    std::fs::write(&env.store, "not a database, only text, long enough to be read as a header")
        .unwrap();
    insta::assert_snapshot!("watch_not_a_store", one_line(snapshot(&["watch", "1"])));
    std::fs::remove_file(&env.store).unwrap();
    // A store that holds no run yet (made by the Rust crate: every front records one).
    drop(shoal_core::store::Store::open(&env.store).unwrap());
    insta::assert_snapshot!("watch_no_run_yet", one_line(snapshot(&["watch"])));
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    insta::assert_snapshot!("watch_no_such_run", one_line(snapshot(&["watch", "5"])));
    // clap's own usage error, with its hint.
    insta::assert_snapshot!("watch_bad_run", snapshot(&["watch", "one"]));
}

#[test]
fn a_run_with_no_tasks_says_so() {
    let env = Env::new();
    env.run_stdin(&["run", "echo"], "").expect_code(0);
    let out = env.run(&["watch"]);
    out.expect_code(0);
    assert_eq!(out.stderr.trim(), "shoal: run 1: no tasks");
}
