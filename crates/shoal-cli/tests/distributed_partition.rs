//! An agent cut off from the database by a network partition, then back: an agent in
//! its own network namespace reaches PostgreSQL over a veth pair, and the link is
//! taken down while it runs tasks. Its tasks are rescued and run on another agent;
//! its late results, once the link is back, are rejected and recorded as such; no
//! task has two successful attempts. Its own test binary: its cluster listens on the
//! veth address too. Needs root (`ip netns`), as CI runs; it fails where a namespace cannot be made.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{wait_for, Env};
use shoal_core::store::postgres::cluster::Cluster;

/// The host's end of the veth pair; the namespace's end is `.2`.
const HOST: &str = "10.213.77.1";
const AGENT: &str = "10.213.77.2";

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).output().is_ok_and(|o| o.status.success())
}

#[track_caller]
fn must(args: &[&str]) {
    assert!(ip(args), "ip {args:?} failed");
}

/// A network namespace joined to the host by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_link: String,
}

impl Netns {
    /// None where `ip netns` is not permitted (not root, no iproute2).
    /// Fails, rather than skips, where a namespace cannot be made: the test command
    /// installs iproute2 and CI runs as root, so a skip would hide a missing step.
    fn create() -> Netns {
        let id = std::process::id();
        let name = format!("shoal{id}");
        must(&["netns", "add", &name]);
        let netns = Netns { name, host_link: format!("sh{id}") };
        let (ns, host) = (netns.name.as_str(), netns.host_link.as_str());
        let inner = format!("sn{id}");
        must(&["link", "add", host, "type", "veth", "peer", "name", &inner]);
        must(&["link", "set", &inner, "netns", ns]);
        must(&["addr", "add", &format!("{HOST}/24"), "dev", host]);
        must(&["link", "set", host, "up"]);
        must(&["netns", "exec", ns, "ip", "addr", "add", &format!("{AGENT}/24"), "dev", &inner]);
        must(&["netns", "exec", ns, "ip", "link", "set", &inner, "up"]);
        must(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        netns
    }

    fn link(&self, state: &str) {
        must(&["link", "set", &self.host_link, state]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_link]);
        ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_partitioned_agents_tasks_are_rescued_and_its_late_results_rejected() {
    let netns = Netns::create();
    let cluster = Cluster::start_listening(Some(HOST));
    let url = cluster.database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let rows = |sql: &str| -> Vec<Vec<String>> {
        let rows = cluster.rows(&name, sql).into_iter();
        rows.map(|r| r.into_iter().map(Option::unwrap_or_default).collect()).collect()
    };
    let count = |sql: &str| rows(sql)[0][0].parse::<i64>().unwrap_or(-1);
    let env = Env { store: url.clone().into(), ..Env::new() };
    // The same database, as the namespace reaches it.
    let cut_off = Env { store: url.replace("127.0.0.1", HOST).into(), ..Env::new() };
    env.run(&["store", "init"]).expect_code(0);
    let script = env.write("task.sh", "sleep 4\necho $1\n");
    let netns_exec = ["ip", "netns", "exec", netns.name.as_str()];
    let cut = cut_off.spawn_under(&netns_exec, &["worker", "-j2", "--name", "cut"]);
    env.run(&["run", "--detach", "sh", &script, ":::", "1", "2", "3", "4"]).expect_code(0);
    wait_for("the cut-off agent to run two tasks", Duration::from_secs(30), || {
        let running = count(
            "SELECT count(*) FROM shoal.tasks t JOIN shoal.agents g ON g.id = t.agent
             WHERE g.name = 'cut' AND t.status = 'running'",
        );
        (running == 2).then_some(())
    });
    netns.link("down");
    let survivor = env.spawn(&["worker", "-j2", "--name", "survivor"]);
    let waiter = env.spawn(&["wait", "1"]);
    // The run ends without the cut-off agent (else the state says why not).
    let ended = (0..90).any(|_| {
        let running = rows("SELECT status FROM shoal.runs")[0][0] == "running";
        if running {
            std::thread::sleep(Duration::from_secs(1));
        }
        !running
    });
    assert!(
        ended,
        "the run did not end: tasks {:?}, agents {:?}",
        rows("SELECT task, status, agent, attempts, rescues FROM shoal.tasks ORDER BY task"),
        rows("SELECT id, name, state, expires_at, extract(epoch FROM now()) FROM shoal.agents")
    );
    let out = waiter.wait(Duration::from_secs(30));
    out.expect_code(0);
    assert!(out.stderr.contains("4 succeeded"), "{}", out.stderr);
    netns.link("up");
    // Its two tasks ended while it was cut off: their results come in late.
    wait_for("the late results to be rejected", Duration::from_secs(90), || {
        let late = count("SELECT count(*) FROM shoal.attempts WHERE late_outcome IS NOT NULL");
        (late == 2).then_some(())
    });
    cut.signal(libc::SIGTERM);
    let cut = cut.wait(Duration::from_secs(60));
    survivor.signal(libc::SIGTERM);
    survivor.wait(Duration::from_secs(60)).expect_code(0);
    assert_eq!(cut.stderr.matches("was rejected").count(), 2, "{}", cut.stderr);
    // The cut-off agent's attempts were closed `crashed` by the rescue, its results
    // kept beside them; every task succeeded once, on the survivor.
    let attempts = rows(
        "SELECT g.name, a.outcome, coalesce(a.late_outcome, '') FROM shoal.attempts a
         JOIN shoal.agents g ON g.id = a.agent ORDER BY g.name, a.task",
    );
    let cut_attempts: Vec<_> = attempts.iter().filter(|a| a[0] == "cut").collect();
    assert_eq!(cut_attempts.len(), 2, "{attempts:?}");
    for a in cut_attempts {
        assert_eq!((a[1].as_str(), a[2].as_str()), ("crashed", "succeeded"), "{attempts:?}");
    }
    let survived: Vec<_> = attempts.iter().filter(|a| a[0] == "survivor").collect();
    assert_eq!(survived.len(), 4, "{attempts:?}");
    assert!(survived.iter().all(|a| a[1] == "succeeded"), "{attempts:?}");
    let tasks = rows("SELECT status, convert_from(stdout, 'UTF8') FROM shoal.tasks ORDER BY task");
    let expected: Vec<Vec<String>> =
        (1..=4).map(|n| vec!["succeeded".to_owned(), format!("{n}\n")]).collect();
    assert_eq!(tasks, expected);
    let twice = count(
        "SELECT count(*) FROM (SELECT task FROM shoal.attempts WHERE outcome = 'succeeded'
                               GROUP BY task HAVING count(*) > 1) AS t",
    );
    assert_eq!(twice, 0, "a task with two successful attempts");
    cluster.stop();
}
