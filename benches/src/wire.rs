//! One NSQ V2 connection over tokio TCP, built on `triage_protocol`'s codec:
//! commands are queued into an output buffer and written by [`Connection::flush`]
//! (so a consumer sends all the FINs for what one read brought in a single
//! write), frames are cut from an input buffer.
//!
//! Reads that can wait take a deadline or are used inside `select!`; reading
//! is cancel-safe, so a cancelled read loses no bytes.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use triage_protocol::frame::parse_error_text;
use triage_protocol::{decode_frame, Command, Frame, IdentifyRequest, MAGIC_V2};

/// Bounds a frame's declared size before anything is buffered for it: far
/// above any message this tool sends, far below memory trouble.
const MAX_FRAME: u32 = 16 << 20;

/// How long one expected reply (OK, an IDENTIFY answer) may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum WireError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connection to the broker failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker sent an undecodable frame: {0}")]
    Protocol(#[from] triage_protocol::ProtocolError),
    #[error("the broker answered {0}")]
    Broker(String),
    #[error("the broker sent {0} where {1} was expected")]
    Unexpected(String, &'static str),
    #[error("no reply from the broker within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl Connection {
    /// Connects (within `timeout`) and sends the V2 magic.
    ///
    /// # Errors
    /// [`WireError::Connect`] or [`WireError::ConnectTimeout`].
    pub async fn open(addr: SocketAddr, timeout: Duration) -> Result<Connection, WireError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(WireError::ConnectTimeout(addr)),
            Ok(Err(source)) => return Err(WireError::Connect { addr, source }),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            input: BytesMut::with_capacity(64 * 1024),
            output: BytesMut::with_capacity(64 * 1024),
        };
        conn.output.extend_from_slice(&MAGIC_V2);
        Ok(conn)
    }

    /// Adds a command to what the next [`Connection::flush`] writes.
    pub fn queue(&mut self, command: &Command) {
        command.encode(&mut self.output);
    }

    /// Writes everything queued.
    ///
    /// # Errors
    /// [`WireError::Io`] if the socket fails.
    pub async fn flush(&mut self) -> Result<(), WireError> {
        if !self.output.is_empty() {
            self.stream.write_all(&self.output).await?;
            self.output.clear();
        }
        Ok(())
    }

    /// The next whole frame already buffered, if any.
    ///
    /// # Errors
    /// [`WireError::Protocol`] for a frame that does not decode.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, WireError> {
        Ok(decode_frame(&mut self.input, MAX_FRAME)?)
    }

    /// Reads whatever the socket has next into the input buffer. Cancel-safe.
    ///
    /// # Errors
    /// [`WireError::Closed`] at end of stream, [`WireError::Io`] otherwise.
    pub async fn fill(&mut self) -> Result<(), WireError> {
        self.input.reserve(64 * 1024);
        match self.stream.read_buf(&mut self.input).await {
            Ok(0) => Err(WireError::Closed),
            Ok(_) => Ok(()),
            Err(e) if is_disconnect(&e) => Err(WireError::Closed),
            Err(e) => Err(e.into()),
        }
    }

    /// The next frame that is not a heartbeat, by `deadline`; heartbeats are
    /// answered with NOP as they pass.
    ///
    /// # Errors
    /// [`WireError::Timeout`] past the deadline, or what reading fails with.
    pub async fn next_reply(&mut self, deadline: Instant) -> Result<Frame, WireError> {
        loop {
            while let Some(frame) = self.buffered_frame()? {
                if is_heartbeat(&frame) {
                    self.queue(&Command::Nop);
                    self.flush().await?;
                    continue;
                }
                return Ok(frame);
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Err(_) => return Err(WireError::Timeout(REPLY_TIMEOUT)),
                Ok(filled) => filled?,
            }
        }
    }

    /// Flushes, then waits (at most [`REPLY_TIMEOUT`]) for `OK`.
    ///
    /// # Errors
    /// [`WireError::Broker`] with the error text if the broker refused,
    /// [`WireError::Unexpected`] for any other frame, or what reading fails with.
    pub async fn expect_ok(&mut self) -> Result<(), WireError> {
        self.flush().await?;
        match self.next_reply(Instant::now() + REPLY_TIMEOUT).await? {
            Frame::Response(data) if data == triage_protocol::OK => Ok(()),
            other => Err(unexpected(other, "OK")),
        }
    }

    /// IDENTIFY with feature negotiation; `output_buffer_timeout_ms` asks for
    /// a flush interval (nsqd and triaged default to 250 ms, which bounds
    /// delivery latency at low rates).
    ///
    /// # Errors
    /// As [`Connection::expect_ok`]; a JSON reply counts as success.
    pub async fn identify(
        &mut self,
        output_buffer_timeout_ms: Option<i64>,
    ) -> Result<(), WireError> {
        let request = IdentifyRequest {
            client_id: "triage-bench".to_owned(),
            hostname: "localhost".to_owned(),
            user_agent: concat!("triage-bench/", env!("CARGO_PKG_VERSION")).to_owned(),
            feature_negotiation: true,
            output_buffer_timeout: output_buffer_timeout_ms.unwrap_or(0),
            ..IdentifyRequest::default()
        };
        self.queue(&Command::Identify(request));
        self.flush().await?;
        match self.next_reply(Instant::now() + REPLY_TIMEOUT).await? {
            Frame::Response(_) => Ok(()),
            other => Err(unexpected(other, "an IDENTIFY reply")),
        }
    }
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

pub fn is_heartbeat(frame: &Frame) -> bool {
    matches!(frame, Frame::Response(data) if data == triage_protocol::HEARTBEAT)
}

/// An error for a frame that should have been something else; error frames
/// become [`WireError::Broker`] with their text.
pub fn unexpected(frame: Frame, wanted: &'static str) -> WireError {
    match frame {
        Frame::Error(data) => WireError::Broker(match parse_error_text(&data) {
            Some((code, description)) => format!("{code} {description}"),
            None => String::from_utf8_lossy(&data).into_owned(),
        }),
        Frame::Response(data) => WireError::Unexpected(
            format!("response {:?}", String::from_utf8_lossy(&data)),
            wanted,
        ),
        Frame::Message(_) => WireError::Unexpected("a message".to_owned(), wanted),
    }
}
