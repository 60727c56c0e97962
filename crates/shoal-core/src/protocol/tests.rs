//! Codec tests: golden bytes (the same hex as `docs/protocol.md`, which is checked
//! too), every kind of malformed input, round trips of arbitrary messages, and
//! decoding a stream however it is split.

use proptest::prelude::*;

use super::*;

fn frame(message: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(message, &mut out).unwrap();
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
}

/// Every message the decoder yields from `bytes`, then the end-of-stream check.
fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, ProtocolError> {
    let mut decoder = FrameDecoder::new();
    decoder.push(bytes);
    let mut out = Vec::new();
    while let Some(message) = decoder.next_message()? {
        out.push(message);
    }
    decoder.finish()?;
    Ok(out)
}

/// The one error `bytes` give, as text.
fn error_of(bytes: &[u8]) -> String {
    decode_all(bytes).unwrap_err().to_string()
}

fn golden() -> Vec<(Message, &'static str)> {
    vec![
        (
            Message::Hello { protocol_version: 1, pid: 4242, runtime: "python 3.11.7".into() },
            "1a 00 00 00 01 01 00 00 00 92 10 00 00 0d 00 00 00 70 79 74 68 6f 6e 20 33 2e 31 31 2e 37",
        ),
        (
            Message::Welcome { protocol_version: 1, worker_id: 7, heartbeat_ms: 1000, config: vec![] },
            "15 00 00 00 81 01 00 00 00 07 00 00 00 00 00 00 00 e8 03 00 00 00 00 00 00",
        ),
        (Message::Init { payload: b"init".to_vec() }, "09 00 00 00 82 04 00 00 00 69 6e 69 74"),
        (
            Message::InitDone { ok: true, payload: vec![], traceback: String::new() },
            "0a 00 00 00 02 01 00 00 00 00 00 00 00 00",
        ),
        (
            Message::InitDone {
                ok: false,
                payload: b"E".to_vec(),
                traceback: "OSError: no model\n".into(),
            },
            "1d 00 00 00 02 00 01 00 00 00 45 12 00 00 00 4f 53 45 72 72 6f 72 3a 20 6e 6f 20 6d 6f 64 65 6c 0a",
        ),
        (
            Message::Run { task: 42, attempt: 1, payload: b"ping".to_vec() },
            "15 00 00 00 83 2a 00 00 00 00 00 00 00 01 00 00 00 04 00 00 00 70 69 6e 67",
        ),
        (
            Message::Result {
                task: 42,
                attempt: 1,
                ok: true,
                payload: b"pong".to_vec(),
                traceback: String::new(),
            },
            "1a 00 00 00 03 2a 00 00 00 00 00 00 00 01 00 00 00 01 04 00 00 00 70 6f 6e 67 00 00 00 00",
        ),
        (
            Message::Result {
                task: 42,
                attempt: 2,
                ok: false,
                payload: b"E".to_vec(),
                traceback: "ValueError: bad\n".into(),
            },
            "27 00 00 00 03 2a 00 00 00 00 00 00 00 02 00 00 00 00 01 00 00 00 45 10 00 00 00 56 61 6c 75 65 45 72 72 6f 72 3a 20 62 61 64 0a",
        ),
        (Message::Heartbeat { rss_bytes: 50 << 20 }, "09 00 00 00 04 00 00 20 03 00 00 00 00"),
        (Message::Shutdown, "01 00 00 00 84"),
        (Message::Bye, "01 00 00 00 05"),
    ]
}

#[test]
fn golden_encodings() {
    for (message, bytes) in golden() {
        assert_eq!(hex(&frame(&message)), bytes, "{message:?}");
        assert_eq!(decode_all(&unhex(bytes)).unwrap(), vec![message]);
    }
}

#[test]
fn the_specification_shows_the_golden_encodings() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    let spec = std::fs::read_to_string(&path).unwrap();
    let spec: String = spec.split_whitespace().collect::<Vec<_>>().join(" ");
    for (message, bytes) in golden() {
        assert!(spec.contains(bytes), "docs/protocol.md lacks the frame of {message:?}: {bytes}");
    }
}

#[test]
fn every_kind_is_covered_and_directions_follow_the_high_bit() {
    let kinds: Vec<Kind> = golden().iter().map(|(m, _)| m.kind()).collect();
    for kind in Kind::ALL {
        assert!(kinds.contains(&kind), "{kind:?} has no golden encoding");
        assert_eq!(Kind::from_byte(kind as u8), Some(kind));
        let expected = if (kind as u8) < 0x80 { Peer::Worker } else { Peer::Engine };
        assert_eq!(kind.sender(), expected);
    }
}

#[test]
fn oversized_length_is_refused_from_its_four_bytes() {
    let mut decoder = FrameDecoder::new();
    decoder.push(&[0xff, 0xff, 0xff, 0xff]);
    let err = decoder.next_message().unwrap_err();
    assert_eq!(err.to_string(), "frame length 4294967295 is over the limit of 1073741824 bytes");
    // Nothing is consumed: the same error again, never a panic.
    assert!(matches!(decoder.next_message(), Err(ProtocolError::FrameTooLarge { .. })));

    let mut small = FrameDecoder::with_max_frame_len(16);
    small.push(&unhex("11 00 00 00 83"));
    assert!(matches!(
        small.next_message(),
        Err(ProtocolError::FrameTooLarge { length: 17, max: 16 })
    ));
}

#[test]
fn malformed_frames_name_what_is_wrong_and_where() {
    let cases = [
        ("00 00 00 00", "frame length 0: a frame holds at least its kind byte"),
        ("01 00 00 00 00", "unknown message kind 0x00 at frame byte 4"),
        ("01 00 00 00 06", "unknown message kind 0x06 at frame byte 4"),
        ("01 00 00 00 85", "unknown message kind 0x85 at frame byte 4"),
        ("01 00 00 00 ff", "unknown message kind 0xff at frame byte 4"),
        ("1a 00", "the channel closed inside a frame: 2 of its 5 bytes arrived"),
        ("09 00 00 00 82 04 00", "the channel closed inside a frame: 7 of its 13 bytes arrived"),
        // Hello whose frame ends inside `pid`.
        (
            "07 00 00 00 01 01 00 00 00 92 10",
            "Hello frame: field `pid` at byte 9 is cut short: it needs 4 bytes, 2 remain",
        ),
        // Run whose payload claims 4 GiB inside an 18-byte frame.
        (
            "12 00 00 00 83 2a 00 00 00 00 00 00 00 01 00 00 00 ff ff ff ff 70",
            "Run frame: field `payload` at byte 17 is cut short: it needs 4294967299 bytes, 5 remain",
        ),
        // Hello whose runtime is not UTF-8.
        (
            "0f 00 00 00 01 01 00 00 00 92 10 00 00 02 00 00 00 41 ff",
            "Hello frame: field `runtime` at byte 13 is not valid UTF-8 (first bad byte at frame byte 18)",
        ),
        // Result whose `ok` is 2.
        (
            "1a 00 00 00 03 2a 00 00 00 00 00 00 00 01 00 00 00 02 04 00 00 00 70 6f 6e 67 00 00 00 00",
            "Result frame: field `ok` at byte 17 is 2, not a boolean (0 or 1)",
        ),
        // Result whose traceback is not UTF-8.
        (
            "17 00 00 00 03 2a 00 00 00 00 00 00 00 02 00 00 00 00 00 00 00 00 01 00 00 00 c3",
            "Result frame: field `traceback` at byte 22 is not valid UTF-8 (first bad byte at frame byte 26)",
        ),
        ("02 00 00 00 84 00", "Shutdown frame: 1 unexpected byte(s) after the last field, at byte 5"),
        (
            "0b 00 00 00 04 00 00 20 03 00 00 00 00 01 02",
            "Heartbeat frame: 2 unexpected byte(s) after the last field, at byte 13",
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(error_of(&unhex(bytes)), expected, "input {bytes}");
    }
}

#[test]
fn a_hello_of_another_version_is_refused_by_number_whatever_its_layout() {
    // A version-2 Hello with a longer body than version 1's.
    let bytes = unhex("12 00 00 00 01 02 00 00 00 92 10 00 00 00 00 00 00 ff ff ff ff 00");
    assert_eq!(
        error_of(&bytes),
        "the worker speaks protocol version 2; this engine speaks version 1"
    );
    assert!(matches!(
        decode_all(&unhex("05 00 00 00 01 00 00 00 00")),
        Err(ProtocolError::IncompatibleVersion { worker: 0, engine: 1 })
    ));
}

#[test]
fn a_message_too_large_to_send_is_refused_and_nothing_is_written() {
    // Zeroed memory is mapped lazily: this costs no real memory.
    let payload = vec![0u8; MAX_FRAME_LEN as usize - 4];
    let mut out = b"kept".to_vec();
    let err = encode(&Message::Init { payload }, &mut out).unwrap_err();
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { length, .. } if length == u64::from(MAX_FRAME_LEN) + 1)
    );
    assert_eq!(out, b"kept");
}

/// All golden frames back to back.
fn stream() -> (Vec<u8>, Vec<Message>) {
    let messages: Vec<Message> = golden().into_iter().map(|(m, _)| m).collect();
    (messages.iter().flat_map(frame).collect(), messages)
}

#[test]
fn a_stream_split_at_every_offset_decodes_the_same() {
    let (bytes, messages) = stream();
    for split in 0..=bytes.len() {
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        for part in [&bytes[..split], &bytes[split..]] {
            decoder.push(part);
            while let Some(message) = decoder.next_message().unwrap() {
                got.push(message);
            }
        }
        decoder.finish().unwrap();
        assert_eq!(got, messages, "split at {split}");
    }
}

#[test]
fn a_stream_fed_byte_by_byte_decodes_the_same_and_every_prefix_is_incomplete() {
    let (bytes, messages) = stream();
    let mut decoder = FrameDecoder::new();
    let mut got = Vec::new();
    for byte in &bytes {
        decoder.push(std::slice::from_ref(byte));
        if let Some(message) = decoder.next_message().unwrap() {
            got.push(message);
        }
        assert_eq!(decoder.finish().is_ok(), decoder.buffered() == 0);
    }
    assert_eq!(got, messages);
}

fn blob() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        // Only a Hello of this version decodes (see the test above).
        (any::<u32>(), any::<String>()).prop_map(|(pid, runtime)| Message::Hello {
            protocol_version: PROTOCOL_VERSION,
            pid,
            runtime
        }),
        (any::<u32>(), any::<u64>(), any::<u32>(), blob()).prop_map(
            |(protocol_version, worker_id, heartbeat_ms, config)| Message::Welcome {
                protocol_version,
                worker_id,
                heartbeat_ms,
                config
            }
        ),
        blob().prop_map(|payload| Message::Init { payload }),
        (any::<bool>(), blob(), any::<String>())
            .prop_map(|(ok, payload, traceback)| Message::InitDone { ok, payload, traceback }),
        (any::<u64>(), any::<u32>(), blob()).prop_map(|(task, attempt, payload)| Message::Run {
            task,
            attempt,
            payload
        }),
        (any::<u64>(), any::<u32>(), any::<bool>(), blob(), any::<String>()).prop_map(
            |(task, attempt, ok, payload, traceback)| Message::Result {
                task,
                attempt,
                ok,
                payload,
                traceback
            }
        ),
        any::<u64>().prop_map(|rss_bytes| Message::Heartbeat { rss_bytes }),
        Just(Message::Shutdown),
        Just(Message::Bye),
    ]
}

proptest! {
    #[test]
    fn every_message_round_trips(message in arb_message()) {
        let bytes = frame(&message);
        prop_assert_eq!(bytes.len(), 4 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize);
        prop_assert_eq!(decode_all(&bytes).unwrap(), vec![message]);
    }

    #[test]
    fn a_stream_in_arbitrary_chunks_round_trips(
        messages in prop::collection::vec(arb_message(), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let bytes: Vec<u8> = messages.iter().flat_map(frame).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        cuts.extend([0, bytes.len()]);
        cuts.sort_unstable();
        let mut decoder = FrameDecoder::new();
        let mut got = Vec::new();
        for pair in cuts.windows(2) {
            decoder.push(&bytes[pair[0]..pair[1]]);
            while let Some(message) = decoder.next_message().unwrap() {
                got.push(message);
            }
        }
        decoder.finish().unwrap();
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn a_truncated_frame_is_incomplete_then_an_error_at_the_end(message in arb_message(), cut in any::<prop::sample::Index>()) {
        let bytes = frame(&message);
        let cut = cut.index(bytes.len());
        let mut decoder = FrameDecoder::new();
        decoder.push(&bytes[..cut]);
        prop_assert!(decoder.next_message().unwrap().is_none());
        prop_assert_eq!(decoder.finish().is_err(), cut > 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_all(&bytes);
    }
}
