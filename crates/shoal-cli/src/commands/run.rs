//! `shoal run`: turn the command line into tasks, record them, run them on the
//! engine, print their output once it is durable, and sum up.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use shoal_core::engine::{
    self, Ended, EngineConfig, Frontend, Started, Stop, Stream, QUEUE_WINDOW,
};
use shoal_core::process::{CommandLine, Limits, MemoryLimit, MemoryMode};
use shoal_core::run::{Marker, RunHold};
use shoal_core::scheduler::{Backoff, SchedulerConfig, StartGate};
use shoal_core::store::{
    AttemptEnd, ControlAction, ControlRequest, NewRun, NewTask, Recording, Store, StoreAddress,
    StoreEvent,
};
use shoal_core::{AttemptOutcome, Output, SlotId, TaskId, TaskMeta, TaskStatus};
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{mpsc, watch};

use super::feed::{Feed, Reading};
use super::joblog::Joblog;
use super::printer::{Printer, PRINT_LIMIT};
use super::results_dir::ResultsDir;
use super::resume::Pages;
use crate::cli::RunArgs;
use crate::halt::{parse_halt, Halt, Halting, When};
use crate::inputs::{self, InputGroupSpec, InputRules, TaskInput};
use crate::jobs::{self, MAX_JOBS};
use crate::progress::{Progress, Show};
use crate::reading::{self, Fit, Groups, InputSpec, PerTask, Read};
use crate::start_gate::MachineGate;
use crate::template::{display, Tag, Template};
use crate::units::{self, TimeoutArg};
use crate::Exit;

/// Waiting this long raises a task by one priority level.
const AGING_STEP: Duration = Duration::from_secs(30);

/// The run's settings, as stored with the run so that `--resume` keeps them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct RunOptions {
    pub(super) jobs: u32,
    pub(super) timeout: Option<f64>,
    pub(super) kill_grace: f64,
    pub(super) retries: u32,
    pub(super) retry_delay: f64,
    pub(super) memory_limit: Option<u64>,
    pub(super) pin: bool,
    pub(super) nice: Option<i32>,
    pub(super) shell: bool,
    pub(super) keep_order: bool,
    pub(super) line_buffer: bool,
    /// `--ungroup`: `line_buffer` without the task number.
    #[serde(default)]
    pub(super) ungroup: bool,
    pub(super) output_limit: u64,
    /// `--tag`/`--tagstring`: what each output line is prefixed with (`{}` for --tag).
    #[serde(default)]
    pub(super) tag: Option<String>,
    /// `--halt`, in its long form (`soon,fail=1`); `None` for never.
    #[serde(default)]
    pub(super) halt: Option<String>,
    /// `--timeout N%`: N percent of the median duration of the succeeded tasks.
    #[serde(default)]
    pub(super) timeout_median: Option<f64>,
    /// `--delay`: the least seconds between two starts.
    #[serde(default)]
    pub(super) delay: Option<f64>,
    /// `--quote`: the command's words run as they are, never through a shell.
    #[serde(default)]
    pub(super) quote: bool,
    /// `--workdir`: where each task runs (a template; `...` a new temporary directory).
    #[serde(default)]
    pub(super) workdir: Option<String>,
    /// `--results`: where each task's output files go (a template, as parallel's).
    #[serde(default)]
    pub(super) results: Option<String>,
    /// `--memfree`: the least bytes available for a task to start.
    #[serde(default)]
    pub(super) memfree: Option<u64>,
    /// `--load`: the load average tasks start under (N% resolved to processes).
    #[serde(default)]
    pub(super) load: Option<f64>,
    /// Submitted with `--detach`: agents run it, never a `--resume`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) shared: bool,
}

impl RunOptions {
    /// What was given now wins over what was stored, which wins over the defaults.
    /// `tasks` is how many tasks will run, once known (`-j 0` runs no more slots).
    pub(super) fn resolve(
        args: &RunArgs,
        stored: Option<RunOptions>,
        tasks: Option<usize>,
    ) -> anyhow::Result<RunOptions> {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        let s = stored.as_ref();
        let jobs = match args.jobs {
            Some(form) => form.slots(jobs::cores(), tasks, slots_with_open_files())?,
            None => s.map_or_else(jobs::cores, |s| s.jobs),
        };
        Ok(RunOptions {
            jobs,
            // A --timeout given now, of either form, replaces both stored ones.
            timeout: match args.timeout {
                Some(_) => secs(args.fixed_timeout()),
                None => s.and_then(|s| s.timeout),
            },
            timeout_median: match args.timeout {
                Some(TimeoutArg::Median(percent)) => Some(percent),
                Some(TimeoutArg::Fixed(_)) => None,
                None => s.and_then(|s| s.timeout_median),
            },
            kill_grace: secs(args.kill_grace).or(s.map(|s| s.kill_grace)).unwrap_or(2.0),
            retries: args.retries.or(s.map(|s| s.retries)).unwrap_or(0),
            retry_delay: secs(args.retry_delay).or(s.map(|s| s.retry_delay)).unwrap_or(1.0),
            memory_limit: args.memory_limit.or(s.and_then(|s| s.memory_limit)),
            pin: args.pin || s.is_some_and(|s| s.pin),
            nice: args.nice.or(s.and_then(|s| s.nice)),
            shell: args.shell || s.is_some_and(|s| s.shell),
            keep_order: args.keep_order || s.is_some_and(|s| s.keep_order),
            line_buffer: args.line_buffer || s.is_some_and(|s| s.line_buffer),
            ungroup: args.ungroup || s.is_some_and(|s| s.ungroup),
            output_limit: args.output_limit.or(s.map(|s| s.output_limit)).unwrap_or(1 << 20),
            tag: (args.tagstring.clone())
                .or(args.tag.then(|| "{}".to_owned()))
                .or(s.and_then(|s| s.tag.clone())),
            halt: match args.control.halt {
                Some(given) => given.rule().map(|rule| rule.to_string()),
                None => s.and_then(|s| s.halt.clone()),
            },
            delay: secs(args.control.delay).or(s.and_then(|s| s.delay)),
            quote: args.control.quote || s.is_some_and(|s| s.quote),
            workdir: (args.control.workdir.clone()).or(s.and_then(|s| s.workdir.clone())),
            results: (args.results.clone()).or(s.and_then(|s| s.results.clone())),
            memfree: args.control.memfree.or(s.and_then(|s| s.memfree)),
            load: (args.control.load.map(|load| load.limit(jobs::cores())))
                .or(s.and_then(|s| s.load)),
            shared: s.is_some_and(|s| s.shared),
        })
    }
}

/// A task ready for the engine: its inputs and its scheduling metadata.
pub(super) struct Planned {
    pub(super) task: TaskId,
    pub(super) args: Vec<String>,
    pub(super) meta: TaskMeta,
    pub(super) attempts: u32,
}

/// Runs `shoal run`.
pub fn run(address: &StoreAddress, mut args: RunArgs) -> anyhow::Result<Exit> {
    if args.detach {
        return super::submit::detach(address, args);
    }
    if args.control.resume_failed {
        args.resume = run_of_the_same_command(address, &args.command)?.map(Some);
    }
    if let Some(path) = address.path().filter(|path| args.resume.is_some() && !path.exists()) {
        bail!("no store at {} to resume a run from (--store names another)", path.display());
    }
    // Before anything else, as parallel: a log that cannot be written stops the run
    // (and before a resume enters the run's directory: the path is the user's).
    let mut joblog =
        args.joblog.as_deref().map(|path| Joblog::open(path, args.resume.is_some())).transpose()?;
    let store = Store::open(address)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the runtime")?;
    let Prepared { template, options, memory, planned, tasks, pages, skipped, hold, reading } =
        match args.resume {
            Some(run) => super::resume::resume(&store, run, &args)?,
            None => start(&store, &args, &runtime)?,
        };
    let run_id = hold.run();
    let tag = options.tag.as_deref().map(Tag::parse).transpose()?;
    let workdir = options.workdir.as_deref().map(Workdir::parse).transpose()?;
    let results = options.results.as_deref().map(ResultsDir::open).transpose()?;
    let halting = options.halt.as_deref().map(parse_halt).transpose()?;
    let halting = halting.and_then(Halt::rule).map(Halting::new);

    let show = if args.eta {
        Show::Lines
    } else if args.progress || args.bar {
        Show::Always
    } else if args.no_progress || args.quiet {
        Show::Never
    } else {
        Show::Auto
    };
    let progress = Arc::new(Progress::new(tasks, show));
    progress.set_input_open(reading.is_some());
    let order: Vec<TaskId> = planned.iter().map(|p| p.task).collect();
    let printer = Arc::new(Mutex::new(Printer::new(
        options.keep_order,
        options.line_buffer || options.ungroup,
        order,
        progress.clone(),
    )));
    // The summary counts what the store holds, not what the engine saw end.
    let recorded = Arc::new(Mutex::new(HashMap::<TaskStatus, u64>::new()));
    let on_commit = {
        let printer = printer.clone();
        let recorded = recorded.clone();
        Box::new(move |batch: &[StoreEvent]| {
            count_finished(&mut recorded.lock().unwrap_or_else(|e| e.into_inner()), batch);
            printer.lock().unwrap_or_else(|e| e.into_inner()).committed(batch)
        })
    };
    // A store that stops taking writes (a full disk) stops the run at once: one line,
    // no new task, the running ones stopped as for a SIGINT.
    let (stop_tx, stop_rx) = watch::channel(Stop::Run);
    let store_failed = Arc::new(AtomicBool::new(false));
    let on_failure = {
        let (stop, failed, progress) = (stop_tx.clone(), store_failed.clone(), progress.clone());
        let store = address.to_string();
        Box::new(move |e: &shoal_core::Error| {
            failed.store(true, Ordering::Relaxed);
            progress.suspend(|| note!("{}", store_failure_line(&store, run_id, e)));
            let _ = stop.send(Stop::Graceful);
        })
    };
    let recording = Recording::start(&store, hold, on_commit, on_failure)?;
    // `shoal cancel`, `pause`, `unpause` and `jobs` from elsewhere, through the store.
    let mut controls = store.watch_controls(run_id)?;

    let config = engine_config(&options, memory, recording.marker());
    let started = Instant::now();
    let mut frontend = CliFrontend {
        run: run_id,
        template: &template,
        tag: tag.as_ref(),
        ungroup: options.ungroup,
        joblog: joblog.as_mut(),
        slot_command: None,
        recording: &recording,
        progress: &progress,
        printer: &printer,
        output_limit: options.output_limit as usize,
        cancel_requested: false,
        halting,
        halted: false,
        stop: stop_tx.clone(),
        workdir,
        temp_dirs: HashMap::new(),
        results,
    };
    let mut feed = Feed {
        template: &template,
        recording: &recording,
        progress: &progress,
        printer: options.keep_order.then_some(&*printer),
        first: planned.into(),
        pages,
        reading,
        tasks,
        failed: None,
    };
    let mut kill_now = stop_rx.clone();

    let signal = Arc::new(AtomicI32::new(0));
    let report = runtime.block_on(async {
        // The handlers are installed here, before any task starts: the watcher task
        // first runs when the driver yields, once tasks are running, and a signal
        // arriving before the handlers exist killed shoal outright (or was lost
        // where SIGINT is ignored, as in background jobs), leaving its tasks behind.
        let handlers = install_signal_handlers();
        let watcher =
            tokio::spawn(watch_signals(handlers, stop_tx, signal.clone(), progress.clone()));
        let report =
            engine::run_steered(&config, &mut feed, &mut frontend, stop_rx, controls.requests())
                .await;
        // Stopped before its input ended: the rest is recorded, unrun, for a resume
        // (not into a store that takes no more writes; a second signal gives up).
        let input_left = feed.reading.is_some();
        let stopped =
            signal.load(Ordering::Relaxed) != 0 || frontend.cancel_requested || frontend.halted;
        if report.is_ok()
            && feed.reading.is_some()
            && stopped
            && !store_failed.load(Ordering::Relaxed)
        {
            progress.suspend(|| note!("shoal: recording the rest of the input for a resume"));
            tokio::select! {
                _ = feed.record_rest() => {}
                _ = kill_now.wait_for(|stop| *stop == Stop::Immediate) => {}
            }
        }
        watcher.abort();
        report.map(|report| (report, input_left))
    });
    let (report, input_left) = report?;
    let total = feed.tasks;
    let input_failed = feed.failed.take();
    drop(feed);

    drop(controls);
    // A `shoal cancel` of the run ends it as a first Ctrl-C does.
    let cancel = if frontend.cancel_requested { libc::SIGINT } else { 0 };
    let interrupted = match signal.load(Ordering::Relaxed) {
        0 => cancel,
        signal => signal,
    };
    // A run whose input failed midway did not run all it was given.
    // A halt that left tasks unrun leaves the run interrupted: `--resume` runs them.
    let halted = frontend.halted && (input_left || report.unfinished + report.cancelled > 0);
    let stopped = interrupted != 0
        || store_failed.load(Ordering::Relaxed)
        || input_failed.is_some()
        || halted;
    let halt_status = frontend.halting.as_ref().map(Halting::exit_status);
    drop(frontend);
    let written = recording.finish(stopped);
    // A store that stopped taking writes was reported when it happened.
    let store_failed = store_failed.load(Ordering::Relaxed);
    if !store_failed {
        written.context("record the results")?;
    }
    printer.lock().unwrap_or_else(|e| e.into_inner()).flush_held();
    progress.finish();

    let finished = std::mem::take(&mut *recorded.lock().unwrap_or_else(|e| e.into_inner()));
    let unrecorded = total.saturating_sub(finished.values().sum());
    let took = started.elapsed();
    match (args.quiet, total + skipped) {
        (true, _) => {}
        (false, 0) => note!("shoal: run {run_id}: no inputs, nothing to run"),
        (false, _) => {
            note!("{}", summary(run_id, &finished, skipped, unrecorded, took, Resumable::Yes))
        }
    }
    if let Some(e) = input_failed {
        bail!("{e:#}; run {run_id} ran the {total} tasks read before it, and no more");
    }
    Ok(match interrupted {
        _ if store_failed => Exit::StoreFailed,
        0 if halt_status.is_some() => Exit::Status(halt_status.unwrap_or_default()),
        0 if report.failed == 0 && report.cancelled == 0 => Exit::Success,
        0 => Exit::TasksFailed,
        signal => Exit::Interrupted(signal),
    })
}

/// `--resume-failed`: the latest run of the store with these command words (those
/// before the inputs), if any.
fn run_of_the_same_command(
    address: &StoreAddress,
    words: &[String],
) -> anyhow::Result<Option<i64>> {
    let (command, _, _) = inputs::split_command(words.to_vec())?;
    if address.path().is_some_and(|path| !path.exists()) {
        return Ok(None);
    }
    let runs = Store::open(address)?.runs()?;
    Ok(runs.iter().filter(|run| run.command == command).map(|run| run.id).max())
}

/// The engine's settings for a run.
fn engine_config(
    options: &RunOptions,
    memory: Option<Arc<MemoryLimit>>,
    marker: Marker,
) -> EngineConfig {
    EngineConfig {
        scheduler: SchedulerConfig {
            slots: options.jobs as usize,
            aging: Some(AGING_STEP),
            backoff: Backoff {
                base: Duration::from_secs_f64(options.retry_delay),
                max: Duration::from_secs(300).max(Duration::from_secs_f64(options.retry_delay)),
            },
            retry_timeouts: true,
            start_interval: options.delay.map_or(Duration::ZERO, Duration::from_secs_f64),
            median_timeout: options.timeout_median.map(|percent| percent / 100.0),
            start_gate: (options.memfree.is_some() || options.load.is_some()).then(|| {
                Arc::new(MachineGate::new(options.memfree, options.load)) as Arc<dyn StartGate>
            }),
        },
        kill_grace: Duration::from_secs_f64(options.kill_grace),
        output_cap: options.output_limit.max(PRINT_LIMIT) as usize,
        limits: Limits { nice: options.nice, ..Limits::default() },
        memory,
        pin: options.pin,
        line_buffer: options.line_buffer || options.ungroup,
        marker: Some(marker),
        tap: None,
    }
}

/// A run ready to start, new or resumed.
pub(super) struct Prepared<'a> {
    /// The input still being read (a new run's, past its first tasks).
    pub(super) reading: Option<Reading>,
    pub(super) template: Template,
    pub(super) options: RunOptions,
    pub(super) memory: Option<Arc<MemoryLimit>>,
    /// A new run's first tasks, in input order.
    pub(super) planned: Vec<Planned>,
    /// A resumed run's tasks, still in the store.
    pub(super) pages: Option<Pages<'a>>,
    /// How many tasks run, as far as known now: a new run's first ones, or all that
    /// a resume runs.
    pub(super) tasks: u64,
    /// Tasks that had already succeeded (on resume).
    pub(super) skipped: u64,
    /// The run, alive until it ends: no `--resume` of it can start meanwhile. Its
    /// marker goes into every task's environment.
    pub(super) hold: RunHold,
}

/// The memory limit of a run, by the best mechanism this machine allows; refused
/// below the least a program can start with under that mechanism.
pub(super) fn memory_limit(options: &RunOptions) -> anyhow::Result<Option<Arc<MemoryLimit>>> {
    let Some(bytes) = options.memory_limit else { return Ok(None) };
    let limit = MemoryLimit::new(bytes, options.jobs as usize);
    let mode = limit.mode();
    if bytes < mode.floor() {
        let why = match mode {
            MemoryMode::RlimitAs => {
                " (no memory cgroup can be had here, and RLIMIT_AS counts every library a \
                 program maps)"
            }
            _ => "",
        };
        bail!(
            "--memory-limit {} is below {}, the least a program starts with under {}{why}",
            units::show_size(bytes),
            units::show_size(mode.floor()),
            mode.as_str()
        );
    }
    Ok(Some(Arc::new(limit)))
}

/// Files shoal keeps open per running task (its two output pipes, its pidfd, a
/// memory cgroup's), and for itself (the store, the poller, standard streams).
const FILES_PER_SLOT: u64 = 4;
const FILES_OF_SHOAL: u64 = 64;

impl RunOptions {
    /// The template of `command` under these options (`--shell`, `--quote`).
    pub(super) fn template(&self, command: &[String]) -> anyhow::Result<Template> {
        Ok(match self.quote {
            true => Template::parse_quoted(command)?,
            false => Template::parse(command, self.shell)?,
        })
    }

    /// Refuses what this machine cannot give the tasks (before anything runs, rather
    /// than let every task fail to start).
    pub(super) fn check_machine(&self) -> anyhow::Result<()> {
        check_open_files(self.jobs)?;
        check_nice(self.nice)
    }

    /// Refuses a `--workdir` without replacement strings that is not a directory
    /// (relative to the current directory: a resume's, once it has entered the run's).
    pub(super) fn check_workdir(&self) -> anyhow::Result<()> {
        self.workdir.as_deref().map(Workdir::parse).transpose().map(|_| ())
    }

    /// Refuses values the command line would refuse. Options parsed now are in range;
    /// these may come from a store that an older shoal wrote.
    pub(super) fn check_ranges(&self) -> Result<(), OutOfRange> {
        let out_of = |option, value: String, range: &str| {
            Err(OutOfRange { option, value, range: range.to_owned() })
        };
        if !(1..=MAX_JOBS).contains(&self.jobs) {
            return out_of("-j", self.jobs.to_string(), &format!("from 1 to {MAX_JOBS}"));
        }
        if let Some(timeout) = self.timeout.filter(|&t| units::timeout_seconds(t).is_none()) {
            return out_of("--timeout", units::show_seconds(timeout), units::TIMEOUT_RANGE);
        }
        if let Some(percent) = self.timeout_median.filter(|p| !(*p > 0.0 && *p <= 1e6)) {
            return out_of("--timeout", format!("{percent}%"), "above 0% and at most 1000000%");
        }
        let delay = ("--delay", self.delay.unwrap_or(0.0));
        let durations =
            [("--kill-grace", self.kill_grace), ("--retry-delay", self.retry_delay), delay];
        for (option, value) in durations {
            if units::seconds(value).is_none() {
                return out_of(option, units::show_seconds(value), units::DURATION_RANGE);
            }
        }
        if let Some(nice) = self.nice.filter(|n| !(-20..=19).contains(n)) {
            return out_of("--nice", nice.to_string(), "from -20 to 19");
        }
        Ok(())
    }
}

/// An option's value outside what the command line takes.
#[derive(Debug)]
pub(super) struct OutOfRange {
    pub(super) option: &'static str,
    value: String,
    range: String,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}, which must be {}", self.option, self.value, self.range)
    }
}

/// The most slots the open-file limit serves (what `-j 0` may take).
fn slots_with_open_files() -> u32 {
    match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        Some(limit) => {
            (limit.saturating_sub(FILES_OF_SHOAL) / FILES_PER_SLOT).min(u64::from(MAX_JOBS)) as u32
        }
        None => MAX_JOBS,
    }
}

/// Refuses a slot count that the open-file limit cannot serve: past it, spawns fail
/// and tasks that never ran would be recorded as failed.
fn check_open_files(jobs: u32) -> anyhow::Result<()> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let needed = u64::from(jobs) * FILES_PER_SLOT + FILES_OF_SHOAL;
    match limit {
        Some(limit) if limit < needed => bail!(
            "-j {jobs} needs up to {needed} open files, but this process may open {limit}: \
             lower -j or raise the limit (ulimit -n {needed})"
        ),
        _ => Ok(()),
    }
}

/// Refuses a niceness the tasks could not be given: lowering it below shoal's own
/// needs root, CAP_SYS_NICE or RLIMIT_NICE, and without them every task would fail
/// to start with a bare "Permission denied".
fn check_nice(nice: Option<i32>) -> anyhow::Result<()> {
    let Some(nice) = nice else { return Ok(()) };
    let current = rustix::process::getpriority_process(None).unwrap_or(0);
    if nice >= current || rustix::process::geteuid().is_root() || has_cap_sys_nice() {
        return Ok(());
    }
    let rlimit = rustix::process::getrlimit(rustix::process::Resource::Nice).current;
    // RLIMIT_NICE n allows a niceness down to 20 - n.
    let lowest = rlimit.map_or(-20, |n| 20 - n.min(40) as i32);
    if nice < lowest {
        bail!(
            "--nice {nice} is below shoal's own niceness ({current}); lowering it needs root \
             or CAP_SYS_NICE (this process may go down to {})",
            lowest.max(-20).min(current)
        );
    }
    Ok(())
}

/// Whether this process holds CAP_SYS_NICE (bit 23 of its effective capabilities).
fn has_cap_sys_nice() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .is_some_and(|caps| caps & (1 << 23) != 0)
    })
}

/// A new run's command line, parsed: the command, its template, the options, and
/// the inputs being read.
pub(super) struct Parsed {
    pub(super) command: Vec<String>,
    pub(super) template: Template,
    pub(super) options: RunOptions,
    pub(super) rx: mpsc::Receiver<Read>,
}

/// Parses a new run's command line and starts reading its inputs; nothing is recorded.
pub(super) fn parse(args: &RunArgs) -> anyhow::Result<Parsed> {
    let (mut command, mut groups, mut linked) = inputs::split_command(args.command.clone())?;
    // `-a` files are input groups before the `:::`/`::::` ones, as in GNU parallel.
    let arg_files = args.input.arg_file.iter().map(|path| InputGroupSpec::File(path.clone()));
    groups.splice(0..0, arg_files);
    linked.splice(0..0, std::iter::repeat_n(false, args.input.arg_file.len()));
    if args.input.link {
        linked.iter_mut().skip(1).for_each(|l| *l = true);
    }
    let input = &args.input;
    let rules = InputRules::new(
        input.null,
        input.delimiter.clone(),
        input.eof.clone(),
        input.trim,
        input.colsep.clone(),
        input.header.is_some(),
    );
    if rules.header {
        if groups.is_empty() {
            // Standard input: its first line is the header, read here.
            groups.push(InputGroupSpec::File("-".into()));
            linked.push(false);
        }
        let stdin = std::io::stdin().lock();
        command = inputs::take_header(&command, &mut groups, stdin, &rules)?;
    }
    let options = RunOptions::resolve(args, None, None)?;
    options.check_machine()?;
    options.check_workdir()?;
    let mut template = options.template(&command)?;
    let fits = input.multiple || input.context_replace;
    let rows = input.max_replace_args.or(input.max_args);
    if rules.colsep.is_some() || rows.is_some() || fits {
        template.allow_missing_groups();
    }
    if input.max_replace_args.is_some() || input.context_replace {
        template.replace_in_context();
    }
    let per_task = match rows {
        Some(rows) => Some(PerTask::Rows(rows)),
        None if fits => Some(PerTask::Fit(Fit {
            template: template.clone(),
            limit: input.max_chars.map_or(DEFAULT_MAX_CHARS, |c| c as usize),
            slots: options.jobs as usize,
        })),
        None => None,
    };
    // How many groups each task has (for `{n}`): a `--tasks` line gives its own, checked
    // as it is read. No inputs at all is not an error: nothing runs, as with GNU
    // parallel and `xargs -r`.
    let spec = match (&args.tasks, groups.len()) {
        (Some(_), 1..) => {
            bail!("give the inputs either with ::: / :::: / -a or with --tasks, not both")
        }
        (Some(_), 0) if per_task.is_some() || rules.colsep.is_some() => {
            bail!("-N, -n, -m, -X and --colsep take inputs from ::: / :::: / -a or stdin, not --tasks")
        }
        (Some(path), 0) => InputSpec::Tasks(path.clone()),
        (None, count @ 1..) => {
            template.check_groups(count)?;
            InputSpec::Groups(Groups { specs: groups, linked, wrap: args.input.link })
        }
        (None, 0) => {
            if std::io::stdin().is_terminal() {
                note!("shoal: reading inputs from the terminal, one per line (end with Ctrl-D)");
            }
            template.check_groups(1)?;
            InputSpec::Stdin
        }
    };
    let rx = reading::spawn(spec, rules, per_task, args.input.shuf, READ_AHEAD)
        .context("start reading the inputs")?;
    Ok(Parsed { command, template, options, rx })
}

/// A new run: parse the template, read the inputs' first tasks, record the run with
/// them. An input that ends within [`FIRST_TASKS`] tasks and [`FIRST_WAIT`] is read
/// whole before anything is recorded, so a bad line in it records nothing; a longer
/// one goes on being read while the run runs.
fn start<'a>(store: &'a Store, args: &RunArgs, runtime: &Runtime) -> anyhow::Result<Prepared<'a>> {
    let Parsed { command, template, mut options, mut rx } = parse(args)?;
    // A --results directory that cannot be made stops the run before it is recorded.
    options.results.as_deref().map(ResultsDir::open).transpose()?;
    let default_timeout = options.timeout.map(Duration::from_secs_f64);
    let (inputs, ended) = runtime.block_on(first_tasks(&mut rx))?;
    for input in &inputs {
        template.check_groups(input.args.len())?;
    }

    let planned: Vec<Planned> = inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| Planned {
            task: i as u64 + 1,
            meta: input.meta(default_timeout, options.retries),
            args: input.args,
            attempts: 0,
        })
        .collect();
    // `-j 0`: as many slots as tasks, if they are known by now.
    options.jobs = RunOptions::resolve(args, None, ended.then_some(planned.len()))?.jobs;
    let memory = memory_limit(&options)?;
    let new_run = NewRun {
        command,
        options: serde_json::to_value(&options)?,
        cwd: std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        memory_limit_mode: memory.as_ref().map(|m| m.mode().as_str().to_owned()),
    };
    let tasks: Vec<NewTask> = planned
        .iter()
        .map(|p| NewTask {
            task: p.task,
            args: p.args.clone(),
            command: display(&template.render(&p.args, p.task, 0)),
            meta: p.meta.clone(),
        })
        .collect();
    let (hold, reading) = if ended {
        (store.create_run_with(&new_run, &tasks)?, None)
    } else {
        let next_task = planned.len() as u64 + 1;
        let reading = Reading { rx, next_task, default_timeout, retries: options.retries };
        (store.create_streaming_run(&new_run, &tasks)?, Some(reading))
    };
    let tasks = planned.len() as u64;
    Ok(Prepared {
        template,
        options,
        memory,
        planned,
        tasks,
        pages: None,
        skipped: 0,
        hold,
        reading,
    })
}

/// `-s`'s default: half of the longest argument Linux passes to a program, less 3000
/// for wrapping, as GNU parallel reckons it from what it measures.
const DEFAULT_MAX_CHARS: usize = (128 * 1024 - 3000) / 2;

/// The most tasks read before the run is recorded.
const FIRST_TASKS: usize = QUEUE_WINDOW;

/// The longest wait for the input's first tasks before the run starts with those it
/// has: a pipe still being written must not hold the first tasks back.
const FIRST_WAIT: Duration = Duration::from_millis(100);

/// Tasks read but not yet taken by the engine, at most.
const READ_AHEAD: usize = 1024;

/// The first tasks of the input, and whether it ended with them; its error if it
/// fails before.
async fn first_tasks(rx: &mut mpsc::Receiver<Read>) -> anyhow::Result<(Vec<TaskInput>, bool)> {
    let deadline = tokio::time::Instant::now() + FIRST_WAIT;
    let mut inputs = Vec::new();
    while inputs.len() < FIRST_TASKS {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(read)) => inputs.push(read?),
            Ok(None) => return Ok((inputs, true)),
            Err(_) => break,
        }
    }
    Ok((inputs, false))
}

/// The engine's front end for `shoal run`: renders commands, shows progress, and
/// hands the task life to the run's recording.
struct CliFrontend<'a> {
    run: i64,
    template: &'a Template,
    /// `--tag`/`--tagstring`, rendered for each attempt into the printer.
    tag: Option<&'a Tag>,
    /// `--ungroup`: lines as they come, with no task number (a tag still).
    ungroup: bool,
    joblog: Option<&'a mut Joblog>,
    /// The command of the attempt being started, when it differs from the stored one
    /// (it uses the slot number).
    slot_command: Option<String>,
    recording: &'a Recording,
    progress: &'a Progress,
    printer: &'a Mutex<Printer>,
    /// Bytes of each stream the store keeps.
    output_limit: usize,
    /// A control request cancelled the whole run.
    cancel_requested: bool,
    /// `--halt`: the count of the tasks' ends.
    halting: Option<Halting>,
    /// The run reached its `--halt`.
    halted: bool,
    /// Where a halt stops the run.
    stop: watch::Sender<Stop>,
    /// `--workdir`: where each task runs.
    workdir: Option<Workdir>,
    /// `--workdir ...`: the temporary directory of each running task.
    temp_dirs: HashMap<TaskId, PathBuf>,
    /// `--results`: each task's output files.
    results: Option<ResultsDir>,
}

/// `--workdir`: a directory (with the task's replacement strings), or `...`.
enum Workdir {
    Dir(Tag),
    /// A new empty directory for each attempt, removed when it ends.
    Temporary,
}

impl Workdir {
    fn parse(text: &str) -> anyhow::Result<Workdir> {
        if text == "..." {
            return Ok(Workdir::Temporary);
        }
        let tag = Tag::parse(text)?;
        // A directory without replacement strings is checked before anything runs.
        if tag.is_literal() && !Path::new(text).is_dir() {
            bail!("--workdir {text} is not a directory");
        }
        Ok(Workdir::Dir(tag))
    }
}

impl CliFrontend<'_> {
    /// Counts a task's end under `--halt`, and halts the run when it reaches it: no
    /// more tasks start, and for `now` the running ones are stopped as by a Ctrl-C.
    fn count_for_halt(&mut self, event: &Ended) {
        let (Some(halting), Some(status)) = (&mut self.halting, event.final_status) else {
            return;
        };
        let total = self.progress.known_total();
        let Some(halted) = halting.ended(event.task, status, shell_status(event), total) else {
            return;
        };
        let (stop, doing) = match halted.when {
            When::Soon => (Stop::Drain, "starting no more tasks; the running ones finish"),
            When::Now => (
                Stop::Graceful,
                "starting no more tasks; the running ones get SIGTERM, SIGKILL after the grace",
            ),
        };
        let (run, rule, reason) = (self.run, halting.rule(), halted.reason);
        self.progress
            .suspend(|| note!("shoal: run {run}: --halt {rule} reached ({reason}): {doing}"));
        // Never softens a stop already under way (a Ctrl-C, a full store).
        self.stop.send_if_modified(|current| {
            let first = *current == Stop::Run;
            if first {
                *current = stop;
            }
            first
        });
        self.halted = true;
    }
}

/// A new empty directory for an attempt of `task` (`--workdir ...`), under $TMPDIR.
/// If it cannot be made, the attempt fails to start in it, saying why.
fn temporary_dir(run: i64, task: TaskId) -> PathBuf {
    let base = std::env::temp_dir();
    let mut dir = base.join(format!("shoal-{}-{run}-{task}", std::process::id()));
    for n in 1.. {
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                dir = base.join(format!("shoal-{}-{run}-{task}-{n}", std::process::id()));
            }
            _ => break,
        }
    }
    dir
}

/// An attempt's exit status as a shell tells it: its code, or 128 + its signal.
fn shell_status(event: &Ended) -> i32 {
    match (event.exit_code, event.signal, event.outcome) {
        (Some(code), _, _) => code,
        (None, Some(signal), _) => 128 + signal,
        (None, None, AttemptOutcome::Failed { exit_code }) => exit_code,
        (None, None, AttemptOutcome::Succeeded) => 0,
        (None, None, _) => 1,
    }
}

/// Cuts an output to what the store keeps; returns the whole output too when it
/// was longer, for printing.
fn for_store(output: Output, limit: usize) -> (Output, Option<Output>) {
    if output.bytes.len() <= limit {
        return (output, None);
    }
    let kept = Output { bytes: output.bytes[..limit].to_vec(), truncated: true };
    (kept, Some(output))
}

impl Frontend for CliFrontend<'_> {
    type Payload = Vec<String>;

    fn command(&mut self, task: TaskId, slot: SlotId, args: &Vec<String>) -> CommandLine {
        let mut command = self.template.render(args, task, slot);
        command.cwd = match &self.workdir {
            None => None,
            Some(Workdir::Dir(dir)) => Some(dir.render(args, task, slot).into()),
            Some(Workdir::Temporary) => {
                let dir = temporary_dir(self.run, task);
                self.temp_dirs.insert(task, dir.clone());
                Some(dir)
            }
        };
        if let Some(tag) = self.tag {
            let tag = tag.render(args, task, slot);
            self.printer.lock().unwrap_or_else(|e| e.into_inner()).set_tag(task, tag);
        }
        if let Some(joblog) = self.joblog.as_deref_mut() {
            joblog.started(task, display(&command));
        }
        if let Some(results) = &mut self.results {
            results.started(task, slot, args);
        }
        // The stored command was rendered without a slot; `started` records the real one.
        self.slot_command = self.template.uses_slot().then(|| display(&command));
        command
    }

    fn started(&mut self, event: Started) {
        self.progress.started();
        let command = self.slot_command.take();
        let Started { task, attempt, slot, pid, at } = event;
        self.recording.started(task, attempt, slot, pid, at, command);
    }

    fn ended(&mut self, event: Ended) {
        if let Some(dir) = self.temp_dirs.remove(&event.task) {
            let _ = std::fs::remove_dir_all(dir);
        }
        // What runs is counted here, where attempts start and end; what is done, once
        // durable (the printer).
        self.progress.stopped_running();
        if let Some(joblog) = self.joblog.as_deref_mut() {
            joblog.ended(&event);
        }
        if let Some(results) = &mut self.results {
            results.ended(&event, &event.stdout.bytes, &event.stderr.bytes);
        }
        self.count_for_halt(&event);
        if let Some(line) = super::printer::retry_line(&event) {
            self.progress.suspend(|| note!("{line}"));
        }
        let (stdout, whole_stdout) = for_store(event.stdout, self.output_limit);
        let (stderr, whole_stderr) = for_store(event.stderr, self.output_limit);
        if event.final_status.is_some() && (whole_stdout.is_some() || whole_stderr.is_some()) {
            let whole = |w: Option<Output>, kept: &Output| w.unwrap_or_else(|| kept.clone());
            let outputs = (whole(whole_stdout, &stdout), whole(whole_stderr, &stderr));
            self.printer.lock().unwrap_or_else(|e| e.into_inner()).hold_whole(event.task, outputs);
        }
        self.recording.ended(AttemptEnd {
            task: event.task,
            attempt: event.attempt,
            outcome: event.outcome,
            final_status: event.final_status,
            duration: event.duration,
            at: event.at,
            exit_code: event.exit_code,
            signal: event.signal,
            max_rss_kb: event.max_rss_kb,
            stdout,
            stderr,
            result: None,
        });
    }

    fn line(&mut self, task: TaskId, stream: Stream, line: &[u8]) {
        if self.tag.is_none() {
            let number = if self.ungroup { None } else { Some(task.to_string()) };
            let prefix = number.as_deref();
            return self.progress.suspend(|| super::printer::print_line(prefix, stream, line));
        }
        let number = task.to_string();
        // The printer's lock, then the bar's: the order the printer takes them in.
        let printer = self.printer.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = printer.tag(task).or((!self.ungroup).then_some(number.as_str()));
        self.progress.suspend(|| super::printer::print_line(prefix, stream, line));
    }

    fn cancelled(&mut self, task: TaskId) {
        self.recording.cancelled(task);
    }

    fn control(&mut self, request: &ControlRequest, result: &str) {
        match request.action {
            ControlAction::CancelRun => self.cancel_requested = true,
            ControlAction::Pause => self.progress.set_paused(true),
            ControlAction::Unpause => self.progress.set_paused(false),
            _ => {}
        }
        let run = self.run;
        self.progress.suspend(|| note!("shoal: run {run}: {result} (a control request)"));
        self.recording.control_applied(request.id, result.to_owned());
    }
}

/// Handlers for SIGINT and SIGTERM (in that order); `None` if they cannot be installed.
/// Must be called inside the runtime.
fn install_signal_handlers() -> Option<(Signal, Signal)> {
    Some((signal(SignalKind::interrupt()).ok()?, signal(SignalKind::terminate()).ok()?))
}

/// First SIGINT/SIGTERM: graceful stop; second: kill now. Remembers the first signal.
async fn watch_signals(
    handlers: Option<(Signal, Signal)>,
    stop: watch::Sender<Stop>,
    first: Arc<AtomicI32>,
    progress: Arc<Progress>,
) {
    let Some((mut int, mut term)) = handlers else {
        return;
    };
    loop {
        let number = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if first.compare_exchange(0, number, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            progress.suspend(|| {
                note!(
                    "shoal: stopping: no new tasks; running ones get SIGTERM (again to kill them now)"
                )
            });
            let _ = stop.send(Stop::Graceful);
        } else {
            progress.suspend(|| note!("shoal: killing running tasks"));
            let _ = stop.send(Stop::Immediate);
        }
    }
}

/// The one line said when the store stops taking writes mid-run.
fn store_failure_line(store: &str, run: i64, e: &shoal_core::Error) -> String {
    // SQLite's own words ("database or disk is full") say it best.
    let cause = match e {
        shoal_core::Error::Store { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    format!(
        "shoal: error: the store {store} takes no more writes ({cause}): run {run} stopped; \
         once that is fixed, `shoal run --resume {run}` continues it"
    )
}

/// Counts the tasks that a committed batch finished, by final status.
fn count_finished(counts: &mut HashMap<TaskStatus, u64>, batch: &[StoreEvent]) {
    for event in batch {
        match event {
            StoreEvent::AttemptEnded { final_status: Some(status), .. } => {
                *counts.entry(*status).or_default() += 1;
            }
            StoreEvent::TaskCancelled { .. } => {
                *counts.entry(TaskStatus::Cancelled).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// Whether `shoal run --resume` can continue a run: a run of `shoal run`'s, not a
/// Python pool's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resumable {
    Yes,
    No,
}

/// The one-line summary printed on stderr at the end: `finished` counts the tasks
/// whose end the store recorded; `unrecorded` the others, never started or lost.
pub(super) fn summary(
    run: i64,
    finished: &HashMap<TaskStatus, u64>,
    skipped: u64,
    unrecorded: u64,
    took: Duration,
    resumable: Resumable,
) -> String {
    let count = |status| finished.get(&status).copied().unwrap_or(0);
    // Cancelled tasks are reported on their own: the user stopped them, they did not fail.
    let failed_statuses: Vec<TaskStatus> =
        TaskStatus::ALL.into_iter().filter(|&s| s.is_failure() && count(s) > 0).collect();
    let failures: Vec<String> =
        failed_statuses.iter().map(|&s| format!("{} {s}", count(s))).collect();
    let failed: u64 = failed_statuses.iter().map(|&s| count(s)).sum();
    let mut line = format!("shoal: run {run}: {} succeeded", count(TaskStatus::Succeeded));
    if failed > 0 {
        line += &format!(", {failed} failed");
        // The breakdown only when it tells more: "4 failed (3 failed, 1 timed_out)",
        // never "4 failed (4 failed)".
        if failed_statuses != [TaskStatus::Failed] {
            line += &format!(" ({})", failures.join(", "));
        }
    }
    // Unfinished, as everywhere: cancelled by a stop, or with no end recorded.
    let cancelled = count(TaskStatus::Cancelled);
    if skipped > 0 {
        line += &format!(", {skipped} already done");
    }
    let unfinished = cancelled + unrecorded;
    if unfinished > 0 {
        line += &format!(", {unfinished} unfinished");
        match (cancelled, resumable) {
            (0, Resumable::No) => {}
            (_, Resumable::No) => line += &format!(" ({cancelled} cancelled)"),
            (0, Resumable::Yes) => line += &format!(" (continue with `shoal run --resume {run}`)"),
            (_, Resumable::Yes) => {
                line +=
                    &format!(" ({cancelled} cancelled; continue with `shoal run --resume {run}`)")
            }
        }
    }
    line += &format!(" in {:.2}s", took.as_secs_f64());
    // Name the one failure status, if there is one: `--status failed` alone does not
    // list the timed-out, crashed, memory-exceeded or cancelled tasks.
    let mut not_ok = failed_statuses;
    if cancelled > 0 {
        not_ok.push(TaskStatus::Cancelled);
    }
    match not_ok.as_slice() {
        [] => {}
        [status] => line += &format!("; see `shoal results --run {run} --status {status}`"),
        _ => line += &format!("; see `shoal results --run {run}`"),
    }
    line
}
