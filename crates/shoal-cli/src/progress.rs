//! Progress on stderr: an indicatif bar on a terminal; with `--progress` (or `--bar`)
//! on a non-terminal, and with `--eta` anywhere, a plain status line once a second and
//! the final one once (for logs and CI). Shared by the driver thread (what runs: an attempt counts from its start
//! to its end, so never more than the slots) and the store writer thread (done and
//! failed, counted once a result is durable). No ETA is shown until a task is done:
//! before that there is nothing to estimate it from; nor while the run's input is
//! still being read: the total is then what was read so far, shown as `1234+`.
//!
//! `shoal watch` shows a run of another process with the same bar and lines
//! ([`Progress::following`]): it sets the counts it read from the store
//! ([`Progress::show`]), and the bar lists the running tasks under it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shoal_core::store::{unix_now, RunningAttempt};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often the plain status line is printed.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// The most running tasks listed under the bar (the rest are counted).
const LISTED: usize = 8;

/// The counters, read by whatever draws them.
struct Counts {
    total: AtomicU64,
    start: Instant,
    done: AtomicU64,
    failed: AtomicU64,
    running: AtomicU64,
    /// Paused by a control request (`shoal pause`).
    paused: AtomicBool,
    /// The run's input is still being read: the total is what was read so far.
    input_open: AtomicBool,
    /// The running tasks to list under the bar (`shoal watch`'s).
    listed: Mutex<Vec<RunningAttempt>>,
    /// Tasks that succeeded, shown by `shoal watch` (`None` for `shoal run`, whose
    /// bar needs no more than done and failed).
    succeeded: Option<AtomicU64>,
}

impl Counts {
    /// " (paused)" while paused.
    fn paused(&self) -> &'static str {
        if self.paused.load(Ordering::Relaxed) {
            " (paused)"
        } else {
            ""
        }
    }

    /// "succeeded N " when it is shown.
    fn succeeded(&self) -> String {
        match &self.succeeded {
            Some(n) => format!("succeeded {} ", n.load(Ordering::Relaxed)),
            None => String::new(),
        }
    }

    /// (done, running, failed) now.
    fn now(&self) -> (u64, u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (load(&self.done), load(&self.running), load(&self.failed))
    }

    /// "+" after the total while the input is still being read.
    fn more(&self) -> &'static str {
        if self.input_open.load(Ordering::Relaxed) {
            "+"
        } else {
            ""
        }
    }

    /// The plain status line of `counts` (as [`Counts::now`] gave them).
    fn line(&self, (done, running, failed): (u64, u64, u64)) -> String {
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let total = self.total.load(Ordering::Relaxed);
        // No estimate of a total that is not known yet.
        let eta = if done == 0 || self.input_open.load(Ordering::Relaxed) {
            "-".to_owned()
        } else {
            format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
        };
        format!(
            "shoal: {done}/{total}{} done, {}running {running} failed {failed}, {rate:.1}/s, ETA {eta}{}",
            self.more(),
            self.succeeded(),
            self.paused()
        )
    }

    /// The running tasks as lines under the bar, each with its slot and how long it
    /// has run: `\n  task 7  slot 2  12s`; nothing when none is listed.
    fn listed(&self, w: &mut dyn std::fmt::Write) {
        let listed = self.listed.lock().unwrap_or_else(|e| e.into_inner());
        let now = unix_now();
        for attempt in listed.iter().take(LISTED) {
            let ran = human_seconds(now - attempt.started_at);
            let _ = write!(w, "\n  task {}  slot {}  {ran}", attempt.task, attempt.slot);
            if attempt.attempt > 1 {
                let _ = write!(w, "  (attempt {})", attempt.attempt);
            }
        }
        if listed.len() > LISTED {
            let _ = write!(w, "\n  and {} more", listed.len() - LISTED);
        }
    }
}

/// A time in whole seconds as `42s`, `3m05s` or `2h07m`.
fn human_seconds(secs: f64) -> String {
    let secs = secs.max(0.0) as u64;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The plain lines' printer: a thread that prints once a second until stopped.
struct Lines {
    /// The counts of the line printed last, so the final one is not printed twice.
    printed: Arc<Mutex<Option<(u64, u64, u64)>>>,
    ticker: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
}

/// Where progress goes.
enum Display {
    Hidden,
    Bar(ProgressBar),
    Lines(Lines),
}

/// What `shoal watch` read of a run, for [`Progress::show`].
pub struct Shown {
    pub total: u64,
    /// The run's input is still being read: `total` is what was read so far.
    pub input_open: bool,
    /// Tasks that reached an end: succeeded, failed or cancelled.
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub running: Vec<RunningAttempt>,
}

/// When progress is shown, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Show {
    /// A bar when stderr is a terminal, nothing otherwise.
    Auto,
    /// Nothing (`--no-progress`, `--quiet`).
    Never,
    /// A bar on a terminal, the plain lines otherwise (`--progress`, `--bar`).
    Always,
    /// The plain lines, with their ETA, terminal or not (`--eta`).
    Lines,
}

/// The counters and their display.
pub struct Progress {
    display: Display,
    counts: Arc<Counts>,
}

impl Progress {
    pub fn new(total: u64, show: Show) -> Progress {
        Progress::begun(total, show, Duration::ZERO, false)
    }

    /// The progress of a run that another process runs and began `elapsed` ago
    /// (`shoal watch`): a bar on a terminal, the plain lines otherwise. Its counts are
    /// set with [`Progress::show`]; its rate and ETA count from the run's start until
    /// the bar has seen tasks end.
    pub fn following(elapsed: Duration) -> Progress {
        Progress::begun(0, Show::Always, elapsed, true)
    }

    fn begun(total: u64, show: Show, elapsed: Duration, watching: bool) -> Progress {
        let now = Instant::now();
        let counts = Arc::new(Counts {
            total: AtomicU64::new(total),
            start: now.checked_sub(elapsed).unwrap_or(now),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            running: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            input_open: AtomicBool::new(false),
            listed: Mutex::new(Vec::new()),
            succeeded: watching.then(|| AtomicU64::new(0)),
        });
        let tty = std::io::stderr().is_terminal();
        let display = match (show, tty) {
            (Show::Never, _) | (Show::Auto, false) => Display::Hidden,
            (Show::Lines, _) | (Show::Always, false) => Display::Lines(lines(counts.clone())),
            (Show::Auto | Show::Always, true) => {
                Display::Bar(bar(total, counts.clone(), now - counts.start))
            }
        };
        Progress { display, counts }
    }

    /// Sets every count at once, as read from the store (`shoal watch`), and the
    /// running tasks the bar lists.
    pub fn show(&self, shown: Shown) {
        let Shown { total, input_open, done, succeeded, failed, running } = shown;
        let counts = &self.counts;
        counts.total.store(total, Ordering::Relaxed);
        counts.input_open.store(input_open, Ordering::Relaxed);
        if let Some(n) = &counts.succeeded {
            n.store(succeeded, Ordering::Relaxed);
        }
        counts.failed.store(failed, Ordering::Relaxed);
        counts.running.store(running.len() as u64, Ordering::Relaxed);
        *counts.listed.lock().unwrap_or_else(|e| e.into_inner()) = running;
        let first = counts.done.swap(done, Ordering::Relaxed) == 0 && done > 0;
        if let Display::Bar(bar) = &self.display {
            bar.set_length(total);
            bar.set_position(done);
            if first {
                // The tasks done before the bar saw any end are not a rate.
                bar.reset_eta();
            }
        }
    }

    /// More tasks were read (driver thread).
    pub fn add_total(&self, tasks: u64) {
        let total = self.counts.total.fetch_add(tasks, Ordering::Relaxed) + tasks;
        if let Display::Bar(bar) = &self.display {
            bar.set_length(total);
        }
    }

    /// Whether the run's input is still being read: until it is not, the total is
    /// shown as a lower bound (`1234+`) and no ETA is given.
    pub fn set_input_open(&self, open: bool) {
        self.counts.input_open.store(open, Ordering::Relaxed);
    }

    /// The run's number of tasks, once its input was read whole.
    pub fn known_total(&self) -> Option<u64> {
        let open = self.counts.input_open.load(Ordering::Relaxed);
        (!open).then(|| self.counts.total.load(Ordering::Relaxed))
    }

    /// An attempt started (driver thread).
    pub fn started(&self) {
        self.counts.running.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt ended (driver thread), whether its task is done or will retry.
    pub fn stopped_running(&self) {
        // Paired with `started`; saturating all the same, so it never shows 2^64.
        let _ = self
            .counts
            .running
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// A task's final result is durable (writer thread); `failed` when it failed.
    pub fn finished(&self, failed: bool) {
        let done = self.counts.done.fetch_add(1, Ordering::Relaxed) + 1;
        if failed {
            self.counts.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Display::Bar(bar) = &self.display {
            bar.set_position(done);
        }
    }

    /// Dispatching was paused or unpaused: the bar and the status line say so.
    pub fn set_paused(&self, paused: bool) {
        self.counts.paused.store(paused, Ordering::Relaxed);
        if let Display::Bar(bar) = &self.display {
            bar.tick();
        }
    }

    /// Runs `f` (which prints) with the bar hidden, so output and bar never mix.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.display {
            Display::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Removes the bar, or prints the final status line, before the summary.
    pub fn finish(&self) {
        match &self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines(lines) => {
                let ticker = lines.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some((stop, thread)) = ticker {
                    drop(stop);
                    let _ = thread.join();
                }
                let mut printed = lines.printed.lock().unwrap_or_else(|e| e.into_inner());
                let now = self.counts.now();
                if *printed != Some(now) {
                    *printed = Some(now);
                    let _ = writeln!(std::io::stderr(), "{}", self.counts.line(now));
                }
            }
            Display::Hidden => {}
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // The ticker thread ends with its sender; never left printing.
        if let Display::Lines(lines) = &self.display {
            lines.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

/// The terminal bar, its clock started `elapsed` ago; its counts are read whenever it
/// is drawn.
fn bar(total: u64, counts: Arc<Counts>, elapsed: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        .with_elapsed(elapsed);
    let for_eta = counts.clone();
    let for_list = counts.clone();
    let for_more = counts.clone();
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len}{more} {counts} {rate} ETA {eta_or_dash}{listed}",
    )
    .expect("the template is valid")
    .with_key("counts", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let (_, running, failed) = counts.now();
        let _ =
            write!(w, "{}running {running} failed {failed}{}", counts.succeeded(), counts.paused());
    })
    .with_key("more", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{}", for_more.more());
    })
    .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.1}/s", state.per_sec());
    })
    .with_key("eta_or_dash", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        // Nothing to estimate from until a task is done, or (watching) until the bar
        // has seen one end.
        // Nor of a total not known yet.
        let _ = match for_eta.done.load(Ordering::Relaxed) {
            _ if for_eta.input_open.load(Ordering::Relaxed) => write!(w, "-"),
            0 => write!(w, "-"),
            _ if state.per_sec() == 0.0 => write!(w, "-"),
            _ => write!(w, "{:#}", HumanDuration(state.eta())),
        };
    })
    .with_key("listed", move |_: &ProgressState, w: &mut dyn std::fmt::Write| for_list.listed(w))
    .progress_chars("=> ");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The plain lines: a thread prints one every [`LINE_EVERY`] until its sender is
/// dropped (by [`Progress::finish`] or drop), which also wakes it at once.
fn lines(counts: Arc<Counts>) -> Lines {
    let printed = Arc::new(Mutex::new(None));
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = {
        let printed = printed.clone();
        std::thread::Builder::new().name("shoal-progress".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(LINE_EVERY) {
                let now = counts.now();
                *printed.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                let _ = writeln!(std::io::stderr(), "{}", counts.line(now));
            }
        })
    };
    // Without a thread (none could be started) only the final line is printed.
    let ticker = thread.ok().map(|thread| (stop, thread));
    Lines { printed, ticker: Mutex::new(ticker) }
}
