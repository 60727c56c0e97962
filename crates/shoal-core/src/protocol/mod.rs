//! The wire protocol between the engine and long-lived worker processes, version
//! [`PROTOCOL_VERSION`]: framed binary messages over a private stream (a socketpair
//! the worker inherits), specified byte by byte in `docs/protocol.md` so a worker
//! can be written in any language.
//!
//! It owns the messages ([`message`]), the framing and the incremental decoder
//! ([`frame`]), the field encoding (`wire`), the tokio helpers ([`io`]) and the
//! engine's check of message order ([`session`]). It must not spawn, signal or time
//! anything, nor look inside payloads: those are the front end's bytes (pickles, for
//! the Python package), carried as they are.

pub mod error;
pub mod frame;
pub mod io;
pub mod message;
pub mod session;
mod wire;

#[cfg(test)]
mod tests;

pub use error::ProtocolError;
pub use frame::{FrameDecoder, HEADER_LEN, MAX_FRAME_LEN};
pub use io::{read_message, write_message, MessageReader};
pub use message::{encode, Kind, Message, Peer, PROTOCOL_VERSION};
pub use session::{Conversation, InitState};
