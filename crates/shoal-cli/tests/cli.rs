//! The `shoal` command line end to end: inputs, replacement strings, output modes,
//! exit statuses, the report subcommands' shapes, and bad input (snapshots of the
//! error text: a clear message, exit status 2, never a panic).

mod common;

use common::{int_of, json_lines, keys, str_of, task, Env};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Inputs and replacement strings
// ---------------------------------------------------------------------------

#[test]
fn replacement_strings_end_to_end() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j1",
        "-k",
        "echo",
        "{}",
        "{.}",
        "{/}",
        "{//}",
        "{/.}",
        "{#}",
        "{%}",
        ":::",
        "/a/b/c.tar.gz",
        "x.y",
        "dir/sub/",
        "plain",
        "d.d/file",
    ]);
    out.expect_code(0);
    // GNU parallel's definitions: {/} and {/.} of "dir/sub/" are empty, and a dot
    // before the last slash is no extension.
    assert_eq!(
        out.stdout,
        "/a/b/c.tar.gz /a/b/c.tar c.tar.gz /a/b c.tar 1 1\n\
         x.y x x.y . x 2 1\n\
         dir/sub/ dir/sub/  dir  3 1\n\
         plain plain plain . plain 4 1\n\
         d.d/file d.d/file file d.d file 5 1\n"
    );
    insta::assert_snapshot!("replacement_strings_stdout", out.stdout);
    // The store keeps the command as it ran.
    let results = env.results(&[]);
    let command = str_of(task(&results, 2), "command");
    assert!(command.starts_with("echo x.y x x.y . x 2 "), "{command}");
}

#[test]
fn the_stored_command_shows_the_slot_it_ran_on() {
    let env = Env::new();
    env.run(&["run", "-j1", "echo", "{%}", ":::", "a"]).expect_code(0);
    assert_eq!(str_of(&env.results(&[])[0], "command"), "echo 1");
}

#[test]
fn slot_numbers_stay_within_the_slots() {
    let env = Env::new();
    let out = env.run(&["run", "-j2", "echo {#}:{%}", ":::", "a", "b", "c", "d", "e", "f"]);
    out.expect_code(0);
    let mut seen: Vec<(u32, u32)> = out
        .stdout
        .lines()
        .map(|l| {
            let (t, s) = l.split_once(':').expect("task:slot");
            (t.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert!(seen.iter().all(|p| p.1 == 1 || p.1 == 2), "{seen:?}");
    // Each task's slot in the store is the one it printed.
    let results = env.results(&[]);
    for (t, s) in seen {
        assert_eq!(int_of(task(&results, t.into()), "slot"), i64::from(s));
    }
}

#[test]
fn numbered_groups_make_the_cartesian_product_last_group_fastest() {
    let env = Env::new();
    let out =
        env.run(&["run", "-j2", "-k", "echo", "{2}{1}", ":::", "a", "b", ":::", "1", "2", "3"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "1a\n2a\n3a\n1b\n2b\n3b\n");
    let results = env.results(&[]);
    assert_eq!(results.len(), 6);
    assert_eq!(task(&results, 4)["args"], json!(["b", "1"]));

    let out = env.run(&["run", "-j1", "echo", "{1/.}", "{2}", ":::", "/x/y.txt", ":::", "z"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "y z\n");
}

#[test]
fn without_a_replacement_string_the_inputs_are_appended() {
    let env = Env::new();
    let out = env.run(&["run", "-j1", "-k", "echo", "pre", ":::", "a", "b", ":::", "1"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "pre a 1\npre b 1\n");
}

#[test]
fn a_file_group_gives_one_input_per_line() {
    let env = Env::new();
    let file = env.write("lines.txt", "one\ntwo words\n\nfour\r\n");
    let out = env.run(&["run", "-j2", "-k", "echo [{}]", "::::", &file]);
    out.expect_code(0);
    assert_eq!(out.stdout, "[one]\n[two words]\n[]\n[four]\n");

    // A file group and a literal group combine like two literal groups.
    let out = env.run(&["run", "-j2", "-k", "echo", "{1}-{2}", "::::", &file, ":::", "x"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "one-x\ntwo words-x\n-x\nfour-x\n");
}

#[test]
fn stdin_lines_are_the_inputs_when_no_group_is_given() {
    let env = Env::new();
    let out = env.run_stdin(&["run", "-j2", "-k", "echo", "got"], "a\nb c\n");
    out.expect_code(0);
    assert_eq!(out.stdout, "got a\ngot b c\n");
    let results = env.results(&[]);
    assert_eq!(task(&results, 2)["args"], json!(["b c"]));

    // `:::: -` reads standard input as a group.
    let out =
        env.run_stdin(&["run", "-j1", "-k", "echo", "{1}{2}", ":::", "x", "::::", "-"], "1\n2\n");
    out.expect_code(0);
    assert_eq!(out.stdout, "x1\nx2\n");
}

/// No input is not an error: nothing runs and shoal exits 0, as GNU parallel and
/// `xargs -r` do (`find … | shoal run cmd` that finds nothing). The run is recorded
/// with no tasks, so `shoal results` and `runs` tell the truth about the last run.
#[test]
fn no_inputs_run_nothing_and_exit_0() {
    let env = Env::new();
    let empty = env.write("empty.txt", "");
    let no_tasks = env.write("empty.jsonl", "\n  \n");
    let ran = env.file("ran");
    let cases: [(&[&str], &str); 5] = [
        (&["run", "touch", &ran], "stdin"),
        (&["run", "touch", &ran, "::::", &empty], "an empty :::: file"),
        (&["run", "--tasks", &no_tasks, "touch", &ran], "an empty --tasks file"),
        // GNU parallel exits 0 here too; shoal never falls back to stdin for it.
        (&["run", "touch", &ran, ":::"], "::: and nothing after it"),
        // The product with an empty group is empty (GNU parallel would take it as "").
        (&["run", "touch", "{1}{2}", ":::", &ran, "::::", &empty], "an empty second group"),
    ];
    for (n, (args, case)) in cases.iter().enumerate() {
        let out = env.run_stdin(args, "");
        out.expect_code(0);
        assert_eq!(out.stdout, "", "{case}");
        let expected = format!("shoal: run {}: no inputs, nothing to run\n", n + 1);
        assert_eq!(out.stderr, expected, "{case}");
    }
    assert!(!std::path::Path::new(&ran).exists(), "nothing ran");
    let runs = env.runs();
    assert_eq!(runs.len(), cases.len());
    for run in &runs {
        assert_eq!((str_of(run, "status"), int_of(run, "total")), ("finished", 0), "{run}");
    }
    assert!(env.results(&[]).is_empty());
    // A usage error is still one without inputs.
    bad_input(&env, &["run", "echo", "{2}"], "bad_group_out_of_range_without_inputs");

    // Side by side with the references (the test command installs parallel).
    let mut xargs = std::process::Command::new("xargs");
    xargs.arg("-r");
    for (reference, mut command) in [("xargs", xargs), ("parallel", common::gnu_parallel())] {
        let out =
            command.args(["touch", &ran]).stdin(std::process::Stdio::null()).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{reference:?}");
        assert!(!std::path::Path::new(&ran).exists(), "{reference:?} ran nothing either");
    }
}

/// An endless input line (`:::: /dev/zero`, or standard input from it) is an error
/// naming the source and the line, and is read in bounded memory: shoal runs here
/// under a 1 GiB address-space limit (it aborted: "memory allocation of … failed").
#[test]
fn bad_an_endless_input_line() {
    let env = Env::new();
    let bounded = |input: &str| {
        let script = format!("ulimit -v 1048576 && exec \"$@\" < {input}");
        ["sh".to_owned(), "-c".to_owned(), script, "sh".to_owned()]
    };
    let run = |input: &str, args: &[&str]| {
        let prefix = bounded(input);
        let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
        let out = common::run_command(env.command_under(&prefix, args), None);
        out.expect_code(2);
        assert_eq!(out.stdout, "");
        out.stderr
    };
    let why = format!(
        "a line longer than {} bytes (the longest argument Linux passes to a program)",
        longest_argument()
    );
    let err = run("/dev/null", &["run", "echo", "::::", "/dev/zero"]);
    assert_eq!(err, format!("shoal: error: /dev/zero:1: {why}\n"));
    let err = run("/dev/zero", &["run", "echo"]);
    assert_eq!(err, format!("shoal: error: (standard input):1: {why}\n"));
    let err = run("/dev/zero", &["run", "echo", ":::", "a", "::::", "-"]);
    assert_eq!(err, format!("shoal: error: (standard input):1: {why}\n"));
    let err = run("/dev/null", &["run", "--tasks", "/dev/zero", "echo"]);
    assert_eq!(
        err,
        "shoal: error: /dev/zero:1: a line longer than 1 MiB (the most a task line may hold)\n"
    );
    // A long line after good ones is named by its number.
    let long = env.write("long.txt", &format!("a\nb\n{}\n", "x".repeat(200_000)));
    let err = bad_input(&env, &["run", "echo", "::::", &long], "bad_input_line_too_long");
    assert!(err.contains(&format!("long.txt:3: {why}")), "{err}");
    assert!(env.runs().is_empty(), "nothing was recorded");
}

/// The longest argument this kernel passes to a program, found by trying: `true` is
/// run with ever longer arguments (bisecting up to 4 MiB) until exec says E2BIG.
fn longest_argument() -> usize {
    let runs = |len: usize| match std::process::Command::new("true").arg("x".repeat(len)).status() {
        Ok(status) => status.success(),
        Err(e) if e.raw_os_error() == Some(libc::E2BIG) => false,
        Err(e) => panic!("cannot run true: {e}"),
    };
    let (mut good, mut bad) = (0, 4 << 20);
    assert!(!runs(bad), "an argument of 4 MiB ran");
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if runs(mid) {
            good = mid;
        } else {
            bad = mid;
        }
    }
    good
}

/// An input line as long as the longest argument the kernel takes runs, whole, and
/// one byte more is refused before anything runs. (A line of 128 KiB was taken, and
/// its task failed with "Argument list too long": the kernel's limit counts the
/// argument's terminating NUL.)
#[test]
fn an_input_line_of_the_longest_argument_runs_and_one_byte_more_is_refused() {
    let env = Env::new();
    let longest = longest_argument();
    let length = env.write("length.sh", "printf '%s\\n' \"${#1}\"\n");
    let line = "x".repeat(longest);
    let fits = env.write("fits.txt", &format!("ok\n{line}\n"));
    let out = env.run(&["run", "-k", "sh", &length, "::::", &fits]);
    out.expect_code(0);
    assert_eq!(out.stdout, format!("2\n{longest}\n"), "{}", out.stderr);

    let over = env.write("over.txt", &format!("ok\n{line}y\n"));
    let out = env.run(&["run", "sh", &length, "::::", &over]);
    out.expect_code(2);
    assert_eq!(out.stdout, "");
    let why = format!("a line longer than {longest} bytes");
    assert!(out.stderr.contains(&format!("over.txt:2: {why}")), "{}", out.stderr);
    assert_eq!(env.runs().len(), 1, "the refused input recorded no run");
}

#[test]
fn tasks_file_priorities_run_higher_first_and_fifo_within_a_priority() {
    let env = Env::new();
    let tasks = env.write(
        "tasks.jsonl",
        concat!(
            "{\"args\": [\"low\"]}\n",
            "{\"args\": [\"high\"], \"priority\": 5}\n",
            "\n",
            "{\"args\": [\"mid\"], \"priority\": 2, \"key\": \"k\", \"cost\": 0.5}\n",
            "{\"args\": [\"high2\"], \"priority\": 5, \"retries\": 1, \"timeout\": \"30s\"}\n",
            "{\"args\": \"neg\", \"priority\": -1}\n",
        ),
    );
    let out = env.run(&["run", "-j1", "--tasks", &tasks, "echo"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "high\nhigh2\nmid\nlow\nneg\n");

    let exported = env.export(&[]);
    let mut by_start: Vec<(f64, &str)> = exported
        .iter()
        .map(|t| (t["started_at"].as_f64().unwrap(), t["args"][0].as_str().unwrap()))
        .collect();
    by_start.sort_by(|a, b| a.0.total_cmp(&b.0));
    let order: Vec<&str> = by_start.iter().map(|p| p.1).collect();
    assert_eq!(order, ["high", "high2", "mid", "low", "neg"]);
    // Task numbers follow the file; the per-task fields are stored.
    let mid = task(&exported, 3);
    assert_eq!(mid["args"], json!(["mid"]));
    assert_eq!((int_of(mid, "priority"), str_of(mid, "key")), (2, "k"));
    assert_eq!(mid["cost"], json!(0.5));
    let high2 = task(&exported, 4);
    assert_eq!((int_of(high2, "retries"), high2["timeout"].clone()), (1, json!(30.0)));
}

// ---------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------

#[test]
fn keep_order_prints_in_input_order_whatever_the_finishing_order() {
    let env = Env::new();
    let out = env.run(&["run", "-j4", "-k", "sleep {}; echo {}", ":::", "0.4", "0.1", "0.2", "0"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "0.4\n0.1\n0.2\n0\n");

    // Without it every output is printed whole, in some order.
    let out = env.run(&["run", "-j4", "sleep {}; echo {}; echo {}", ":::", "0.2", "0.1", "0"]);
    out.expect_code(0);
    let mut lines: Vec<&str> = out.stdout.lines().collect();
    for pair in lines.chunks(2) {
        assert_eq!(pair[0], pair[1], "a task's output was interleaved: {}", out.stdout);
    }
    lines.sort_unstable();
    assert_eq!(lines, ["0", "0", "0.1", "0.1", "0.2", "0.2"]);
}

#[test]
fn line_buffer_streams_lines_prefixed_with_the_task_number() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j2",
        "--line-buffer",
        "echo a{}; echo e{} >&2; sleep 0.2; echo b{}",
        ":::",
        "1",
        "2",
    ]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let mut sorted = lines.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["1\ta1", "1\tb1", "2\ta2", "2\tb2"]);
    for n in ["1", "2"] {
        let at = |l: String| lines.iter().position(|x| *x == l).unwrap();
        assert!(at(format!("{n}\ta{n}")) < at(format!("{n}\tb{n}")), "{lines:?}");
    }
    assert!(out.stderr.contains("1\te1\n") && out.stderr.contains("2\te2\n"), "{}", out.stderr);
    // The store keeps the output without prefixes.
    let results = env.results(&[]);
    assert_eq!(str_of(task(&results, 1), "stdout"), "a1\nb1\n");
    assert_eq!(str_of(task(&results, 2), "stderr"), "e2\n");
}

#[test]
fn a_command_needing_a_shell_runs_through_sh_with_inputs_quoted() {
    let env = Env::new();
    let out = env.run(&["run", "-j1", "-k", "echo {} | tr a-z A-Z", ":::", "hello", "two  words"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "HELLO\nTWO  WORDS\n");
    let results = env.results(&[]);
    assert_eq!(str_of(task(&results, 1), "command"), "echo hello | tr a-z A-Z");

    // An input can never inject shell syntax, in a shell command or a direct one.
    let out = env.run(&[
        "run",
        "-j1",
        "-k",
        "echo {} >/dev/null; echo {}",
        ":::",
        "$(touch pwned)",
        ";touch pwned2",
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, "$(touch pwned)\n;touch pwned2\n");
    let out = env.run(&["run", "-j1", "echo", "{}", ":::", "a;b $(touch pwned3)"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "a;b $(touch pwned3)\n");
    for file in ["pwned", "pwned2", "pwned3"] {
        assert!(!env.path().join(file).exists(), "an input ran as shell code");
    }
    // A direct command is stored shell-quoted, ready to paste.
    assert_eq!(str_of(&env.results(&[])[0], "command"), "echo 'a;b $(touch pwned3)'");
}

/// The exit statuses listed in the sentence that starts with "Exit status:" in `text`
/// (`0`, `74`, `130/143`), in order.
fn exit_statuses(text: &str) -> Vec<String> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let from = text.find("Exit status:").expect("an \"Exit status:\" sentence");
    let sentence = &text[from..];
    let sentence = &sentence[..sentence.find("interrupted.").expect("ends with the interrupt")];
    sentence
        .split([' ', ',', '(', ')', ';'])
        .filter(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

/// `shoal run --help` and the README list every status `shoal run` exits with (74
/// for a store that takes no more writes was missing from the help).
#[test]
fn run_help_and_readme_list_every_exit_status() {
    let env = Env::new();
    let help = env.run(&["run", "--help"]);
    help.expect_code(0);
    let every = ["0", "1", "2", "74", "130/143"];
    assert_eq!(exit_statuses(&help.stdout), every, "{}", help.stdout);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("read README.md");
    assert_eq!(exit_statuses(&readme), every);
    // The top-level help lists none, so it cannot disagree.
    let top = env.run(&["--help"]);
    top.expect_code(0);
    assert!(!top.stdout.contains("Exit status"), "{}", top.stdout);
}

#[test]
fn exit_status_is_0_when_all_succeed_and_1_when_any_fails() {
    let env = Env::new();
    env.run(&["run", "-j2", "true", ":::", "a", "b"]).expect_code(0);

    let out = env.run(&["run", "-j2", "sh", "-c", "{}", ":::", "exit 0", "exit 3"]);
    out.expect_code(1);
    let summary = out.stderr.lines().last().unwrap();
    // No breakdown where it would only repeat "failed" ("1 failed (1 failed)").
    assert!(summary.starts_with("shoal: run 2: 1 succeeded, 1 failed in "), "{summary}");
    assert!(summary.ends_with("; see `shoal results --run 2 --status failed`"), "{summary}");
    let failed = env.results(&["--status", "failed"]);
    assert_eq!(failed.len(), 1);
    assert_eq!(int_of(&failed[0], "exit_code"), 3);

    // A program that does not exist fails its tasks, not the run.
    let out = env.run(&["run", "-j1", "shoal-no-such-program", ":::", "a"]);
    out.expect_code(1);
    let t = &env.results(&[])[0];
    assert_eq!((str_of(t, "status"), int_of(t, "exit_code")), ("failed", 127));
    assert!(str_of(t, "stderr").contains("cannot run 'shoal-no-such-program'"), "{t}");
}

#[test]
fn the_summary_points_at_all_results_when_failures_are_of_several_kinds() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j2",
        "--timeout",
        "0.3",
        "--kill-grace",
        "0.1",
        "sh",
        "-c",
        "{}",
        ":::",
        "exit 2",
        "sleep 20",
    ]);
    out.expect_code(1);
    let summary = out.stderr.lines().last().unwrap();
    // The breakdown where it tells more than "failed".
    assert!(summary.contains("0 succeeded, 2 failed (1 failed, 1 timed_out)"), "{summary}");
    assert!(summary.ends_with("; see `shoal results --run 1`"), "{summary}");
}

#[test]
fn output_beyond_the_limit_is_cut_in_the_store_and_marked_truncated() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j1",
        "--output-limit",
        "1K",
        "head -c {} /dev/zero | tr '\\000' a",
        ":::",
        "5000",
        "10",
    ]);
    out.expect_code(0);
    let results = env.results(&[]);
    let big = task(&results, 1);
    assert_eq!(str_of(big, "stdout"), "a".repeat(1024));
    assert_eq!(
        (big["stdout_truncated"].clone(), big["stderr_truncated"].clone()),
        (json!(true), json!(false))
    );
    let small = task(&results, 2);
    assert_eq!(str_of(small, "stdout"), "a".repeat(10));
    assert_eq!(small["stdout_truncated"], json!(false));
}

#[test]
fn output_beyond_the_limit_is_still_printed_whole() {
    let env = Env::new();
    let out = env.run(&[
        "run",
        "-j1",
        "--output-limit",
        "1K",
        "head -c {} /dev/zero | tr '\\000' a",
        ":::",
        "5000",
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, "a".repeat(5000));
}

#[test]
fn output_is_whole_from_big_slow_and_left_behind_writers_and_none_stalls_the_run() {
    let env = Env::new();
    // A process that leaves the task's group keeps its stdout open for 10 s; the task
    // ends once it has left (at once, or after 0.2 s when its pipes are watched).
    let holder = |name: &str, then: &str| {
        let ready = env.file(name);
        format!(
            "setsid sh -c ': >{ready}; exec sleep 10' & until [ -e {ready} ]; do :; done; {then}"
        )
    };
    let started = std::time::Instant::now();
    let out = env.run(&[
        "run",
        "-j4",
        "--keep-order",
        "sh",
        "-c",
        "{}",
        ":::",
        // More than a pipe holds, written at once by a task that ends at once.
        "head -c 300000 /dev/zero | tr '\\000' a",
        // Still running when its pipes are watched.
        "sleep 0.1; echo slow; echo slow-err >&2",
        &holder("ready1", "echo left"),
        &holder("ready2", "sleep 0.2; echo left-late"),
    ]);
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{}slow\nleft\nleft-late\n", "a".repeat(300_000)));
    assert!(out.stderr.starts_with("slow-err\n"), "{}", out.stderr);
    let took = started.elapsed();
    // Not 10 s: the run stops waiting for the pipe a second after the task's exit.
    assert!(took < std::time::Duration::from_secs(6), "waited for the holder: {took:?}");
}

// ---------------------------------------------------------------------------
// The report subcommands
// ---------------------------------------------------------------------------

/// Replaces `YYYY-MM-DD HH:MM:SS` by `[DATE]` and decimal numbers by `[N]`.
fn redact_numbers(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let digits = |from: usize| chars[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    while i < chars.len() {
        let is_date = chars.len() - i >= 19
            && chars[i..i + 19].iter().zip("dddd-dd-dd dd:dd:dd".chars()).all(|(c, p)| {
                if p == 'd' {
                    c.is_ascii_digit()
                } else {
                    *c == p
                }
            });
        if is_date {
            out.push_str("[DATE]");
            i += 19;
            continue;
        }
        let whole = digits(i);
        if whole > 0 && chars.get(i + whole) == Some(&'.') && digits(i + whole + 1) > 0 {
            let end = i + whole + 1 + digits(i + whole + 1);
            // Keep alignment visible: one [N] per number, padding is the table's.
            out.push_str("[N]");
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// A run with one success (printing on both streams) and one failure.
fn small_run(env: &Env) {
    let out = env.run(&["run", "-j1", "sh", "-c", "{}", ":::", "echo out; echo err >&2", "exit 4"]);
    out.expect_code(1);
}

#[test]
fn runs_lists_every_run_with_its_counts() {
    let env = Env::new();
    small_run(&env);
    env.run(&["run", "-j1", "true", ":::", "a"]).expect_code(0);
    let runs = env.runs();
    assert_eq!(runs.len(), 2);
    insta::assert_snapshot!("runs_json_keys", keys(&runs[0]).join("\n"));
    assert_eq!(int_of(&runs[0], "id"), 1);
    assert_eq!(str_of(&runs[0], "status"), "finished");
    assert_eq!(runs[0]["command"], json!(["sh", "-c", "{}"]));
    assert_eq!(int_of(&runs[0], "total"), 2);
    assert_eq!(runs[0]["counts"]["succeeded"], 1);
    assert_eq!(runs[0]["counts"]["failed"], 1);
    assert!(runs[0]["ended_at"].as_f64().unwrap() >= runs[0]["started_at"].as_f64().unwrap());
    assert_eq!(runs[1]["counts"]["succeeded"], 1);

    let table = env.run(&["runs"]);
    table.expect_code(0);
    insta::assert_snapshot!("runs_table", redact_numbers(&table.stdout));
}

#[test]
fn results_shows_tasks_with_status_and_output() {
    let env = Env::new();
    small_run(&env);
    let results = env.results(&[]);
    assert_eq!(results.len(), 2);
    insta::assert_snapshot!("results_json_keys", keys(&results[0]).join("\n"));
    let ok = task(&results, 1);
    assert_eq!(
        (str_of(ok, "status"), str_of(ok, "stdout"), str_of(ok, "stderr")),
        ("succeeded", "out\n", "err\n")
    );
    assert_eq!((int_of(ok, "exit_code"), int_of(ok, "attempts"), int_of(ok, "slot")), (0, 1, 1));
    let failed = task(&results, 2);
    assert_eq!((str_of(failed, "status"), int_of(failed, "exit_code")), ("failed", 4));
    assert_eq!(env.results(&["--status", "failed"]).len(), 1);
    assert_eq!(env.results(&["--status", "crashed"]).len(), 0);
    assert_eq!(env.results(&["--run", "1", "--status", "succeeded"])[0]["task"], 1);

    let table = env.run(&["results"]);
    table.expect_code(0);
    insta::assert_snapshot!("results_table", redact_numbers(&table.stdout));
}

#[test]
fn stats_counts_rates_percentiles_and_slots() {
    let env = Env::new();
    small_run(&env);
    let stats = env.stats(&["--run", "1"]);
    insta::assert_snapshot!("stats_json_keys", keys(&stats).join("\n"));
    assert_eq!(int_of(&stats, "run"), 1);
    assert_eq!(int_of(&stats, "total"), 2);
    assert_eq!(
        stats["counts"],
        json!({
            "queued": 0, "running": 0, "succeeded": 1, "failed": 1, "timed_out": 0,
            "crashed": 0, "memory_exceeded": 0, "cancelled": 0
        })
    );
    assert_eq!(stats["success_rate"], json!(0.5));
    assert_eq!(stats["memory_limit_mode"], Value::Null);
    let (p50, p95, max) = (
        stats["duration_p50"].as_f64().unwrap(),
        stats["duration_p95"].as_f64().unwrap(),
        stats["duration_max"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{stats}");
    let slots = stats["per_slot"].as_array().unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!((int_of(&slots[0], "slot"), int_of(&slots[0], "tasks")), (1, 2));
    assert!(slots[0]["busy"].as_f64().unwrap() > 0.0);

    let text = env.run(&["stats"]);
    text.expect_code(0);
    insta::assert_snapshot!("stats_text", redact_numbers(&text.stdout));
}

#[test]
fn export_gives_every_task_with_its_attempts_as_json_lines() {
    let env = Env::new();
    small_run(&env);
    let out = env.run(&["export"]);
    out.expect_code(0);
    assert_eq!(out.stdout.lines().count(), 2, "one line per task");
    let exported = json_lines(&out.stdout);
    insta::assert_snapshot!("export_json_keys", keys(&exported[0]).join("\n"));
    let attempt = &exported[1]["attempt_log"][0];
    insta::assert_snapshot!("export_attempt_keys", keys(attempt).join("\n"));
    assert_eq!((int_of(attempt, "task"), int_of(attempt, "attempt")), (2, 1));
    assert_eq!((str_of(attempt, "outcome"), int_of(attempt, "exit_code")), ("failed", 4));
    assert_eq!(attempt["pid"], exported[1]["pid"]);
    // The export holds what results holds, plus the attempts.
    let results = env.results(&[]);
    for (mut e, r) in exported.into_iter().zip(results) {
        e.as_object_mut().unwrap().remove("attempt_log");
        assert_eq!(e, r);
    }
}

// ---------------------------------------------------------------------------
// Bad input: a clear message, exit status 2, never a panic
// ---------------------------------------------------------------------------

/// Runs shoal, expects exit status 2 with a message and no panic, snapshots the
/// message (temp paths redacted) and returns it.
#[track_caller]
fn bad_input(env: &Env, args: &[&str], snapshot: &str) -> String {
    let out = env.run(args);
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", out.stdout);
    assert!(!out.stderr.trim().is_empty(), "an error says what is wrong");
    let stderr = env.redact(&out.stderr);
    insta::assert_snapshot!(snapshot, stderr);
    stderr
}

#[test]
fn bad_unknown_option() {
    let env = Env::new();
    let err = bad_input(&env, &["run", "--bogus", "echo", ":::", "a"], "bad_unknown_option");
    assert!(err.contains("'--bogus'"));
    assert!(!env.store.exists(), "nothing was recorded");
}

/// A `-j` that is none of GNU parallel's forms (`-j 0` is one: as many as possible).
#[test]
fn bad_jobs_form() {
    let env = Env::new();
    let err = bad_input(&env, &["run", "-j", "1.5", "echo", ":::", "a"], "bad_jobs_form");
    assert!(err.contains("'1.5'") && err.contains("--jobs"), "{err}");
    for form in ["x", "%", "-0%", "+1%", "", "2 ", "--timeout"] {
        let out = env.run(&["run", "-j", form, "echo", ":::", "a"]);
        out.expect_code(2);
        let named = format!("invalid value '{form}' for '--jobs <N>': '{form}' is not a -j value");
        assert!(out.stderr.contains(&named), "-j {form:?}: {}", out.stderr);
    }
    // Too many slots, as asked or as it comes to on this machine.
    let too_many = |form: &str| {
        let out = env.run(&["run", "-j", form, "echo", ":::", "a"]);
        out.expect_code(2);
        assert!(out.stderr.contains("more than the 4096 shoal runs at once"), "{}", out.stderr);
        out.stderr
    };
    too_many("4097");
    assert!(too_many("+5000").contains("-j +5000 on "), "names the form");
    assert!(too_many("10000000%").contains("slots, more than"), "names the count");
    assert!(!env.store.exists(), "nothing was recorded");
}

/// `-j` in each of GNU parallel's forms runs as many tasks at once as GNU parallel
/// does on the same machine, as the tasks themselves count: each marks itself running,
/// waits, counts the running ones, waits, and unmarks itself.
#[test]
fn jobs_forms_run_as_many_tasks_at_once_as_gnu_parallel() {
    let threads = common::gnu_parallel().arg("--number-of-threads").output().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if String::from_utf8_lossy(&threads.stdout).trim() != cores.to_string() {
        eprintln!("skipped: GNU parallel counts other cores than this process may use");
        return;
    }
    let env = Env::new();
    let task = env.write(
        "task.sh",
        "touch \"$1/run.$2\"; sleep 1.5; ls \"$1\" | grep -c '^run\\.' > \"$1/seen.$2\"; \
         sleep 1; rm \"$1/run.$2\"\n",
    );
    // More tasks than any form below gives slots here but -j 0.
    let inputs: Vec<String> = (1..=cores + 3).map(|i| i.to_string()).collect();
    let forms = ["3", "0", "50%", "150%", "10%", "+1", "-1", "+0"];
    let runs: Vec<_> = forms
        .iter()
        .enumerate()
        .flat_map(|(i, form)| {
            ["shoal", "parallel"].map(|tool| {
                let dir = env.path().join(format!("{tool}-{i}"));
                std::fs::create_dir(&dir).unwrap();
                let mut cmd = match tool {
                    "shoal" => {
                        let mut cmd = std::process::Command::new(common::shoal_bin());
                        cmd.arg("--store").arg(env.path().join(format!("s{i}.db"))).arg("run");
                        cmd
                    }
                    _ => std::process::Command::new("parallel"),
                };
                cmd.args(["-j", form, "sh", &task])
                    .arg(&dir)
                    .args(["{#}", ":::"])
                    .args(&inputs)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped());
                (form, tool, dir, cmd.spawn().unwrap())
            })
        })
        .collect();
    let mut counts = std::collections::HashMap::new();
    for (form, tool, dir, child) in runs {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{tool} -j {form}: {out:?}");
        let seen = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .map(|count| count.trim().parse::<usize>().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(seen.len(), inputs.len(), "{tool} -j {form}: every task ran and counted");
        counts.insert((*form, tool), seen.into_iter().max().unwrap());
    }
    eprintln!("tasks at once on {cores} cores, by -j form and tool: {counts:?}");
    for form in forms {
        let (shoal, parallel) = (counts[&(form, "shoal")], counts[&(form, "parallel")]);
        assert_eq!(shoal, parallel, "-j {form} on {cores} cores: tasks at once");
    }
    assert_eq!(counts[&("3", "shoal")], 3);
    assert_eq!(counts[&("0", "shoal")], inputs.len(), "-j 0: every task at once");
}

#[test]
fn bad_more_slots_than_the_open_file_limit_serves() {
    let env = Env::new();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {} --store {} run -j 100 true ::: 1",
            common::shoal_bin(),
            env.store.display()
        ))
        .current_dir(env.path());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("-j 100 needs up to 464 open files, but this process may open 256"),
        "{stderr}"
    );
    common::assert_no_panic(&stderr);
}

/// `-j 0` takes as many slots as the open-file limit serves (where `-j 100` is
/// refused above): (256 - 64) / 4 = 48 here, with more tasks than that.
#[test]
fn jobs_zero_takes_as_many_slots_as_the_open_file_limit_serves() {
    let env = Env::new();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 256 && exec {} --store {} run -j 0 'sleep 1; echo {{%}}' ::: $(seq 60)",
            common::shoal_bin(),
            env.store.display()
        ))
        .current_dir(env.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let slots: Vec<u32> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(slots.len(), 60);
    assert_eq!(slots.iter().max(), Some(&48), "{slots:?}");
    let per_slot = env.stats(&[])["per_slot"].as_array().unwrap().len();
    assert_eq!(per_slot, 48, "every slot worked");
}

#[test]
fn bad_nice_below_what_this_user_may_set() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let env = Env::new();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = env.command(&["run", "--nice", "-5", "true", ":::", "1"]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.uid(65534).gid(65534); // nobody: no right to lower a niceness
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--nice -5 is below shoal's own niceness"), "{stderr}");
    assert!(stderr.contains("needs root or CAP_SYS_NICE"), "{stderr}");
}

#[test]
fn bad_unreadable_file_group() {
    let env = Env::new();
    let missing = env.file("missing.txt");
    let err = bad_input(&env, &["run", "echo", "::::", &missing], "bad_missing_file_group");
    assert!(err.contains("[TMP]/missing.txt"));
    // Root reads any file whatever its mode; a directory cannot be read as lines.
    let dir = env.file("adir");
    std::fs::create_dir(&dir).unwrap();
    bad_input(&env, &["run", "echo", "::::", &dir], "bad_directory_file_group");
}

#[test]
fn bad_tasks_line_names_its_line_number() {
    let env = Env::new();
    let tasks = env.write("tasks.jsonl", "{\"args\": [\"a\"]}\n\n{\"args\": [1,}\n");
    let err = bad_input(&env, &["run", "--tasks", &tasks, "echo"], "bad_tasks_json");
    assert!(err.contains("tasks.jsonl:3:"), "{err}");
    let tasks =
        env.write("fields.jsonl", "{\"args\": [\"a\"]}\n{\"args\": [\"b\"], \"prio\": 1}\n");
    let err = bad_input(&env, &["run", "--tasks", &tasks, "echo"], "bad_tasks_unknown_field");
    assert!(err.contains("fields.jsonl:2:"), "{err}");
    let tasks = env.write("kinds.jsonl", "[\"a\"]\n");
    bad_input(&env, &["run", "--tasks", &tasks, "echo"], "bad_tasks_not_an_object");
    let tasks = env.write("prio.jsonl", "{\"args\": \"a\", \"priority\": \"high\"}\n");
    bad_input(&env, &["run", "--tasks", &tasks, "echo"], "bad_tasks_priority");
}

#[test]
fn bad_store_in_a_missing_directory() {
    let mut env = Env::new();
    env.store = env.path().join("no/such/dir/s.db");
    let out = env.run(&["run", "echo", ":::", "a"]);
    out.expect_code(2);
    insta::assert_snapshot!("bad_store_missing_directory", env.redact(&out.stderr));
    assert!(!env.path().join("no").exists(), "shoal does not create the directory");
}

#[test]
fn bad_store_whose_parent_is_a_file() {
    let mut env = Env::new();
    env.write("afile", "");
    env.store = env.path().join("afile/s.db");
    let out = env.run(&["run", "echo", ":::", "a"]);
    out.expect_code(2);
    insta::assert_snapshot!("bad_store_parent_is_a_file", env.redact(&out.stderr));
}

#[test]
fn bad_store_that_is_a_directory() {
    let mut env = Env::new();
    env.store = env.path().to_owned();
    let out = env.run(&["run", "echo", ":::", "a"]);
    out.expect_code(2);
    insta::assert_snapshot!("bad_store_is_a_directory", env.redact(&out.stderr));
}

/// A PostgreSQL URL, by `--store` or `SHOAL_STORE`, where no server answers: every
/// command says it cannot connect to the store, naming it with its password hidden,
/// exits 2 at once, and creates nothing (the URL was taken for a file path: "directory
/// postgresql://ann:s3cret@... does not exist", or "no store at" it).
#[test]
fn bad_store_postgresql_url_where_no_server_answers() {
    let mut env = Env::new();
    env.store = "postgresql://ann:s3cret@127.0.0.1:1/jobs".into();
    let said = "shoal: error: cannot connect to the store postgresql://ann:***@127.0.0.1:1/jobs: \
                error connecting to server: Connection refused (os error 111)\n";
    let err = bad_input(&env, &["run", "echo", ":::", "a"], "bad_store_postgresql");
    assert_eq!(err, said);
    let commands: [&[&str]; 7] = [
        &["run", "--resume"],
        &["run", "--resume", "1"],
        &["runs"],
        &["results"],
        &["stats"],
        &["export"],
        &["store", "init"],
    ];
    for args in commands {
        let out = env.run(args);
        out.expect_code(2);
        assert_eq!(out.stderr, said, "{args:?}");
    }
    let mut cmd = std::process::Command::new(common::shoal_bin());
    cmd.args(["results", "--json"])
        .current_dir(env.path())
        .env("SHOAL_STORE", "postgres://ann:s3cret@127.0.0.1:1/jobs?sslmode=disable");
    let out = common::run_command(cmd, None);
    out.expect_code(2);
    assert_eq!(
        out.stderr,
        "shoal: error: cannot connect to the store \
         postgres://ann:***@127.0.0.1:1/jobs?sslmode=disable: \
         error connecting to server: Connection refused (os error 111)\n"
    );
    let left: Vec<_> = std::fs::read_dir(env.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "created {left:?}");
}

/// Makes a directory immutable (`chattr +i`: even root cannot create files in it)
/// and undoes it on drop so the temp dir can be removed.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &std::path::Path) -> Option<Immutable> {
        let ok = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Immutable(dir.to_owned()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn bad_store_in_a_read_only_directory() {
    let mut env = Env::new();
    let dir = env.path().join("ro");
    std::fs::create_dir(&dir).unwrap();
    // Root ignores permission bits, so the directory is made immutable instead. Where
    // chattr is refused (no CAP_LINUX_IMMUTABLE, a file system without the flag) the
    // case cannot be set up and is skipped; the parent-is-a-file case still runs.
    let Some(_guard) = Immutable::new(&dir) else {
        eprintln!("skipped: chattr +i is not possible here");
        return;
    };
    env.store = dir.join("s.db");
    let out = env.run(&["run", "echo", ":::", "a"]);
    assert!(!env.store.exists());
    out.expect_code(2);
    insta::assert_snapshot!("bad_store_read_only_directory", env.redact(&out.stderr));
}

/// Deterministic pseudo-random bytes (xorshift), so the snapshot is stable.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn bad_corrupt_database_file() {
    let env = Env::new();
    std::fs::write(&env.store, noise(16 * 1024)).unwrap();
    let before = std::fs::read(&env.store).unwrap();
    let err = bad_input(&env, &["run", "echo", ":::", "a"], "bad_corrupt_store_run");
    assert!(err.contains("[TMP]/s.db"), "{err}");
    for report in ["runs", "results", "stats", "export"] {
        let out = env.run(&[report]);
        out.expect_code(2);
        assert_eq!(env.redact(&out.stderr), err, "`shoal {report}` says the same");
    }
    assert_eq!(std::fs::read(&env.store).unwrap(), before, "shoal never writes over it");
}

#[test]
fn bad_database_with_damaged_pages() {
    let env = Env::new();
    env.run(&["run", "-j2", "echo", ":::", "a", "b", "c"]).expect_code(0);
    // Fold the WAL into the file, then overwrite everything after the header page.
    let mut db = std::fs::read(&env.store).unwrap();
    assert!(db.len() > 4096, "the store has more than its header page");
    let len = db.len();
    db[4096..].copy_from_slice(&noise(len - 4096));
    let _ = std::fs::remove_file(env.path().join("s.db-wal"));
    let _ = std::fs::remove_file(env.path().join("s.db-shm"));
    std::fs::write(&env.store, db).unwrap();
    env.expect_every_command_refuses_a_damaged_store("");
}

#[test]
fn bad_a_file_of_another_program() {
    let env = Env::new();
    // A valid SQLite database that is not a shoal store (python3 is needed by the
    // memory-limit test anyway).
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('CREATE TABLE t(x)'); c.commit()")
        .arg(&env.store)
        .status()
        .expect("run python3");
    assert!(made.success());
    let before = std::fs::read(&env.store).unwrap();
    bad_input(&env, &["run", "echo", ":::", "a"], "bad_not_a_shoal_store");
    assert_eq!(
        std::fs::read(&env.store).unwrap(),
        before,
        "a file that is not ours is never modified"
    );
    assert!(!env.path().join("s.db-wal").exists());
}

#[test]
fn bad_resume_on_an_empty_store() {
    let env = Env::new();
    let err = bad_input(&env, &["run", "--resume"], "bad_resume_missing_store");
    assert!(err.contains("no store at [TMP]/s.db"), "{err}");
    assert!(!env.store.exists(), "a resume creates no store");
    // A store whose only run was deleted by hand holds none to resume.
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    let emptied = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM attempts'); c.execute('DELETE FROM tasks'); c.execute('DELETE FROM runs'); c.commit()")
        .arg(&env.store)
        .status()
        .expect("run python3");
    assert!(emptied.success());
    let err = bad_input(&env, &["run", "--resume"], "bad_resume_empty_store");
    assert!(err.contains("no run to resume"));
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    bad_input(&env, &["run", "--resume", "7"], "bad_resume_unknown_run");
    bad_input(&env, &["run", "--resume", "1", "echo", ":::", "b"], "bad_resume_with_a_command");
}

#[test]
fn bad_results_status() {
    let env = Env::new();
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    let err = bad_input(&env, &["results", "--status", "nonsense"], "bad_results_status");
    assert!(err.contains("'nonsense'"));
}

#[test]
fn bad_reports_without_a_store_or_a_run() {
    let env = Env::new();
    bad_input(&env, &["results"], "bad_report_no_store");
    assert!(!env.store.exists(), "a report never creates a store");
    env.run(&["run", "true", ":::", "a"]).expect_code(0);
    bad_input(&env, &["stats", "--run", "9"], "bad_report_unknown_run");
}

#[test]
fn bad_command_lines_of_other_kinds() {
    let env = Env::new();
    bad_input(&env, &["run", ":::", "a"], "bad_no_command");
    bad_input(&env, &["run", "echo", "{3}", ":::", "a", ":::", "b"], "bad_group_out_of_range");
    bad_input(&env, &["run", "--timeout", "soon", "echo", ":::", "a"], "bad_timeout_value");
    bad_input(
        &env,
        &["run", "--memory-limit", "12Q", "echo", ":::", "a"],
        "bad_memory_limit_value",
    );
    let tasks = env.write("t.jsonl", "{\"args\": [\"a\"]}\n");
    bad_input(&env, &["run", "--tasks", &tasks, "echo", ":::", "a"], "bad_tasks_and_groups");
    bad_input(&env, &["run", "--tasks", &env.file("none.jsonl"), "echo"], "bad_tasks_missing_file");
    assert!(!env.store.exists() || env.runs().is_empty(), "no run was recorded");
}

/// Durations past what the clock can add are refused up front with the option's
/// name and the allowed range (they panicked: "overflow when adding duration to
/// instant", exit 101), as the Python package refuses them.
#[test]
fn bad_durations_past_what_the_clock_can_add() {
    let env = Env::new();
    let huge = "10000000000000000000";
    let err = bad_input(
        &env,
        &["run", "--timeout", huge, "--retries", "1", "false", ":::", "a"],
        "bad_timeout_too_long",
    );
    assert!(err.contains("'--timeout <SECS>'") && err.contains("at most 1000000000 seconds"));
    for option in ["--retry-delay", "--kill-grace"] {
        let out = env.run(&["run", option, huge, "--retries", "1", "false", ":::", "a"]);
        out.expect_code(2);
        assert!(out.stderr.contains(&format!("'{option} <SECS>'")), "{}", out.stderr);
        assert!(out.stderr.contains("from 0 to 1000000000 seconds"), "{}", out.stderr);
    }
    let tasks =
        env.write("t.jsonl", "{\"args\": [\"a\"]}\n{\"args\": [\"b\"], \"timeout\": 1.8e19}\n");
    let err = bad_input(&env, &["run", "--tasks", &tasks, "sleep"], "bad_tasks_timeout_too_long");
    assert!(err.contains("t.jsonl:2: timeout must be above 0 and at most"), "{err}");
    assert!(!env.store.exists() || env.runs().is_empty(), "no run was recorded");
    // The longest allowed are taken.
    let longest = "1000000000";
    let out = env.run(&["run", "--timeout", longest, "--kill-grace", longest, "true", ":::", "a"]);
    out.expect_code(0);
}

/// Runs SQL on a store behind shoal's back, as an older shoal could have written it.
fn edit_store(env: &Env, sql: &str) {
    let done = std::process::Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()")
        .arg(&env.store)
        .arg(sql)
        .status()
        .expect("run python3");
    assert!(done.success(), "edit the store with {sql}");
}

/// A store holding durations this shoal refuses (an older one took them) is refused
/// on resume, naming the run, the value and the range, and is left as it was; the
/// option given anew overrides it. (The resume panicked like the run.)
#[test]
fn bad_durations_stored_by_an_older_shoal_are_refused_on_resume() {
    let env = Env::new();
    env.run(&["run", "-j1", "--timeout", "5", "sh", "-c", "{}", ":::", "exit 0", "exit 3"])
        .expect_code(1);
    edit_store(
        &env,
        "UPDATE runs SET options = json_set(options, '$.timeout', 1e19, '$.retry_delay', 1e19);
         UPDATE tasks SET timeout = 1e19;",
    );
    let before = (env.runs(), env.export(&[]));
    let err = bad_input(&env, &["run", "--resume"], "bad_resume_stored_timeout_too_long");
    assert!(err.contains("run 1 holds --timeout 1e19"), "{err}");
    let out = env.run(&["run", "--resume", "--timeout", "10"]);
    out.expect_code(2);
    assert!(out.stderr.contains("run 1 holds --retry-delay 1e19, which must be from 0 to"));
    assert_eq!((env.runs(), env.export(&[])), before, "a refused resume changes nothing");

    // Given anew, the options override the stored ones; the failed task runs again.
    let out = env.run(&["run", "--resume", "--timeout", "10", "--retry-delay", "1"]);
    out.expect_code(1);
    assert_eq!(int_of(task(&env.results(&[]), 2), "attempts"), 2);
    // The options are stored fixed; the task's own timeout is still the old one, and
    // it is refused before the resume changes anything.
    let before = (env.runs(), env.export(&[]));
    let out = env.run(&["run", "--resume"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("run 1, task 2 holds a timeout of 1e19 s, which must be above 0"),
        "{}",
        out.stderr
    );
    assert_eq!((env.runs(), env.export(&[])), before, "a refused resume changes nothing");
    env.run(&["run", "--resume", "--timeout", "1"]).expect_code(1);
}

#[test]
fn pin_gives_each_slot_its_core_and_nice_lowers_the_tasks() {
    let env = Env::new();
    let script = env.write(
        "where.sh",
        "echo \"$SHOAL_SLOT $(grep Cpus_allowed_list /proc/self/status | cut -f2) $(nice)\"\n",
    );
    let out =
        env.run(&["run", "-j2", "--pin", "--nice", "5", "sh", &script, ":::", "a", "b", "c", "d"]);
    out.expect_code(0);
    // The CPUs this test may use, as shoal sees them.
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    };
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    for line in lines {
        let fields: Vec<usize> = line.split(' ').map(|f| f.parse().unwrap()).collect();
        let [slot, cpu, nice] = fields[..] else { panic!("{line}") };
        assert_eq!(cpu, cpus[(slot - 1) % cpus.len()], "slot {slot} runs on its own CPU: {line}");
        assert_eq!(nice, 5, "{line}");
    }
}

#[test]
fn forced_progress_on_a_non_terminal_prints_status_lines() {
    let env = Env::new();
    let out = env.run(&["run", "-j2", "--progress", "sleep", ":::", "0.6", "0.6", "0.6"]);
    out.expect_code(0);
    let status: Vec<&str> =
        out.stderr.lines().filter(|l| l.starts_with("shoal: ") && l.contains(" done, ")).collect();
    assert!(!status.is_empty(), "{}", out.stderr);
    let last = status.last().unwrap();
    assert!(last.starts_with("shoal: 3/3 done, running 0 failed 0, "), "{last}");
    assert!(!env.run(&["run", "--no-progress", "true", ":::", "1"]).stderr.contains(" done, "));
}

/// Arguments of `shoal run` for 41 tasks on 2 slots during which nothing can be
/// committed for 2.5 s: task 1 holds the store's write lock (as another writer may)
/// and the others end meanwhile. Whatever is shown then comes from before the commit.
fn run_with_commits_held(env: &Env) -> Vec<String> {
    env.write(
        "locker.py",
        "import sqlite3, sys, time\n\
         c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
         c.execute('BEGIN EXCLUSIVE')\n\
         open('locked', 'w').close()\n\
         time.sleep(2.5)\n\
         c.execute('COMMIT')\n",
    );
    // The others wait (at most 10 s) until the lock is held, then end at once.
    env.write(
        "step.sh",
        "[ \"$1\" = 1 ] && exec python3 locker.py \"$2\"\n\
         i=0\n\
         while [ ! -e locked ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done\n",
    );
    let mut args: Vec<String> =
        ["run", "-j2", "sh", "step.sh", "{#}"].iter().map(|s| s.to_string()).collect();
    args.push(env.store.display().to_string());
    args.push(":::".into());
    args.extend((1..=41).map(|n| n.to_string()));
    args
}

/// The `running N` counts in progress output.
fn running_counts(text: &str) -> Vec<u64> {
    text.split("running ")
        .skip(1)
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

/// The status lines count what runs (never more than the slots, though results wait
/// to be committed), show no ETA before a task is done, and end with one final line.
#[test]
fn status_lines_count_only_what_runs_and_estimate_only_from_done_tasks() {
    let env = Env::new();
    let mut args = run_with_commits_held(&env);
    args.insert(1, "--progress".into());
    let out = env.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    out.expect_code(0);
    let status: Vec<&str> =
        out.stderr.lines().filter(|l| l.starts_with("shoal: ") && l.contains(" done, ")).collect();
    let running = running_counts(&status.join("\n"));
    assert!(running.iter().all(|&n| n <= 2), "running past the 2 slots: {status:#?}");
    // Nothing was done while the lock was held: nothing to estimate from.
    let waiting: Vec<&&str> = status.iter().filter(|l| l.starts_with("shoal: 0/41 ")).collect();
    assert!(!waiting.is_empty(), "lines while nothing was done: {status:#?}");
    assert!(waiting.iter().all(|l| l.ends_with(", ETA -")), "{waiting:#?}");
    let last: Vec<&&str> = status.iter().filter(|l| l.starts_with("shoal: 41/41 ")).collect();
    assert_eq!(last.len(), 1, "the final line once: {status:#?}");
    assert!(last[0].starts_with("shoal: 41/41 done, running 0 failed 0, "), "{last:?}");
    assert_eq!(status.last(), last.first().copied(), "{status:#?}");
    assert_eq!(env.results(&["--status", "succeeded"]).len(), 41);
}

/// The same on a terminal, read from the bar as drawn.
#[test]
fn the_progress_bar_counts_only_what_runs_and_shows_no_eta_before_a_task_is_done() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` (for a pseudo-terminal) is not installed");
        return;
    }
    let env = Env::new();
    let args = run_with_commits_held(&env);
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let shoal =
        format!("{} --store {} {}", common::shoal_bin(), env.store.display(), quoted.join(" "));
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &shoal, "/dev/null"]).current_dir(env.path());
    let out = common::run_command(cmd, None);
    out.expect_code(0);
    let frames: Vec<&str> = out.stdout.split(['\r', '\n']).filter(|f| f.contains("] ")).collect();
    let running = running_counts(&frames.join("\n"));
    assert!(!running.is_empty() && running.iter().all(|&n| n <= 2), "{frames:#?}");
    let waiting: Vec<&&str> = frames.iter().filter(|f| f.contains("] 0/41 ")).collect();
    assert!(!waiting.is_empty(), "frames while nothing was done: {frames:#?}");
    assert!(waiting.iter().all(|f| f.contains(" ETA -")), "{waiting:#?}");
    assert!(out.stdout.contains("shoal: run 1: 41 succeeded"), "{}", out.stdout);
}

#[test]
fn a_closed_stdout_does_not_stop_the_run_or_lose_results() {
    let env = Env::new();
    let mut cmd = env.command(&["run", "-j2", "seq", ":::", "100000", "200000", "300000"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Read one line, then close the pipe, as `| head -1` does.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 2];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let status = common::wait_for("shoal to finish", std::time::Duration::from_secs(30), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0));
    let tasks = env.results(&[]);
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| str_of(t, "status") == "succeeded"), "{tasks:?}");
}

/// stderr that cannot be written (`2>&1 | head`, `2>/dev/full`) loses nothing: every
/// message shoal writes there (a task's stderr, the summary, a signal's notice) fails
/// quietly, and SIGINT still stops the run.
#[test]
fn an_unwritable_stderr_loses_no_result_and_no_signal() {
    let env = Env::new();
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut cmd = env.command(&["run", "-j2", "sh", "-c", "echo err {} >&2", ":::", "1", "2", "3"]);
    let status = cmd.stdout(std::process::Stdio::null()).stderr(full()).status().unwrap();
    assert_eq!(status.code(), Some(0));
    let tasks = env.results(&["--run", "1"]);
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| str_of(t, "status") == "succeeded"), "{tasks:?}");

    let mut cmd = env.command(&["run", "-j2", "sleep", ":::", "30", "30", "30"]);
    let mut child = cmd.stdout(std::process::Stdio::null()).stderr(full()).spawn().unwrap();
    common::wait_for("the tasks to start", std::time::Duration::from_secs(10), || {
        let out = env.run(&["results", "--json", "--run", "2", "--status", "running"]);
        (out.code() == 0 && json_lines(&out.stdout).len() == 2).then_some(())
    });
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = common::wait_for("shoal to stop", std::time::Duration::from_secs(10), || {
        child.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(130));
}

/// On a terminal the bar is drawn, and task output printed while it runs neither
/// mixes with it nor stalls the run.
#[test]
fn the_progress_bar_on_a_terminal_leaves_output_whole() {
    if std::process::Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` (for a pseudo-terminal) is not installed");
        return;
    }
    let env = Env::new();
    let shoal = format!(
        "{} --store {} run -j2 'sleep 0.1; echo line {{}}' ::: 1 2 3 4",
        common::shoal_bin(),
        env.store.display()
    );
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &shoal, "/dev/null"]).current_dir(env.path());
    let out = common::run_command(cmd, None);
    out.expect_code(0);
    let text = out.stdout.replace('\r', "");
    // Drawn (its last frame, 4/4, may fall between two draws: it is cleared at once).
    assert!(text.contains("/4 running "), "the bar was drawn: {text:?}");
    for n in 1..=4 {
        let line = format!("line {n}\n");
        assert!(text.contains(&line), "{line:?} printed whole: {text:?}");
    }
    assert!(text.contains("shoal: run 1: 4 succeeded"), "{text:?}");
}

#[test]
fn line_buffer_passes_an_endless_line_on_in_pieces() {
    let env = Env::new();
    let script = env.write(
        "long.sh",
        "printf 'start\\n'\npython3 -c \"import sys; sys.stdout.write('x' * 200000)\"\nprintf '\\nend\\n'\n",
    );
    let out = env.run(&["run", "--line-buffer", "sh", &script, ":::", "1"]);
    out.expect_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"1\tstart"));
    assert_eq!(lines.last(), Some(&"1\tend"));
    let middle = &lines[1..lines.len() - 1];
    assert!(middle.len() >= 3, "200,000 bytes come in pieces of at most 64 KiB: {}", middle.len());
    assert!(middle.iter().all(|l| l.starts_with("1\t") && l.len() <= 2 + 64 * 1024));
    let xs: usize = middle.iter().map(|l| l.len() - 2).sum();
    assert_eq!(xs, 200_000, "no byte lost");
}

/// The output still in the pipes when a task exits is read whole, whatever the kill
/// grace (which once also bounded this wait, and may be 0).
#[test]
fn output_is_whole_even_with_no_kill_grace() {
    let env = Env::new();
    let inputs: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    // `: {}` swallows the input, which would otherwise be appended as a file name.
    let mut args = vec!["run", "-j2", "--kill-grace", "0", "head -c 100000 /dev/zero; : {}", ":::"];
    args.extend(inputs.iter().map(String::as_str));
    let out = env.run(&args);
    out.expect_code(0);
    assert_eq!(out.stdout.len(), 20 * 100_000);
}

/// Programs run as execvp would: argv[0] is the name given (not the path found on
/// PATH), and an executable script without a `#!` line runs with sh.
#[test]
fn programs_run_as_execvp_would() {
    let env = Env::new();
    let out = env.run(&["run", "cat", ":::", "/proc/self/cmdline"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "cat\0/proc/self/cmdline\0");

    let script = env.write("no-shebang", "echo \"ran with $1\"\n");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = env.run(&["run", "./no-shebang", ":::", "x"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "ran with x\n");
}
