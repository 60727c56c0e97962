//! Framing: every frame is a `u32` little-endian length (of the kind byte and the
//! body, so at least 1), the kind byte, then the body. [`FrameDecoder`] cuts an
//! arbitrary byte stream into messages, however the bytes were split.
//!
//! Memory is bounded: a length over the decoder's limit is refused as soon as its
//! four bytes arrive, nothing is allocated ahead of the bytes that actually came,
//! and a consumed frame's buffer is released once it is large.

use super::error::ProtocolError;
use super::message::{decode_body, Kind, Message};

/// Bytes before the body: the length field (4) and the kind byte (1).
pub const HEADER_LEN: usize = 5;

/// The largest frame length (kind byte plus body) the encoder produces and the
/// decoder accepts by default: 1 GiB.
pub const MAX_FRAME_LEN: u32 = 1 << 30;

/// A decoder keeps this much buffer capacity between frames; more is released.
const KEEP_CAPACITY: usize = 1 << 20;

/// Incremental decoder: [`push`](Self::push) bytes as they arrive, then call
/// [`next_message`](Self::next_message) until it returns `Ok(None)`. Doing so after
/// every push keeps the buffer under one frame plus the last pushed chunk.
///
/// On an error nothing is consumed, so asking again returns the same error: the
/// stream cannot be resynchronised and the channel must be dropped.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the first unconsumed byte of `buf` is.
    start: usize,
    max_frame_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        FrameDecoder::with_max_frame_len(MAX_FRAME_LEN)
    }

    /// A decoder accepting frames whose length field is at most `max_frame_len`
    /// (itself at most [`MAX_FRAME_LEN`]; a larger value is lowered to it).
    pub fn with_max_frame_len(max_frame_len: u32) -> Self {
        FrameDecoder { buf: Vec::new(), start: 0, max_frame_len: max_frame_len.min(MAX_FRAME_LEN) }
    }

    /// Appends bytes received from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet consumed as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next whole message, `Ok(None)` if more bytes are needed first.
    pub fn next_message(&mut self) -> Result<Option<Message>, ProtocolError> {
        let pending = &self.buf[self.start..];
        let Some(length) = pending.first_chunk::<4>() else { return Ok(None) };
        let length = check_length(u32::from_le_bytes(*length), self.max_frame_len)?;
        let Some(&kind) = pending.get(4) else { return Ok(None) };
        let kind = check_kind(kind)?;
        let total = 4 + length as usize;
        let Some(frame) = pending.get(..total) else { return Ok(None) };
        let message = decode_body(kind, &frame[HEADER_LEN..])?;
        self.start += total;
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
        }
        Ok(Some(message))
    }

    /// Call at the end of the stream: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        let pending = &self.buf[self.start..];
        match pending.first_chunk::<4>() {
            None if pending.is_empty() => Ok(()),
            None => Err(ProtocolError::ClosedMidFrame {
                received: pending.len(),
                needed: HEADER_LEN as u64,
            }),
            Some(length) => Err(ProtocolError::ClosedMidFrame {
                received: pending.len(),
                needed: 4 + u64::from(u32::from_le_bytes(*length)),
            }),
        }
    }
}

/// Checks a frame's length field against the limit.
pub(super) fn check_length(length: u32, max: u32) -> Result<u32, ProtocolError> {
    match length {
        0 => Err(ProtocolError::EmptyFrame),
        n if n > max => Err(ProtocolError::FrameTooLarge { length: n.into(), max }),
        n => Ok(n),
    }
}

/// The kind a frame's kind byte names.
pub(super) fn check_kind(byte: u8) -> Result<Kind, ProtocolError> {
    Kind::from_byte(byte).ok_or(ProtocolError::UnknownKind { kind: byte })
}
