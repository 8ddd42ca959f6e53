//! A small HTTP/1 client for the broker's admin API. Each call is one request
//! with a deadline; a reply is either the body of a 2xx or the broker's
//! `{"message": "CODE"}` as [`CtlError::Api`].

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Long enough for `/stats` on a busy broker; short enough that a hung
/// broker does not hang a script.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages per `/mpub` request when publishing many: well under the default
/// `max_body_size` for small messages, and a bound on what one failure costs.
pub const PUBLISH_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No HTTP exchange happened: connection refused, DNS, reset.
    #[error("cannot reach the broker at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the broker at {addr} did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout { addr: String },
    /// The broker answered with an error status; `message` is its code.
    #[error("{message} (HTTP {status} from {path})")]
    Api {
        status: u16,
        message: String,
        path: String,
    },
    /// A 2xx whose body is not what the API promises.
    #[error("unexpected reply from {path}: {reason}")]
    BadReply { path: String, reason: String },
    /// A lookupd could not tell which brokers there are; `status` is its
    /// HTTP error status when it answered one.
    #[error("cannot use lookupd at {addr}: {reason}")]
    Lookupd {
        addr: String,
        status: Option<u16>,
        reason: String,
    },
    #[error("topic {0:?} does not exist")]
    NoSuchTopic(String),
    /// The broker answered on TCP with an `E_*` error, or broke the protocol.
    #[error("the broker refused: {0}")]
    Protocol(String),
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
}

/// The broker's HTTP admin API at one address.
#[derive(Debug)]
pub struct AdminClient {
    /// `host:port`, as given on the command line.
    addr: String,
    http: Client<HttpConnector, Full<Bytes>>,
    /// The broker's `admin_token`, sent as `Authorization: Bearer`.
    token: Option<String>,
}

impl AdminClient {
    pub fn new(addr: impl Into<String>) -> AdminClient {
        AdminClient {
            addr: addr.into(),
            http: Client::builder(TokioExecutor::new()).build_http(),
            token: None,
        }
    }

    /// Sends `token` as a bearer token with every request.
    pub fn with_token(mut self, token: Option<String>) -> AdminClient {
        self.token = token;
        self
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// # Errors
    /// [`CtlError`] when the broker is unreachable, slow, or answers an error.
    pub async fn get(&self, path: &str) -> Result<Bytes, CtlError> {
        self.request(Method::GET, path, Bytes::new()).await
    }

    /// # Errors
    /// As [`AdminClient::get`].
    pub async fn post(&self, path: &str, body: Bytes) -> Result<Bytes, CtlError> {
        self.request(Method::POST, path, body).await
    }

    /// `/stats?format=json` as parsed JSON, optionally for one topic.
    ///
    /// # Errors
    /// As [`AdminClient::get`], or [`CtlError::BadReply`] if it is not JSON.
    pub async fn stats(
        &self,
        topic: Option<&str>,
        clients: bool,
    ) -> Result<serde_json::Value, CtlError> {
        let path = stats_path(topic, clients);
        let body = self.get(&path).await?;
        serde_json::from_slice(&body).map_err(|e| CtlError::BadReply {
            path,
            reason: format!("not JSON: {e}"),
        })
    }

    /// Publishes `messages` to `topic`: `/pub` for one, binary `/mpub` in
    /// batches of [`PUBLISH_BATCH`] for more. Returns how many were sent.
    ///
    /// # Errors
    /// As [`AdminClient::post`]; batches before a failing one stay published.
    pub async fn publish(&self, topic: &str, messages: &[Vec<u8>]) -> Result<usize, CtlError> {
        if let [one] = messages {
            let path = format!("/pub?topic={}", encode(topic));
            self.post(&path, Bytes::copy_from_slice(one)).await?;
            return Ok(1);
        }
        let path = format!("/mpub?topic={}&binary=true", encode(topic));
        for batch in messages.chunks(PUBLISH_BATCH) {
            self.post(&path, mpub_body(batch)).await?;
        }
        Ok(messages.len())
    }

    async fn request(&self, method: Method, path: &str, body: Bytes) -> Result<Bytes, CtlError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| CtlError::Unreachable {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| CtlError::Unreachable {
                    addr: self.addr.clone(),
                    reason: root_cause(&e),
                })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CtlError::Unreachable {
                    addr: self.addr.clone(),
                    reason: format!("connection lost while reading the reply: {e}"),
                })?
                .to_bytes();
            Ok::<_, CtlError>((status, body))
        };
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| CtlError::Timeout {
                addr: self.addr.clone(),
            })??;
        if status.is_success() {
            return Ok(body);
        }
        Err(CtlError::Api {
            status: status.as_u16(),
            message: api_message(&body),
            path: path.split('?').next().unwrap_or(path).to_owned(),
        })
    }
}

fn stats_path(topic: Option<&str>, clients: bool) -> String {
    let mut path = String::from("/stats?format=json");
    if let Some(topic) = topic {
        path.push_str("&topic=");
        path.push_str(&encode(topic));
    }
    if !clients {
        path.push_str("&include_clients=false");
    }
    path
}

/// The broker's `{"message": ...}`, or the body itself if it is not that shape.
fn api_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
}

/// hyper's top-level errors say only "client error (Connect)"; the useful
/// part ("Connection refused") is at the bottom of the chain.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// nsqd's binary `/mpub` body: a count, then each message as size and bytes.
fn mpub_body(messages: &[Vec<u8>]) -> Bytes {
    let size = 4 + messages.iter().map(|m| 4 + m.len()).sum::<usize>();
    let mut body = BytesMut::with_capacity(size);
    body.put_u32(u32::try_from(messages.len()).unwrap_or(u32::MAX));
    for message in messages {
        body.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        body.put_slice(message);
    }
    body.freeze()
}

/// Percent-encodes a query value. Valid names need it only for the `#` of
/// `#ephemeral`, but nothing else should reach the wire raw either.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_ephemeral_suffix() {
        assert_eq!(encode("jobs#ephemeral"), "jobs%23ephemeral");
        assert_eq!(encode("a.b-c_d"), "a.b-c_d");
    }

    #[test]
    fn mpub_body_is_count_then_sized_messages() {
        let body = mpub_body(&[b"ab".to_vec(), b"c".to_vec()]);
        assert_eq!(&body[..], b"\0\0\0\x02\0\0\0\x02ab\0\0\0\x01c");
    }

    #[test]
    fn api_message_falls_back_to_the_body() {
        assert_eq!(
            api_message(br#"{"message":"TOPIC_NOT_FOUND"}"#),
            "TOPIC_NOT_FOUND"
        );
        assert_eq!(api_message(b"gateway down\n"), "gateway down");
    }
}
