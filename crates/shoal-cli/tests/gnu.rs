//! `shoal run` side by side with GNU parallel: each of parallel's options that shoal
//! takes gives the same output and exit status as parallel's own (both run with
//! `-k`, so the order is the input's), plus what only shoal adds (the store records
//! every task as run). The test command installs parallel; without it these fail.

mod common;

use std::process::Command;

use common::{run_command, Env};

/// Runs `shoal run -k ARGS` and `parallel -k ARGS` with `stdin` in the test's
/// directory, asserts that both print the same and exit alike, and returns shoal's
/// output.
#[track_caller]
fn side_by_side(env: &Env, args: &[&str], stdin: &[u8]) -> String {
    let mut shoal_args = vec!["run", "-k", "--no-progress"];
    shoal_args.extend_from_slice(args);
    let shoal = run_command(env.command(&shoal_args), Some(stdin.to_vec()));
    common::assert_no_panic(&shoal.stderr);
    let mut parallel = common::gnu_parallel();
    parallel.arg("-k").args(args).current_dir(env.path());
    let reference = run_command(parallel, Some(stdin.to_vec()));
    assert_eq!(
        (shoal.code(), shoal.stdout.as_str()),
        (reference.code(), reference.stdout.as_str()),
        "shoal and GNU parallel differ on {args:?}; shoal's stderr: {}",
        shoal.stderr
    );
    shoal.stdout
}

/// The inputs of every task of the last run, as the store recorded them.
fn recorded_args(env: &Env) -> Vec<Vec<String>> {
    env.results(&[])
        .iter()
        .map(|t| t["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect())
        .collect()
}

/// A bad option value: exit 2, nothing run or recorded, the error names the option.
#[track_caller]
fn refused(env: &Env, args: &[&str], says: &str) {
    let out = env.run(args);
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
}

#[test]
fn arg_files_are_input_groups_before_the_others() {
    let env = Env::new();
    env.write("letters", "a\nb\n");
    env.write("digits", "1\n2\n");
    let out = side_by_side(&env, &["-a", "letters", "echo", ":::", "x", "y"], b"");
    assert_eq!(out, "a x\na y\nb x\nb y\n");
    let out = side_by_side(&env, &["-a", "letters", "--arg-file", "digits", "echo", "{2}{1}"], b"");
    assert_eq!(out, "1a\n2a\n1b\n2b\n");
    let out = side_by_side(&env, &["-a", "letters", "echo", "{1}-{2}", "::::", "digits"], b"");
    assert_eq!(out, "a-1\na-2\nb-1\nb-2\n");
    // `-a -` is standard input, as `:::: -`.
    let out = side_by_side(&env, &["-a", "digits", "-a", "-", "echo"], b"p\nq\n");
    assert_eq!(out, "1 p\n1 q\n2 p\n2 q\n");
    // Shoal records each task with its inputs from every file.
    assert_eq!(recorded_args(&env), [["1", "p"], ["1", "q"], ["2", "p"], ["2", "q"]]);

    // A file that cannot be read fails as a `::::` file does, before anything runs.
    let out = env.run(&["run", "-a", "missing", "echo"]);
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("cannot read input file missing"), "{}", out.stderr);
    refused(&env, &["run", "--tasks", "digits", "-a", "letters", "echo"], "not both");
    // A resume takes its inputs from the store, not from new files.
    refused(&env, &["run", "--resume", "-a", "letters"], "give only options");
}

#[test]
fn null_and_delimiter_end_each_input_as_in_gnu_parallel() {
    let env = Env::new();
    let out = side_by_side(&env, &["-0", "echo", "x{}y"], b"a\0b c\0");
    assert_eq!(out, "xay\nxb cy\n");
    let out = side_by_side(&env, &["--null", "echo"], b"line\none\0two");
    assert_eq!(out, "line\none\ntwo\n");
    // The escapes: \t, \n (no \r stripped then), octal \101 and \0.
    assert_eq!(side_by_side(&env, &["-d", "\\t", "echo", "X"], b"a\tb\tc"), "X a\nX b\nX c\n");
    assert_eq!(side_by_side(&env, &["-d", "\\n", "echo", "x{}y"], b"a\r\nb"), "xa\ry\nxby\n");
    assert_eq!(side_by_side(&env, &["-d", "\\101", "echo", "{}"], b"aAbAc"), "a\nb\nc\n");
    assert_eq!(side_by_side(&env, &["-d", "\\0", "echo", "{}"], b"a\0b"), "a\nb\n");
    // Any other text stands for itself, several bytes too; a newline is then data.
    assert_eq!(
        side_by_side(&env, &["-d", ":", "echo", "x{}y"], b"a::b:c\n"),
        "xay\nxy\nxby\nxc\ny\n"
    );
    assert_eq!(side_by_side(&env, &["-d", ",,", "echo", "Z"], b"a,,b,c,,"), "Z a\nZ b,c\n");
    // Files read with `::::` and `-a` too, not the words of `:::`.
    env.write("items", "one;two;");
    let out =
        side_by_side(&env, &["-d", ";", "echo", "{1}{2}", "::::", "items", ":::", "a:b"], b"");
    assert_eq!(out, "onea:b\ntwoa:b\n");
    assert_eq!(recorded_args(&env), [["one", "a:b"], ["two", "a:b"]]);

    refused(&env, &["run", "-d", "", "echo", ":::", "a"], "the delimiter is empty");
    refused(&env, &["run", "-0", "-d", ":", "echo", ":::", "a"], "--delimiter");
}

#[test]
fn trim_and_eof_as_in_gnu_parallel() {
    let env = Env::new();
    let out = side_by_side(&env, &["--trim", "lr", "echo", "x{}y", ":::", " a ", "\t b"], b"");
    assert_eq!(out, "xay\nxby\n");
    assert_eq!(side_by_side(&env, &["--trim", "l", "echo", "x{}y"], b" c \n"), "xc y\n");
    assert_eq!(side_by_side(&env, &["--trim", "r", "echo", "x{}y"], b" c \t\n"), "x cy\n");
    assert_eq!(side_by_side(&env, &["--trim", "rl", "echo", "x{}y"], b" c \n"), "xcy\n");
    assert_eq!(side_by_side(&env, &["--trim", "n", "echo", "x{}y"], b" c \n"), "x c y\n");
    // The trimmed input is what runs and what is recorded.
    side_by_side(&env, &["--trim", "lr", "echo"], b"  p  \n");
    assert_eq!(recorded_args(&env), [["p"]]);

    // -E ends its own input group: stdin, a `:::` group, one `::::` file of several.
    assert_eq!(side_by_side(&env, &["-E", "END", "echo"], b"a\nEND\nb\n"), "a\n");
    assert_eq!(side_by_side(&env, &["-E", "b", "echo", ":::", "a", "b", "c"], b""), "a\n");
    env.write("with_end", "a\nEND\nz\n");
    env.write("digits", "1\n2\n");
    let out = side_by_side(&env, &["-E", "END", "echo", "::::", "with_end", "digits"], b"");
    assert_eq!(out, "a 1\na 2\n");
    let out = side_by_side(&env, &["-E", "END", "echo", "::::", "digits", "with_end"], b"");
    assert_eq!(out, "1 a\n2 a\n");
    // Compared before trimming, as parallel does.
    let out =
        side_by_side(&env, &["-d", "x", "-E", "b", "--trim", "lr", "echo", "{}"], b" a x b x c");
    assert_eq!(out, "a\nb\nc\n");
    // An end marker first: no input, nothing runs, exit 0.
    assert_eq!(side_by_side(&env, &["-E", "a", "echo", ":::", "a", "b"], b""), "");

    refused(&env, &["run", "--trim", "q", "echo", ":::", "a"], "'q' is none of n, l, r, lr, rl");
}

#[test]
fn colsep_splits_inputs_into_columns_as_gnu_parallel() {
    let env = Env::new();
    env.write("table", "a b\tc\n d\te \n");
    let cols = ["echo", "[{1}]", "[{2}]", "[{3}]"];
    let out =
        side_by_side(&env, &[&["--colsep", "\\t"][..], &cols, &["::::", "table"]].concat(), b"");
    // Each column trimmed; {3} past a line's columns is empty, not an error.
    assert_eq!(out, "[a b] [c] []\n[d] [e] []\n");
    // The columns of every group, in order, make {1} {2} {3}.
    let args = [&["--colsep", "\\t"][..], &cols, &["::::", "table", ":::", "x", "y"]].concat();
    let out = side_by_side(&env, &args, b"");
    assert_eq!(out, "[a b] [c] [x]\n[a b] [c] [y]\n[d] [e] [x]\n[d] [e] [y]\n");
    assert_eq!(recorded_args(&env)[0], ["a b", "c", "x"]);
    // {} is every column; with no replacement string they are appended, each its own word.
    assert_eq!(
        side_by_side(&env, &["--colsep", "\\t", "echo", "[{}]", "::::", "table"], b""),
        "[a b c]\n[d e]\n"
    );
    let out = side_by_side(&env, &["--colsep", ",", "printf", "%s/", ":::", "a b,c"], b"");
    assert_eq!(out, "a b/c/");
    // A regular expression; empty leading and trailing columns are kept.
    let out = side_by_side(
        &env,
        &["--colsep", "[,;]+", "echo", "{2}/{1}", ":::", "a,,b", "c;d", "e", ",x,"],
        b"",
    );
    assert_eq!(out, "b/a\nd/c\n/e\nx/\n");
    // --trim n keeps the white space; an empty line is one empty column.
    let out = side_by_side(
        &env,
        &["--colsep", ",", "--trim", "n", "echo", "[{1}]", "[{2}]", ":::", " a , b "],
        b"",
    );
    assert_eq!(out, "[ a ] [ b ]\n");
    let out = side_by_side(
        &env,
        &["--colsep", ",", "echo", "[{1}]", "[{2}]", "[{2.}]"],
        b"p,q.txt\n\nr,\n",
    );
    assert_eq!(out, "[p] [q.txt] [q]\n[] [] []\n[r] [] []\n");

    refused(&env, &["run", "--colsep", "(", "echo", ":::", "a"], "not a regular expression");
    refused(&env, &["run", "--colsep", "", "echo", ":::", "a"], "the column separator is empty");
}

#[test]
fn header_names_the_columns_as_gnu_parallel() {
    let env = Env::new();
    // A `:::` group's first word; columns at a tab by default, nothing trimmed.
    let out = side_by_side(&env, &["--header", ":", "echo", "[{a}]", ":::", "a", " x "], b"");
    assert_eq!(out, "[ x ]\n");
    let args = ["--header", ":", "echo", "{b}", "{a}", "{1}", ":::", "a\tb", "x\ty"];
    assert_eq!(side_by_side(&env, &args, b""), "y x x\n");
    // Standard input's first line, a file's (streamed or not), several groups.
    let table = "n\tv\nA\t1\nB\t2\n";
    assert_eq!(
        side_by_side(&env, &["--header", ":", "echo", "{n}={v}"], table.as_bytes()),
        "A=1\nB=2\n"
    );
    env.write("table", table);
    let args = ["--header", ":", "-a", "table", "echo", "{v}{n}/{x}", ":::", "x", "1", "2"];
    assert_eq!(side_by_side(&env, &args, b""), "1A/1\n1A/2\n2B/1\n2B/2\n");
    let args = ["--header", ":", "echo", "{v}{n}", "::::", "table", "table"];
    // The second file's names come after the first's: {n} is the first file's.
    assert_eq!(side_by_side(&env, &args, b""), "1A\n1A\n2B\n2B\n");
    // With --colsep, and the forms {name.} {name/} …
    let args =
        ["--header", ":", "--colsep", ",", "echo", "{v.}", "{d/}", ":::", "v,d", "a.txt,x/y"];
    assert_eq!(side_by_side(&env, &args, b""), "a y\n");
    // Any value does the same without --pipe; a header alone is no input.
    assert_eq!(side_by_side(&env, &["--header", "x", "echo", ":::", "a", "b"], b""), "b\n");
    assert_eq!(side_by_side(&env, &["--header", ":", "echo", ":::", "a"], b""), "");

    // The store holds the commands as run, so a resume needs no header: the first
    // run fails where the file is missing, the resume reruns only that task.
    env.write("present", "");
    let out = env
        .run(&["run", "--header", ":", "test", "-e", "{file}", ":::", "file", "present", "later"]);
    out.expect_code(1);
    let commands: Vec<String> =
        env.results(&[]).iter().map(|t| t["command"].as_str().unwrap().to_owned()).collect();
    assert_eq!(commands, ["test -e present", "test -e later"]);
    env.write("later", "");
    env.run(&["run", "--resume"]).expect_code(0);
    assert!(env.results(&[]).iter().all(|t| t["status"] == "succeeded"));
    assert_eq!(
        env.results(&[]).iter().map(|t| t["attempts"].as_i64()).collect::<Vec<_>>(),
        [Some(1), Some(2)]
    );
}

#[test]
fn linked_groups_as_gnu_parallel() {
    let env = Env::new();
    env.write("letters", "a\nb\n");
    env.write("digits", "1\n2\n");
    // `:::+` links a group to the one before: the shortest ends the block, which
    // makes a product with the other groups.
    let args = ["echo", ":::", "a", "b", "c", ":::+", "1", "2", ":::", "x", "y"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1 x\na 1 y\nb 2 x\nb 2 y\n");
    assert_eq!(recorded_args(&env)[3], ["b", "2", "y"]);
    let args = ["echo", ":::", "a", "b", ":::", "1", "2", "3", ":::+", "x", "y"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1 x\na 2 y\nb 1 x\nb 2 y\n");
    let args = ["echo", ":::", "a", "b", ":::+", "1", "2", "3", ":::+", "p", "q", "r"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1 p\nb 2 q\n");
    // `::::+` links each file named; a first `:::+` links to nothing.
    let args = ["echo", ":::", "p", "q", "r", "::::+", "letters", "digits"];
    assert_eq!(side_by_side(&env, &args, b""), "p a 1\nq b 2\n");
    let args = ["echo", "::::", "letters", "::::+", "digits", ":::", "x", "y"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1 x\na 1 y\nb 2 x\nb 2 y\n");
    let args = ["echo", ":::+", "a", "b", ":::", "1", "2"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1\na 2\nb 1\nb 2\n");
    assert_eq!(
        side_by_side(&env, &["echo", "{2}{1}", ":::", "a", "b", "::::+", "-"], b"1\n2\n"),
        "1a\n2b\n"
    );

    // --link links every group; the longest sets the length, the shorter wrap around,
    // whether the first group (streamed from a file or stdin) is the shorter or not.
    let args = ["--link", "echo", ":::", "a", "b", "c", ":::", "1", "2", ":::", "x"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1 x\nb 2 x\nc 1 x\n");
    let args = ["--link", "echo", "::::", "letters", ":::", "1", "2", "3", "4", "5"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1\nb 2\na 3\nb 4\na 5\n");
    let args = ["--link", "echo", "::::", "-", ":::", "x", "y", "z"];
    assert_eq!(side_by_side(&env, &args, b"1\n2\n3\n4\n"), "1 x\n2 y\n3 z\n4 x\n");
    let args =
        ["--link", "echo", ":::", "a", "b", ":::+", "1", "2", "3", ":::", "x", "y", "z", "w"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1 x\nb 2 y\na 3 z\nb 1 w\n");
    let args = ["--link", "-a", "letters", "-a", "digits", "echo"];
    assert_eq!(side_by_side(&env, &args, b""), "a 1\nb 2\n");
    // An empty linked group: no task (GNU parallel dies with a Perl error here).
    let out = env.run(&["run", "--link", "echo", ":::", "a", "b", ":::"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "");
}

/// `--shuf`: the same tasks as GNU parallel's, in a random order, numbered by {#} in
/// the order they run (compared as sets: the order is random in both).
#[test]
fn shuf_runs_every_task_in_a_random_order() {
    let env = Env::new();
    let inputs: Vec<String> = (1..=40).map(|i| i.to_string()).collect();
    let mut args = vec!["-j1", "--shuf", "echo", "{#}", "{}", ":::"];
    args.extend(inputs.iter().map(String::as_str));
    let mut shoal_args = vec!["run"];
    shoal_args.extend(&args);
    let out = env.run(&shoal_args);
    out.expect_code(0);
    let lines: Vec<(usize, String)> = out
        .stdout
        .lines()
        .map(|l| l.split_once(' ').map(|(n, v)| (n.parse().unwrap(), v.to_owned())).unwrap())
        .collect();
    // {#} counts up in the order the tasks ran (-j1: the output's).
    assert_eq!(lines.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=40).collect::<Vec<_>>());
    let order: Vec<String> = lines.iter().map(|l| l.1.clone()).collect();
    assert_ne!(order, inputs, "40 inputs shuffled into their own order: 1 chance in 40!");
    let mut sorted = order.clone();
    sorted.sort_by_key(|v| v.parse::<u32>().unwrap());
    assert_eq!(sorted, inputs);
    // The store numbers the tasks as they ran.
    let recorded: Vec<String> =
        env.results(&[]).iter().map(|t| t["args"][0].as_str().unwrap().into()).collect();
    assert_eq!(recorded, order);

    let reference = common::gnu_parallel().args(&args).output().unwrap();
    let mut theirs: Vec<String> = String::from_utf8(reference.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.into())
        .collect();
    theirs.sort_by_key(|v| v.parse::<u32>().unwrap());
    assert_eq!((reference.status.code(), theirs), (Some(0), sorted));
    // No input: nothing runs, as without --shuf.
    assert_eq!(side_by_side(&env, &["--shuf", "echo", ":::"], b""), "");
}

#[test]
fn max_args_put_several_inputs_in_one_task_as_gnu_parallel() {
    let env = Env::new();
    // -n N: up to N inputs a task, appended or as {1}..{N}; the last task takes the rest.
    assert_eq!(
        side_by_side(&env, &["-n", "2", "echo", ":::", "a", "b", "c", "d", "e"], b""),
        "a b\nc d\ne\n"
    );
    assert_eq!(
        side_by_side(&env, &["-n2", "echo", "[{}]", ":::", "a", "b", "c"], b""),
        "[a b]\n[c]\n"
    );
    assert_eq!(recorded_args(&env), [vec!["a", "b"], vec!["c"]]);
    // -N N: the same, and a word holding {} is repeated for each input (in context).
    let out =
        side_by_side(&env, &["-N", "2", "echo", "{1}-{2}", ":::", "a", "b", "c", "d", "e"], b"");
    assert_eq!(out, "a-b\nc-d\ne-\n");
    assert_eq!(
        side_by_side(&env, &["-N2", "echo", "[{}]", ":::", "a", "b", "c"], b""),
        "[a] [b]\n[c]\n"
    );
    let out = side_by_side(&env, &["-N2", "echo", "p{}q{1}", "[{.}]", ":::", "a.x", "b.y"], b"");
    assert_eq!(out, "pa.xqa.x pb.yqa.x [a] [b]\n");
    assert_eq!(
        side_by_side(&env, &["-N2", "echo  [{}] && true", ":::", "a", "b c"], b""),
        "[a] [b c]\n"
    );
    // {#} numbers the tasks; standard input and the product of groups are chunked too.
    assert_eq!(
        side_by_side(&env, &["-N2", "echo", "{#}", "{}", ":::", "a", "b", "c"], b""),
        "1 a b\n2 c\n"
    );
    assert_eq!(side_by_side(&env, &["-N2", "echo"], b"a\nb\nc\n"), "a b\nc\n");
    let args = ["-N3", "echo", "{1}/{2}/{3}/{4}", ":::", "a", "b", ":::", "x", "y"];
    assert_eq!(side_by_side(&env, &args, b""), "a/x/a/y\nb/y//\n");
    // A word that is only an input past the last is no word at all.
    let out =
        side_by_side(&env, &["-N2", "printf", "%s/", "{2}", "{1}", ":::", "a", "b", "c"], b"");
    assert_eq!(out, "b/a/c/");
    let out = side_by_side(
        &env,
        &["--colsep", ",", "printf", "%s/", "{2}", "{1}", ":::", "a,b", "c"],
        b"",
    );
    assert_eq!(out, "b/a/c/");
    // -N 0: one task per input, none of it passed.
    assert_eq!(side_by_side(&env, &["-N0", "echo", "hi", ":::", "a", "b"], b""), "hi\nhi\n");
    assert_eq!(side_by_side(&env, &["-n0", "echo", "hi", ":::", "a"], b""), "hi\n");
    // A long input streams, a task at a time.
    let lines: String = (1..=2500).map(|i| format!("{i}\n")).collect();
    let out = side_by_side(&env, &["-N", "1000", "echo"], lines.as_bytes());
    let words: Vec<usize> = out.lines().map(|l| l.split(' ').count()).collect();
    assert_eq!(words, [1000, 1000, 500]);

    refused(&env, &["run", "-N", "x", "echo", ":::", "a"], "--max-replace-args");
    refused(&env, &["run", "-N", "1", "-n", "1", "echo", ":::", "a"], "cannot be used with");
    env.write("t.jsonl", "{\"args\": [\"a\"]}\n");
    refused(&env, &["run", "-N", "2", "--tasks", "t.jsonl", "echo"], "not --tasks");
}

#[test]
fn multiple_and_context_replace_fill_each_command_line_as_gnu_parallel() {
    let env = Env::new();
    let letters = [":::", "a", "b", "c", "d", "e", "f", "g"];
    // -m: as many inputs as keep the command shorter than -s; {} is all of them.
    for (size, expected) in [
        ("19", "a b c d e f g\n"),
        ("18", "a b c d e f\ng\n"),
        ("10", "a b\nc d\ne f\ng\n"),
        ("8", "a\nb\nc\nd\ne\nf\ng\n"),
    ] {
        let args = [&["-m", "-j1", "-s", size, "echo"][..], &letters].concat();
        assert_eq!(side_by_side(&env, &args, b""), expected, "-s {size}");
    }
    let args = ["-m", "-j1", "-s", "20", "echo", "x{}y", "z{}w", ":::", "a", "bb", "c"];
    assert_eq!(side_by_side(&env, &args, b""), "xa bby za bbw\nxcy zcw\n");
    assert_eq!(recorded_args(&env), [vec!["a", "bb"], vec!["c"]]);
    // -X: the same, replacing in context.
    let args = [&["-X", "-j1", "-s", "26", "echo", "pre{}post"][..], &letters].concat();
    let out = side_by_side(&env, &args, b"");
    assert_eq!(out, "preapost prebpost\nprecpost predpost\npreepost prefpost\npregpost\n");
    // The inputs left when the input ends are spread over the slots.
    assert_eq!(
        side_by_side(&env, &["-m", "-j2", "echo", ":::", "a", "b", "c", "d", "e"], b""),
        "a b c\nd e\n"
    );
    let args = [
        "-X", "-j2", "-s", "30", "echo", "x{}", ":::", "a", "b", "c", "d", "e", "f", "g", "h", "i",
        "j", "k",
    ];
    assert_eq!(side_by_side(&env, &args, b""), "xa xb xc xd xe xf xg xh\nxi xj\nxk\n");
    assert_eq!(
        side_by_side(&env, &["-X", "-j2", "echo", "{#}", "{.}", ":::", "a.x", "b.y"], b""),
        "1 a\n2 b\n"
    );
    // A long input streams; shoal's default -s is 64036 (parallel's comes from what
    // it measures, 63664 on a typical Linux), so the two split it elsewhere.
    let lines: String = (1..=30000).map(|i| format!("{i}\n")).collect();
    let out = env.run_stdin(&["run", "-k", "-m", "-j2", "echo"], &lines);
    out.expect_code(0);
    let tasks: Vec<&str> = out.stdout.lines().collect();
    assert!(tasks.iter().all(|t| t.len() + "echo ".len() < 64036), "each line fits");
    assert_eq!(tasks.iter().map(|t| t.split(' ').count()).sum::<usize>(), 30000);
    assert_eq!(tasks.len(), 4, "two full, then the rest spread over 2 slots");

    // An input too long on its own: an input error (in a short input, found before
    // anything runs, as any bad input line).
    let out = env.run(&["run", "-k", "-m", "-s", "12", "echo", ":::", "a", "b", "abcdefgh", "c"]);
    out.expect_code(2);
    assert_eq!(out.stdout, "");
    assert!(
        out.stderr.contains("command line too long (13 >= 12, see -s) at input 3: abcdefgh"),
        "{}",
        out.stderr
    );
    refused(&env, &["run", "-m", "-N", "2", "echo", ":::", "a"], "cannot be used with");
    refused(&env, &["run", "-m", "-X", "echo", ":::", "a"], "cannot be used with");
    refused(&env, &["run", "-m", "-s", "0", "echo", ":::", "a"], "--max-chars");
}

#[test]
fn parallel_seq_and_jobslot_are_in_every_tasks_environment() {
    let env = Env::new();
    let out = side_by_side(
        &env,
        &["-j1", "echo $PARALLEL_SEQ-$PARALLEL_JOBSLOT {}", ":::", "a", "b", "c"],
        b"",
    );
    assert_eq!(out, "1-1 a\n2-1 b\n3-1 c\n");
    // On several slots they are {#} and {%}, whichever slot a task gets.
    let out = env.run(&[
        "run",
        "-k",
        "-j2",
        "echo {#}={%} $PARALLEL_SEQ=$PARALLEL_JOBSLOT",
        ":::",
        "a",
        "b",
        "c",
        "d",
    ]);
    out.expect_code(0);
    for line in out.stdout.lines() {
        let (replaced, from_env) = line.split_once(' ').unwrap();
        assert_eq!(replaced, from_env, "{}", out.stdout);
    }
    assert_eq!(out.stdout.lines().count(), 4);
}

#[test]
fn dry_run_prints_the_commands_in_input_order_and_runs_nothing() {
    let env = Env::new();
    env.write("items", "x\ny\n");
    let args = ["--dry-run", "-j2", "echo {#} {} >> ran", ":::", "a", "b", "c"];
    let out = side_by_side(&env, &args, b"");
    assert_eq!(out, "echo 1 a >> ran\necho 2 b >> ran\necho 3 c >> ran\n");
    // {%}: the slot each would get taking turns (parallel's own numbering varies).
    let out = env.run(&["run", "--dry-run", "-j2", "echo {%}", ":::", "a", "b", "c"]);
    assert_eq!(out.stdout, "echo 1\necho 2\necho 1\n");
    let out = side_by_side(&env, &["--dry-run", "echo", "{}", "$HOME", "::::", "items"], b"");
    assert_eq!(out, "echo x $HOME\necho y $HOME\n");
    assert_eq!(side_by_side(&env, &["--dry-run", "touch"], b"a b\n"), "touch 'a b'\n");
    assert_eq!(
        side_by_side(&env, &["--dry-run", "-N2", "echo"], b"a\nb\nc\n"),
        "echo a b\necho c\n"
    );
    assert_eq!(side_by_side(&env, &["--dry-run", "echo"], b""), "");
    // Without -k too, parallel prints them in input order.
    let out = env.run(&["run", "--dry-run", "-j3", "touch", ":::", "a", "b", "c", "d"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "touch a\ntouch b\ntouch c\ntouch d\n");
    // Nothing ran, and no store was made (not the default one either).
    let names = |env: &Env| {
        let mut names: Vec<String> = std::fs::read_dir(env.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&env), ["items"]);
    let mut cmd = Command::new(common::shoal_bin());
    cmd.args(["run", "--dry-run", "touch", ":::", "a"])
        .current_dir(env.path())
        .env_remove("SHOAL_STORE");
    let out = run_command(cmd, None);
    assert_eq!((out.code(), out.stdout.as_str()), (0, "touch a\n"), "{}", out.stderr);
    assert_eq!(names(&env), ["items"]);

    refused(&env, &["run", "--dry-run", "echo", "{3}", ":::", "a"], "{3}");
    refused(&env, &["run", "--dry-run", "-j", "x", "echo", ":::", "a"], "-j");
    refused(&env, &["run", "--dry-run", "--resume"], "--resume");
    assert_eq!(names(&env), ["items"]);
}

#[test]
fn tag_and_tagstring_prefix_every_output_line_as_in_gnu_parallel() {
    let env = Env::new();
    // Every line, the last one without a newline too.
    let out = side_by_side(&env, &["--tag", "echo x{}; printf 'l1\\nl2'", ":::", "a", "b c"], b"");
    assert_eq!(out, "a\txa\na\tl1\na\tl2b c\txb c\nb c\tl1\nb c\tl2");
    let out = side_by_side(&env, &["--tag", "echo", ":::", "a", ":::", "1", "2"], b"");
    assert_eq!(out, "a 1\ta 1\na 2\ta 2\n");
    assert_eq!(side_by_side(&env, &["--tag", "-N2", "echo"], b"a\nb\nc\n"), "a b\ta b\nc\tc\n");
    assert_eq!(side_by_side(&env, &["--tag", "--colsep", ",", "echo"], b"a,b\n"), "a b\ta b\n");
    let out = side_by_side(&env, &["--tagstring", "{#}-{1.}:", "echo", ":::", "a.x", "b"], b"");
    assert_eq!(out, "1-a:\ta.x\n2-b:\tb\n");
    let out = side_by_side(&env, &["--dry-run", "--tag", "echo", ":::", "a"], b"");
    assert_eq!(out, "a\techo a\n");
    // The exit status is the tasks', and the store records them as ever.
    let out = side_by_side(&env, &["--tag", "echo {}; test {} = a", ":::", "a", "b"], b"");
    assert_eq!(out, "a\ta\nb\tb\n");
    assert_eq!(recorded_args(&env), [["a"], ["b"]]);
    let stored: Vec<String> =
        env.results(&[]).iter().map(|t| t["stdout"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stored, ["a\n", "b\n"], "the store keeps the output untagged");
    // A resume tags as the run did (or as told now).
    let out = env.run(&["run", "--resume"]);
    out.expect_code(1);
    assert_eq!(out.stdout, "b\tb\n");
    let out = env.run(&["run", "--resume", "--tagstring", "{%}"]);
    assert_eq!(out.stdout, "1\tb\n");

    // --line-buffer: the tag instead of the task number (parallel prints the same).
    let out =
        env.run(&["run", "-j1", "--line-buffer", "--tag", "echo {}; echo z", ":::", "a", "b"]);
    out.expect_code(0);
    assert_eq!(out.stdout, "a\ta\na\tz\nb\tb\nb\tz\n");

    refused(&env, &["run", "--tagstring", "{0}", "echo", ":::", "a"], "--tagstring");
}

/// The job log that `command` (given `--joblog log`) writes, its times checked for
/// their format and then left out (they differ from run to run).
#[track_caller]
fn joblog_of(env: &Env, mut command: Command) -> Vec<Vec<String>> {
    command.current_dir(env.path());
    run_command(command, None);
    let text = std::fs::read_to_string(env.path().join("log")).unwrap();
    let mut lines: Vec<Vec<String>> =
        text.lines().map(|l| l.split('\t').map(str::to_owned).collect()).collect();
    for line in lines.iter_mut().skip(1) {
        let (start, runtime) = (line.remove(2), line.remove(2));
        let (secs, millis) = start.split_once('.').unwrap();
        assert!(secs.parse::<u64>().unwrap() > 1_600_000_000 && millis.len() == 3, "{text}");
        assert_eq!(runtime.len(), 10, "{text}");
        let (_, millis) = runtime.trim_start().split_once('.').unwrap();
        assert!(runtime.trim_start().parse::<f64>().is_ok() && millis.len() == 3, "{text}");
    }
    lines
}

/// The job logs of `shoal run --joblog log ARGS` and of parallel's.
#[track_caller]
fn joblogs(env: &Env, args: &[&str]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut parallel = common::gnu_parallel();
    parallel.args(["--joblog", "log"]).args(args);
    let parallel = joblog_of(env, parallel);
    let mut shoal_args = vec!["run", "--no-progress", "--joblog", "log"];
    shoal_args.extend_from_slice(args);
    (joblog_of(env, env.command(&shoal_args)), parallel)
}

#[test]
fn joblog_writes_a_line_per_task_in_gnu_parallels_format() {
    let env = Env::new();
    let header = [
        "Seq",
        "Host",
        "Starttime",
        "JobRuntime",
        "Send",
        "Receive",
        "Exitval",
        "Signal",
        "Command",
    ];
    let (shoal, parallel) = joblogs(&env, &["-j1", "echo {}; exit {}", ":::", "0", "1", "3"]);
    let line = |fields: &[&str]| fields.iter().map(|f| f.to_string()).collect::<Vec<_>>();
    assert_eq!(
        shoal,
        [
            line(&header),
            line(&["1", ":", "0", "2", "0", "0", "echo 0; exit 0"]),
            line(&["2", ":", "0", "2", "1", "0", "echo 1; exit 1"]),
            line(&["3", ":", "0", "2", "3", "0", "echo 3; exit 3"]),
        ]
    );
    assert_eq!(shoal, parallel);
    // Killed by a signal; several inputs in one task (the command as run); one line
    // for a task retried (its last attempt).
    let (shoal, parallel) = joblogs(&env, &["-j1", "kill -9 $$; echo {}", ":::", "a"]);
    assert_eq!(shoal[1], line(&["1", ":", "0", "0", "0", "9", "kill -9 $$; echo a"]));
    assert_eq!(shoal, parallel);
    let (shoal, parallel) = joblogs(&env, &["-j1", "-N2", "echo", ":::", "a", "b c", "d"]);
    assert_eq!(
        shoal[1..],
        [
            line(&["1", ":", "0", "6", "0", "0", "echo a 'b c'"]),
            line(&["2", ":", "0", "2", "0", "0", "echo d"])
        ]
    );
    assert_eq!(shoal, parallel);
    let (shoal, parallel) = joblogs(
        &env,
        &["-j1", "--retries", "2", "--retry-delay", "0", "echo x >&2; exit 1", ":::", "a"],
    );
    let _ = parallel; // parallel has no --retry-delay
    assert_eq!(shoal[1..], [line(&["1", ":", "0", "0", "1", "0", "echo x >&2; exit 1 a"])]);

    // The store records every task as ever; a resume adds its tasks' lines.
    assert_eq!(env.results(&[])[0]["attempts"], 3);
    let out = env.run(&["run", "--resume", "--joblog", "log"]);
    out.expect_code(1);
    let log = std::fs::read_to_string(env.path().join("log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().nth(2).unwrap().ends_with("\t1\t0\techo x >&2; exit 1 a"), "{log}");

    // A log that cannot be written: nothing runs.
    refused(
        &env,
        &["run", "--joblog", "no/such/dir", "touch", "ran", ":::", "a"],
        "cannot write to --joblog no/such/dir",
    );
    assert!(!env.path().join("ran").exists());
}

#[test]
fn ungroup_prints_lines_as_they_come_and_group_is_the_default() {
    let env = Env::new();
    // The task ends only once its first line is in shoal's output file, so this
    // passes only if lines are printed while their task runs (the timeout stops a
    // task that would otherwise wait for ever).
    let task = "echo ready; until grep -q ready out; do sleep 0.05; done; echo done {}";
    let mut cmd = env.command(&["run", "-u", "--timeout", "10", task, ":::", "a"]);
    cmd.stdout(std::fs::File::create(env.path().join("out")).unwrap());
    cmd.stderr(std::process::Stdio::null());
    assert!(cmd.status().unwrap().success());
    assert_eq!(std::fs::read_to_string(env.path().join("out")).unwrap(), "ready\ndone a\n");
    assert_eq!(env.results(&[])[0]["status"], "succeeded");

    // No prefix; on one slot, the same as parallel's.
    let args = ["-j1", "echo {}; echo z", ":::", "a", "b"];
    let out = env.run(&[&["run", "--ungroup"][..], &args].concat());
    out.expect_code(0);
    assert_eq!(out.stdout, "a\nz\nb\nz\n");
    let mut parallel = common::gnu_parallel();
    parallel.arg("-u").args(args).current_dir(env.path());
    assert_eq!(run_command(parallel, None).stdout, out.stdout);
    // A resume keeps it; --group is accepted, and is what runs without either.
    let out = env.run(&["run", "-u", "echo {}; exit 1", ":::", "x"]);
    out.expect_code(1);
    assert_eq!(env.run(&["run", "--resume"]).stdout, "x\n");
    assert_eq!(side_by_side(&env, &["--group", "echo", ":::", "a", "b"], b""), "a\nb\n");
    refused(&env, &["run", "-u", "-k", "echo", ":::", "a"], "cannot be used with");
    refused(&env, &["run", "-u", "--group", "echo", ":::", "a"], "cannot be used with");
}

/// The status of each task of the last run, by task number.
fn statuses(env: &Env) -> Vec<String> {
    env.results(&[]).iter().map(|t| common::str_of(t, "status").to_owned()).collect()
}

#[test]
fn halt_stops_the_run_and_exits_as_gnu_parallel() {
    let env = Env::new();
    let run = |halt: &str, codes: &[&str]| {
        let mut args = vec!["-j1", "--halt", halt, "echo {}; exit {}", ":::"];
        args.extend_from_slice(codes);
        side_by_side(&env, &args, b"")
    };
    // fail=1 (and its short forms 1 and 2): the failing task's own status.
    assert_eq!(run("now,fail=1", &["0", "3", "0", "0"]), "0\n3\n");
    assert_eq!(statuses(&env), ["succeeded", "failed", "queued", "queued"]);
    assert_eq!(env.runs()[0]["status"], "interrupted", "the rest is left for a resume");
    assert_eq!(run("2", &["0", "3", "0"]), "0\n3\n");
    assert_eq!(run("1", &["0", "3", "0"]), "0\n3\n");
    // fail=N: the number failed; done=N: the number failed of those done.
    assert_eq!(run("soon,fail=2", &["0", "3", "4", "0", "5"]), "0\n3\n4\n");
    assert_eq!(run("now,done=2", &["3", "0", "2", "0"]), "3\n0\n");
    // success: 0 once reached; unreached, the number failed.
    assert_eq!(run("now,success=1", &["3", "0", "2"]), "3\n0\n");
    assert_eq!(run("-2", &["3", "0", "2"]), "3\n0\n");
    assert_eq!(run("soon,success=2", &["3", "0", "2", "0", "0"]), "3\n0\n2\n0\n");
    assert_eq!(run("now,success=1", &["3", "4", "5"]), "3\n4\n5\n");
    // Percentages of all the tasks; the status is the share failed, rounded up.
    assert_eq!(run("soon,fail=50%", &["0", "3", "4", "0", "5", "0"]), "0\n3\n4\n0\n5\n");
    assert_eq!(run("20%", &["3", "0", "0", "0"]), "3\n");
    assert_eq!(run("soon,fail=30%", &["3", "0", "0"]), "3\n");
    assert_eq!(run("now,done=50%", &["3", "0", "0", "0"]), "3\n0\n");
    assert_eq!(run("now,success=50%", &["3", "0", "4", "0", "5", "0"]), "3\n0\n4\n0\n5\n0\n");
    // never (0): every task runs; shoal's own exit status (parallel's counts failures).
    let out = env.run(&["run", "-k", "-j1", "--halt", "never", "exit {}", ":::", "3", "0", "4"]);
    assert_eq!(out.code(), 1);
    assert_eq!(statuses(&env), ["failed", "succeeded", "failed"]);
    // A task killed by a signal halts with 128 + the signal, as parallel's.
    run("now,fail=1", &["0", "3"]);
    assert_eq!(
        env.runs().last().unwrap()["status"],
        "finished",
        "a halt on the last task left nothing"
    );
    // A task killed by a signal halts with 128 + the signal, as parallel's.
    side_by_side(&env, &["--halt", "now,fail=1", "kill -9 $$; echo {}", ":::", "a"], b"");
    assert_eq!(statuses(&env), ["crashed"]);
}

#[test]
fn halt_soon_lets_running_tasks_finish_and_now_stops_them() {
    let env = Env::new();
    let tasks = ["sleep 0.2; exit 7", "sleep 2; echo finished", "sleep 2; exit 4", "echo not run"];
    let mut args = vec!["-j3", "--halt", "soon,fail=1", "sh", "-c", "{}", ":::"];
    args.extend_from_slice(&tasks);
    assert_eq!(side_by_side(&env, &args, b""), "finished\n");
    assert_eq!(statuses(&env), ["failed", "succeeded", "failed", "queued"]);
    // The line that says why names the rule and the task.
    let out = env.run(&[&["run"], &args[..]].concat());
    out.expect_code(7);
    assert!(
        out.stderr.contains(
            "--halt soon,fail=1 reached (task 1 failed: 1 failed so far): starting no more tasks; \
             the running ones finish"
        ),
        "{}",
        out.stderr
    );

    args[2] = "now,fail=1";
    assert_eq!(side_by_side(&env, &args, b""), "");
    assert_eq!(statuses(&env), ["failed", "cancelled", "cancelled", "queued"]);
    // What a halt did not run, a resume does (with the rule, counted afresh).
    let out = env.run(&["run", "--resume", "--halt", "never"]);
    out.expect_code(1);
    assert_eq!(out.stdout, "finished\nnot run\n");
    assert_eq!(statuses(&env), ["failed", "succeeded", "failed", "succeeded"]);
}

#[test]
fn halt_values_parallel_refuses_are_refused() {
    let env = Env::new();
    for bad in ["3", "-3", "now", "later,fail=1", "soon,fail=0", "now,fail=101%", "now,ok=1"] {
        refused(&env, &["run", "--halt", bad, "echo", ":::", "a"], "--halt");
        let mut parallel = common::gnu_parallel();
        parallel.args(["--halt", bad, "echo", ":::", "a"]).current_dir(env.path());
        let reference = run_command(parallel, None);
        if !["soon,fail=0", "now,fail=101%"].contains(&bad) {
            assert_eq!(reference.code(), 255, "parallel refuses --halt {bad} too");
        }
    }
}

#[test]
fn delay_paces_the_starts_as_gnu_parallel() {
    let env = Env::new();
    let out = side_by_side(&env, &["--delay", "0.3", "-j3", "echo", ":::", "a", "b", "c"], b"");
    assert_eq!(out, "a\nb\nc\n");
    // Three free slots, yet each start comes at least the delay after the one before.
    let mut starts: Vec<f64> = env
        .export(&[])
        .iter()
        .map(|t| t["attempt_log"][0]["started_at"].as_f64().unwrap())
        .collect();
    starts.sort_by(f64::total_cmp);
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= 0.29, "starts {starts:?}");
    }
    refused(&env, &["run", "--delay", "x", "echo", ":::", "a"], "--delay");
    refused(&env, &["run", "--delay", "1x", "echo", ":::", "a"], "--delay");
}

#[test]
fn quote_runs_the_words_as_they_are_as_gnu_parallel() {
    let env = Env::new();
    let out = side_by_side(&env, &["-q", "echo", "a;b", "$HOME", "{}", ":::", "x y"], b"");
    assert_eq!(out, "a;b $HOME x y\n");
    let out = side_by_side(&env, &["--quote", "printf", "%s|\\n", "{}", ":::", "a b", "c"], b"");
    assert_eq!(out, "a b|\nc|\n");
    // Kept by a resume.
    let out = env.run(&["run", "--resume"]);
    out.expect_code(0);
    refused(&env, &["run", "-q", "--shell", "echo", ":::", "a"], "--shell");
}

#[test]
fn workdir_runs_each_task_in_its_directory_as_gnu_parallel() {
    let env = Env::new();
    std::fs::create_dir_all(env.path().join("in/a")).unwrap();
    std::fs::create_dir_all(env.path().join("in/b")).unwrap();
    let out = side_by_side(&env, &["--wd", "in/{}", "pwd", ":::", "a", "b"], b"");
    let root = env.path().canonicalize().unwrap().display().to_string();
    assert_eq!(out, format!("{root}/in/a\n{root}/in/b\n"));
    let out = side_by_side(&env, &["--workdir", "in", "ls", ":::", "-d"], b"");
    assert_eq!(out, ".\n");
    // A directory that is not there: refused before anything runs when it is one for
    // all; the task fails to start, saying where, when it is the task's own.
    let runs = env.runs().len();
    refused(&env, &["run", "--wd", "nowhere", "pwd", ":::", "a"], "--workdir nowhere");
    assert_eq!(env.runs().len(), runs, "nothing recorded");
    let out = env.run(&["run", "--wd", "in/{}", "pwd", ":::", "c"]);
    out.expect_code(1);
    assert!(out.stderr.contains("cannot run 'pwd' in in/c"), "{}", out.stderr);

    // `...`: a new empty directory for each task, removed when it ends.
    let script = "pwd; ls; touch made";
    let out = env.run(&["run", "-k", "--wd", "...", "sh", "-c", script, ":::", "1", "2"]);
    out.expect_code(0);
    let dirs: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(dirs.len(), 2, "each printed only its directory: {dirs:?}");
    assert_ne!(dirs[0], dirs[1]);
    for dir in dirs {
        assert!(dir.starts_with(&std::env::temp_dir().display().to_string()), "{dir}");
        assert!(!std::path::Path::new(dir).exists(), "{dir} was removed");
    }
}

#[test]
fn env_is_accepted_and_every_variable_is_passed() {
    let env = Env::new();
    let out =
        side_by_side(&env, &["--env", "HOME", "--env", "PATH", "echo $HOME", ":::", "x"], b"");
    assert_eq!(out, format!("{} x\n", std::env::var("HOME").unwrap()));
}

#[test]
fn timeout_percent_of_the_median_as_gnu_parallel() {
    let env = Env::new();
    let script = "sleep {}; echo {}";
    let args = ["-j1", "--timeout", "300%", script, ":::", "0.1", "0.1", "0.1", "5", "0.1"];
    assert_eq!(side_by_side(&env, &args, b""), "0.1\n0.1\n0.1\n0.1\n");
    assert_eq!(statuses(&env), ["succeeded", "succeeded", "succeeded", "timed_out", "succeeded"]);
    // Not before three tasks have succeeded (parallel starts from the first).
    let out = env.run(&["run", "-j1", "--timeout", "300%", script, ":::", "0.1", "1"]);
    out.expect_code(0);
    refused(&env, &["run", "--timeout", "0%", "echo", ":::", "a"], "--timeout");
}

#[test]
fn resume_failed_reruns_the_failed_tasks_of_the_same_command_as_gnu_parallel() {
    let (env, reference) = (Env::new(), Env::new());
    // One slot: the job log is in the order tasks end, on both sides.
    let args = ["-j1", "--joblog", "log", "-k", "echo {}; exit {}", ":::", "0", "3", "0"];
    let twice = |command: &dyn Fn(&[&str]) -> Command| {
        let first = run_command(command(&args), None);
        let again = run_command(command(&[&["--resume-failed"], &args[..]].concat()), None);
        [first, again].map(|out| (out.code(), out.stdout))
    };
    let shoal = twice(&|args| env.command(&[&["run", "--no-progress"], args].concat()));
    let parallel = twice(&|args| {
        let mut parallel = common::gnu_parallel();
        parallel.args(args).current_dir(reference.path());
        parallel
    });
    assert_eq!(shoal, parallel);
    assert_eq!(shoal[1], (1, "3\n".to_owned()), "only the failed task ran again");
    // The job log has the rerun's line added, as parallel's.
    let log = |env: &Env| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(env.path().join("log")).unwrap();
        let columns = |line: &str| {
            let fields: Vec<&str> = line.split('\t').collect();
            [0, 6, 8].map(|i| fields[i].to_owned()).to_vec()
        };
        text.lines().map(columns).collect()
    };
    assert_eq!(log(&env), log(&reference));
    // Shoal resumed the run in its store rather than starting another.
    assert_eq!(env.runs().len(), 1);
    assert_eq!(statuses(&env), ["succeeded", "failed", "succeeded"]);

    // Another command is another run, run whole; no store yet is the same.
    let out = env.run(&["run", "--resume-failed", "echo", ":::", "x"]);
    assert_eq!((out.code(), out.stdout.as_str()), (0, "x\n"));
    assert_eq!(env.runs().len(), 2);
    let fresh = Env::new();
    let out = fresh.run(&["run", "--resume-failed", "echo", ":::", "y"]);
    assert_eq!((out.code(), out.stdout.as_str()), (0, "y\n"));
}

/// Every file under `dir` with its content, by path relative to `dir`.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    files
}

/// Files by path, with their contents.
type Files = Vec<(String, String)>;

/// The trees that `shoal run --results DIR ARGS` and parallel's write, DIR being
/// `results` under `s/` for shoal and `p/` for parallel (`DIR` in ARGS stands for it).
#[track_caller]
fn results_trees(env: &Env, dir: &str, args: &[&str]) -> (Files, Files) {
    let mut trees = Vec::new();
    for side in ["s", "p"] {
        let _ = std::fs::remove_dir_all(env.path().join(side));
        let dir = format!("{side}/{dir}");
        let mut command = if side == "s" {
            env.command(&["run", "--no-progress"])
        } else {
            let mut parallel = common::gnu_parallel();
            parallel.current_dir(env.path());
            parallel
        };
        command.args(["--results", &dir]).args(args);
        run_command(command, None);
        trees.push(tree(&env.path().join(side)).into_iter().collect());
    }
    let parallel = trees.pop().unwrap();
    (trees.pop().unwrap(), parallel)
}

#[test]
fn results_writes_each_tasks_files_as_gnu_parallel() {
    let env = Env::new();
    let file = |path: &str, content: &str| (path.to_owned(), content.to_owned());
    // One group: DIR/1/<input>/; a slash, a backslash and an empty input as parallel.
    let command = "printf 'out %s\\n' {}; printf 'err %s\\n' {} >&2";
    let (shoal, parallel) =
        results_trees(&env, "r", &["-j1", command, ":::", "a", "b/c", "d\\e", ""]);
    assert!(shoal.contains(&file("r/1/a/stdout", "out a\n")), "{shoal:?}");
    assert!(shoal.contains(&file("r/1/b\\_c/stderr", "err b/c\n")), "{shoal:?}");
    assert!(shoal.contains(&file("r/1/d\\\\e/seq", "3")), "{shoal:?}");
    assert!(shoal.contains(&file("r/1/stdout", "out \n")), "{shoal:?}");
    assert_eq!(shoal.len(), 12);
    assert_eq!(shoal, parallel);
    // Two groups nest; a templated path ending in `/` is the task's directory, one
    // that does not is its stdout file, with .err and .seq beside it.
    let (shoal, parallel) =
        results_trees(&env, "r", &["-j1", command, ":::", "a", "b", ":::", "1", "2"]);
    assert!(shoal.contains(&file("r/1/b/2/1/stdout", "out b\nout 1\n")), "{shoal:?}");
    assert_eq!(shoal.len(), 12);
    assert_eq!(shoal, parallel);
    let (shoal, parallel) =
        results_trees(&env, "r/{1}/x{2}/", &["-j1", command, ":::", "a", ":::", "1"]);
    assert_eq!(
        shoal,
        [
            file("r/a/x1/seq", "1"),
            file("r/a/x1/stderr", "err a\nerr 1\n"),
            file("r/a/x1/stdout", "out a\nout 1\n")
        ]
    );
    assert_eq!(shoal, parallel);
    let (shoal, parallel) = results_trees(&env, "r/{}.txt", &["-j1", command, ":::", "a"]);
    assert_eq!(
        shoal,
        [file("r/a.txt", "out a\n"), file("r/a.txt.err", "err a\n"), file("r/a.txt.seq", "1")]
    );
    assert_eq!(shoal, parallel);

    // The output is still printed; a resume keeps --results and writes the files of
    // the tasks it reruns over the old ones.
    let read = |path: &str| std::fs::read_to_string(env.path().join(path)).unwrap();
    let out =
        env.run(&["run", "--no-progress", "--results", "again", "echo {}; exit 1", ":::", "b"]);
    out.expect_code(1);
    assert_eq!(out.stdout, "b\n");
    assert_eq!(read("again/1/b/stdout"), "b\n");
    std::fs::write(env.path().join("again/1/b/stdout"), "stale").unwrap();
    let out = env.run(&["run", "--no-progress", "--resume"]);
    out.expect_code(1);
    assert_eq!(read("again/1/b/stdout"), "b\n");

    // A directory that cannot be made: nothing runs.
    env.write("plain", "");
    let runs = env.runs().len();
    refused(&env, &["run", "--results", "plain/r", "touch", "ran", ":::", "a"], "--results");
    assert!(!env.path().join("ran").exists());
    assert_eq!(env.runs().len(), runs, "nothing recorded");
}

/// parallel's --eta and --bar show shoal's progress: off a terminal, as here, both
/// print its status line (with the ETA), the final one at least.
#[test]
fn eta_and_bar_show_the_status_line_on_stderr() {
    let env = Env::new();
    for option in ["--eta", "--bar"] {
        let out = env.run(&["run", option, "echo", ":::", "a", "b", "c"]);
        out.expect_code(0);
        let last = out.stderr.lines().rfind(|l| l.contains(" done, "));
        let last = last.unwrap_or_else(|| panic!("{option}: {}", out.stderr));
        assert!(last.starts_with("shoal: 3/3 done, running 0 failed 0, "), "{last}");
        assert!(last.contains(", ETA 0s"), "{last}");
        refused(&env, &["run", option, "--quiet", "true", ":::", "a"], "--quiet");
    }
    assert!(!env.run(&["run", "echo", ":::", "a"]).stderr.contains(" done, "));
}

/// --memfree and --load hold starts back while the machine is short (the scheduler's
/// unit tests show that); with what this machine has, the tasks run as parallel's.
#[test]
fn memfree_and_load_start_tasks_while_the_machine_has_room() {
    let env = Env::new();
    let out =
        side_by_side(&env, &["--memfree", "1K", "--load", "1000", "echo", ":::", "a", "b"], b"");
    assert_eq!(out, "a\nb\n");
    let out = side_by_side(&env, &["--load", "100000%", "echo", ":::", "c"], b"");
    assert_eq!(out, "c\n");
    refused(&env, &["run", "--load", "0", "true", ":::", "a"], "invalid load '0'");
    refused(&env, &["run", "--memfree", "lots", "true", ":::", "a"], "invalid size 'lots'");
}
