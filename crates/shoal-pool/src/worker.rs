//! The worker's side of the protocol, for workers written in Rust: a program that a
//! [`WorkerPool`](crate::workers::WorkerPool) starts calls [`serve`] with what it
//! does to a task's payload, and `serve` speaks `docs/protocol.md` for it: Hello,
//! Welcome, Init, Runs answered in order, Heartbeats from a thread of its own,
//! Shutdown and Bye.
//!
//! A payload is whatever the submitter put in [`TaskSpec::payload`](crate::workers::TaskSpec):
//! the pool never looks inside.

use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_core::protocol::{encode, FrameDecoder, Message, ProtocolError, PROTOCOL_VERSION};

/// The environment variable naming the worker's end of its channel.
const WORKER_FD: &str = "SHOAL_WORKER_FD";

/// What a worker does with its tasks.
///
/// A closure `FnMut(&[u8]) -> Result<Vec<u8>, String>` is a handler with no
/// initializer.
pub trait Handler {
    /// Runs one task: `Ok` is its result, `Err` its failure (the task ends `failed`,
    /// [`Failure::Raised`](crate::workers::Failure), with this text; it is not
    /// retried). A panic is a failure too, and the worker goes on.
    fn run(&mut self, payload: &[u8]) -> Result<Vec<u8>, String>;

    /// Runs the pool's initializer ([`PoolConfig::init`](crate::workers::PoolConfig)),
    /// once, before any task. An `Err` breaks the pool: every task ends
    /// `failed`, [`Failure::InitFailed`](crate::workers::Failure), with it.
    fn init(&mut self, _payload: &[u8]) -> Result<(), String> {
        Err("this worker takes no initializer".into())
    }
}

impl<F: FnMut(&[u8]) -> Result<Vec<u8>, String>> Handler for F {
    fn run(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        self(payload)
    }
}

/// Why [`serve`] stopped before the pool was done with this worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The process was not started by a pool.
    #[error("not started by a shoal pool: {WORKER_FD} is not set")]
    NotAWorker,
    /// `SHOAL_WORKER_FD` does not name a descriptor.
    #[error("{WORKER_FD}={0:?} is not a descriptor number")]
    BadDescriptor(String),
    /// The pool closed the channel before Welcome: it does not speak this version.
    #[error(
        "the pool did not welcome this worker (it speaks protocol version {PROTOCOL_VERSION})"
    )]
    NotWelcomed,
    /// The pool sent what the protocol does not allow here.
    #[error("the pool sent {0} where the protocol does not allow it")]
    Unexpected(&'static str),
    /// The channel's bytes are not valid frames.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Reading or writing the channel failed.
    #[error("worker channel: {0}")]
    Io(#[from] io::Error),
}

/// Whether this process was started by a pool as one of its workers.
pub fn is_worker() -> bool {
    std::env::var_os(WORKER_FD).is_some()
}

/// Serves the pool that started this process until it is done with it: runs each
/// task it is sent with `handler`, in order, and answers each. Returns `Ok` after
/// the pool's Shutdown (and the Bye that answers it) or when the pool has gone (its
/// end of the channel closed); the program should then exit.
///
/// Call it before starting threads of your own: the pool applies its limits to the
/// process just after it starts, and threads started before may escape them.
pub fn serve(mut handler: impl Handler) -> Result<(), WorkerError> {
    let mut channel = Channel::from_env()?;
    channel.send(&Message::Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
        runtime: format!("rust shoal-pool {}", env!("CARGO_PKG_VERSION")),
    })?;
    let heartbeat_ms = match channel.receive()? {
        Some(Message::Welcome { heartbeat_ms, .. }) => heartbeat_ms,
        Some(other) => return Err(WorkerError::Unexpected(other.kind().name())),
        None => return Err(WorkerError::NotWelcomed),
    };
    // Dropping the sender stops the heartbeat thread.
    let _heartbeats = channel.start_heartbeats(Duration::from_millis(heartbeat_ms.into()))?;
    let mut initialized = false;
    while let Some(message) = channel.receive()? {
        match message {
            Message::Init { payload } if !initialized => {
                initialized = true;
                let (ok, error) = match caught(|| handler.init(&payload)) {
                    Ok(()) => (true, String::new()),
                    Err(error) => (false, error),
                };
                let payload = error.clone().into_bytes();
                channel.send(&Message::InitDone { ok, payload, traceback: error })?;
            }
            Message::Run { task, attempt, payload } => {
                initialized = true;
                let (ok, payload, traceback) = match caught(|| handler.run(&payload)) {
                    Ok(result) => (true, result, String::new()),
                    Err(error) => (false, error.clone().into_bytes(), error),
                };
                channel.send(&Message::Result { task, attempt, ok, payload, traceback })?;
            }
            Message::Shutdown => {
                channel.send(&Message::Bye)?;
                return Ok(());
            }
            other => return Err(WorkerError::Unexpected(other.kind().name())),
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into an `Err` with its message.
fn caught<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".into());
        Err(format!("panicked: {message}"))
    })
}

/// The worker's end of its channel: reads on this thread, writes under a lock that
/// the heartbeat thread shares, so that frames never interleave.
struct Channel {
    reader: UnixStream,
    writer: Arc<Mutex<UnixStream>>,
    decoder: FrameDecoder,
    buffer: Vec<u8>,
}

impl Channel {
    fn from_env() -> Result<Channel, WorkerError> {
        let value = std::env::var(WORKER_FD).map_err(|_| WorkerError::NotAWorker)?;
        let fd: RawFd = value.parse().map_err(|_| WorkerError::BadDescriptor(value.clone()))?;
        if fd < 0
            || rustix::io::fcntl_getfd(unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) }).is_err()
        {
            return Err(WorkerError::BadDescriptor(value));
        }
        // The user's code and what it starts must neither inherit the channel nor take
        // themselves for workers.
        std::env::remove_var(WORKER_FD);
        // SAFETY: the pool handed this process the descriptor to own; it was checked open.
        let reader = unsafe { UnixStream::from_raw_fd(fd) };
        rustix::io::fcntl_setfd(&reader, rustix::io::FdFlags::CLOEXEC).map_err(io::Error::from)?;
        let writer = Arc::new(Mutex::new(reader.try_clone()?));
        Ok(Channel { reader, writer, decoder: FrameDecoder::new(), buffer: vec![0; 64 * 1024] })
    }

    fn send(&self, message: &Message) -> Result<(), WorkerError> {
        write_frame(&self.writer, message)
    }

    /// The next message, or `None` at the end of the stream between frames.
    fn receive(&mut self) -> Result<Option<Message>, WorkerError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            match self.reader.read(&mut self.buffer) {
                Ok(0) => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
                Ok(n) => self.decoder.push(&self.buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a Heartbeat every `every` from a thread (none if zero) until the
    /// returned sender is dropped or a send fails.
    fn start_heartbeats(&self, every: Duration) -> io::Result<Option<mpsc::Sender<()>>> {
        if every.is_zero() {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let writer = Arc::clone(&self.writer);
        std::thread::Builder::new().name("shoal-heartbeat".into()).spawn(move || {
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let beat = Message::Heartbeat { rss_bytes: resident_bytes().unwrap_or(0) };
                if write_frame(&writer, &beat).is_err() {
                    return;
                }
            }
        })?;
        Ok(Some(stop))
    }
}

fn write_frame(writer: &Mutex<UnixStream>, message: &Message) -> Result<(), WorkerError> {
    let mut frame = Vec::new();
    encode(message, &mut frame)?;
    let mut stream = writer.lock().unwrap_or_else(|e| e.into_inner());
    stream.write_all(&frame)?;
    Ok(())
}

/// This process's resident set size, from `/proc/self/statm`.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}
