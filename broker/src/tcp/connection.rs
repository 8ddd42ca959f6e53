//! A client's socket with its buffers and, once negotiated, its compression.
//!
//! Knows bytes, not commands: it fills [`Connection::input`] with plain bytes
//! and writes whatever frames were appended to [`Connection::output`].

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use triage_protocol::compress::{Decoder, Encoder};

/// How much we ask the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug)]
pub struct Connection {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    /// Compressed bytes not yet decoded (only used once compression is on).
    raw_input: BytesMut,
    /// Plain bytes not yet parsed into commands.
    pub input: BytesMut,
    /// Plain frames not yet written.
    pub output: BytesMut,
    /// Compressed form of `output`, reused between writes.
    wire_output: BytesMut,
    decoder: Option<Decoder>,
    encoder: Option<Encoder>,
    /// The decoder stopped at `max_input` and may have more without new bytes.
    decoder_has_more: bool,
    /// Bound on decoded-but-unparsed input. A whole command always fits, so
    /// the session can always make progress; beyond it, decompression waits
    /// until commands are consumed, and a small compressed frame cannot
    /// expand into unbounded memory.
    max_input: usize,
}

impl Connection {
    pub fn new(stream: TcpStream, max_input: usize) -> Connection {
        // Small frames (responses, single messages) must not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Connection {
            reader,
            writer,
            raw_input: BytesMut::new(),
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(READ_CHUNK),
            wire_output: BytesMut::new(),
            decoder: None,
            encoder: None,
            decoder_has_more: false,
            max_input,
        }
    }

    /// Reads once from the socket and makes the new bytes available in
    /// `input`. Returns `Ok(false)` at end of stream. Cancel-safe: the only
    /// await is a single `read_buf`.
    pub async fn read(&mut self) -> io::Result<bool> {
        if self.decoder.is_none() {
            self.input.reserve(READ_CHUNK);
            return Ok(self.reader.read_buf(&mut self.input).await? > 0);
        }
        // Hand out what the decoder held back before reading more from the socket.
        if self.decoder_has_more {
            let before = self.input.len();
            self.decode()?;
            if self.input.len() > before {
                return Ok(true);
            }
        }
        self.raw_input.reserve(READ_CHUNK);
        if self.reader.read_buf(&mut self.raw_input).await? == 0 {
            return Ok(false);
        }
        self.decode()?;
        Ok(true)
    }

    fn decode(&mut self) -> io::Result<()> {
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(());
        };
        let room = self.max_input.saturating_sub(self.input.len());
        if room == 0 {
            // Cannot happen while commands are smaller than max_input; refuse rather than spin.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "decompressed command too large",
            ));
        }
        self.decoder_has_more = decoder
            .decode(&mut self.raw_input, &mut self.input, room)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(())
    }

    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// Writes all pending output, compressed if negotiated, within `timeout`
    /// (a client that stops reading is cut off, not allowed to stall us forever).
    pub async fn flush(&mut self, timeout: Duration) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let bytes: &[u8] = match self.encoder.as_mut() {
            Some(encoder) => {
                self.wire_output.clear();
                encoder.encode(&self.output, &mut self.wire_output);
                &self.wire_output
            }
            None => &self.output,
        };
        match tokio::time::timeout(timeout, self.writer.write_all(bytes)).await {
            Ok(result) => result?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
        }
        self.output.clear();
        Ok(())
    }

    /// Switches both directions to a compressed stream. Plain bytes read but
    /// not yet parsed were in fact already compressed, so they move back to
    /// the raw side to be decoded.
    pub fn enable_compression(&mut self, encoder: Encoder, decoder: Decoder) -> io::Result<()> {
        let leftover = self.input.split();
        self.raw_input.extend_from_slice(&leftover);
        self.encoder = Some(encoder);
        self.decoder = Some(decoder);
        if !self.raw_input.is_empty() {
            self.decode()?;
        }
        Ok(())
    }

    /// Best-effort close after a final flush.
    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}
