//! Command decoding and encoding: round trips, every cut of every encoding,
//! and each error nsqd would send, with its text.

#![allow(clippy::unwrap_used)]

use bytes::{BufMut, Bytes, BytesMut};
use triage_protocol::{
    decode_command, Command, ErrorCode, IdentifyRequest, Limits, MessageId, ProtocolError,
};

fn id(n: u64) -> MessageId {
    MessageId::from_u64(n)
}

fn every_command() -> Vec<Command> {
    vec![
        Command::Identify(IdentifyRequest::default()),
        Command::Identify(IdentifyRequest {
            client_id: "worker-1".into(),
            hostname: "h.example".into(),
            user_agent: "triage/0.1".into(),
            feature_negotiation: true,
            heartbeat_interval: -1,
            output_buffer_size: 16384,
            output_buffer_timeout: 250,
            tls_v1: true,
            snappy: true,
            deflate: false,
            deflate_level: 6,
            sample_rate: 10,
            msg_timeout: 60000,
        }),
        Command::Auth(Bytes::from_static(b"s3cr3t \n with newline")),
        Command::Sub {
            topic: "orders".into(),
            channel: "billing#ephemeral".into(),
        },
        Command::Pub {
            topic: "orders".into(),
            body: Bytes::from_static(b"hello\nworld"),
        },
        Command::Pub {
            topic: "t".into(),
            body: Bytes::from(vec![0u8; 1000]),
        },
        Command::Mpub {
            topic: "orders".into(),
            bodies: vec![Bytes::from_static(b"a")],
        },
        Command::Mpub {
            topic: "orders".into(),
            bodies: vec![
                Bytes::from_static(b"one"),
                Bytes::from_static(b"two two"),
                Bytes::from_static(b"\0"),
            ],
        },
        Command::Dpub {
            topic: "later".into(),
            defer_ms: 0,
            body: Bytes::from_static(b"x"),
        },
        Command::Dpub {
            topic: "later".into(),
            defer_ms: 3_600_000,
            body: Bytes::from_static(b"xyz"),
        },
        Command::Rdy(0),
        Command::Rdy(2500),
        Command::Rdy(u64::MAX),
        Command::Fin(id(1)),
        Command::Req {
            id: id(2),
            timeout_ms: 0,
        },
        Command::Req {
            id: id(3),
            timeout_ms: 1500,
        },
        Command::Req {
            id: id(4),
            timeout_ms: 3_600_000,
        },
        Command::Req {
            id: id(5),
            timeout_ms: i64::MAX,
        },
        Command::Touch(id(u64::MAX)),
        Command::Cls,
        Command::Nop,
        Command::Backpressure(0),
        Command::Backpressure(1),
        Command::Backpressure(2),
    ]
}

fn encode(cmd: &Command) -> BytesMut {
    let mut out = BytesMut::new();
    cmd.encode(&mut out);
    out
}

fn decode_all(wire: &[u8]) -> Result<Option<Command>, ProtocolError> {
    decode_command(&mut BytesMut::from(wire), &Limits::default())
}

fn err(wire: &[u8]) -> ProtocolError {
    match decode_all(wire) {
        Err(e) => e,
        Ok(other) => panic!("{:?} decoded to {other:?}", String::from_utf8_lossy(wire)),
    }
}

fn assert_err(wire: &[u8], code: ErrorCode, text: &str) {
    let e = err(wire);
    assert_eq!(
        (e.code, e.description.as_str()),
        (code, text),
        "{:?}",
        String::from_utf8_lossy(wire)
    );
    assert!(e.is_fatal());
}

/// `[4B len][body]`
fn sized(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn exact_wire_forms() {
    let cases: Vec<(Command, Vec<u8>)> = vec![
        (
            Command::Sub {
                topic: "t".into(),
                channel: "c".into(),
            },
            b"SUB t c\n".to_vec(),
        ),
        (
            Command::Pub {
                topic: "t".into(),
                body: Bytes::from_static(b"hi"),
            },
            cat(&[b"PUB t\n", &sized(b"hi")]),
        ),
        (
            Command::Mpub {
                topic: "t".into(),
                bodies: vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")],
            },
            cat(&[
                b"MPUB t\n",
                &[0, 0, 0, 15],
                &[0, 0, 0, 2],
                &sized(b"a"),
                &sized(b"bc"),
            ]),
        ),
        (
            Command::Dpub {
                topic: "t".into(),
                defer_ms: 250,
                body: Bytes::from_static(b"x"),
            },
            cat(&[b"DPUB t 250\n", &sized(b"x")]),
        ),
        (
            Command::Auth(Bytes::from_static(b"pw")),
            cat(&[b"AUTH\n", &sized(b"pw")]),
        ),
        (Command::Rdy(10), b"RDY 10\n".to_vec()),
        (Command::Fin(id(0xab)), b"FIN 00000000000000ab\n".to_vec()),
        (
            Command::Req {
                id: id(1),
                timeout_ms: 20,
            },
            b"REQ 0000000000000001 20\n".to_vec(),
        ),
        (Command::Touch(id(1)), b"TOUCH 0000000000000001\n".to_vec()),
        (Command::Cls, b"CLS\n".to_vec()),
        (Command::Nop, b"NOP\n".to_vec()),
        (Command::Backpressure(0), b"BACKPRESSURE 0\n".to_vec()),
        (Command::Backpressure(2), b"BACKPRESSURE 2\n".to_vec()),
    ];
    for (cmd, wire) in cases {
        assert_eq!(&encode(&cmd)[..], &wire[..], "{cmd:?}");
    }
    let identify = encode(&Command::Identify(IdentifyRequest::default()));
    assert!(identify.starts_with(b"IDENTIFY\n"));
    let json = &identify[13..];
    assert_eq!(&identify[9..13], &(json.len() as u32).to_be_bytes());
    assert_eq!(
        IdentifyRequest::from_json(json).unwrap(),
        IdentifyRequest::default()
    );
}

#[test]
fn names() {
    let names: Vec<&str> = every_command().iter().map(Command::name).collect();
    for cmd in every_command() {
        assert!(encode(&cmd).starts_with(cmd.name().as_bytes()), "{cmd:?}");
    }
    for name in [
        "IDENTIFY", "AUTH", "SUB", "PUB", "MPUB", "DPUB", "RDY", "FIN", "REQ", "TOUCH", "CLS",
        "NOP",
    ] {
        assert!(names.contains(&name), "{name}");
    }
}

#[test]
fn every_command_round_trips() {
    for cmd in every_command() {
        let mut buf = encode(&cmd);
        assert_eq!(
            decode_command(&mut buf, &Limits::default()).unwrap(),
            Some(cmd.clone())
        );
        assert!(buf.is_empty(), "{cmd:?} left {buf:?}");
    }
}

#[test]
fn every_cut_of_every_command_waits_for_more() {
    let limits = Limits::default();
    for cmd in every_command() {
        let wire = encode(&cmd);
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(
                decode_command(&mut buf, &limits),
                Ok(None),
                "{cmd:?} cut at {cut}"
            );
            assert_eq!(
                &buf[..],
                &wire[..cut],
                "{cmd:?} cut at {cut} consumed input"
            );
        }
    }
}

#[test]
fn a_stream_fed_byte_by_byte_yields_every_command_in_order() {
    let limits = Limits::default();
    let commands = every_command();
    let mut wire = BytesMut::new();
    for cmd in &commands {
        cmd.encode(&mut wire);
    }
    let mut buf = BytesMut::new();
    let mut decoded = Vec::new();
    for &b in wire.iter() {
        buf.put_u8(b);
        while let Some(cmd) = decode_command(&mut buf, &limits).unwrap() {
            decoded.push(cmd);
        }
    }
    assert_eq!(decoded, commands);
    assert!(buf.is_empty());
}

#[test]
fn consumes_exactly_one_command() {
    let mut buf = BytesMut::new();
    Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"abc"),
    }
    .encode(&mut buf);
    buf.put_slice(b"NOP\nFIN 00");
    let limits = Limits::default();
    assert!(matches!(
        decode_command(&mut buf, &limits),
        Ok(Some(Command::Pub { .. }))
    ));
    assert_eq!(decode_command(&mut buf, &limits), Ok(Some(Command::Nop)));
    assert_eq!(decode_command(&mut buf, &limits), Ok(None));
    assert_eq!(&buf[..], b"FIN 00");
}

#[test]
fn bodies_are_slices_of_the_buffer() {
    let wire = encode(&Command::Mpub {
        topic: "t".into(),
        bodies: vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")],
    });
    let mut buf = wire.clone();
    let range = buf.as_ptr_range();
    let Some(Command::Mpub { bodies, .. }) = decode_command(&mut buf, &Limits::default()).unwrap()
    else {
        panic!("not an MPUB");
    };
    for body in &bodies {
        assert!(range.contains(&body.as_ptr()), "MPUB body was copied");
    }
    assert_eq!(bodies, [&b"first"[..], b"second"]);

    let mut buf = encode(&Command::Pub {
        topic: "t".into(),
        body: Bytes::from_static(b"payload"),
    });
    let range = buf.as_ptr_range();
    let Some(Command::Pub { body, .. }) = decode_command(&mut buf, &Limits::default()).unwrap()
    else {
        panic!("not a PUB");
    };
    assert!(range.contains(&body.as_ptr()), "PUB body was copied");
}

#[test]
fn line_endings_and_parameters_like_nsqd() {
    assert_eq!(decode_all(b"NOP\r\n"), Ok(Some(Command::Nop)));
    assert_eq!(decode_all(b"RDY 5\r\n"), Ok(Some(Command::Rdy(5))));
    assert_eq!(
        decode_all(b"SUB t c\r\n"),
        Ok(Some(Command::Sub {
            topic: "t".into(),
            channel: "c".into()
        }))
    );
    // RDY without a count means 1; nsqd's ByteToBase10 reads an empty count as 0.
    assert_eq!(decode_all(b"RDY\n"), Ok(Some(Command::Rdy(1))));
    assert_eq!(decode_all(b"RDY \n"), Ok(Some(Command::Rdy(0))));
    // Extra parameters are ignored, as nsqd ignores them.
    assert_eq!(decode_all(b"NOP x\n"), Ok(Some(Command::Nop)));
    assert_eq!(decode_all(b"CLS x\n"), Ok(Some(Command::Cls)));
    assert_eq!(
        decode_all(b"FIN 0000000000000001 x\n"),
        Ok(Some(Command::Fin(id(1))))
    );
    assert_eq!(
        decode_all(b"SUB t c short long\n"),
        Ok(Some(Command::Sub {
            topic: "t".into(),
            channel: "c".into()
        }))
    );
    // Only one `\r` is stripped; ids are opaque bytes.
    assert_eq!(
        decode_all(b"FIN 0123456789ABCDEF\n"),
        Ok(Some(Command::Fin(MessageId(*b"0123456789ABCDEF"))))
    );
}

#[test]
fn line_errors_come_before_the_body_arrives() {
    assert_err(
        b"PUB  topic\n",
        ErrorCode::BadTopic,
        "PUB topic name \"\" is not valid",
    );
    assert_err(
        b"PUB a\tb\n",
        ErrorCode::BadTopic,
        "PUB topic name \"a\\tb\" is not valid",
    );
    assert_err(
        b"PUB b@d\n",
        ErrorCode::BadTopic,
        "PUB topic name \"b@d\" is not valid",
    );
    assert_err(
        b"MPUB b@d\n",
        ErrorCode::BadTopic,
        "MPUB topic name \"b@d\" is not valid",
    );
    assert_err(
        b"DPUB b@d 10\n",
        ErrorCode::BadTopic,
        "DPUB topic name \"b@d\" is not valid",
    );
    assert_err(
        b"DPUB t soon\n",
        ErrorCode::Invalid,
        "DPUB could not parse timeout soon",
    );
    assert_err(
        b"DPUB t -1\n",
        ErrorCode::Invalid,
        "DPUB could not parse timeout -1",
    );
    assert_err(
        b"AUTH x\n",
        ErrorCode::Invalid,
        "AUTH invalid number of parameters",
    );
    assert_err(
        b"AUTH \n",
        ErrorCode::Invalid,
        "AUTH invalid number of parameters",
    );
}

#[test]
fn unknown_commands() {
    assert_err(b"HELLO\n", ErrorCode::Invalid, "invalid command HELLO");
    assert_err(b"pub t\n", ErrorCode::Invalid, "invalid command pub");
    assert_err(b"\n", ErrorCode::Invalid, "invalid command ");
    assert_err(b"\r\n", ErrorCode::Invalid, "invalid command ");
    assert_err(b" NOP\n", ErrorCode::Invalid, "invalid command ");
    assert_err(b"NOP\r\r\n", ErrorCode::Invalid, "invalid command NOP\r");
    assert_err(b"  V2NOP\n", ErrorCode::Invalid, "invalid command ");
}

#[test]
fn too_few_parameters() {
    assert_err(
        b"SUB\n",
        ErrorCode::Invalid,
        "SUB insufficient number of parameters",
    );
    assert_err(
        b"SUB t\n",
        ErrorCode::Invalid,
        "SUB insufficient number of parameters",
    );
    assert_err(
        b"PUB\n",
        ErrorCode::Invalid,
        "PUB insufficient number of parameters",
    );
    assert_err(
        b"MPUB\n",
        ErrorCode::Invalid,
        "MPUB insufficient number of parameters",
    );
    assert_err(
        b"DPUB t\n",
        ErrorCode::Invalid,
        "DPUB insufficient number of parameters",
    );
    assert_err(
        b"FIN\n",
        ErrorCode::Invalid,
        "FIN insufficient number of params",
    );
    assert_err(
        b"REQ 0000000000000001\n",
        ErrorCode::Invalid,
        "REQ insufficient number of params",
    );
    assert_err(
        b"TOUCH\n",
        ErrorCode::Invalid,
        "TOUCH insufficient number of params",
    );
}

#[test]
fn sub_names() {
    assert_err(
        b"SUB t# c\n",
        ErrorCode::BadTopic,
        "SUB topic name \"t#\" is not valid",
    );
    assert_err(
        b"SUB  c\n",
        ErrorCode::BadTopic,
        "SUB topic name \"\" is not valid",
    );
    assert_err(
        b"SUB t c!\n",
        ErrorCode::BadChannel,
        "SUB channel name \"c!\" is not valid",
    );
    assert_err(
        b"SUB t \n",
        ErrorCode::BadChannel,
        "SUB channel name \"\" is not valid",
    );
    let long = "c".repeat(65);
    assert_err(
        format!("SUB t {long}\n").as_bytes(),
        ErrorCode::BadChannel,
        &format!("SUB channel name \"{long}\" is not valid"),
    );
    assert_err(
        b"SUB \xff c\n",
        ErrorCode::BadTopic,
        "SUB topic name \"\\xff\" is not valid",
    );
}

#[test]
fn numbers() {
    assert_err(
        b"RDY x\n",
        ErrorCode::Invalid,
        "RDY could not parse count x",
    );
    assert_err(
        b"RDY -1\n",
        ErrorCode::Invalid,
        "RDY could not parse count -1",
    );
    assert_err(
        b"RDY 18446744073709551616\n",
        ErrorCode::Invalid,
        "RDY could not parse count 18446744073709551616",
    );
    assert_err(
        b"REQ 0000000000000001 x\n",
        ErrorCode::Invalid,
        "REQ could not parse timeout x",
    );
    assert_err(
        b"REQ 0000000000000001 1.5\n",
        ErrorCode::Invalid,
        "REQ could not parse timeout 1.5",
    );
    assert_eq!(decode_all(b"DPUB t 5\n"), Ok(None));
}

#[test]
fn message_ids_must_be_sixteen_bytes() {
    for line in [
        &b"FIN 000000000000001\n"[..],
        b"FIN 00000000000000001\n",
        b"FIN \n",
        b"FIN 000000000000001\r\n",
        b"TOUCH 1\n",
        b"REQ 1 0\n",
    ] {
        assert_err(line, ErrorCode::Invalid, "invalid message ID");
    }
}

#[test]
fn a_line_without_newline_is_bounded() {
    let limits = Limits {
        max_line_len: 16,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(&b"PUB aaaaaaaaaaa"[..]);
    assert_eq!(decode_command(&mut buf, &limits), Ok(None));
    buf.put_u8(b'a');
    let e = decode_command(&mut buf, &limits).unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid);
    assert_eq!(e.description, "command line longer than 16 bytes");
    // The limit counts the `\n`.
    let mut buf = BytesMut::from(&b"PUB aaaaaaaaaaa\n"[..]);
    assert_eq!(decode_command(&mut buf, &limits), Ok(None));
    // Only the line is bounded, not what follows it.
    let mut buf = BytesMut::from(&b"NOP\nPUB aaaaaaaaaaaaaaaaaaaa"[..]);
    assert_eq!(decode_command(&mut buf, &limits), Ok(Some(Command::Nop)));
    assert!(decode_command(&mut buf, &limits).is_err());
}

fn limits_small() -> Limits {
    Limits {
        max_msg_size: 10,
        max_body_size: 40,
        max_line_len: 1024,
    }
}

fn assert_err_with(limits: &Limits, wire: &[u8], code: ErrorCode, text: &str) {
    let e = decode_command(&mut BytesMut::from(wire), limits).unwrap_err();
    assert_eq!(
        (e.code, e.description.as_str()),
        (code, text),
        "{:?}",
        String::from_utf8_lossy(wire)
    );
}

#[test]
fn pub_and_dpub_body_sizes() {
    let l = limits_small();
    for cmd in ["PUB t\n", "DPUB t 0\n"] {
        let name = cmd.split(' ').next().unwrap();
        let wire = |len: i32| cat(&[cmd.as_bytes(), &len.to_be_bytes()]);
        assert_err_with(
            &l,
            &wire(0),
            ErrorCode::BadMessage,
            &format!("{name} invalid message body size 0"),
        );
        assert_err_with(
            &l,
            &wire(-1),
            ErrorCode::BadMessage,
            &format!("{name} invalid message body size -1"),
        );
        assert_err_with(
            &l,
            &wire(i32::MIN),
            ErrorCode::BadMessage,
            &format!("{name} invalid message body size {}", i32::MIN),
        );
        assert_err_with(
            &l,
            &wire(11),
            ErrorCode::BadMessage,
            &format!("{name} message too big 11 > 10"),
        );
        assert_err_with(
            &l,
            &wire(i32::MAX),
            ErrorCode::BadMessage,
            &format!("{name} message too big {} > 10", i32::MAX),
        );
        // At the limit it is fine, and the body is still awaited.
        assert_eq!(
            decode_command(&mut BytesMut::from(&wire(10)[..]), &l),
            Ok(None)
        );
    }
}

#[test]
fn identify_and_auth_body_sizes() {
    let l = limits_small();
    for name in ["IDENTIFY", "AUTH"] {
        let wire = |len: i32| cat(&[name.as_bytes(), b"\n", &len.to_be_bytes()]);
        assert_err_with(
            &l,
            &wire(0),
            ErrorCode::BadBody,
            &format!("{name} invalid body size 0"),
        );
        assert_err_with(
            &l,
            &wire(-7),
            ErrorCode::BadBody,
            &format!("{name} invalid body size -7"),
        );
        assert_err_with(
            &l,
            &wire(41),
            ErrorCode::BadBody,
            &format!("{name} body too big 41 > 40"),
        );
        assert_eq!(
            decode_command(&mut BytesMut::from(&wire(40)[..]), &l),
            Ok(None)
        );
    }
}

#[test]
fn identify_json() {
    let wire = cat(&[b"IDENTIFY\n", &sized(b"[1,2]")]);
    assert_err(
        &wire,
        ErrorCode::BadBody,
        "IDENTIFY failed to decode JSON body",
    );
    let wire = cat(&[b"IDENTIFY\n", &sized(br#"{"snappy":"yes"}"#)]);
    assert_err(
        &wire,
        ErrorCode::BadBody,
        "IDENTIFY failed to decode JSON body",
    );
    let wire = cat(&[
        b"IDENTIFY\n",
        &sized(br#"{"snappy":true,"short_id":"x"}"#),
        b"NOP\n",
    ]);
    let mut buf = BytesMut::from(&wire[..]);
    let cmd = decode_command(&mut buf, &Limits::default()).unwrap();
    assert_eq!(
        cmd,
        Some(Command::Identify(IdentifyRequest {
            snappy: true,
            ..Default::default()
        }))
    );
    assert_eq!(&buf[..], b"NOP\n");
}

/// MPUB line, body size, then the given body bytes.
fn mpub(body_size: i32, body: &[u8]) -> Vec<u8> {
    cat(&[b"MPUB t\n", &body_size.to_be_bytes(), body])
}

#[test]
fn mpub_body_size_and_count() {
    let l = limits_small();
    assert_err_with(
        &l,
        &mpub(0, b""),
        ErrorCode::BadBody,
        "MPUB invalid body size 0",
    );
    assert_err_with(
        &l,
        &mpub(-1, b""),
        ErrorCode::BadBody,
        "MPUB invalid body size -1",
    );
    assert_err_with(
        &l,
        &mpub(41, b""),
        ErrorCode::BadBody,
        "MPUB body too big 41 > 40",
    );
    assert_err_with(
        &l,
        &mpub(3, b""),
        ErrorCode::BadBody,
        "MPUB body size 3 too small for a message count",
    );
    assert_eq!(
        decode_command(&mut BytesMut::from(&mpub(40, b"\0\0\0")[..]), &l),
        Ok(None)
    );
    // (40 - 4) / 5 = 7 messages at most.
    assert_err_with(
        &l,
        &mpub(40, &0i32.to_be_bytes()),
        ErrorCode::BadBody,
        "MPUB invalid message count 0",
    );
    assert_err_with(
        &l,
        &mpub(40, &(-2i32).to_be_bytes()),
        ErrorCode::BadBody,
        "MPUB invalid message count -2",
    );
    assert_err_with(
        &l,
        &mpub(40, &8i32.to_be_bytes()),
        ErrorCode::BadBody,
        "MPUB invalid message count 8",
    );
    assert_eq!(
        decode_command(&mut BytesMut::from(&mpub(39, &7i32.to_be_bytes())[..]), &l),
        Ok(None)
    );
    // A count the declared body cannot hold is known before the body arrives.
    assert_err_with(
        &l,
        &mpub(13, &3i32.to_be_bytes()),
        ErrorCode::BadBody,
        "MPUB message count 3 does not fit body size 13",
    );
}

#[test]
fn mpub_message_sizes() {
    let l = limits_small();
    let body = cat(&[
        &2i32.to_be_bytes(),
        &sized(b"ok"),
        &0i32.to_be_bytes(),
        b"x",
    ]);
    assert_err_with(
        &l,
        &mpub(body.len() as i32, &body),
        ErrorCode::BadMessage,
        "MPUB invalid message(1) body size 0",
    );
    let body = cat(&[&2i32.to_be_bytes(), &(-3i32).to_be_bytes(), b"xxxxxxx"]);
    assert_err_with(
        &l,
        &mpub(body.len() as i32, &body),
        ErrorCode::BadMessage,
        "MPUB invalid message(0) body size -3",
    );
    let body = cat(&[&1i32.to_be_bytes(), &sized(&[b'x'; 11])]);
    let l2 = Limits {
        max_body_size: 100,
        ..l
    };
    assert_err_with(
        &l2,
        &mpub(body.len() as i32, &body),
        ErrorCode::BadMessage,
        "MPUB message too big 11 > 10",
    );
}

#[test]
fn mpub_messages_must_fill_the_body_exactly() {
    let l = limits_small();
    // Sizes add up to more than the body: known once the body is complete, never waiting for more.
    let body = cat(&[
        &2i32.to_be_bytes(),
        &sized(b"ab"),
        &5i32.to_be_bytes(),
        b"abc",
    ]);
    assert_err_with(
        &l,
        &mpub(body.len() as i32, &body),
        ErrorCode::BadBody,
        "MPUB message(1) runs past body size 17",
    );
    let body = cat(&[&2i32.to_be_bytes(), &sized(b"abcdefgh"), b"\0\0\0"]);
    assert_err_with(
        &l,
        &mpub(body.len() as i32, &body),
        ErrorCode::BadBody,
        "MPUB message(1) runs past body size 19",
    );
    // Sizes add up to less: trailing bytes in the body.
    let body = cat(&[&1i32.to_be_bytes(), &sized(b"ab"), b"zzzzz"]);
    assert_err_with(
        &l,
        &mpub(body.len() as i32, &body),
        ErrorCode::BadBody,
        "MPUB body size 15 has 5 bytes after its 1 messages",
    );
    // And what follows the body is not looked at.
    let body = cat(&[&1i32.to_be_bytes(), &sized(b"ab")]);
    let wire = cat(&[&mpub(body.len() as i32, &body), b"garbage"]);
    let mut buf = BytesMut::from(&wire[..]);
    let cmd = decode_command(&mut buf, &l).unwrap();
    assert_eq!(
        cmd,
        Some(Command::Mpub {
            topic: "t".into(),
            bodies: vec![Bytes::from_static(b"ab")]
        })
    );
    assert_eq!(&buf[..], b"garbage");
}

#[test]
fn errors_leave_the_buffer_alone() {
    let wire = cat(&[b"PUB t\n", &0i32.to_be_bytes()]);
    let mut buf = BytesMut::from(&wire[..]);
    assert!(decode_command(&mut buf, &Limits::default()).is_err());
    assert_eq!(&buf[..], &wire[..]);
}

#[test]
fn mpub_bodies_on_their_own() {
    use triage_protocol::command::decode_mpub_messages;

    let l = limits_small();
    let body = Bytes::from(cat(&[&2i32.to_be_bytes(), &sized(b"one"), &sized(b"two")]));
    let range = body.as_ptr_range();
    let bodies = decode_mpub_messages(body.clone(), &l).unwrap();
    assert_eq!(bodies, [&b"one"[..], b"two"]);
    assert!(
        bodies.iter().all(|b| range.contains(&b.as_ptr())),
        "bodies were copied"
    );

    let check = |body: Vec<u8>, code: ErrorCode, text: &str| {
        let e = decode_mpub_messages(Bytes::from(body), &l).unwrap_err();
        assert_eq!((e.code, e.description.as_str()), (code, text));
    };
    check(vec![], ErrorCode::BadBody, "MPUB invalid body size 0");
    check(
        vec![0, 0, 1],
        ErrorCode::BadBody,
        "MPUB body size 3 too small for a message count",
    );
    check(vec![0; 41], ErrorCode::BadBody, "MPUB body too big 41 > 40");
    check(
        cat(&[&0i32.to_be_bytes(), b"x"]),
        ErrorCode::BadBody,
        "MPUB invalid message count 0",
    );
    check(
        cat(&[&2i32.to_be_bytes(), &sized(b"x")]),
        ErrorCode::BadBody,
        "MPUB message count 2 does not fit body size 9",
    );
    check(
        cat(&[&1i32.to_be_bytes(), &sized(&[b'x'; 11])]),
        ErrorCode::BadMessage,
        "MPUB message too big 11 > 10",
    );
    check(
        cat(&[&1i32.to_be_bytes(), &sized(b"x"), b"yyyyy"]),
        ErrorCode::BadBody,
        "MPUB body size 14 has 5 bytes after its 1 messages",
    );
}

#[test]
fn backpressure_levels() {
    for level in 0..=triage_protocol::MAX_BACKPRESSURE_LEVEL {
        let wire = format!("BACKPRESSURE {level}\n");
        assert_eq!(
            decode_all(wire.as_bytes()),
            Ok(Some(Command::Backpressure(level)))
        );
        let wire = format!("BACKPRESSURE {level}\r\n");
        assert_eq!(
            decode_all(wire.as_bytes()),
            Ok(Some(Command::Backpressure(level)))
        );
    }
    assert_eq!(Command::Backpressure(1).name(), "BACKPRESSURE");
}

#[test]
fn backpressure_refuses_anything_but_one_valid_level() {
    assert_err(
        b"BACKPRESSURE\n",
        ErrorCode::Invalid,
        "BACKPRESSURE missing level (0, 1 or 2)",
    );
    let extra = "BACKPRESSURE takes exactly one parameter, the level (0, 1 or 2)";
    assert_err(b"BACKPRESSURE 1 2\n", ErrorCode::Invalid, extra);
    assert_err(b"BACKPRESSURE 1 \n", ErrorCode::Invalid, extra);
    assert_err(b"BACKPRESSURE  1\n", ErrorCode::Invalid, extra);
    for (bad, shown) in [
        (&b"3"[..], r#""3""#),
        (b"", r#""""#),
        (b"-1", r#""-1""#),
        (b"01", r#""01""#),
        (b"10", r#""10""#),
        (b"one", r#""one""#),
        (b"1\t", r#""1\t""#),
        (b"\xff", r#""\xff""#),
        (b"256", r#""256""#),
    ] {
        let wire = cat(&[b"BACKPRESSURE ", bad, b"\n"]);
        assert_err(
            &wire,
            ErrorCode::Invalid,
            &format!("BACKPRESSURE invalid level {shown} (want 0, 1 or 2)"),
        );
    }
    // Only the exact upper-case name is the extension.
    assert_err(
        b"backpressure 1\n",
        ErrorCode::Invalid,
        "invalid command backpressure",
    );
}

#[test]
fn backpressure_errors_leave_the_buffer_alone() {
    let wire = b"BACKPRESSURE 9\nNOP\n";
    let mut buf = BytesMut::from(&wire[..]);
    assert!(decode_command(&mut buf, &Limits::default()).is_err());
    assert_eq!(&buf[..], &wire[..]);
}
