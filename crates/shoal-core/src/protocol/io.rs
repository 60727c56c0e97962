//! The codec over tokio streams. [`MessageReader`] is the one to use in a `select!`
//! loop: it is cancel-safe and reads in large chunks. [`read_message`] is the
//! simple form for a sequential reader (a handshake, a test); it is not cancel-safe.
//! [`write_message`] writes and flushes one frame.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::ProtocolError;
use super::frame::{check_kind, check_length, FrameDecoder, HEADER_LEN, MAX_FRAME_LEN};
use super::message::{decode_body, encode, Message};

/// How much a [`MessageReader`] asks the stream for at a time.
const CHUNK: usize = 64 * 1024;

fn io_error(operation: &'static str) -> impl FnOnce(std::io::Error) -> ProtocolError {
    move |source| ProtocolError::Io { operation, source }
}

/// Reads one message. `Ok(None)` when the stream ends cleanly before a frame;
/// [`ProtocolError::ClosedMidFrame`] when it ends inside one. The body is read into
/// a buffer that grows with the bytes received, never ahead of them.
///
/// Not cancel-safe: dropping the future mid-frame loses the bytes already read.
pub async fn read_message<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<Option<Message>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = reader.read(&mut header[got..]).await.map_err(io_error("read"))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(ProtocolError::ClosedMidFrame { received: got, needed: HEADER_LEN as u64 });
        }
        got += n;
        if got >= 4 {
            // Refuse a bad length before waiting for the kind byte.
            check_length(length_field(&header), MAX_FRAME_LEN)?;
        }
    }
    let length = length_field(&header);
    let kind = check_kind(header[4])?;
    let body_len = u64::from(length) - 1;
    let mut body = Vec::new();
    (&mut *reader).take(body_len).read_to_end(&mut body).await.map_err(io_error("read"))?;
    if (body.len() as u64) < body_len {
        return Err(ProtocolError::ClosedMidFrame {
            received: HEADER_LEN + body.len(),
            needed: 4 + u64::from(length),
        });
    }
    decode_body(kind, &body).map(Some)
}

fn length_field(header: &[u8; HEADER_LEN]) -> u32 {
    u32::from_le_bytes([header[0], header[1], header[2], header[3]])
}

/// Encodes `message`, writes its frame and flushes the writer.
pub async fn write_message<W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &Message,
) -> Result<(), ProtocolError> {
    let mut frame = Vec::new();
    encode(message, &mut frame)?;
    writer.write_all(&frame).await.map_err(io_error("write"))?;
    writer.flush().await.map_err(io_error("flush"))
}

/// A buffered, cancel-safe message reader over a stream: bytes read are kept in
/// its [`FrameDecoder`] until they form a message, so a `next` future dropped at
/// any await point loses nothing (given a cancel-safe `read`, as tokio's sockets
/// and pipes have).
#[derive(Debug)]
pub struct MessageReader<R> {
    reader: R,
    decoder: FrameDecoder,
    chunk: Box<[u8]>,
}

impl<R: AsyncRead + Unpin> MessageReader<R> {
    /// A reader accepting frames up to [`MAX_FRAME_LEN`].
    pub fn new(reader: R) -> Self {
        MessageReader::with_decoder(reader, FrameDecoder::new())
    }

    /// A reader using this decoder (e.g. one with a lower frame limit).
    pub fn with_decoder(reader: R, decoder: FrameDecoder) -> Self {
        MessageReader { reader, decoder, chunk: vec![0; CHUNK].into_boxed_slice() }
    }

    /// The next message; `Ok(None)` when the stream ends cleanly between frames.
    pub async fn next(&mut self) -> Result<Option<Message>, ProtocolError> {
        loop {
            if let Some(message) = self.decoder.next_message()? {
                return Ok(Some(message));
            }
            let n = self.reader.read(&mut self.chunk).await.map_err(io_error("read"))?;
            if n == 0 {
                self.decoder.finish()?;
                return Ok(None);
            }
            self.decoder.push(&self.chunk[..n]);
        }
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.reader
    }

    /// The underlying stream; bytes buffered but not yet decoded are dropped.
    pub fn into_inner(self) -> R {
        self.reader
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{duplex, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    fn big_run() -> Message {
        let payload = (0..8usize << 20).map(|i| (i * 31 % 251) as u8).collect();
        Message::Run { task: 9, attempt: 3, payload }
    }

    #[tokio::test]
    async fn an_8_mib_payload_crosses_a_small_duplex_pipe() {
        let (mut a, mut b) = duplex(64 * 1024);
        let sent = big_run();
        let (written, read) = tokio::join!(
            async {
                write_message(&mut a, &sent).await?;
                write_message(&mut a, &Message::Shutdown).await
            },
            async {
                let first = read_message(&mut b).await?;
                Ok::<_, ProtocolError>((first, read_message(&mut b).await?))
            }
        );
        written.unwrap();
        assert_eq!(read.unwrap(), (Some(sent), Some(Message::Shutdown)));
    }

    #[tokio::test]
    async fn a_socketpair_carries_messages_both_ways_then_ends_cleanly() {
        let (mut engine, worker) = UnixStream::pair().unwrap();
        let (worker_read, mut worker_write) = worker.into_split();
        let mut from_engine = MessageReader::new(worker_read);
        let sent = big_run();
        let engine_side = async {
            write_message(&mut engine, &sent).await?;
            let answer = read_message(&mut engine).await?;
            engine.shutdown().await.map_err(io_error("shut down"))?;
            Ok::<_, ProtocolError>(answer)
        };
        let worker_side = async {
            let run = from_engine.next().await?;
            let hello = Message::Hello { protocol_version: 1, pid: 1, runtime: "rust".into() };
            write_message(&mut worker_write, &hello).await?;
            Ok::<_, ProtocolError>((run, from_engine.next().await?))
        };
        let (answer, worker) = tokio::join!(engine_side, worker_side);
        assert!(matches!(answer.unwrap(), Some(Message::Hello { pid: 1, .. })));
        assert_eq!(worker.unwrap(), (Some(sent), None));
    }

    #[tokio::test]
    async fn the_end_of_the_stream_inside_a_frame_is_an_error() {
        for (bytes, received, needed) in
            [(&[0x09, 0x00][..], 2, 5), (&[0x09, 0, 0, 0, 0x82, 4, 0][..], 7, 13)]
        {
            let mut reader = bytes;
            let err = read_message(&mut reader).await.unwrap_err();
            assert!(
                matches!(err, ProtocolError::ClosedMidFrame { received: r, needed: n } if r == received && n == needed),
                "{err}"
            );
            let err = MessageReader::new(bytes).next().await.unwrap_err();
            assert!(matches!(err, ProtocolError::ClosedMidFrame { .. }), "{err}");
        }
        assert!(read_message(&mut &[][..]).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_oversized_header_is_refused_before_its_body_is_read() {
        let mut reader = &[0xff, 0xff, 0xff, 0x7f, 0x83][..];
        let err = read_message(&mut reader).await.unwrap_err();
        assert!(matches!(err, ProtocolError::FrameTooLarge { length: 0x7fff_ffff, .. }), "{err}");
        let mut reader = &[0x01, 0, 0, 0, 0x42][..];
        let err = read_message(&mut reader).await.unwrap_err();
        assert!(matches!(err, ProtocolError::UnknownKind { kind: 0x42 }), "{err}");
    }

    #[tokio::test]
    async fn message_reader_loses_nothing_when_its_future_is_dropped() {
        let (mut engine, worker) = UnixStream::pair().unwrap();
        let mut reader = MessageReader::new(worker);
        let mut bytes = Vec::new();
        encode(&Message::Heartbeat { rss_bytes: 77 }, &mut bytes).unwrap();
        engine.write_all(&bytes[..6]).await.unwrap();
        let timed_out = tokio::time::timeout(Duration::from_millis(20), reader.next()).await;
        assert!(timed_out.is_err(), "half a frame must not make a message");
        engine.write_all(&bytes[6..]).await.unwrap();
        assert_eq!(reader.next().await.unwrap(), Some(Message::Heartbeat { rss_bytes: 77 }));
    }
}
