//! The delayed tier against real crashes and at scale, on the real
//! `triaged` process: deferred publishes and delayed requeues survive
//! `kill -9` and still arrive no earlier than due; a million pending
//! entries live on disk, not in the broker's memory.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::triaged::Triaged;
use common::{body_str, now_ms, Client};

/// Bodies are `<n>@<earliest due, Unix ms>`.
fn due_of(body: &str) -> u64 {
    body.split_once('@').unwrap().1.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_publishes_survive_kill_9_and_arrive_no_earlier_than_due() {
    const COUNT: u64 = 300;
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    assert_eq!(
        broker.http("POST", "/channel/create?topic=t&channel=c").0,
        200
    );
    let mut producer = Client::connect(broker.tcp).await;
    for n in 0..COUNT {
        let delay = 1500 + (n * 7919) % 1500; // 1.5 s to 3 s, shuffled
                                              // The broker computes the due time after this, so it is no earlier.
        let due = now_ms() + delay;
        producer.dpub("t", delay, format!("{n}@{due}")).await;
    }
    let stats = broker.stats();
    assert_eq!(stats["topics"][0]["delayed_count"], COUNT, "{stats}");
    broker.kill9();

    let broker = Triaged::start(data.path());
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    consumer.rdy(500).await;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    while seen.len() < COUNT as usize {
        let msg = consumer.read_message().await;
        let arrived = now_ms();
        let body = body_str(&msg);
        let due = due_of(&body);
        assert!(
            arrived >= due,
            "{body} arrived at {arrived}, {} ms before due",
            due - arrived
        );
        consumer.fin(&msg.id).await;
        *seen
            .entry(body.split_once('@').unwrap().0.parse().unwrap())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), COUNT as usize);
    consumer.assert_alive().await;
    let stats = broker.stats();
    assert_eq!(stats["topics"][0]["delayed_count"], 0, "{stats}");
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_requeue_survives_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    consumer.rdy(1).await;
    Client::connect(broker.tcp)
        .await
        .publish("t", Bytes::from("retry"))
        .await;
    let first = consumer.read_message().await;
    let due = now_ms() + 2000;
    consumer.req(&first.id, 2000).await;
    // The REQ's write is done once a later command is answered.
    consumer.assert_alive().await;
    broker.kill9();

    let broker = Triaged::start(data.path());
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    consumer.rdy(10).await;
    let again = consumer.read_message().await;
    assert!(now_ms() >= due, "redelivered {} ms early", due - now_ms());
    assert_eq!((body_str(&again), again.attempts), ("retry".into(), 2));
    consumer.fin(&again.id).await;
    consumer
        .expect_nothing_for(Duration::from_millis(300))
        .await;
    broker.stop();
}

/// A million pending entries must cost disk, not memory: the broker's
/// resident set stays far below the data it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_pending_delayed_messages_stay_on_disk() {
    const COUNT: usize = 1_000_000;
    const BATCH: usize = 1000;
    const BODY: usize = 256;
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    let (status, body) = broker.http("POST", "/topic/create?topic=timers&tier=delayed&delay=1h");
    assert_eq!(status, 200, "{body}");
    let mut producer = Client::connect(broker.tcp).await;
    let payload = Bytes::from(vec![b'x'; BODY]);
    for _ in 0..COUNT / BATCH {
        producer.mpub("timers", vec![payload.clone(); BATCH]).await;
    }
    let stats = broker.stats();
    assert_eq!(stats["topics"][0]["delayed_count"], COUNT, "{stats}");
    let rss = broker.rss_bytes();
    let data_bytes = (COUNT * BODY) as u64;
    eprintln!(
        "{COUNT} pending delayed messages ({} MiB of bodies): resident {} MiB",
        data_bytes >> 20,
        rss >> 20
    );
    assert!(
        rss < data_bytes / 2,
        "resident {} MiB for {} MiB of pending bodies",
        rss >> 20,
        data_bytes >> 20
    );
    broker.stop();
}
