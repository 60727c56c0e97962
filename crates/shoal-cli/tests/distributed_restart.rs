//! PostgreSQL restarted (`pg_ctl restart -m immediate`) under an agent running a
//! shared run: the agent connects again and goes on, the run completes, nothing is
//! lost and no task has two successful attempts. Its own test binary, since it
//! restarts the cluster under every test of it.

mod common;

use std::time::Duration;

use common::{wait_for, Env};
use shoal_core::store::postgres::cluster::Cluster;

fn count(env: &Env, sql: &str) -> i64 {
    let name = env.store.to_string_lossy().rsplit('/').next().unwrap().to_owned();
    let rows = Cluster::shared().rows(&name, sql);
    rows.first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1)
}

#[test]
fn an_agent_goes_on_after_a_restart_and_the_run_completes_with_every_task_once() {
    const TASKS: i64 = 400;
    let env = Env::on_postgres();
    let inputs: String = (1..=TASKS).map(|n| format!("{n}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    let script = env.write("task.sh", "sleep 0.01\necho $1\n");
    env.run(&["run", "--detach", "sh", &script, "::::", &inputs]).expect_code(0);
    let agent = env.spawn(&["worker", "-j2"]);
    wait_for("tasks to succeed", Duration::from_secs(30), || {
        (count(&env, "SELECT count(*) FROM shoal.tasks WHERE status = 'succeeded'") >= 20)
            .then_some(())
    });
    Cluster::shared().restart_immediate();
    let out = env.spawn(&["wait", "1"]).wait(Duration::from_secs(120));
    out.expect_code(0);
    assert!(out.stderr.contains(&format!("{TASKS} succeeded")), "{}", out.stderr);
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM shoal.tasks WHERE status = 'succeeded'
                     AND convert_from(stdout, 'UTF8') = task || E'\\n'"
        ),
        TASKS
    );
    let twice = count(
        &env,
        "SELECT count(*) FROM (SELECT task FROM shoal.attempts WHERE outcome = 'succeeded'
                               GROUP BY task HAVING count(*) > 1) AS t",
    );
    assert_eq!(twice, 0, "a task with two successful attempts");
    agent.signal(libc::SIGTERM);
    agent.wait(Duration::from_secs(120)).expect_code(0);
}
