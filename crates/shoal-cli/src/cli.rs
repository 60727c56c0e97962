//! The command-line interface: every subcommand and option, declared with clap.
//! Parsing only; the `commands` modules do the work.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::halt::{parse_halt, Halt};
use crate::inputs::{parse_colsep, parse_delimiter, parse_trim, Delimiter, Trim};
use crate::jobs::{parse_jobs, Jobs};
use crate::start_gate::{parse_load, Load};
use crate::units::{parse_duration, parse_memory_limit, parse_size, parse_timeout_arg, TimeoutArg};

/// shoal: run a command over many inputs on a fault-tolerant pool of slots, with
/// timeouts, retries, memory limits, priorities, progress, a durable result store
/// and resume after a crash.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, max_term_width = 100)]
pub struct Cli {
    /// The result store: a SQLite file, or a PostgreSQL database
    /// (postgresql://user@host/db). Default: ./.shoal/shoal.db
    #[arg(long, global = true, value_name = "PATH|URL", env = "SHOAL_STORE")]
    pub store: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND once per input: `shoal run [OPTIONS] COMMAND... ::: a b c`
    Run(Box<RunArgs>),
    /// List the runs in the store.
    Runs(RunsArgs),
    /// Show the tasks of a run, with their status and output.
    Results(ResultsArgs),
    /// Counts by status, success rate, duration percentiles, per-slot busy time.
    Stats(StatsArgs),
    /// Every task of a run with its attempts, as JSON lines.
    Export(ExportArgs),
    /// Cancel a live run (as a Ctrl-C would), or some of its tasks (--task).
    Cancel(CancelArgs),
    /// Start no new task in a live run until `shoal unpause`; running tasks go on.
    Pause(RunArg),
    /// Start tasks again in a paused run.
    Unpause(RunArg),
    /// Change how many tasks a live run runs at once.
    Jobs(JobsArgs),
    /// Follow a run started elsewhere, live: progress, running tasks, failures.
    Watch(WatchArgs),
    /// Run the tasks of shared runs of a PostgreSQL store on this machine, until
    /// stopped (SIGTERM or Ctrl-C drains: no new task, running ones finish).
    Worker(WorkerArgs),
    /// Wait until a run ends; exit status as `shoal run`'s.
    Wait(WaitArgs),
    /// The store itself: `shoal store init` creates its tables.
    #[command(subcommand)]
    Store(StoreCommand),
    /// Serve the store over HTTP: a JSON API, a live dashboard and Prometheus metrics.
    Serve(ServeArgs),
    /// A task's output and every attempt of it: `shoal logs [RUN] TASK`.
    Logs(LogsArgs),
    /// A completion script for a shell: `source <(shoal completions bash)`.
    Completions(CompletionsArgs),
    /// The manual page, in roff: `shoal man | man -l -`.
    Man,
}

/// Options of `shoal logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The run (default: the last one), then the task: `shoal logs 3 17`, `shoal logs 17`.
    #[arg(value_name = "RUN", required = true, num_args = 1..=2)]
    pub ids: Vec<i64>,
    /// Every attempt as a JSON line, with its output.
    #[arg(long)]
    pub json: bool,
}

/// Options of `shoal completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// The subcommands of `shoal store`.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Create the store's tables (in a PostgreSQL database: its schema `shoal`) unless
    /// they are there, and say which. A first `shoal run` creates them too.
    Init,
}

/// Options of `shoal run`. Options are `Option`s so that `--resume` can tell what
/// was given now from what the first run stored.
#[derive(Debug, Args)]
#[command(
    after_help = "Inputs: `::: a b c` (literal; several groups make the cartesian product), \
`:::: FILE` or `-a FILE` (one input per line, or per -0/-d delimiter), `--tasks FILE.jsonl`, \
or stdin lines when none is given.\n\
Replacement strings: {} {.} {/} {//} {/.} {#} (task number) {%} (slot) {1} {2} (n-th group); \
with none, the inputs are appended.\n\
Exit status: 0 all tasks succeeded (or there were none), 1 some failed, 2 usage error, \
74 the store took no more writes (a full disk), 130/143 interrupted. \
`shoal cancel` of the run exits 130, as Ctrl-C. \
With --halt, as GNU parallel: fail=1 or done=1 reached, the status of the task that reached it; \
P% (of fail or done), the share of tasks that failed in percent, rounded up; success, 0; \
otherwise the number of tasks that failed (101 for more than 100)."
)]
pub struct RunArgs {
    /// Slots (tasks running at once), as GNU parallel: N, N% of the cores (50%), +N or
    /// -N cores (at least 1), 0 as many as possible (one per task, at most 4096 and
    /// what the open-file limit serves). Default: the number of cores.
    #[arg(short = 'j', long = "jobs", value_name = "N", allow_hyphen_values = true, value_parser = parse_jobs)]
    pub jobs: Option<Jobs>,

    /// Per-task time limit (1.5, 250ms, 2s, 3m, 1h): the task's whole process group
    /// gets SIGTERM, then SIGKILL after --kill-grace. N% (as GNU parallel): N percent of
    /// the median duration of the tasks that succeeded, once 3 have.
    #[arg(long, value_name = "SECS", value_parser = parse_timeout_arg)]
    pub timeout: Option<TimeoutArg>,

    /// Wait between SIGTERM and SIGKILL when a task is stopped. Default: 2s.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub kill_grace: Option<Duration>,

    /// Extra attempts for a task that fails, with exponential backoff.
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// Wait before the first retry; doubles for each further one. Default: 1s.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub retry_delay: Option<Duration>,

    /// Per-task memory limit (512M, 2G): a memory cgroup where possible, else
    /// RLIMIT_AS; `shoal stats` names the mechanism.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory_limit)]
    pub memory_limit: Option<u64>,

    /// Pin slot n to the n-th CPU shoal may use (cycling when slots outnumber them).
    #[arg(long)]
    pub pin: bool,

    /// Niceness of the tasks (0-19 lowers their priority).
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub nice: Option<i32>,

    /// Run the command through `sh -c` even when it needs no shell.
    #[arg(long)]
    pub shell: bool,

    /// Print outputs in input order instead of completion order.
    #[arg(short = 'k', long)]
    pub keep_order: bool,

    /// Stream output lines as they come, each prefixed with the task number and a tab.
    #[arg(long, conflicts_with = "keep_order")]
    pub line_buffer: bool,

    /// Prefix each output line with the task's inputs and a tab (as GNU parallel).
    #[arg(long)]
    pub tag: bool,

    /// Prefix each output line with STR and a tab; replacement strings ({} {1} {#}
    /// {%}...) are the task's.
    #[arg(long, value_name = "STR", value_parser = parse_tagstring)]
    pub tagstring: Option<String>,

    /// Write a line per finished task to FILE in GNU parallel's format (emptied first;
    /// added to on a resume).
    #[arg(long, value_name = "FILE")]
    pub joblog: Option<PathBuf>,

    /// Write each task's stdout, stderr and seq (its number) to files, as GNU
    /// parallel: DIR/1/<input 1>/2/<input 2>/stdout...; with replacement strings
    /// (`out/{}.txt`, `out/{}/`), the task's own path. Kept by a resume, which
    /// overwrites them.
    #[arg(long, value_name = "DIR", value_parser = parse_workdir)]
    pub results: Option<String>,

    /// Print output lines as they come, as --line-buffer but without the task number
    /// (GNU parallel's, which does not even wait for whole lines).
    #[arg(short = 'u', long, conflicts_with_all = ["keep_order", "line_buffer"])]
    pub ungroup: bool,

    /// Print each task's output whole when it ends (the default).
    #[arg(long, conflicts_with_all = ["ungroup", "line_buffer"])]
    pub group: bool,

    /// Output kept in the store per stream and task (the rest is marked truncated). Default: 1M.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub output_limit: Option<u64>,

    /// Show the progress bar even when stderr is not a terminal.
    #[arg(long, conflicts_with = "no_progress")]
    pub progress: bool,

    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// GNU parallel's --bar: as --progress (the bar on a terminal, a status line a
    /// second otherwise).
    #[arg(long, conflicts_with_all = ["no_progress", "quiet"])]
    pub bar: bool,

    /// GNU parallel's --eta: a status line on stderr once a second, with the estimated
    /// time left, terminal or not (and the final one once).
    #[arg(long, conflicts_with_all = ["no_progress", "quiet"])]
    pub eta: bool,

    /// No summary line at the end, and no progress bar (errors are still said).
    #[arg(long, conflicts_with = "progress")]
    pub quiet: bool,

    /// Read tasks from a JSON-lines file: {"args": [...], "priority": 1, "cost": 2.5,
    /// "key": "k", "timeout": 10, "retries": 2}.
    #[arg(long, value_name = "FILE.jsonl")]
    pub tasks: Option<PathBuf>,

    /// Print the command of each task, one per line in input order, and run nothing:
    /// no store is opened or written.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,

    /// PostgreSQL store only: submit the run for `shoal worker` agents to run, print
    /// its id and return (`shoal wait RUN` waits for its end).
    #[arg(long, conflicts_with_all = ["resume", "dry_run"])]
    pub detach: bool,

    /// GNU parallel's input options (boxed: `Command` stays small).
    #[command(flatten)]
    pub input: Box<InputArgs>,

    /// GNU parallel's options that control the run.
    #[command(flatten)]
    pub control: ControlArgs,

    /// Continue a run (default: the last one): tasks that succeeded are skipped, the
    /// others run again. The command and inputs come from the store.
    #[arg(long, value_name = "RUN_ID", num_args = 0..=1, require_equals = false)]
    pub resume: Option<Option<i64>>,

    /// The command, then its inputs: COMMAND... [::: INPUTS...] [:::: FILE]
    #[arg(trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// A `--workdir`, checked as a template.
fn parse_workdir(text: &str) -> Result<String, String> {
    match text {
        "" => Err("the directory is empty".to_owned()),
        _ => parse_tagstring(text).map_err(|e| e.to_string()),
    }
}

/// A `--tagstring`, checked as a template.
fn parse_tagstring(text: &str) -> Result<String, crate::template::TemplateError> {
    crate::template::Tag::parse(text).map(|_| text.to_owned())
}

impl RunArgs {
    /// `--timeout` when given as a duration.
    pub fn fixed_timeout(&self) -> Option<Duration> {
        match self.timeout {
            Some(TimeoutArg::Fixed(timeout)) => Some(timeout),
            _ => None,
        }
    }
}

/// GNU parallel's options for reading the inputs of `shoal run`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Read inputs from FILE, one per line (repeatable: each file is one more input
    /// group, before any `:::`/`::::` group, as several `::::`). `-` is stdin.
    #[arg(short = 'a', long = "arg-file", value_name = "FILE")]
    pub arg_file: Vec<PathBuf>,

    /// Inputs read from files and stdin end with a NUL byte instead of a newline.
    #[arg(short = '0', long = "null", conflicts_with = "delimiter")]
    pub null: bool,

    /// Inputs read from files and stdin end with DELIM instead of a newline (\n \t
    /// \r \0 and \NNN octal escapes, as GNU parallel).
    #[arg(short = 'd', long = "delimiter", value_name = "DELIM", value_parser = parse_delimiter)]
    pub delimiter: Option<Delimiter>,

    /// Remove white space around each input: l (leading), r (trailing), lr or rl
    /// (both), n (none, the default).
    #[arg(long, value_name = "lr", value_parser = parse_trim)]
    pub trim: Option<Trim>,

    /// Split each input into columns at REGEX: {1} {2}... are the columns (of every
    /// group, in order), {} all of them; each column is trimmed (--trim lr).
    #[arg(long, value_name = "REGEX", value_parser = parse_colsep)]
    pub colsep: Option<regex::Regex>,

    /// The first input of each group (a `:::` group's first word, a file's first
    /// line) names its columns (split at --colsep, a tab by default): `{name}` is
    /// then that column. Any value does this without --pipe, as in GNU parallel.
    #[arg(long, value_name = ":")]
    pub header: Option<String>,

    /// Link the input groups instead of making their product: the n-th inputs of
    /// every group make one task, shorter groups wrap around. (`:::+`/`::::+` link
    /// one group to the one before it, without wrapping.)
    #[arg(long)]
    pub link: bool,

    /// Each task takes up to N inputs (N rows of the groups' product), {1}..{N}
    /// being them (empty past the last); 0 runs one task per input with none of it.
    #[arg(short = 'N', long = "max-replace-args", value_name = "N", conflicts_with = "max_args")]
    pub max_replace_args: Option<u32>,

    /// Each task takes up to N inputs (as -N).
    #[arg(short = 'n', long = "max-args", value_name = "N")]
    pub max_args: Option<u32>,

    /// Each task takes as many inputs as fit in -s, replacing {} by all of them
    /// (the inputs left at the end are spread over the slots, as GNU parallel's).
    #[arg(short = 'm', conflicts_with_all = ["max_args", "max_replace_args", "context_replace"])]
    pub multiple: bool,

    /// As -m, with {} replaced in context: a word holding {} is repeated per input.
    #[arg(short = 'X', conflicts_with_all = ["max_args", "max_replace_args"])]
    pub context_replace: bool,

    /// The longest command line -m and -X make, in characters (default: 64036, half
    /// of Linux's longest argument less 3000, as GNU parallel reckons it).
    #[arg(short = 's', long = "max-chars", value_name = "SIZE", value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_chars: Option<u64>,

    /// Run the tasks in a random order: every input is read first, then shuffled
    /// ({#} numbers them in the order they run).
    #[arg(long)]
    pub shuf: bool,

    /// An input equal to EOF ends its input group: it and what follows are ignored.
    #[arg(short = 'E', value_name = "EOF")]
    pub eof: Option<String>,
}

/// GNU parallel's options that control how `shoal run` runs its tasks.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// Stop the run early, as GNU parallel: WHEN,WHY=N or WHEN,WHY=P% where WHEN is
    /// `soon` (start no more tasks; running ones finish) or `now` (stop the running
    /// ones too) and WHY `fail`, `success` or `done` (N tasks, or P% of all the run's
    /// tasks, counted once the input is read whole); `never` (the default), and
    /// parallel's short forms 0, 1, 2, -1, -2 and P%. The exit status is then
    /// parallel's (see below).
    #[arg(long, value_name = "WHEN,WHY=N", allow_hyphen_values = true, value_parser = parse_halt)]
    pub halt: Option<Halt>,

    /// The least time between two task starts (1.5, 250ms, 2s, 3m), as GNU parallel's
    /// --delay: the first starts at once, each next one this long after the one before.
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub delay: Option<Duration>,

    /// Run the command's words as they are, each one argument, never through a shell
    /// (GNU parallel's --quote): `shoal run -q perl -e 'print "@ARGV\n"' ::: a`.
    #[arg(short = 'q', long, conflicts_with = "shell")]
    pub quote: bool,

    /// Each task runs in DIR (replacement strings are the task's: `--wd out/{}`); `...`
    /// gives each attempt a new empty directory under $TMPDIR, removed when it ends, as
    /// GNU parallel's. Relative to where shoal runs.
    #[arg(long = "workdir", visible_alias = "wd", value_name = "DIR", value_parser = parse_workdir)]
    pub workdir: Option<String>,

    /// Accepted for GNU parallel's scripts: every task gets shoal's whole environment
    /// already (parallel's --env copies variables to remote hosts).
    #[arg(long = "env", value_name = "VAR")]
    pub env: Vec<String>,

    /// Start a task only while the machine has at least SIZE of memory available
    /// (MemAvailable of /proc/meminfo; 512M, 2G), as GNU parallel's; asked again each
    /// second while it has not. Running tasks are left alone.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memfree: Option<u64>,

    /// Start a task only while the 1-minute load average is under N (N% of the
    /// cores: 80%); asked again each second while it is not.
    #[arg(long, value_name = "N", value_parser = parse_load)]
    pub load: Option<Load>,

    /// GNU parallel's --resume-failed: with the command of a run in the store (its
    /// latest such run), resume it: the tasks that succeeded are skipped, the others
    /// run again, inputs as stored; with a command no run has had, a new run.
    #[arg(long, conflicts_with_all = ["resume", "dry_run"])]
    pub resume_failed: bool,
}

/// Options of `shoal runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Options of `shoal results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The run (default: the last one).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// Only tasks in these statuses (`failed,timed_out`; repeatable): queued, running,
    /// succeeded, failed, timed_out, crashed, memory_exceeded, cancelled.
    #[arg(long, value_name = "S,...", value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only this task (repeatable).
    #[arg(long = "task", value_name = "N")]
    pub tasks: Vec<u64>,
    /// One JSON object per task and line, with the captured output.
    #[arg(long)]
    pub json: bool,
}

/// Options of `shoal stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The run (default: the last one).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `shoal cancel`.
#[derive(Debug, Args)]
#[command(after_help = "The run takes the request within about 100 ms; this waits until it has \
(at most 5 s). Exit status: 0 taken, 2 refused (no such run or task, an ended run or task, \
a store that cannot be written).")]
pub struct CancelArgs {
    /// The run (a live one: see `shoal runs`).
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Cancel only this task (repeatable): queued, it never starts; running, it is
    /// stopped (SIGTERM, SIGKILL after the grace). The rest of the run goes on.
    #[arg(long = "task", value_name = "N")]
    pub tasks: Vec<u64>,
}

/// The run of `shoal pause` and `shoal unpause`.
#[derive(Debug, Args)]
pub struct RunArg {
    /// The run (a live one: see `shoal runs`).
    #[arg(value_name = "RUN")]
    pub run: i64,
}

/// Options of `shoal jobs`.
#[derive(Debug, Args)]
#[command(
    allow_negative_numbers = true,
    after_help = "N is read as `shoal run -j` reads it: a number of slots (8), a share of this \
machine's cores (50%), or cores more or fewer (+2, -1); 0 (as many as possible) is for a run's \
start only.\n\
Fewer: running tasks finish, and none starts on the slots taken away. More: the new slots start \
work at once."
)]
pub struct JobsArgs {
    /// The run (a live one: see `shoal runs`).
    #[arg(value_name = "RUN")]
    pub run: i64,
    /// Tasks at once from now.
    #[arg(value_name = "N", value_parser = crate::jobs::parse_live_jobs)]
    pub jobs: u32,
}

/// Options of `shoal watch`.
#[derive(Debug, Args)]
#[command(after_help = "Shows done/total, succeeded, failed and running tasks, rate and ETA, \
each running task with its slot and time so far, and one line per failed task as it fails; \
a bar on a terminal, one line a second otherwise. It only reads the store, and ends with the \
run's summary.\n\
Exit status: as the run's own: 0 every task succeeded, 1 some failed or were cancelled, or the \
run died (its process was killed), 130 the run was interrupted; 2 usage error (no such run, no \
store). Ctrl-C stops watching, not the run (130).")]
pub struct WatchArgs {
    /// The run. Default: the latest live run of the store, else its latest run (whose
    /// summary is shown).
    #[arg(value_name = "RUN")]
    pub run: Option<i64>,
}

/// Options of `shoal worker`.
#[derive(Debug, Args)]
#[command(after_help = "The agent claims ready tasks of shared runs (`shoal run --detach`) as \
slots free up, runs each task's command in its own working directory, and records every \
attempt; another agent takes over the tasks of one that was killed once its lease expires. \
A first SIGTERM or Ctrl-C drains it (no new claim, running tasks finish, exit 0); a second \
kills its tasks and leaves them to the others.\n\
Exit status: 0 drained; 2 usage error (no PostgreSQL store, no shoal tables); 130/143 \
stopped by a second signal.")]
pub struct WorkerArgs {
    /// Slots (tasks running at once), as for `shoal run`. Default: the number of cores.
    #[arg(short = 'j', long = "jobs", value_name = "N", allow_hyphen_values = true, value_parser = parse_jobs)]
    pub jobs: Option<Jobs>,

    /// The agent's name in the store. Default: the host name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Run only the tasks of this run (repeatable). Default: any shared run.
    #[arg(long = "run", value_name = "ID")]
    pub runs: Vec<i64>,
}

/// Options of `shoal wait`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status: as `shoal run`'s: 0 every task succeeded, 1 some failed \
or were cancelled, or the run died, 130 interrupted; 2 usage error (no such run, no store).")]
pub struct WaitArgs {
    /// The run.
    #[arg(value_name = "RUN")]
    pub run: i64,
}

/// Options of `shoal export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The run (default: the last one).
    #[arg(long, value_name = "ID")]
    pub run: Option<i64>,
}

/// Options of `shoal serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "The dashboard is at http://ADDR/, the API under /api/v1 (its OpenAPI document: \
/api/v1/openapi.json), metrics at /metrics. Actions (POST) need the header `X-Shoal-Request: 1`."
)]
pub struct ServeArgs {
    /// The address to listen on. Any address but loopback needs a token.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8470")]
    pub listen: std::net::SocketAddr,

    /// A file holding the token every request must carry (`Authorization: Bearer
    /// TOKEN`); SHOAL_TOKEN gives it too.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Serve no action (cancel, pause, slots): the store is only read.
    #[arg(long)]
    pub read_only: bool,
}
