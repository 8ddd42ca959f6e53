//! The TCP side: nsqlookupd's protocol `"  V1"` (`nsqlookupd/tcp.go`,
//! `lookup_protocol_v1.go`). After the 4-byte magic a node sends
//! newline-terminated commands ([`commands`]); every reply, error or not, is
//! `[4-byte big-endian length][data]` with no frame type. Every error is
//! fatal: the reply is sent and the connection closed, as nsqlookupd does.
//! When a connection closes, everything its node registered goes with it.

pub mod commands;

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::options::{HANDSHAKE_TIMEOUT, MAX_LINE_LEN};
use crate::server::Shared;
use commands::{CommandError, Connection};

pub const MAGIC_V1: &[u8; 4] = b"  V1";

/// Accepts until shutdown; one task per connection, at most `max_connections`.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    // Owned permits move into each connection task and free a slot when it ends.
    let slots = Arc::new(Semaphore::new(shared.options.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared_for_task = shared.clone();
                shared.tracker.spawn(async move {
                    handle(shared_for_task, stream).await;
                    drop(permit);
                });
            }
            // Out of file descriptors and the like: log and keep serving.
            Err(e) => tracing::warn!(error = %e, "TCP accept failed"),
        }
    }
}

/// `[4-byte big-endian length][data]`, nsqlookupd's `SendResponse`.
pub fn encode_response(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

async fn handle(shared: Arc<Shared>, mut stream: TcpStream) {
    let remote = match stream.peer_addr() {
        Ok(addr) => addr.to_string(),
        Err(_) => return,
    };
    let mut magic = [0u8; 4];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut magic)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    if &magic != MAGIC_V1 {
        tracing::warn!(client = %remote, magic = ?String::from_utf8_lossy(&magic), "bad protocol magic");
        let _ = stream.write_all(&encode_response(b"E_BAD_PROTOCOL")).await;
        return;
    }
    tracing::info!(client = %remote, "lookup client connected");
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut connection = Connection::new(shared.clone(), remote.clone());
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            read = read_line(&mut reader, &mut line) => read,
        };
        let reply = match read {
            Ok(true) => connection.execute(&line, &mut reader).await,
            Ok(false) => break,
            Err(e) => Err(e),
        };
        let (data, fatal) = match reply {
            Ok(data) => (data, false),
            Err(e) => {
                tracing::warn!(client = %remote, error = %e, "closing lookup client");
                (e.to_string().into_bytes(), true)
            }
        };
        if write.write_all(&encode_response(&data)).await.is_err() || fatal {
            break;
        }
    }
    connection.close();
    tracing::info!(client = %remote, "lookup client gone");
}

/// Reads one line into `line` (newline included). `Ok(false)` at the end
/// of the stream, including a last line with no newline, which nsqlookupd
/// does not execute either.
async fn read_line<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    line: &mut Vec<u8>,
) -> Result<bool, CommandError> {
    let limit = MAX_LINE_LEN as u64 + 1;
    match (&mut *reader).take(limit).read_until(b'\n', line).await {
        Ok(_) if line.ends_with(b"\n") => Ok(true),
        Ok(n) if n as u64 >= limit => Err(CommandError::invalid(format!(
            "command line longer than {MAX_LINE_LEN} bytes"
        ))),
        _ => Ok(false),
    }
}
