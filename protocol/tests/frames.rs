//! Server → client frames, both directions.

#![allow(clippy::unwrap_used)]

use bytes::{BufMut, Bytes, BytesMut};
use triage_protocol::frame::{encode_error, encode_message, encode_response, parse_error_text};
use triage_protocol::{
    decode_frame, ErrorCode, Frame, FrameType, Message, MessageId, ProtocolError, CLOSE_WAIT,
    HEARTBEAT, OK,
};

const MAX: u32 = 1024 * 1024;

fn message(body: &'static [u8]) -> Message {
    Message {
        timestamp_ns: 1_700_000_000_000_000_000,
        attempts: 3,
        id: MessageId::from_u64(42),
        body: Bytes::from_static(body),
    }
}

fn every_frame() -> Vec<Frame> {
    vec![
        Frame::Response(Bytes::from_static(OK)),
        Frame::Response(Bytes::from_static(CLOSE_WAIT)),
        Frame::Response(Bytes::from_static(HEARTBEAT)),
        Frame::Response(Bytes::from_static(br#"{"max_rdy_count":2500}"#)),
        Frame::Response(Bytes::new()),
        Frame::Error(Bytes::from_static(b"E_INVALID invalid command X")),
        Frame::Message(message(b"")),
        Frame::Message(message(b"hello")),
    ]
}

fn encode(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out);
    out
}

#[test]
fn exact_wire_forms() {
    let mut out = BytesMut::new();
    encode_response(OK, &mut out);
    assert_eq!(&out[..], b"\0\0\0\x06\0\0\0\0OK");

    let mut out = BytesMut::new();
    encode_error(
        &ProtocolError::new(ErrorCode::BadTopic, "PUB topic name \"x y\" is not valid"),
        &mut out,
    );
    let text = b"E_BAD_TOPIC PUB topic name \"x y\" is not valid";
    assert_eq!(&out[..4], &(4 + text.len() as u32).to_be_bytes());
    assert_eq!(&out[4..8], &1i32.to_be_bytes());
    assert_eq!(&out[8..], text);

    let msg = message(b"hi");
    let mut out = BytesMut::new();
    encode_message(&msg, &mut out);
    assert_eq!(&out[..4], &(4 + 26 + 2u32).to_be_bytes());
    assert_eq!(&out[4..8], &2i32.to_be_bytes());
    let mut payload = BytesMut::new();
    msg.encode(&mut payload);
    assert_eq!(&out[8..], &payload[..]);
}

#[test]
fn frame_type_wire_values() {
    for (t, v) in [
        (FrameType::Response, 0),
        (FrameType::Error, 1),
        (FrameType::Message, 2),
    ] {
        assert_eq!(t as i32, v);
        assert_eq!(FrameType::from_wire(v), Some(t));
    }
    assert_eq!(FrameType::from_wire(3), None);
    assert_eq!(FrameType::from_wire(-1), None);
}

#[test]
fn every_frame_round_trips() {
    for frame in every_frame() {
        let mut buf = encode(&frame);
        assert_eq!(decode_frame(&mut buf, MAX).unwrap(), Some(frame.clone()));
        assert!(buf.is_empty());
    }
}

#[test]
fn every_cut_of_every_frame_waits_for_more() {
    for frame in every_frame() {
        let wire = encode(&frame);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(
                decode_frame(&mut buf, MAX),
                Ok(None),
                "{frame:?} cut at {cut}"
            );
            assert_eq!(buf.len(), cut);
        }
    }
}

#[test]
fn a_stream_of_frames_decodes_in_order() {
    let mut wire = BytesMut::new();
    for frame in every_frame() {
        frame.encode(&mut wire);
    }
    let mut decoded = Vec::new();
    while let Some(frame) = decode_frame(&mut wire, MAX).unwrap() {
        decoded.push(frame);
    }
    assert_eq!(decoded, every_frame());
    assert!(wire.is_empty());
}

#[test]
fn size_is_checked_before_the_data_arrives() {
    for size in [0u32, 1, 3] {
        let e = decode_frame(&mut BytesMut::from(&size.to_be_bytes()[..]), MAX).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadProtocol);
        assert_eq!(e.description, format!("invalid frame size {size}"));
    }
    let e = decode_frame(&mut BytesMut::from(&(MAX + 1).to_be_bytes()[..]), MAX).unwrap_err();
    assert_eq!(e.description, format!("frame too big {} > {MAX}", MAX + 1));
    let e = decode_frame(
        &mut BytesMut::from(&u32::MAX.to_be_bytes()[..]),
        u32::MAX - 1,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadProtocol);
    // Exactly at the limit is fine.
    let mut buf = BytesMut::new();
    encode_response(b"12", &mut buf);
    assert!(decode_frame(&mut buf, 6).unwrap().is_some());
}

#[test]
fn unknown_frame_type_is_an_error_once_its_bytes_arrive() {
    let mut buf = BytesMut::new();
    buf.put_u32(100);
    buf.put_i32(7);
    let e = decode_frame(&mut buf, MAX).unwrap_err();
    assert_eq!(
        (e.code, e.description.as_str()),
        (ErrorCode::BadProtocol, "unknown frame type 7")
    );
}

#[test]
fn short_message_frame_is_bad_message() {
    let mut buf = BytesMut::new();
    buf.put_u32(4 + 25);
    buf.put_i32(2);
    buf.put_slice(&[0u8; 25]);
    let e = decode_frame(&mut buf, MAX).unwrap_err();
    assert_eq!(
        (e.code, e.description.as_str()),
        (ErrorCode::BadMessage, "invalid message buffer size (25)")
    );
    assert_eq!(buf.len(), 8 + 25, "a bad frame must not be consumed");
}

#[test]
fn decoded_data_is_a_slice_of_the_buffer() {
    let mut buf = encode(&Frame::Message(message(b"payload")));
    let range = buf.as_ptr_range();
    let Some(Frame::Message(msg)) = decode_frame(&mut buf, MAX).unwrap() else {
        panic!("not a message")
    };
    assert!(range.contains(&msg.body.as_ptr()));
}

#[test]
fn error_text_parses_back() {
    for code in ErrorCode::ALL {
        let err = ProtocolError::new(code, "some thing failed");
        let mut buf = BytesMut::new();
        encode_error(&err, &mut buf);
        let Some(Frame::Error(text)) = decode_frame(&mut buf, MAX).unwrap() else {
            panic!("not an error")
        };
        assert_eq!(
            parse_error_text(&text),
            Some((code, "some thing failed".to_owned()))
        );
    }
    assert_eq!(
        parse_error_text(b"E_FIN_FAILED"),
        Some((ErrorCode::FinFailed, String::new()))
    );
    assert_eq!(
        parse_error_text(b"E_INVALID "),
        Some((ErrorCode::Invalid, String::new()))
    );
    assert_eq!(
        parse_error_text(b"E_INVALID a  b"),
        Some((ErrorCode::Invalid, "a  b".to_owned()))
    );
    assert_eq!(parse_error_text(b"E_WHAT x"), None);
    assert_eq!(parse_error_text(b""), None);
    assert_eq!(parse_error_text(b" E_INVALID x"), None);
    assert_eq!(parse_error_text(b"\xff x"), None);
}
