//! One broker socket: buffered bytes in and out, frame decoding, and
//! request/response helpers that answer heartbeats while they wait. Shared by
//! the consumer's connections and the deferral producer.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use triage_protocol::frame::parse_error_text;
use triage_protocol::{decode_frame, Command, Frame, MAGIC_V2};

use crate::error::ConsumerError;

/// One socket: the bytes in and out, and the frame-level helpers.
#[derive(Debug)]
pub(crate) struct Wire {
    reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
    input: BytesMut,
    pub(crate) output: BytesMut,
    max_frame_size: u32,
    write_timeout: Duration,
}

impl Wire {
    /// Connects to `address` by `deadline` and queues the V2 magic.
    ///
    /// # Errors
    /// [`ConsumerError::Connect`] when the broker cannot be reached in time.
    pub(crate) async fn connect(
        address: &str,
        deadline: Instant,
        max_frame_size: u32,
        write_timeout: Duration,
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
            max_frame_size,
            write_timeout,
        })
    }

    pub(crate) fn queue(&mut self, command: &Command) {
        command.encode(&mut self.output);
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ConsumerError> {
        if self.output.is_empty() {
            return Ok(());
        }
        tokio::time::timeout(self.write_timeout, self.writer.write_all(&self.output))
            .await
            .map_err(|_| ConsumerError::TimedOut("the broker to read"))??;
        self.output.clear();
        Ok(())
    }

    /// Reads once; cancel-safe (a single `read_buf`).
    pub(crate) async fn read_more(&mut self) -> Result<(), ConsumerError> {
        self.input.reserve(16 * 1024);
        if self.reader.read_buf(&mut self.input).await? == 0 {
            return Err(ConsumerError::Closed);
        }
        Ok(())
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
        let name = command.name();
        self.queue(command);
        self.flush().await?;
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
