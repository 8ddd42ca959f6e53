//! Finding brokers through lookupd (triage-lookupd or nsqlookupd): one
//! `GET /lookup?topic=` against one lookupd's HTTP API, and the producers'
//! TCP addresses it lists. The consumer polls every configured lookupd with
//! this and connects to each address it has not connected to yet.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::StatusCode;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use triage_config::worker::lookupd_authority;

/// One client (and connection pool) for every lookupd of a consumer.
pub(crate) type LookupClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn lookup_client() -> LookupClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A `/lookup` answer is a few hundred bytes a producer; more is not a lookupd.
const MAX_LOOKUP_BODY: usize = 4 * 1024 * 1024;

/// Why one lookupd could not be asked; logged, and the next poll tries again.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LookupError {
    #[error("lookupd {lookupd}: {reason}")]
    Failed { lookupd: String, reason: String },
}

/// The part of a `/lookup` answer the consumer needs.
#[derive(Debug, Deserialize)]
struct LookupAnswer {
    #[serde(default)]
    producers: Vec<Producer>,
}

#[derive(Debug, Deserialize)]
struct Producer {
    broadcast_address: String,
    tcp_port: u16,
}

/// The TCP addresses (`broadcast_address:tcp_port`) of a `/lookup` body's
/// producers; an IPv6 broadcast address gets its brackets.
fn producer_addresses(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let answer: LookupAnswer = serde_json::from_slice(body)?;
    Ok(answer
        .producers
        .into_iter()
        .map(|p| {
            if p.broadcast_address.contains(':') && !p.broadcast_address.starts_with('[') {
                format!("[{}]:{}", p.broadcast_address, p.tcp_port)
            } else {
                format!("{}:{}", p.broadcast_address, p.tcp_port)
            }
        })
        .collect())
}

/// Asks `lookupd` which brokers have `topic`, within `timeout`. A 404 (no
/// broker has the topic yet) is no producers.
pub(crate) async fn lookup(
    client: &LookupClient,
    lookupd: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<String>, LookupError> {
    let failed = |reason: String| LookupError::Failed {
        lookupd: lookupd.to_owned(),
        reason,
    };
    let authority = lookupd_authority(lookupd).ok_or_else(|| failed("not host:port".into()))?;
    // Topic names are [.a-zA-Z0-9_-]+ (#ephemeral): nothing to escape but `#`.
    let uri: hyper::Uri = format!(
        "http://{authority}/lookup?topic={}",
        topic.replace('#', "%23")
    )
    .parse()
    .map_err(|e: hyper::http::uri::InvalidUri| failed(e.to_string()))?;
    let request = hyper::Request::get(uri)
        .header(hyper::header::ACCEPT, "application/vnd.nsq; version=1.0")
        .body(Empty::new())
        .map_err(|e| failed(e.to_string()))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_LOOKUP_BODY)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the answer: {e}")))?
            .to_bytes();
        Ok::<_, LookupError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {timeout:?}")))??;
    match status {
        StatusCode::OK => producer_addresses(&body).map_err(|e| failed(e.to_string())),
        StatusCode::NOT_FOUND => Ok(Vec::new()),
        other => Err(failed(format!("HTTP status {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_become_tcp_addresses() {
        let body = br#"{"channels":["w"],"producers":[
            {"remote_address":"127.0.0.1:5000","hostname":"a","broadcast_address":"10.0.0.1",
             "tcp_port":4150,"http_port":4151,"version":"1.3.0"},
            {"broadcast_address":"::1","hostname":"b","tcp_port":4250,"http_port":4251}]}"#;
        assert_eq!(
            producer_addresses(body).unwrap(),
            ["10.0.0.1:4150", "[::1]:4250"]
        );
        assert_eq!(
            producer_addresses(br#"{"channels":[],"producers":[]}"#).unwrap(),
            Vec::<String>::new()
        );
        assert!(producer_addresses(b"<html>").is_err());
    }
}
