//! Progress on stderr: an indicatif bar on a terminal; with `--progress` on a
//! non-terminal, a plain status line at most once a second (for logs and CI).
//! Shared by the driver thread (running count) and the store writer thread
//! (done and failed counts, counted once a result is durable).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Where progress goes.
enum Display {
    Hidden,
    Bar(ProgressBar),
    Lines { last: Mutex<Instant> },
}

/// The counters and their display.
pub struct Progress {
    display: Display,
    total: u64,
    start: Instant,
    done: AtomicU64,
    failed: AtomicU64,
    running: AtomicU64,
}

impl Progress {
    /// `force`: `Some(true)` for --progress, `Some(false)` for --no-progress, `None`
    /// to show a bar only when stderr is a terminal.
    pub fn new(total: u64, force: Option<bool>) -> Progress {
        let tty = std::io::stderr().is_terminal();
        let display = match (force, tty) {
            (Some(false), _) | (None, false) => Display::Hidden,
            (_, true) => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {pos}/{len} {msg} {rate} ETA {eta}",
                )
                .expect("the template is valid")
                .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                })
                .progress_chars("=> ");
                bar.set_style(style);
                bar.enable_steady_tick(Duration::from_millis(200));
                Display::Bar(bar)
            }
            (Some(true), false) => Display::Lines { last: Mutex::new(Instant::now()) },
        };
        Progress {
            display,
            total,
            start: Instant::now(),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            running: AtomicU64::new(0),
        }
    }

    /// An attempt started.
    pub fn started(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt ended; `finished` when its task is done, `failed` when it failed.
    pub fn ended(&self, finished: bool, failed: bool) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        if finished {
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        if failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.refresh(false);
    }

    /// Updates the display (the line form only when a second has passed or `final`).
    pub fn refresh(&self, last: bool) {
        let done = self.done.load(Ordering::Relaxed);
        let message = format!(
            "running {} failed {}",
            self.running.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed)
        );
        match &self.display {
            Display::Hidden => {}
            Display::Bar(bar) => {
                bar.set_position(done);
                bar.set_message(message);
            }
            Display::Lines { last: printed } => {
                let mut printed = printed.lock().unwrap_or_else(|e| e.into_inner());
                if last || printed.elapsed() >= Duration::from_secs(1) {
                    *printed = Instant::now();
                    let secs = self.start.elapsed().as_secs_f64();
                    let rate = done as f64 / secs.max(1e-9);
                    let eta = if rate > 0.0 {
                        (self.total - done.min(self.total)) as f64 / rate
                    } else {
                        0.0
                    };
                    let _ = writeln!(
                        std::io::stderr(),
                        "shoal: {done}/{} done, {message}, {rate:.1}/s, ETA {eta:.0}s",
                        self.total
                    );
                }
            }
        }
    }

    /// Runs `f` (which prints) with the bar hidden, so output and bar never mix.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.display {
            Display::Bar(bar) => bar.suspend(f),
            _ => f(),
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        match &self.display {
            Display::Bar(bar) => bar.finish_and_clear(),
            Display::Lines { .. } => self.refresh(true),
            Display::Hidden => {}
        }
    }
}
