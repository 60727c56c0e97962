//! Helpers shared by the integration tests of the `shoal` binary: a temporary
//! directory with its own store per test (a SQLite file, or a fresh database of the
//! test binary's own PostgreSQL cluster: `Env::on_postgres`, `both_stores!`), running `shoal` with a hang guard,
//! reading the store back through `shoal`'s own JSON reports, and checking that
//! processes are gone.
//!
//! Every test runs the real binary on real processes; nothing here fakes anything.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Makes a test on each store backend of each function named, which takes the
/// test's `Env`: `mod name { fn sqlite(); fn postgres() }`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::common::Env::new())
            }
            #[test]
            fn postgres() {
                super::$name(super::common::Env::on_postgres())
            }
        }
    )*};
}

/// A run's lease in a PostgreSQL store, short for the tests (renewed every 0.5 s).
pub const PG_LEASE: Duration = Duration::from_secs(3);

/// Longest any single `shoal` invocation may take before the test calls it a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn shoal_bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// A test's own directory and store.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

/// What a finished `shoal` run left.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Out {
    /// The exit code; panics (with the output) if a signal ended shoal.
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| panic!("shoal was killed by a signal: {self:#?}"))
    }

    /// Asserts the exit code, showing everything on failure.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Out {
        assert_eq!(self.code(), code, "unexpected exit code: {self:#?}");
        assert_no_panic(&self.stderr);
        self
    }
}

/// No panic message, whatever the exit code.
#[track_caller]
pub fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "shoal panicked:\n{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "shoal panicked:\n{stderr}");
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("shoal-it-").tempdir().expect("temp dir");
        let store = dir.path().join("s.db");
        Env { dir, store }
    }

    /// A test's own directory, and a fresh database of this test binary's throwaway
    /// PostgreSQL cluster as its store.
    pub fn on_postgres() -> Env {
        let mut env = Env::new();
        env.store = shoal_core::store::postgres::cluster::Cluster::shared().database().into();
        env
    }

    /// How long the run of a shoal killed with `kill -9` may still show alive: no
    /// time on SQLite (the kernel frees its lock), its lease on PostgreSQL.
    pub fn lease_expiry(&self) -> Duration {
        if self.store.to_string_lossy().starts_with("postgresql://") {
            PG_LEASE + Duration::from_millis(500)
        } else {
            Duration::ZERO
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the test's directory, as a string.
    pub fn file(&self, name: &str) -> String {
        self.path().join(name).display().to_string()
    }

    /// Writes a file into the test's directory and returns its path.
    pub fn write(&self, name: &str, content: &str) -> String {
        let path = self.path().join(name);
        std::fs::write(&path, content).expect("write a test file");
        path.display().to_string()
    }

    /// `shoal --store <this store> ARGS`, run in the test's directory with a clean
    /// environment for shoal's own variables.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_under(&[], args)
    }

    /// The same command, run by `prefix` (a program and its first arguments).
    pub fn command_under(&self, prefix: &[&str], args: &[&str]) -> Command {
        let mut cmd = match prefix.split_first() {
            Some((program, first)) => {
                let mut cmd = Command::new(program);
                cmd.args(first).arg(shoal_bin());
                cmd
            }
            None => Command::new(shoal_bin()),
        };
        cmd.arg("--store")
            .arg(&self.store)
            .args(args)
            .current_dir(self.path())
            .env_remove("SHOAL_STORE")
            .env_remove("SHOAL_LOG")
            .env("SHOAL_PG_LEASE", PG_LEASE.as_secs_f64().to_string())
            .env("SHOAL_PG_HEARTBEAT", "0.5")
            .env("NO_COLOR", "1");
        cmd
    }

    /// Runs shoal to its end (stdin closed), failing the test if it hangs.
    pub fn run(&self, args: &[&str]) -> Out {
        run_command(self.command(args), None)
    }

    /// Runs shoal with `input` on its standard input.
    pub fn run_stdin(&self, args: &[&str], input: &str) -> Out {
        run_command(self.command(args), Some(input.as_bytes().to_vec()))
    }

    /// Starts shoal in the background (stdin closed, outputs captured).
    pub fn spawn(&self, args: &[&str]) -> Running {
        Running::start(self.command(args))
    }

    /// Starts shoal in the background, run by `prefix` (as `command_under`).
    pub fn spawn_under(&self, prefix: &[&str], args: &[&str]) -> Running {
        Running::start(self.command_under(prefix, args))
    }

    /// `shoal results --json` (with extra arguments), one object per task.
    pub fn results(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["results", "--json"];
        args.extend_from_slice(extra);
        json_lines(&self.run(&args).expect_code(0).stdout)
    }

    /// `shoal export` (with extra arguments), one object per task with its attempts.
    pub fn export(&self, extra: &[&str]) -> Vec<Value> {
        let mut args = vec!["export"];
        args.extend_from_slice(extra);
        json_lines(&self.run(&args).expect_code(0).stdout)
    }

    /// `shoal runs --json`.
    pub fn runs(&self) -> Vec<Value> {
        json_lines(&self.run(&["runs", "--json"]).expect_code(0).stdout)
    }

    /// `shoal stats --json` (with extra arguments).
    pub fn stats(&self, extra: &[&str]) -> Value {
        let mut args = vec!["stats", "--json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        out.expect_code(0);
        serde_json::from_str(out.stdout.trim()).expect("stats --json is one JSON object")
    }

    /// Replaces this test's directory by `[TMP]`, for snapshots.
    /// Every command that opens the store refuses it as damaged (exit 2), naming it,
    /// and says `also` too.
    pub fn expect_every_command_refuses_a_damaged_store(&self, also: &str) {
        for args in [
            &["runs"][..],
            &["results"],
            &["stats"],
            &["export"],
            &["run", "echo", ":::", "x"],
            &["run", "--resume"],
        ] {
            let out = self.run(args);
            out.expect_code(2);
            let damaged = format!("the store {} is damaged", self.store.display());
            assert!(out.stderr.contains(&damaged), "names the store: {args:?}: {}", out.stderr);
            assert!(out.stderr.contains(also), "{args:?}: {}", out.stderr);
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let dir = self.path().display().to_string();
        let canonical = self.path().canonicalize().map(|p| p.display().to_string());
        let mut text = text.replace(&dir, "[TMP]");
        if let Ok(canonical) = canonical {
            text = text.replace(&canonical, "[TMP]");
        }
        text
    }
}

/// Parses JSON lines, failing with the text if one is not JSON.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Sorted keys of a JSON object.
pub fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().expect("a JSON object").keys().cloned().collect();
    keys.sort();
    keys
}

/// A shoal process running in the background, its outputs drained by threads so it
/// never blocks on a full pipe.
pub struct Running {
    pub child: Child,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Running {
    fn start(mut cmd: Command) -> Running {
        Running::start_with(&mut cmd, None)
    }

    fn start_with(cmd: &mut Command, input: Option<Vec<u8>>) -> Running {
        cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("start shoal");
        if let Some(input) = input {
            let mut stdin = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = Some(drain(child.stdout.take().expect("piped stdout")));
        let stderr = Some(drain(child.stderr.take().expect("piped stderr")));
        Running { child, started, stdout, stderr }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to shoal itself.
    pub fn signal(&self, signal: i32) {
        // SAFETY: a plain system call on our own child, which we have not reaped.
        let r = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(r, 0, "kill({}, {signal}): {}", self.pid(), std::io::Error::last_os_error());
    }

    /// Waits for shoal to end, at most `limit` (then kills it and fails the test).
    pub fn wait(mut self, limit: Duration) -> Out {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for shoal") {
                break status;
            }
            if self.started.elapsed() > limit {
                self.stop();
                let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
                panic!(
                    "shoal hung for more than {limit:?}; stderr:\n{}",
                    stderr.unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = self.started.elapsed();
        let stdout = self.stdout.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        Out { status, stdout, stderr, took }
    }
}

impl Running {
    /// Stops a shoal that a failing test leaves behind: two SIGTERMs first (the
    /// second kills its tasks at once, so they are not orphaned), SIGKILL if that
    /// does not end it within 2 s.
    fn stop(&mut self) {
        for _ in 0..2 {
            // SAFETY: a plain system call on our own child, which we have not reaped.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            std::thread::sleep(Duration::from_millis(100));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way must not leave shoal running.
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Runs a command to its end with a hang guard.
/// GNU parallel, the reference some behaviour is compared against: the test command
/// (scripts/test.sh) installs it, so a machine without it is a broken set-up, not a
/// reason to skip the comparison.
pub fn gnu_parallel() -> Command {
    let found = Command::new("parallel").arg("--version").output();
    assert!(
        found.is_ok_and(|out| out.status.success()),
        "GNU parallel is not installed: scripts/test.sh installs it (apt-get install parallel)"
    );
    Command::new("parallel")
}

pub fn run_command(mut cmd: Command, input: Option<Vec<u8>>) -> Out {
    Running::start_with(&mut cmd, input).wait(HANG)
}

/// Polls `check` every 10 ms until it returns `Some`, failing after `limit`.
#[track_caller]
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < limit, "gave up waiting for {what} after {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state letter of a process from /proc (R, S, D, Z, ...), `None` if it is gone.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: the state follows the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// Whether a process is alive: it exists (kill(pid, 0) succeeds) and is not a zombie.
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
    exists && proc_state(pid).is_some_and(|s| s != 'Z' && s != 'X')
}

/// Asserts that none of `pids` is alive, allowing a moment for processes that
/// already got SIGKILL to finish dying.
#[track_caller]
pub fn assert_all_dead(pids: &[i32]) {
    let start = Instant::now();
    loop {
        let living: Vec<(i32, Option<char>)> =
            pids.iter().filter(|&&p| alive(p)).map(|&p| (p, proc_state(p))).collect();
        if living.is_empty() {
            return;
        }
        if start.elapsed() > Duration::from_secs(5) {
            for &(pid, _) in &living {
                // SAFETY: a plain system call; these are the test's own task processes.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            panic!("processes of the task survived: {living:?} (pid, state)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids written one per line into `path` by a task.
pub fn read_pids(path: &str) -> Vec<i32> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let mut pids: Vec<i32> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap_or_else(|_| panic!("not a pid in {path}: {w:?}")))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A field of a JSON object as a string (panics with the object otherwise).
#[track_caller]
pub fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} is not a string in {value}"))
}

/// A field of a JSON object as an integer (panics with the object otherwise).
#[track_caller]
pub fn int_of(value: &Value, key: &str) -> i64 {
    value[key].as_i64().unwrap_or_else(|| panic!("{key} is not an integer in {value}"))
}

/// The task of `tasks` with number `n`.
#[track_caller]
pub fn task(tasks: &[Value], n: i64) -> &Value {
    tasks
        .iter()
        .find(|t| t["task"].as_i64() == Some(n))
        .unwrap_or_else(|| panic!("no task {n} in {tasks:#?}"))
}
