//! Commands on a pool: each task runs one program with its arguments, in its own
//! process group, supervised (timeout, retries with backoff, SIGTERM then SIGKILL to
//! the whole group) and with its output captured.

use std::time::Duration;

use shoal_core::engine::{
    self, from_iter, Ended, EngineConfig, Frontend, Started, Stop, Submission,
};
use shoal_core::process::{CommandLine, Limits};
use shoal_core::scheduler::{Backoff, SchedulerConfig};
use shoal_core::tap::Tap;
use shoal_core::task::{AttemptOutcome, SlotId, TaskId, TaskMeta, TaskStatus};

use crate::{Error, Result};

/// One task: a program, its arguments and how the pool should treat it.
///
/// The program is looked up in `PATH` as a shell does, and run directly: no shell
/// reads its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    line: CommandLine,
    meta: TaskMeta,
}

impl Command {
    /// A command running `program` with no arguments, at priority 0, no timeout, no
    /// retries.
    pub fn new(program: impl Into<String>) -> Command {
        Command {
            line: CommandLine { program: program.into(), args: Vec::new(), cwd: None },
            meta: TaskMeta::default(),
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Command {
        self.line.args.push(arg.into());
        self
    }

    /// Adds several arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.line.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Higher runs first (default 0); a task that waits long is raised step by step.
    pub fn priority(mut self, priority: i32) -> Command {
        self.meta.priority = priority;
        self
    }

    /// The expected duration: within a priority, longer tasks start first, so that a
    /// long one does not start last and hold the whole batch up.
    pub fn cost(mut self, cost: Duration) -> Command {
        self.meta.cost = Some(cost);
        self
    }

    /// Each attempt is stopped (SIGTERM, then SIGKILL after the pool's grace) once it
    /// has run this long; it then ends [`TaskStatus::TimedOut`] unless retried.
    pub fn timeout(mut self, timeout: Duration) -> Command {
        self.meta.timeout = Some(timeout);
        self
    }

    /// How many more attempts a failed, crashed or timed-out task gets.
    pub fn retries(mut self, retries: u32) -> Command {
        self.meta.retries = retries;
        self
    }
}

/// How one command ended, for good (after its retries).
#[derive(Debug, Clone, PartialEq)]
pub struct CommandResult {
    /// Its number, from 1, in the order the commands were given.
    pub task: TaskId,
    /// Its final status.
    pub status: TaskStatus,
    /// Attempts made, its first included.
    pub attempts: u32,
    /// The last attempt's exit code, if it exited (127 for a program that could not
    /// be started, as shells give).
    pub exit_code: Option<i32>,
    /// The signal that killed the last attempt, if one did.
    pub signal: Option<i32>,
    /// How long the last attempt ran.
    pub duration: Duration,
    /// The last attempt's standard output (up to the pool's output limit).
    pub stdout: Vec<u8>,
    /// The last attempt's standard error (up to the pool's output limit).
    pub stderr: Vec<u8>,
    /// Either stream wrote more than the output limit; the rest was dropped.
    pub truncated: bool,
}

/// A pool of slots that runs commands, at most `jobs` at once.
///
/// ```
/// use shoal_pool::{Command, CommandPool, TaskStatus};
///
/// let results = CommandPool::new(2).run([
///     Command::new("echo").arg("hello"),
///     Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
/// ])?;
/// assert_eq!(results[0].status, TaskStatus::Succeeded);
/// assert_eq!(results[0].stdout, b"hello\n");
/// assert_eq!(results[1].status, TaskStatus::Failed);
/// assert_eq!((results[1].exit_code, &results[1].stderr[..]), (Some(3), &b"oops\n"[..]));
/// # Ok::<(), shoal_pool::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CommandPool {
    jobs: usize,
    kill_grace: Duration,
    output_limit: usize,
    retry_delay: Duration,
    tap: Option<Tap>,
}

impl CommandPool {
    /// A pool running up to `jobs` commands at once, with a 2 s kill grace, 1 MiB of
    /// output kept per stream and a 1 s base retry delay.
    pub fn new(jobs: usize) -> CommandPool {
        CommandPool {
            jobs,
            kill_grace: Duration::from_secs(2),
            output_limit: 1 << 20,
            retry_delay: Duration::from_secs(1),
            tap: None,
        }
    }

    /// Between SIGTERM and SIGKILL when a command is stopped.
    pub fn kill_grace(mut self, grace: Duration) -> CommandPool {
        self.kill_grace = grace;
        self
    }

    /// Bytes kept of each output stream of an attempt.
    pub fn output_limit(mut self, bytes: usize) -> CommandPool {
        self.output_limit = bytes;
        self
    }

    /// The wait before a first retry; it doubles with each further one (at most
    /// 5 minutes).
    pub fn retry_delay(mut self, delay: Duration) -> CommandPool {
        self.retry_delay = delay;
        self
    }

    /// Each task's steps (started, ended) go to `tap` as they happen, for observers
    /// that follow the run from other threads.
    pub fn tap(mut self, tap: Tap) -> CommandPool {
        self.tap = Some(tap);
        self
    }

    /// Runs every command to its end and returns how each ended, in the order given.
    ///
    /// Commands are taken from `commands` as slots free up (a window of them waits in
    /// the queue, ordered by priority and cost), so a long iterator is never held
    /// whole; the results are.
    ///
    /// A command that fails is a result, not an error: the error is for a pool that
    /// cannot run at all (no slot: [`Error::InvalidConfig`]; the engine's runtime
    /// cannot start: [`Error::Os`]).
    pub fn run(&self, commands: impl IntoIterator<Item = Command>) -> Result<Vec<CommandResult>> {
        if self.jobs == 0 {
            return Err(Error::InvalidConfig { what: "jobs", reason: "must be at least 1".into() });
        }
        let config = EngineConfig {
            scheduler: SchedulerConfig {
                slots: self.jobs,
                aging: Some(Duration::from_secs(10)),
                backoff: Backoff {
                    base: self.retry_delay,
                    max: Duration::from_secs(300).max(self.retry_delay),
                },
                retry_timeouts: true,
                start_interval: Duration::ZERO,
                start_gate: None,
                median_timeout: None,
            },
            kill_grace: self.kill_grace,
            output_cap: self.output_limit,
            limits: Limits::default(),
            memory: None,
            pin: false,
            line_buffer: false,
            marker: None,
            tap: self.tap.clone(),
        };
        let tasks = (1..).zip(commands).map(|(task, command)| Submission {
            task,
            meta: command.meta,
            attempts: 0,
            payload: command.line,
        });
        let mut collector = Collector { results: Vec::new() };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Os { operation: "start the engine's runtime", source })?;
        // Nothing stops this run from outside: the sender lives as long as it does.
        let (_stop, stop) = tokio::sync::watch::channel(Stop::Run);
        runtime.block_on(engine::run(&config, from_iter(tasks), &mut collector, stop))?;
        Ok(collector.results.into_iter().flatten().collect())
    }
}

/// The front end of [`CommandPool::run`]: hands the engine each command and keeps
/// each task's last attempt, by task number.
struct Collector {
    results: Vec<Option<CommandResult>>,
}

impl Frontend for Collector {
    type Payload = CommandLine;

    fn command(&mut self, _task: TaskId, _slot: SlotId, line: &CommandLine) -> CommandLine {
        line.clone()
    }

    fn started(&mut self, _event: Started) {}

    fn ended(&mut self, event: Ended) {
        let Some(status) = event.final_status else { return };
        let index = event.task as usize - 1;
        if self.results.len() <= index {
            self.results.resize(index + 1, None);
        }
        self.results[index] = Some(CommandResult {
            task: event.task,
            status,
            attempts: event.attempt,
            // A program that could not start has no exit status from the kernel, but
            // fails with 127, as shells say.
            exit_code: match event.outcome {
                AttemptOutcome::Failed { exit_code } => Some(exit_code),
                _ => event.exit_code,
            },
            signal: event.signal,
            duration: event.duration,
            truncated: event.stdout.truncated || event.stderr.truncated,
            stdout: event.stdout.bytes,
            stderr: event.stderr.bytes,
        });
    }
}
