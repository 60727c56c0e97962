//! Progress on stderr: an indicatif bar on a terminal; with `--progress` on a
//! non-terminal, a plain status line once a second and the final one once (for logs
//! and CI). Shared by the driver thread (what runs: an attempt counts from its start
//! to its end, so never more than the slots) and the store writer thread (done and
//! failed, counted once a result is durable). No ETA is shown until a task is done:
//! before that there is nothing to estimate it from.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often the plain status line is printed.
const LINE_EVERY: Duration = Duration::from_secs(1);

/// The counters, read by whatever draws them.
struct Counts {
    total: u64,
    start: Instant,
    done: AtomicU64,
    failed: AtomicU64,
    running: AtomicU64,
    /// Paused by a control request (`shoal pause`).
    paused: AtomicBool,
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

    /// (done, running, failed) now.
    fn now(&self) -> (u64, u64, u64) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (load(&self.done), load(&self.running), load(&self.failed))
    }

    /// The plain status line of `counts` (as [`Counts::now`] gave them).
    fn line(&self, (done, running, failed): (u64, u64, u64)) -> String {
        let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let eta = if done == 0 {
            "-".to_owned()
        } else {
            format!("{:.0}s", self.total.saturating_sub(done) as f64 / rate)
        };
        format!(
            "shoal: {done}/{} done, running {running} failed {failed}, {rate:.1}/s, ETA {eta}{}",
            self.total,
            self.paused()
        )
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

/// The counters and their display.
pub struct Progress {
    display: Display,
    counts: Arc<Counts>,
}

impl Progress {
    /// `force`: `Some(true)` for --progress, `Some(false)` for --no-progress, `None`
    /// to show a bar only when stderr is a terminal.
    pub fn new(total: u64, force: Option<bool>) -> Progress {
        let counts = Arc::new(Counts {
            total,
            start: Instant::now(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            running: AtomicU64::new(0),
            paused: AtomicBool::new(false),
        });
        let tty = std::io::stderr().is_terminal();
        let display = match (force, tty) {
            (Some(false), _) | (None, false) => Display::Hidden,
            (_, true) => Display::Bar(bar(total, counts.clone())),
            (Some(true), false) => Display::Lines(lines(counts.clone())),
        };
        Progress { display, counts }
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

/// The terminal bar; its counts are read whenever it is drawn.
fn bar(total: u64, counts: Arc<Counts>) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let for_eta = counts.clone();
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} {counts} {rate} ETA {eta_or_dash}",
    )
    .expect("the template is valid")
    .with_key("counts", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
        let (_, running, failed) = counts.now();
        let _ = write!(w, "running {running} failed {failed}{}", counts.paused());
    })
    .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = write!(w, "{:.1}/s", state.per_sec());
    })
    .with_key("eta_or_dash", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
        let _ = match for_eta.done.load(Ordering::Relaxed) {
            0 => write!(w, "-"),
            _ => write!(w, "{:#}", HumanDuration(state.eta())),
        };
    })
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
