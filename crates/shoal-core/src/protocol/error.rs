//! The protocol's one error type. Each variant says what was wrong and where: the
//! message kind, the field and its byte offset inside the frame (the frame's first
//! length byte is offset 0), so a broken worker can be debugged from the message.

use std::io;

use super::message::Peer;
use crate::task::TaskId;

/// Everything that can go wrong on a worker channel. After any of these the channel
/// cannot be trusted: the engine kills the worker (see `docs/protocol.md`).
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// A frame's length field is over the limit; also returned by the encoder for a
    /// message too large to send.
    #[error("frame length {length} is over the limit of {max} bytes")]
    FrameTooLarge { length: u64, max: u32 },

    /// A frame's length field is 0: every frame holds at least its kind byte.
    #[error("frame length 0: a frame holds at least its kind byte")]
    EmptyFrame,

    /// The kind byte (frame byte 4) names no message of this protocol version.
    #[error("unknown message kind 0x{kind:02x} at frame byte 4")]
    UnknownKind { kind: u8 },

    /// A field runs past the end of its frame.
    #[error(
        "{message} frame: field `{field}` at byte {offset} is cut short: \
         it needs {needed} bytes, {available} remain"
    )]
    Truncated {
        message: &'static str,
        field: &'static str,
        offset: usize,
        needed: u64,
        available: usize,
    },

    /// A string field is not valid UTF-8.
    #[error(
        "{message} frame: field `{field}` at byte {offset} is not valid UTF-8 \
         (first bad byte at frame byte {bad_byte})"
    )]
    BadUtf8 { message: &'static str, field: &'static str, offset: usize, bad_byte: usize },

    /// A boolean field holds a byte other than 0 or 1.
    #[error(
        "{message} frame: field `{field}` at byte {offset} is {value}, not a boolean (0 or 1)"
    )]
    BadBool { message: &'static str, field: &'static str, offset: usize, value: u8 },

    /// Bytes follow the last field of a message.
    #[error("{message} frame: {count} unexpected byte(s) after the last field, at byte {offset}")]
    TrailingBytes { message: &'static str, offset: usize, count: usize },

    /// The channel ended inside a frame.
    #[error("the channel closed inside a frame: {received} of its {needed} bytes arrived")]
    ClosedMidFrame { received: usize, needed: u64 },

    /// Reading or writing the channel failed.
    #[error("cannot {operation} the worker channel: {source}")]
    Io {
        operation: &'static str,
        #[source]
        source: io::Error,
    },

    /// The worker's Hello names a protocol version this engine does not speak.
    #[error("the worker speaks protocol version {worker}; this engine speaks version {engine}")]
    IncompatibleVersion { worker: u32, engine: u32 },

    /// A message came from, or was about to be sent by, the side that never sends it.
    #[error("{message} is sent only by the {sender}")]
    WrongSender { message: &'static str, sender: Peer },

    /// A message arrived, or was about to be sent, at a point of the conversation
    /// where it is not allowed.
    #[error("{message} is not allowed {state}")]
    OutOfOrder { message: &'static str, state: &'static str },

    /// A Result names another task or attempt than the oldest Run in flight.
    #[error(
        "Result for task {task} attempt {attempt}, but the oldest Run in flight is \
         task {expected_task} attempt {expected_attempt}"
    )]
    ResultMismatch { task: TaskId, attempt: u32, expected_task: TaskId, expected_attempt: u32 },
}

impl ProtocolError {
    /// Whether the channel was cut off (reset by the other end, or ended inside a
    /// frame) rather than carrying something wrong: what a worker's death looks like
    /// from the engine's side, whose cause is then the worker's exit, not this.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtocolError::ClosedMidFrame { .. } => true,
            ProtocolError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
}
