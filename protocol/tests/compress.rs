//! Snappy framing and raw deflate: our round trips at many split points, and
//! interoperability with the reference implementations in both directions.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};

use bytes::BytesMut;
use triage_protocol::compress::{
    CompressError, Decoder, DeflateDecoder, DeflateEncoder, Encoder, SnappyDecoder, SnappyEncoder,
    SNAPPY_STREAM_IDENTIFIER,
};

/// Deterministic data mixing incompressible noise and long repeats, so both
/// chunk kinds (compressed and stored) appear.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let run = (state % 300) as usize;
        if state & 0x100 == 0 {
            out.extend(std::iter::repeat_n(b'a' + (state % 26) as u8, run));
        } else {
            out.extend((0..run).map(|i| (state >> (i % 56)) as u8));
        }
    }
    out.truncate(len);
    out
}

const SIZES: [usize; 8] = [0, 1, 7, 1000, 65535, 65536, 65537, 200_000];

fn snappy() -> (Encoder, Decoder) {
    (
        Encoder::Snappy(SnappyEncoder::new()),
        Decoder::Snappy(SnappyDecoder::new()),
    )
}

fn deflate(level: u32) -> (Encoder, Decoder) {
    (
        Encoder::Deflate(DeflateEncoder::new(level)),
        Decoder::Deflate(DeflateDecoder::new()),
    )
}

fn encode(encoder: &mut Encoder, plain: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encoder.encode(plain, &mut out);
    out.to_vec()
}

/// Feeds `wire` to `decoder` in pieces ending at `cuts`, as socket reads would.
fn decode_in_pieces(
    decoder: &mut Decoder,
    wire: &[u8],
    cuts: impl IntoIterator<Item = usize>,
) -> Vec<u8> {
    let mut input = BytesMut::new();
    let mut out = BytesMut::new();
    let mut from = 0;
    for cut in cuts.into_iter().chain([wire.len()]) {
        let cut = cut.clamp(from, wire.len());
        input.extend_from_slice(&wire[from..cut]);
        from = cut;
        decoder.decode(&mut input, &mut out, usize::MAX).unwrap();
    }
    out.to_vec()
}

/// Every byte for short streams; for long ones, a spread of cuts including
/// every position near the start and near each 64 KiB boundary.
fn cuts(len: usize) -> Vec<usize> {
    if len <= 3000 {
        return (0..len).collect();
    }
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((0..len).step_by(997));
    for boundary in (65536..len).step_by(65536) {
        cuts.extend(boundary.saturating_sub(20)..(boundary + 20).min(len));
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

fn round_trip_at_every_cut(make: fn() -> (Encoder, Decoder)) {
    for (i, &size) in SIZES.iter().enumerate() {
        let plain = sample(size, i as u64 + 1);
        let (mut encoder, _) = make();
        let wire = encode(&mut encoder, &plain);
        let (_, mut decoder) = make();
        assert_eq!(
            decode_in_pieces(&mut decoder, &wire, cuts(wire.len())),
            plain,
            "size {size}"
        );
        // One read of a different shape: halves.
        let (_, mut decoder) = make();
        assert_eq!(
            decode_in_pieces(&mut decoder, &wire, [wire.len() / 2]),
            plain,
            "size {size}"
        );
    }
}

/// Each `encode` call is flushed: its output alone decodes to its input.
fn each_encode_is_decodable_at_once(make: fn() -> (Encoder, Decoder)) {
    let (mut encoder, mut decoder) = make();
    let mut input = BytesMut::new();
    for (i, &size) in SIZES.iter().enumerate().chain(SIZES.iter().enumerate()) {
        let plain = sample(size, 100 + i as u64);
        input.extend_from_slice(&encode(&mut encoder, &plain));
        let mut out = BytesMut::new();
        decoder.decode(&mut input, &mut out, usize::MAX).unwrap();
        assert_eq!(out.to_vec(), plain, "size {size}");
        assert!(input.is_empty(), "{} bytes held back", input.len());
    }
}

#[test]
fn snappy_round_trips_at_every_cut() {
    round_trip_at_every_cut(snappy);
}

#[test]
fn deflate_round_trips_at_every_cut() {
    round_trip_at_every_cut(|| deflate(6));
}

#[test]
fn deflate_every_level_round_trips() {
    for level in [0, 1, 6, 9, 42] {
        let (mut encoder, mut decoder) = deflate(level);
        let plain = sample(100_000, u64::from(level) + 7);
        let wire = encode(&mut encoder, &plain);
        assert_eq!(
            decode_in_pieces(&mut decoder, &wire, [1, 2, 1000]),
            plain,
            "level {level}"
        );
    }
}

#[test]
fn snappy_each_encode_is_decodable_at_once() {
    each_encode_is_decodable_at_once(snappy);
}

#[test]
fn deflate_each_encode_is_decodable_at_once() {
    each_encode_is_decodable_at_once(|| deflate(6));
}

#[test]
fn snappy_stream_starts_with_the_identifier_once() {
    let mut encoder = SnappyEncoder::new();
    let mut out = BytesMut::new();
    encoder.encode(b"abc", &mut out);
    assert!(out.starts_with(&SNAPPY_STREAM_IDENTIFIER));
    assert_eq!(
        &SNAPPY_STREAM_IDENTIFIER,
        b"\xff\x06\x00\x00\x73\x4e\x61\x50\x70\x59"
    );
    let first = out.len();
    encoder.encode(b"abc", &mut out);
    assert_eq!(
        out.len() - first,
        first - SNAPPY_STREAM_IDENTIFIER.len(),
        "identifier repeated"
    );
}

#[test]
fn snappy_chunks_hold_at_most_64k() {
    let mut encoder = SnappyEncoder::new();
    let mut out = BytesMut::new();
    let plain = sample(300_000, 3);
    encoder.encode(&plain, &mut out);
    let mut at = SNAPPY_STREAM_IDENTIFIER.len();
    let mut total = 0;
    while at < out.len() {
        let len = usize::from(out[at + 1])
            | usize::from(out[at + 2]) << 8
            | usize::from(out[at + 3]) << 16;
        let data = &out[at + 8..at + 4 + len];
        let plain_len = match out[at] {
            0x00 => snap::raw::decompress_len(data).unwrap(),
            0x01 => data.len(),
            other => panic!("chunk type {other}"),
        };
        assert!(plain_len <= 65536);
        total += plain_len;
        at += 4 + len;
    }
    assert_eq!(total, plain.len());
}

#[test]
fn snappy_ours_decodes_with_the_reference_reader() {
    for (i, &size) in SIZES.iter().enumerate() {
        let plain = sample(size, 50 + i as u64);
        let mut encoder = SnappyEncoder::new();
        let mut wire = BytesMut::new();
        // Two calls, as a connection writes batches.
        encoder.encode(&plain[..size / 3], &mut wire);
        encoder.encode(&plain[size / 3..], &mut wire);
        let mut decoded = Vec::new();
        snap::read::FrameDecoder::new(&wire[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, plain, "size {size}");
    }
}

#[test]
fn snappy_reference_writer_decodes_with_ours() {
    for (i, &size) in SIZES.iter().enumerate() {
        let plain = sample(size, 70 + i as u64);
        let mut writer = snap::write::FrameEncoder::new(Vec::new());
        writer.write_all(&plain).unwrap();
        let wire = writer.into_inner().unwrap();
        let mut decoder = Decoder::Snappy(SnappyDecoder::new());
        assert_eq!(
            decode_in_pieces(&mut decoder, &wire, cuts(wire.len())),
            plain,
            "size {size}"
        );
    }
}

#[test]
fn deflate_ours_decodes_with_the_reference_reader() {
    for (i, &size) in SIZES.iter().enumerate() {
        let plain = sample(size, 90 + i as u64);
        let mut encoder = DeflateEncoder::new(6);
        let mut wire = BytesMut::new();
        encoder.encode(&plain[..size / 3], &mut wire);
        encoder.encode(&plain[size / 3..], &mut wire);
        // The stream is never finished (nsqd does not either), so read exactly what was sent.
        let mut decoded = vec![0u8; size];
        flate2::read::DeflateDecoder::new(&wire[..])
            .read_exact(&mut decoded)
            .unwrap();
        assert_eq!(decoded, plain, "size {size}");
    }
}

#[test]
fn deflate_reference_writer_decodes_with_ours() {
    for (i, &size) in SIZES.iter().enumerate() {
        let plain = sample(size, 110 + i as u64);
        let mut writer =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        writer.write_all(&plain[..size / 2]).unwrap();
        writer.flush().unwrap();
        writer.write_all(&plain[size / 2..]).unwrap();
        writer.flush().unwrap();
        let wire = writer.get_ref().clone();
        let mut decoder = Decoder::Deflate(DeflateDecoder::new());
        assert_eq!(
            decode_in_pieces(&mut decoder, &wire, cuts(wire.len())),
            plain,
            "size {size}"
        );
        // A finished stream decodes too.
        let finished = writer.finish().unwrap();
        let mut decoder = Decoder::Deflate(DeflateDecoder::new());
        assert_eq!(
            decode_in_pieces(&mut decoder, &finished, [3]),
            plain,
            "size {size}"
        );
    }
}

fn decode_once(
    decoder: &mut Decoder,
    wire: &[u8],
    max_out: usize,
) -> Result<Vec<u8>, CompressError> {
    let mut input = BytesMut::from(wire);
    let mut out = BytesMut::new();
    decoder.decode(&mut input, &mut out, max_out)?;
    Ok(out.to_vec())
}

/// Calls `decode` with `limit` until it reports nothing more, checking that
/// no call appends more than the limit. New input is given only once.
fn decode_with_limit(decoder: &mut Decoder, wire: &[u8], limit: usize) -> Vec<u8> {
    let mut input = BytesMut::from(wire);
    let mut out = BytesMut::new();
    loop {
        let before = out.len();
        let more = decoder.decode(&mut input, &mut out, limit).unwrap();
        assert!(
            out.len() - before <= limit,
            "one call appended {} > {limit}",
            out.len() - before
        );
        if !more {
            return out.to_vec();
        }
    }
}

#[test]
fn a_decompression_bomb_is_handed_out_within_the_limit() {
    let plain = vec![0u8; 4 << 20];
    for make in [snappy as fn() -> (Encoder, Decoder), || deflate(9)] {
        let (mut encoder, _) = make();
        let wire = encode(&mut encoder, &plain);
        assert!(wire.len() < plain.len() / 20);
        for limit in [1, 1000, 65535, 65537, 1 << 20, plain.len() - 1, plain.len()] {
            let (_, mut decoder) = make();
            assert_eq!(
                decode_with_limit(&mut decoder, &wire, limit),
                plain,
                "limit {limit}"
            );
        }
        // A call that stops at the limit says so, and a limit of 0 makes no progress.
        let (_, mut decoder) = make();
        let (mut input, mut out) = (BytesMut::from(&wire[..]), BytesMut::new());
        assert!(decoder.decode(&mut input, &mut out, 0).unwrap() || out.is_empty());
        assert!(out.is_empty());
        assert!(decoder.decode(&mut input, &mut out, 1 << 20).unwrap());
        assert_eq!(out.len(), 1 << 20);
    }
}

#[test]
fn the_limit_is_per_call() {
    for make in [snappy as fn() -> (Encoder, Decoder), || deflate(6)] {
        let (mut encoder, mut decoder) = make();
        let mut input = BytesMut::new();
        let mut out = BytesMut::new();
        for _ in 0..3 {
            input.extend_from_slice(&encode(&mut encoder, &[7u8; 1000]));
            decoder.decode(&mut input, &mut out, 1000).unwrap();
            assert_eq!(out.len() % 1000, 0);
        }
        assert_eq!(out.len(), 3000);
        // Stopping exactly at the limit may say "more"; asking again finds none.
        assert!(!decoder.decode(&mut input, &mut out, 1000).unwrap());
        assert_eq!(out.len(), 3000);
    }
}

/// A snappy stream built by hand: identifier, then the given chunks.
fn chunk(kind: u8, data: &[u8]) -> Vec<u8> {
    let len = data.len() as u32;
    let mut v = vec![kind, len as u8, (len >> 8) as u8, (len >> 16) as u8];
    v.extend_from_slice(data);
    v
}

fn snappy_ok(wire: &[u8]) -> Vec<u8> {
    decode_once(&mut Decoder::Snappy(SnappyDecoder::new()), wire, usize::MAX).unwrap()
}

fn snappy_err(wire: &[u8]) -> String {
    match decode_once(&mut Decoder::Snappy(SnappyDecoder::new()), wire, usize::MAX) {
        Err(CompressError::Snappy(what)) => what,
        other => panic!("expected a snappy error, got {other:?}"),
    }
}

/// An uncompressed data chunk of `plain`, checksummed by the reference encoder.
fn stored_chunk(plain: &[u8]) -> Vec<u8> {
    let mut writer = snap::write::FrameEncoder::new(Vec::new());
    writer.write_all(plain).unwrap();
    let wire = writer.into_inner().unwrap();
    wire[SNAPPY_STREAM_IDENTIFIER.len()..].to_vec()
}

#[test]
fn snappy_skips_padding_and_skippable_chunks_even_when_split() {
    let data = stored_chunk(b"hello");
    let wire = [
        &SNAPPY_STREAM_IDENTIFIER[..],
        &chunk(0xfe, &[0u8; 1000]),
        &data,
        &chunk(0x80, b"skip me"),
        &SNAPPY_STREAM_IDENTIFIER[..],
        &data,
        &chunk(0xfe, b""),
    ]
    .concat();
    assert_eq!(snappy_ok(&wire), b"hellohello");
    let mut decoder = Decoder::Snappy(SnappyDecoder::new());
    assert_eq!(
        decode_in_pieces(&mut decoder, &wire, 0..wire.len()),
        b"hellohello"
    );
}

#[test]
fn snappy_rejects_corrupt_streams() {
    let data = stored_chunk(b"hello");
    assert!(snappy_err(&data).contains("before the stream identifier"));
    assert!(snappy_err(&chunk(0xfe, b"")).contains("before the stream identifier"));
    assert!(snappy_err(b"\xff\x06\x00\x00sNaPpX").contains("bad stream identifier"));
    assert!(snappy_err(b"\xff\x05\x00\x00sNaPp").contains("stream identifier of length 5"));
    for kind in [0x02, 0x10, 0x7f] {
        let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &chunk(kind, b"x")].concat();
        assert!(snappy_err(&wire).contains("reserved unskippable"), "{kind}");
    }
    let mut bad_crc = data.clone();
    bad_crc[4] ^= 1;
    let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &bad_crc].concat();
    assert_eq!(snappy_err(&wire), "checksum mismatch");
    let mut bad_body = data.clone();
    *bad_body.last_mut().unwrap() ^= 1;
    let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &bad_body].concat();
    assert_eq!(snappy_err(&wire), "checksum mismatch");
    // Shorter than a checksum.
    let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &chunk(0x01, b"abc")].concat();
    assert!(snappy_err(&wire).contains("data chunk of length 3"));
    // A compressed chunk that is not valid snappy.
    let wire = [
        &SNAPPY_STREAM_IDENTIFIER[..],
        &chunk(0x00, b"\0\0\0\0\xff\xff\xff\xff\xff"),
    ]
    .concat();
    snappy_err(&wire);
}

#[test]
fn snappy_refuses_oversized_chunks_before_buffering_them() {
    // Only the header has arrived; a 16 MiB data chunk is refused at once.
    let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &[0x01, 0xff, 0xff, 0xff][..]].concat();
    assert!(snappy_err(&wire).contains("data chunk of length"));
    let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &[0x01, 0x05, 0x00, 0x01][..]].concat();
    assert!(snappy_err(&wire).contains("data chunk of length 65541"));
    let wire = [&SNAPPY_STREAM_IDENTIFIER[..], &[0x01, 0x04, 0x00, 0x01][..]].concat();
    let mut decoder = Decoder::Snappy(SnappyDecoder::new());
    assert_eq!(
        decode_once(&mut decoder, &wire, usize::MAX).unwrap(),
        b"",
        "65536 bytes is allowed"
    );
}

#[test]
fn incomplete_snappy_input_stays_in_input() {
    let mut encoder = SnappyEncoder::new();
    let mut wire = BytesMut::new();
    encoder.encode(b"some plain text", &mut wire);
    let mut decoder = SnappyDecoder::new();
    let mut input = BytesMut::from(&wire[..wire.len() - 1]);
    let mut out = BytesMut::new();
    decoder.decode(&mut input, &mut out, usize::MAX).unwrap();
    assert!(out.is_empty());
    assert_eq!(input.len(), wire.len() - 1 - SNAPPY_STREAM_IDENTIFIER.len());
}

#[test]
fn deflate_rejects_garbage() {
    let mut decoder = Decoder::Deflate(DeflateDecoder::new());
    // Block type 3 is reserved.
    assert!(matches!(
        decode_once(&mut decoder, &[0xff; 16], usize::MAX),
        Err(CompressError::Deflate(_))
    ));
    // A zlib header is not raw deflate.
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    zlib.write_all(&sample(10_000, 5)).unwrap();
    let wire = zlib.finish().unwrap();
    let mut decoder = Decoder::Deflate(DeflateDecoder::new());
    assert!(decode_once(&mut decoder, &wire, usize::MAX).is_err());
}

#[test]
fn deflate_rejects_data_after_the_final_block() {
    let mut writer = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    writer.write_all(b"done").unwrap();
    let mut wire = writer.finish().unwrap();
    wire.extend_from_slice(b"more");
    let mut decoder = Decoder::Deflate(DeflateDecoder::new());
    assert!(matches!(
        decode_once(&mut decoder, &wire, usize::MAX),
        Err(CompressError::Deflate(_))
    ));
}
