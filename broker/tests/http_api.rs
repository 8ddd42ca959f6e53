//! nsqd's HTTP API against an in-process broker on `127.0.0.1:0`: status
//! codes, error codes, the `X-NSQ-Content-Type` header, `/stats` in nsqd's
//! shape, and that what `/pub` and `/mpub` accept really reaches a TCP
//! consumer. Self-contained: the HTTP client and the minimal V2 consumer live
//! in this file.

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};
use triage_broker::Server;
use triage_config::BrokerConfig;
use triage_protocol::{decode_frame, Command, Frame, Message, MAGIC_V2};

/// Longest any single wait in these tests may take before it counts as a failure.
const DEADLINE: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for. Absence cannot be awaited, so
/// this is the one bounded wait; it only makes a failure to hold messages visible.
const QUIET: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

struct TestBroker {
    server: Server,
    _data: tempfile::TempDir,
}

impl TestBroker {
    async fn start() -> TestBroker {
        TestBroker::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let data = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig {
            tcp_address: "127.0.0.1:0".parse().unwrap(),
            http_address: "127.0.0.1:0".parse().unwrap(),
            data_path: data.path().to_owned(),
            ..BrokerConfig::default()
        };
        configure(&mut config);
        let server = Server::start(config).await.unwrap();
        TestBroker {
            server,
            _data: data,
        }
    }

    fn http(&self) -> SocketAddr {
        self.server.http_addr
    }

    fn tcp(&self) -> SocketAddr {
        self.server.tcp_addr
    }

    async fn get(&self, path: &str) -> Reply {
        request(self.http(), "GET", path, Bytes::new()).await
    }

    async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        request(self.http(), "POST", path, body.into()).await
    }

    /// POSTs and insists on nsqd's plain `OK`.
    async fn post_ok(&self, path: &str, body: impl Into<Bytes>) {
        let reply = self.post(path, body).await;
        assert_eq!(reply.status, 200, "POST {path}: {}", reply.text());
        assert_eq!(reply.text(), "OK", "POST {path}");
    }

    async fn stats(&self, query: &str) -> Value {
        let reply = self.get(&format!("/stats?format=json{query}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()
    }

    /// The topic's `/stats` entry, or `None` if the broker has no such topic.
    async fn topic_stats(&self, topic: &str) -> Option<Value> {
        let stats = self.stats("").await;
        stats["topics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["topic_name"] == topic)
            .cloned()
    }

    async fn channel_stats(&self, topic: &str, channel: &str) -> Option<Value> {
        let topic = self.topic_stats(topic).await?;
        topic["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel_name"] == channel)
            .cloned()
    }

    async fn stop(self) {
        timeout(DEADLINE, self.server.shutdown())
            .await
            .expect("broker shut down in time");
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    /// The code of an nsqd error reply, `{"message": "<CODE>"}`.
    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no message in {:?}", self.text()))
            .to_owned()
    }

    fn nsq_content_type(&self) -> Option<&str> {
        self.headers
            .get("x-nsq-content-type")
            .map(|v| v.to_str().unwrap())
    }

    /// Asserts an nsqd error reply: the status, the code, and the header.
    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body {:?}", self.text());
        assert_eq!(self.message(), code);
        assert_eq!(self.nsq_content_type(), Some("nsq; version=1.0"));
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: Bytes) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Full::new(body))
        .unwrap();
    let exchange = async {
        let response = client.request(req).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    };
    timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no reply within {DEADLINE:?}"))
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The smallest V2 consumer that can prove a message arrived: magic, SUB,
/// RDY, then frames.
struct Consumer {
    stream: TcpStream,
    buf: BytesMut,
}

impl Consumer {
    async fn subscribe(addr: SocketAddr, topic: &str, channel: &str, rdy: u64) -> Consumer {
        let stream = timeout(DEADLINE, TcpStream::connect(addr))
            .await
            .unwrap()
            .unwrap();
        let mut consumer = Consumer {
            stream,
            buf: BytesMut::new(),
        };
        consumer.stream.write_all(&MAGIC_V2).await.unwrap();
        consumer
            .send(Command::Sub {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
            })
            .await;
        match consumer.frame(DEADLINE).await {
            Some(Frame::Response(data)) if &data[..] == b"OK" => {}
            other => panic!("SUB {topic} {channel}: {other:?}"),
        }
        consumer.send(Command::Rdy(rdy)).await;
        consumer
    }

    async fn send(&mut self, command: Command) {
        let mut out = BytesMut::new();
        command.encode(&mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next frame, or `None` if none arrives within `within`. Panics if
    /// the connection closes.
    async fn frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, 16 << 20).unwrap() {
                return Some(frame);
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            match read.await {
                Err(_) => return None,
                Ok(Ok(0)) => panic!("connection closed while waiting for a frame"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("read failed: {e}"),
            }
        }
    }

    /// The next message, skipping heartbeats; panics on anything else.
    async fn message(&mut self) -> Message {
        loop {
            match self.frame(DEADLINE).await {
                Some(Frame::Message(msg)) => return msg,
                Some(Frame::Response(data)) if &data[..] == b"_heartbeat_" => {
                    self.send(Command::Nop).await;
                }
                Some(other) => panic!("expected a message, got {other:?}"),
                None => panic!("no message within {DEADLINE:?}"),
            }
        }
    }

    /// Receives `n` messages, FINs each, and returns their bodies in order.
    async fn bodies(&mut self, n: usize) -> Vec<String> {
        let mut bodies = Vec::with_capacity(n);
        for _ in 0..n {
            let msg = self.message().await;
            bodies.push(String::from_utf8(msg.body.to_vec()).unwrap());
            self.send(Command::Fin(msg.id)).await;
        }
        bodies
    }

    /// Asserts that no message arrives for a short while.
    async fn assert_quiet(&mut self) {
        match self.frame(QUIET).await {
            None => {}
            Some(Frame::Response(data)) if &data[..] == b"_heartbeat_" => {}
            Some(other) => panic!("expected nothing, got {other:?}"),
        }
    }

    /// Waits for the broker to close the connection.
    async fn assert_closed(mut self) {
        let closed = async {
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        timeout(DEADLINE, closed)
            .await
            .expect("the broker closed the connection");
    }
}

/// An MPUB body as `/mpub?binary=true` takes it: `[4B count]([4B size][data])*`.
fn binary_mpub(bodies: &[&[u8]]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u32(bodies.len() as u32);
    for body in bodies {
        out.put_u32(body.len() as u32);
        out.put_slice(body);
    }
    out.freeze()
}

fn u64_field(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer in {value}"))
}

async fn total_published(broker: &TestBroker) -> u64 {
    let stats = broker.stats("").await;
    stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| u64_field(t, "message_count"))
        .sum()
}

// ---------------------------------------------------------------------------
// /ping, /info, headers, routing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ping_answers_ok() {
    let broker = TestBroker::start().await;
    let reply = broker.get("/ping").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "OK");
    assert_eq!(reply.nsq_content_type(), Some("nsq; version=1.0"));
    broker.stop().await;
}

#[tokio::test]
async fn info_reports_version_limits_and_the_bound_ports() {
    let broker = TestBroker::start().await;
    let reply = broker.get("/info").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let info = reply.json();
    assert_eq!(info["version"], triage_broker::VERSION);
    // Configured as port 0: /info must say where the broker really listens,
    // as nsqd does (it reports RealTCPAddr / RealHTTPAddr).
    assert_eq!(u64_field(&info, "tcp_port"), u64::from(broker.tcp().port()));
    assert_eq!(
        u64_field(&info, "http_port"),
        u64::from(broker.http().port())
    );
    assert_ne!(broker.tcp().port(), 0);
    let config = &broker.server.broker.config;
    assert_eq!(info["broadcast_address"], config.broadcast_address.as_str());
    assert!(info["hostname"].is_string());
    assert!(u64_field(&info, "start_time") > 1_600_000_000);
    // Durations in Go's time.Duration unit, nanoseconds.
    assert_eq!(
        u64_field(&info, "max_heartbeat_interval"),
        config.max_heartbeat_interval.as_nanos() as u64
    );
    assert_eq!(
        u64_field(&info, "max_output_buffer_timeout"),
        config.max_output_buffer_timeout.as_nanos() as u64
    );
    assert_eq!(
        u64_field(&info, "max_output_buffer_size"),
        config.max_output_buffer_size
    );
    assert_eq!(
        u64_field(&info, "max_deflate_level"),
        u64::from(config.max_deflate_level)
    );
    broker.stop().await;
}

#[tokio::test]
async fn every_response_carries_the_nsq_content_type() {
    let broker = TestBroker::start().await;
    let requests: &[(&str, &str, &[u8])] = &[
        ("GET", "/ping", b""),
        ("GET", "/info", b""),
        ("GET", "/stats", b""),
        ("GET", "/stats?format=json", b""),
        ("POST", "/pub?topic=hdr", b"m"),
        ("POST", "/pub?topic=hdr", b""),
        ("POST", "/pub", b"m"),
        ("POST", "/mpub?topic=hdr", b"a\nb"),
        ("POST", "/topic/create?topic=hdr2", b""),
        ("POST", "/topic/delete?topic=missing", b""),
        ("POST", "/channel/create?topic=hdr&channel=c", b""),
        ("POST", "/channel/delete?topic=hdr&channel=missing", b""),
        ("GET", "/no/such/path", b""),
        ("GET", "/pub?topic=hdr", b""),
        ("POST", "/stats", b""),
    ];
    for (method, path, body) in requests {
        let reply = request(broker.http(), method, path, Bytes::from_static(body)).await;
        assert_eq!(
            reply.nsq_content_type(),
            Some("nsq; version=1.0"),
            "{method} {path} answered {} without X-NSQ-Content-Type",
            reply.status
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404_not_found() {
    let broker = TestBroker::start().await;
    for path in ["/nope", "/topic", "/topic/explode?topic=t", "/dpub?topic=t"] {
        broker.get(path).await.assert_error(404, "NOT_FOUND");
        broker.post(path, "x").await.assert_error(404, "NOT_FOUND");
    }
    broker.stop().await;
}

#[tokio::test]
async fn wrong_methods_are_405_method_not_allowed() {
    let broker = TestBroker::start().await;
    for path in ["/pub?topic=t", "/mpub?topic=t", "/topic/create?topic=t"] {
        broker
            .get(path)
            .await
            .assert_error(405, "METHOD_NOT_ALLOWED");
    }
    for path in ["/ping", "/info", "/stats"] {
        broker
            .post(path, "")
            .await
            .assert_error(405, "METHOD_NOT_ALLOWED");
    }
    // Nothing was created or published by the refused requests.
    assert!(broker.topic_stats("t").await.is_none());
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// /pub
// ---------------------------------------------------------------------------

#[tokio::test]
async fn pub_reaches_a_tcp_consumer() {
    let broker = TestBroker::start().await;
    broker.post_ok("/pub?topic=orders", "hello http").await;

    let topic = broker.topic_stats("orders").await.expect("topic created");
    assert_eq!(u64_field(&topic, "message_count"), 1);
    assert_eq!(u64_field(&topic, "message_bytes"), 10);
    // No channel yet: the topic holds the message.
    assert_eq!(u64_field(&topic, "depth"), 1);

    let mut consumer = Consumer::subscribe(broker.tcp(), "orders", "billing", 1).await;
    let msg = consumer.message().await;
    assert_eq!(&msg.body[..], b"hello http");
    assert_eq!(msg.attempts, 1);
    consumer.send(Command::Fin(msg.id)).await;
    eventually("the message to be finished", || async {
        broker
            .channel_stats("orders", "billing")
            .await
            .is_some_and(|c| c["in_flight_count"] == 0 && c["depth"] == 0)
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn pub_refuses_bad_requests_with_nsqd_codes() {
    let broker = TestBroker::start_with(|c| {
        c.max_msg_size = 1024;
        c.max_req_timeout = Duration::from_secs(1);
    })
    .await;
    let too_big = vec![b'x'; 1025];
    let long_name = "t".repeat(65);
    let cases: Vec<(String, Bytes, u16, &str)> = vec![
        ("/pub".into(), "m".into(), 400, "MISSING_ARG_TOPIC"),
        ("/pub?defer=10".into(), "m".into(), 400, "MISSING_ARG_TOPIC"),
        ("/pub?topic=".into(), "m".into(), 400, "INVALID_TOPIC"),
        (
            "/pub?topic=bad%20name".into(),
            "m".into(),
            400,
            "INVALID_TOPIC",
        ),
        ("/pub?topic=a%2Fb".into(), "m".into(), 400, "INVALID_TOPIC"),
        (
            format!("/pub?topic={long_name}"),
            "m".into(),
            400,
            "INVALID_TOPIC",
        ),
        ("/pub?topic=t".into(), Bytes::new(), 400, "MSG_EMPTY"),
        ("/pub?topic=t".into(), too_big.into(), 413, "MSG_TOO_BIG"),
        (
            "/pub?topic=t&defer=abc".into(),
            "m".into(),
            400,
            "INVALID_DEFER",
        ),
        (
            "/pub?topic=t&defer=".into(),
            "m".into(),
            400,
            "INVALID_DEFER",
        ),
        (
            "/pub?topic=t&defer=-1".into(),
            "m".into(),
            400,
            "INVALID_DEFER",
        ),
        (
            "/pub?topic=t&defer=1.5".into(),
            "m".into(),
            400,
            "INVALID_DEFER",
        ),
        // One millisecond past max_req_timeout (1s).
        (
            "/pub?topic=t&defer=1001".into(),
            "m".into(),
            400,
            "INVALID_DEFER",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = broker.post(&path, body).await;
        assert_eq!(reply.status, status, "POST {path}: {}", reply.text());
        assert_eq!(reply.message(), code, "POST {path}");
    }
    assert_eq!(
        total_published(&broker).await,
        0,
        "a refused /pub published"
    );

    // The limits themselves are allowed.
    broker.post_ok("/pub?topic=t", vec![b'x'; 1024]).await;
    broker
        .post_ok("/pub?topic=t&defer=1000", "at the limit")
        .await;
    assert_eq!(total_published(&broker).await, 2);
    broker.stop().await;
}

#[tokio::test]
async fn pub_to_a_full_topic_is_503() {
    // The bound is the memory tier's; persistent topics are bounded by disk.
    let broker = TestBroker::start_with(|c| {
        c.mem_queue_size = 2;
        c.default_tier = triage_config::Tier::Memory;
        c.memory_overflow = triage_config::OverflowPolicy::Reject;
    })
    .await;
    broker.post_ok("/pub?topic=full", "1").await;
    broker.post_ok("/pub?topic=full", "2").await;
    let reply = broker.post("/pub?topic=full", "3").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.nsq_content_type(), Some("nsq; version=1.0"));
    assert!(!reply.message().is_empty());
    let topic = broker.topic_stats("full").await.unwrap();
    assert_eq!(u64_field(&topic, "depth"), 2);
    assert_eq!(u64_field(&topic, "message_count"), 2);
    broker.stop().await;
}

#[tokio::test]
async fn pub_with_defer_holds_the_message_until_due() {
    let broker = TestBroker::start().await;
    broker
        .post_ok("/channel/create?topic=later&channel=c", "")
        .await;

    let published = Instant::now();
    broker
        .post_ok("/pub?topic=later&defer=300", "deferred")
        .await;
    let channel = broker.channel_stats("later", "c").await.unwrap();
    assert_eq!(u64_field(&channel, "deferred_count"), 1, "{channel}");
    assert_eq!(u64_field(&channel, "depth"), 0, "{channel}");

    eventually("the deferred message to become ready", || async {
        let channel = broker.channel_stats("later", "c").await.unwrap();
        channel["depth"] == 1 && channel["deferred_count"] == 0
    })
    .await;
    assert!(
        published.elapsed() >= Duration::from_millis(300),
        "released after {:?}, before its 300ms defer",
        published.elapsed()
    );

    let mut consumer = Consumer::subscribe(broker.tcp(), "later", "c", 1).await;
    assert_eq!(consumer.bodies(1).await, ["deferred"]);

    // defer=0 is allowed and means "now".
    broker.post_ok("/pub?topic=later&defer=0", "now").await;
    assert_eq!(consumer.bodies(1).await, ["now"]);
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// /mpub
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mpub_text_publishes_one_message_per_non_empty_line() {
    let broker = TestBroker::start().await;
    broker
        .post_ok("/mpub?topic=lines", "one\n\ntwo\nthree\n\n")
        .await;
    let topic = broker.topic_stats("lines").await.unwrap();
    assert_eq!(u64_field(&topic, "message_count"), 3);

    let mut consumer = Consumer::subscribe(broker.tcp(), "lines", "c", 10).await;
    assert_eq!(consumer.bodies(3).await, ["one", "two", "three"]);

    // A last line without a newline counts too.
    broker.post_ok("/mpub?topic=lines", "four\nfive").await;
    assert_eq!(consumer.bodies(2).await, ["four", "five"]);

    // `binary=false` is text mode, as in nsqd.
    broker
        .post_ok("/mpub?topic=lines&binary=false", "six\nseven")
        .await;
    assert_eq!(consumer.bodies(2).await, ["six", "seven"]);
    broker.stop().await;
}

#[tokio::test]
async fn mpub_refuses_bad_requests() {
    let broker = TestBroker::start().await;
    broker
        .post("/mpub", "a\nb")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    broker
        .post("/mpub?topic=no%20good", "a\nb")
        .await
        .assert_error(400, "INVALID_TOPIC");
    assert_eq!(total_published(&broker).await, 0);
    broker.stop().await;
}

#[tokio::test]
async fn mpub_binary_publishes_each_framed_message() {
    let broker = TestBroker::start().await;
    let body = binary_mpub(&[b"first", b"line one\nline two", b"third"]);
    broker.post_ok("/mpub?topic=bin&binary=true", body).await;
    let topic = broker.topic_stats("bin").await.unwrap();
    assert_eq!(u64_field(&topic, "message_count"), 3);

    let mut consumer = Consumer::subscribe(broker.tcp(), "bin", "c", 10).await;
    assert_eq!(
        consumer.bodies(3).await,
        ["first", "line one\nline two", "third"]
    );

    // nsqd also takes binary=1.
    broker
        .post_ok("/mpub?topic=bin&binary=1", binary_mpub(&[b"fourth"]))
        .await;
    assert_eq!(consumer.bodies(1).await, ["fourth"]);
    broker.stop().await;
}

#[tokio::test]
async fn mpub_binary_refuses_malformed_bodies_with_a_code() {
    let broker = TestBroker::start_with(|c| c.max_msg_size = 16).await;
    let mut count_too_high = BytesMut::from(&binary_mpub(&[b"only one"])[..]);
    count_too_high[..4].copy_from_slice(&2u32.to_be_bytes());
    let mut trailing = BytesMut::from(&binary_mpub(&[b"one"])[..]);
    trailing.put_slice(b"junk");
    let mut overrun = BytesMut::from(&binary_mpub(&[b"one"])[..]);
    overrun[4..8].copy_from_slice(&10u32.to_be_bytes()); // within max_msg_size
    let cases: Vec<(&str, Bytes, &str)> = vec![
        (
            "count above what follows",
            count_too_high.freeze(),
            "BAD_BODY",
        ),
        ("bytes after the messages", trailing.freeze(), "BAD_BODY"),
        ("a size past the end", overrun.freeze(), "BAD_BODY"),
        (
            "too short for a count",
            Bytes::from_static(b"\0\0"),
            "BAD_BODY",
        ),
        (
            "a zero count",
            Bytes::from_static(&[0, 0, 0, 0]),
            "BAD_BODY",
        ),
        (
            "an empty message",
            binary_mpub(&[b"ok", b""]),
            "BAD_MESSAGE",
        ),
        (
            "a message above max_msg_size",
            binary_mpub(&[b"ok", &[b'x'; 17]]),
            "BAD_MESSAGE",
        ),
    ];
    for (what, body, code) in cases {
        let reply = broker.post("/mpub?topic=bin&binary=true", body).await;
        // nsqd answers every binary MPUB decoding error with 413 and the TCP
        // code minus `E_` (`nsqd/http.go` doMPUB).
        assert_eq!(reply.status, 413, "{what}: {}", reply.text());
        assert_eq!(reply.message(), code, "{what}");
        assert_eq!(reply.nsq_content_type(), Some("nsq; version=1.0"));
    }
    assert_eq!(
        total_published(&broker).await,
        0,
        "a refused /mpub published"
    );
    broker.stop().await;
}

#[tokio::test]
async fn mpub_too_big_is_413_and_publishes_nothing() {
    let broker = TestBroker::start_with(|c| {
        c.max_msg_size = 64;
        c.max_body_size = 1024;
    })
    .await;
    let many_lines = "0123456789\n".repeat(100); // 1100 bytes > max_body_size
    broker
        .post("/mpub?topic=big", many_lines)
        .await
        .assert_error(413, "BODY_TOO_BIG");
    let one_long_line = format!("short\n{}\nshort", "y".repeat(65));
    broker
        .post("/mpub?topic=big", one_long_line)
        .await
        .assert_error(413, "MSG_TOO_BIG");
    let bodies: Vec<&[u8]> = vec![&[b'z'; 60][..]; 20]; // 20 * 64 + 4 bytes > max_body_size
    broker
        .post("/mpub?topic=big&binary=true", binary_mpub(&bodies))
        .await
        .assert_error(413, "BODY_TOO_BIG");
    assert_eq!(
        total_published(&broker).await,
        0,
        "a refused /mpub published"
    );

    // At the limits it is accepted.
    let at_limit = format!("{}\n{}", "a".repeat(64), "b".repeat(64));
    broker.post_ok("/mpub?topic=big", at_limit).await;
    assert_eq!(total_published(&broker).await, 2);
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// /stats
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stats_json_has_nsqds_shape_and_counts() {
    let broker = TestBroker::start().await;
    broker
        .post_ok("/channel/create?topic=alpha&channel=c1", "")
        .await;
    broker
        .post_ok("/channel/create?topic=alpha&channel=c2", "")
        .await;
    broker
        .post_ok("/channel/create?topic=beta&channel=c1", "")
        .await;
    broker.post_ok("/mpub?topic=alpha", "m1\nm2").await;
    let mut consumer = Consumer::subscribe(broker.tcp(), "alpha", "c1", 1).await;
    let msg = consumer.message().await;
    assert_eq!(&msg.body[..], b"m1");
    eventually("c1 to show its consumer and in-flight message", || async {
        let c1 = broker.channel_stats("alpha", "c1").await.unwrap();
        c1["in_flight_count"] == 1 && c1["client_count"] == 1
    })
    .await;

    let stats = broker.stats("").await;
    assert_eq!(stats["version"], triage_broker::VERSION);
    assert_eq!(stats["health"], "OK");
    assert!(u64_field(&stats, "start_time") > 1_600_000_000);
    let topics = stats["topics"].as_array().unwrap();
    let names: Vec<_> = topics.iter().map(|t| t["topic_name"].clone()).collect();
    assert_eq!(names, ["alpha", "beta"], "topics sorted by name");

    let alpha = &topics[0];
    assert_eq!(alpha["tier"], "persistent", "the default tier");
    assert_eq!(u64_field(alpha, "depth"), 0);
    assert_eq!(u64_field(alpha, "backend_depth"), 0);
    assert_eq!(u64_field(alpha, "message_count"), 2);
    assert_eq!(u64_field(alpha, "message_bytes"), 4);
    assert_eq!(alpha["paused"], false);
    assert!(alpha["e2e_processing_latency"].is_object());
    let channels = alpha["channels"].as_array().unwrap();
    let names: Vec<_> = channels.iter().map(|c| c["channel_name"].clone()).collect();
    assert_eq!(names, ["c1", "c2"], "channels sorted by name");

    let c1 = &channels[0];
    for (field, expected) in [
        ("depth", 1),
        ("backend_depth", 0),
        ("in_flight_count", 1),
        ("deferred_count", 0),
        ("message_count", 2),
        ("requeue_count", 0),
        ("timeout_count", 0),
        ("client_count", 1),
    ] {
        assert_eq!(u64_field(c1, field), expected, "c1.{field} in {c1}");
    }
    assert_eq!(c1["paused"], false);
    assert!(c1["e2e_processing_latency"].is_object());
    let clients = c1["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(u64_field(&clients[0], "in_flight_count"), 1);
    assert_eq!(u64_field(&clients[0], "ready_count"), 1);
    assert!(clients[0]["remote_address"].as_str().unwrap().contains(':'));

    let c2 = &channels[1];
    assert_eq!(u64_field(c2, "depth"), 2);
    assert_eq!(u64_field(c2, "client_count"), 0);
    assert!(c2["clients"].as_array().unwrap().is_empty());

    // A requeue shows in requeue_count.
    consumer
        .send(Command::Req {
            id: msg.id,
            timeout_ms: 0,
        })
        .await;
    eventually("requeue_count to count the REQ", || async {
        let c1 = broker.channel_stats("alpha", "c1").await.unwrap();
        c1["requeue_count"] == 1
    })
    .await;

    // include_clients=false keeps the count but drops the list.
    let stats = broker.stats("&include_clients=false").await;
    let c1 = &stats["topics"][0]["channels"][0];
    assert_eq!(u64_field(c1, "client_count"), 1);
    assert!(c1["clients"].as_array().unwrap().is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn stats_filters_by_topic_and_channel() {
    let broker = TestBroker::start().await;
    broker
        .post_ok("/channel/create?topic=alpha&channel=c1", "")
        .await;
    broker
        .post_ok("/channel/create?topic=alpha&channel=c2", "")
        .await;
    broker
        .post_ok("/channel/create?topic=beta&channel=c1", "")
        .await;

    let shape = |stats: Value| -> Vec<(String, Vec<String>)> {
        stats["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let channels = t["channels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["channel_name"].as_str().unwrap().to_owned())
                    .collect();
                (t["topic_name"].as_str().unwrap().to_owned(), channels)
            })
            .collect()
    };
    let owned = |pairs: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
        pairs
            .iter()
            .map(|(t, cs)| {
                (
                    (*t).to_owned(),
                    cs.iter().map(|c| (*c).to_owned()).collect(),
                )
            })
            .collect()
    };

    assert_eq!(
        shape(broker.stats("").await),
        owned(&[("alpha", &["c1", "c2"]), ("beta", &["c1"])])
    );
    assert_eq!(
        shape(broker.stats("&topic=alpha").await),
        owned(&[("alpha", &["c1", "c2"])])
    );
    assert_eq!(
        shape(broker.stats("&topic=alpha&channel=c2").await),
        owned(&[("alpha", &["c2"])])
    );
    assert_eq!(
        shape(broker.stats("&channel=c1").await),
        owned(&[("alpha", &["c1"]), ("beta", &["c1"])])
    );
    // As nsqd's GetStats: a topic without the asked-for channel is left out.
    assert_eq!(
        shape(broker.stats("&channel=c2").await),
        owned(&[("alpha", &["c2"])])
    );
    assert_eq!(shape(broker.stats("&topic=nope").await), owned(&[]));
    assert_eq!(
        shape(broker.stats("&topic=beta&channel=c2").await),
        owned(&[])
    );
    broker.stop().await;
}

#[tokio::test]
async fn stats_without_format_json_is_text() {
    let broker = TestBroker::start().await;
    let reply = broker.get("/stats").await;
    assert_eq!(reply.status, 200);
    assert!(reply.text().contains("NO_TOPICS"), "{}", reply.text());

    broker
        .post_ok("/channel/create?topic=texty&channel=chan", "")
        .await;
    broker.post_ok("/pub?topic=texty", "m").await;
    for path in ["/stats", "/stats?format=text"] {
        let reply = broker.get(path).await;
        assert_eq!(reply.status, 200, "{path}");
        let content_type = reply.headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("text/plain"), "{content_type}");
        assert_eq!(reply.nsq_content_type(), Some("nsq; version=1.0"));
        assert!(serde_json::from_slice::<Value>(&reply.body).is_err());
        let text = reply.text();
        assert!(text.contains(triage_broker::VERSION), "{text}");
        assert!(text.contains("Health: OK"), "{text}");
        let topic_line = text.lines().find(|l| l.contains("[texty")).unwrap();
        assert!(topic_line.contains("tier: persistent"), "{topic_line}");
        let channel_line = text.lines().find(|l| l.contains("[chan")).unwrap();
        assert!(channel_line.contains("depth: 1"), "{channel_line}");
        assert!(!text.contains("NO_TOPICS"), "{text}");
    }
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// /topic/*
// ---------------------------------------------------------------------------

#[tokio::test]
async fn topic_create_takes_an_optional_tier() {
    let broker = TestBroker::start().await;
    broker.post_ok("/topic/create?topic=plain", "").await;
    let topic = broker.topic_stats("plain").await.expect("created");
    let default_tier = triage_config::BrokerConfig::default().default_tier;
    assert_eq!(topic["tier"], default_tier.as_str());
    assert!(topic["channels"].as_array().unwrap().is_empty());
    // Creating again is fine.
    broker.post_ok("/topic/create?topic=plain", "").await;
    broker
        .post_ok(
            &format!("/topic/create?topic=plain&tier={}", default_tier.as_str()),
            "",
        )
        .await;
    // A different tier for an existing topic is refused, not applied silently.
    let other = if default_tier == triage_config::Tier::Memory {
        "persistent"
    } else {
        "memory"
    };
    let reply = broker
        .post(&format!("/topic/create?topic=plain&tier={other}"), "")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.message().starts_with("INVALID_TIER"),
        "{}",
        reply.message()
    );

    broker
        .post_ok("/topic/create?topic=mem&tier=memory", "")
        .await;
    assert_eq!(broker.topic_stats("mem").await.unwrap()["tier"], "memory");

    broker
        .post_ok("/topic/create?topic=disk&tier=persistent", "")
        .await;
    assert_eq!(
        broker.topic_stats("disk").await.unwrap()["tier"],
        "persistent"
    );

    broker
        .post_ok(
            "/topic/create?topic=later&tier=delayed&delay=30m&batch_window=1m&max_attempts=5",
            "",
        )
        .await;
    assert_eq!(
        broker.topic_stats("later").await.unwrap()["tier"],
        "delayed"
    );
    // The same again is fine; other settings for an existing topic are not.
    broker
        .post_ok(
            "/topic/create?topic=later&tier=delayed&delay=1800000&batch_window=60s&max_attempts=5",
            "",
        )
        .await;
    let reply = broker
        .post("/topic/create?topic=later&tier=delayed&delay=1m", "")
        .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.message().starts_with("INVALID_SETTINGS"),
        "{}",
        reply.message()
    );

    // A delay belongs to the delayed tier; bad values name the parameter.
    for (query, expected) in [
        ("topic=p1&tier=persistent&delay=5s", "INVALID_SETTINGS"),
        ("topic=p2&tier=delayed&delay=soon", "INVALID_DELAY"),
        (
            "topic=p3&tier=delayed&batch_window=-1",
            "INVALID_BATCH_WINDOW",
        ),
        ("topic=p4&max_attempts=70000", "INVALID_MAX_ATTEMPTS"),
        ("topic=p5&tier=delayed&delay=2h", "INVALID_SETTINGS"),
    ] {
        let reply = broker.post(&format!("/topic/create?{query}"), "").await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        let message = reply.message();
        assert!(message.starts_with(expected), "{query}: {message}");
    }
    assert!(broker.topic_stats("p1").await.is_none());
    assert!(broker.topic_stats("p5").await.is_none());

    let reply = broker.post("/topic/create?topic=odd&tier=bogus", "").await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    let message = reply.message();
    assert!(message.starts_with("INVALID_TIER"), "{message}");
    assert!(
        message.contains("bogus") && message.contains("memory"),
        "{message}"
    );
    assert!(broker.topic_stats("odd").await.is_none());

    broker
        .post("/topic/create", "")
        .await
        .assert_error(400, "MISSING_ARG_TOPIC");
    broker
        .post("/topic/create?topic=not*valid", "")
        .await
        .assert_error(400, "INVALID_TOPIC");
    broker.stop().await;
}

#[tokio::test]
async fn topic_tier_changes_in_place_and_names_what_is_wrong() {
    let broker = TestBroker::start().await;
    broker
        .post_ok("/topic/create?topic=t&tier=persistent", "")
        .await;
    broker
        .post_ok(
            "/topic/tier?topic=t&tier=delayed&delay=5s&max_attempts=3",
            "",
        )
        .await;
    assert_eq!(broker.topic_stats("t").await.unwrap()["tier"], "delayed");
    // The same tier and settings again: a no-op OK.
    broker.post_ok("/topic/tier?topic=t&tier=delayed", "").await;

    broker
        .post("/topic/tier?topic=ghost&tier=memory", "")
        .await
        .assert_error(404, "TOPIC_NOT_FOUND");
    broker
        .post("/topic/tier?topic=t", "")
        .await
        .assert_error(400, "MISSING_ARG_TIER");
    for (query, status, expected) in [
        ("topic=t&tier=fast", 400, "INVALID_TIER"),
        ("topic=t&tier=persistent&delay=5s", 400, "INVALID_SETTINGS"),
        ("topic=t&tier=delayed&delay=2h", 400, "INVALID_SETTINGS"),
        ("topic=t&tier=delayed&delay=soon", 400, "INVALID_DELAY"),
        (
            "topic=t&tier=delayed&max_attempts=-1",
            400,
            "INVALID_MAX_ATTEMPTS",
        ),
    ] {
        let reply = broker.post(&format!("/topic/tier?{query}"), "").await;
        assert_eq!(reply.status, status, "{query}: {}", reply.text());
        let message = reply.message();
        assert!(message.starts_with(expected), "{query}: {message}");
    }
    // Nothing of the refused requests was applied.
    assert_eq!(broker.topic_stats("t").await.unwrap()["tier"], "delayed");
    let topic = broker.server.broker.existing_topic("t").unwrap();
    assert_eq!(topic.settings().delay, Duration::from_secs(5));
    assert_eq!(topic.settings().max_attempts, 3);

    broker
        .post_ok("/topic/create?topic=scratch%23ephemeral", "")
        .await;
    for tier in ["persistent", "delayed"] {
        let reply = broker
            .post(
                &format!("/topic/tier?topic=scratch%23ephemeral&tier={tier}"),
                "",
            )
            .await;
        assert_eq!(reply.status, 409, "{}", reply.text());
        assert!(
            reply.message().starts_with("TIER_CHANGE_REFUSED"),
            "{}",
            reply.message()
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_endpoints_need_an_existing_topic() {
    let broker = TestBroker::start().await;
    for action in ["delete", "empty", "pause", "unpause"] {
        broker
            .post(&format!("/topic/{action}?topic=ghost"), "")
            .await
            .assert_error(404, "TOPIC_NOT_FOUND");
        broker
            .post(&format!("/topic/{action}"), "")
            .await
            .assert_error(400, "MISSING_ARG_TOPIC");
        broker
            .post(&format!("/topic/{action}?topic=a%20b"), "")
            .await
            .assert_error(400, "INVALID_TOPIC");
    }
    assert!(
        broker.topic_stats("ghost").await.is_none(),
        "404s create nothing"
    );
    broker.stop().await;
}

#[tokio::test]
async fn topic_empty_and_delete() {
    let broker = TestBroker::start().await;
    broker.post_ok("/mpub?topic=doomed", "a\nb").await;
    let topic = broker.topic_stats("doomed").await.unwrap();
    assert_eq!(u64_field(&topic, "depth"), 2);

    broker.post_ok("/topic/empty?topic=doomed", "").await;
    let topic = broker.topic_stats("doomed").await.unwrap();
    assert_eq!(u64_field(&topic, "depth"), 0);

    // A consumer of a deleted topic's channel is disconnected.
    let consumer = Consumer::subscribe(broker.tcp(), "doomed", "c", 1).await;
    broker.post_ok("/topic/delete?topic=doomed", "").await;
    assert!(broker.topic_stats("doomed").await.is_none());
    consumer.assert_closed().await;
    broker
        .post("/topic/delete?topic=doomed", "")
        .await
        .assert_error(404, "TOPIC_NOT_FOUND");

    // The name can be used again, from scratch.
    broker.post_ok("/pub?topic=doomed", "again").await;
    let topic = broker.topic_stats("doomed").await.unwrap();
    assert_eq!(u64_field(&topic, "message_count"), 1);
    assert!(topic["channels"].as_array().unwrap().is_empty());
    broker.stop().await;
}

#[tokio::test]
async fn topic_pause_holds_messages_until_unpause() {
    let broker = TestBroker::start().await;
    let mut consumer = Consumer::subscribe(broker.tcp(), "held", "c", 10).await;
    broker.post_ok("/topic/pause?topic=held", "").await;
    assert_eq!(broker.topic_stats("held").await.unwrap()["paused"], true);

    broker.post_ok("/pub?topic=held", "waiting").await;
    let topic = broker.topic_stats("held").await.unwrap();
    assert_eq!(u64_field(&topic, "depth"), 1, "the paused topic holds it");
    let channel = broker.channel_stats("held", "c").await.unwrap();
    assert_eq!(u64_field(&channel, "depth"), 0);
    assert_eq!(u64_field(&channel, "in_flight_count"), 0);
    consumer.assert_quiet().await;

    broker.post_ok("/topic/unpause?topic=held", "").await;
    assert_eq!(broker.topic_stats("held").await.unwrap()["paused"], false);
    assert_eq!(consumer.bodies(1).await, ["waiting"]);
    assert_eq!(
        u64_field(&broker.topic_stats("held").await.unwrap(), "depth"),
        0
    );
    broker.stop().await;
}

// ---------------------------------------------------------------------------
// /channel/*
// ---------------------------------------------------------------------------

#[tokio::test]
async fn channel_endpoints_validate_and_404() {
    let broker = TestBroker::start().await;
    for action in ["create", "delete", "empty", "pause", "unpause"] {
        let path = format!("/channel/{action}");
        broker
            .post(&format!("{path}?channel=c"), "")
            .await
            .assert_error(400, "MISSING_ARG_TOPIC");
        broker
            .post(&format!("{path}?topic=t"), "")
            .await
            .assert_error(400, "MISSING_ARG_CHANNEL");
        broker
            .post(&format!("{path}?topic=t&channel=no%20good"), "")
            .await
            .assert_error(400, "INVALID_CHANNEL");
        broker
            .post(&format!("{path}?topic=t&channel={}", "c".repeat(65)), "")
            .await
            .assert_error(400, "INVALID_CHANNEL");
    }
    assert!(broker.topic_stats("t").await.is_none());

    for action in ["delete", "empty", "pause", "unpause"] {
        broker
            .post(&format!("/channel/{action}?topic=ghost&channel=c"), "")
            .await
            .assert_error(404, "TOPIC_NOT_FOUND");
    }
    broker.post_ok("/topic/create?topic=t", "").await;
    for action in ["delete", "empty", "pause", "unpause"] {
        broker
            .post(&format!("/channel/{action}?topic=t&channel=ghost"), "")
            .await
            .assert_error(404, "CHANNEL_NOT_FOUND");
    }
    assert!(broker.channel_stats("t", "ghost").await.is_none());
    broker.stop().await;
}

#[tokio::test]
async fn channel_create_empty_and_delete() {
    let broker = TestBroker::start().await;
    // As nsqd, creating a channel creates its topic.
    broker
        .post_ok("/channel/create?topic=fresh&channel=c", "")
        .await;
    broker
        .post_ok("/channel/create?topic=fresh&channel=c", "")
        .await;
    broker
        .post_ok("/channel/create?topic=fresh&channel=other", "")
        .await;
    let channel = broker.channel_stats("fresh", "c").await.expect("created");
    assert_eq!(u64_field(&channel, "depth"), 0);
    assert_eq!(channel["paused"], false);

    broker.post_ok("/mpub?topic=fresh", "a\nb\nc").await;
    assert_eq!(
        u64_field(&broker.channel_stats("fresh", "c").await.unwrap(), "depth"),
        3
    );
    broker
        .post_ok("/channel/empty?topic=fresh&channel=c", "")
        .await;
    assert_eq!(
        u64_field(&broker.channel_stats("fresh", "c").await.unwrap(), "depth"),
        0
    );
    // Emptying one channel leaves the others alone.
    assert_eq!(
        u64_field(
            &broker.channel_stats("fresh", "other").await.unwrap(),
            "depth"
        ),
        3
    );

    // Deleting a channel disconnects its consumer and leaves the topic.
    let consumer = Consumer::subscribe(broker.tcp(), "fresh", "c", 1).await;
    broker
        .post_ok("/channel/delete?topic=fresh&channel=c", "")
        .await;
    consumer.assert_closed().await;
    assert!(broker.channel_stats("fresh", "c").await.is_none());
    assert!(broker.channel_stats("fresh", "other").await.is_some());
    broker
        .post("/channel/delete?topic=fresh&channel=c", "")
        .await
        .assert_error(404, "CHANNEL_NOT_FOUND");
    broker.stop().await;
}

#[tokio::test]
async fn channel_pause_holds_messages_until_unpause() {
    let broker = TestBroker::start().await;
    let mut paused = Consumer::subscribe(broker.tcp(), "fan", "paused", 10).await;
    let mut running = Consumer::subscribe(broker.tcp(), "fan", "running", 10).await;
    broker
        .post_ok("/channel/pause?topic=fan&channel=paused", "")
        .await;
    let channel = broker.channel_stats("fan", "paused").await.unwrap();
    assert_eq!(channel["paused"], true);
    assert_eq!(
        broker.channel_stats("fan", "running").await.unwrap()["paused"],
        false
    );

    broker.post_ok("/pub?topic=fan", "m").await;
    // The other channel gets its copy at once; the paused one keeps its copy queued.
    assert_eq!(running.bodies(1).await, ["m"]);
    paused.assert_quiet().await;
    let channel = broker.channel_stats("fan", "paused").await.unwrap();
    assert_eq!(u64_field(&channel, "depth"), 1);
    assert_eq!(u64_field(&channel, "in_flight_count"), 0);

    broker
        .post_ok("/channel/unpause?topic=fan&channel=paused", "")
        .await;
    assert_eq!(
        broker.channel_stats("fan", "paused").await.unwrap()["paused"],
        false
    );
    assert_eq!(paused.bodies(1).await, ["m"]);
    broker.stop().await;
}
