//! The two admin calls a run needs on triaged's HTTP port: create a topic
//! with its tier, create a channel. A few lines of HTTP/1.1 over a plain
//! socket (`Connection: close`, read to the end) rather than an HTTP client
//! dependency for two POSTs.

use std::net::SocketAddr;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::Tier;

/// The whole exchange, connect to last byte.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Admin replies are a word or a short JSON error; more is not an admin reply.
const MAX_REPLY: u64 = 64 * 1024;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("HTTP request to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP request to {0} timed out")]
    Timeout(SocketAddr),
    #[error("POST {path} answered {status}: {body}")]
    Status {
        path: String,
        status: String,
        body: String,
    },
    #[error("{0} did not answer HTTP")]
    NotHttp(SocketAddr),
}

/// `POST /topic/create?topic=..&tier=..[&delay=ms]`.
///
/// # Errors
/// See [`post`].
pub async fn create_topic(
    http: SocketAddr,
    topic: &str,
    tier: Option<Tier>,
    delay: Option<std::time::Duration>,
) -> Result<(), AdminError> {
    let mut path = format!("/topic/create?topic={}", escape(topic));
    if let Some(tier) = tier {
        path.push_str("&tier=");
        path.push_str(tier.as_str());
    }
    if let Some(delay) = delay {
        path.push_str(&format!("&delay={}", delay.as_millis()));
    }
    post(http, &path).await
}

/// `POST /channel/create?topic=..&channel=..`.
///
/// # Errors
/// See [`post`].
pub async fn create_channel(
    http: SocketAddr,
    topic: &str,
    channel: &str,
) -> Result<(), AdminError> {
    let path = format!(
        "/channel/create?topic={}&channel={}",
        escape(topic),
        escape(channel)
    );
    post(http, &path).await
}

/// Sends an empty POST and succeeds on a 2xx status.
///
/// # Errors
/// [`AdminError::Status`] with the reply's first line of body for any other
/// status; I/O errors, a timeout, or a reply that is not HTTP.
pub async fn post(addr: SocketAddr, path: &str) -> Result<(), AdminError> {
    let reply = tokio::time::timeout(TIMEOUT, exchange(addr, path))
        .await
        .map_err(|_| AdminError::Timeout(addr))?
        .map_err(|source| AdminError::Io { addr, source })?;
    let (status, body) = parse_reply(&reply).ok_or(AdminError::NotHttp(addr))?;
    if status.starts_with('2') {
        Ok(())
    } else {
        Err(AdminError::Status {
            path: path.to_owned(),
            status,
            body: body.lines().next().unwrap_or("").trim().to_owned(),
        })
    }
}

async fn exchange(addr: SocketAddr, path: &str) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut reply = Vec::new();
    stream.take(MAX_REPLY).read_to_end(&mut reply).await?;
    Ok(reply)
}

/// The status code and the body of an HTTP/1.x reply.
fn parse_reply(reply: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (code.to_owned(), body.to_owned()))
}

/// Names are `[.a-zA-Z0-9_-]` plus an optional `#ephemeral`: only `#` needs escaping.
fn escape(name: &str) -> String {
    name.replace('#', "%23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_to_status_and_body() {
        let reply = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 5\r\n\r\nNOPE\n";
        assert_eq!(
            parse_reply(reply),
            Some(("400".to_owned(), "NOPE\n".to_owned()))
        );
        assert_eq!(parse_reply(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_reply(b""), None);
    }

    #[test]
    fn ephemeral_names_are_escaped() {
        assert_eq!(escape("t#ephemeral"), "t%23ephemeral");
    }
}
