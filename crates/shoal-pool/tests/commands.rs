//! `CommandPool` runs real processes: statuses, attempts, output and bad settings.

use std::time::Duration;

use shoal_pool::tap::{Observed, Tap, TaskStep};
use shoal_pool::{Command, CommandPool, Error, TaskStatus};

fn pool() -> CommandPool {
    CommandPool::new(2)
        .retry_delay(Duration::from_millis(10))
        .kill_grace(Duration::from_millis(200))
}

#[test]
fn a_timed_out_command_is_retried_then_ends_timed_out() {
    let results = pool()
        .run([Command::new("sleep").arg("30").timeout(Duration::from_millis(200)).retries(1)])
        .unwrap();
    assert_eq!(results[0].status, TaskStatus::TimedOut);
    assert_eq!(results[0].attempts, 2);
}

#[test]
fn a_command_that_fails_once_succeeds_on_its_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("tried");
    // Fails the first time (no mark yet), succeeds the second.
    let script = format!("test -e {0} || {{ touch {0}; exit 1; }}", mark.display());
    let results = pool().run([Command::new("sh").args(["-c", &script]).retries(2)]).unwrap();
    assert_eq!((results[0].status, results[0].attempts), (TaskStatus::Succeeded, 2));
}

#[test]
fn a_program_that_does_not_exist_fails_alone_with_127() {
    let results = pool()
        .run([Command::new("shoal-no-such-program"), Command::new("echo").arg("fine")])
        .unwrap();
    assert_eq!((results[0].status, results[0].exit_code), (TaskStatus::Failed, Some(127)));
    assert_eq!(
        (results[1].status, &results[1].stdout[..]),
        (TaskStatus::Succeeded, &b"fine\n"[..])
    );
}

#[test]
fn output_past_the_limit_is_cut_and_said_so() {
    let results = pool().output_limit(4).run([Command::new("echo").arg("hello")]).unwrap();
    assert_eq!(results[0].stdout, b"hell");
    assert!(results[0].truncated);
}

#[test]
fn results_come_back_in_the_order_given_whatever_the_order_of_ends() {
    let commands = ["0.4", "0", "0.2"].map(|s| Command::new("sleep").arg(s));
    let results = CommandPool::new(3).run(commands).unwrap();
    assert_eq!(results.iter().map(|r| r.task).collect::<Vec<_>>(), [1, 2, 3]);
}

#[test]
fn a_pool_of_no_slots_is_refused() {
    let refused = CommandPool::new(0).run([Command::new("true")]);
    assert!(matches!(refused, Err(Error::InvalidConfig { what: "jobs", .. })), "{refused:?}");
}

#[test]
fn observers_follow_each_command_through_the_tap() {
    let tap = Tap::new(64);
    let mut observer = tap.observe();
    let commands = [Command::new("true"), Command::new("sh").args(["-c", "exit 2"]).retries(1)];
    let results = pool().tap(tap).run(commands).unwrap();
    assert_eq!(results[1].status, TaskStatus::Failed);
    let mut lives: [Vec<String>; 2] = Default::default();
    loop {
        let (task, seen) = match observer.try_next() {
            Some(Observed::Step(TaskStep::Started { task, attempt, .. })) => {
                (task, format!("started {attempt}"))
            }
            Some(Observed::Step(TaskStep::Ended { task, attempt, status, .. })) => {
                (task, format!("ended {attempt} {status:?}"))
            }
            Some(Observed::Ended) | None => break,
            other => panic!("unexpected: {other:?}"),
        };
        lives[task as usize - 1].push(seen);
    }
    assert_eq!(lives[0], ["started 1", "ended 1 Some(Succeeded)"]);
    assert_eq!(lives[1], ["started 1", "ended 1 None", "started 2", "ended 2 Some(Failed)"]);
}
