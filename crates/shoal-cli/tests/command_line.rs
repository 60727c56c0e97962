//! The command line around the runs: `shoal logs`, `results --task` and several
//! statuses, `run --quiet`, one `shoal: error:` prefix for every error (clap's too),
//! and the completion scripts and manual page generated from the clap definitions.

mod common;

use std::process::Command;

use common::{run_command, Env};

/// A run of four tasks: 1 and 3 succeed, 2 fails after a retry (printing on both
/// streams), 4 times out.
fn a_run(env: &Env) {
    let script = "case {} in 2) echo out-{#}; echo err >&2; exit 3;; 4) sleep 5;; esac; echo ok";
    let out = env.run(&[
        "run",
        "-k",
        "--retries",
        "1",
        "--retry-delay",
        "0",
        "--timeout",
        "1s",
        script,
        ":::",
        "1",
        "2",
        "3",
        "4",
    ]);
    out.expect_code(1);
}

#[test]
fn logs_shows_a_tasks_every_attempt_and_its_output() {
    let env = Env::new();
    a_run(&env);
    let out = env.run(&["logs", "2"]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("run 1 task 2: failed, exit 3, 2 attempts: "), "{}", out.stdout);
    assert!(lines[1].starts_with("--- attempt 1: failed, exit 3, "), "{}", out.stdout);
    assert!(out.stdout.contains("--- attempt 2: failed, exit 3, "), "{}", out.stdout);
    assert_eq!(out.stdout.matches("[stdout]\nout-2\n[stderr]\nerr\n").count(), 2, "{}", out.stdout);
    // The run can be named; JSON gives one attempt a line.
    let out = env.run(&["logs", "1", "4", "--json"]);
    out.expect_code(0);
    let attempts = common::json_lines(&out.stdout);
    assert_eq!(attempts.len(), 2, "the timed-out task was retried");
    assert_eq!(attempts[0]["outcome"], "timed_out");
    // A task or a run that is not there is an error.
    let out = env.run(&["logs", "1", "9"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "shoal: error: run 1 has no task 9\n");
    env.run(&["logs", "7", "1"]).expect_code(2);
    env.run(&["logs"]).expect_code(2);
}

#[test]
fn results_of_some_tasks_and_of_several_statuses() {
    let env = Env::new();
    a_run(&env);
    let tasks = |args: &[&str]| -> Vec<i64> {
        env.results(args).iter().map(|t| common::int_of(t, "task")).collect()
    };
    assert_eq!(tasks(&["--status", "failed,timed_out"]), [2, 4]);
    assert_eq!(tasks(&["--status", "failed", "--status", "succeeded"]), [1, 2, 3]);
    assert_eq!(tasks(&["--status", "timed_out"]), [4]);
    assert_eq!(tasks(&["--task", "3"]), [3]);
    assert_eq!(tasks(&["--task", "3", "--task", "1", "--status", "succeeded"]), [1, 3]);
    assert_eq!(tasks(&["--task", "3", "--status", "failed"]), Vec::<i64>::new());
    let out = env.run(&["results", "--task", "9"]);
    out.expect_code(2);
    assert_eq!(out.stderr, "shoal: error: run 1 has no task 9\n");
    let out = env.run(&["results", "--status", "failed,bogus"]);
    out.expect_code(2);
    assert!(out.stderr.starts_with("shoal: error: unknown status 'bogus'"), "{}", out.stderr);
}

#[test]
fn quiet_says_nothing_but_the_tasks_output() {
    let env = Env::new();
    let out = env.run(&["run", "--quiet", "-k", "echo", ":::", "a", "b"]);
    out.expect_code(0);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("a\nb\n", ""));
    let out = env.run(&["run", "--quiet", "echo oops-{} >&2; exit 1", ":::", "a"]);
    out.expect_code(1);
    assert_eq!(out.stderr, "oops-a\n", "the task's own stderr, no summary");
}

#[test]
fn every_error_has_shoals_prefix_and_usage_errors_exit_2() {
    let env = Env::new();
    for args in [&["run", "--bogus"][..], &["bogus"], &["results", "--run", "x"], &["run", "-j"]] {
        let out = env.run(args);
        out.expect_code(2);
        assert!(out.stderr.starts_with("shoal: error: "), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("\nerror:"), "{args:?}: {}", out.stderr);
    }
    // Help and version are no errors: on stdout, exit 0, as they were.
    let out = env.run(&["--version"]);
    out.expect_code(0);
    assert!(out.stdout.starts_with("shoal "), "{}", out.stdout);
    env.run(&["run", "--help"]).expect_code(0);
}

#[test]
fn bash_completion_sources_and_completes_subcommands_and_options() {
    let env = Env::new();
    let script = env.run(&["completions", "bash"]);
    script.expect_code(0);
    let path = env.write("shoal.bash", &script.stdout);
    // What bash offers for `shoal re<TAB>` and `shoal run --ha<TAB>`.
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {path}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; \
             COMP_POINT={}; _shoal shoal {} {}; echo \"${{COMPREPLY[@]}}\"",
            words.len() - 1,
            line.len(),
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let mut bash = Command::new("bash");
        bash.args(["-c", &program]);
        let out = run_command(bash, None);
        out.expect_code(0);
        out.stdout.trim().to_owned()
    };
    assert_eq!(complete("shoal re"), "results");
    assert_eq!(complete("shoal lo"), "logs");
    assert_eq!(complete("shoal run --ha"), "--halt");
    for shell in ["zsh", "fish"] {
        let out = env.run(&["completions", shell]);
        out.expect_code(0);
        assert!(out.stdout.contains("results"), "{shell}: {}", out.stdout);
    }
    env.run(&["completions", "tcsh"]).expect_code(2);
}

#[test]
fn the_manual_page_renders_with_every_subcommand() {
    let env = Env::new();
    let page = env.run(&["man"]);
    page.expect_code(0);
    assert!(page.stdout.starts_with(".ie"), "roff: {}", &page.stdout[..40]);
    let mut groff = Command::new("groff");
    groff.args(["-man", "-Tutf8", "-ww", "-z"]);
    let checked = run_command(groff, Some(page.stdout.clone().into_bytes()));
    checked.expect_code(0);
    assert_eq!(checked.stderr, "", "groff finds nothing wrong");
    let mut man = Command::new("man");
    man.args(["-l", "-"]).env("MANWIDTH", "100");
    let shown = run_command(man, Some(page.stdout.into_bytes()));
    shown.expect_code(0);
    for text in ["shoal-run(1)", "shoal-logs(1)", "--halt <WHEN,WHY=N>", "--resume-failed"] {
        assert!(shown.stdout.contains(text), "{text}: {}", shown.stdout);
    }
}
