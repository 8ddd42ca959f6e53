//! The worker library finding brokers through lookupd: in-process triage
//! brokers register with an in-process triage-lookupd on loopback, and a
//! consumer given only the lookupd's HTTP address consumes from all of them,
//! including a broker that starts after it, with its RDY divided among them.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use triage_worker::{Consumer, ConsumerConfig, Delivery, HandlerError};

mod common;

use common::{start_lookupd, start_registered_broker, wait_until, TestBroker};

/// Longest any condition may take to come true (registration, a poll, delivery).
const WAIT: Duration = Duration::from_secs(20);

/// A consumer that knows only `lookupd_http` (as `http://host:port`), polling it
/// every 100 ms, and the set of bodies it has handled.
fn lookupd_consumer(
    lookupd_http: SocketAddr,
) -> (
    Consumer<impl triage_worker::Handler>,
    Arc<Mutex<HashSet<String>>>,
) {
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let handler = {
        let handled = handled.clone();
        move |delivery: Delivery| {
            let handled = handled.clone();
            async move {
                let body = String::from_utf8(delivery.message.body.to_vec())?;
                handled.lock().unwrap().insert(body);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let config = ConsumerConfig {
        address: None,
        lookupd_http_addresses: vec![format!("http://{lookupd_http}")],
        lookupd_poll_interval: Duration::from_millis(100),
        client_id: "discovering".to_owned(),
        hostname: "test-host".to_owned(),
        // Short: a discovery task that did not stop would fail the shutdown.
        shutdown_timeout: Duration::from_secs(5),
        ..ConsumerConfig::default()
    };
    (Consumer::new(config, handler).unwrap(), handled)
}

/// `prefix-0`, ... published to `topic` on `broker`, returned.
async fn publish(broker: &TestBroker, topic: &str, prefix: &str, n: usize) -> Vec<String> {
    let bodies = common::bodies(prefix, n);
    broker.publish(topic, bodies.clone()).await;
    bodies
}

/// The RDY each consumer connection of `topic`/`channel` on `broker` has given it.
fn rdys(broker: &TestBroker, topic: &str, channel: &str) -> Vec<u64> {
    broker
        .server
        .broker
        .existing_channel(topic, channel)
        .map_or_else(
            |_| Vec::new(),
            |c| {
                c.snapshot()
                    .clients
                    .iter()
                    .map(|client| client.ready_count.load(Ordering::Relaxed))
                    .collect()
            },
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_given_only_lookupd_gets_every_message_of_two_brokers() {
    let lookupd = start_lookupd().await;
    let brokers = [
        start_registered_broker(&lookupd).await,
        start_registered_broker(&lookupd).await,
    ];
    let mut sent = HashSet::new();
    for (b, broker) in brokers.iter().enumerate() {
        sent.extend(publish(broker, "orders", &format!("b{b}"), 20).await);
    }
    let (consumer, handled) = lookupd_consumer(lookupd.http_addr);
    consumer.subscribe("orders", "billing", 4).await.unwrap();
    wait_until("every message of both brokers is handled", WAIT, || {
        *handled.lock().unwrap() == sent
    })
    .await;
    // One connection to each broker, the subscription's RDY of 4 divided between them.
    wait_until("each broker has RDY 2 from one connection", WAIT, || {
        brokers.iter().all(|b| rdys(b, "orders", "billing") == [2])
    })
    .await;
    let planned: Vec<u64> = consumer
        .status()
        .rdy()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(planned, [4]);

    consumer.shutdown().await.unwrap();
    for broker in &brokers {
        assert_eq!(broker.pending("orders", "billing"), (0, 0));
    }
    for broker in brokers {
        broker.server.shutdown().await;
    }
    lookupd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_starts_later_is_discovered_at_a_later_poll() {
    let lookupd = start_lookupd().await;
    let first = start_registered_broker(&lookupd).await;
    // The topic is not registered anywhere yet: lookupd answers 404 until it is.
    let (consumer, handled) = lookupd_consumer(lookupd.http_addr);
    consumer.subscribe("jobs", "w", 2).await.unwrap();
    let mut sent: HashSet<String> = publish(&first, "jobs", "first", 5)
        .await
        .into_iter()
        .collect();
    wait_until("the first broker's messages are handled", WAIT, || {
        *handled.lock().unwrap() == sent
    })
    .await;

    let second = start_registered_broker(&lookupd).await;
    sent.extend(publish(&second, "jobs", "second", 5).await);
    wait_until("the later broker's messages are handled too", WAIT, || {
        *handled.lock().unwrap() == sent
    })
    .await;
    // Two connections now share the RDY of 2: 1 each.
    wait_until("each broker has RDY 1", WAIT, || {
        rdys(&first, "jobs", "w") == [1] && rdys(&second, "jobs", "w") == [1]
    })
    .await;

    consumer.shutdown().await.unwrap();
    for broker in [first, second] {
        assert_eq!(broker.pending("jobs", "w"), (0, 0));
        broker.server.shutdown().await;
    }
    lookupd.shutdown().await;
}

#[test]
fn a_consumer_needs_a_broker_or_a_lookupd_and_lookupds_must_be_host_port() {
    let neither = ConsumerConfig {
        address: None,
        ..ConsumerConfig::default()
    };
    assert_eq!(neither.validate().unwrap_err().key, "address");
    let only_lookupd = ConsumerConfig {
        address: None,
        lookupd_http_addresses: vec!["127.0.0.1:4161".to_owned()],
        ..ConsumerConfig::default()
    };
    only_lookupd.validate().unwrap();
    let https = ConsumerConfig {
        lookupd_http_addresses: vec!["https://lookupd:4161".to_owned()],
        ..only_lookupd.clone()
    };
    assert_eq!(https.validate().unwrap_err().key, "lookupd_http_addresses");
    let never = ConsumerConfig {
        lookupd_poll_interval: Duration::ZERO,
        ..only_lookupd
    };
    assert_eq!(never.validate().unwrap_err().key, "lookupd_poll_interval");
}
