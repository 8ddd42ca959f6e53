//! Property tests: decoders never panic on arbitrary input and keep their
//! buffer contract, and arbitrary commands, frames and streams round-trip.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use triage_protocol::compress::{
    DeflateDecoder, DeflateEncoder, SnappyDecoder, SnappyEncoder, SNAPPY_STREAM_IDENTIFIER,
};
use triage_protocol::{
    decode_command, decode_frame, Command, Frame, IdentifyRequest, Limits, Message, MessageId,
};

fn small_limits() -> Limits {
    Limits {
        max_msg_size: 64,
        max_body_size: 256,
        max_line_len: 48,
    }
}

/// Decodes everything it can from `bytes`, checking the buffer contract: a
/// decoded command consumes bytes, `None` and errors consume none.
fn decode_stream(bytes: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.clone();
        match decode_command(&mut buf, limits) {
            Ok(Some(_)) => prop_assert!(buf.len() < before.len()),
            Ok(None) => {
                prop_assert_eq!(&buf, &before);
                return Ok(());
            }
            Err(e) => {
                prop_assert_eq!(&buf, &before);
                prop_assert!(e.is_fatal());
                return Ok(());
            }
        }
    }
}

/// Bytes that often look like the start of a command, so the fuzzing reaches
/// past the line into body handling.
fn command_like() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(&b""[..]),
        Just(&b"PUB t\n"[..]),
        Just(&b"DPUB t 10\n"[..]),
        Just(&b"MPUB t\n"[..]),
        Just(&b"MPUB t\n\0\0\0\x14\0\0\0\x02"[..]),
        Just(&b"IDENTIFY\n"[..]),
        Just(&b"AUTH\n"[..]),
        Just(&b"SUB t c\n"[..]),
        Just(&b"FIN "[..]),
        Just(&b"REQ 0000000000000001 "[..]),
        Just(&b"RDY "[..]),
        Just(&b"BACKPRESSURE "[..]),
    ];
    (prefix, vec(any::<u8>(), 0..300)).prop_map(|(p, rest)| [p, &rest[..]].concat())
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[.a-zA-Z0-9_-]{1,64}", "[.a-zA-Z0-9_-]{1,54}#ephemeral"]
}

fn id() -> impl Strategy<Value = MessageId> {
    any::<u64>().prop_map(MessageId::from_u64)
}

fn body() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 1..200).prop_map(Bytes::from)
}

fn identify() -> impl Strategy<Value = IdentifyRequest> {
    (
        (
            any::<String>(),
            any::<String>(),
            any::<String>(),
            any::<bool>(),
        ),
        (any::<i64>(), any::<i64>(), any::<i64>()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<i64>(), any::<i64>(), any::<i64>()),
    )
        .prop_map(|(strings, buffers, features, numbers)| IdentifyRequest {
            client_id: strings.0,
            hostname: strings.1,
            user_agent: strings.2,
            feature_negotiation: strings.3,
            heartbeat_interval: buffers.0,
            output_buffer_size: buffers.1,
            output_buffer_timeout: buffers.2,
            tls_v1: features.0,
            snappy: features.1,
            deflate: features.2,
            deflate_level: numbers.0,
            sample_rate: numbers.1,
            msg_timeout: numbers.2,
        })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        identify().prop_map(Command::Identify),
        body().prop_map(Command::Auth),
        (name(), name()).prop_map(|(topic, channel)| Command::Sub { topic, channel }),
        (name(), body()).prop_map(|(topic, body)| Command::Pub { topic, body }),
        (name(), vec(body(), 1..8)).prop_map(|(topic, bodies)| Command::Mpub { topic, bodies }),
        (name(), any::<u64>(), body()).prop_map(|(topic, defer_ms, body)| Command::Dpub {
            topic,
            defer_ms,
            body
        }),
        any::<u64>().prop_map(Command::Rdy),
        id().prop_map(Command::Fin),
        (id(), 0..=i64::MAX).prop_map(|(id, timeout_ms)| Command::Req { id, timeout_ms }),
        id().prop_map(Command::Touch),
        Just(Command::Cls),
        Just(Command::Nop),
        (0..=triage_protocol::MAX_BACKPRESSURE_LEVEL).prop_map(Command::Backpressure),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        vec(any::<u8>(), 0..100).prop_map(|d| Frame::Response(Bytes::from(d))),
        vec(any::<u8>(), 0..100).prop_map(|d| Frame::Error(Bytes::from(d))),
        (
            any::<i64>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            vec(any::<u8>(), 0..100)
        )
            .prop_map(|(ts, attempts, id, b)| {
                Frame::Message(Message {
                    timestamp_ns: ts,
                    attempts,
                    id: MessageId(id),
                    body: Bytes::from(b),
                })
            }),
    ]
}

proptest! {
    #[test]
    fn decode_command_survives_random_bytes(bytes in vec(any::<u8>(), 0..400)) {
        decode_stream(&bytes, &Limits::default())?;
        decode_stream(&bytes, &small_limits())?;
    }

    #[test]
    fn decode_command_survives_command_like_bytes(bytes in command_like()) {
        decode_stream(&bytes, &Limits::default())?;
        decode_stream(&bytes, &small_limits())?;
    }

    #[test]
    fn mpub_bodies_decode_alike_over_tcp_and_on_their_own(
        count in 0i32..6,
        sizes in vec(-1i32..12, 0..6),
        tail in vec(any::<u8>(), 0..40),
    ) {
        let mut body = count.to_be_bytes().to_vec();
        for size in sizes {
            body.extend_from_slice(&size.to_be_bytes());
            body.extend(std::iter::repeat_n(b'm', size.max(0) as usize));
        }
        body.extend_from_slice(&tail);
        let limits = small_limits();
        let alone = triage_protocol::command::decode_mpub_messages(Bytes::from(body.clone()), &limits);
        let mut wire = BytesMut::from(&b"MPUB t\n"[..]);
        wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
        wire.extend_from_slice(&body);
        let over_tcp = decode_command(&mut wire, &limits).map(|cmd| match cmd {
            Some(Command::Mpub { bodies, .. }) => bodies,
            other => panic!("{other:?}"),
        });
        prop_assert_eq!(alone, over_tcp);
    }

    #[test]
    fn decode_frame_survives_random_bytes(bytes in vec(any::<u8>(), 0..200), max in any::<u32>()) {
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            let before = buf.len();
            match decode_frame(&mut buf, max) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) | Err(_) => {
                    prop_assert_eq!(buf.len(), before);
                    break;
                }
            }
        }
    }

    #[test]
    fn message_decode_survives_random_bytes(bytes in vec(any::<u8>(), 0..100)) {
        match Message::decode(Bytes::from(bytes.clone())) {
            Ok(msg) => {
                prop_assert!(bytes.len() >= 26);
                prop_assert_eq!(&msg.body[..], &bytes[26..]);
            }
            Err(_) => prop_assert!(bytes.len() < 26),
        }
    }

    #[test]
    fn snappy_decoder_survives_random_bytes(bytes in vec(any::<u8>(), 0..400), with_identifier in any::<bool>()) {
        let mut wire = if with_identifier { SNAPPY_STREAM_IDENTIFIER.to_vec() } else { Vec::new() };
        wire.extend_from_slice(&bytes);
        let mut input = BytesMut::from(&wire[..]);
        let mut out = BytesMut::new();
        if SnappyDecoder::new().decode(&mut input, &mut out, 1 << 16).is_ok() {
            prop_assert!(input.len() <= wire.len());
        }
    }

    #[test]
    fn deflate_decoder_survives_random_bytes(bytes in vec(any::<u8>(), 0..400), max_out in 0usize..5000) {
        let mut input = BytesMut::from(&bytes[..]);
        let mut out = BytesMut::new();
        if DeflateDecoder::new().decode(&mut input, &mut out, max_out).is_ok() {
            prop_assert!(out.len() <= max_out);
        }
    }

    #[test]
    fn commands_round_trip(cmd in command()) {
        let mut wire = BytesMut::new();
        cmd.encode(&mut wire);
        let limits = Limits::default();
        let mut buf = wire.clone();
        prop_assert_eq!(decode_command(&mut buf, &limits), Ok(Some(cmd.clone())));
        prop_assert!(buf.is_empty());
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(decode_command(&mut buf, &limits), Ok(None), "cut at {}", cut);
        }
    }

    #[test]
    fn command_sequences_round_trip(cmds in vec(command(), 1..6), chunk in 1usize..64) {
        let mut wire = BytesMut::new();
        for cmd in &cmds {
            cmd.encode(&mut wire);
        }
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(cmd) = decode_command(&mut buf, &limits).map_err(|e| TestCaseError::fail(e.to_string()))? {
                decoded.push(cmd);
            }
        }
        prop_assert_eq!(decoded, cmds);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frames_round_trip(frame in frame()) {
        let mut wire = BytesMut::new();
        frame.encode(&mut wire);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            prop_assert_eq!(decode_frame(&mut buf, u32::MAX), Ok(None));
        }
        prop_assert_eq!(decode_frame(&mut wire, u32::MAX), Ok(Some(frame)));
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn message_ids_round_trip(n in any::<u64>()) {
        let id = MessageId::from_u64(n);
        prop_assert!(id.as_bytes().iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        prop_assert_eq!(id.to_u64(), Some(n));
        prop_assert_eq!(MessageId(id.as_bytes().to_ascii_uppercase().try_into().unwrap()).to_u64(), Some(n));
    }

    #[test]
    fn snappy_round_trips(batches in vec(vec(any::<u8>(), 0..3000), 1..4), chunk in 1usize..500) {
        let mut encoder = SnappyEncoder::new();
        let mut wire = BytesMut::new();
        for batch in &batches {
            encoder.encode(batch, &mut wire);
        }
        let mut decoder = SnappyDecoder::new();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            decoder.decode(&mut input, &mut out, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(out.to_vec(), batches.concat());
        prop_assert!(input.is_empty());
    }

    #[test]
    fn deflate_round_trips(batches in vec(vec(0u8..4, 0..3000), 1..4), level in 0u32..10, chunk in 1usize..500) {
        let mut encoder = DeflateEncoder::new(level);
        let mut wire = BytesMut::new();
        for batch in &batches {
            encoder.encode(batch, &mut wire);
        }
        let mut decoder = DeflateDecoder::new();
        let (mut input, mut out) = (BytesMut::new(), BytesMut::new());
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            decoder.decode(&mut input, &mut out, usize::MAX).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(out.to_vec(), batches.concat());
    }
}
