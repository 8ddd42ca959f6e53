//! One broker socket: buffered bytes in and out, frame decoding, snappy or
//! deflate once IDENTIFY negotiated them, and request/response helpers that
//! answer heartbeats while they wait. Shared by the consumer's connections
//! and the deferral producer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use triage_protocol::compress::{deflate_pair, snappy_pair, Decoder, Encoder};
use triage_protocol::frame::parse_error_text;
use triage_protocol::{decode_frame, Command, Frame, MAGIC_V2};

use crate::consumer::ConsumerConfig;
use crate::error::ConsumerError;

/// One socket: the bytes in and out, and the frame-level helpers.
#[derive(Debug)]
pub(crate) struct Wire {
    reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
    /// Plain bytes not yet decoded into frames.
    input: BytesMut,
    /// Plain commands not yet written.
    pub(crate) output: BytesMut,
    max_frame_size: u32,
    write_timeout: Duration,
    /// Set once compression is on: the stream transform each way.
    compression: Option<Compressed>,
}

/// A compressed stream's state.
#[derive(Debug)]
struct Compressed {
    encoder: Encoder,
    decoder: Decoder,
    /// Compressed bytes read and not yet decoded.
    raw_input: BytesMut,
    /// `output` compressed, reused between writes.
    raw_output: BytesMut,
    /// The decoder stopped at its output bound and may hold more plain bytes.
    has_more: bool,
}

/// What IDENTIFY asks the broker to compress with; defined with the config file it is read from.
pub use triage_config::worker::Compression;

impl Wire {
    /// Connects to the broker at `address` by `deadline` and queues the V2 magic.
    ///
    /// # Errors
    /// [`ConsumerError::Connect`] when the broker cannot be reached in time.
    pub(crate) async fn connect(
        config: &ConsumerConfig,
        address: &str,
        deadline: Instant,
    ) -> Result<Wire, ConsumerError> {
        let connect_failed = |source| ConsumerError::Connect {
            address: address.to_owned(),
            source,
        };
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(address))
            .await
            .map_err(|_| connect_failed(std::io::ErrorKind::TimedOut.into()))?
            .map_err(connect_failed)?;
        // FIN, REQ, TOUCH and PUB replies are small and must not wait for Nagle.
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let mut output = BytesMut::new();
        output.extend_from_slice(&MAGIC_V2);
        Ok(Wire {
            reader,
            writer,
            input: BytesMut::with_capacity(16 * 1024),
            output,
            max_frame_size: config.max_frame_size,
            write_timeout: config.write_timeout,
            compression: None,
        })
    }

    /// Switches both directions to `compression`'s stream; called right after
    /// the plain IDENTIFY reply, as the broker switches right after sending it.
    /// Bytes already read past that reply were compressed, so they are decoded again.
    ///
    /// # Errors
    /// [`ConsumerError::Io`] when those bytes are not a valid stream.
    pub(crate) fn enable_compression(
        &mut self,
        compression: Compression,
    ) -> Result<(), ConsumerError> {
        let (encoder, decoder) = match compression {
            Compression::None => return Ok(()),
            Compression::Snappy => snappy_pair(),
            Compression::Deflate(level) => deflate_pair(u32::from(level)),
        };
        self.compression = Some(Compressed {
            encoder,
            decoder,
            raw_input: self.input.split(),
            raw_output: BytesMut::new(),
            has_more: false,
        });
        self.decode()
    }

    /// Decodes buffered compressed bytes into `input`, at most a frame's worth
    /// beyond what is there, so a small compressed chunk cannot expand without bound.
    fn decode(&mut self) -> Result<(), ConsumerError> {
        let Some(c) = self.compression.as_mut() else {
            return Ok(());
        };
        let bound = self.max_frame_size as usize + 4 + 64 * 1024;
        let room = bound.saturating_sub(self.input.len()).max(1);
        c.has_more = c
            .decoder
            .decode(&mut c.raw_input, &mut self.input, room)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(())
    }

    pub(crate) fn queue(&mut self, command: &Command) {
        command.encode(&mut self.output);
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ConsumerError> {
        if self.output.is_empty() {
            return Ok(());
        }
        let bytes: &[u8] = match self.compression.as_mut() {
            Some(c) => {
                c.raw_output.clear();
                c.encoder.encode(&self.output, &mut c.raw_output);
                &c.raw_output
            }
            None => &self.output,
        };
        tokio::time::timeout(self.write_timeout, self.writer.write_all(bytes))
            .await
            .map_err(|_| ConsumerError::TimedOut("the broker to read"))??;
        self.output.clear();
        Ok(())
    }

    /// Reads once; cancel-safe (a single `read_buf`).
    pub(crate) async fn read_more(&mut self) -> Result<(), ConsumerError> {
        let Some(c) = self.compression.as_mut() else {
            self.input.reserve(16 * 1024);
            if self.reader.read_buf(&mut self.input).await? == 0 {
                return Err(ConsumerError::Closed);
            }
            return Ok(());
        };
        // Hand out what the decoder held back before reading more.
        if c.has_more {
            let before = self.input.len();
            self.decode()?;
            if self.input.len() > before {
                return Ok(());
            }
        }
        let Some(c) = self.compression.as_mut() else {
            return Ok(());
        };
        c.raw_input.reserve(16 * 1024);
        if self.reader.read_buf(&mut c.raw_input).await? == 0 {
            return Err(ConsumerError::Closed);
        }
        self.decode()
    }

    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, ConsumerError> {
        Ok(decode_frame(&mut self.input, self.max_frame_size)?)
    }

    /// Sends `command` and returns the response to it, answering heartbeats meanwhile.
    pub(crate) async fn request(
        &mut self,
        command: &Command,
        deadline: Instant,
    ) -> Result<Bytes, ConsumerError> {
        self.queue(command);
        self.flush().await?;
        self.response(command.name(), deadline).await
    }

    /// Waits for the next response (an answer to `name`), answering heartbeats meanwhile.
    pub(crate) async fn response(
        &mut self,
        name: &'static str,
        deadline: Instant,
    ) -> Result<Bytes, ConsumerError> {
        loop {
            while let Some(frame) = self.next_frame()? {
                match frame {
                    Frame::Response(data) if data == triage_protocol::HEARTBEAT => {
                        self.queue(&Command::Nop);
                        self.flush().await?;
                    }
                    Frame::Response(data) => return Ok(data),
                    Frame::Error(data) => return Err(refused(name, &data)),
                    Frame::Message(_) => {
                        return Err(ConsumerError::Unexpected {
                            command: name,
                            reply: "a message".to_owned(),
                        })
                    }
                }
            }
            tokio::time::timeout_at(deadline, self.read_more())
                .await
                .map_err(|_| ConsumerError::TimedOut(name))??;
        }
    }

    /// [`Wire::request`] for commands whose only good answer is `OK`.
    pub(crate) async fn request_ok(
        &mut self,
        command: &Command,
        deadline: Instant,
    ) -> Result<(), ConsumerError> {
        let reply = self.request(command, deadline).await?;
        if reply != triage_protocol::OK {
            return Err(ConsumerError::Unexpected {
                command: command.name(),
                reply: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
        Ok(())
    }
}

pub(crate) fn refused(command: &'static str, data: &[u8]) -> ConsumerError {
    ConsumerError::Refused {
        command,
        code: parse_error_text(data).map(|(code, _)| code),
        text: String::from_utf8_lossy(data).into_owned(),
    }
}
