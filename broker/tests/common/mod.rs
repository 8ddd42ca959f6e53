//! Shared harness for the broker's TCP integration tests.
//!
//! [`start_broker`] runs a real [`Server`] on loopback (ephemeral ports, a
//! temporary data dir); [`Client`] is a deliberately small raw NSQ V2 client
//! built on `triage_protocol`'s codec, so a test sees exactly the frames the
//! broker sends. Every read has a deadline: a broker that goes silent fails
//! the test instead of hanging it.

#![allow(dead_code)]

pub mod triaged;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use triage_broker::{Broker, Server};
use triage_config::BrokerConfig;
use triage_protocol::compress::{
    Decoder, DeflateDecoder, DeflateEncoder, Encoder, SnappyDecoder, SnappyEncoder,
};
use triage_protocol::frame::parse_error_text;
use triage_protocol::{decode_frame, Command, ErrorCode, Frame, Message, MessageId, MAGIC_V2};

/// How long any single expected frame may take before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long "nothing should arrive" checks wait by default.
pub const QUIET: Duration = Duration::from_millis(300);
/// Generous bounds for the client side: the broker's own limits are what is under test.
const MAX_FRAME: u32 = 64 << 20;
const MAX_DECODED: usize = 64 << 20;

/// A running broker and the temporary directory it writes to.
#[derive(Debug)]
pub struct TestBroker {
    pub server: Server,
    _data: tempfile::TempDir,
}

/// Starts a broker on `127.0.0.1:0` (TCP and HTTP) with a fresh data dir;
/// `tweak` adjusts the config first.
pub async fn start_broker(tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    init_tracing();
    let data = tempfile::tempdir().expect("temporary data dir");
    let mut config = BrokerConfig {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        data_path: data.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    tweak(&mut config);
    let server = Server::start(config).await.expect("broker starts");
    TestBroker {
        server,
        _data: data,
    }
}

/// `RUST_LOG=triage_broker=debug cargo test ...` shows the broker's logs.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

impl TestBroker {
    pub fn tcp_addr(&self) -> SocketAddr {
        self.server.tcp_addr
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.server.broker
    }

    /// A client that has sent the magic.
    pub async fn connect(&self) -> Client {
        Client::connect(self.tcp_addr()).await
    }

    /// A client subscribed to `topic`/`channel` with `RDY rdy`.
    pub async fn consumer(&self, topic: &str, channel: &str, rdy: u64) -> Client {
        let mut client = self.connect().await;
        client.sub(topic, channel).await;
        client.rdy(rdy).await;
        client
    }

    /// Publishes each body with PUB over a fresh connection, checking every OK.
    pub async fn publish_all(
        &self,
        topic: &str,
        bodies: impl IntoIterator<Item = impl Into<Bytes>>,
    ) {
        let mut producer = self.connect().await;
        for body in bodies {
            producer.publish(topic, body).await;
        }
    }

    /// Stops the broker; fails the test if that takes more than a few seconds.
    pub async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(5), self.server.shutdown())
            .await
            .expect("broker shut down within 5 s");
    }
}

/// What one bounded read produced.
#[derive(Debug)]
pub enum Read {
    Frame(Frame),
    Closed,
    TimedOut,
}

/// The client's socket, plain or upgraded to TLS after IDENTIFY.
#[derive(Debug)]
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Gone,
}

impl tokio::io::AsyncRead for ClientStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            ClientStream::Gone => std::task::Poll::Ready(Ok(())),
        }
    }
}

impl tokio::io::AsyncWrite for ClientStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            ClientStream::Gone => {
                std::task::Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()))
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            ClientStream::Gone => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            ClientStream::Gone => std::task::Poll::Ready(Ok(())),
        }
    }
}

/// A raw NSQ V2 client over one TCP connection (TLS once negotiated).
#[derive(Debug)]
pub struct Client {
    stream: ClientStream,
    /// With a config, an IDENTIFY reply with `tls_v1: true` upgrades to TLS.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Plain bytes from the server not yet parsed into frames.
    input: BytesMut,
    /// Compressed bytes not yet decoded (only once compression is on).
    raw_input: BytesMut,
    encoder: Option<Encoder>,
    decoder: Option<Decoder>,
    /// `_heartbeat_` frames skipped so far by the reads that skip them.
    pub heartbeats: usize,
    /// Answer each skipped heartbeat with `NOP`, as real clients do.
    pub answer_heartbeats: bool,
}

impl Client {
    /// Connects without sending anything.
    pub async fn connect_raw(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(READ_TIMEOUT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        Client {
            stream: ClientStream::Plain(stream),
            tls: None,
            input: BytesMut::new(),
            raw_input: BytesMut::new(),
            encoder: None,
            decoder: None,
            heartbeats: 0,
            answer_heartbeats: false,
        }
    }

    /// Connects and sends the V2 magic.
    pub async fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect_raw(addr).await;
        client.send_raw(&MAGIC_V2).await;
        client
    }

    /// Writes bytes (compressed if negotiated); `Err` if the server has gone.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let wire = match self.encoder.as_mut() {
            Some(encoder) => {
                let mut out = BytesMut::new();
                encoder.encode(bytes, &mut out);
                out
            }
            None => BytesMut::from(bytes),
        };
        let stream = &mut self.stream;
        let write = async move {
            stream.write_all(&wire).await?;
            stream.flush().await
        };
        match tokio::time::timeout(READ_TIMEOUT, write).await {
            Ok(result) => result,
            Err(_) => panic!("write timed out"),
        }
    }

    /// Writes bytes (compressed if negotiated); panics if the write fails.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).await.expect("write to broker");
    }

    pub async fn send(&mut self, command: &Command) {
        self.try_send(command).await.expect("write to broker");
    }

    /// Writes a command; `Err` if the server has gone.
    pub async fn try_send(&mut self, command: &Command) -> std::io::Result<()> {
        let mut out = BytesMut::new();
        command.encode(&mut out);
        self.try_send_raw(&out).await
    }

    /// The next frame, heartbeats included, or why there is none by `deadline`.
    pub async fn read_until(&mut self, deadline: Instant) -> Read {
        loop {
            match decode_frame(&mut self.input, MAX_FRAME) {
                Ok(Some(frame)) => return Read::Frame(frame),
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable frame: {e}"),
            }
            let buf = if self.decoder.is_some() {
                &mut self.raw_input
            } else {
                &mut self.input
            };
            buf.reserve(16 * 1024);
            let read = match tokio::time::timeout_at(deadline, self.stream.read_buf(buf)).await {
                Err(_) => return Read::TimedOut,
                Ok(read) => read,
            };
            match read {
                Ok(0) => return Read::Closed,
                Ok(_) => {}
                // A reset after the server closed is as good as a FIN here,
                // and so is a TLS alert (a refused client certificate).
                Err(e) if is_disconnect(&e) || e.kind() == std::io::ErrorKind::InvalidData => {
                    return Read::Closed
                }
                Err(e) => panic!("read from broker: {e}"),
            }
            if let Some(decoder) = self.decoder.as_mut() {
                decoder
                    .decode(&mut self.raw_input, &mut self.input, MAX_DECODED)
                    .unwrap_or_else(|e| panic!("broker sent a corrupt compressed stream: {e}"));
            }
        }
    }

    /// The next frame other than a heartbeat within `timeout`, or why there is none.
    pub async fn read_within(&mut self, timeout: Duration) -> Read {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_until(deadline).await {
                Read::Frame(frame) if is_heartbeat(&frame) => {
                    self.heartbeats += 1;
                    if self.answer_heartbeats {
                        self.nop().await;
                    }
                }
                other => return other,
            }
        }
    }

    /// The next frame, heartbeats included; fails on close or after [`READ_TIMEOUT`].
    pub async fn read_frame_raw(&mut self) -> Frame {
        match self.read_until(Instant::now() + READ_TIMEOUT).await {
            Read::Frame(frame) => frame,
            Read::Closed => panic!("connection closed while a frame was expected"),
            Read::TimedOut => panic!("no frame within {READ_TIMEOUT:?}"),
        }
    }

    /// The next frame that is not a heartbeat; fails on close or after [`READ_TIMEOUT`].
    pub async fn read_frame(&mut self) -> Frame {
        match self.read_within(READ_TIMEOUT).await {
            Read::Frame(frame) => frame,
            Read::Closed => panic!("connection closed while a frame was expected"),
            Read::TimedOut => panic!("no frame within {READ_TIMEOUT:?}"),
        }
    }

    pub async fn expect_response(&mut self, expected: &[u8]) {
        match self.read_frame().await {
            Frame::Response(data) if data == expected => {}
            other => panic!(
                "expected response {:?}, got {}",
                String::from_utf8_lossy(expected),
                describe(&other)
            ),
        }
    }

    pub async fn expect_ok(&mut self) {
        self.expect_response(triage_protocol::OK).await;
    }

    /// Expects an error frame with `code`; returns its description.
    pub async fn expect_error(&mut self, code: ErrorCode) -> String {
        match self.read_frame().await {
            Frame::Error(data) => {
                let (got, description) = parse_error_text(&data).unwrap_or_else(|| {
                    panic!(
                        "unparseable error frame {:?}",
                        String::from_utf8_lossy(&data)
                    )
                });
                assert_eq!(
                    got,
                    code,
                    "error frame {:?}",
                    String::from_utf8_lossy(&data)
                );
                description
            }
            other => panic!("expected error {code}, got {}", describe(&other)),
        }
    }

    /// Expects the server to close the connection (heartbeats aside) within [`READ_TIMEOUT`].
    pub async fn expect_closed(&mut self) {
        self.expect_closed_within(READ_TIMEOUT).await;
    }

    pub async fn expect_closed_within(&mut self, timeout: Duration) {
        match self.read_within(timeout).await {
            Read::Closed => {}
            Read::Frame(frame) => {
                panic!("expected the connection to close, got {}", describe(&frame))
            }
            Read::TimedOut => panic!("connection still open after {timeout:?}"),
        }
    }

    /// A fatal error: the error frame, then the close. Returns the description.
    pub async fn expect_fatal(&mut self, code: ErrorCode) -> String {
        let description = self.expect_error(code).await;
        self.expect_closed().await;
        description
    }

    /// Fails if any frame other than a heartbeat arrives (or the connection
    /// closes) within `timeout`.
    pub async fn expect_nothing_for(&mut self, timeout: Duration) {
        match self.read_within(timeout).await {
            Read::TimedOut => {}
            Read::Frame(frame) => {
                panic!("expected nothing for {timeout:?}, got {}", describe(&frame))
            }
            Read::Closed => panic!("connection closed while expecting nothing for {timeout:?}"),
        }
    }

    pub async fn read_message(&mut self) -> Message {
        match self.read_frame().await {
            Frame::Message(msg) => msg,
            other => panic!("expected a message, got {}", describe(&other)),
        }
    }

    pub async fn read_messages(&mut self, n: usize) -> Vec<Message> {
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            msgs.push(self.read_message().await);
        }
        msgs
    }

    /// A message within `timeout`, or `None` if nothing arrives; any other frame fails.
    pub async fn try_read_message(&mut self, timeout: Duration) -> Option<Message> {
        match self.read_within(timeout).await {
            Read::Frame(Frame::Message(msg)) => Some(msg),
            Read::TimedOut => None,
            Read::Frame(other) => panic!("expected a message or nothing, got {}", describe(&other)),
            Read::Closed => panic!("connection closed while waiting for a message"),
        }
    }

    /// Sends IDENTIFY with `json` as its body verbatim and returns the first
    /// frame of the reply. When the reply negotiates snappy or deflate, the
    /// client switches to it and checks the compressed `OK` that follows.
    pub async fn identify(&mut self, json: Value) -> Frame {
        let body = serde_json::to_vec(&json).unwrap();
        let mut out = BytesMut::new();
        out.put_slice(b"IDENTIFY\n");
        out.put_u32(body.len() as u32);
        out.put_slice(&body);
        self.send_raw(&out).await;
        let frame = self.read_frame().await;
        if let Frame::Response(data) = &frame {
            if data.first() == Some(&b'{') {
                let reply: Value = serde_json::from_slice(data).expect("IDENTIFY reply is JSON");
                self.upgrade(&reply).await;
            }
        }
        frame
    }

    /// IDENTIFY that must succeed: `None` for a plain `OK`, the JSON otherwise.
    pub async fn identify_ok(&mut self, json: Value) -> Option<Value> {
        match self.identify(json).await {
            Frame::Response(data) if data == triage_protocol::OK => None,
            Frame::Response(data) => {
                Some(serde_json::from_slice(&data).expect("IDENTIFY reply is JSON"))
            }
            other => panic!("IDENTIFY failed: {}", describe(&other)),
        }
    }

    /// Switches to TLS (a TLS handshake, then an `OK` over TLS) and then to
    /// the compression the IDENTIFY reply negotiated, as nsqd orders them.
    async fn upgrade(&mut self, reply: &Value) {
        if reply["tls_v1"] == Value::Bool(true) {
            assert!(self.try_tls_upgrade().await, "the TLS upgrade failed");
        }
        let (encoder, decoder) = if reply["snappy"] == Value::Bool(true) {
            (
                Encoder::Snappy(SnappyEncoder::new()),
                Decoder::Snappy(SnappyDecoder::new()),
            )
        } else if reply["deflate"] == Value::Bool(true) {
            let level = reply["deflate_level"].as_u64().unwrap_or(6).clamp(1, 9) as u32;
            (
                Encoder::Deflate(DeflateEncoder::new(level)),
                Decoder::Deflate(DeflateDecoder::new()),
            )
        } else {
            return;
        };
        // Whatever followed the reply was already compressed.
        let leftover = self.input.split();
        self.raw_input.extend_from_slice(&leftover);
        self.encoder = Some(encoder);
        let mut decoder = decoder;
        if !self.raw_input.is_empty() {
            decoder
                .decode(&mut self.raw_input, &mut self.input, MAX_DECODED)
                .unwrap_or_else(|e| panic!("broker sent a corrupt compressed stream: {e}"));
        }
        self.decoder = Some(decoder);
        self.expect_ok().await;
    }

    /// The TLS half of IDENTIFY's upgrade: the handshake, then `OK` over
    /// TLS. False if either fails (a refused client certificate).
    pub async fn try_tls_upgrade(&mut self) -> bool {
        let config = self
            .tls
            .clone()
            .expect("the broker upgraded to TLS, but this client has no TLS config");
        assert!(self.input.is_empty(), "bytes before the TLS handshake");
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Gone)
        else {
            panic!("already upgraded");
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        let Ok(Ok(tls)) = tokio::time::timeout(READ_TIMEOUT, connect).await else {
            return false;
        };
        self.stream = ClientStream::Tls(Box::new(tls));
        matches!(
            self.read_within(READ_TIMEOUT).await,
            Read::Frame(Frame::Response(ok)) if ok == triage_protocol::OK
        )
    }

    /// Exactly `n` bytes as they come off the socket, bypassing frame parsing
    /// and decompression (for checking what the wire carries).
    pub async fn read_raw(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        while self.input.len() < n {
            self.input.reserve(n - self.input.len());
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.input)).await {
                Err(_) => panic!(
                    "only {} of {n} bytes within {READ_TIMEOUT:?}",
                    self.input.len()
                ),
                Ok(Ok(0)) => panic!("connection closed after {} of {n} bytes", self.input.len()),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("read from broker: {e}"),
            }
        }
        self.input.split_to(n).to_vec()
    }

    /// This end's address: the broker sees it as the client's `remote_addr`.
    pub fn local_addr(&self) -> SocketAddr {
        match &self.stream {
            ClientStream::Plain(s) => s.local_addr().unwrap(),
            ClientStream::Tls(s) => s.get_ref().0.local_addr().unwrap(),
            ClientStream::Gone => panic!("connection lost"),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, ClientStream::Tls(_))
    }

    pub fn is_compressed(&self) -> bool {
        self.decoder.is_some()
    }

    pub async fn sub(&mut self, topic: &str, channel: &str) {
        self.send(&Command::Sub {
            topic: topic.into(),
            channel: channel.into(),
        })
        .await;
        self.expect_ok().await;
    }

    pub async fn rdy(&mut self, count: u64) {
        self.send(&Command::Rdy(count)).await;
    }

    pub async fn fin(&mut self, id: &MessageId) {
        self.send(&Command::Fin(*id)).await;
    }

    pub async fn req(&mut self, id: &MessageId, timeout_ms: i64) {
        self.send(&Command::Req {
            id: *id,
            timeout_ms,
        })
        .await;
    }

    pub async fn touch(&mut self, id: &MessageId) {
        self.send(&Command::Touch(*id)).await;
    }

    pub async fn nop(&mut self) {
        self.send(&Command::Nop).await;
    }

    pub async fn cls(&mut self) {
        self.send(&Command::Cls).await;
    }

    /// PUB that must succeed.
    pub async fn publish(&mut self, topic: &str, body: impl Into<Bytes>) {
        self.send(&Command::Pub {
            topic: topic.into(),
            body: body.into(),
        })
        .await;
        self.expect_ok().await;
    }

    /// MPUB that must succeed.
    pub async fn mpub(&mut self, topic: &str, bodies: Vec<Bytes>) {
        self.send(&Command::Mpub {
            topic: topic.into(),
            bodies,
        })
        .await;
        self.expect_ok().await;
    }

    /// DPUB that must succeed.
    pub async fn dpub(&mut self, topic: &str, defer_ms: u64, body: impl Into<Bytes>) {
        self.send(&Command::Dpub {
            topic: topic.into(),
            defer_ms,
            body: body.into(),
        })
        .await;
        self.expect_ok().await;
    }

    /// Proves the connection is open and has processed everything sent
    /// before: a `NOP` (no reply) and then a PUB whose `OK` must be the very
    /// next frame. An error left by an earlier command would arrive first.
    /// Only for connections that expect no message frames meanwhile.
    pub async fn assert_alive(&mut self) {
        self.nop().await;
        self.publish("liveness_probe", "ping").await;
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

/// A frame in words, for failure messages.
pub fn describe(frame: &Frame) -> String {
    match frame {
        Frame::Response(data) => format!("response {:?}", String::from_utf8_lossy(data)),
        Frame::Error(data) => format!("error {:?}", String::from_utf8_lossy(data)),
        Frame::Message(msg) => format!(
            "message id={} attempts={} body={:?}",
            String::from_utf8_lossy(msg.id.as_bytes()),
            msg.attempts,
            String::from_utf8_lossy(&msg.body)
        ),
    }
}

/// `[4B len][body]` as the wire wants it.
pub fn body_frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Bodies `"<prefix>-0" .. "<prefix>-<n-1>"`.
pub fn bodies(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}

/// Wall-clock milliseconds since the Unix epoch, for due times.
pub fn now_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    u64::try_from(since.as_millis()).expect("fits in u64")
}

pub fn body_str(msg: &Message) -> String {
    String::from_utf8(msg.body.to_vec()).expect("test bodies are UTF-8")
}

/// Waits until `condition` holds, checking every 10 ms; fails after
/// [`READ_TIMEOUT`] with `what` in the message.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + READ_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `fut` and returns its output and how long it took.
pub async fn timed<T>(fut: impl Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = fut.await;
    (out, start.elapsed())
}
