//! One test per rule of the worker pool (ARCHITECTURE.md, "Rules of the worker
//! pool"), driving the whole machine with facts and times through `test_env`: no
//! processes, no clock.

use super::super::config::{end, failed, Failure};
use super::super::handle::ResizeError;
use super::state::{Action, Out, Record, Settings};
use super::test_env::{kills, ms, pool, secs, shutdowns, spawns, task, us, Env};
use super::NewTask;
use crate::process::Exited;
use crate::task::{TaskMeta, TaskStatus};

const SIGKILL: Exited = Exited::Signal(9);

// ----- lanes and prefetch -----

#[test]
fn lanes_past_the_first_open_once_tasks_are_tiny_and_as_many_as_fit_in_a_millisecond() {
    let mut env = Env::ready(Settings { lanes: 32, ..pool(1) });
    env.submit_all(1..=12, task(0));
    assert_eq!(Env::runs_to(&env.take(), 0), [1], "nothing measured yet: one at a time");
    env.at(us(100)).answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "10 fit in 1 ms");
    assert_eq!(env.in_flight(0).len(), 10);
}

#[test]
fn no_run_waits_behind_another_while_a_task_with_a_timeout_is_unfinished() {
    let mut env = Env::ready(Settings { lanes: 4, ..pool(1) });
    env.submit(1, task(0));
    env.submit(2, TaskMeta { timeout: Some(secs(5)), ..task(0) });
    env.submit_all(3..=8, task(0));
    env.take();
    env.at(us(100)).answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [2], "tiny tasks, but task 2 has a deadline");
    env.at(us(200)).answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [3, 4, 5, 6], "no deadline left: 4 lanes");
}

// ----- blame, requeue, suspects -----

#[test]
fn a_worker_that_dies_with_one_run_dies_of_it() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(0));
    env.at(secs(2)).exit(0, SIGKILL);
    let event = env.event(1);
    assert_eq!((event.end(), event.attempts, event.worker), (end(TaskStatus::Crashed), 1, 1));
    assert_eq!(event.message, "the worker (pid 100) was killed by signal 9 (SIGKILL)");
    assert_eq!(event.duration, secs(2));
    assert_eq!(spawns(&env.take()), [0], "its place gets a new worker");
}

#[test]
fn runs_a_dead_worker_had_not_started_go_back_unblamed_as_suspects_that_run_alone() {
    let mut env = Env::ready(Settings { lanes: 4, ..pool(1) });
    env.submit_all(1..=5, task(0));
    env.take();
    env.at(us(100)).answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [2, 3, 4, 5]);
    env.at(ms(1)).exit(0, SIGKILL);
    assert!((2..=5).all(|t| !env.ended(t)), "none is blamed: which one it ran is unknown");
    env.take();
    env.hello(0);
    assert_eq!(Env::runs_to(&env.take(), 0), [2], "a suspect runs alone");
    assert_eq!(env.in_flight(0)[0].attempt, 1, "going back used no attempt");
    env.at(ms(2)).answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [3], "the next suspect, alone too");
    env.at(ms(3)).exit(0, SIGKILL);
    assert_eq!(env.status(3), end(TaskStatus::Crashed), "alone, its death is blamed exactly");
    assert!(!env.ended(4) && !env.ended(5));
}

#[test]
fn a_suspect_waits_on_its_slot_until_its_workers_queue_is_empty() {
    let mut env = Env::ready(Settings { lanes: 4, ..pool(2) });
    env.submit_all(1..=2, task(0));
    env.at(us(100)).answer(0, true).answer(1, true);
    env.submit_all(3..=6, task(0));
    let tasks = |env: &Env, place| env.in_flight(place).iter().map(|s| s.task).collect::<Vec<_>>();
    assert_eq!((tasks(&env, 0), tasks(&env, 1)), (vec![3, 5], vec![4, 6]));
    env.at(ms(1)).exit(0, SIGKILL);
    env.hello(0);
    let alone = tasks(&env, 0);
    assert!(alone == [3] || alone == [5], "a suspect runs alone in the fresh worker: {alone:?}");
    let held = env.machine.places[1].held.map(|s| s.task).expect("a task held");
    assert_eq!(held, 8 - alone[0], "the other waits on a slot of the busy worker");
    env.take();
    env.at(ms(2)).answer(1, true);
    assert_eq!(Env::runs_to(&env.take(), 1), Vec::<u64>::new(), "its queue is not empty yet");
    env.at(ms(3)).answer(1, true);
    assert_eq!(Env::runs_to(&env.take(), 1), [held], "now it runs, alone");
    assert_eq!(tasks(&env, 1), [held]);
}

#[test]
fn no_run_is_prefetched_to_a_worker_while_it_runs_a_suspect() {
    let mut env = Env::ready(Settings { lanes: 4, ..pool(1) });
    env.submit_all(1..=3, task(0));
    env.at(us(100)).answer(0, true);
    env.at(ms(1)).exit(0, SIGKILL);
    env.submit(4, task(0));
    env.hello(0);
    let first = env.in_flight(0)[0].task;
    env.take();
    env.at(ms(2)).answer(0, true);
    assert_eq!(
        Env::runs_to(&env.take(), 0),
        [5 - first],
        "the other suspect, and nothing behind it"
    );
    env.at(ms(3)).answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [4], "once it is answered, task 4");
}

// ----- quarantine -----

#[test]
fn the_last_try_of_a_task_that_crashed_its_worker_runs_alone_in_a_fresh_worker() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(1));
    env.submit(2, task(0));
    env.take();
    env.at(secs(1)).exit(0, SIGKILL);
    assert!(!env.ended(1), "retried");
    env.hello(0);
    assert_eq!(Env::runs_to(&env.take(), 0), [2], "task 1 waits for its backoff");
    env.at(secs(2)).answer(0, true);
    let actions = env.take();
    assert_eq!(Env::runs_to(&actions, 0), Vec::<u64>::new(), "held: its worker is not fresh");
    assert_eq!(shutdowns(&actions), [0], "and that worker retired");
    env.exit(0, Exited::Code(0));
    assert_eq!(spawns(&env.take()), [0]);
    env.hello(0);
    assert_eq!(Env::runs_to(&env.take(), 0), [1]);
    assert_eq!(env.in_flight(0)[0].attempt, 2);
    env.at(secs(3)).answer(0, true);
    assert_eq!((env.status(1), env.event(1).attempts), (end(TaskStatus::Succeeded), 2));
}

// ----- outcomes: final or retried -----

#[test]
fn a_function_that_raised_is_final() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(3));
    env.at(ms(5)).answer(0, false);
    let event = env.event(1);
    assert_eq!((event.end(), event.attempts), (failed(Failure::Raised), 1));
    assert_eq!(event.message, "ValueError: bad");
    assert_eq!(env.in_flight(0).len(), 0, "not run again");
}

#[test]
fn a_crash_is_retried_by_the_tasks_retries() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(1));
    env.at(ms(10)).exit(0, SIGKILL);
    assert!(!env.ended(1));
    env.hello(0);
    env.at(ms(60)).tick();
    assert_eq!(env.in_flight(0)[0].attempt, 2, "after the backoff");
    env.at(ms(70)).exit(0, SIGKILL);
    let event = env.event(1);
    assert_eq!((event.end(), event.attempts), (end(TaskStatus::Crashed), 2));
    assert!(event.message.ends_with("(attempt 2 of 2)"), "{}", event.message);
}

#[test]
fn a_hang_is_silence_against_cpu_time_and_is_retried() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(1));
    env.probe.cpu_ticks.insert(0, 10);
    env.take();
    env.at(secs(30)).tick();
    assert_eq!(kills(&env.take()), Vec::<usize>::new(), "silent but using the CPU: busy");
    env.at(secs(59)).tick();
    assert_eq!(kills(&env.take()), Vec::<usize>::new(), "its silence restarted at 30 s");
    env.at(secs(60)).tick();
    assert_eq!(kills(&env.take()), [0], "silent and stopped: hung");
    env.exit(0, SIGKILL);
    assert!(!env.ended(1), "a hang is retried");
    env.hello(0);
    env.at(secs(61)).tick();
    assert_eq!(env.in_flight(0)[0].attempt, 2);
}

#[test]
fn a_heartbeat_pushes_a_hang_back() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(0));
    env.probe.cpu_ticks.insert(0, 10);
    env.at(secs(20)).heartbeat(0, 0);
    env.take();
    env.at(secs(30)).tick();
    assert_eq!(kills(&env.take()), Vec::<usize>::new(), "heard at 20 s");
    env.at(secs(50)).tick();
    assert_eq!(kills(&env.take()), [0], "no CPU used since its heartbeat");
}

#[test]
fn a_hang_ends_a_task_with_its_reason() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(0));
    env.at(secs(30)).tick().exit(0, SIGKILL);
    assert_eq!(env.status(1), end(TaskStatus::Crashed));
    assert_eq!(env.event(1).message, "the worker stopped answering (nothing heard for 30 s)");
}

#[test]
fn a_worker_that_never_says_hello_is_hung_and_no_heartbeats_turn_the_watch_off_after() {
    let mut env = Env::starting(Settings { heartbeat: secs(0), ..pool(1) });
    env.at(secs(30)).tick();
    assert_eq!(kills(&env.take()), [0], "silent before Hello: always watched");
    let mut env = Env::ready(Settings { heartbeat: secs(0), ..pool(1) });
    env.submit(1, task(0));
    env.at(secs(300)).tick();
    assert_eq!(kills(&env.take()), Vec::<usize>::new(), "no heartbeats asked: not watched");
}

#[test]
fn a_memory_kill_is_retried_and_ends_as_memory_exceeded() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(1));
    env.at(ms(10)).oom_killed(0);
    assert!(!env.ended(1));
    env.hello(0).at(ms(100)).tick();
    assert_eq!(env.in_flight(0)[0].attempt, 2);
    env.oom_killed(0);
    assert_eq!(env.status(1), end(TaskStatus::MemoryExceeded));
    assert_eq!(env.event(1).message, "the worker went past its memory limit (attempt 2 of 2)");
}

#[test]
fn a_memory_error_under_rlimit_as_is_the_limits_doing_retried_and_its_worker_replaced() {
    let mut env = Env::ready(Settings { address_space_limit: true, ..pool(1) });
    env.submit(1, task(1));
    env.take();
    env.at(ms(10)).raise(0, "Traceback (most recent call last):\nMemoryError");
    assert!(!env.ended(1), "retried, unlike a task that raised");
    assert_eq!(shutdowns(&env.take()), [0], "its heap grew to the limit: replaced");
    env.exit(0, Exited::Code(0)).hello(0).at(ms(100)).tick();
    env.raise(0, "MemoryError: cannot allocate");
    assert_eq!(env.status(1), end(TaskStatus::MemoryExceeded));
}

#[test]
fn a_timeout_kills_its_worker_and_is_not_retried() {
    let mut env = Env::ready(pool(1));
    env.submit(1, TaskMeta { timeout: Some(secs(1)), ..task(3) });
    env.take();
    env.at(ms(999)).tick();
    assert_eq!(kills(&env.take()), Vec::<usize>::new());
    env.at(secs(1)).tick();
    assert_eq!(kills(&env.take()), [0]);
    env.exit(0, SIGKILL);
    let event = env.event(1);
    assert_eq!((event.end(), event.attempts), (end(TaskStatus::TimedOut), 1));
    assert_eq!(event.message, "the task ran past its timeout of 1 s");
}

#[test]
fn a_timeout_blames_the_run_whose_deadline_passed_and_requeues_the_others_unsuspected() {
    let mut env = Env::ready(Settings { lanes: 4, ..pool(1) });
    env.submit(1, task(0));
    env.at(us(100)).answer(0, true);
    env.submit_all(2..=4, task(0));
    env.submit(5, TaskMeta { timeout: Some(secs(1)), ..task(0) });
    let tasks = |env: &Env| env.in_flight(0).iter().map(|s| s.task).collect::<Vec<_>>();
    assert_eq!(tasks(&env), [2, 3, 4], "a deadline closes the other lanes");
    env.at(ms(1)).answer(0, true);
    assert_eq!(tasks(&env), [3, 4, 5]);
    env.take();
    env.at(ms(1001)).tick();
    assert_eq!(kills(&env.take()), [0]);
    env.exit(0, SIGKILL);
    assert_eq!(env.status(5), end(TaskStatus::TimedOut));
    assert!(!env.ended(3) && !env.ended(4), "the others go back");
    assert!(!env.machine.tasks[&3].suspect && !env.machine.tasks[&4].suspect, "unsuspected");
}

// ----- steering -----

#[test]
fn a_task_cancelled_before_a_worker_has_it_ends_cancelled_and_never_runs() {
    let mut env = Env::ready(pool(1));
    env.submit_all(1..=2, task(0));
    assert!(!env.machine.cancel(1), "task 1 is in its worker: too late");
    assert!(env.machine.cancel(2));
    env.take();
    env.at(ms(1)).answer(0, true);
    assert_eq!(env.status(2), end(TaskStatus::Cancelled));
    assert_eq!(Env::runs_to(&env.take(), 0), Vec::<u64>::new());
}

#[test]
fn a_paused_pool_starts_nothing_until_unpaused() {
    use crate::store::ControlAction;
    let mut env = Env::ready(pool(1));
    assert_eq!(
        env.machine.control(ms(1), ControlAction::Pause),
        "paused: no new calls until unpaused"
    );
    env.submit(1, task(0));
    assert_eq!(Env::runs_to(&env.take(), 0), Vec::<u64>::new());
    assert_eq!(env.machine.control(ms(2), ControlAction::Unpause), "unpaused");
    env.tick();
    assert_eq!(Env::runs_to(&env.take(), 0), [1]);
}

// ----- a broken pool -----

#[test]
fn an_initializer_that_raises_breaks_the_pool_once_with_no_respawn() {
    let mut env = Env::starting(Settings { init: true, ..pool(2) });
    env.submit(1, task(3));
    env.take();
    env.hello(0);
    let sent: Vec<_> = env.take().into_iter().filter(|a| matches!(a, Action::Send(..))).collect();
    assert_eq!(sent, [Action::Send(0, Out::Welcome), Action::Send(0, Out::Init)]);
    env.init_done(0, false);
    let event = env.event(1);
    assert_eq!((event.end(), event.attempts), (failed(Failure::InitFailed), 0));
    assert_eq!(
        (event.payload.as_slice(), event.message.as_str()),
        (&b"err"[..], "ValueError: no model")
    );
    assert_eq!(kills(&env.take()), [0, 1]);
    env.exit(0, SIGKILL).exit(1, SIGKILL);
    assert_eq!(spawns(&env.take()), Vec::<usize>::new(), "no respawn loop");
    env.submit(2, task(0));
    assert_eq!(env.status(2), failed(Failure::InitFailed), "later tasks too");
    env.close();
    assert!(env.machine.finished());
}

#[test]
fn three_workers_dying_before_ready_in_a_row_break_the_pool() {
    let mut env = Env::starting(pool(1));
    env.submit(1, task(0));
    env.exit(0, Exited::Code(1)).exit(0, Exited::Code(1));
    assert_eq!(spawns(&env.take()), [0, 0, 0], "the first start and two replacements");
    env.exit(0, Exited::Code(1));
    assert_eq!(spawns(&env.take()), Vec::<usize>::new(), "the third breaks it: no respawn");
    let event = env.event(1);
    assert_eq!(event.end(), failed(Failure::Refused));
    assert_eq!(
        event.message,
        "workers fail to start (3 times in a row); the last: the worker (pid 100) exited with status 1"
    );
}

#[test]
fn workers_that_cannot_be_spawned_break_the_pool_after_three_tries() {
    let mut env = Env::unstarted(pool(1));
    env.failing_spawns = 3;
    env.start();
    assert_eq!(spawns(&env.take()), [0, 0, 0]);
    env.submit(1, task(0));
    assert_eq!(env.status(1), failed(Failure::Refused));
    assert!(env.event(1).message.ends_with("the last: no such program"));
}

// ----- recycling -----

#[test]
fn a_worker_is_recycled_after_max_tasks_once_it_has_answered() {
    let mut env = Env::ready(Settings { max_tasks_per_worker: Some(2), ..pool(1) });
    env.submit_all(1..=3, task(0));
    env.take();
    env.at(ms(10)).answer(0, true);
    let actions = env.take();
    assert_eq!((Env::runs_to(&actions, 0), shutdowns(&actions)), (vec![2], vec![0]));
    env.at(ms(20)).answer(0, true);
    assert_eq!(env.status(2), end(TaskStatus::Succeeded), "it answers what it has");
    env.exit(0, Exited::Code(0));
    assert_eq!(spawns(&env.take()), [0]);
    env.hello(0);
    assert_eq!(Env::runs_to(&env.take(), 0), [3]);
}

#[test]
fn a_worker_grown_past_recycle_memory_is_recycled() {
    let mut env = Env::ready(Settings { recycle_memory: Some(1000), ..pool(1) });
    env.heartbeat(0, 1000);
    assert_eq!(shutdowns(&env.take()), Vec::<usize>::new());
    env.heartbeat(0, 1001);
    assert_eq!(shutdowns(&env.take()), [0], "its heartbeat says so");
    let mut env = Env::ready(Settings { recycle_memory: Some(1000), ..pool(1) });
    env.submit(1, task(0));
    env.probe.rss.insert(0, 5000);
    env.take();
    env.answer(0, true);
    assert_eq!(shutdowns(&env.take()), [0], "its size after a Result says so");
}

// ----- elastic pools and resizes -----

#[test]
fn an_elastic_pool_grows_while_tasks_wait_and_retires_idle_workers_down_to_its_minimum() {
    let settings = Settings { min_workers: Some(1), idle_timeout: Some(secs(10)), ..pool(3) };
    let mut env = Env::starting(settings);
    assert_eq!(spawns(&env.take()), [0], "its minimum");
    env.hello(0);
    env.submit_all(1..=3, task(0));
    assert_eq!(spawns(&env.take()), [1, 2], "grown by the tasks no worker takes");
    env.hello(1).hello(2);
    env.at(secs(1)).answer(0, true).answer(1, true).answer(2, true);
    env.take();
    assert_eq!(env.machine.next_wakeup(), Some(secs(11)));
    env.at(secs(11)).tick();
    let actions = env.take();
    assert_eq!(shutdowns(&actions).len(), 2, "idle for 10 s: down to 1");
    assert_eq!(kills(&actions), Vec::<usize>::new());
}

#[test]
fn a_resize_down_never_kills_a_running_task() {
    let mut env = Env::ready(pool(2));
    env.submit_all(1..=3, task(0));
    env.take();
    assert_eq!(env.machine.resize(ms(5), 1).as_deref(), Ok("workers 2 -> 1"));
    env.turn();
    let actions = env.take();
    assert_eq!((shutdowns(&actions), kills(&actions)), (vec![1], vec![]));
    env.at(ms(10)).answer(1, true);
    assert_eq!(env.status(2), end(TaskStatus::Succeeded), "it finishes its task");
    env.exit(1, Exited::Code(0));
    assert_eq!(spawns(&env.take()), Vec::<usize>::new(), "its place was taken away");
    env.answer(0, true);
    assert_eq!(Env::runs_to(&env.take(), 0), [3], "what is left runs on the others");
}

#[test]
fn a_resize_past_the_memory_limits_cgroups_or_of_an_ending_pool_is_refused() {
    let mut env = Env::ready(Settings { cap: Some(2), ..pool(2) });
    assert_eq!(env.machine.resize(ms(1), 3), Err(ResizeError::OverCap { wanted: 3, cap: 2 }));
    env.close();
    assert_eq!(env.machine.resize(ms(1), 1), Err(ResizeError::Ending("closing")));
}

// ----- shutdown -----

#[test]
fn closing_retires_workers_once_drained_and_kills_those_still_there_after_the_grace() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(0));
    env.at(secs(1)).close();
    assert_eq!(shutdowns(&env.take()), Vec::<usize>::new(), "a task is left");
    env.at(secs(2)).answer(0, true);
    assert_eq!(shutdowns(&env.take()), [0]);
    assert_eq!(env.machine.next_wakeup(), Some(secs(3)), "the grace runs from its last Result");
    env.at(ms(2999)).tick();
    assert_eq!(kills(&env.take()), Vec::<usize>::new());
    env.at(secs(3)).tick();
    assert_eq!(kills(&env.take()), [0], "lingered");
    env.exit(0, SIGKILL);
    assert!(env.machine.finished());
    assert_eq!(env.status(1), end(TaskStatus::Succeeded));
}

#[test]
fn terminate_kills_every_worker_and_cancels_every_unfinished_task() {
    let mut env = Env::ready(pool(2));
    env.submit_all(1..=3, task(0));
    env.take();
    env.machine.terminate(ms(1));
    env.turn();
    assert_eq!(kills(&env.take()), [0, 1]);
    assert!((1..=3).all(|t| env.status(t) == end(TaskStatus::Cancelled)));
    env.exit(0, SIGKILL).exit(1, SIGKILL);
    assert_eq!(spawns(&env.take()), Vec::<usize>::new());
    assert!(env.machine.finished() && env.machine.cut_short());
}

// ----- what reaches the store and the front end -----

#[test]
fn a_task_with_a_stored_result_ends_at_submit_and_nothing_runs() {
    let mut env = Env::ready(Settings { recording: true, storing: true, ..pool(1) });
    let reused = NewTask { id: 1, meta: task(0), payload: vec![1], reused: Some(b"42".to_vec()) };
    env.machine.submit(ms(1), [reused]);
    env.turn();
    let event = env.event(1);
    assert_eq!(
        (event.end(), event.attempts, event.payload.as_slice()),
        (end(TaskStatus::Succeeded), 0, &b"42"[..])
    );
    assert_eq!(env.records(), [&Record::Reused(1, b"42".to_vec())]);
    assert_eq!(Env::runs_to(&env.take(), 0), Vec::<u64>::new());
}

#[test]
fn a_run_too_large_for_a_frame_fails_without_reaching_a_worker() {
    let mut env = Env::ready(Settings { max_frame: 17, ..pool(1) });
    env.submit(1, task(3));
    assert_eq!(env.status(1), failed(Failure::Refused));
    assert_eq!(
        env.event(1).message,
        "cannot send the task: frame length 18 is over the limit of 17 bytes"
    );
    assert_eq!(Env::runs_to(&env.take(), 0), Vec::<u64>::new());
}

#[test]
fn with_a_store_each_attempt_is_recorded_started_and_ended() {
    let mut env = Env::ready(Settings { recording: true, storing: true, ..pool(1) });
    env.submit(1, task(0));
    env.at(ms(3)).answer(0, true);
    let records = env.records();
    assert!(matches!(records[0], Record::Started { task: 1, attempt: 1, place: 0, running: true }));
    assert!(matches!(
        records[1],
        Record::Ended { task: 1, ran, result: Some(r), .. } if *ran == ms(3) && r == &vec![7]
    ));
}

#[test]
fn a_closed_channel_gives_the_exit_the_grace_to_come_then_the_worker_dies_of_a_protocol_error() {
    let mut env = Env::ready(pool(1));
    env.submit(1, task(0));
    env.take();
    env.at(secs(1)).channel_closed(0);
    assert_eq!(kills(&env.take()), Vec::<usize>::new(), "its exit should follow");
    assert_eq!(env.machine.next_wakeup(), Some(secs(2)));
    env.at(secs(2)).tick();
    assert_eq!(kills(&env.take()), [0]);
    env.exit(0, SIGKILL);
    assert_eq!(env.status(1), end(TaskStatus::Crashed));
    let message = &env.event(1).message;
    assert_eq!(message, "the worker broke the protocol: it closed its channel but did not exit");
}
