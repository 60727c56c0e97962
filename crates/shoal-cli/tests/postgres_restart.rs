//! A PostgreSQL store restarted (`pg_ctl restart -m immediate`) while a run records
//! into it: the run stops as on a full disk (exit 74, one line), what it held is
//! written once the server is back, and a resume runs the rest; nothing is recorded
//! twice. Its own test binary, since it restarts the cluster under every test of it.

mod common;

use std::time::Duration;

use common::{int_of, str_of, wait_for, Env};
use serde_json::Value;
use shoal_core::store::postgres::cluster::Cluster;

#[test]
fn a_restart_mid_run_stops_it_with_exit_74_and_a_resume_finishes_every_task_once() {
    const TASKS: i64 = 400;
    let env = Env::on_postgres();
    let inputs: String = (1..=TASKS).map(|n| format!("{n}\n")).collect();
    let inputs = env.write("inputs", &inputs);
    let script = env.write("task.sh", "sleep 0.01\necho $1\n");
    let shoal = env.spawn(&["run", "-j2", "--no-progress", "sh", &script, "::::", &inputs]);
    wait_for("tasks to succeed", Duration::from_secs(30), || {
        let stats: Value =
            serde_json::from_str(env.run(&["stats", "--json"]).stdout.trim()).ok()?;
        (stats["counts"]["succeeded"].as_i64()? >= 20).then_some(())
    });
    Cluster::shared().restart_immediate();
    let out = shoal.wait(Duration::from_secs(60));
    out.expect_code(74);
    let failure: Vec<&str> =
        out.stderr.lines().filter(|l| l.starts_with("shoal: error: the store")).collect();
    assert_eq!(failure.len(), 1, "{}", out.stderr);
    assert!(failure[0].contains("takes no more writes"), "{}", out.stderr);
    assert!(failure[0].contains("`shoal run --resume 1` continues it"), "{}", out.stderr);

    std::thread::sleep(env.lease_expiry());
    let resumed = env.run(&["run", "--resume", "--no-progress"]);
    resumed.expect_code(0);
    let exported = env.export(&[]);
    assert_eq!(exported.len() as i64, TASKS);
    for t in &exported {
        let n = int_of(t, "task");
        assert_eq!(str_of(t, "status"), "succeeded", "{t}");
        assert_eq!(str_of(t, "stdout"), format!("{n}\n"));
        let log = t["attempt_log"].as_array().unwrap();
        let succeeded = log.iter().filter(|a| a["outcome"] == "succeeded").count();
        assert_eq!(succeeded, 1, "one successful attempt: {t}");
        assert_eq!(str_of(log.last().unwrap(), "outcome"), "succeeded", "{t}");
    }
    let runs = env.runs();
    assert_eq!(str_of(&runs[0], "status"), "finished");
}
