//! tokio-nsq 0.14, used unchanged and as its README shows (`NSQProducerConfig`,
//! `NSQConsumerConfig` with `NSQConsumerConfigSources::Daemons`), against an
//! in-process broker on ephemeral ports with its own data directory.
//!
//! tokio-nsq is strict where other clients are lenient: it needs all 13 fields
//! of the IDENTIFY reply with `max_rdy_count` as a u16, and treats every error
//! frame other than a bare `E_FIN_FAILED`/`E_REQ_FAILED`/`E_TOUCH_FAILED` as
//! fatal. Every wait here has a deadline.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConfigSharedCompression, NSQConsumer, NSQConsumerConfig,
    NSQConsumerConfigSources, NSQDeflateLevel, NSQEvent, NSQMessage, NSQProducer,
    NSQProducerConfig, NSQRequeueDelay, NSQTopic,
};
use triage_broker::Server;
use triage_config::BrokerConfig;

/// The longest any single step (an event, a message, a settle) may take.
const STEP: Duration = Duration::from_secs(10);
const CHANNEL: &str = "interop";

struct Harness {
    server: Server,
    _data: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        Harness::start_with(BrokerConfig::default()).await
    }

    /// Starts a broker with `base`, on ephemeral ports and a fresh data directory.
    async fn start_with(base: BrokerConfig) -> Harness {
        // The broker's log, shown for failing tests; RUST_LOG picks the level.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let data = tempfile::tempdir().unwrap();
        let config = BrokerConfig {
            tcp_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_path: data.path().to_path_buf(),
            ..base
        };
        let server = timeout(STEP, Server::start(config)).await.unwrap().unwrap();
        Harness {
            server,
            _data: data,
        }
    }

    fn tcp(&self) -> String {
        self.server.tcp_addr.to_string()
    }

    async fn stop(self) {
        timeout(STEP, self.server.shutdown())
            .await
            .expect("broker did not shut down within 10s");
    }

    /// `GET /stats?format=json&topic=` over a plain HTTP/1.1 request, and the
    /// channel's entry in it.
    async fn channel_stats(&self, topic: &str) -> Option<serde_json::Value> {
        let mut stream = TcpStream::connect(self.server.http_addr).await.unwrap();
        let request = format!(
            "GET /stats?format=json&topic={topic}&channel={CHANNEL} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.server.http_addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "/stats answered {head}");
        let stats: serde_json::Value = serde_json::from_str(body).unwrap();
        let topics = stats["topics"].as_array().unwrap();
        let topic = topics.iter().find(|t| t["topic_name"] == topic)?;
        topic["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel_name"] == CHANNEL)
            .cloned()
    }

    /// Waits until the channel has nothing queued, in flight or deferred: every
    /// FIN the client sent has taken effect. Returns the channel's stats.
    async fn settle(&self, topic: &str) -> serde_json::Value {
        let deadline = Instant::now() + STEP;
        loop {
            let stats = self.channel_stats(topic).await;
            if let Some(c) = &stats {
                if c["depth"] == 0 && c["in_flight_count"] == 0 && c["deferred_count"] == 0 {
                    return c.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "channel {topic}/{CHANNEL} did not settle: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn shared(compression: Option<NSQConfigSharedCompression>) -> NSQConfigShared {
    let shared = NSQConfigShared::new().set_client_id("interop-test");
    match compression {
        Some(compression) => shared.set_compression(compression),
        None => shared,
    }
}

/// A fresh topic: its name (tokio-nsq keeps `NSQTopic`'s private) and the topic.
fn topic(tag: &str) -> (String, Arc<NSQTopic>) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("tokio_nsq_{tag}_{nanos}");
    (name.clone(), NSQTopic::new(name).unwrap())
}

fn producer(harness: &Harness, compression: Option<NSQConfigSharedCompression>) -> NSQProducer {
    NSQProducerConfig::new(harness.tcp())
        .set_shared(shared(compression))
        .build()
}

fn consumer(
    harness: &Harness,
    topic: &Arc<NSQTopic>,
    max_in_flight: u32,
    compression: Option<NSQConfigSharedCompression>,
) -> NSQConsumer {
    NSQConsumerConfig::new(topic.clone(), NSQChannel::new(CHANNEL).unwrap())
        .set_max_in_flight(max_in_flight)
        .set_sources(NSQConsumerConfigSources::Daemons(vec![harness.tcp()]))
        .set_shared(shared(compression))
        .build()
}

async fn expect_producer_event(producer: &mut NSQProducer, what: &str) -> NSQEvent {
    timeout(STEP, producer.consume())
        .await
        .unwrap_or_else(|_| panic!("no producer event within {STEP:?} (waiting for {what})"))
        .expect("producer event stream ended")
}

async fn expect_healthy(producer: &mut NSQProducer) {
    let event = expect_producer_event(producer, "Healthy").await;
    assert!(
        matches!(event, NSQEvent::Healthy()),
        "expected Healthy, got {event:?}"
    );
}

async fn expect_ok(producer: &mut NSQProducer, what: &str) {
    let event = expect_producer_event(producer, what).await;
    assert!(
        matches!(event, NSQEvent::Ok()),
        "expected Ok for {what}, got {event:?}"
    );
}

/// Waits for the consumer's connection to finish IDENTIFY and SUB.
async fn expect_consumer_healthy(consumer: &mut NSQConsumer) {
    let event = timeout(STEP, consumer.consume())
        .await
        .expect("consumer never became healthy")
        .unwrap();
    assert!(
        matches!(event, NSQEvent::Healthy()),
        "expected Healthy, got {event:?}"
    );
}

async fn next_message(consumer: &mut NSQConsumer, got: usize, want: usize) -> NSQMessage {
    timeout(STEP, consumer.consume_filtered())
        .await
        .unwrap_or_else(|_| panic!("received {got} of {want} messages, then nothing for {STEP:?}"))
        .expect("consumer stream ended")
}

/// Bodies that exercise framing and compression: short text, every byte
/// value and, when `large`, 200 KiB of noise (incompressible, several snappy
/// chunks) and one of exactly 1 MiB, the default max_msg_size (tokio-nsq's
/// own "large PUB").
fn payloads(tag: &str, large: bool) -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("{tag}-{i:03}").into_bytes())
        .collect();
    bodies.push((0..=255u8).chain(tag.bytes()).collect());
    if !large {
        return bodies;
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let noise = (0..200 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    bodies.push(noise);
    let mut large = vec![0u8; 1024 * 1024];
    large[..tag.len()].copy_from_slice(tag.as_bytes());
    bodies.push(large);
    bodies
}

fn summary(bodies: &[Vec<u8>]) -> Vec<String> {
    bodies
        .iter()
        .map(|b| {
            format!(
                "{}B:{:?}",
                b.len(),
                String::from_utf8_lossy(&b[..b.len().min(24)])
            )
        })
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// PUB each of the first bodies, MPUB the rest, DPUB one more; a consumer
/// receives and finishes them all, exactly once each.
async fn roundtrip(
    tag: &str,
    producer_compression: Option<NSQConfigSharedCompression>,
    consumer_compression: Option<NSQConfigSharedCompression>,
    large: bool,
    config: BrokerConfig,
) {
    let harness = Harness::start_with(config).await;
    let (name, topic) = topic(tag);
    let bodies = payloads(tag, large);
    let deferred = format!("deferred {tag}").into_bytes();
    let started_ns = now_ns();

    let mut consumer = consumer(&harness, &topic, 10, consumer_compression);
    expect_consumer_healthy(&mut consumer).await;
    let mut producer = producer(&harness, producer_compression);
    expect_healthy(&mut producer).await;

    let (singles, batch) = bodies.split_at(10);
    for body in singles {
        producer.publish(&topic, body.clone()).await.unwrap();
    }
    for i in 0..singles.len() {
        expect_ok(&mut producer, &format!("PUB #{i}")).await;
    }
    producer
        .publish_multiple(&topic, batch.to_vec())
        .await
        .unwrap();
    expect_ok(&mut producer, "MPUB").await;
    let dpub_sent = Instant::now();
    producer
        .publish_deferred(&topic, deferred.clone(), 300)
        .await
        .unwrap();
    expect_ok(&mut producer, "DPUB").await;

    let mut expected = bodies.clone();
    expected.push(deferred.clone());
    let mut received = Vec::new();
    let mut ids = HashSet::new();
    while received.len() < expected.len() {
        let message = next_message(&mut consumer, received.len(), expected.len()).await;
        assert_eq!(
            message.attempt,
            1,
            "first delivery of {:?}",
            summary(std::slice::from_ref(&message.body))
        );
        assert!(
            message.timestamp >= started_ns - 5_000_000_000
                && message.timestamp <= now_ns() + 5_000_000_000,
            "timestamp {} is not the publish time in ns",
            message.timestamp
        );
        assert!(
            ids.insert(message.id),
            "message id {:?} delivered twice",
            message.id
        );
        if message.body == deferred {
            let waited = dpub_sent.elapsed();
            assert!(
                waited >= Duration::from_millis(280),
                "DPUB 300 ms delivered after {waited:?}"
            );
        }
        received.push(message.body.clone());
        message.finish().await;
    }

    let stats = harness.settle(&name).await;
    assert_eq!(stats["message_count"], expected.len(), "{stats}");

    received.sort();
    expected.sort();
    assert!(
        received == expected,
        "bodies differ:\n got {:?}\nwant {:?}",
        summary(&received),
        summary(&expected)
    );

    drop(consumer);
    drop(producer);
    harness.stop().await;
}

fn deflate() -> Option<NSQConfigSharedCompression> {
    Some(NSQConfigSharedCompression::Deflate(
        NSQDeflateLevel::new(3).unwrap(),
    ))
}

fn snappy() -> Option<NSQConfigSharedCompression> {
    Some(NSQConfigSharedCompression::Snappy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_plain() {
    roundtrip("plain", None, None, true, BrokerConfig::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_snappy() {
    roundtrip("snappy", snappy(), snappy(), true, BrokerConfig::default()).await;
}

/// Small messages only: tokio-nsq 0.14 compresses what it writes with
/// async-compression 0.3.15, whose `FlateEncoder::flush` marks itself flushed
/// after its first sync-flush call even when that call filled the 8 KiB
/// output buffer; the rest of a large compressed write then stays inside the
/// client until something else is written (so an MPUB of 1 MiB never reaches
/// nsqd either). `consume_deflate_large_messages` covers large frames the
/// broker deflates; the Python tests cover large frames the broker inflates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_deflate() {
    roundtrip(
        "deflate",
        deflate(),
        deflate(),
        false,
        BrokerConfig::default(),
    )
    .await;
}

/// A deflate consumer receiving large messages from a plain producer.
///
/// tokio-nsq's reading side (async-compression 0.3.15's bufread decoder)
/// polls the socket for more input before handing out output the inflater
/// already holds, so the last frame of a burst can sit decoded inside the
/// client until the next bytes arrive from the broker. Against nsqd the next
/// bytes are the heartbeat (30 s by default); here heartbeats come every
/// second (`client_timeout` 2 s) so that stall stays short. The broker has
/// sent everything by then: its stats show every message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_deflate_large_messages() {
    let config = BrokerConfig {
        client_timeout: Duration::from_secs(2),
        ..BrokerConfig::default()
    };
    roundtrip("deflate_large", None, deflate(), true, config).await;
}

/// REQ with no delay brings the message back with attempt 2 and the same id;
/// TOUCH on it is accepted (a fatal error frame would kill tokio-nsq's
/// connection) and FIN then settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_touch_finish() {
    let harness = Harness::start().await;
    let (name, topic) = topic("requeue");
    let body = b"requeue me".to_vec();

    let mut consumer = consumer(&harness, &topic, 1, None);
    expect_consumer_healthy(&mut consumer).await;
    let mut producer = producer(&harness, None);
    expect_healthy(&mut producer).await;
    producer.publish(&topic, body.clone()).await.unwrap();
    expect_ok(&mut producer, "PUB").await;

    let first = next_message(&mut consumer, 0, 2).await;
    assert_eq!((first.attempt, &first.body), (1, &body));
    let id = first.id;
    first.requeue(NSQRequeueDelay::NoDelay).await;

    let second = next_message(&mut consumer, 1, 2).await;
    assert_eq!((second.attempt, &second.body), (2, &body));
    assert_eq!(second.id, id, "a requeued message keeps its id, as in nsqd");
    second.touch().await;
    second.finish().await;

    let stats = harness.settle(&name).await;
    assert_eq!(stats["requeue_count"], 1, "{stats}");
    assert_eq!(stats["message_count"], 1, "{stats}");
    assert_eq!(
        stats["client_count"], 1,
        "the consumer's connection survived REQ, TOUCH and FIN: {stats}"
    );

    drop(consumer);
    drop(producer);
    harness.stop().await;
}
