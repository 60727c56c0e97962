//! Inputs that stream: `shoal run` reads them as its tasks run, so a pipe still being
//! written starts its first tasks before its end. Each test writes a FIFO by hand and
//! waits for a task's marker file before writing on: what it checks happened in that
//! order, whatever the machine's speed (no timing is asserted).

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{int_of, json_lines, str_of, wait_for, Env, Running, HANG};
use serde_json::Value;

/// A FIFO in the test's directory.
fn fifo(env: &Env, name: &str) -> String {
    let path = env.file(name);
    let made = std::process::Command::new("mkfifo").arg(&path).status().expect("run mkfifo");
    assert!(made.success(), "mkfifo {path}");
    path
}

/// Waits until the file exists (the task that makes it has run).
fn wait_for_file(path: &Path) {
    wait_for(&format!("{} to exist", path.display()), HANG, || path.exists().then_some(()));
}

/// The marker file a task of `touch_command` makes: `ran-N` in the test's directory.
fn ran(env: &Env, task: u32) -> PathBuf {
    env.path().join(format!("ran-{task}"))
}

/// `touch <dir>/ran-{}`: each task leaves its marker.
fn touch_command(env: &Env) -> String {
    format!("touch {}/ran-{{}}", env.path().display())
}

/// Starts `shoal run ARGS :::: FIFO`, writes `first` into the FIFO and waits until
/// task 1 has run: the input has not ended then (the writer, returned, still holds it
/// open).
fn start_streaming(env: &Env, args: &[&str], first: &[u8]) -> (Running, File) {
    let input = fifo(env, "inputs");
    let mut all = vec!["run", "--no-progress"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["::::", &input]);
    let run = env.spawn(&all);
    let mut writer = File::create(&input).expect("open the FIFO for writing");
    writer.write_all(first).unwrap();
    writer.flush().unwrap();
    wait_for_file(&ran(env, 1));
    (run, writer)
}

/// The store's only run, as `shoal runs --json` lists it.
fn the_run(env: &Env) -> Value {
    let runs = env.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

#[test]
fn the_first_tasks_run_while_the_input_is_still_being_written() {
    let env = Env::new();
    let (run, mut writer) = start_streaming(&env, &["-j", "2", &touch_command(&env)], b"1\n");

    // Meanwhile the run's total is what was read so far, and shown as such.
    let listed = the_run(&env);
    assert_eq!(str_of(&listed, "status"), "running", "{listed}");
    assert_eq!(listed["input_open"], Value::Bool(true), "{listed}");
    assert_eq!(int_of(&listed, "total"), 1, "{listed}");
    let table = env.run(&["runs"]);
    assert!(table.stdout.lines().any(|l| l.contains(" 1+ ")), "{}", table.stdout);

    writer.write_all(b"2\n3\n").unwrap();
    drop(writer);
    let out = run.wait(HANG);
    out.expect_code(0);
    assert!(out.stderr.contains("3 succeeded"), "{}", out.stderr);
    for task in 1..=3 {
        assert!(ran(&env, task).exists(), "task {task} ran");
    }
    let listed = the_run(&env);
    assert_eq!(listed["input_open"], Value::Bool(false), "{listed}");
    assert_eq!(int_of(&listed, "total"), 3, "{listed}");
}

#[test]
fn watch_shows_the_total_read_so_far_and_no_eta_until_the_input_ends() {
    let env = Env::new();
    let (run, mut writer) = start_streaming(&env, &[&touch_command(&env)], b"1\n");

    // `shoal watch`, not on a terminal, prints a status line about once a second.
    let mut watcher = env
        .command(&["watch", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shoal watch");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let (lines, stderr) = (lines.clone(), watcher.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let status = wait_for("a status line while the input is open", HANG, || {
        lines.lock().unwrap().iter().find(|l| l.contains(" done, ")).cloned()
    });
    assert!(status.starts_with("shoal: 1/1+ done, "), "{status}");
    assert!(status.contains("ETA -"), "{status}");

    writer.write_all(b"2\n").unwrap();
    drop(writer);
    run.wait(HANG).expect_code(0);
    let watched = watcher.wait().expect("wait for shoal watch");
    reader.join().unwrap();
    assert_eq!(watched.code(), Some(0));
    let text = lines.lock().unwrap().join("\n");
    assert!(text.contains("shoal: run 1: 2 succeeded"), "{text}");
}

#[test]
fn input_that_fails_midway_runs_what_was_read_and_ends_with_a_clear_error() {
    let env = Env::new();
    let (run, mut writer) = start_streaming(&env, &[&touch_command(&env)], b"1\n2\n");
    // Line 3 is not text.
    writer.write_all(b"\xff\n4\n").unwrap();
    drop(writer);
    let out = run.wait(HANG);
    out.expect_code(2);
    assert!(out.stderr.contains("inputs:3: not valid UTF-8 text"), "{}", out.stderr);
    assert!(out.stderr.contains("run 1 ran the 2 tasks read before it"), "{}", out.stderr);
    assert!(!ran(&env, 4).exists(), "nothing after the bad line ran");
    // Nothing recorded is left without an end: both tasks succeeded, the run is
    // over and its input closed.
    let listed = the_run(&env);
    assert_eq!(str_of(&listed, "status"), "interrupted", "{listed}");
    assert_eq!(int_of(&listed, "total"), 2, "{listed}");
    assert_eq!(int_of(&listed, "unfinished"), 0, "{listed}");
    assert_eq!(listed["input_open"], Value::Bool(false), "{listed}");
}

#[test]
fn a_run_stopped_while_its_input_streams_records_the_rest_for_a_resume() {
    let env = Env::new();
    // Task 1 holds on while the file `hold` is there.
    let hold = env.path().join("hold");
    let command =
        format!("{}; if [ -e {} ]; then sleep 30; fi", touch_command(&env), hold.display());
    std::fs::write(&hold, "").unwrap();
    let (run, mut writer) = start_streaming(&env, &["-j", "1", &command], b"1\n");
    run.signal(libc::SIGINT);
    // The rest of the input is read after the stop, into the store.
    writer.write_all(b"2\n3\n").unwrap();
    drop(writer);
    let out = run.wait(HANG);
    out.expect_code(130);
    let listed = the_run(&env);
    assert_eq!(int_of(&listed, "total"), 3, "{listed}");
    assert_eq!(int_of(&listed, "unfinished"), 3, "{listed}");
    assert!(!ran(&env, 2).exists(), "nothing ran after the stop");

    std::fs::remove_file(&hold).unwrap();
    let resumed = env.run(&["run", "--resume", "1", "--no-progress"]);
    resumed.expect_code(0);
    for task in 2..=3 {
        assert!(ran(&env, task).exists(), "task {task} ran on resume");
    }
}

/// A resume of more tasks than it reads from the store at once (1,000) and than the
/// engine queues (10,000) runs each task that did not succeed exactly once, in order
/// with the run's stored `-k`; `-j` given on resume replaces the stored one. (A stop
/// while the input streams records the rest unrun: the tasks to resume.)
#[test]
fn a_resume_of_more_tasks_than_a_page_and_the_queue_runs_each_once_in_order() {
    let env = Env::new();
    let tasks = 11_000;
    let input = fifo(&env, "inputs");
    let run = env.spawn(&["run", "-j1", "-k", "--no-progress", "echo", "::::", &input]);
    let mut writer = File::create(&input).expect("open the FIFO for writing");
    writer.write_all(b"1\n").unwrap();
    writer.flush().unwrap();
    wait_for("task 1 to succeed", HANG, || {
        // Until the run is recorded, `results` finds no run.
        let out = env.run(&["results", "--json"]);
        let results = json_lines(&out.stdout);
        results.first().filter(|t| str_of(t, "status") == "succeeded").map(drop)
    });
    run.signal(libc::SIGINT);
    let rest: String = (2..=tasks).map(|i| format!("{i}\n")).collect();
    writer.write_all(rest.as_bytes()).unwrap();
    drop(writer);
    run.wait(HANG).expect_code(130);
    // The stop may come after a task or two more have run.
    let done: Vec<i64> = env
        .results(&[])
        .iter()
        .filter(|t| str_of(t, "status") == "succeeded")
        .map(|t| int_of(t, "task"))
        .collect();
    let pending: Vec<i64> = (1..=tasks).filter(|i| !done.contains(i)).collect();
    assert!(pending.len() > 10_000, "{} tasks to resume", pending.len());

    // Some 11,000 tasks through a debug build on a loaded machine: more than HANG.
    let resumed = env.spawn(&["run", "--resume", "-j2", "--no-progress"]);
    let out = resumed.wait(Duration::from_secs(300));
    out.expect_code(0);
    let expected: String = pending.iter().map(|i| format!("{i}\n")).collect();
    let lines = out.stdout.lines().count();
    assert!(out.stdout == expected, "each task once, in order: {lines} lines");
    let summary = format!("{} succeeded, {} already done", pending.len(), done.len());
    assert!(out.stderr.contains(&summary), "{}", out.stderr);
    let results = env.results(&[]);
    assert!(results.iter().all(|t| str_of(t, "status") == "succeeded"));
    // The run began on one slot; the resume runs two.
    assert!(results.iter().any(|t| int_of(t, "slot") == 2), "-j2 given on resume is used");
}
