//! `shoal` on a PostgreSQL store (`--store postgresql://...`), against this test
//! binary's own throwaway cluster: `shoal store init`, a run and its reports, the
//! errors of a store that cannot be used (exit 2, fast), and a Python-style keyed
//! result found again through the store. Steering, `kill -9` and resume run on both
//! backends in control.rs and reliability.rs.

mod common;

use std::time::{Duration, Instant};

use common::{int_of, str_of, task, Env};
use shoal_core::store::postgres::cluster::Cluster;

/// The database name of a cluster URL.
fn database(env: &Env) -> String {
    env.store.to_string_lossy().rsplit('/').next().unwrap().to_owned()
}

#[test]
fn store_init_creates_the_tables_once_and_says_what_it_did() {
    let env = Env::on_postgres();
    let first = env.run(&["store", "init"]);
    first.expect_code(0);
    assert!(
        first.stdout.starts_with("created the shoal tables (schema version 2) in "),
        "{first:?}"
    );
    let again = env.run(&["store", "init"]);
    again.expect_code(0);
    assert!(again.stdout.contains("already holds the shoal tables"), "{again:?}");
    let runs = env.run(&["runs", "--json"]);
    runs.expect_code(0);
    assert_eq!(runs.stdout, "", "no runs yet");
}

#[test]
fn a_run_is_recorded_and_its_reports_read_it() {
    let env = Env::on_postgres();
    let script = env.write("task.sh", "echo out $1\n[ $1 != 3 ]\n");
    let out = env.run(&["run", "-j2", "--no-progress", "sh", &script, ":::", "1", "2", "3"]);
    out.expect_code(1);
    assert!(out.stderr.contains("2 succeeded, 1 failed"), "{}", out.stderr);
    let runs = env.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(str_of(&runs[0], "status"), "finished");
    assert_eq!(runs[0]["counts"]["succeeded"], 2);
    let tasks = env.results(&[]);
    assert_eq!(tasks.len(), 3);
    assert_eq!(str_of(task(&tasks, 1), "stdout"), "out 1\n");
    assert_eq!(str_of(task(&tasks, 3), "status"), "failed");
    assert_eq!(int_of(task(&tasks, 3), "exit_code"), 1);
    let stats = env.stats(&[]);
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["finished"], 3);
    let exported = env.export(&[]);
    assert_eq!(exported.len(), 3);
    assert_eq!(exported[0]["attempt_log"].as_array().unwrap().len(), 1);
    // A resume runs the failed task again, in the same run.
    let resumed = env.run(&["run", "--resume", "--no-progress"]);
    resumed.expect_code(1);
    assert!(resumed.stderr.contains("2 already done"), "{}", resumed.stderr);
    assert_eq!(env.runs().len(), 1);
    assert_eq!(int_of(task(&env.results(&[]), 3), "attempts"), 2);
    // `SHOAL_STORE` names it as `--store` does.
    let mut cmd = std::process::Command::new(common::shoal_bin());
    cmd.args(["runs", "--json"]).current_dir(env.path()).env("SHOAL_STORE", &env.store);
    let by_env = common::run_command(cmd, None);
    by_env.expect_code(0);
    assert_eq!(common::json_lines(&by_env.stdout).len(), 1);
}

#[test]
fn a_database_without_the_tables_or_of_another_version_is_refused_by_the_reports() {
    let env = Env::on_postgres();
    for args in [&["runs"][..], &["results"], &["stats"], &["export"], &["watch", "1"]] {
        let out = env.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains("holds no shoal tables"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("shoal store init"), "{}", out.stderr);
    }
    env.run(&["store", "init"]).expect_code(0);
    Cluster::shared().sql(&database(&env), "UPDATE shoal.shoal_schema SET version = 7");
    for args in [&["runs"][..], &["run", "true", ":::", "a"], &["store", "init"]] {
        let out = env.run(args);
        out.expect_code(2);
        assert!(
            out.stderr.contains("has shoal schema version 7; this shoal reads version 2"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn a_store_that_cannot_be_reached_fails_fast_with_exit_2_and_no_password() {
    let mut env = Env::new();
    let started = Instant::now();
    for url in [
        "postgresql://ann:s3cret@127.0.0.1:1/jobs",
        "postgresql://ann:s3cret@192.0.2.1/jobs?connect_timeout=2",
        "postgresql://ann:s3cret@h/jobs?sslmode=bogus",
    ] {
        env.store = url.into();
        for args in [&["run", "true", ":::", "a"][..], &["runs"], &["store", "init"]] {
            let out = env.run(args);
            out.expect_code(2);
            assert!(
                out.stderr
                    .starts_with("shoal: error: cannot connect to the store postgresql://ann:***@"),
                "{url} {args:?}: {}",
                out.stderr
            );
            assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
        }
    }
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let left: Vec<_> = std::fs::read_dir(env.path()).unwrap().collect();
    assert!(left.is_empty(), "created {left:?}");
}
