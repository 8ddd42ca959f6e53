//! The invariants every fuzz target asserts, one function per target.
//!
//! Each takes arbitrary bytes and panics when the protocol crate breaks a
//! promise: a panic inside the codec, a decoder that consumes bytes it then
//! refuses, one that answers differently when the same bytes arrive in other
//! pieces, one that buffers more than its limits allow, or a value that does
//! not survive encode → decode. The first byte(s) of the input pick the
//! limits and how the input is cut, so the fuzzer explores those too.
//!
//! This file is shared: the cargo-fuzz targets in `fuzz/fuzz_targets/` call
//! it under libFuzzer, and `protocol/tests/fuzz_corpus.rs` includes it by path
//! to replay the committed corpus on stable Rust in CI.

use bytes::BytesMut;
use triage_protocol::command::decode_mpub_messages;
use triage_protocol::compress::{DeflateDecoder, DeflateEncoder, SnappyDecoder, SnappyEncoder};
use triage_protocol::frame::parse_error_text;
use triage_protocol::{
    decode_command, decode_frame, Command, ErrorCode, Frame, IdentifyRequest, Limits, ProtocolError,
};

/// Takes the first byte of `data` as a selector, or `None` for empty input.
fn split_selector(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(s, rest)| (*s, rest))
}

/// Cuts `input` into pieces of `chunk` bytes (at least 1), as a socket might deliver it.
fn pieces(input: &[u8], chunk: usize) -> std::slice::Chunks<'_, u8> {
    input.chunks(chunk.max(1))
}

// ------------------------------------------------------------------ commands

/// What decoding a whole stream of commands ended with.
#[derive(Debug, PartialEq)]
enum CommandOutcome {
    /// Every byte decoded so far, waiting for more; holds the undecoded rest.
    NeedMore(Vec<u8>),
    Failed(ProtocolError),
}

/// Limits picked by the selector: mostly small ones, so short inputs reach
/// every size check; sometimes nsqd's defaults.
fn command_limits(selector: u8) -> Limits {
    if selector & 0x80 != 0 {
        return Limits::default();
    }
    let pick = usize::from(selector & 0x7f);
    Limits {
        max_msg_size: 1 + (pick % 16) as u32 * 8,
        max_body_size: 4 + (pick % 8) as u32 * 40,
        max_line_len: 8 + (pick % 4) * 24,
    }
}

/// The most a decoder may hold while saying "need more": one line and one
/// body with its 4-byte size.
fn max_pending(limits: &Limits) -> usize {
    let body = limits.max_body_size.max(limits.max_msg_size) as usize;
    limits.max_line_len + 4 + body
}

/// Decodes commands from `buf` until it needs more or fails, checking the
/// buffer contract of [`decode_command`] at every step.
fn drain_commands(
    buf: &mut BytesMut,
    limits: &Limits,
    commands: &mut Vec<Command>,
) -> Option<ProtocolError> {
    loop {
        let before = buf.clone();
        match decode_command(buf, limits) {
            Ok(Some(command)) => {
                assert!(buf.len() < before.len(), "a command consumed no bytes");
                commands.push(command);
            }
            Ok(None) => {
                assert_eq!(*buf, before, "Ok(None) consumed bytes");
                assert!(
                    buf.len() <= max_pending(limits),
                    "waiting with {} bytes buffered, limits {limits:?}",
                    buf.len()
                );
                return None;
            }
            Err(e) => {
                assert_eq!(*buf, before, "an error consumed bytes");
                assert!(e.is_fatal(), "the decoder returned a non-fatal {e}");
                assert!(
                    matches!(
                        e.code,
                        ErrorCode::Invalid
                            | ErrorCode::BadTopic
                            | ErrorCode::BadChannel
                            | ErrorCode::BadMessage
                            | ErrorCode::BadBody
                    ),
                    "unexpected code from the decoder: {e}"
                );
                return Some(e);
            }
        }
    }
}

/// Feeds `input` to the decoder `chunk` bytes at a time.
fn decode_commands_in_pieces(
    input: &[u8],
    limits: &Limits,
    chunk: usize,
) -> (Vec<Command>, CommandOutcome) {
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    for piece in pieces(input, chunk) {
        buf.extend_from_slice(piece);
        if let Some(e) = drain_commands(&mut buf, limits, &mut commands) {
            return (commands, CommandOutcome::Failed(e));
        }
    }
    (commands, CommandOutcome::NeedMore(buf.to_vec()))
}

/// The V2 command decoder: no panic, the buffer contract, the same result
/// however the bytes are split, bounded buffering, and every decoded command
/// encodes back to bytes that decode to it again.
pub fn command_stream(data: &[u8]) {
    let Some((selector, rest)) = split_selector(data) else {
        return;
    };
    let Some((cut, input)) = split_selector(rest) else {
        return;
    };
    let limits = command_limits(selector);
    let whole = decode_commands_in_pieces(input, &limits, input.len());
    let split = decode_commands_in_pieces(input, &limits, 1 + usize::from(cut % 32));
    assert_eq!(whole, split, "the result depends on how the bytes arrived");
    // Re-encoding may grow a command (IDENTIFY's JSON gains every field,
    // `RDY` becomes `RDY 1`), so it is read back under nsqd's default limits.
    let roomy = Limits::default();
    for command in &whole.0 {
        let mut wire = BytesMut::new();
        command.encode(&mut wire);
        let again = decode_command(&mut wire, &roomy)
            .unwrap_or_else(|e| panic!("{command:?} encodes to bytes that fail: {e}"));
        assert_eq!(again.as_ref(), Some(command), "encode → decode changed it");
        assert!(wire.is_empty(), "encode wrote bytes decode did not take");
    }
    // The same bytes as the body of HTTP `/mpub?binary=true`.
    mpub_body(input, &limits);
}

/// `decode_mpub_messages` on arbitrary bytes: no panic; the bodies it returns
/// are non-empty, within the limit, and fill the body exactly.
fn mpub_body(body: &[u8], limits: &Limits) {
    if let Ok(messages) = decode_mpub_messages(bytes::Bytes::copy_from_slice(body), limits) {
        assert!(!messages.is_empty());
        let mut total = 4;
        for message in &messages {
            assert!(!message.is_empty() && message.len() <= limits.max_msg_size as usize);
            total += 4 + message.len();
        }
        assert_eq!(total, body.len(), "messages do not fill the body");
    }
}

// ------------------------------------------------------------------ frames

/// Frame size limits picked by the selector.
fn frame_limit(selector: u8) -> u32 {
    match selector % 5 {
        0 => 0,
        1 => 4,
        2 => 40,
        3 => 1024,
        _ => u32::MAX,
    }
}

/// Decodes frames from `input` fed `chunk` bytes at a time; returns each
/// frame with the exact bytes it came from, and the error that ended it.
fn decode_frames_in_pieces(
    input: &[u8],
    max_frame: u32,
    chunk: usize,
) -> (Vec<(Frame, Vec<u8>)>, Option<ProtocolError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces(input, chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match decode_frame(&mut buf, max_frame) {
                Ok(Some(frame)) => {
                    let used = before.len() - buf.len();
                    assert!(used >= 8, "a frame shorter than its header");
                    frames.push((frame, before[..used].to_vec()));
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) consumed bytes");
                    // Waiting is allowed only for a header or a frame within the limit.
                    let declared = before
                        .first_chunk::<4>()
                        .map_or(0, |b| u64::from(u32::from_be_bytes(*b)));
                    assert!(
                        before.len() < 8 || declared <= u64::from(max_frame),
                        "waiting for a frame of {declared} bytes over the limit {max_frame}"
                    );
                    break;
                }
                Err(e) => {
                    assert_eq!(buf, before, "an error consumed bytes");
                    return (frames, Some(e));
                }
            }
        }
    }
    (frames, None)
}

/// The client-side frame decoder: no panic, the buffer contract, the same
/// result however the bytes are split, and every frame re-encodes to exactly
/// the bytes it was decoded from.
pub fn frame_stream(data: &[u8]) {
    let Some((selector, rest)) = split_selector(data) else {
        return;
    };
    let max_frame = frame_limit(selector);
    let chunk = 1 + usize::from(selector / 5 % 16);
    let whole = decode_frames_in_pieces(rest, max_frame, rest.len());
    let split = decode_frames_in_pieces(rest, max_frame, chunk);
    assert_eq!(whole, split, "the result depends on how the bytes arrived");
    for (frame, wire) in &whole.0 {
        let mut again = BytesMut::new();
        frame.encode(&mut again);
        assert_eq!(&again[..], &wire[..], "{frame:?} re-encodes differently");
        if let Frame::Error(text) = frame {
            if let Some((code, description)) = parse_error_text(text) {
                let rest = &text[code.as_str().len()..];
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                assert_eq!(description, String::from_utf8_lossy(rest));
            }
        }
    }
}

// ------------------------------------------------------------------ IDENTIFY

/// IDENTIFY's JSON: no panic; a parsed request serialises to JSON that parses
/// back to it; a refusal is nsqd's `E_BAD_BODY` text; and the command decoder
/// gives the same answer for the same body.
pub fn identify_json(data: &[u8]) {
    let parsed = IdentifyRequest::from_json(data);
    match &parsed {
        Ok(request) => {
            let json = serde_json::to_vec(request).expect("a request always serialises");
            assert_eq!(
                IdentifyRequest::from_json(&json).as_ref(),
                Ok(request),
                "serialise → parse changed the request"
            );
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::BadBody);
            assert_eq!(e.description, "IDENTIFY failed to decode JSON body");
        }
    }
    if data.is_empty() {
        return;
    }
    let mut wire = BytesMut::from(&b"IDENTIFY\n"[..]);
    wire.extend_from_slice(&(data.len() as u32).to_be_bytes());
    wire.extend_from_slice(data);
    let decoded = decode_command(&mut wire, &Limits::default());
    match (decoded, parsed) {
        (Ok(Some(Command::Identify(got))), Ok(want)) => assert_eq!(got, want),
        (Err(got), Err(want)) => assert_eq!(got, want),
        (got, want) => panic!("decode_command gave {got:?}, from_json {want:?}"),
    }
}

// ------------------------------------------------------------------ compression

/// One of the two stream decoders, behind one interface for the checks.
enum StreamDecoder {
    Snappy(SnappyDecoder),
    Deflate(DeflateDecoder),
}

impl StreamDecoder {
    fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max_out: usize,
    ) -> Result<bool, String> {
        match self {
            StreamDecoder::Snappy(d) => d.decode(input, out, max_out),
            StreamDecoder::Deflate(d) => d.decode(input, out, max_out),
        }
        .map_err(|e| e.to_string())
    }

    /// Decodes everything `input` holds so far into `plain`, `max_out` bytes
    /// per call, checking that no call exceeds it and that the loop ends:
    /// `plain` may not outgrow what the `fed` bytes given so far can expand to.
    fn drain(
        &mut self,
        input: &mut BytesMut,
        plain: &mut Vec<u8>,
        max_out: usize,
        fed: usize,
    ) -> Result<(), String> {
        // Neither format expands a byte into more than ~1032 (deflate's
        // limit); a 64 KiB snappy block is the most one chunk yields.
        let most = fed.saturating_mul(1100) + 2 * 65536;
        let mut out = BytesMut::new();
        loop {
            let more = self.decode(input, &mut out, max_out)?;
            assert!(
                out.len() <= max_out,
                "one call produced {} bytes, max_out {max_out}",
                out.len()
            );
            plain.extend_from_slice(&out);
            out.clear();
            assert!(
                plain.len() <= most,
                "decoded {} bytes from {fed}: a loop that does not end?",
                plain.len()
            );
            if !more {
                return Ok(());
            }
        }
    }
}

/// Compression parameters picked by the selector bytes.
struct CompressCase<'a> {
    /// Round-trip our own encoder's output, or decode the raw input.
    round_trip: bool,
    /// For raw snappy input: put a valid stream identifier first.
    with_identifier: bool,
    max_out: usize,
    chunk: usize,
    level: u32,
    input: &'a [u8],
}

fn compress_case(data: &[u8]) -> Option<CompressCase<'_>> {
    let (mode, rest) = split_selector(data)?;
    let (size, input) = split_selector(rest)?;
    Some(CompressCase {
        round_trip: mode & 1 == 1,
        with_identifier: mode & 2 == 2,
        max_out: 1 + usize::from(size) * 37,
        chunk: 1 + usize::from(mode >> 2),
        level: 1 + u32::from(mode >> 2) % 9,
        input,
    })
}

/// Decodes arbitrary bytes piece by piece: an error is fine, a panic or a
/// call over `max_out` is not.
fn decode_raw(mut decoder: StreamDecoder, case: &CompressCase<'_>, prefix: &[u8]) {
    let mut input = BytesMut::from(prefix);
    let mut plain = Vec::new();
    let mut fed = prefix.len();
    for piece in pieces(case.input, case.chunk) {
        input.extend_from_slice(piece);
        fed += piece.len();
        if decoder
            .drain(&mut input, &mut plain, case.max_out, fed)
            .is_err()
        {
            return;
        }
    }
}

/// Encodes the input in pieces (each flushed, as a connection writes) and
/// checks the decoder returns, after every piece, exactly what was sent so far.
fn round_trip(
    mut encode: impl FnMut(&[u8], &mut BytesMut),
    mut decoder: StreamDecoder,
    case: &CompressCase<'_>,
) {
    let mut wire = BytesMut::new();
    let mut plain = Vec::new();
    let mut sent = 0;
    for piece in pieces(case.input, case.chunk) {
        encode(piece, &mut wire);
        sent += piece.len();
        decoder
            .drain(&mut wire, &mut plain, case.max_out, sent)
            .unwrap_or_else(|e| panic!("our own stream failed to decode: {e}"));
        assert_eq!(plain, case.input[..sent], "a flushed piece was held back");
    }
}

/// The snappy framing-format decoder.
pub fn snappy_stream(data: &[u8]) {
    let Some(case) = compress_case(data) else {
        return;
    };
    let decoder = || StreamDecoder::Snappy(SnappyDecoder::new());
    if case.round_trip {
        let mut encoder = SnappyEncoder::new();
        round_trip(|p, out| encoder.encode(p, out), decoder(), &case);
    } else {
        let prefix: &[u8] = if case.with_identifier {
            &triage_protocol::compress::SNAPPY_STREAM_IDENTIFIER
        } else {
            &[]
        };
        decode_raw(decoder(), &case, prefix);
    }
}

/// The raw-deflate decoder.
pub fn deflate_stream(data: &[u8]) {
    let Some(case) = compress_case(data) else {
        return;
    };
    let decoder = || StreamDecoder::Deflate(DeflateDecoder::new());
    if case.round_trip {
        let mut encoder = DeflateEncoder::new(case.level);
        round_trip(|p, out| encoder.encode(p, out), decoder(), &case);
    } else {
        decode_raw(decoder(), &case, &[]);
    }
}
