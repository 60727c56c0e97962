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

use common::{int_of, str_of, wait_for, Env, Running, HANG};
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
