//! Shared harness for triage-lookupd's tests: a lookupd on loopback with
//! ephemeral ports, a hand-written protocol V1 client and a hand-written
//! HTTP/1.1 client, so a test sees exactly the bytes lookupd sends. Every
//! read has a deadline: a lookupd that goes silent fails the test.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use triage_lookupd::{Lookupd, Options};

pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn start_lookupd(tweak: impl FnOnce(&mut Options)) -> Lookupd {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut options = Options {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        broadcast_address: "lookupd.test".into(),
        ..Options::default()
    };
    tweak(&mut options);
    Lookupd::start(options).await.expect("lookupd starts")
}

/// A raw protocol V1 client.
#[derive(Debug)]
pub struct V1Client {
    pub stream: TcpStream,
}

impl V1Client {
    /// Connects and sends the magic.
    pub async fn connect(addr: SocketAddr) -> V1Client {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"  V1").await.expect("magic");
        V1Client { stream }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// One `[4-byte length][data]` reply, as text.
    pub async fn reply(&mut self) -> String {
        let read = async {
            let size = self.stream.read_u32().await?;
            let mut data = vec![0; size as usize];
            self.stream.read_exact(&mut data).await?;
            std::io::Result::Ok(data)
        };
        let data = timeout(READ_TIMEOUT, read)
            .await
            .expect("a reply in time")
            .expect("a reply");
        String::from_utf8(data).expect("UTF-8 reply")
    }

    /// Sends a command line and returns the reply.
    pub async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes()).await;
        self.reply().await
    }

    /// IDENTIFY with a JSON body; returns the reply.
    pub async fn identify(&mut self, body: &Value) -> String {
        let body = body.to_string();
        let mut bytes = b"IDENTIFY\n".to_vec();
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(body.as_bytes());
        self.send(&bytes).await;
        self.reply().await
    }

    /// Asserts lookupd closes the connection (reads hit EOF).
    pub async fn expect_closed(&mut self) {
        let mut buf = [0u8; 64];
        let n = timeout(READ_TIMEOUT, self.stream.read(&mut buf))
            .await
            .expect("lookupd closes the connection in time")
            .unwrap_or(0);
        assert_eq!(n, 0, "expected EOF, got {:?}", &buf[..n]);
    }
}

/// A node's IDENTIFY body as nsqd sends it.
pub fn node(broadcast_address: &str, tcp_port: u16, http_port: u16) -> Value {
    serde_json::json!({
        "broadcast_address": broadcast_address,
        "tcp_port": tcp_port,
        "http_port": http_port,
        "version": "1.3.0",
        "hostname": "node.test",
        "topology_zone": "",
        "topology_region": "",
    })
}

/// An identified client.
pub async fn identified(addr: SocketAddr, body: &Value) -> V1Client {
    let mut client = V1Client::connect(addr).await;
    let reply = client.identify(body).await;
    assert!(reply.starts_with('{'), "IDENTIFY reply {reply}");
    client
}

#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`; the reply read to EOF.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> HttpReply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        std::io::Result::Ok(raw)
    };
    let raw = timeout(READ_TIMEOUT, exchange)
        .await
        .expect("an HTTP reply in time")
        .expect("an HTTP reply");
    let raw = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

pub async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let reply = http(addr, "GET", path).await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    reply.json()
}

/// Polls `check` until it returns `Some`, or fails the test after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `tcp_port`s of `/lookup?topic=`'s producers, sorted; empty on 404.
pub async fn lookup_ports(http_addr: SocketAddr, topic: &str) -> Vec<u64> {
    let reply = http(http_addr, "GET", &format!("/lookup?topic={topic}")).await;
    if reply.status == 404 {
        return Vec::new();
    }
    let mut ports: Vec<u64> = reply.json()["producers"]
        .as_array()
        .expect("producers")
        .iter()
        .map(|p| p["tcp_port"].as_u64().expect("tcp_port"))
        .collect();
    ports.sort_unstable();
    ports
}
