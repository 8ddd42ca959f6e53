//! The delayed tier over the wire: deferred publishes and delayed requeues
//! of persistent and delayed topics wait in the store, a delayed topic's
//! default delay and batch window, dead letters after `max_attempts`, and
//! what a memory topic keeps in memory instead.
//!
//! Timing assertions here are lower bounds only ("not before its due
//! time"), which no amount of machine noise can break; the paused-clock
//! test (delayed_scheduler.rs) checks the scheduler's timing exactly.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{body_str, now_ms, start_broker, TestBroker, QUIET};
use serde_json::Value;
use triage_config::{Tier, TopicSettings};
use triage_protocol::Message;

async fn create(tb: &TestBroker, topic: &str, tier: Tier, settings: TopicSettings) {
    tb.broker()
        .topic_with_tier(topic, Some(tier), Some(settings))
        .await
        .unwrap();
}

fn delayed_topic(delay_ms: u64, window_ms: u64) -> TopicSettings {
    TopicSettings {
        delay: Duration::from_millis(delay_ms),
        batch_window: Duration::from_millis(window_ms),
        max_attempts: 0,
    }
}

fn seq_of(msg: &Message) -> u64 {
    msg.id.to_u64().unwrap()
}

#[tokio::test]
async fn dpub_on_a_persistent_topic_waits_in_the_store_until_due() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 10).await;
    let mut producer = tb.connect().await;
    let sent = Instant::now();
    producer.dpub("t", 400, "later").await;
    let delayed = &tb.broker().delayed;
    assert_eq!(delayed.pending_for_topic("t"), 1);
    // Not in the channel's memory: nothing queued, nothing deferred there.
    let channel = tb.broker().existing_channel("t", "c").unwrap().snapshot();
    assert_eq!((channel.depth, channel.deferred), (0, 0));

    let msg = consumer.read_message().await;
    assert!(
        sent.elapsed() >= Duration::from_millis(400),
        "delivered after {:?}, before its 400 ms delay",
        sent.elapsed()
    );
    assert_eq!((body_str(&msg), msg.attempts), ("later".into(), 1));
    assert_eq!(delayed.pending_for_topic("t"), 0);
    consumer.fin(&msg.id).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn a_delayed_topic_defers_every_publish_by_its_default_delay() {
    let tb = start_broker(|_| {}).await;
    create(&tb, "sla", Tier::Delayed, delayed_topic(300, 0)).await;
    let mut consumer = tb.consumer("sla", "escalate", 10).await;
    let mut producer = tb.connect().await;
    let sent = Instant::now();
    producer
        .mpub("sla", vec!["a".into(), "b".into(), "c".into()])
        .await;
    producer.publish("sla", "d").await;
    // An explicit delay wins over the default.
    producer.dpub("sla", 600, "e").await;
    assert_eq!(tb.broker().delayed.pending_for_topic("sla"), 5);
    assert!(consumer
        .try_read_message(Duration::from_millis(150))
        .await
        .is_none());

    let first = consumer.read_messages(4).await;
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "{:?}",
        sent.elapsed()
    );
    let mut bodies: Vec<_> = first.iter().map(body_str).collect();
    bodies.sort();
    assert_eq!(bodies, ["a", "b", "c", "d"]);
    let last = consumer.read_message().await;
    assert!(
        sent.elapsed() >= Duration::from_millis(600),
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(body_str(&last), "e");
    tb.shutdown().await;
}

#[tokio::test]
async fn a_batch_window_releases_messages_due_within_it_together() {
    const WINDOW: u64 = 3000;
    let tb = start_broker(|_| {}).await;
    create(&tb, "nightly", Tier::Delayed, delayed_topic(1, WINDOW)).await;
    let mut consumer = tb.consumer("nightly", "report", 10).await;
    let mut producer = tb.connect().await;
    // Start just after a window boundary, so three publishes 100 ms apart
    // all fall in one window.
    common::wait_until("the start of a window", || now_ms() % WINDOW < 200).await;
    let first_sent = now_ms();
    for body in ["a", "b", "c"] {
        producer.publish("nightly", body).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window_end = first_sent.div_ceil(WINDOW) * WINDOW;
    let msgs = consumer.read_messages(3).await;
    let arrived = now_ms();
    assert!(
        arrived >= window_end,
        "released at {arrived}, before the window's end {window_end}"
    );
    assert_eq!(
        msgs.iter().map(body_str).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    // Released together: one move into the log, so consecutive seqs.
    let seqs: Vec<u64> = msgs.iter().map(seq_of).collect();
    assert_eq!(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2]);
    tb.shutdown().await;
}

#[tokio::test]
async fn req_with_a_delay_on_a_persistent_topic_goes_to_the_store() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["retry me"]).await;
    let first = consumer.read_message().await;
    let requeued = Instant::now();
    consumer.req(&first.id, 500).await;
    consumer.assert_alive().await;
    let broker = tb.broker();
    assert_eq!(broker.delayed.pending_for_channel("t", "c"), 1);
    let channel = broker.existing_channel("t", "c").unwrap().snapshot();
    assert_eq!(
        (channel.in_flight, channel.deferred),
        (0, 0),
        "not in memory"
    );

    let again = consumer.read_message().await;
    assert!(requeued.elapsed() >= Duration::from_millis(500));
    assert_eq!((body_str(&again), again.attempts), ("retry me".into(), 2));
    assert_eq!(broker.delayed.pending_for_channel("t", "c"), 0);
    consumer.fin(&again.id).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn a_delayed_requeue_comes_back_to_its_own_channel_only() {
    let tb = start_broker(|_| {}).await;
    let mut retrying = tb.consumer("t", "retrying", 5).await;
    let mut other = tb.consumer("t", "other", 5).await;
    tb.publish_all("t", ["x"]).await;
    let x = retrying.read_message().await;
    let x_other = other.read_message().await;
    other.fin(&x_other.id).await;
    retrying.req(&x.id, 200).await;
    let again = retrying.read_message().await;
    assert_eq!(body_str(&again), "x");
    retrying.fin(&again.id).await;
    // The other channel finished x once and sees nothing more, not even
    // after its messages after the release point flow.
    tb.publish_all("t", ["y"]).await;
    let next = other.read_message().await;
    assert_eq!(body_str(&next), "y");
    other.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn a_memory_topic_keeps_deferred_messages_in_memory() {
    let tb = start_broker(|_| {}).await;
    create(&tb, "urgent", Tier::Memory, TopicSettings::default()).await;
    let mut consumer = tb.consumer("urgent", "c", 1).await;
    tb.connect().await.dpub("urgent", 300, "soon").await;
    assert_eq!(tb.broker().delayed.pending_total("urgent"), 0);
    let channel = tb
        .broker()
        .existing_channel("urgent", "c")
        .unwrap()
        .snapshot();
    assert_eq!(channel.deferred, 1, "deferred in memory");
    assert_eq!(body_str(&consumer.read_message().await), "soon");
    tb.shutdown().await;
}

#[tokio::test]
async fn entries_of_a_deleted_topic_are_dropped_not_delivered_to_a_new_one() {
    let tb = start_broker(|_| {}).await;
    tb.broker().channel("gone", "c").await.unwrap();
    tb.connect().await.dpub("gone", 300, "old").await;
    tb.broker().delete_topic("gone").await.unwrap();
    assert_eq!(tb.broker().delayed.pending_total("gone"), 0);
    let mut consumer = tb.consumer("gone", "c", 5).await;
    tb.connect().await.dpub("gone", 400, "new").await;
    // "old" is due first but belongs to the deleted topic.
    let msg = consumer.read_message().await;
    assert_eq!(body_str(&msg), "new");
    consumer.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn requeues_of_a_deleted_channel_are_dropped_not_delivered_to_a_new_one() {
    let tb = start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["old"]).await;
    let old = consumer.read_message().await;
    consumer.req(&old.id, 300).await;
    consumer.assert_alive().await;
    tb.broker().delete_channel("t", "c").await.unwrap();
    assert_eq!(tb.broker().delayed.pending_for_channel("t", "c"), 0);
    // A channel of the same name again, and a deferred publish for it.
    let mut consumer = tb.consumer("t", "c", 5).await;
    tb.connect().await.dpub("t", 600, "new").await;
    // "old" is due first but was requeued by the deleted channel.
    let msg = consumer.read_message().await;
    assert_eq!(body_str(&msg), "new");
    consumer.expect_nothing_for(QUIET).await;
    assert_eq!(tb.broker().delayed.pending_for_channel("t", "c"), 0);
    tb.shutdown().await;
}

/// Reads the next message of `<topic>.dead` and parses its JSON envelope.
async fn next_dead_letter(tb: &TestBroker, topic: &str) -> Value {
    let mut dead = tb.consumer(&format!("{topic}.dead"), "inspect", 1).await;
    let msg = dead.read_message().await;
    dead.fin(&msg.id).await;
    serde_json::from_slice(&msg.body).unwrap()
}

#[tokio::test]
async fn a_message_requeued_max_attempts_times_goes_to_the_dead_letter_topic() {
    let tb = start_broker(|_| {}).await;
    let settings = TopicSettings {
        max_attempts: 2,
        ..TopicSettings::default()
    };
    create(&tb, "jobs", Tier::Persistent, settings).await;
    let mut consumer = tb.consumer("jobs", "w", 1).await;
    tb.publish_all("jobs", ["poison"]).await;
    for attempt in 1..=2 {
        let msg = consumer.read_message().await;
        assert_eq!((body_str(&msg), msg.attempts), ("poison".into(), attempt));
        consumer.req(&msg.id, 0).await;
    }
    tb.publish_all("jobs", ["fine"]).await;
    let fine = consumer.read_message().await;
    assert_eq!(
        body_str(&fine),
        "fine",
        "the poison message is not redelivered"
    );
    consumer.fin(&fine.id).await;

    let letter = next_dead_letter(&tb, "jobs").await;
    assert_eq!(letter["topic"], "jobs");
    assert_eq!(letter["channel"], "w");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["reason"], "requeued");
    assert_eq!(letter["body"], "poison");
    assert_eq!(
        tb.broker().existing_topic("jobs.dead").unwrap().tier(),
        Tier::Persistent
    );
    consumer.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn a_message_that_keeps_timing_out_goes_to_the_dead_letter_topic() {
    let tb = start_broker(|_| {}).await;
    let settings = TopicSettings {
        max_attempts: 2,
        ..TopicSettings::default()
    };
    create(&tb, "slow", Tier::Persistent, settings).await;
    let mut consumer = tb.connect().await;
    consumer
        .identify_ok(serde_json::json!({ "msg_timeout": 1000 }))
        .await;
    consumer.sub("slow", "w").await;
    consumer.rdy(1).await;
    tb.publish_all("slow", [vec![0xff_u8, 0x00, 0x10]]).await;
    for attempt in 1..=2 {
        let msg = consumer.read_message().await;
        assert_eq!(msg.attempts, attempt);
        // Never finished: it times out after a second.
    }
    let letter = next_dead_letter(&tb, "slow").await;
    assert_eq!(letter["reason"], "timed out");
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["body_hex"], "ff0010", "a binary body is hex");
    consumer.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}
