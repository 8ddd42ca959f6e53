//! Brokers registering with lookupd: three in-process brokers and one
//! triage-lookupd on loopback. Every wait polls lookupd's HTTP API with a
//! deadline; brokers and lookupd are started and stopped by each test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use common::{start_broker, TestBroker};
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use tokio_nsq::{
    NSQChannel, NSQConfigShared, NSQConsumer, NSQConsumerConfig, NSQConsumerConfigSources,
    NSQConsumerLookupConfig, NSQEvent, NSQTopic,
};
use triage_broker::ctl::client::AdminClient;
use triage_broker::Server;
use triage_config::BrokerConfig;
use triage_lookupd::db::Registration;
use triage_lookupd::{Lookupd, Options};

/// Longest any condition may take to come true.
const WITHIN: Duration = Duration::from_secs(20);

async fn start_lookupd(tcp_address: SocketAddr) -> Lookupd {
    let options = Options {
        tcp_address,
        http_address: "127.0.0.1:0".parse().unwrap(),
        broadcast_address: "127.0.0.1".into(),
        ..Options::default()
    };
    Lookupd::start(options).await.unwrap()
}

async fn start_brokers(n: usize, lookupd_tcp: SocketAddr) -> Vec<TestBroker> {
    let mut brokers = Vec::new();
    for _ in 0..n {
        brokers.push(
            start_broker(|config| {
                config.broadcast_address = "127.0.0.1".into();
                config.lookupd_tcp_addresses = vec![lookupd_tcp.to_string()];
            })
            .await,
        );
    }
    brokers
}

async fn get(http_addr: SocketAddr, path: &str) -> Option<Value> {
    let body = AdminClient::new(http_addr.to_string())
        .get(path)
        .await
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// The TCP ports `/lookup?topic=` lists, sorted; empty if the topic is unknown.
async fn producer_ports(http_addr: SocketAddr, topic: &str) -> Vec<u16> {
    let Some(lookup) = get(http_addr, &format!("/lookup?topic={topic}")).await else {
        return Vec::new();
    };
    let mut ports: Vec<u16> = lookup["producers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tcp_port"].as_u64().unwrap() as u16)
        .collect();
    ports.sort_unstable();
    ports
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WITHIN;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether lookupd's `/nodes` lists the broker on `port` with `topic` of `tier`.
async fn node_says_tier(http: SocketAddr, port: u16, topic: &str, tier: &str) -> bool {
    let Some(nodes) = get(http, "/nodes").await else {
        return false;
    };
    nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["tcp_port"] == port && n["triage_topic_tiers"][topic] == tier)
}

fn ports(brokers: &[TestBroker]) -> Vec<u16> {
    let mut ports: Vec<u16> = brokers.iter().map(|b| b.tcp_addr().port()).collect();
    ports.sort_unstable();
    ports
}

async fn stop(brokers: Vec<TestBroker>, lookupd: Lookupd) {
    for broker in brokers {
        broker.shutdown().await;
    }
    timeout(Duration::from_secs(5), lookupd.shutdown())
        .await
        .expect("lookupd shut down within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_discovers_three_brokers_through_lookupd_and_gets_every_message() {
    let lookupd = start_lookupd("127.0.0.1:0".parse().unwrap()).await;
    let brokers = start_brokers(3, lookupd.tcp_addr).await;
    let per_broker = 10;
    let mut sent = HashSet::new();
    for (b, broker) in brokers.iter().enumerate() {
        let bodies: Vec<String> = (0..per_broker).map(|i| format!("b{b}-m{i}")).collect();
        sent.extend(bodies.iter().cloned());
        broker.publish_all("orders", bodies).await;
    }
    let http = lookupd.http_addr;
    let expected = ports(&brokers);
    wait_for("all three brokers under /lookup", || async {
        producer_ports(http, "orders").await == expected
    })
    .await;

    let lookup_config = NSQConsumerLookupConfig::new()
        .set_poll_interval(Duration::from_secs(1))
        .set_addresses([format!("http://{http}")].into_iter().collect());
    let mut consumer = NSQConsumerConfig::new(
        NSQTopic::new("orders").unwrap(),
        NSQChannel::new("billing").unwrap(),
    )
    .set_max_in_flight(10)
    .set_sources(NSQConsumerConfigSources::Lookup(lookup_config))
    .build();
    let mut received = HashSet::new();
    let deadline = Instant::now() + WITHIN;
    while received.len() < sent.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = timeout(left, consumer.consume())
            .await
            .unwrap_or_else(|_| panic!("received {} of {} messages", received.len(), sent.len()))
            .expect("consumer stream ended");
        if let NSQEvent::Message(message) = event {
            received.insert(String::from_utf8(message.body.clone()).unwrap());
            message.finish().await;
        }
    }
    assert_eq!(received, sent);
    // The consumer's SUB created the channel on every broker, and each registered it.
    wait_for("the channel under /lookup", || async {
        get(http, "/lookup?topic=orders")
            .await
            .map(|l| l["channels"].clone())
            == Some(json!(["billing"]))
    })
    .await;
    drop(consumer);
    stop(brokers, lookupd).await;
}

#[tokio::test]
async fn creations_and_deletions_reach_lookupd() {
    let lookupd = start_lookupd("127.0.0.1:0".parse().unwrap()).await;
    let brokers = start_brokers(2, lookupd.tcp_addr).await;
    let http = lookupd.http_addr;
    let db = &lookupd.shared.db;
    for broker in &brokers {
        broker.broker().channel("audit", "archive").await.unwrap();
    }
    let channel = Registration::Channel {
        topic: "audit".into(),
        channel: "archive".into(),
    };
    wait_for("both brokers' channel registrations", || async {
        db.producers(&channel).len() == 2
    })
    .await;
    assert_eq!(producer_ports(http, "audit").await, ports(&brokers));

    brokers[0]
        .broker()
        .delete_channel("audit", "archive")
        .await
        .unwrap();
    wait_for("the deleted channel's UNREGISTER", || async {
        db.producers(&channel).len() == 1
    })
    .await;
    // The topic itself is still there on both.
    assert_eq!(producer_ports(http, "audit").await, ports(&brokers));

    brokers[1].broker().delete_topic("audit").await.unwrap();
    let remaining = vec![brokers[0].tcp_addr().port()];
    wait_for("the deleted topic's UNREGISTER", || async {
        producer_ports(http, "audit").await == remaining
    })
    .await;
    assert!(db.producers(&channel).is_empty());

    // A topic created after IDENTIFY reaches triage-lookupd with its tier.
    brokers[0]
        .broker()
        .topic_with_tier("alerts", Some(triage_config::Tier::Memory), None)
        .await
        .unwrap();
    let port = brokers[0].tcp_addr().port();
    wait_for("the new topic's tier in /nodes", || {
        node_says_tier(http, port, "alerts", "memory")
    })
    .await;

    // A tier changed in place (`/topic/tier`) reaches it too.
    brokers[0]
        .broker()
        .change_tier(
            "alerts",
            triage_config::Tier::Persistent,
            Default::default(),
        )
        .await
        .unwrap();
    wait_for("the changed tier in /nodes", || {
        node_says_tier(http, port, "alerts", "persistent")
    })
    .await;
    stop(brokers, lookupd).await;
}

#[tokio::test]
async fn a_restarted_lookupd_gets_every_registration_again() {
    let lookupd = start_lookupd("127.0.0.1:0".parse().unwrap()).await;
    let lookupd_tcp = lookupd.tcp_addr;
    let brokers = start_brokers(3, lookupd_tcp).await;
    for broker in &brokers {
        broker.broker().channel("orders", "billing").await.unwrap();
    }
    brokers[0]
        .broker()
        .topic_with_tier("alerts", Some(triage_config::Tier::Memory), None)
        .await
        .unwrap();
    let expected = ports(&brokers);
    let http = lookupd.http_addr;
    wait_for("the first registrations", || async {
        producer_ports(http, "orders").await == expected
    })
    .await;

    timeout(Duration::from_secs(5), lookupd.shutdown())
        .await
        .expect("lookupd shut down within 5 s");
    // The same TCP address, as a restarted lookupd would have.
    let lookupd = start_lookupd(lookupd_tcp).await;
    let http = lookupd.http_addr;
    wait_for("every broker to register again", || async {
        producer_ports(http, "orders").await == expected
    })
    .await;
    wait_for("the channel and the other topic", || async {
        let channels = get(http, "/channels?topic=orders").await;
        let alerts = producer_ports(http, "alerts").await;
        channels == Some(json!({"channels": ["billing"]}))
            && alerts == [brokers[0].tcp_addr().port()]
    })
    .await;
    // Each broker re-identified with its topics' tiers (triage's extension).
    let nodes = get(http, "/nodes").await.unwrap();
    let first = nodes["producers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["tcp_port"] == brokers[0].tcp_addr().port())
        .unwrap()
        .clone();
    assert_eq!(first["triage_topic_tiers"]["alerts"], "memory");
    assert_eq!(first["triage_topic_tiers"]["orders"], "persistent");
    let topics: BTreeSet<String> = serde_json::from_value(first["topics"].clone()).unwrap();
    assert_eq!(topics, ["alerts", "orders"].map(String::from).into());
    stop(brokers, lookupd).await;
}

/// A broker on given addresses and data dir, so it can be stopped and
/// started again as the same node.
async fn start_at(data: &Path, tcp: SocketAddr, http: SocketAddr, lookupd: SocketAddr) -> Server {
    let config = BrokerConfig {
        tcp_address: tcp,
        http_address: http,
        data_path: data.to_path_buf(),
        broadcast_address: "127.0.0.1".into(),
        lookupd_tcp_addresses: vec![lookupd.to_string()],
        ..BrokerConfig::default()
    };
    timeout(WITHIN, Server::start(config))
        .await
        .unwrap()
        .unwrap()
}

/// A tokio-nsq consumer that finds its brokers through lookupd, polling
/// every second and reconnecting within a second.
fn lookupd_consumer(lookupd_http: SocketAddr, topic: &str, channel: &str) -> NSQConsumer {
    let lookup_config = NSQConsumerLookupConfig::new()
        .set_poll_interval(Duration::from_secs(1))
        .set_addresses([format!("http://{lookupd_http}")].into_iter().collect());
    NSQConsumerConfig::new(
        NSQTopic::new(topic).unwrap(),
        NSQChannel::new(channel).unwrap(),
    )
    .set_max_in_flight(10)
    .set_sources(NSQConsumerConfigSources::Lookup(lookup_config))
    .set_shared(NSQConfigShared::new().set_backoff_max_wait(Duration::from_secs(1)))
    .build()
}

/// Receives (and finishes) until every body of `want` has arrived; fails if
/// one of `never` arrives first.
async fn receive_all(
    consumer: &mut NSQConsumer,
    received: &mut HashSet<String>,
    want: &HashSet<String>,
    never: &HashSet<String>,
) {
    let deadline = Instant::now() + WITHIN;
    while !want.is_subset(received) {
        let left = deadline.saturating_duration_since(Instant::now());
        let missing = want.difference(received).count();
        let event = timeout(left, consumer.consume())
            .await
            .unwrap_or_else(|_| panic!("{missing} messages never arrived"))
            .expect("consumer stream ended");
        if let NSQEvent::Message(message) = event {
            let body = String::from_utf8(message.body.clone()).unwrap();
            assert!(!never.contains(&body), "{body} arrived too early");
            received.insert(body);
            message.finish().await;
        }
    }
}

fn bodies(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

async fn publish(server: &Server, topic: &str, bodies: &[String]) {
    let bodies = bodies.iter().map(|b| Bytes::from(b.clone())).collect();
    server.broker.publish(topic, bodies, None).await.unwrap();
}

/// The scenario: three brokers, one consumer through lookupd. One
/// broker stops while holding persistent messages; the others carry on;
/// when it returns (same address, same data) its messages are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_returns_delivers_what_it_held_while_the_others_carry_on() {
    let lookupd = start_lookupd("127.0.0.1:0".parse().unwrap()).await;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = Vec::new();
    for dir in &dirs {
        servers.push(start_at(dir.path(), any, any, lookupd.tcp_addr).await);
    }
    let mut received = HashSet::new();
    let none = HashSet::new();

    let first: Vec<Vec<String>> = (0..3).map(|b| bodies(&format!("first-b{b}"), 5)).collect();
    for (server, batch) in servers.iter().zip(&first) {
        publish(server, "orders", batch).await;
    }
    let mut consumer = lookupd_consumer(lookupd.http_addr, "orders", "billing");
    let want: HashSet<String> = first.iter().flatten().cloned().collect();
    receive_all(&mut consumer, &mut received, &want, &none).await;

    // Broker 1 holds a batch (its channel paused), then stops.
    let held = bodies("held-b1", 5);
    servers[1]
        .broker
        .pause_channel("orders", "billing", true)
        .await
        .unwrap();
    publish(&servers[1], "orders", &held).await;
    let stopped = servers.remove(1);
    let (tcp, http) = (stopped.tcp_addr, stopped.http_addr);
    timeout(WITHIN, stopped.shutdown()).await.unwrap();

    // The others carry on.
    let during: Vec<String> = bodies("during-b0", 5)
        .into_iter()
        .chain(bodies("during-b2", 5))
        .collect();
    publish(&servers[0], "orders", &during[..5]).await;
    publish(&servers[1], "orders", &during[5..]).await;
    let held_set: HashSet<String> = held.iter().cloned().collect();
    let want: HashSet<String> = during.iter().cloned().collect();
    receive_all(&mut consumer, &mut received, &want, &held_set).await;

    // It returns as the same node and delivers what it held.
    let returned = start_at(dirs[1].path(), tcp, http, lookupd.tcp_addr).await;
    returned
        .broker
        .pause_channel("orders", "billing", false)
        .await
        .unwrap();
    receive_all(&mut consumer, &mut received, &held_set, &none).await;
    assert_eq!(received.len(), 15 + 5 + 10);

    drop(consumer);
    servers.push(returned);
    for server in servers {
        timeout(WITHIN, server.shutdown()).await.unwrap();
    }
    timeout(WITHIN, lookupd.shutdown()).await.unwrap();
}
