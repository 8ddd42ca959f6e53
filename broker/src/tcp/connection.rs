//! A client's socket with its buffers and, once negotiated, its TLS session
//! and its compression.
//!
//! Knows bytes, not commands: it fills [`Connection::input`] with plain bytes
//! and writes whatever frames were appended to [`Connection::output`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use triage_protocol::compress::{Decoder, Encoder};

use crate::tls::TlsInfo;

/// The socket, plain or upgraded to TLS. One owner reads and writes it in
/// turn (the session never does both at once), so it is not split.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while an upgrade holds the socket, or after it failed.
    Gone,
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "connection lost in a TLS upgrade",
    )
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// How much we ask the socket for at a time.
const READ_CHUNK: usize = 16 * 1024;
/// The most room made at once for a command whose length is known: a
/// client announcing a large body gets room as its bytes arrive, a MiB at
/// a time, not all of `max_input` for a header.
const MAX_RESERVE: usize = 1024 * 1024;

#[derive(Debug)]
pub struct Connection {
    stream: Stream,
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
    /// How much room the next read makes (see [`Connection::expect_command`]).
    next_read: usize,
    /// The length of the last whole command read: the next one is likely
    /// the same (a publisher's MPUBs of one batch size).
    last_command_len: usize,
    /// The socket's receive low-water mark as last set (1: the default).
    low_water: usize,
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
        Connection {
            stream: Stream::Plain(stream),
            raw_input: BytesMut::new(),
            input: BytesMut::with_capacity(READ_CHUNK),
            output: BytesMut::with_capacity(READ_CHUNK),
            wire_output: BytesMut::new(),
            decoder: None,
            encoder: None,
            decoder_has_more: false,
            next_read: READ_CHUNK,
            last_command_len: 0,
            low_water: 1,
            max_input,
        }
    }

    /// Reads once from the socket and makes the new bytes available in
    /// `input`. Returns `Ok(false)` at end of stream. Cancel-safe: the only
    /// await is a single `read_buf`.
    pub async fn read(&mut self) -> io::Result<bool> {
        if self.decoder.is_none() {
            self.input.reserve(self.next_read.max(1));
            return Ok(self.stream.read_buf(&mut self.input).await? > 0);
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
        if self.stream.read_buf(&mut self.raw_input).await? == 0 {
            return Ok(false);
        }
        self.decode()?;
        Ok(true)
    }

    /// Lets the socket wake the session only once `bytes` of input are
    /// buffered (1: any byte; see `socket_option`). Plain TCP only; best
    /// effort: if the kernel refuses, the mark stays as it was, which only
    /// costs wake-ups.
    pub fn wake_on_input(&mut self, bytes: usize) {
        if bytes == self.low_water {
            return;
        }
        if let Stream::Plain(stream) = &self.stream {
            if super::socket_option::set_recv_low_water(stream, bytes).is_ok() {
                self.low_water = bytes;
            }
        }
    }

    /// The session could not decode a whole command from `input`
    /// (`last_command_len`: the length of the last one it did, if any).
    /// The next read makes room for the rest of the command when its length
    /// is known, else for one like the last: a large MPUB then lands in one
    /// buffer of its size, where growing the buffer a chunk at a time copied
    /// what had arrived onto fresh pages at each step, and a buffer larger
    /// than the command would stay allocated as long as its messages.
    pub fn expect_command(&mut self, last_command_len: Option<usize>) {
        if let Some(len) = last_command_len {
            self.last_command_len = len;
        }
        let next_read = match triage_protocol::pending_command_len(&self.input) {
            Some(len) => len.min(self.max_input).saturating_sub(self.input.len()),
            None => self.last_command_len.max(READ_CHUNK),
        };
        self.next_read = next_read.min(MAX_RESERVE);
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
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(bytes).await?;
            // A TLS stream holds records until flushed; a TCP flush is free.
            stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
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

    /// Runs the server side of a TLS handshake on the socket, within
    /// `timeout`; from then on every byte in either direction is encrypted.
    /// The client must wait for the IDENTIFY reply before starting it, so
    /// plain bytes already read would be a protocol error.
    pub async fn upgrade_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> io::Result<TlsInfo> {
        if !self.input.is_empty() || self.decoder.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bytes arrived before the TLS handshake",
            ));
        }
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the connection is already upgraded",
            ));
        };
        let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ))
            }
        };
        let info = TlsInfo::of(tls.get_ref().1);
        self.stream = Stream::Tls(Box::new(tls));
        Ok(info)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Best-effort close after a final flush.
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
