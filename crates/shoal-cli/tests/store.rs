//! The store never lies, tested for real: reports read a store that another user
//! owns in a directory they cannot write, creating nothing; damaged pages and write-
//! ahead logs are found and named before anything is written; a full disk stops the
//! run with one line and leaves it resumable and honest; unfinished tasks count as
//! unfinished everywhere; every attempt's output is kept.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{int_of, json_lines, run_command, str_of, task, wait_for, Env, Out};
use serde_json::Value;

/// The prefix that runs a command as `nobody` (uid and gid 65534); `None` where this
/// process cannot switch users (not root).
fn as_nobody() -> Option<[&'static str; 4]> {
    let prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let works =
        Command::new(prefix[0]).args(&prefix[1..]).arg("true").status().is_ok_and(|s| s.success());
    (works && rustix::process::geteuid().is_root()).then_some(prefix)
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Every file of `dir` with its owner and bytes.
fn files(dir: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let owner = entry.metadata().unwrap().uid();
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            (entry.file_name().to_string_lossy().into_owned(), (owner, bytes))
        })
        .collect()
}

/// Runs a report as `nobody`.
fn report_as(env: &Env, nobody: &[&str], args: &[&str]) -> Out {
    run_command(env.command_under(nobody, args), None)
}

// ---------------------------------------------------------------------------
// Read-only reports
// ---------------------------------------------------------------------------

#[test]
fn reports_read_a_store_another_user_owns_in_a_directory_they_cannot_write() {
    let Some(nobody) = as_nobody() else {
        eprintln!("skipped: needs root to run the reports as another user (setpriv)");
        return;
    };
    let env = Env::new();
    // A run that waits for `go` while the reports read its store: a live writer, with
    // its -wal and -shm files beside the store.
    let go = env.file("go");
    let script = env.write(
        "wait.sh",
        "for i in $(seq 300); do [ -e \"$1\" ] && break; sleep 0.1; done\necho \"done $2\"\n",
    );
    let shoal = env.spawn(&["run", "-j1", "sh", &script, &go, "{}", ":::", "a", "b"]);
    wait_for("the run to start", Duration::from_secs(10), || {
        let runs = json_lines(&env.run(&["runs", "--json"]).stdout);
        runs.first().is_some_and(|r| r["counts"]["running"] == 1).then_some(())
    });
    // Shared for reading, as a user shares a store; the directory stays root's alone.
    chmod(env.path(), 0o755);
    for name in ["s.db", "s.db-wal", "s.db-shm"] {
        chmod(&env.path().join(name), 0o644);
    }
    let out = report_as(&env, &nobody, &["runs", "--json"]);
    out.expect_code(0);
    let runs = json_lines(&out.stdout);
    assert_eq!(str_of(&runs[0], "status"), "running", "{runs:?}");
    report_as(&env, &nobody, &["stats", "--json"]).expect_code(0);
    let created: Vec<String> = files(env.path())
        .into_iter()
        .filter(|(_, (owner, _))| *owner != 0)
        .map(|(name, _)| name)
        .collect();
    assert!(created.is_empty(), "nobody created {created:?}");

    std::fs::write(&go, "").unwrap();
    shoal.wait(common::HANG).expect_code(0);
    chmod(&env.store, 0o644);
    // Closed cleanly: no log, no -shm; the reports read the file alone.
    let before = files(env.path());
    assert!(!before.contains_key("s.db-wal"), "{:?}", before.keys());
    for args in [&["runs", "--json"][..], &["results", "--json"], &["stats", "--json"], &["export"]]
    {
        let out = report_as(&env, &nobody, args);
        out.expect_code(0);
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    let out = report_as(&env, &nobody, &["results", "--json"]);
    let results = json_lines(&out.stdout);
    assert_eq!(str_of(task(&results, 2), "stdout"), "done b\n");
    let stats: Value =
        serde_json::from_str(report_as(&env, &nobody, &["stats", "--json"]).stdout.trim()).unwrap();
    assert_eq!(stats["counts"]["succeeded"], 2);
    assert_eq!(files(env.path()), before, "the reports created or changed nothing");
}

#[test]
fn resume_on_a_missing_store_names_it_and_creates_nothing() {
    let env = Env::new();
    let out = env.run(&["run", "--resume"]);
    out.expect_code(2);
    assert!(out.stderr.contains(&env.store.display().to_string()), "{}", out.stderr);
    // The default store, in a directory without one: no `.shoal` appears either.
    let out = run_command(
        {
            let mut cmd = Command::new(common::shoal_bin());
            cmd.args(["run", "--resume"])
                .current_dir(env.path())
                .env_remove("SHOAL_STORE")
                .env("NO_COLOR", "1");
            cmd
        },
        None,
    );
    out.expect_code(2);
    assert!(out.stderr.contains(".shoal/shoal.db"), "{}", out.stderr);
    assert!(files(env.path()).is_empty(), "created {:?}", files(env.path()).keys());
}

// ---------------------------------------------------------------------------
// Damage is found and named before anything is written
// ---------------------------------------------------------------------------

/// `python3` with the standard sqlite3 module, for reading a store's layout.
fn sqlite_value(store: &Path, query: &str) -> i64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])")
        .arg(store)
        .arg(query)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a number")
}

#[test]
fn a_damaged_page_stops_every_command_before_it_reads_or_writes() {
    let env = Env::new();
    let inputs: Vec<String> = (1..=200).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "-j2", "echo", ":::"];
    args.extend(inputs.iter().map(String::as_str));
    env.run(&args).expect_code(0);
    // Scribble over the root page of the attempts table: `runs` never reads it, and
    // a new run only meets it when its first attempt is recorded.
    let root =
        sqlite_value(&env.store, "SELECT rootpage FROM sqlite_master WHERE name = 'attempts'");
    let page = sqlite_value(&env.store, "PRAGMA page_size");
    let mut bytes = std::fs::read(&env.store).unwrap();
    let at = ((root - 1) * page) as usize;
    bytes[at..at + 64].fill(0xa5);
    std::fs::write(&env.store, &bytes).unwrap();
    env.expect_every_command_refuses_a_damaged_store("quick check");
    assert_eq!(std::fs::read(&env.store).unwrap(), bytes, "nothing was written into it");
}

#[test]
fn a_damaged_log_frame_is_named_instead_of_losing_the_commits_after_it() {
    let env = Env::new();
    let inputs: String = (1..=1000).map(|n| format!("{n}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    // At least 2.5 s in all: the kill comes well before the end.
    let script = env.write("task.sh", "sleep 0.005\necho \"$1\"\n");
    let shoal = env.spawn(&["run", "-j2", "sh", &script, "::::", &inputs]);
    wait_for("tasks to succeed", Duration::from_secs(20), || {
        let stats: Value =
            serde_json::from_str(env.run(&["stats", "--json"]).stdout.trim()).ok()?;
        (stats["counts"]["succeeded"].as_i64()? >= 100).then_some(())
    });
    // Killed, shoal leaves its log behind with every commit since the last checkpoint.
    shoal.signal(libc::SIGKILL);
    assert_eq!(shoal.wait(Duration::from_secs(10)).status.code(), None);
    let wal = env.path().join("s.db-wal");
    let mut log = std::fs::read(&wal).unwrap();
    let frame = 24 + 4096;
    assert!(log.len() > 32 + 20 * frame, "a log of many frames: {} bytes", log.len());
    // One flipped byte in the page of the log's second frame.
    log[32 + frame + 24 + 100] ^= 0x55;
    std::fs::write(&wal, &log).unwrap();
    for args in [&["runs"][..], &["stats"], &["export"], &["run", "--resume"]] {
        let out = env.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains("is damaged"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("s.db-wal is damaged at frame 2"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("committed transactions after it"), "{}", out.stderr);
    }
    assert_eq!(std::fs::read(&wal).unwrap(), log, "the log was left as it was");
}

// ---------------------------------------------------------------------------
// Every attempt: its signal, its output, and a line when it is retried
// ---------------------------------------------------------------------------

#[test]
fn a_retried_task_says_so_and_keeps_every_attempts_output() {
    let env = Env::new();
    let count = env.file("count");
    // Fails on its first two tries, saying which try it is on both streams.
    let script = env.write(
        "flaky.sh",
        "n=$(( $(cat \"$1\" 2>/dev/null || echo 0) + 1 )); echo $n > \"$1\"\n\
         echo \"try $n\"; echo \"err $n\" >&2; [ $n -ge 3 ]\n",
    );
    let out =
        env.run(&["run", "--retries", "3", "--retry-delay", "0.1", "sh", &script, ":::", &count]);
    out.expect_code(0);
    assert_eq!(out.stdout, "try 3\n", "only the last attempt's output is printed");
    let retries: Vec<&str> = out.stderr.lines().filter(|l| l.contains("retry")).collect();
    assert_eq!(
        retries,
        [
            "shoal: retry 2/4 of task 1 in 0.1s (exit code 1)",
            "shoal: retry 3/4 of task 1 in 0.2s (exit code 1)"
        ],
        "{}",
        out.stderr
    );
    let exported = env.export(&[]);
    let log = exported[0]["attempt_log"].as_array().unwrap();
    let outputs: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|a| (str_of(a, "outcome"), str_of(a, "stdout"), str_of(a, "stderr")))
        .collect();
    assert_eq!(
        outputs,
        [
            ("failed", "try 1\n", "err 1\n"),
            ("failed", "try 2\n", "err 2\n"),
            ("succeeded", "try 3\n", "err 3\n")
        ]
    );
    assert_eq!(str_of(&exported[0], "stdout"), "try 3\n", "the task shows its last attempt");
}

#[test]
fn a_timed_out_task_records_the_signal_that_ended_it() {
    let env = Env::new();
    // `ignore` shrugs off the SIGTERM (its sleep inherits that), so the SIGKILL after
    // the grace ends it; `plain` dies of the SIGTERM.
    let script = env.write("sleepy.sh", "if [ \"$1\" = ignore ]; then trap '' TERM; fi\nsleep 5\n");
    let out = env.run(&[
        "run",
        "--timeout",
        "0.3",
        "--kill-grace",
        "0.3",
        "sh",
        &script,
        ":::",
        "ignore",
        "plain",
    ]);
    out.expect_code(1);
    let exported = env.export(&[]);
    for (n, signal) in [(1, libc::SIGKILL), (2, libc::SIGTERM)] {
        let t = task(&exported, n);
        assert_eq!(str_of(t, "status"), "timed_out", "{t}");
        assert_eq!(int_of(t, "signal"), i64::from(signal), "{t}");
        assert_eq!(int_of(&t["attempt_log"][0], "signal"), i64::from(signal), "{t}");
    }
    let table = env.run(&["results"]).stdout;
    assert!(table.contains("SIGKILL") && table.contains("SIGTERM"), "{table}");
}

// ---------------------------------------------------------------------------
// Unfinished tasks count as unfinished
// ---------------------------------------------------------------------------

#[test]
fn unfinished_tasks_count_as_unfinished_in_runs_and_stats() {
    let env = Env::new();
    // Task 1 ends at once; task 2 waits to be stopped; 3 to 6 never start.
    let script = env.write(
        "slow.sh",
        "if [ \"$1\" = 1 ]; then echo one; exit 0; fi\n\
         for i in $(seq 300); do sleep 0.1; done\n",
    );
    let shoal = env.spawn(&["run", "-j1", "sh", &script, ":::", "1", "2", "3", "4", "5", "6"]);
    wait_for("task 2 to run", Duration::from_secs(10), || {
        let runs = json_lines(&env.run(&["runs", "--json"]).stdout);
        let counts = &runs.first()?["counts"];
        (counts["succeeded"] == 1 && counts["running"] == 1).then_some(())
    });
    shoal.signal(libc::SIGINT);
    let out = shoal.wait(common::HANG);
    out.expect_code(130);
    let summary = "1 succeeded, 5 unfinished (1 cancelled; continue with `shoal run --resume 1`)";
    assert!(out.stderr.contains(summary), "{}", out.stderr);

    let runs = env.runs();
    assert_eq!(str_of(&runs[0], "status"), "interrupted");
    assert_eq!((int_of(&runs[0], "total"), int_of(&runs[0], "unfinished")), (6, 5), "{runs:?}");
    let stats = env.stats(&[]);
    assert_eq!((int_of(&stats, "finished"), int_of(&stats, "unfinished")), (1, 5), "{stats}");
    assert_eq!(stats["success_rate"], 1.0);
    let text = env.run(&["stats"]).stdout;
    assert!(text.contains("run 1 (interrupted): 6 tasks"), "{text}");
    assert!(text.contains("success rate 100.0% (1 of 1 finished tasks; 5 unfinished)"), "{text}");
    let table = env.run(&["runs"]).stdout;
    let row = table.lines().nth(1).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..6], ["1", "interrupted", "6", "1", "0", "5"], "{table}");

    // What an older shoal left when its store stopped taking writes: `finished`, with
    // tasks still queued. It did not finish.
    let edited = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE runs SET status = 'finished'\"); c.commit()")
        .arg(&env.store)
        .status()
        .expect("run python3");
    assert!(edited.success());
    assert_eq!(str_of(&env.runs()[0], "status"), "interrupted");
    assert!(env.run(&["stats"]).stdout.contains("run 1 (interrupted)"));
}

// ---------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------

/// A small tmpfs mounted in a private mount namespace, kept alive by a holder
/// process; commands enter it with `nsenter`. Gone with the holder.
struct SmallDisk {
    holder: std::process::Child,
    dir: std::path::PathBuf,
    enter: Vec<String>,
}

impl SmallDisk {
    /// Mounts `size` of tmpfs on `dir`; `None` where no mount namespace can be had.
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        use std::io::BufRead;
        std::fs::create_dir(dir).unwrap();
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount -t tmpfs -o size=$2 tmpfs \"$1\" && echo ready && exec sleep 600")
            .args(["sh", &dir.display().to_string(), size])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut line = String::new();
        let stdout = holder.stdout.take().unwrap();
        std::io::BufReader::new(stdout).read_line(&mut line).ok()?;
        let pid = holder.id().to_string();
        let enter = ["nsenter", "--target", &pid, "--mount", "--"].map(String::from).to_vec();
        let disk = SmallDisk { holder, dir: dir.to_owned(), enter };
        (line.trim() == "ready").then_some(disk)
    }

    fn prefix(&self) -> Vec<&str> {
        self.enter.iter().map(String::as_str).collect()
    }

    /// Runs shoal inside the namespace.
    fn shoal(&self, env: &Env, args: &[&str]) -> Out {
        run_command(env.command_under(&self.prefix(), args), None)
    }

    /// Runs a command inside the namespace to its end.
    fn inside(&self, args: &[&str]) -> std::process::Output {
        Command::new(&self.enter[0]).args(&self.enter[1..]).args(args).output().unwrap()
    }

    /// Free blocks of 4 KiB (tmpfs's size of a block).
    fn free_blocks(&self) -> u64 {
        let free = self.inside(&["stat", "--file-system", "--format=%f %S", self.path()]);
        let free = String::from_utf8(free.stdout).unwrap();
        assert!(free.trim().ends_with(" 4096"), "blocks of 4 KiB: {free}");
        free.split(' ').next().unwrap().parse().unwrap()
    }

    /// Fills the file system with a file, `fill`, up to its last `leave` blocks.
    fn fill(&self, leave: u64) {
        let fill = format!("of={}", self.dir.join("fill").display());
        let count = format!("count={}", self.free_blocks().saturating_sub(leave));
        // Filling to the end, dd ends with "No space left on device": that is the point.
        self.inside(&["dd", "if=/dev/zero", &fill, "bs=4096", &count]);
        assert_eq!(self.free_blocks(), leave);
    }

    /// Removes the file `fill` made.
    fn unfill(&self) {
        let fill = self.dir.join("fill");
        assert!(self.inside(&["rm", &fill.display().to_string()]).status.success());
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("a UTF-8 path")
    }

    /// Every file on the disk but `fill`, with its size and checksum (`cksum`).
    fn files(&self) -> String {
        let list = "cd \"$1\" && for f in *; do [ \"$f\" = fill ] || cksum \"$f\"; done";
        let out = self.inside(&["sh", "-c", list, "sh", self.path()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Gives the file system room again.
    fn grow(&self, size: &str) {
        let status = Command::new(&self.enter[0])
            .args(&self.enter[1..])
            .args(["mount", "-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(status.success(), "remount {}", self.dir.display());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn a_full_disk_stops_the_run_with_one_line_and_resume_finishes_it_truly() {
    const TASKS: i64 = 600;
    let mut env = Env::new();
    let Some(disk) = SmallDisk::mount(&env.path().join("disk"), "2m") else {
        eprintln!("skipped: no private mount namespace with a tmpfs can be had here");
        return;
    };
    env.store = disk.dir.join("s.db");
    // 4 kB of output each: 600 of them do not fit in 2 MB with the store's log.
    // Task 1, the first time, runs until it is stopped (at most 20 s), its pid noted.
    let pid = env.file("pid");
    let script = env.write(
        "task.sh",
        &format!(
            "if [ \"$1\" = 1 ] && [ ! -e {pid} ]; then echo $$ > {pid}\n\
             for i in $(seq 200); do sleep 0.1; done; fi\n\
             head -c 4000 /dev/zero | tr '\\0' x; echo \" $1\"\n"
        ),
    );
    let inputs: String = (1..=TASKS).map(|n| format!("{n}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    let out = disk.shoal(&env, &["run", "-j2", "sh", &script, "::::", &inputs]);

    out.expect_code(74);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(!out.stderr.contains('\x1b'), "no colours on a non-terminal: {:?}", out.stderr);
    let failure = "shoal: error: the store";
    assert_eq!(lines.iter().filter(|l| l.starts_with(failure)).count(), 1, "{lines:#?}");
    assert!(lines[0].contains("takes no more writes (database or disk is full)"), "{lines:#?}");
    assert!(lines[0].contains("`shoal run --resume 1` continues it"), "{lines:#?}");
    assert_eq!(lines.len(), 2, "the failure and the summary, nothing more: {lines:#?}");

    // The store is honest: the run did not finish, what it did not record is
    // unfinished, and it holds exactly the results that were shown.
    let runs = json_lines(&disk.shoal(&env, &["runs", "--json"]).expect_code(0).stdout.clone());
    let run = &runs[0];
    assert_eq!(str_of(run, "status"), "interrupted", "{run}");
    let succeeded = run["counts"]["succeeded"].as_i64().unwrap();
    assert!(succeeded > 0 && succeeded < TASKS, "{run}");
    assert_eq!(int_of(run, "unfinished"), TASKS - succeeded, "{run}");
    assert!(run["counts"]["queued"].as_i64().unwrap() > 0, "dispatch stopped: {run}");
    // What was printed is what the store recorded, no more, no less.
    let results =
        json_lines(&disk.shoal(&env, &["results", "--json"]).expect_code(0).stdout.clone());
    let mut stored: Vec<&str> =
        results.iter().map(|t| str_of(t, "stdout")).filter(|o| !o.is_empty()).collect();
    let mut shown: Vec<&str> = out.stdout.split_inclusive('\n').collect();
    stored.sort_unstable();
    shown.sort_unstable();
    assert_eq!(shown, stored, "shown = stored");
    assert!(lines[1].contains(&format!("{succeeded} succeeded, {} unfinished", TASKS - succeeded)));
    // The task still running when the disk filled was stopped, and that is recorded.
    assert_eq!(str_of(task(&results, 1), "status"), "cancelled", "{}", task(&results, 1));
    common::assert_all_dead(&common::read_pids(&pid));

    // Room again: the resume runs what was not recorded, and every task is true.
    disk.grow("64m");
    let resumed = disk.shoal(&env, &["run", "--resume"]);
    resumed.expect_code(0);
    let exported = json_lines(&disk.shoal(&env, &["export"]).expect_code(0).stdout.clone());
    assert_eq!(exported.len() as i64, TASKS);
    for t in &exported {
        let n = int_of(t, "task");
        assert_eq!(str_of(t, "status"), "succeeded", "{t}");
        assert_eq!(str_of(t, "stdout"), format!("{} {n}\n", "x".repeat(4000)));
        let log = t["attempt_log"].as_array().unwrap();
        assert_eq!(str_of(log.last().unwrap(), "outcome"), "succeeded", "{t}");
    }
    let runs = json_lines(&disk.shoal(&env, &["runs", "--json"]).expect_code(0).stdout.clone());
    assert_eq!(str_of(&runs[0], "status"), "finished");
    assert_eq!(runs[0]["counts"]["succeeded"], TASKS);
}

#[test]
fn a_store_on_a_full_disk_is_named_so_and_the_reports_still_read_it() {
    let mut env = Env::new();
    let Some(disk) = SmallDisk::mount(&env.path().join("disk"), "1m") else {
        eprintln!("skipped: no private mount namespace with a tmpfs can be had here");
        return;
    };
    env.store = disk.dir.join("s.db");
    disk.shoal(&env, &["run", "-k", "echo", ":::", "a", "b"]).expect_code(0);
    disk.fill(0);
    let full = |doing: &str, store: &Path| {
        format!(
            "shoal: error: cannot {doing} the store {}: its file system is full (0 bytes free)\n",
            store.display()
        )
    };
    // A run, a resume, a new store: each says the disk is full, and exits 74.
    for args in [&["run", "echo", ":::", "c"][..], &["run", "--resume"]] {
        let out = disk.shoal(&env, args);
        out.expect_code(74);
        assert_eq!(
            (out.stdout.as_str(), out.stderr.clone()),
            ("", full("open", &env.store)),
            "{args:?}"
        );
    }
    let store = env.store.clone();
    env.store = disk.dir.join("new.db");
    let out = disk.shoal(&env, &["run", "echo", ":::", "c"]);
    out.expect_code(74);
    assert_eq!(out.stderr, full("create", &env.store));
    // Nothing is left of the store that could not be created.
    let out = disk.shoal(&env, &["runs"]);
    out.expect_code(2);
    assert!(out.stderr.contains("no store at"), "{}", out.stderr);
    env.store = store;

    // The failed opens left an empty log and a -shm file shorter than its header (3
    // bytes), which SQLite could not grow: the reports read the store past them, as
    // it is, and change nothing.
    let left = disk.files();
    let sizes: Vec<(&str, u64)> = left
        .lines()
        .map(|l| {
            let cells: Vec<&str> = l.split(' ').collect();
            (cells[2], cells[1].parse().unwrap())
        })
        .filter(|(name, _)| name.starts_with("s.db-"))
        .collect();
    assert!(sizes.contains(&("s.db-wal", 0)), "{left}");
    assert!(sizes.iter().any(|&(name, size)| name == "s.db-shm" && size < 32), "{left}");
    let runs = json_lines(&disk.shoal(&env, &["runs", "--json"]).expect_code(0).stdout.clone());
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (str_of(&runs[0], "status"), &runs[0]["counts"]["succeeded"]),
        ("finished", &2.into())
    );
    let results =
        json_lines(&disk.shoal(&env, &["results", "--json"]).expect_code(0).stdout.clone());
    let outputs: Vec<&str> = results.iter().map(|t| str_of(t, "stdout")).collect();
    assert_eq!(outputs, ["a\n", "b\n"]);
    disk.shoal(&env, &["stats", "--json"]).expect_code(0);
    assert_eq!(json_lines(&disk.shoal(&env, &["export"]).expect_code(0).stdout.clone()).len(), 2);
    assert_eq!(disk.files(), left, "the reports wrote nothing");

    // Room to open the store but not to record a run of 2,000 tasks of 200 bytes.
    disk.unfill();
    disk.fill(24);
    let inputs: String = (0..2000).map(|n| format!("{n:0200}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    let out = disk.shoal(&env, &["run", "echo", "::::", &inputs]);
    out.expect_code(74);
    let prefix =
        format!("shoal: error: cannot record a run in the store {}: ", env.store.display());
    assert!(out.stderr.starts_with(&prefix), "{}", out.stderr);
    assert!(out.stderr.contains("its file system is full ("), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    let runs = json_lines(&disk.shoal(&env, &["runs", "--json"]).expect_code(0).stdout.clone());
    assert_eq!(runs.len(), 1, "no run was recorded: {runs:?}");

    // Room again: the store takes the next run, and the new store is made.
    disk.unfill();
    let out = disk.shoal(&env, &["run", "echo", ":::", "c"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "c\n");
    let runs = json_lines(&disk.shoal(&env, &["runs", "--json"]).expect_code(0).stdout.clone());
    assert_eq!(runs.len(), 2);
    env.store = disk.dir.join("new.db");
    disk.shoal(&env, &["run", "echo", ":::", "c"]).expect_code(0);
}
