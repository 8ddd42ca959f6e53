//! Stream transforms applied to a whole connection after IDENTIFY negotiates
//! them, exactly as nsqd does: snappy in the framing format (Go's
//! `snappy.NewBufferedWriter`/`NewReader`) and raw deflate (Go's `compress/flate`,
//! no zlib header) with a sync flush after each write batch.
//!
//! Both directions are pure buffer transforms so the broker's connection, the
//! worker and the bench tool can all use them over any socket.

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

mod crc32c;

use crc32c::masked_crc32c;

#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    #[error("snappy stream corrupt: {0}")]
    Snappy(String),
    #[error("deflate stream corrupt: {0}")]
    Deflate(String),
}

/// Which transform a connection uses.
#[derive(Debug)]
pub enum Encoder {
    Snappy(SnappyEncoder),
    Deflate(DeflateEncoder),
}

#[derive(Debug)]
pub enum Decoder {
    Snappy(SnappyDecoder),
    Deflate(DeflateDecoder),
}

/// Both directions of a stream once snappy is negotiated.
pub fn snappy_pair() -> (Encoder, Decoder) {
    (
        Encoder::Snappy(SnappyEncoder::new()),
        Decoder::Snappy(SnappyDecoder::new()),
    )
}

/// Both directions of a stream once deflate is negotiated, compressing at `level`.
pub fn deflate_pair(level: u32) -> (Encoder, Decoder) {
    (
        Encoder::Deflate(DeflateEncoder::new(level)),
        Decoder::Deflate(DeflateDecoder::new()),
    )
}

impl Encoder {
    /// Compresses all of `plain` and appends bytes that a peer's decoder can
    /// fully decode right away (flushed: nothing held back) to `out`.
    pub fn encode(&mut self, plain: &[u8], out: &mut BytesMut) {
        match self {
            Encoder::Snappy(encoder) => encoder.encode(plain, out),
            Encoder::Deflate(encoder) => encoder.encode(plain, out),
        }
    }
}

impl Decoder {
    /// Decodes from `input` and appends at most `max_out` plain bytes to
    /// `out`; what is not decoded yet stays in `input` or in the decoder.
    ///
    /// Returns `Ok(true)` when it stopped at `max_out`: more plain bytes may be
    /// ready without any new input, so call again once `out` has room.
    /// `Ok(false)` means everything decodable so far has been handed out.
    /// Bounding each call, rather than refusing a large expansion, lets a
    /// client pipeline highly compressible data (deflate expands up to about
    /// 1000:1) while the reader's memory stays bounded.
    ///
    /// # Errors
    /// [`CompressError::Snappy`] or [`CompressError::Deflate`] for a corrupt
    /// stream; the stream is unusable afterwards and `out` may hold part of
    /// the decoded data.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max_out: usize,
    ) -> Result<bool, CompressError> {
        match self {
            Decoder::Snappy(decoder) => decoder.decode(input, out, max_out),
            Decoder::Deflate(decoder) => decoder.decode(input, out, max_out),
        }
    }
}

/// Largest uncompressed chunk the snappy framing format allows.
pub const SNAPPY_MAX_BLOCK: usize = 65536;

/// The stream identifier chunk every snappy framed stream starts with.
pub const SNAPPY_STREAM_IDENTIFIER: [u8; 10] = *b"\xff\x06\x00\x00sNaPpY";

const CHUNK_COMPRESSED: u8 = 0x00;
const CHUNK_UNCOMPRESSED: u8 = 0x01;
const CHUNK_STREAM_IDENTIFIER: u8 = 0xff;
/// Chunk type (1 byte) and length (3 bytes, little-endian).
const CHUNK_HEADER_LEN: usize = 4;
const CHECKSUM_LEN: usize = 4;

/// Most output the inflater gets per step; also how far `out` may
/// temporarily grow beyond what the call keeps.
const DEFLATE_WINDOW: usize = 32 * 1024;

#[derive(Debug)]
pub struct SnappyEncoder {
    /// Whether the stream identifier has been written.
    started: bool,
    /// Boxed: it carries a 2 KiB hash table that would bloat [`Encoder`].
    raw: Box<snap::raw::Encoder>,
    /// Reused output block for `snap::raw`, which cannot write into a `BytesMut`'s spare room.
    scratch: Vec<u8>,
}

#[derive(Debug)]
pub struct SnappyDecoder {
    /// Whether the stream identifier has been read; data before it is corrupt.
    started: bool,
    /// Bytes of a skippable chunk still to drop. Tracked so a 16 MiB padding
    /// chunk is skipped as it streams in instead of being buffered whole.
    skip: usize,
    raw: snap::raw::Decoder,
    /// A decoded chunk not yet handed out because the caller's limit was reached.
    pending: BytesMut,
}

#[derive(Debug)]
pub struct DeflateEncoder {
    compress: Compress,
}

#[derive(Debug)]
pub struct DeflateDecoder {
    decompress: Decompress,
    /// A final block was seen (nsqd never sends one, but a peer may).
    finished: bool,
}

impl SnappyEncoder {
    pub fn new() -> Self {
        SnappyEncoder {
            started: false,
            raw: Box::new(snap::raw::Encoder::new()),
            scratch: Vec::new(),
        }
    }

    /// Appends the stream identifier (first call only) and `plain` as chunks of
    /// at most 64 KiB each; every chunk is complete, so nothing is held back.
    pub fn encode(&mut self, plain: &[u8], out: &mut BytesMut) {
        if !self.started {
            out.put_slice(&SNAPPY_STREAM_IDENTIFIER);
            self.started = true;
        }
        for block in plain.chunks(SNAPPY_MAX_BLOCK) {
            let checksum = masked_crc32c(block);
            let max_len = snap::raw::max_compress_len(block.len());
            if self.scratch.len() < max_len {
                self.scratch.resize(max_len, 0);
            }
            // Like Go's writer: keep the compressed form only if it saves at least 1/8.
            let (chunk_type, data) = match self.raw.compress(block, &mut self.scratch) {
                Ok(n) if n < block.len() - block.len() / 8 => {
                    (CHUNK_COMPRESSED, &self.scratch[..n])
                }
                _ => (CHUNK_UNCOMPRESSED, block),
            };
            let chunk_len = CHECKSUM_LEN + data.len();
            out.reserve(CHUNK_HEADER_LEN + chunk_len);
            out.put_u8(chunk_type);
            out.put_uint_le(chunk_len as u64, 3);
            out.put_u32_le(checksum);
            out.put_slice(data);
        }
    }
}

impl Default for SnappyEncoder {
    fn default() -> Self {
        SnappyEncoder::new()
    }
}

impl SnappyDecoder {
    pub fn new() -> Self {
        SnappyDecoder {
            started: false,
            skip: 0,
            raw: snap::raw::Decoder::new(),
            pending: BytesMut::new(),
        }
    }

    /// See [`Decoder::decode`]. Works chunk by chunk: a partial chunk stays in
    /// `input` until the rest arrives.
    ///
    /// # Errors
    /// As [`Decoder::decode`].
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max_out: usize,
    ) -> Result<bool, CompressError> {
        let mut produced = 0usize;
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(max_out - produced);
                out.extend_from_slice(&self.pending.split_to(n));
                produced += n;
            }
            if produced == max_out {
                return Ok(true);
            }
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                input.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return Ok(false);
                }
            }
            let Some(header) = input.first_chunk::<CHUNK_HEADER_LEN>() else {
                return Ok(false);
            };
            let chunk_type = header[0];
            let chunk_len =
                usize::from(header[1]) | usize::from(header[2]) << 8 | usize::from(header[3]) << 16;
            if chunk_type == CHUNK_STREAM_IDENTIFIER {
                if chunk_len != SNAPPY_STREAM_IDENTIFIER.len() - CHUNK_HEADER_LEN {
                    return Err(snappy_corrupt(format!(
                        "stream identifier of length {chunk_len}"
                    )));
                }
                let Some(chunk) = input.get(..SNAPPY_STREAM_IDENTIFIER.len()) else {
                    return Ok(false);
                };
                if chunk != SNAPPY_STREAM_IDENTIFIER {
                    return Err(snappy_corrupt("bad stream identifier".into()));
                }
                self.started = true;
                input.advance(SNAPPY_STREAM_IDENTIFIER.len());
                continue;
            }
            if !self.started {
                return Err(snappy_corrupt(format!(
                    "chunk type {chunk_type:#04x} before the stream identifier"
                )));
            }
            match chunk_type {
                CHUNK_COMPRESSED | CHUNK_UNCOMPRESSED => {
                    // Bound the chunk before waiting for it, so a bogus length
                    // cannot make the caller buffer 16 MiB.
                    let max_data = match chunk_type {
                        CHUNK_COMPRESSED => snap::raw::max_compress_len(SNAPPY_MAX_BLOCK),
                        _ => SNAPPY_MAX_BLOCK,
                    };
                    if chunk_len < CHECKSUM_LEN || chunk_len > CHECKSUM_LEN + max_data {
                        return Err(snappy_corrupt(format!("data chunk of length {chunk_len}")));
                    }
                    let Some(chunk) = input.get(CHUNK_HEADER_LEN..CHUNK_HEADER_LEN + chunk_len)
                    else {
                        return Ok(false);
                    };
                    let (checksum, data) = chunk.split_at(CHECKSUM_LEN);
                    let checksum =
                        u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
                    let plain_len = match chunk_type {
                        CHUNK_COMPRESSED => snap::raw::decompress_len(data)
                            .map_err(|e| snappy_corrupt(e.to_string()))?,
                        _ => data.len(),
                    };
                    if plain_len > SNAPPY_MAX_BLOCK {
                        return Err(snappy_corrupt(format!(
                            "chunk decodes to {plain_len} bytes"
                        )));
                    }
                    // Decoded whole into `pending` (the CRC covers the whole
                    // chunk); the top of the loop hands it out within the limit.
                    if chunk_type == CHUNK_COMPRESSED {
                        self.pending.resize(plain_len, 0);
                        if let Err(e) = self.raw.decompress(data, &mut self.pending) {
                            self.pending.clear();
                            return Err(snappy_corrupt(e.to_string()));
                        }
                    } else {
                        self.pending.extend_from_slice(data);
                    }
                    if masked_crc32c(&self.pending) != checksum {
                        self.pending.clear();
                        return Err(snappy_corrupt("checksum mismatch".into()));
                    }
                    input.advance(CHUNK_HEADER_LEN + chunk_len);
                }
                0x02..=0x7f => {
                    return Err(snappy_corrupt(format!(
                        "reserved unskippable chunk type {chunk_type:#04x}"
                    )));
                }
                // 0x80..=0xfe: padding and reserved skippable chunks.
                _ => {
                    input.advance(CHUNK_HEADER_LEN);
                    self.skip = chunk_len;
                }
            }
        }
    }
}

impl Default for SnappyDecoder {
    fn default() -> Self {
        SnappyDecoder::new()
    }
}

fn snappy_corrupt(what: String) -> CompressError {
    CompressError::Snappy(what)
}

impl DeflateEncoder {
    /// `level` 1..=9 (nsqd caps it at max-deflate-level, 6 by default). Higher
    /// values are treated as 9.
    pub fn new(level: u32) -> Self {
        // Raw deflate: Go's compress/flate writes no zlib header.
        DeflateEncoder {
            compress: Compress::new(Compression::new(level.min(9)), false),
        }
    }

    /// Appends `plain` compressed and sync-flushed (ending in an empty stored
    /// block, `00 00 ff ff`), so the peer can decode everything so far.
    ///
    /// # Panics
    /// Never in practice: the compressor only fails after a finish, and this
    /// stream is never finished.
    pub fn encode(&mut self, plain: &[u8], out: &mut BytesMut) {
        let mut consumed = 0;
        loop {
            let remaining = plain.len() - consumed;
            // Room for incompressible input plus block headers and the flush marker.
            let window = (remaining + remaining / 16 + 64).min(4 * DEFLATE_WINDOW);
            let start = out.len();
            out.resize(start + window, 0);
            let (in_before, out_before) = (self.compress.total_in(), self.compress.total_out());
            self.compress
                .compress(&plain[consumed..], &mut out[start..], FlushCompress::Sync)
                .expect("deflate fails only after a finish");
            let written = (self.compress.total_out() - out_before) as usize;
            consumed += (self.compress.total_in() - in_before) as usize;
            out.truncate(start + written);
            // A window left unfilled after all input went in means the flush is complete.
            if consumed == plain.len() && written < window {
                return;
            }
        }
    }
}

impl DeflateDecoder {
    pub fn new() -> Self {
        DeflateDecoder {
            decompress: Decompress::new(false),
            finished: false,
        }
    }

    /// See [`Decoder::decode`]. The inflater takes partial input into its own
    /// state, so `input` is normally consumed whole.
    ///
    /// # Errors
    /// As [`Decoder::decode`]; data after a final block is corrupt too.
    pub fn decode(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        max_out: usize,
    ) -> Result<bool, CompressError> {
        let mut produced = 0usize;
        loop {
            if self.finished {
                if input.is_empty() {
                    return Ok(false);
                }
                return Err(CompressError::Deflate(
                    "data after the end of the stream".into(),
                ));
            }
            let budget = max_out - produced;
            if budget == 0 {
                return Ok(true);
            }
            // Sized to the input so a small read does not zero a large window.
            let window = (input.len().saturating_mul(4))
                .clamp(512, DEFLATE_WINDOW)
                .min(budget);
            let start = out.len();
            out.resize(start + window, 0);
            let (in_before, out_before) = (self.decompress.total_in(), self.decompress.total_out());
            let status =
                self.decompress
                    .decompress(input, &mut out[start..], FlushDecompress::None);
            let written = (self.decompress.total_out() - out_before) as usize;
            let consumed = (self.decompress.total_in() - in_before) as usize;
            out.truncate(start + written);
            input.advance(consumed);
            let status = status.map_err(|e| CompressError::Deflate(e.to_string()))?;
            produced += written;
            match status {
                Status::StreamEnd => self.finished = true,
                // Room was left over: the inflater holds nothing more back.
                _ if written < window && input.is_empty() => return Ok(false),
                // No progress with room to write: the inflater needs more input.
                _ if written == 0 && consumed == 0 => return Ok(false),
                _ => {}
            }
        }
    }
}

impl Default for DeflateDecoder {
    fn default() -> Self {
        DeflateDecoder::new()
    }
}
