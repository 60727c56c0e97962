//! The field types of a message body, little-endian: `u32`, `u64`, `bool` (one
//! byte, 0 or 1), `bytes` (a `u32` length then that many bytes) and `str` (`bytes`
//! holding UTF-8). Reading checks every length against what the frame holds before
//! touching it, so a lying length can neither panic nor allocate.

use super::error::ProtocolError;
use super::frame::HEADER_LEN;

/// Appends a `u32`.
pub(super) fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `u64`.
pub(super) fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Appends a `bool`.
pub(super) fn put_bool(out: &mut Vec<u8>, value: bool) {
    out.push(u8::from(value));
}

/// Appends a `bytes` (or `str`) field. The caller checked the frame's size first,
/// so the length fits a `u32`.
pub(super) fn put_bytes(out: &mut Vec<u8>, value: &[u8]) {
    put_u32(out, value.len() as u32);
    out.extend_from_slice(value);
}

/// The encoded size of a `bytes` or `str` field.
pub(super) fn bytes_len(value: &[u8]) -> u64 {
    4 + value.len() as u64
}

/// Reads the fields of one body in order, tracking the frame offset for errors.
pub(super) struct BodyReader<'a> {
    message: &'static str,
    body: &'a [u8],
    pos: usize,
}

impl<'a> BodyReader<'a> {
    /// A reader over the body (the bytes after the kind) of a `message` frame.
    pub(super) fn new(message: &'static str, body: &'a [u8]) -> Self {
        BodyReader { message, body, pos: 0 }
    }

    /// The current position as an offset from the frame's first byte.
    fn offset(&self) -> usize {
        HEADER_LEN + self.pos
    }

    /// The next `needed` bytes of the field `field`, which began at frame byte `start`.
    fn take(
        &mut self,
        field: &'static str,
        start: usize,
        needed: u64,
    ) -> Result<&'a [u8], ProtocolError> {
        let rest = &self.body[self.pos..];
        match usize::try_from(needed) {
            Ok(n) if n <= rest.len() => {
                self.pos += n;
                Ok(&rest[..n])
            }
            _ => {
                let consumed = (self.offset() - start) as u64;
                Err(ProtocolError::Truncated {
                    message: self.message,
                    field,
                    offset: start,
                    needed: consumed + needed,
                    available: rest.len() + (self.offset() - start),
                })
            }
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ProtocolError> {
        let start = self.offset();
        let mut array = [0; N];
        array.copy_from_slice(self.take(field, start, N as u64)?);
        Ok(array)
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, ProtocolError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, ProtocolError> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(super) fn bool(&mut self, field: &'static str) -> Result<bool, ProtocolError> {
        let offset = self.offset();
        match self.array::<1>(field)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(ProtocolError::BadBool { message: self.message, field, offset, value }),
        }
    }

    fn slice(&mut self, field: &'static str) -> Result<(usize, &'a [u8]), ProtocolError> {
        let start = self.offset();
        let len = u32::from_le_bytes(self.array(field)?);
        Ok((start, self.take(field, start, u64::from(len))?))
    }

    pub(super) fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, ProtocolError> {
        self.slice(field).map(|(_, bytes)| bytes.to_vec())
    }

    pub(super) fn string(&mut self, field: &'static str) -> Result<String, ProtocolError> {
        let (offset, bytes) = self.slice(field)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(err) => Err(ProtocolError::BadUtf8 {
                message: self.message,
                field,
                offset,
                bad_byte: offset + 4 + err.valid_up_to(),
            }),
        }
    }

    /// Ends the body: every byte must have been read.
    pub(super) fn finish(self) -> Result<(), ProtocolError> {
        let count = self.body.len() - self.pos;
        if count == 0 {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                message: self.message,
                offset: self.offset(),
                count,
            })
        }
    }
}
