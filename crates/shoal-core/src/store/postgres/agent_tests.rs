//! Tests of shared runs at the store level: the schema's migration, the claim (its
//! order, its filters, SKIP LOCKED, its plan on a large table), fenced completions,
//! retries, the rescue of a lost agent's tasks, and the end of a shared run.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::{Client, NoTls};

use super::agent::{claim_statement, Agent, AgentTimings, Claimed, LOST_AGENTS_LIMIT};
use super::cluster::Cluster;
use super::fence::Rejected;
use super::schema::{self, Init};
use super::submit::Submitter;
use crate::store::test_support::new_tasks;
use crate::store::{NewRun, RunStatus, Store, StoreAddress, StoreEvent};
use crate::task::{AttemptOutcome, Output, TaskStatus};

/// Heartbeats that never come within a test: leases expire only when told to.
const STILL: AgentTimings =
    AgentTimings { lease: Duration::from_secs(600), heartbeat: Duration::from_secs(3600) };

struct Db {
    address: StoreAddress,
    client: Client,
    name: String,
}

fn fresh() -> Db {
    let url = Cluster::shared().database();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let client = Client::connect(&url, NoTls).unwrap();
    Db { address: StoreAddress::Postgres(url), client, name }
}

fn new_run() -> NewRun {
    NewRun {
        command: vec!["job".into()],
        options: serde_json::json!({"jobs": 2}),
        cwd: "/tmp".into(),
        memory_limit_mode: None,
    }
}

/// A shared run of `tasks` tasks, its input closed.
fn shared_run(db: &Db, tasks: u64) -> i64 {
    let submitter = Submitter::create(&db.address, &new_run(), &new_tasks(1..=tasks)).unwrap();
    let run = submitter.run();
    submitter.close().unwrap();
    run
}

fn ended(c: &Claimed, outcome: AttemptOutcome) -> StoreEvent {
    StoreEvent::AttemptEnded {
        run: c.run,
        task: c.task,
        attempt: c.attempt,
        ended_at: 200.0 + f64::from(c.attempt),
        duration: 1.0,
        outcome,
        exit_code: None,
        signal: None,
        final_status: Some(outcome.status()),
        max_rss_kb: None,
        stdout: Output { bytes: b"out".to_vec(), truncated: false },
        stderr: Output::default(),
    }
}

/// Commits `events` through the agent's fenced writer; the late results it rejected.
fn record(agent: &Agent, events: Vec<StoreEvent>) -> Vec<Rejected> {
    let (tx, rx) = mpsc::channel();
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let seen = rejected.clone();
    let writer = agent
        .writer(
            Box::new(move |_| tx.send(()).unwrap()),
            Box::new(|e| panic!("{e}")),
            Box::new(move |r| seen.lock().unwrap().push(r.clone())),
        )
        .unwrap();
    for event in events {
        writer.send(event);
    }
    writer.finish().unwrap();
    rx.recv().unwrap();
    let out = rejected.lock().unwrap().clone();
    out
}

fn statuses(db: &mut Db, run: i64) -> Vec<(i64, String, i64)> {
    db.client
        .query(
            "SELECT task, status, attempts FROM shoal.tasks WHERE run_id = $1 ORDER BY task",
            &[&run],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn expire(db: &Db, agent: &Agent) {
    Cluster::shared().sql(
        &db.name,
        &format!(
            "UPDATE shoal.agents SET expires_at = expires_at - 3600 WHERE id = {}",
            agent.id()
        ),
    );
}

#[test]
fn a_version_1_database_is_migrated_by_a_writer() {
    let mut db = fresh();
    db.client.batch_execute(schema::DDL_1).unwrap();
    db.client.batch_execute("INSERT INTO shoal.shoal_schema VALUES (1)").unwrap();
    assert!(matches!(
        Store::open_read_only(db.address.clone()),
        Err(crate::Error::StoreVersion { found: 1, .. })
    ));
    assert_eq!(schema::init(&db.address).unwrap(), Init::Migrated { from: 1, to: 2 });
    assert_eq!(schema::init(&db.address).unwrap(), Init::Present(2));
    let run = shared_run(&db, 1);
    let agent = Agent::register(&db.address, "a", 1, STILL).unwrap();
    assert_eq!(agent.claim(5, &[]).unwrap().len(), 1);
    assert_eq!(statuses(&mut db, run), vec![(1, "running".into(), 1)]);
}

#[test]
fn a_claim_takes_ready_tasks_of_live_shared_runs_in_order_and_skips_locked_ones() {
    let mut db = fresh();
    // A run of one process keeps its tasks: no agent claims them.
    let store = Store::open(db.address.clone()).unwrap();
    let _local = store.create_run_with(&new_run(), &new_tasks(1..=3)).unwrap();
    let first = shared_run(&db, 4);
    let second = shared_run(&db, 2);
    db.client
        .execute("UPDATE shoal.tasks SET priority = 5 WHERE run_id = $1 AND task = 2", &[&second])
        .unwrap();
    let a = Agent::register(&db.address, "a", 2, STILL).unwrap();
    let b = Agent::register(&db.address, "b", 2, STILL).unwrap();
    let got: Vec<(i64, u64)> = a.claim(3, &[]).unwrap().iter().map(|c| (c.run, c.task)).collect();
    assert_eq!(got, vec![(second, 2), (first, 1), (first, 2)]);
    // Only the given runs; never a task another agent holds.
    let got: Vec<(i64, u64)> =
        b.claim(10, &[second]).unwrap().iter().map(|c| (c.run, c.task)).collect();
    assert_eq!(got, vec![(second, 1)]);
    // A paused run is skipped until unpaused.
    db.client.execute("UPDATE shoal.runs SET paused = true WHERE id = $1", &[&first]).unwrap();
    assert!(b.claim(10, &[]).unwrap().is_empty());
    db.client.execute("UPDATE shoal.runs SET paused = false WHERE id = $1", &[&first]).unwrap();
    let claimed = b.claim(10, &[]).unwrap();
    assert_eq!(claimed.iter().map(|c| c.task).collect::<Vec<_>>(), vec![3, 4]);
    assert!(claimed.iter().all(|c| c.attempt == 1));
    // A draining agent claims nothing.
    db.client
        .execute("UPDATE shoal.tasks SET status = 'queued' WHERE run_id = $1", &[&first])
        .unwrap();
    a.drain().unwrap();
    assert!(a.claim(10, &[]).unwrap().is_empty());
}

#[test]
fn the_claim_stays_on_the_ready_index_at_100_000_rows_with_a_generic_plan() {
    let mut db = fresh();
    let run = shared_run(&db, 1);
    let c = &mut db.client;
    // Prepared while the table is nearly empty, as an agent's first claim is.
    c.batch_execute("SET plan_cache_mode = force_generic_plan").unwrap();
    c.batch_execute(&format!(
        "SET search_path = shoal; PREPARE claim(bigint, text, bigint, bigint[]) AS {}",
        claim_statement()
    ))
    .unwrap();
    c.batch_execute(&format!(
        "INSERT INTO tasks (run_id, task, args, command, priority, retries, status)
         SELECT {run}, n, '[]', 'job', 0, 0,
                CASE WHEN n % 10 = 0 THEN 'queued' ELSE 'succeeded' END
         FROM generate_series(2, 100001) AS n;
         ANALYZE tasks; ANALYZE runs;"
    ))
    .unwrap();
    let plan: Vec<String> = c
        .query("EXPLAIN EXECUTE claim(1, 'h', 8, '{}')", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    // The ready tasks found by the index, in order; the update on those rows alone
    // (an `IN (SELECT ...)` walks every queued row of the table to join them).
    assert!(plan.contains("Index Scan using tasks_ready on tasks q"), "{plan}");
    assert!(plan.contains("Tid Scan on tasks t"), "{plan}");
    assert!(!plan.contains("Seq Scan on tasks") && !plan.contains("Heap Scan on tasks"), "{plan}");
}

#[test]
fn a_late_completion_is_rejected_and_recorded_and_the_rerun_stands() {
    let mut db = fresh();
    let run = shared_run(&db, 1);
    let old = Agent::register(&db.address, "old", 1, STILL).unwrap();
    let new = Agent::register(&db.address, "new", 1, STILL).unwrap();
    let first = old.claim(1, &[]).unwrap().remove(0);
    // The old agent goes silent: its lease expires, the new one rescues its task.
    expire(&db, &old);
    assert_eq!(new.rescue().unwrap(), 1);
    let second = new.claim(1, &[]).unwrap().remove(0);
    assert_eq!((second.task, second.attempt), (1, 2));
    assert!(record(&new, vec![ended(&second, AttemptOutcome::Succeeded)]).is_empty());
    // The old agent's result arrives after all: rejected, recorded, nothing changed.
    let late = record(&old, vec![ended(&first, AttemptOutcome::Failed { exit_code: 3 })]);
    assert_eq!(late, vec![Rejected { run, task: 1, attempt: 1, status: TaskStatus::Failed }]);
    assert_eq!(statuses(&mut db, run), vec![(1, "succeeded".into(), 2)]);
    let rows = db
        .client
        .query(
            "SELECT attempt, outcome, late_outcome, convert_from(stderr, 'UTF8'), agent
             FROM shoal.attempts WHERE run_id = $1 ORDER BY attempt",
            &[&run],
        )
        .unwrap();
    let (outcome, late, why, agent): (String, Option<String>, String, i64) =
        (rows[0].get(1), rows[0].get(2), rows[0].get(3), rows[0].get(4));
    assert_eq!((outcome.as_str(), late.as_deref(), agent), ("crashed", Some("failed"), old.id()));
    assert!(why.contains("the agent old (") && why.contains("was lost"), "{why}");
    assert_eq!(rows[1].get::<_, String>(1), "succeeded");
    assert_eq!(rows[1].get::<_, Option<String>>(2), None);
    // The last task's end ended the run.
    let store = Store::open_read_only(db.address.clone()).unwrap();
    assert_eq!(store.run(run).unwrap().status, RunStatus::Finished);
}

#[test]
fn a_failed_attempt_with_retries_left_is_queued_again_and_rescues_spend_none() {
    let mut db = fresh();
    let run = shared_run(&db, 1);
    db.client.execute("UPDATE shoal.tasks SET retries = 1", &[]).unwrap();
    let a = Agent::register(&db.address, "a", 1, STILL).unwrap();
    let b = Agent::register(&db.address, "b", 1, STILL).unwrap();
    // A rescue: attempt 1 crashed with its agent; it spends no retry.
    a.claim(1, &[]).unwrap();
    expire(&db, &a);
    b.rescue().unwrap();
    let second = b.claim(1, &[]).unwrap().remove(0);
    record(&b, vec![ended(&second, AttemptOutcome::Failed { exit_code: 1 })]);
    assert_eq!(statuses(&mut db, run), vec![(1, "queued".into(), 2)]);
    let store = Store::open_read_only(db.address.clone()).unwrap();
    assert_eq!(store.run(run).unwrap().status, RunStatus::Running);
    // The retry fails too: no retry left.
    let third = b.claim(1, &[]).unwrap().remove(0);
    record(&b, vec![ended(&third, AttemptOutcome::Failed { exit_code: 1 })]);
    assert_eq!(statuses(&mut db, run), vec![(1, "failed".into(), 3)]);
    assert_eq!(store.run(run).unwrap().status, RunStatus::Finished);
}

#[test]
fn a_task_that_took_down_its_limit_of_agents_is_failed_with_the_reason() {
    let mut db = fresh();
    let run = shared_run(&db, 1);
    let sweeper = Agent::register(&db.address, "sweeper", 1, STILL).unwrap();
    sweeper.drain().unwrap();
    for n in 1..=LOST_AGENTS_LIMIT {
        let victim = Agent::register(&db.address, &format!("victim{n}"), 1, STILL).unwrap();
        assert_eq!(victim.claim(1, &[]).unwrap().len(), 1);
        expire(&db, &victim);
        assert_eq!(sweeper.rescue().unwrap(), 1);
    }
    assert_eq!(statuses(&mut db, run), vec![(1, "crashed".into(), LOST_AGENTS_LIMIT)]);
    let store = Store::open_read_only(db.address.clone()).unwrap();
    let task = store.tasks(run, None).unwrap().remove(0);
    let why = String::from_utf8(task.stderr).unwrap();
    assert!(why.contains("victim3") && why.contains("held by 3 lost agents"), "{why}");
    assert_eq!(store.run(run).unwrap().status, RunStatus::Finished);
}

#[test]
fn a_shared_run_lives_without_its_submitter_once_its_input_is_closed() {
    let db = fresh();
    let mut submitter = Submitter::create(&db.address, &new_run(), &new_tasks(1..=1)).unwrap();
    let run = submitter.run();
    submitter.add(&new_tasks(2..=2)).unwrap();
    let store = Store::open_read_only(db.address.clone()).unwrap();
    assert!(store.is_alive(run));
    let agent = Agent::register(&db.address, "a", 2, STILL).unwrap();
    let claimed = agent.claim(2, &[]).unwrap();
    assert_eq!(claimed.len(), 2);
    let events = claimed.iter().map(|c| ended(c, AttemptOutcome::Succeeded)).collect();
    record(&agent, events);
    // All its tasks are done, but its input is open: it runs on.
    assert_eq!(store.run(run).unwrap().status, RunStatus::Running);
    submitter.close().unwrap();
    assert_eq!(store.run(run).unwrap().status, RunStatus::Finished);
    // A run submitted whole, not yet run: alive with no one holding it.
    let waiting = shared_run(&db, 1);
    assert_eq!(store.run(waiting).unwrap().status, RunStatus::Running);
}

#[test]
fn claims_an_agent_does_not_hold_are_given_back_without_spending_a_retry() {
    let mut db = fresh();
    let run = shared_run(&db, 3);
    let agent = Agent::register(&db.address, "a", 3, STILL).unwrap();
    let claimed = agent.claim(3, &[]).unwrap();
    // The answer of a claim was lost: the agent knows only task 1.
    let known = [(claimed[0].run, claimed[0].task, claimed[0].attempt)];
    assert_eq!(agent.release_unknown(&known).unwrap(), 2);
    assert_eq!(
        statuses(&mut db, run),
        vec![(1, "running".into(), 1), (2, "queued".into(), 1), (3, "queued".into(), 1)]
    );
    let rescues: i64 =
        db.client.query_one("SELECT sum(rescues)::bigint FROM shoal.tasks", &[]).unwrap().get(0);
    assert_eq!(rescues, 2, "given back without spending a retry");
    // Stopped, it gives back what it holds and releases its lease.
    agent.stop().unwrap();
    assert_eq!(statuses(&mut db, run).iter().filter(|t| t.1 == "queued").count(), 3);
    let (state, expired): (String, bool) = {
        let row = db
            .client
            .query_one(
                "SELECT state, expires_at <= extract(epoch from clock_timestamp())
                 FROM shoal.agents",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((state.as_str(), expired), ("stopped", true));
    let outcomes: Vec<String> = db
        .client
        .query("SELECT outcome FROM shoal.attempts ORDER BY task", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(outcomes, vec!["interrupted"; 3]);
}
