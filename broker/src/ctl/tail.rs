//! `triagectl tail`, like `nsq_tail`: subscribes to a topic over TCP
//! (protocol V2) on an ephemeral channel of its own, writes each message body
//! on a line, finishes it, and stops after `limit` messages or when the
//! connection ends. The ephemeral channel goes with the connection, so
//! tailing takes nothing from the topic's real consumers.

use std::io::Write;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use triage_protocol::{decode_frame, Command, Frame, Limits, MAGIC_V2};

use super::client::CtlError;

/// At most this many messages in flight to the tail at once, as nsq_tail's
/// default `max-in-flight`; always within the broker's default RDY bound.
pub const MAX_IN_FLIGHT: u64 = 200;

/// How long connecting and the SUB's answer may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What to tail and for how long.
#[derive(Debug, Clone)]
pub struct Tail {
    /// The broker's TCP address, `host:port`.
    pub addr: String,
    pub topic: String,
    /// Must end in `#ephemeral` to leave no trace; [`ephemeral_channel`] makes one.
    pub channel: String,
    /// Stop after this many messages; `None` tails until the broker closes.
    pub limit: Option<u64>,
}

/// `tail<6 digits>#ephemeral`, as nsq_tail names its channels.
pub fn ephemeral_channel() -> String {
    format!("tail{:06}#ephemeral", rand::random_range(0..1_000_000))
}

/// A V2 connection with its read buffer.
struct Connection {
    stream: TcpStream,
    input: BytesMut,
    addr: String,
}

impl Connection {
    fn io_error(&self, err: std::io::Error) -> CtlError {
        CtlError::Unreachable {
            addr: self.addr.clone(),
            reason: err.to_string(),
        }
    }

    async fn send(&mut self, commands: &[Command]) -> Result<(), CtlError> {
        let mut out = BytesMut::new();
        for command in commands {
            command.encode(&mut out);
        }
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| self.io_error(e))
    }

    /// The next frame; `Ok(None)` when the broker closed the connection.
    async fn frame(&mut self) -> Result<Option<Frame>, CtlError> {
        let limits = Limits::default();
        // A message frame: its body plus the frame and message headers.
        let max_frame = limits.max_body_size.saturating_add(64);
        loop {
            match decode_frame(&mut self.input, max_frame) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(e) => return Err(CtlError::Protocol(e.to_string())),
            }
            let read = self
                .stream
                .read_buf(&mut self.input)
                .await
                .map_err(|e| self.io_error(e))?;
            if read == 0 {
                return Ok(None);
            }
        }
    }
}

/// Runs `tail`, writing each body and a newline to `out` (flushed per
/// message, so a pipe sees it at once). Returns how many were written.
///
/// # Errors
/// [`CtlError::Unreachable`] when the broker cannot be reached or the
/// connection fails, [`CtlError::Protocol`] when the broker refuses the
/// subscription (its `E_*` code and reason), or writing to `out` fails.
pub async fn tail(spec: &Tail, out: &mut dyn Write) -> Result<u64, CtlError> {
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(&spec.addr))
        .await
        .map_err(|_| CtlError::Timeout {
            addr: spec.addr.clone(),
        })?
        .map_err(|e| CtlError::Unreachable {
            addr: spec.addr.clone(),
            reason: e.to_string(),
        })?;
    let mut conn = Connection {
        stream,
        input: BytesMut::with_capacity(64 * 1024),
        addr: spec.addr.clone(),
    };
    conn.stream
        .write_all(&MAGIC_V2)
        .await
        .map_err(|e| conn.io_error(e))?;
    conn.send(&[Command::Sub {
        topic: spec.topic.clone(),
        channel: spec.channel.clone(),
    }])
    .await?;
    let answer = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.frame())
        .await
        .map_err(|_| CtlError::Timeout {
            addr: spec.addr.clone(),
        })??;
    match answer {
        Some(Frame::Response(ok)) if ok.as_ref() == triage_protocol::OK => {}
        other => return Err(refused(other)),
    }
    let rdy = spec.limit.unwrap_or(MAX_IN_FLIGHT).min(MAX_IN_FLIGHT);
    if spec.limit == Some(0) {
        return Ok(0);
    }
    conn.send(&[Command::Rdy(rdy)]).await?;

    let mut written = 0;
    loop {
        let Some(frame) = conn.frame().await? else {
            return Err(CtlError::Unreachable {
                addr: spec.addr.clone(),
                reason: "the broker closed the connection".to_owned(),
            });
        };
        match frame {
            Frame::Message(msg) => {
                let mut line = msg.body.to_vec();
                line.push(b'\n');
                out.write_all(&line)
                    .and_then(|()| out.flush())
                    .map_err(CtlError::Output)?;
                written += 1;
                if spec.limit == Some(written) {
                    // No more deliveries, this one done, then a clean close:
                    // CLOSE_WAIT comes after the FIN has been applied.
                    conn.send(&[Command::Rdy(0), Command::Fin(msg.id), Command::Cls])
                        .await?;
                    return close(&mut conn).await.map(|()| written);
                }
                conn.send(&[Command::Fin(msg.id)]).await?;
            }
            Frame::Response(data) if data.as_ref() == triage_protocol::HEARTBEAT => {
                conn.send(&[Command::Nop]).await?;
            }
            Frame::Response(_) => {}
            Frame::Error(text) => {
                return Err(CtlError::Protocol(
                    String::from_utf8_lossy(&text).into_owned(),
                ))
            }
        }
    }
}

/// Reads up to `CLOSE_WAIT` (or the end of the stream). Messages that were
/// already on their way are left unfinished; the broker requeues them when
/// the connection closes.
async fn close(conn: &mut Connection) -> Result<(), CtlError> {
    let wait = async {
        while let Some(frame) = conn.frame().await? {
            if matches!(&frame, Frame::Response(data) if data.as_ref() == triage_protocol::CLOSE_WAIT)
            {
                break;
            }
        }
        Ok(())
    };
    // Everything asked for was written already: a broker slow to say goodbye
    // is not worth an error.
    tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
        .await
        .unwrap_or(Ok(()))
}

fn refused(answer: Option<Frame>) -> CtlError {
    CtlError::Protocol(match answer {
        Some(Frame::Error(text)) => String::from_utf8_lossy(&text).into_owned(),
        Some(other) => format!("unexpected answer to SUB: {other:?}"),
        None => "the broker closed the connection after SUB".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_valid_and_ephemeral() {
        let name = ephemeral_channel();
        assert!(
            triage_protocol::names::is_valid_channel_name(&name),
            "{name}"
        );
        assert!(triage_protocol::names::is_ephemeral(&name), "{name}");
    }
}
