//! Both memory-limit mechanisms, through the engine with real processes: a task
//! past its limit is `MemoryExceeded`, one under it succeeds.

use std::sync::Arc;
use std::time::Duration;

use shoal_core::engine::{self, Ended, EngineConfig, Frontend, Started, Stop, Submission};
use shoal_core::process::{
    CommandLine, Limits, MemoryLimit, MemoryLimiter, MemoryMode, MIN_MEMORY_LIMIT,
};
use shoal_core::scheduler::{Backoff, SchedulerConfig};
use shoal_core::{AttemptOutcome, SlotId, TaskId, TaskMeta};

/// Runs `scripts` (python3 code, one task each) and returns each task's outcome and
/// stderr, in task order.
fn run(memory: MemoryLimit, scripts: &[&str]) -> Vec<(AttemptOutcome, String)> {
    let python = |script: &&str| CommandLine {
        program: "python3".into(),
        args: vec!["-c".into(), (*script).to_owned()],
        cwd: None,
    };
    run_commands(memory, scripts.iter().map(python).collect())
}

/// Runs the commands (one task each) and returns each task's outcome and stderr, in
/// task order.
fn run_commands(memory: MemoryLimit, commands: Vec<CommandLine>) -> Vec<(AttemptOutcome, String)> {
    struct Collect {
        commands: Vec<CommandLine>,
        ended: Vec<(TaskId, AttemptOutcome, String)>,
    }
    impl Frontend for Collect {
        type Payload = ();
        fn command(&mut self, task: TaskId, _slot: SlotId, _: &()) -> CommandLine {
            self.commands[task as usize - 1].clone()
        }
        fn started(&mut self, _: Started) {}
        fn ended(&mut self, e: Ended) {
            let stderr = String::from_utf8_lossy(&e.stderr.bytes).into_owned();
            self.ended.push((e.task, e.outcome, stderr));
        }
    }
    let config = EngineConfig {
        scheduler: SchedulerConfig {
            slots: 2,
            aging: None,
            backoff: Backoff { base: Duration::from_millis(10), max: Duration::from_secs(1) },
            retry_timeouts: true,
            start_interval: Duration::ZERO,
            start_gate: None,
            median_timeout: None,
        },
        kill_grace: Duration::from_secs(1),
        output_cap: 1 << 20,
        limits: Limits::default(),
        memory: Some(Arc::new(memory)),
        pin: false,
        line_buffer: false,
        marker: None,
        tap: None,
    };
    let count = commands.len() as u64;
    let mut frontend = Collect { commands, ended: Vec::new() };
    let tasks = engine::from_iter((1..=count).map(|task| Submission {
        task,
        meta: TaskMeta::default(),
        attempts: 0,
        payload: (),
    }));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(Stop::Run);
    runtime.block_on(engine::run(&config, tasks, &mut frontend, stop_rx)).unwrap();
    frontend.ended.sort_by_key(|e| e.0);
    frontend.ended.into_iter().map(|(_, outcome, stderr)| (outcome, stderr)).collect()
}

/// Touches every page, so the memory is really resident (not just reserved).
const HOG: &str = "b = bytearray(512 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1";
const SMALL: &str = "b = bytearray(1 << 20)";

#[test]
fn rlimit_as_turns_a_failed_allocation_into_memory_exceeded() {
    let outcomes = run(MemoryLimit::AddressSpace(64 << 20), &[HOG, SMALL]);
    assert_eq!(outcomes[0].0, AttemptOutcome::MemoryExceeded, "{}", outcomes[0].1);
    assert!(outcomes[0].1.contains("MemoryError"), "{}", outcomes[0].1);
    assert_eq!(outcomes[1].0, AttemptOutcome::Succeeded, "{}", outcomes[1].1);
}

#[test]
fn a_cgroup_oom_kill_is_memory_exceeded() {
    let Some(limiter) = MemoryLimiter::new(64 << 20, 2) else {
        eprintln!("skipped: no writable memory cgroup on this machine");
        return;
    };
    assert!(matches!(limiter.mode(), MemoryMode::CgroupV1 | MemoryMode::CgroupV2));
    let outcomes = run(MemoryLimit::Cgroup(limiter), &[HOG, SMALL, HOG]);
    assert_eq!(outcomes[0].0, AttemptOutcome::MemoryExceeded, "{}", outcomes[0].1);
    assert_eq!(outcomes[1].0, AttemptOutcome::Succeeded, "{}", outcomes[1].1);
    // A second hog on a slot that already saw an OOM kill is judged on its own.
    assert_eq!(outcomes[2].0, AttemptOutcome::MemoryExceeded, "{}", outcomes[2].1);
}

/// What a floor test runs: small programs, directly and through a shell.
fn small_programs() -> Vec<CommandLine> {
    let cmd = |program: &str, args: &[&str]| CommandLine {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        cwd: None,
    };
    vec![
        cmd("true", &[]),
        cmd("sh", &["-c", "true"]),
        cmd("bash", &["-c", "true"]),
        cmd("ls", &["/"]),
    ]
}

/// The floor is real: small programs start at it, and cannot at half of it.
#[test]
fn small_programs_start_at_the_rlimit_as_floor_and_not_below() {
    let floor = MemoryMode::RlimitAs.floor();
    for (outcome, stderr) in run_commands(MemoryLimit::AddressSpace(floor), small_programs()) {
        assert_eq!(outcome, AttemptOutcome::Succeeded, "{stderr}");
    }
    let below = run_commands(MemoryLimit::AddressSpace(floor / 2), small_programs());
    assert!(below.iter().all(|(o, _)| *o != AttemptOutcome::Succeeded), "{below:?}");
}

#[test]
fn small_programs_start_at_the_cgroup_floor() {
    let Some(limiter) = MemoryLimiter::new(MIN_MEMORY_LIMIT, 2) else {
        eprintln!("skipped: no writable memory cgroup on this machine");
        return;
    };
    assert_eq!(limiter.mode().floor(), MIN_MEMORY_LIMIT);
    for (outcome, stderr) in run_commands(MemoryLimit::Cgroup(limiter), small_programs()) {
        assert_eq!(outcome, AttemptOutcome::Succeeded, "{stderr}");
    }
}
