//! The messages of protocol version [`PROTOCOL_VERSION`], their kind bytes, and the
//! encoder. Field order here is the wire order; `docs/protocol.md` shows each
//! layout byte by byte, and the golden tests check that the two agree.

use std::fmt;

use super::error::ProtocolError;
use super::frame::{HEADER_LEN, MAX_FRAME_LEN};
use super::wire::{bytes_len, put_bool, put_bytes, put_u32, put_u64, BodyReader};
use crate::task::TaskId;

/// The protocol version this engine speaks. Any change to a layout, a kind or a
/// meaning gives a new version; see "Versions" in `docs/protocol.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A side of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The shoal engine, which starts the worker and feeds it tasks.
    Engine,
    /// A worker process.
    Worker,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Engine => "engine",
            Peer::Worker => "worker",
        })
    }
}

/// The kind byte of a frame: `0x01..` for what a worker sends, `0x81..` (high bit
/// set) for what the engine sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// [`Message::Hello`]
    Hello = 0x01,
    /// [`Message::InitDone`]
    InitDone = 0x02,
    /// [`Message::Result`]
    Result = 0x03,
    /// [`Message::Heartbeat`]
    Heartbeat = 0x04,
    /// [`Message::Bye`]
    Bye = 0x05,
    /// [`Message::Welcome`]
    Welcome = 0x81,
    /// [`Message::Init`]
    Init = 0x82,
    /// [`Message::Run`]
    Run = 0x83,
    /// [`Message::Shutdown`]
    Shutdown = 0x84,
}

impl Kind {
    /// Every kind of this version.
    pub const ALL: [Kind; 9] = [
        Kind::Hello,
        Kind::InitDone,
        Kind::Result,
        Kind::Heartbeat,
        Kind::Bye,
        Kind::Welcome,
        Kind::Init,
        Kind::Run,
        Kind::Shutdown,
    ];

    /// The kind a byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    /// The message's name, as in the specification.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hello => "Hello",
            Kind::InitDone => "InitDone",
            Kind::Result => "Result",
            Kind::Heartbeat => "Heartbeat",
            Kind::Bye => "Bye",
            Kind::Welcome => "Welcome",
            Kind::Init => "Init",
            Kind::Run => "Run",
            Kind::Shutdown => "Shutdown",
        }
    }

    /// The side that sends this kind.
    pub fn sender(self) -> Peer {
        if self as u8 & 0x80 == 0 {
            Peer::Worker
        } else {
            Peer::Engine
        }
    }
}

/// One message of the protocol. Payloads are opaque bytes: the front end that made
/// them (the Python package pickles with cloudpickle) is the one that reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Worker → engine, its first frame: who it is and which version it speaks.
    Hello {
        protocol_version: u32,
        /// The worker's process id (informational: the engine signals the pid it spawned).
        pid: u32,
        /// Free text naming the worker's runtime, e.g. `python 3.11.7`.
        runtime: String,
    },
    /// Engine → worker, the answer to a compatible Hello.
    Welcome {
        /// The version both sides now speak.
        protocol_version: u32,
        /// The engine's name for this worker process, unique within a pool.
        worker_id: u64,
        /// Send a Heartbeat every this many milliseconds; 0: send none.
        heartbeat_ms: u32,
        /// Front-end settings for the worker runtime; may be empty.
        config: Vec<u8>,
    },
    /// Engine → worker, at most once and only right after Welcome: run the initializer.
    Init { payload: Vec<u8> },
    /// Worker → engine, the end of Init.
    InitDone {
        /// false: the initializer raised; `payload` is the error, `traceback` its text.
        ok: bool,
        payload: Vec<u8>,
        traceback: String,
    },
    /// Engine → worker: run attempt `attempt` of `task`.
    Run { task: TaskId, attempt: u32, payload: Vec<u8> },
    /// Worker → engine, the end of a Run, in the order the Runs were sent.
    Result {
        task: TaskId,
        attempt: u32,
        /// false: the function raised; `payload` is the exception.
        ok: bool,
        /// The returned value or the exception, as the front end encodes them.
        payload: Vec<u8>,
        /// The formatted remote traceback; empty when `ok`.
        traceback: String,
    },
    /// Worker → engine, every `heartbeat_ms` while alive, idle or busy.
    Heartbeat {
        /// The worker's resident set size now; 0 when unknown.
        rss_bytes: u64,
    },
    /// Engine → worker: finish the Runs already sent, then send Bye and exit 0.
    Shutdown,
    /// Worker → engine, its last frame, after Shutdown.
    Bye,
}

impl Message {
    /// This message's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello { .. } => Kind::Hello,
            Message::Welcome { .. } => Kind::Welcome,
            Message::Init { .. } => Kind::Init,
            Message::InitDone { .. } => Kind::InitDone,
            Message::Run { .. } => Kind::Run,
            Message::Result { .. } => Kind::Result,
            Message::Heartbeat { .. } => Kind::Heartbeat,
            Message::Shutdown => Kind::Shutdown,
            Message::Bye => Kind::Bye,
        }
    }

    /// The size of the body (the bytes after the kind byte).
    fn body_len(&self) -> u64 {
        match self {
            Message::Hello { runtime, .. } => 8 + bytes_len(runtime.as_bytes()),
            Message::Welcome { config, .. } => 16 + bytes_len(config),
            Message::Init { payload } => bytes_len(payload),
            Message::InitDone { payload, traceback, .. } => {
                1 + bytes_len(payload) + bytes_len(traceback.as_bytes())
            }
            Message::Run { payload, .. } => 12 + bytes_len(payload),
            Message::Result { payload, traceback, .. } => {
                13 + bytes_len(payload) + bytes_len(traceback.as_bytes())
            }
            Message::Heartbeat { .. } => 8,
            Message::Shutdown | Message::Bye => 0,
        }
    }
}

/// Appends one frame holding `message` to `out`. A message whose frame would be
/// over [`MAX_FRAME_LEN`] is refused with [`ProtocolError::FrameTooLarge`] and
/// `out` is left as it was.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    let length = 1 + message.body_len();
    if length > u64::from(MAX_FRAME_LEN) {
        return Err(ProtocolError::FrameTooLarge { length, max: MAX_FRAME_LEN });
    }
    out.reserve(HEADER_LEN - 1 + length as usize);
    put_u32(out, length as u32);
    out.push(message.kind() as u8);
    match message {
        Message::Hello { protocol_version, pid, runtime } => {
            put_u32(out, *protocol_version);
            put_u32(out, *pid);
            put_bytes(out, runtime.as_bytes());
        }
        Message::Welcome { protocol_version, worker_id, heartbeat_ms, config } => {
            put_u32(out, *protocol_version);
            put_u64(out, *worker_id);
            put_u32(out, *heartbeat_ms);
            put_bytes(out, config);
        }
        Message::Init { payload } => put_bytes(out, payload),
        Message::InitDone { ok, payload, traceback } => {
            put_bool(out, *ok);
            put_bytes(out, payload);
            put_bytes(out, traceback.as_bytes());
        }
        Message::Run { task, attempt, payload } => {
            put_u64(out, *task);
            put_u32(out, *attempt);
            put_bytes(out, payload);
        }
        Message::Result { task, attempt, ok, payload, traceback } => {
            put_u64(out, *task);
            put_u32(out, *attempt);
            put_bool(out, *ok);
            put_bytes(out, payload);
            put_bytes(out, traceback.as_bytes());
        }
        Message::Heartbeat { rss_bytes } => put_u64(out, *rss_bytes),
        Message::Shutdown | Message::Bye => {}
    }
    Ok(())
}

/// Decodes the body of a whole frame of kind `kind`.
///
/// A Hello of another version is refused with [`ProtocolError::IncompatibleVersion`]
/// whatever follows its version field: that field is all versions have in common.
pub(super) fn decode_body(kind: Kind, body: &[u8]) -> Result<Message, ProtocolError> {
    let mut r = BodyReader::new(kind.name(), body);
    let message = match kind {
        Kind::Hello => {
            let protocol_version = r.u32("protocol_version")?;
            if protocol_version != PROTOCOL_VERSION {
                return Err(ProtocolError::IncompatibleVersion {
                    worker: protocol_version,
                    engine: PROTOCOL_VERSION,
                });
            }
            Message::Hello { protocol_version, pid: r.u32("pid")?, runtime: r.string("runtime")? }
        }
        Kind::Welcome => Message::Welcome {
            protocol_version: r.u32("protocol_version")?,
            worker_id: r.u64("worker_id")?,
            heartbeat_ms: r.u32("heartbeat_ms")?,
            config: r.bytes("config")?,
        },
        Kind::Init => Message::Init { payload: r.bytes("payload")? },
        Kind::InitDone => Message::InitDone {
            ok: r.bool("ok")?,
            payload: r.bytes("payload")?,
            traceback: r.string("traceback")?,
        },
        Kind::Run => Message::Run {
            task: r.u64("task")?,
            attempt: r.u32("attempt")?,
            payload: r.bytes("payload")?,
        },
        Kind::Result => Message::Result {
            task: r.u64("task")?,
            attempt: r.u32("attempt")?,
            ok: r.bool("ok")?,
            payload: r.bytes("payload")?,
            traceback: r.string("traceback")?,
        },
        Kind::Heartbeat => Message::Heartbeat { rss_bytes: r.u64("rss_bytes")? },
        Kind::Shutdown => Message::Shutdown,
        Kind::Bye => Message::Bye,
    };
    r.finish()?;
    Ok(message)
}
