//! Many machines, one queue: `shoal run --detach` submits a shared run into this test
//! binary's throwaway PostgreSQL cluster, `shoal worker` agents run it, `shoal wait`
//! waits for its end. An agent killed with `kill -9` mid-run, an agent drained by
//! SIGTERM, and the errors of a store the agents cannot use.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{run_command, wait_for, Env, PG_LEASE};
use shoal_core::store::postgres::cluster::Cluster;

/// The database name of a cluster URL.
fn database(env: &Env) -> String {
    env.store.to_string_lossy().rsplit('/').next().unwrap().to_owned()
}

fn rows(env: &Env, sql: &str) -> Vec<Vec<String>> {
    Cluster::shared()
        .rows(&database(env), sql)
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect()
}

fn count(env: &Env, sql: &str) -> i64 {
    rows(env, sql).first().and_then(|r| r.first()).and_then(|v| v.parse().ok()).unwrap_or(-1)
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

#[test]
fn two_agents_run_a_detached_run_and_the_tasks_of_one_killed_mid_run_rerun_elsewhere_once() {
    const TASKS: i64 = 2000;
    let env = Env::on_postgres();
    env.run(&["store", "init"]).expect_code(0);
    let inputs: String = (1..=TASKS).map(|n| format!("{n}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    let script = env.write("task.sh", "sleep 0.005\necho $1\n");
    let doomed = env.spawn(&["worker", "-j2", "--name", "doomed"]);
    let survivor = env.spawn(&["worker", "-j2", "--name", "survivor"]);
    let submitted = env.run(&["run", "--detach", "sh", &script, "::::", &inputs]);
    submitted.expect_code(0);
    let run = submitted.stdout.trim().to_owned();
    assert_eq!(run, "1", "{submitted:?}");
    let waiter = env.spawn(&["wait", &run]);
    wait_for("the doomed agent to run tasks", Duration::from_secs(60), || {
        let ran = count(
            &env,
            "SELECT count(*) FROM shoal.attempts a JOIN shoal.agents g ON g.id = a.agent
             WHERE g.name = 'doomed' AND a.outcome = 'succeeded'",
        );
        (ran >= 100).then_some(())
    });
    let killed_at = now();
    doomed.signal(libc::SIGKILL);
    let out = waiter.wait(Duration::from_secs(120));
    out.expect_code(0);
    assert!(out.stderr.contains(&format!("{TASKS} succeeded")), "{}", out.stderr);
    let _ = doomed.wait(Duration::from_secs(120));
    survivor.signal(libc::SIGTERM);
    // (Limits count from the spawn.)
    survivor.wait(Duration::from_secs(120)).expect_code(0);

    // Every task succeeded, with exactly one successful attempt, the right output.
    let tasks = rows(&env, "SELECT task, status, convert_from(stdout, 'UTF8') FROM shoal.tasks");
    assert_eq!(tasks.len() as i64, TASKS);
    for t in &tasks {
        assert_eq!((t[1].as_str(), t[2].as_str()), ("succeeded", format!("{}\n", t[0]).as_str()));
    }
    let twice = count(
        &env,
        "SELECT count(*) FROM (SELECT task FROM shoal.attempts WHERE outcome = 'succeeded'
                               GROUP BY task HAVING count(*) <> 1) AS t",
    );
    assert_eq!(twice, 0, "a task with other than one successful attempt");
    // What the dead agent held was closed as crashed, naming it, and ran again on the
    // survivor, within its lease (plus the sweep's heartbeat and 2 s) of the kill.
    let rescued = rows(
        &env,
        "SELECT a.task, a.ended_at, convert_from(a.stderr, 'UTF8'),
                (SELECT min(b.started_at) FROM shoal.attempts b JOIN shoal.agents s
                   ON s.id = b.agent
                 WHERE b.task = a.task AND b.attempt > a.attempt AND s.name = 'survivor')
         FROM shoal.attempts a JOIN shoal.agents g ON g.id = a.agent
         WHERE g.name = 'doomed' AND a.outcome = 'crashed'",
    );
    // Its running tasks, and those whose ends it had not committed yet.
    assert!(!rescued.is_empty(), "the killed agent held tasks");
    let limit = PG_LEASE.as_secs_f64() + 0.5 + 2.0;
    for r in &rescued {
        assert!(r[2].contains("the agent doomed (") && r[2].contains("was lost"), "{r:?}");
        let rerun: f64 = r[3].parse().unwrap_or_else(|_| panic!("not re-run: {r:?}"));
        assert!(rerun - killed_at < limit, "re-ran {:.2}s after the kill", rerun - killed_at);
    }
    let states: HashMap<String, String> = rows(&env, "SELECT name, state FROM shoal.agents")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert_eq!(states["doomed"], "lost");
    assert_eq!(states["survivor"], "stopped");
    assert_eq!(count(&env, "SELECT count(*) FROM shoal.runs WHERE status = 'finished'"), 1);
}

#[test]
fn sigterm_drains_an_agent_its_running_tasks_finish_and_it_claims_no_more() {
    let env = Env::on_postgres();
    env.run(&["store", "init"]).expect_code(0);
    let idle = env.spawn(&["worker", "-j2", "--name", "idle"]);
    wait_for("the idle agent", Duration::from_secs(10), || {
        (count(&env, "SELECT count(*) FROM shoal.agents") == 1).then_some(())
    });
    std::thread::sleep(Duration::from_millis(700));
    idle.signal(libc::SIGTERM);
    idle.wait(Duration::from_secs(15)).expect_code(0);
    assert_eq!(rows(&env, "SELECT state FROM shoal.agents"), vec![vec!["stopped".to_owned()]]);
    Cluster::shared().sql(&database(&env), "DELETE FROM shoal.agents");
    let script = env.write("task.sh", "sleep 1\necho $1\n");
    let submitted = env.run(&["run", "--detach", "sh", &script, ":::", "1", "2", "3", "4"]);
    submitted.expect_code(0);
    let agent = env.spawn(&["worker", "-j2"]);
    wait_for("two tasks to run", Duration::from_secs(20), || {
        let started = count(&env, "SELECT count(*) FROM shoal.attempts WHERE pid > 0");
        (started == 2).then_some(())
    });
    agent.signal(libc::SIGTERM);
    let out = agent.wait(Duration::from_secs(30));
    out.expect_code(0);
    assert!(out.stderr.contains("draining"), "{}", out.stderr);
    let statuses =
        rows(&env, "SELECT status, count(*) FROM shoal.tasks GROUP BY status ORDER BY 1");
    assert_eq!(
        statuses,
        vec![
            vec!["queued".to_owned(), "2".to_owned()],
            vec!["succeeded".to_owned(), "2".to_owned()]
        ]
    );
    assert_eq!(rows(&env, "SELECT state FROM shoal.agents"), vec![vec!["stopped".to_owned()]]);
    // The run is still alive, waiting for an agent; another one finishes it.
    let waiter = env.spawn(&["wait", "1"]);
    let other = env.spawn(&["worker", "-j2"]);
    waiter.wait(Duration::from_secs(20)).expect_code(0);
    other.signal(libc::SIGTERM);
    other.wait(Duration::from_secs(30)).expect_code(0);
}

#[test]
fn a_failing_task_makes_wait_exit_1_and_its_retries_run_on_any_agent() {
    let env = Env::on_postgres();
    let script = env.write("task.sh", "echo try\nexit $1\n");
    let submitted = env.run(&["run", "--detach", "--retries", "1", "sh", &script, ":::", "0", "3"]);
    submitted.expect_code(0);
    let agent = env.spawn(&["worker", "-j1"]);
    let out = env.run(&["wait", "1"]);
    out.expect_code(1);
    assert!(out.stderr.contains("1 succeeded, 1 failed"), "{}", out.stderr);
    assert_eq!(
        rows(&env, "SELECT task, status, attempts FROM shoal.tasks ORDER BY task"),
        vec![
            vec!["1".to_owned(), "succeeded".to_owned(), "1".to_owned()],
            vec!["2".to_owned(), "failed".to_owned(), "2".to_owned()]
        ]
    );
    // Its agents run it: a resume, which would run its tasks unfenced, is refused.
    let resumed = env.run(&["run", "--resume", "1"]);
    resumed.expect_code(2);
    assert!(resumed.stderr.contains("submitted with --detach"), "{}", resumed.stderr);
    drop(agent);
}

#[test]
fn worker_and_wait_refuse_a_store_they_cannot_use_with_exit_2_fast() {
    let env = Env::on_postgres();
    let bad = Env { store: "postgresql://ann:s3cret@127.0.0.1:1/jobs".into(), ..Env::new() };
    for (env, args, said) in [
        (&bad, &["worker"][..], "cannot connect"),
        (&bad, &["wait", "1"], "cannot connect"),
        (&env, &["worker"], "holds no shoal tables"),
        (&env, &["wait", "1"], "holds no shoal tables"),
    ] {
        let out = env.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains(said), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
        assert!(out.took < Duration::from_secs(10), "{args:?} took {:?}", out.took);
    }
    env.run(&["store", "init"]).expect_code(0);
    Cluster::shared().sql(&database(&env), "UPDATE shoal.shoal_schema SET version = 7");
    for args in [&["worker"][..], &["wait", "1"]] {
        let out = env.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains("has shoal schema version 7"), "{args:?}: {}", out.stderr);
    }
    let sqlite = Env::new();
    for args in [&["worker"][..], &["run", "--detach", "true", ":::", "a"]] {
        let out = sqlite.run(args);
        out.expect_code(2);
        assert!(out.stderr.contains("PostgreSQL store"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn pause_cancel_and_jobs_of_a_shared_run_are_applied_through_the_store() {
    let env = Env::on_postgres();
    let script = env.write("task.sh", "echo $1\n");
    let inputs: Vec<String> = (1..=6).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "--detach", "sh", &script, ":::"];
    args.extend(inputs.iter().map(String::as_str));
    env.run(&args).expect_code(0);
    let paused = env.run(&["pause", "1"]);
    paused.expect_code(0);
    assert!(paused.stderr.contains("paused") || paused.stdout.contains("paused"), "{paused:?}");
    let jobs = env.run(&["jobs", "1", "4"]);
    assert!(format!("{jobs:?}").contains("not applied"), "{jobs:?}");
    let agent = env.spawn(&["worker", "-j2"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&env, "SELECT count(*) FROM shoal.tasks WHERE status = 'queued'"), 6);
    env.run(&["cancel", "1", "--task", "6"]).expect_code(0);
    env.run(&["unpause", "1"]).expect_code(0);
    // It ran to its end but for the cancelled task: exit 1, as `shoal run`'s.
    let out = env.run(&["wait", "1"]);
    out.expect_code(1);
    assert!(out.stderr.contains("5 succeeded"), "{}", out.stderr);
    assert_eq!(count(&env, "SELECT count(*) FROM shoal.tasks WHERE status = 'cancelled'"), 1);
    assert_eq!(rows(&env, "SELECT status FROM shoal.runs"), vec![vec!["interrupted".to_owned()]]);
    agent.signal(libc::SIGTERM);
    agent.wait(Duration::from_secs(30)).expect_code(0);
}

#[test]
fn agents_run_tasks_in_the_runs_directory_with_its_task_numbers_and_timeouts() {
    let env = Env::on_postgres();
    let script = env.write("task.sh", "echo \"$(pwd) $SHOAL_TASK $1\"\nsleep \"$2\"\n");
    let submit_in = |dir: &str, args: &[&str]| {
        let dir = env.path().join(dir);
        std::fs::create_dir_all(&dir).expect("a run's directory");
        let mut command = env.command(&[&["run", "--detach"][..], args].concat());
        command.current_dir(&dir);
        run_command(command, None).expect_code(0);
        dir.display().to_string()
    };
    let first = submit_in("first", &["sh", &script, ":::", "a", "b", ":::", "0"]);
    let second = submit_in("second", &["sh", &script, ":::", "c", "d", ":::", "0"]);
    // A run whose directory this agent's machine does not have.
    let gone = submit_in("gone", &["sh", &script, ":::", "e", ":::", "0"]);
    std::fs::remove_dir(&gone).expect("remove the directory");
    submit_in("slow", &["--timeout", "0.5", "sh", &script, ":::", "f", ":::", "10"]);
    let agent = env.spawn(&["worker", "-j2"]);
    for (run, code) in [("1", 0), ("2", 0), ("3", 1), ("4", 1)] {
        env.run(&["wait", run]).expect_code(code);
    }
    agent.signal(libc::SIGTERM);
    agent.wait(Duration::from_secs(30)).expect_code(0);
    let tasks = rows(
        &env,
        "SELECT run_id, task, status, convert_from(stdout, 'UTF8'), convert_from(stderr, 'UTF8')
         FROM shoal.tasks ORDER BY run_id, task",
    );
    let said = |t: &Vec<String>| (t[2].clone(), t[3].clone());
    // Each task sees its number in its run (not the agent's count), in the run's
    // directory (not the agent's).
    assert_eq!(said(&tasks[0]), ("succeeded".into(), format!("{first} 1 a\n")));
    assert_eq!(said(&tasks[1]), ("succeeded".into(), format!("{first} 2 b\n")));
    assert_eq!(said(&tasks[2]), ("succeeded".into(), format!("{second} 1 c\n")));
    assert_eq!(said(&tasks[3]), ("succeeded".into(), format!("{second} 2 d\n")));
    assert_eq!(tasks[4][2], "failed");
    assert!(tasks[4][4].contains(&format!("cannot run 'sh' in {gone}")), "{:?}", tasks[4]);
    assert_eq!(tasks[5][2], "timed_out", "{:?}", tasks[5]);
}

#[test]
fn a_shared_run_refuses_the_options_its_agents_cannot_honour_with_exit_2() {
    let env = Env::on_postgres();
    env.run(&["store", "init"]).expect_code(0);
    for option in [
        &["--memory-limit", "1G"][..],
        &["--timeout", "200%"],
        &["--halt", "now,fail=1"],
        &["--delay", "1"],
        &["--workdir", "..."],
        &["--joblog", "log"],
        &["--keep-order"],
        &["--nice", "5"],
    ] {
        let out = env.run(&[&["run", "--detach"][..], option, &["true", ":::", "a"]].concat());
        let shown = if option.get(1).is_some_and(|v| v.ends_with('%')) {
            "--timeout N%"
        } else {
            option[0]
        };
        out.expect_code(2);
        assert!(
            out.stderr.contains(&format!("{} is not honoured by `shoal worker` agents", shown)),
            "{option:?}: {}",
            out.stderr
        );
    }
    assert!(env.runs().is_empty(), "nothing was submitted");
    // Its slots are the agents': -j here would be silently ignored.
    let out = env.run(&["run", "--detach", "-j", "4", "true", ":::", "a"]);
    out.expect_code(2);
    assert!(out.stderr.contains("-j sets the slots of this machine"), "{}", out.stderr);
    assert!(env.runs().is_empty(), "nothing was submitted");
}
