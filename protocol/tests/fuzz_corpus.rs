//! The fuzz targets' checks on stable Rust: every committed seed in
//! `fuzz/corpus/<target>/` is replayed through the same invariants libFuzzer
//! asserts (`fuzz/src/checks.rs`, included here by path), and a short proptest
//! run feeds them random inputs, so CI exercises what `cargo fuzz` does at
//! length. docs/fuzzing.md says how to run the real fuzzers.
//!
//! The seeds are written by `write_seed_corpus` below (ignored: it writes
//! into the source tree); run it after changing the seeds and commit the files.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/src/checks.rs"]
mod checks;

use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use triage_protocol::compress::{DeflateEncoder, SnappyEncoder};
use triage_protocol::frame::{encode_error, encode_response};
use triage_protocol::{
    Command, ErrorCode, Frame, IdentifyRequest, Message, MessageId, ProtocolError,
};

/// A fuzz target's check: panics when an invariant breaks.
type Check = fn(&[u8]);

/// Each fuzz target and the check it runs.
const TARGETS: [(&str, Check); 5] = [
    ("command_decoder", checks::command_stream),
    ("frame_decoder", checks::frame_stream),
    ("identify_json", checks::identify_json),
    ("snappy_decoder", checks::snappy_stream),
    ("deflate_decoder", checks::deflate_stream),
];

fn corpus_dir(target: &str) -> PathBuf {
    manifest_dir().join("../fuzz/corpus").join(target)
}

#[test]
fn committed_corpus_passes_every_check() {
    for (target, check) in TARGETS {
        let dir = corpus_dir(target);
        let mut seeds = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{} fails its check", path.display());
            seeds += 1;
        }
        assert!(
            seeds >= 20,
            "{target}: only {seeds} seeds in {}",
            dir.display()
        );
    }
}

#[test]
fn committed_corpus_matches_the_seed_list() {
    for (target, seeds) in seeds() {
        for (name, data) in seeds {
            let path = corpus_dir(target).join(&name);
            let committed = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run write_seed_corpus", path.display()));
            assert_eq!(
                committed,
                data,
                "{} is stale; run write_seed_corpus",
                path.display()
            );
        }
    }
}

/// `cargo test -p triage-protocol --test fuzz_corpus -- --ignored write_seed_corpus`
#[test]
#[ignore = "writes fuzz/corpus/ in the source tree; run by hand after changing the seeds"]
fn write_seed_corpus() {
    for (target, seeds) in seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn checks_hold_for_random_command_streams(
        selector in any::<u8>(),
        cut in any::<u8>(),
        prefix in 0usize..VALID_COMMANDS.len(),
        keep in 0usize..300,
        tail in vec(any::<u8>(), 0..200),
    ) {
        // Part of a valid command first, so the random tail often lands in a body.
        let mut data = vec![selector, cut];
        data.extend(encoded(&valid_commands()[prefix]));
        data.truncate(2 + keep);
        data.extend(&tail);
        checks::command_stream(&data);
    }

    #[test]
    fn checks_hold_for_random_frames(data in vec(any::<u8>(), 0..300)) {
        checks::frame_stream(&data);
    }

    #[test]
    fn checks_hold_for_random_identify_bodies(data in vec(any::<u8>(), 0..200)) {
        checks::identify_json(&data);
    }

    #[test]
    fn checks_hold_for_random_compressed_streams(data in vec(any::<u8>(), 0..600)) {
        checks::snappy_stream(&data);
        checks::deflate_stream(&data);
    }
}

// ------------------------------------------------------------------ seeds

/// Named seed inputs per target.
type Seeds = Vec<(String, Vec<u8>)>;

fn seeds() -> Vec<(&'static str, Seeds)> {
    vec![
        ("command_decoder", command_seeds()),
        ("frame_decoder", frame_seeds()),
        ("identify_json", identify_seeds()),
        ("snappy_decoder", snappy_seeds()),
        ("deflate_decoder", deflate_seeds()),
    ]
}

/// Selector for nsqd's default limits in `checks::command_stream`; 0x00..0x7f pick small ones.
const DEFAULT_LIMITS: u8 = 0x80;

/// The names of [`valid_commands`]' entries, in order.
const VALID_COMMANDS: [&str; 17] = [
    "identify_empty",
    "identify_go_nsq",
    "identify_snappy",
    "auth",
    "sub",
    "sub_ephemeral",
    "pub",
    "mpub",
    "dpub",
    "rdy",
    "fin",
    "req",
    "touch",
    "cls",
    "nop",
    "backpressure",
    "pub_binary",
];

/// Every command in a valid form, named as in [`VALID_COMMANDS`].
fn valid_commands() -> Vec<Command> {
    let id = MessageId::from_u64(0x1234_5678_9abc);
    let go_nsq = IdentifyRequest {
        client_id: "worker".into(),
        hostname: "box.example".into(),
        user_agent: "go-nsq/1.1.0".into(),
        feature_negotiation: true,
        heartbeat_interval: 30_000,
        output_buffer_size: 16_384,
        output_buffer_timeout: 250,
        deflate_level: 6,
        ..IdentifyRequest::default()
    };
    let commands = vec![
        Command::Identify(IdentifyRequest::default()),
        Command::Identify(go_nsq),
        Command::Identify(IdentifyRequest {
            feature_negotiation: true,
            snappy: true,
            ..IdentifyRequest::default()
        }),
        Command::Auth(Bytes::from_static(b"secret-token")),
        Command::Sub {
            topic: "tickets".into(),
            channel: "billing".into(),
        },
        Command::Sub {
            topic: "t#ephemeral".into(),
            channel: "c.-_9#ephemeral".into(),
        },
        Command::Pub {
            topic: "tickets".into(),
            body: Bytes::from_static(b"{\"ticket\":42}"),
        },
        Command::Mpub {
            topic: "tickets".into(),
            bodies: vec![
                Bytes::from_static(b"one"),
                Bytes::from_static(b"two"),
                Bytes::from_static(b"three"),
            ],
        },
        Command::Dpub {
            topic: "tickets".into(),
            defer_ms: 1500,
            body: Bytes::from_static(b"later"),
        },
        Command::Rdy(2500),
        Command::Fin(id),
        Command::Req {
            id,
            timeout_ms: 250,
        },
        Command::Touch(id),
        Command::Cls,
        Command::Nop,
        Command::Backpressure(1),
        Command::Pub {
            topic: "bin".into(),
            body: Bytes::from_static(b"\x00\n\xff\r\n\x00\x00\x00\x01"),
        },
    ];
    assert_eq!(commands.len(), VALID_COMMANDS.len());
    commands
}

fn encoded(command: &Command) -> Vec<u8> {
    let mut out = BytesMut::new();
    command.encode(&mut out);
    out.to_vec()
}

fn with_selectors(selector: u8, cut: u8, stream: &[u8]) -> Vec<u8> {
    [&[selector, cut][..], stream].concat()
}

/// `[4B size][body]`.
fn sized(body: &[u8]) -> Vec<u8> {
    [&(body.len() as u32).to_be_bytes()[..], body].concat()
}

fn command_seeds() -> Seeds {
    let mut seeds: Seeds = Vec::new();
    let valid = valid_commands();
    for (name, command) in VALID_COMMANDS.iter().zip(&valid) {
        seeds.push((
            format!("valid_{name}"),
            with_selectors(DEFAULT_LIMITS, 0, &encoded(command)),
        ));
    }
    // A whole session in one stream, cut into 3-byte pieces.
    let session: Vec<u8> = valid.iter().flat_map(encoded).collect();
    seeds.push((
        "session".into(),
        with_selectors(DEFAULT_LIMITS, 2, &session),
    ));
    // Small limits: bodies at and over them.
    seeds.push((
        "small_pub".into(),
        with_selectors(0x05, 1, &encoded(&valid[6])),
    ));
    seeds.push((
        "small_mpub".into(),
        with_selectors(0x23, 7, &encoded(&valid[7])),
    ));
    seeds.push((
        "small_identify".into(),
        with_selectors(0x11, 4, &encoded(&valid[1])),
    ));
    let raw: [(&str, Vec<u8>); 22] = [
        ("crlf", b"NOP\r\nRDY 1\r\n".to_vec()),
        ("rdy_bare", b"RDY\n".to_vec()),
        ("rdy_negative", b"RDY -1\n".to_vec()),
        ("rdy_huge", b"RDY 99999999999999999999999\n".to_vec()),
        ("req_negative", b"REQ 0000000000000001 -1\n".to_vec()),
        ("req_word", b"REQ 0000000000000001 soon\n".to_vec()),
        ("fin_short_id", b"FIN 000000000000001\n".to_vec()),
        ("touch_long_id", b"TOUCH 00000000000000001\n".to_vec()),
        (
            "dpub_huge",
            [&b"DPUB t 18446744073709551616\n"[..], &sized(b"x")].concat(),
        ),
        ("bad_topic", [&b"PUB a/b\n"[..], &sized(b"x")].concat()),
        (
            "long_topic",
            format!("SUB {} c\n", "t".repeat(65)).into_bytes(),
        ),
        ("bad_channel", b"SUB t c#ephemeralx\n".to_vec()),
        (
            "pub_size_zero",
            [&b"PUB t\n"[..], &0u32.to_be_bytes()[..]].concat(),
        ),
        (
            "pub_size_4gib",
            [&b"PUB t\n"[..], &u32::MAX.to_be_bytes()[..]].concat(),
        ),
        (
            "pub_short_body",
            [&b"PUB t\n"[..], &10u32.to_be_bytes()[..], b"abc"].concat(),
        ),
        (
            "mpub_count_lies",
            [&b"MPUB t\n"[..], &sized(&[0, 0, 0, 3, 0, 0, 0, 1, b'x'])].concat(),
        ),
        (
            "mpub_leftover",
            [
                &b"MPUB t\n"[..],
                &sized(&[0, 0, 0, 1, 0, 0, 0, 1, b'x', b'y']),
            ]
            .concat(),
        ),
        (
            "identify_not_json",
            [&b"IDENTIFY\n"[..], &sized(b"{nope")].concat(),
        ),
        (
            "auth_empty",
            [&b"AUTH\n"[..], &0u32.to_be_bytes()[..]].concat(),
        ),
        ("unknown", b"FOO bar\n".to_vec()),
        ("backpressure_bad", b"BACKPRESSURE 3\n".to_vec()),
        ("garbage", vec![0xff, 0x00, b'P', b'U', 0x80, b'\n', 0x7f]),
    ];
    for (name, stream) in raw {
        seeds.push((name.to_owned(), with_selectors(DEFAULT_LIMITS, 5, &stream)));
    }
    seeds.push(("no_newline".into(), with_selectors(0x00, 9, &[b'A'; 40])));
    seeds
}

fn frame_seeds() -> Seeds {
    // Selector 4 (`u32::MAX` limit) cut into 1-byte pieces; 3 is a 1024-byte limit.
    let mut frames: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut push = |name, frame: Frame| {
        let mut out = BytesMut::new();
        frame.encode(&mut out);
        frames.push((name, out.to_vec()));
    };
    push("ok", Frame::Response(Bytes::from_static(b"OK")));
    push(
        "heartbeat",
        Frame::Response(Bytes::from_static(b"_heartbeat_")),
    );
    push(
        "close_wait",
        Frame::Response(Bytes::from_static(b"CLOSE_WAIT")),
    );
    push(
        "identify_reply",
        Frame::Response(Bytes::from_static(
            br#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}"#,
        )),
    );
    push("empty_response", Frame::Response(Bytes::new()));
    push(
        "message",
        Frame::Message(Message {
            timestamp_ns: 1_733_328_000_000_000_000,
            attempts: 1,
            id: MessageId::from_u64(7),
            body: Bytes::from_static(b"hello"),
        }),
    );
    push(
        "message_empty_body",
        Frame::Message(Message {
            timestamp_ns: -1,
            attempts: u16::MAX,
            id: MessageId([0xff; 16]),
            body: Bytes::new(),
        }),
    );
    let mut seeds: Seeds = frames
        .iter()
        .map(|(name, wire)| (format!("valid_{name}"), [&[4u8][..], wire].concat()))
        .collect();
    let mut error = BytesMut::new();
    encode_error(
        &ProtocolError::new(ErrorCode::BadTopic, "PUB topic name \"x y\" is not valid"),
        &mut error,
    );
    seeds.push(("valid_error".into(), [&[4u8][..], &error].concat()));
    let mut fin_failed = BytesMut::new();
    encode_error(
        &ProtocolError::new(ErrorCode::FinFailed, "FIN 0000000000000001 failed"),
        &mut fin_failed,
    );
    seeds.push((
        "valid_fin_failed".into(),
        [&[3u8][..], &fin_failed].concat(),
    ));
    let all: Vec<u8> = frames.iter().flat_map(|(_, w)| w.clone()).collect();
    seeds.push(("all_in_pieces".into(), [&[4u8 + 5 * 2][..], &all].concat()));
    let mut bare_code = BytesMut::new();
    encode_response(b"E_INVALID", &mut bare_code);
    // From the first fuzz run: an error text that is not UTF-8 (the check
    // wrongly assumed the lossy description could not be longer).
    let not_utf8: &[u8] = b"E_BAD_TOPIC PUB \x8c\x90\xff\xff name";
    let raw: [(&str, Vec<u8>); 10] = [
        (
            "error_not_utf8",
            [
                &(not_utf8.len() as u32 + 4).to_be_bytes()[..],
                &[0, 0, 0, 1],
                not_utf8,
            ]
            .concat(),
        ),
        ("size_zero", vec![0, 0, 0, 0, 0, 0, 0, 0]),
        ("size_three", vec![0, 0, 0, 3, 0, 0, 0]),
        ("size_4gib", vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ("unknown_type", vec![0, 0, 0, 6, 0, 0, 0, 9, b'h', b'i']),
        ("short_message", vec![0, 0, 0, 8, 0, 0, 0, 2, 1, 2, 3, 4]),
        ("truncated", vec![0, 0, 0, 20, 0, 0, 0, 0, b'O', b'K']),
        (
            "error_unknown_code",
            [&[0, 0, 0, 10, 0, 0, 0, 1][..], b"E_NOPE"].concat(),
        ),
        (
            "error_bare_code",
            [&[0, 0, 0, 13, 0, 0, 0, 1][..], b"E_INVALID"].concat(),
        ),
        ("response_bare_code", bare_code.to_vec()),
    ];
    for (name, wire) in raw {
        seeds.push((name.to_owned(), [&[4u8][..], &wire].concat()));
    }
    // The same frames under small limits.
    for limit in 0..3u8 {
        seeds.push((
            format!("limit_{limit}_ok"),
            [&[limit][..], &frames[0].1].concat(),
        ));
    }
    seeds
}

fn identify_seeds() -> Seeds {
    let mut jsons: Vec<(&str, String)> = vec![
        (
            "go_nsq",
            r#"{"client_id":"c","hostname":"h.example","user_agent":"go-nsq/1.1.0","short_id":"c","long_id":"h.example","tls_v1":false,"deflate":true,"deflate_level":6,"snappy":false,"feature_negotiation":true,"heartbeat_interval":30000,"sample_rate":0,"output_buffer_size":16384,"output_buffer_timeout":250,"msg_timeout":0,"topology_region":"","topology_zone":""}"#.into(),
        ),
        (
            "pynsq",
            r#"{"short_id":"h","long_id":"h.example","client_id":"h","hostname":"h.example","heartbeat_interval":30000,"feature_negotiation":true,"tls_v1":false,"snappy":true,"deflate":false,"deflate_level":6,"output_buffer_timeout":250,"output_buffer_size":16384,"sample_rate":0,"user_agent":"pynsq/0.9.1","msg_timeout":60000}"#.into(),
        ),
        (
            "tokio_nsq",
            r#"{"client_id":"x","hostname":"y","user_agent":"tokio_nsq","feature_negotiation":true,"tls_v1":false,"deflate":false,"snappy":false,"sample_rate":0}"#.into(),
        ),
        ("empty_object", "{}".into()),
        ("negatives", r#"{"heartbeat_interval":-1,"output_buffer_size":-1,"output_buffer_timeout":-1}"#.into()),
        ("mixed_case", r#"{"Feature_Negotiation":true,"HOSTNAME":"x","Snappy":true}"#.into()),
        ("nulls", r#"{"client_id":null,"snappy":null,"msg_timeout":null}"#.into()),
        ("duplicate_keys", r#"{"snappy":true,"snappy":false}"#.into()),
        ("unicode", r#"{"client_id":"ä\u00e4\ud83d\ude00","hostname":"\t\n"}"#.into()),
        ("lone_surrogate", r#"{"client_id":"\ud800"}"#.into()),
        ("nested_unknown", r#"{"x":{"y":[1,2,{"z":null}]},"client_id":"c"}"#.into()),
        ("whitespace", " \n\t{ \"snappy\" : true } \r\n".into()),
        ("i64_max", format!("{{\"msg_timeout\":{}}}", i64::MAX)),
        ("i64_min", format!("{{\"msg_timeout\":{}}}", i64::MIN)),
    ];
    let bad: [(&str, &str); 12] = [
        ("not_object", "[]"),
        ("null", "null"),
        ("number", "1"),
        ("truncated", "{\"client_id\":\"c"),
        ("wrong_type_string", "{\"client_id\":1}"),
        ("wrong_type_bool", "{\"snappy\":\"true\"}"),
        ("fraction", "{\"heartbeat_interval\":1.5}"),
        ("exponent", "{\"heartbeat_interval\":1e3}"),
        ("overflow", "{\"msg_timeout\":18446744073709551615}"),
        ("trailing", "{} trailing"),
        (
            "deep",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ),
        ("bad_escape", "{\"client_id\":\"\\x\"}"),
    ];
    jsons.extend(bad.iter().map(|(n, j)| (*n, (*j).to_owned())));
    let mut seeds: Seeds = jsons
        .into_iter()
        .map(|(name, json)| (name.to_owned(), json.into_bytes()))
        .collect();
    seeds.push((
        "invalid_utf8".into(),
        b"{\"client_id\":\"\xff\xfe\"}".to_vec(),
    ));
    seeds
}

/// `checks::compress_case` reads `[mode][size][input]`: mode bit 0 = round
/// trip, bit 1 = prepend the snappy stream identifier, mode >> 2 = piece size
/// (and deflate level); max_out = 1 + size * 37.
fn compress_seed(mode: u8, size: u8, input: &[u8]) -> Vec<u8> {
    [&[mode, size][..], input].concat()
}

fn sample_texts() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ok_frame", vec![0, 0, 0, 6, 0, 0, 0, 0, b'O', b'K']),
        ("text", b"PUB tickets\n\x00\x00\x00\x05hello".to_vec()),
        (
            "repetitive",
            b"abcabcabcabcabcabcabcabcabcabcabcabcabcabcabcabc".repeat(8),
        ),
        ("zeros", vec![0; 700]),
        ("binary", (0..=255u8).collect()),
    ]
}

fn snappy_seeds() -> Seeds {
    let mut seeds: Seeds = Vec::new();
    for (name, text) in sample_texts() {
        seeds.push((
            format!("round_trip_{name}"),
            compress_seed(0x01 | 7 << 2, 3, &text),
        ));
        let mut wire = BytesMut::new();
        SnappyEncoder::new().encode(&text, &mut wire);
        seeds.push((format!("stream_{name}"), compress_seed(3 << 2, 200, &wire)));
        seeds.push((
            format!("stream_{name}_tiny_out"),
            compress_seed(1 << 2, 0, &wire),
        ));
        // Without its identifier, under a prepended one (mode bit 1).
        seeds.push((
            format!("body_{name}"),
            compress_seed(0x02 | 9 << 2, 50, &wire[10..]),
        ));
    }
    let raw: [(&str, Vec<u8>); 8] = [
        (
            "identifier_only",
            triage_protocol::compress::SNAPPY_STREAM_IDENTIFIER.to_vec(),
        ),
        (
            "no_identifier",
            vec![0x01, 0x05, 0x00, 0x00, 0, 0, 0, 0, b'x'],
        ),
        (
            "bad_checksum",
            vec![0x01, 0x05, 0x00, 0x00, 1, 2, 3, 4, b'x'],
        ),
        ("padding", vec![0xfe, 0x03, 0x00, 0x00, 0, 0, 0]),
        ("huge_padding", vec![0xfe, 0xff, 0xff, 0xff]),
        ("reserved_unskippable", vec![0x02, 0x00, 0x00, 0x00]),
        ("oversized_chunk", vec![0x00, 0xff, 0xff, 0xff, 0, 0, 0, 0]),
        ("short_chunk", vec![0x00, 0x02, 0x00, 0x00, 0, 0]),
    ];
    for (name, wire) in raw {
        let mode = if name == "identifier_only" { 0 } else { 0x02 };
        seeds.push((name.to_owned(), compress_seed(mode, 10, &wire)));
    }
    seeds
}

fn deflate_seeds() -> Seeds {
    let mut seeds: Seeds = Vec::new();
    for (name, text) in sample_texts() {
        for level in [1u8, 6, 9] {
            seeds.push((
                format!("round_trip_{name}_level{level}"),
                compress_seed(0x01 | (level - 1) << 2, 2, &text),
            ));
        }
        let mut wire = BytesMut::new();
        DeflateEncoder::new(6).encode(&text, &mut wire);
        seeds.push((format!("stream_{name}"), compress_seed(2 << 2, 100, &wire)));
        seeds.push((
            format!("stream_{name}_tiny_out"),
            compress_seed(0, 0, &wire),
        ));
    }
    // From the first fuzz run: a stream fed in small pieces whose output
    // outgrew the bound the check computed from the last piece alone.
    let mut bomb = BytesMut::new();
    DeflateEncoder::new(9).encode(&vec![0; 300_000], &mut bomb);
    seeds.push(("bomb_in_pieces".into(), compress_seed(3 << 2, 200, &bomb)));
    let raw: [(&str, Vec<u8>); 6] = [
        ("sync_marker", vec![0x00, 0x00, 0x00, 0xff, 0xff]),
        ("final_empty_block", vec![0x03, 0x00]),
        ("data_after_final", vec![0x03, 0x00, 0x01, 0x02]),
        ("bad_block_type", vec![0x07, 0x00]),
        ("stored_length_mismatch", vec![0x00, 0x05, 0x00, 0x00, 0x00]),
        ("zlib_header", vec![0x78, 0x9c, 0x03, 0x00]),
    ];
    for (name, wire) in raw {
        seeds.push((name.to_owned(), compress_seed(0, 10, &wire)));
    }
    seeds
}

/// This package's directory, read when the test runs: the path compiled in
/// by `env!` goes stale when the same target dir serves a clone elsewhere.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}
