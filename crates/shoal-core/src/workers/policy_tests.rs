//! One test per rule of the worker pool (ARCHITECTURE.md, "Rules of the worker
//! pool"), driven with facts and times, no processes.

use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A Run of task `task`, attempt 1, on `slot`.
fn run(task: TaskId, slot: SlotId) -> Sent {
    Sent { task, attempt: 1, slot }
}

/// A worker that can take a Run and has had none.
fn fresh() -> WorkerLoad {
    WorkerLoad { available: true, ..WorkerLoad::default() }
}

/// A worker that has run `given` Runs and has `in_flight` unanswered.
fn worked(given: u64, in_flight: usize) -> WorkerLoad {
    WorkerLoad { available: true, given, in_flight, holding: false, alone: false }
}

/// A task with `retries` that crashed `crashes` workers.
fn crashed(crashes: u32, retries: u32) -> TaskRisk {
    TaskRisk { crashes, suspect: false, retries }
}

fn suspect() -> TaskRisk {
    TaskRisk { suspect: true, ..TaskRisk::default() }
}

fn ready() -> LaneView {
    LaneView { ready: true, ..LaneView::default() }
}

// ----- lanes and prefetch -----

#[test]
fn prefetch_fills_the_budget_with_tiny_tasks_only() {
    assert_eq!(prefetch_depth(None, 32, 0), 1, "nothing measured yet");
    assert_eq!(prefetch_depth(Some(0.000_005), 32, 0), 32, "5 us tasks: every lane");
    assert_eq!(prefetch_depth(Some(0.000_25), 32, 0), 4, "0.25 ms tasks: 4 fit in 1 ms");
    assert_eq!(prefetch_depth(Some(0.000_6), 32, 0), 2, "tiny: at least one prefetched");
    assert_eq!(prefetch_depth(Some(0.001), 32, 0), 1, "not tiny: no prefetch");
    assert_eq!(prefetch_depth(Some(2.0), 32, 0), 1);
    assert_eq!(prefetch_depth(Some(0.0), 8, 0), 8, "instant tasks: every lane");
    assert_eq!(prefetch_depth(Some(0.000_005), 1, 0), 1, "prefetch off");
}

#[test]
fn no_prefetch_while_a_task_with_a_timeout_is_unfinished() {
    assert_eq!(prefetch_depth(Some(0.000_005), 32, 1), 1);
    assert_eq!(prefetch_depth(Some(0.000_005), 32, 0), 32);
}

#[test]
fn the_typical_time_is_a_moving_average() {
    let first = typical_after(None, ms(10));
    assert!((first - 0.010).abs() < 1e-9, "the first task sets it");
    let next = typical_after(Some(first), ms(0));
    assert!((next - 0.009).abs() < 1e-9, "each later task weighs a tenth: {next}");
}

#[test]
fn a_ready_workers_first_lane_is_open_and_the_others_only_while_prefetching() {
    assert!(lane_open(ready(), 0, 1));
    assert!(!lane_open(ready(), 1, 1), "no prefetch: one lane");
    assert!(lane_open(ready(), 3, 4) && !lane_open(ready(), 4, 4), "depth 4: lanes 0..4");
    for closed in [
        LaneView::default(),
        LaneView { spent: true, ..ready() },
        LaneView { holding: true, ..ready() },
    ] {
        assert!(!lane_open(closed, 0, 4), "{closed:?} takes nothing");
    }
    let alone = LaneView { alone: true, ..ready() };
    assert!(!lane_open(alone, 0, 4) && !lane_open(alone, 1, 4), "alone: no lane takes more");
}

// ----- quarantine and suspects -----

#[test]
fn a_run_goes_to_its_worker_when_nothing_is_wrong() {
    assert_eq!(place(TaskRisk::default(), 1, worked(5, 3)), Placement::Send { alone: false });
}

#[test]
fn a_worker_that_cannot_take_a_run_gives_it_back_to_the_queue() {
    let gone = WorkerLoad { available: false, ..fresh() };
    assert_eq!(place(TaskRisk::default(), 1, gone), Placement::Requeue);
}

#[test]
fn the_last_try_of_a_task_that_crashed_workers_runs_alone_in_a_fresh_worker() {
    // Retries 2: attempts 1..=3, the 3rd is the last.
    assert_eq!(place(crashed(2, 2), 3, fresh()), Placement::Send { alone: true });
    assert_eq!(place(crashed(2, 2), 3, worked(1, 0)), Placement::HoldAndRetire, "not fresh");
    assert_eq!(place(crashed(2, 2), 3, worked(0, 1)), Placement::HoldAndRetire, "busy");
    let holding = WorkerLoad { holding: true, ..worked(1, 0) };
    assert_eq!(place(crashed(2, 2), 3, holding), Placement::Requeue, "one held task a slot");
    // Not its last try, or it never crashed a worker: no quarantine.
    assert_eq!(place(crashed(1, 2), 2, worked(1, 0)), Placement::Send { alone: false });
    assert_eq!(place(crashed(0, 2), 3, worked(1, 0)), Placement::Send { alone: false });
}

#[test]
fn a_suspect_runs_alone_once_its_workers_queue_is_empty() {
    assert_eq!(place(suspect(), 1, worked(4, 0)), Placement::Send { alone: true });
    assert_eq!(place(suspect(), 1, worked(4, 2)), Placement::Hold);
    let holding = WorkerLoad { holding: true, ..worked(4, 2) };
    assert_eq!(place(suspect(), 1, holding), Placement::Requeue);
    let alone = WorkerLoad { alone: true, ..worked(4, 1) };
    assert_eq!(place(TaskRisk::default(), 1, alone), Placement::Requeue, "nothing joins it");
    let holding = WorkerLoad { holding: true, ..worked(4, 2) };
    assert_eq!(place(TaskRisk::default(), 1, holding), Placement::Requeue, "the held one first");
}

#[test]
fn crashes_count_towards_quarantine_and_raising_or_timing_out_does_not() {
    assert!(is_crash(AttemptOutcome::Crashed { signal: 9 }));
    assert!(is_crash(AttemptOutcome::Failed { exit_code: 1 }));
    assert!(is_crash(AttemptOutcome::MemoryExceeded));
    assert!(!is_crash(AttemptOutcome::Raised));
    assert!(!is_crash(AttemptOutcome::TimedOut));
    assert!(!is_crash(AttemptOutcome::Succeeded));
}

// ----- blame -----

#[test]
fn a_worker_that_dies_with_one_run_dies_of_it() {
    assert_eq!(blame(&[run(7, 1)], None), [Fate::Blamed { ran: true }]);
    assert!(blame(&[], None).is_empty(), "an idle worker's death blames nobody");
}

#[test]
fn with_several_runs_none_is_blamed_and_all_go_back_as_suspects() {
    let fates = blame(&[run(7, 1), run(8, 3), run(9, 5)], None);
    assert_eq!(fates, [Fate::Requeued { suspect: true }; 3]);
}

#[test]
fn a_timeout_blames_the_run_whose_deadline_passed_and_requeues_the_others_unsuspected() {
    let fates = blame(&[run(7, 1), run(8, 3)], Some(3));
    assert_eq!(fates, [Fate::Requeued { suspect: false }, Fate::Blamed { ran: false }]);
    let fates = blame(&[run(7, 1), run(8, 3)], Some(1));
    assert_eq!(fates, [Fate::Blamed { ran: true }, Fate::Requeued { suspect: false }]);
}

#[test]
fn a_workers_end_reads_as_its_cause_first_then_its_exit() {
    let signal = Some(Exited::Signal(9));
    let (outcome, why) = exit_outcome(None, signal, false, 42);
    assert_eq!(outcome, AttemptOutcome::Crashed { signal: 9 });
    assert_eq!(why, "the worker (pid 42) was killed by signal 9 (SIGKILL)");
    let (outcome, why) = exit_outcome(None, Some(Exited::Code(3)), false, 42);
    assert_eq!(outcome, AttemptOutcome::Failed { exit_code: 3 });
    assert_eq!(why, "the worker (pid 42) exited with status 3");
    let (outcome, why) = exit_outcome(Some(&Cause::Hung(secs(5))), signal, false, 42);
    assert_eq!(outcome, AttemptOutcome::Crashed { signal: 9 });
    assert_eq!(why, "the worker stopped answering (nothing heard for 5 s)");
    let (_, why) = exit_outcome(Some(&Cause::Protocol("garbage".into())), signal, false, 42);
    assert_eq!(why, "the worker broke the protocol: garbage");
    let (outcome, _) = exit_outcome(Some(&Cause::Hung(secs(5))), signal, true, 42);
    assert_eq!(outcome, AttemptOutcome::MemoryExceeded, "an OOM kill says more than anything");
    let (outcome, why) = exit_outcome(None, None, false, 42);
    assert_eq!(
        (outcome, why.as_str()),
        (AttemptOutcome::Failed { exit_code: -1 }, "the worker could not be reaped")
    );
}

// ----- start failures, replacement, shutdown -----

#[test]
fn three_start_failures_in_a_row_break_the_pool_and_a_ready_worker_resets_them() {
    let mut failures = StartFailures::default();
    assert!(!failures.failed() && !failures.failed());
    failures.ready();
    assert!(!failures.failed() && !failures.failed(), "counted from the last ready worker");
    assert!(failures.failed(), "the third in a row breaks");
    assert_eq!(failures.count(), MAX_START_FAILURES);
}

#[test]
fn only_an_unplanned_death_before_ready_is_a_start_failure() {
    let died = Some(Exited::Code(1));
    assert!(failed_to_start(Phase::Starting, None, died));
    assert!(failed_to_start(Phase::Initializing, None, Some(Exited::Signal(9))));
    assert!(!failed_to_start(Phase::Ready, None, died), "a ready worker's death is a crash");
    assert!(!failed_to_start(Phase::Starting, Some(&Cause::Terminate), died));
    assert!(!failed_to_start(Phase::Starting, Some(&Cause::Lingered), died));
    assert!(failed_to_start(Phase::Starting, Some(&Cause::Hung(secs(1))), died), "hung at start");
    assert!(!failed_to_start(Phase::Retiring, None, Some(Exited::Code(0))));
}

#[test]
fn a_dead_worker_is_replaced_unless_the_pool_is_done_with_it() {
    let running = PoolState::default();
    assert!(replace_after_exit(running, false, false));
    assert!(!replace_after_exit(PoolState { terminating: true, ..running }, true, false));
    assert!(!replace_after_exit(PoolState { broken: true, ..running }, true, false));
    let drained = PoolState { closing: true, drained: true, ..running };
    assert!(!replace_after_exit(drained, false, false), "closed and nothing left to run");
    assert!(replace_after_exit(drained, true, false), "a task waits for its fresh worker");
    let closing = PoolState { closing: true, ..running };
    assert!(replace_after_exit(closing, false, false), "work left");
    assert!(!replace_after_exit(running, false, true), "a resize took the place away");
}

// ----- hangs -----

#[test]
fn silence_means_a_hang_before_hello_always_and_afterwards_only_with_heartbeats() {
    let (beat, timeout) = (secs(1), secs(10));
    assert!(watches_hang(Phase::Starting, false, Duration::ZERO, timeout));
    assert!(!watches_hang(Phase::Ready, false, Duration::ZERO, timeout), "no heartbeats");
    assert!(watches_hang(Phase::Ready, false, beat, timeout));
    assert!(!watches_hang(Phase::Ready, true, beat, timeout), "being killed already");
    assert!(!watches_hang(Phase::Starting, false, beat, Duration::ZERO), "check off");
}

#[test]
fn a_silent_worker_that_uses_the_cpu_is_busy_and_one_that_does_not_hangs() {
    let timeout = secs(10);
    let mut silence = Silence::since(secs(1));
    assert_eq!(silence.due(timeout), secs(11));
    let never = || -> Option<u64> { panic!("CPU time read before the timeout") };
    assert_eq!(silence.check(secs(10), timeout, never), Hang::Heard);
    assert_eq!(silence.check(secs(11), timeout, || Some(50)), Hang::Busy);
    assert_eq!(silence.due(timeout), secs(21), "its silence restarts at the check");
    assert_eq!(silence.check(secs(21), timeout, || Some(50)), Hang::Hung, "no CPU since");
    assert_eq!(silence.check(secs(21), timeout, || None), Hang::Hung, "CPU time unknown");
}

// ----- recycling -----

#[test]
fn a_worker_is_recycled_after_its_tasks_or_past_its_memory() {
    assert!(!spent(1_000, None));
    assert!(!spent(2, Some(3)) && spent(3, Some(3)));
    assert!(!grown(u64::MAX, None));
    assert!(!grown(100, Some(100)) && grown(101, Some(100)));
}

#[test]
fn only_a_memory_error_under_rlimit_as_is_the_limits_doing() {
    let traceback = "Traceback (most recent call last):\n  ...\nMemoryError\n";
    assert_eq!(allocation_failed(traceback, true), Some("MemoryError"));
    assert_eq!(allocation_failed("x\nMemoryError: big\n", true), Some("MemoryError: big"));
    assert_eq!(allocation_failed(traceback, false), None, "no RLIMIT_AS: the task's own");
    assert_eq!(allocation_failed("ValueError: MemoryError", true), None);
}

// ----- shutdown -----

#[test]
fn a_ready_worker_is_retired_with_shutdown_and_the_grace_runs_once_it_has_answered() {
    let (now, grace) = (secs(10), secs(2));
    let idle = retire(Phase::Ready, false, 0, now, grace);
    assert_eq!(idle, Retire::Shutdown { kill_at: Some(secs(12)) });
    let busy = retire(Phase::Ready, false, 3, now, grace);
    assert_eq!(busy, Retire::Shutdown { kill_at: None }, "it answers its Runs first");
    // Its last Result starts the grace; an earlier one leaves the deadline alone.
    assert_eq!(after_last_result(Phase::Retiring, 0, None, secs(30), grace), Some(secs(32)));
    assert_eq!(after_last_result(Phase::Retiring, 1, None, secs(30), grace), None);
    assert_eq!(after_last_result(Phase::Ready, 0, None, secs(30), grace), None);
}

#[test]
fn a_worker_not_ready_is_killed_and_one_going_already_is_left_alone() {
    let (now, grace) = (secs(10), secs(2));
    assert_eq!(retire(Phase::Starting, false, 0, now, grace), Retire::Kill);
    assert_eq!(retire(Phase::Initializing, false, 0, now, grace), Retire::Kill);
    assert_eq!(retire(Phase::Retiring, false, 0, now, grace), Retire::Going);
    assert_eq!(retire(Phase::Ready, true, 0, now, grace), Retire::Going, "being killed");
}

#[test]
fn a_closed_channel_gives_the_exit_the_grace_to_come_and_then_reads_as_a_protocol_error() {
    let grace = secs(2);
    assert_eq!(after_channel_closed(None, secs(5), grace), Some(secs(7)));
    assert_eq!(after_channel_closed(Some(secs(6)), secs(5), grace), Some(secs(6)), "kept");
    let cause = overdue_cause(Some("cut mid-frame"), Phase::Ready);
    assert_eq!(cause, Cause::Protocol("cut mid-frame".into()));
    assert_eq!(overdue_cause(Some("closed"), Phase::Retiring), Cause::Lingered);
    assert_eq!(overdue_cause(None, Phase::Retiring), Cause::Lingered);
}

// ----- a live resize -----

#[test]
fn a_resize_takes_the_highest_places_away_and_brings_them_back_before_adding() {
    let plan = resize(&[false; 4], 2, None);
    assert_eq!(plan, Resize { given: 2, remove: vec![3, 2], ..Resize::default() });
    let away = [false, true, false, true];
    let plan = resize(&away, 5, None);
    assert_eq!(plan, Resize { given: 5, revive: vec![1, 3], add: 1, ..Resize::default() });
    let plan = resize(&away, 3, None);
    assert_eq!(plan, Resize { given: 3, revive: vec![1], ..Resize::default() });
    assert_eq!(resize(&[false; 2], 0, None).remove, [1], "at least 1 worker");
    assert_eq!(resize(&[false; 2], 2, None), Resize { given: 2, ..Resize::default() });
}

#[test]
fn a_resize_stays_within_the_memory_limits_cgroups() {
    let plan = resize(&[false; 2], 8, Some(3));
    assert_eq!(plan, Resize { given: 3, add: 1, ..Resize::default() });
}

// ----- an elastic pool -----

fn elastic(min: usize, max: usize, idle: u64) -> Elastic {
    Elastic { min, max, idle_timeout: Some(secs(idle)) }
}

fn load(waiting: usize, active: usize, free: usize, idle: &[(usize, Duration)]) -> Load<'_> {
    Load { waiting, active, free, idle }
}

#[test]
fn an_elastic_pool_grows_by_the_tasks_no_free_worker_will_take_up_to_its_maximum() {
    let bounds = elastic(1, 3, 30);
    assert_eq!(scale(bounds, load(5, 1, 0, &[]), secs(1)), Scale::GrowTo(3), "capped at max");
    assert_eq!(scale(bounds, load(1, 1, 0, &[]), secs(1)), Scale::GrowTo(2));
    assert_eq!(scale(bounds, load(2, 2, 1, &[]), secs(1)), Scale::GrowTo(3), "one is served");
    assert_eq!(
        scale(bounds, load(1, 2, 1, &[]), secs(1)),
        Scale::Keep,
        "a starting worker takes it"
    );
    assert_eq!(scale(bounds, load(9, 3, 0, &[]), secs(1)), Scale::Keep, "at the maximum");
}

#[test]
fn an_elastic_pool_retires_workers_idle_past_the_timeout_longest_idle_first_down_to_its_minimum() {
    let bounds = elastic(1, 4, 30);
    let idle = [(0, secs(5)), (2, secs(1)), (3, secs(20))];
    assert_eq!(scale(bounds, load(0, 4, 3, &idle), secs(30)), Scale::Keep, "none idle 30 s yet");
    assert_eq!(scale(bounds, load(0, 4, 3, &idle), secs(35)), Scale::Retire(vec![2, 0]));
    // Later all three have been idle long enough, and three may go (min 1 of 4).
    assert_eq!(scale(bounds, load(0, 4, 3, &idle), secs(50)), Scale::Retire(vec![2, 0, 3]));
    assert_eq!(scale(bounds, load(0, 2, 2, &idle[..2]), secs(99)), Scale::Retire(vec![2]), "min 1");
    assert_eq!(scale(bounds, load(0, 1, 1, &idle[..1]), secs(99)), Scale::Keep, "at the minimum");
    assert_eq!(scale(bounds, load(1, 4, 3, &idle), secs(99)), Scale::Keep, "tasks wait");
}

#[test]
fn without_an_idle_timeout_an_elastic_pool_only_grows() {
    let bounds = Elastic { min: 1, max: 3, idle_timeout: None };
    assert_eq!(scale(bounds, load(0, 3, 3, &[(1, secs(0))]), secs(1_000)), Scale::Keep);
    assert_eq!(next_retirement(bounds, 3, &[(1, secs(0))]), None);
}

#[test]
fn the_next_retirement_is_the_earliest_idle_timeout_while_above_the_minimum() {
    let bounds = elastic(1, 4, 30);
    let idle = [(0, secs(5)), (2, secs(1))];
    assert_eq!(next_retirement(bounds, 3, &idle), Some(secs(31)));
    assert_eq!(next_retirement(bounds, 1, &idle[..1]), None, "at the minimum");
    assert_eq!(next_retirement(bounds, 3, &[]), None, "nobody idle");
}

#[test]
fn a_resize_sets_a_fixed_pools_size_and_an_elastic_pools_maximum() {
    let fixed = Elastic { min: 4, max: 4, idle_timeout: None };
    assert_eq!(resized_bounds(fixed, 2), Elastic { min: 2, max: 2, idle_timeout: None });
    assert_eq!(resized_bounds(fixed, 6), Elastic { min: 6, max: 6, idle_timeout: None });
    let bounds = elastic(2, 4, 30);
    assert_eq!(resized_bounds(bounds, 8), elastic(2, 8, 30));
    assert_eq!(resized_bounds(bounds, 1), elastic(1, 1, 30));
}
