//! One running attempt: capture its output, enforce kills, reap it.
//!
//! Kill protocol: `Term` sends SIGTERM to the task's process group and arms a
//! SIGKILL for the group after the grace; `Kill` sends SIGKILL at once. When the
//! leader exits, whatever is left in its group is SIGKILLed before the leader is
//! reaped (see `process::reap`), so no process of a task outlives it.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::process::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, Instant};

use super::events::Stream;
use crate::process::{reap, signal, ExitInfo, Spawned};
use crate::task::{Output, TaskId};

/// How hard to stop an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KillLevel {
    None,
    Term,
    Kill,
}

/// How long the output pipes may stay open once the task's group is gone (only a
/// process that left the group, a daemon, can hold them): then the attempt ends.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// The longest line passed on whole in line-buffer mode; longer ones come in pieces.
const MAX_LINE: usize = 64 * 1024;

/// A complete output line sent to the driver in line-buffer mode.
pub(crate) type Line = (TaskId, Stream, Vec<u8>);

/// What the attempt left behind.
pub(crate) struct Finished {
    pub exit: io::Result<ExitInfo>,
    pub stdout: Output,
    pub stderr: Output,
}

/// How long an attempt runs before its output pipes are watched. The output of a
/// short task is read once, after it has exited, which spares registering two pipes
/// with the poller and waking up for each; a task that fills a pipe before then
/// waits this long at most.
const WATCH_OUTPUT_AFTER: Duration = Duration::from_millis(5);

/// Runs an attempt to its end.
pub(crate) async fn supervise(
    spawned: Spawned,
    kill: watch::Receiver<KillLevel>,
    grace: Duration,
    cap: usize,
    lines: Option<(TaskId, mpsc::UnboundedSender<Line>)>,
) -> Finished {
    let Spawned { pid, pidfd, stdout, stderr } = spawned;
    let mut out = Output::default();
    let mut err = Output::default();
    let waiter = wait_exit(pid, pidfd, kill, grace);
    tokio::pin!(waiter);
    let mut exit = None;
    if lines.is_none() {
        tokio::select! {
            biased;
            e = &mut waiter => exit = Some(e),
            _ = sleep(WATCH_OUTPUT_AFTER) => {}
        }
    }
    // Streams still open: all of them unless the task has exited already.
    let (stdout, stderr) = match exit {
        Some(_) => (read_buffered(stdout, &mut out, cap), read_buffered(stderr, &mut err, cap)),
        None => (Some(stdout), Some(stderr)),
    };
    let out_lines = lines.clone().map(|(task, tx)| (task, Stream::Stdout, tx));
    let err_lines = lines.map(|(task, tx)| (task, Stream::Stderr, tx));
    let exit = {
        let readers = async {
            tokio::join!(
                capture(stdout, &mut out, cap, out_lines),
                capture(stderr, &mut err, cap, err_lines)
            )
        };
        tokio::pin!(readers);
        let mut drained = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut readers, if !drained => drained = true,
                e = &mut waiter, if exit.is_none() => exit = Some(e),
                // A process that left the group still holds the pipes: stop waiting.
                _ = sleep(DRAIN_AFTER_EXIT), if exit.is_some() && !drained => break,
            }
            if exit.is_some() && drained {
                break;
            }
        }
        exit.expect("loop ends after the exit")
    };
    Finished { exit, stdout: out, stderr: err }
}

/// Keeps the first `cap` bytes of a stream.
fn keep(into: &mut Output, data: &[u8], cap: usize) {
    let room = cap.saturating_sub(into.bytes.len());
    into.bytes.extend_from_slice(&data[..data.len().min(room)]);
    into.truncated |= data.len() > room;
}

/// Reads what an exited task left in a pipe. Returns the pipe when it is still open
/// (a process outside the task's group holds it) or keeps being written to.
fn read_buffered(fd: OwnedFd, into: &mut Output, cap: usize) -> Option<OwnedFd> {
    let mut chunk = [0u8; 16 * 1024];
    // Bounded: whatever keeps writing is read by `capture` instead.
    for _ in 0..16 {
        match rustix::io::read(&fd, &mut chunk) {
            Ok(0) => return None,
            Ok(n) => keep(into, &chunk[..n], cap),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Some(fd),
        }
    }
    Some(fd)
}

/// Waits for the leader to exit while enforcing kill requests, then cleans up the
/// group and reaps the leader.
async fn wait_exit(
    pid: u32,
    pidfd: OwnedFd,
    mut kill: watch::Receiver<KillLevel>,
    grace: Duration,
) -> io::Result<ExitInfo> {
    // SAFETY: the OwnedFd moves into the AsyncFd and stays open, unchanged, for its life.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(io::Error::from)?;
    let mut force_at: Option<Instant> = None;
    let mut kill_open = true;
    loop {
        tokio::select! {
            guard = pidfd.readable() => {
                guard?.retain_ready();
                break;
            }
            changed = kill.changed(), if kill_open => {
                if changed.is_err() {
                    kill_open = false;
                    continue;
                }
                let level = *kill.borrow_and_update();
                match level {
                    KillLevel::None => {}
                    KillLevel::Term => {
                        signal::kill_group(pid, Signal::TERM);
                        // A grace past what the clock can hold never ends.
                        if force_at.is_none() {
                            force_at = Instant::now().checked_add(grace);
                        }
                    }
                    KillLevel::Kill => signal::kill_group(pid, Signal::KILL),
                }
            }
            _ = sleep_until(force_at.unwrap_or_else(Instant::now)), if force_at.is_some() => {
                signal::kill_group(pid, Signal::KILL);
                force_at = None;
            }
        }
    }
    // The leader is a zombie: its pid (the group id) cannot be reused yet.
    signal::kill_group(pid, Signal::KILL);
    reap::reap(pid)
}

/// Reads a stream, if still open, to its end, keeping the first `cap` bytes.
async fn capture(
    fd: Option<OwnedFd>,
    into: &mut Output,
    cap: usize,
    mut lines: Option<(TaskId, Stream, mpsc::UnboundedSender<Line>)>,
) {
    // The spawn made the read end non-blocking, as tokio needs.
    let Some(Ok(mut pipe)) = fd.map(pipe::Receiver::from_owned_fd_unchecked) else {
        return;
    };
    let mut chunk = vec![0u8; 16 * 1024];
    let mut partial = Vec::new();
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let data = &chunk[..n];
        keep(into, data, cap);
        if let Some((task, stream, tx)) = &mut lines {
            partial.extend_from_slice(data);
            let mut start = 0;
            while let Some(end) = partial[start..].iter().position(|&b| b == b'\n') {
                let _ = tx.send((*task, *stream, partial[start..=start + end].to_vec()));
                start += end + 1;
            }
            partial.drain(..start);
            // A line that never ends must not grow without bound: pass it on in pieces.
            if partial.len() >= MAX_LINE {
                let mut piece = std::mem::take(&mut partial);
                piece.push(b'\n');
                let _ = tx.send((*task, *stream, piece));
            }
        }
    }
    if let Some((task, stream, tx)) = lines {
        if !partial.is_empty() {
            partial.push(b'\n');
            let _ = tx.send((task, stream, partial));
        }
    }
}
