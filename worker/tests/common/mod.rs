//! The test harness shared by the worker's integration tests: a real triage
//! broker started in this process on 127.0.0.1 with ephemeral ports and a
//! temporary data directory, and a triage-lookupd for it to register with.

#![allow(dead_code)] // Each test file uses a different part.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use triage_broker::Server;
use triage_config::BrokerConfig;
use triage_lookupd::{Lookupd, Options};
use triage_worker::ConsumerConfig;

pub struct TestBroker {
    pub server: Server,
    _data: tempfile::TempDir,
}

/// A broker on ephemeral ports.
pub async fn start_broker() -> TestBroker {
    start_broker_on("127.0.0.1:0".parse().unwrap()).await
}

/// A broker whose TCP port is `tcp_address` (to come back where a stopped one was).
pub async fn start_broker_on(tcp_address: SocketAddr) -> TestBroker {
    start_broker_with(tcp_address, |_| {}).await
}

/// A broker on `tcp_address` with `configure` applied to its configuration.
pub async fn start_broker_with(
    tcp_address: SocketAddr,
    configure: impl FnOnce(&mut BrokerConfig),
) -> TestBroker {
    let data = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig {
        tcp_address,
        http_address: "127.0.0.1:0".parse().unwrap(),
        data_path: data.path().to_path_buf(),
        ..BrokerConfig::default()
    };
    configure(&mut config);
    TestBroker {
        server: Server::start(config).await.unwrap(),
        _data: data,
    }
}

/// A triage-lookupd on ephemeral ports.
pub async fn start_lookupd() -> Lookupd {
    Lookupd::start(Options {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        broadcast_address: "127.0.0.1".into(),
        ..Options::default()
    })
    .await
    .unwrap()
}

/// A broker on an ephemeral port registering its topics with `lookupd`.
pub async fn start_registered_broker(lookupd: &Lookupd) -> TestBroker {
    let lookupd_tcp = lookupd.tcp_addr.to_string();
    start_broker_with("127.0.0.1:0".parse().unwrap(), |config| {
        config.broadcast_address = "127.0.0.1".into();
        config.lookupd_tcp_addresses = vec![lookupd_tcp];
    })
    .await
}

impl TestBroker {
    /// A consumer configuration for this broker.
    pub fn config(&self, client_id: &str) -> ConsumerConfig {
        ConsumerConfig {
            address: Some(self.server.tcp_addr.to_string()),
            client_id: client_id.to_owned(),
            hostname: "test-host".to_owned(),
            ..ConsumerConfig::default()
        }
    }

    pub async fn publish(&self, topic: &str, bodies: impl IntoIterator<Item = String>) {
        let bodies: Vec<Bytes> = bodies.into_iter().map(Bytes::from).collect();
        self.server
            .broker
            .publish(topic, bodies, None)
            .await
            .unwrap();
    }

    /// `(depth, in_flight)` of a channel, `(0, 0)` if it does not exist.
    pub fn pending(&self, topic: &str, channel: &str) -> (u64, u64) {
        self.server
            .broker
            .existing_channel(topic, channel)
            .map_or((0, 0), |c| {
                let s = c.snapshot();
                (s.depth, s.in_flight)
            })
    }

    /// Messages ever published to `topic`, 0 if it does not exist.
    pub fn published(&self, topic: &str) -> u64 {
        self.server
            .broker
            .existing_topic(topic)
            .map_or(0, |t| t.message_count.load(Ordering::Relaxed))
    }
}

/// `prefix-0`, `prefix-1`, ...
pub fn bodies(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Polls `condition` every 20 ms until it holds; fails the test naming `what`
/// if it does not within `within`.
pub async fn wait_until(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
