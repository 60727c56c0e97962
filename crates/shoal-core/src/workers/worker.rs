//! One worker process: starting it with its private channel, and the three tokio
//! tasks that carry its frames in, carry frames out, and report its exit.
//!
//! The driver never signals a worker itself: it asks the exit watcher, the only one
//! that reaps the process, so a signal can never reach a reused pid.
//!
//! A thread worker (`PoolConfig::threads`) is a thread of the host that the front end
//! starts on its end of the channel; it speaks the same protocol. It cannot be
//! killed: a kill cuts its channel (the thread runs on, a straggler, and its next read
//! or write finds the channel gone), and its "exit" is its channel's end: the reader
//! reports it, as killed (SIGKILL) when the driver had asked for the kill.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustix::process::Signal;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};

use super::config::{PoolConfig, ThreadStarter};
use crate::process::reap::{reap, Exited};
use crate::process::signal::kill_group;
use crate::process::{spawn_worker, ExitInfo, Limits};
use crate::protocol::{Message, MessageReader, ProtocolError};

/// What a worker's tasks tell the driver, tagged with the worker's id.
#[derive(Debug)]
pub(super) enum WorkerEvent {
    Message(Message),
    /// The worker sent something the codec refuses.
    Broken(ProtocolError),
    /// The channel ended: between frames (`None`), or cut off (`Some`: reset with
    /// frames unread, or ended inside a frame), as when the worker dies. Its exit
    /// follows and says why.
    Closed(Option<ProtocolError>),
    /// The process is gone and reaped, with the rest of its group.
    Exited(io::Result<ExitInfo>),
}

/// Where worker tasks send their events.
pub(super) type Inbox = mpsc::UnboundedSender<(u64, WorkerEvent)>;

/// The driver's handles on a started worker process.
#[derive(Debug)]
pub(super) struct Process {
    pub pid: u32,
    /// Encoded frames to send, in order (several frames per message).
    pub out: mpsc::UnboundedSender<Vec<u8>>,
    /// Set to true to SIGKILL the worker's group.
    pub kill: watch::Sender<bool>,
}

impl Process {
    /// Starts worker `id` and its tasks (on the current tokio runtime): a process, or
    /// a thread of the host with `config.threads` (`limits` do not apply to it).
    pub fn start(
        id: u64,
        config: &PoolConfig,
        limits: Limits,
        inbox: &Inbox,
    ) -> io::Result<Process> {
        if let Some(starter) = &config.threads {
            return Process::start_thread(id, starter, inbox);
        }
        let (ours, theirs) = UnixStream::pair()?;
        let (pid, pidfd) =
            spawn_worker(&config.argv, &config.env, limits, theirs.as_fd(), &config.pass_fds)?;
        drop(theirs);
        let (kill, kill_rx) = watch::channel(false);
        // SAFETY: the OwnedFd moves into the AsyncFd and stays open, unchanged, for its life.
        let watcher = match unsafe {
            AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
        } {
            Ok(fd) => fd,
            Err(e) => {
                let e = io::Error::from(e);
                // Without a way to learn of its exit the worker cannot be supervised.
                kill_group(pid, Signal::KILL);
                let _ = reap(pid);
                return Err(e);
            }
        };
        tokio::spawn(watch_exit(id, pid, watcher, kill_rx, inbox.clone()));
        let out = converse(id, ours, inbox, None)?;
        Ok(Process { pid, out, kill })
    }

    /// Starts thread worker `id`: the front end's starter takes the channel's other
    /// end. Its pid is the host's.
    fn start_thread(id: u64, starter: &ThreadStarter, inbox: &Inbox) -> io::Result<Process> {
        let (ours, theirs) = UnixStream::pair()?;
        let cutter = ours.try_clone()?;
        starter.start(id, OwnedFd::from(theirs))?;
        let (kill, mut kill_rx) = watch::channel(false);
        let killed = Arc::new(AtomicBool::new(false));
        let cut = killed.clone();
        tokio::spawn(async move {
            while kill_rx.changed().await.is_ok() {
                if *kill_rx.borrow_and_update() {
                    cut.store(true, Ordering::SeqCst);
                    // The reader then sees the end and reports the "exit".
                    let _ = cutter.shutdown(Shutdown::Both);
                    break;
                }
            }
        });
        let out = converse(id, ours, inbox, Some(killed))?;
        Ok(Process { pid: std::process::id(), out, kill })
    }
}

/// Starts the reader and writer tasks of worker `id`'s channel; returns the writer's
/// sender. For a thread worker (`killed` given) the reader also reports its exit once
/// the channel ended (after a protocol error, it cuts the channel first).
fn converse(
    id: u64,
    ours: UnixStream,
    inbox: &Inbox,
    killed: Option<Arc<AtomicBool>>,
) -> io::Result<mpsc::UnboundedSender<Vec<u8>>> {
    ours.set_nonblocking(true)?;
    let cutter = if killed.is_some() { Some(ours.try_clone()?) } else { None };
    let (read, write) = tokio::net::UnixStream::from_std(ours)?.into_split();
    let (out, out_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_frames(write, out_rx));
    let inbox = inbox.clone();
    tokio::spawn(async move {
        let mut reader = MessageReader::new(read);
        loop {
            let event = match reader.next().await {
                Ok(Some(message)) => WorkerEvent::Message(message),
                Ok(None) => WorkerEvent::Closed(None),
                Err(e) if e.is_disconnect() => WorkerEvent::Closed(Some(e)),
                Err(e) => WorkerEvent::Broken(e),
            };
            let last = !matches!(event, WorkerEvent::Message(_));
            if inbox.send((id, event)).is_err() {
                return;
            }
            if last {
                break;
            }
        }
        if let (Some(killed), Some(cutter)) = (killed, cutter) {
            let _ = cutter.shutdown(Shutdown::Both);
            let exited = if killed.load(Ordering::SeqCst) {
                Exited::Signal(Signal::KILL.as_raw())
            } else {
                Exited::Code(0)
            };
            let info = ExitInfo { exited, max_rss_kb: 0 };
            let _ = inbox.send((id, WorkerEvent::Exited(Ok(info))));
        }
    });
    Ok(out)
}

/// Writes frames as they come, several per system call when they queue up. Stops
/// when the driver drops the sender or the worker's end is gone (its exit says why).
async fn write_frames(mut write: OwnedWriteHalf, mut frames: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(mut batch) = frames.recv().await {
        while batch.len() < 1 << 20 {
            match frames.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write.write_all(&batch).await.is_err() {
            break;
        }
    }
}

/// Waits for the worker to exit, killing its group when asked; then kills what is
/// left of the group (the leader is a zombie, so its group id is not reused yet),
/// reaps it and reports.
async fn watch_exit(
    id: u64,
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    mut kill: watch::Receiver<bool>,
    inbox: Inbox,
) {
    let mut kill_open = true;
    loop {
        tokio::select! {
            guard = pidfd.readable() => {
                if let Ok(mut guard) = guard {
                    guard.retain_ready();
                }
                break;
            }
            changed = kill.changed(), if kill_open => match changed {
                Ok(()) if *kill.borrow_and_update() => kill_group(pid, Signal::KILL),
                Ok(()) => {}
                Err(_) => kill_open = false,
            },
        }
    }
    kill_group(pid, Signal::KILL);
    let _ = inbox.send((id, WorkerEvent::Exited(reap(pid))));
}
