//! Unit tests of what only the PostgreSQL backend has: creating and checking its
//! tables, connecting (never a hang), and a run's lease. What both backends do alike
//! is tested on both by the store's shared tests (`test_support::both_backends`).

use std::time::{Duration, Instant};

use super::cluster::Cluster;
use super::schema::{self, Init};
use crate::error::Error;
use crate::store::test_support::{live_run, new_tasks};
use crate::store::{Store, StoreAddress};

#[test]
fn init_creates_the_tables_once_and_says_so() {
    let url = Cluster::shared().database();
    let address = StoreAddress::parse(url.as_str());
    assert_eq!(schema::init(&address).unwrap(), Init::Created(schema::SCHEMA_VERSION));
    assert_eq!(schema::init(&address).unwrap(), Init::Present(schema::SCHEMA_VERSION));
    let store = Store::open_read_only(address).unwrap();
    assert_eq!(store.runs().unwrap(), vec![]);
}

#[test]
fn a_reader_needs_the_tables_and_creates_nothing() {
    let cluster = Cluster::shared();
    let url = cluster.database();
    match Store::open_read_only(url.as_str()) {
        Err(e @ Error::StoreNoSchema { .. }) => {
            assert!(e.to_string().contains("shoal store init"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Still nothing: a writer creates them.
    assert!(Store::open_read_only(url.as_str()).is_err());
    Store::open(url.as_str()).unwrap();
    Store::open_read_only(url.as_str()).unwrap();
}

#[test]
fn another_schema_version_is_refused() {
    let cluster = Cluster::shared();
    let url = cluster.database();
    Store::open(url.as_str()).unwrap();
    let name = url.rsplit('/').next().unwrap();
    cluster.sql(name, "UPDATE shoal.shoal_schema SET version = 99");
    for e in
        [Store::open(url.as_str()).unwrap_err(), Store::open_read_only(url.as_str()).unwrap_err()]
    {
        assert!(
            matches!(e, Error::StoreVersion { found: 99, expected: schema::SCHEMA_VERSION, .. }),
            "{e:?}"
        );
    }
}

#[test]
fn a_user_without_rights_is_told_so() {
    let cluster = Cluster::shared();
    let url = cluster.database();
    let name = url.rsplit('/').next().unwrap();
    cluster.sql(
        name,
        "CREATE ROLE guest LOGIN; REVOKE CREATE ON DATABASE {name} FROM PUBLIC; \
         REVOKE CREATE ON SCHEMA public FROM PUBLIC"
            .replace("{name}", name)
            .as_str(),
    );
    let guest = url.replace("postgres@", "guest@");
    let e = Store::open(guest.as_str()).unwrap_err();
    assert!(matches!(e, Error::StoreConnect { .. }), "{e:?}");
    assert!(e.to_string().contains("may not create the shoal schema"), "{e}");
}

#[test]
fn an_unreachable_server_fails_within_seconds_naming_the_store_without_its_password() {
    let started = Instant::now();
    // A port nothing listens on, and an address that drops packets (TEST-NET-1).
    for url in [
        "postgresql://ann:s3cret@127.0.0.1:1/jobs",
        "postgresql://ann:s3cret@192.0.2.1:5432/jobs?connect_timeout=1",
    ] {
        let e = Store::open(url).unwrap_err();
        let said = e.to_string();
        assert!(matches!(e, Error::StoreConnect { .. }), "{e:?}");
        assert!(said.contains("ann:***@") && !said.contains("s3cret"), "{said}");
    }
    let e = Store::open("postgresql://h/db?sslmode=nonsense").unwrap_err();
    assert!(matches!(e, Error::StoreConnect { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn a_run_is_alive_while_its_lease_is_held_and_renewed() {
    let cluster = Cluster::shared();
    let url = cluster.database();
    let store = Store::open(url.as_str()).unwrap();
    let (run, hold) = live_run(&store, 2);
    assert!(store.is_alive(run));
    assert!(matches!(store.hold_run(run), Err(Error::RunBusy { .. })));
    drop(hold);
    assert!(!store.is_alive(run), "a dropped hold deletes the lease");
    assert_eq!(store.run(run).unwrap().status, crate::store::RunStatus::Died);
    let again = store.hold_run(run).unwrap();
    assert!(store.is_alive(run));
    // A holder that renews no more (killed): its lease runs out.
    let name = url.rsplit('/').next().unwrap();
    cluster.sql(name, "UPDATE shoal.leases SET expires_at = expires_at - 3600");
    assert!(!store.is_alive(run));
    assert!(store.hold_run(run).is_ok(), "an expired lease is taken over");
    drop(again);
    let _ = new_tasks(1..=1);
}

#[test]
fn a_transaction_left_open_past_a_lease_is_ended_by_the_server_and_its_locks_freed() {
    // As by a process cut off from the database mid-transaction: its locks would stop
    // the rescue of its tasks.
    let url = Cluster::shared().database();
    let address = StoreAddress::parse(url.as_str());
    let StoreAddress::Postgres(conninfo) = &address else { unreachable!() };
    schema::init(&address).unwrap();
    let mut cut_off = schema::connect(&address, conninfo).unwrap();
    cut_off.batch_execute("BEGIN; SELECT * FROM shoal_schema FOR UPDATE").unwrap();
    let lease = Duration::from_secs_f64(super::lease::timings().0);
    std::thread::sleep(lease + Duration::from_millis(500));
    let mut other = schema::connect(&address, conninfo).unwrap();
    other
        .batch_execute("SET lock_timeout = 100; BEGIN; SELECT * FROM shoal_schema FOR UPDATE")
        .expect("the lock was freed");
    assert!(cut_off.batch_execute("COMMIT").is_err(), "its session was ended");
}
