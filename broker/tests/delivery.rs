//! Delivery over real sockets: fan-out, sharing, RDY as a window, requeue,
//! timeouts, deferral, memory-tier bounds, ephemeral names, heartbeats,
//! handshake timeout, compression, sampling, pause and consumer loss.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;
use triage_config::{OverflowPolicy, Tier};

use bytes::Bytes;
use common::{bodies, body_str, start_broker, timed, wait_until, Client, TestBroker, QUIET};
use serde_json::json;
use tokio::time::Instant;
use triage_protocol::{Command, ErrorCode, Message, MessageId};

fn body_strs(msgs: &[Message]) -> Vec<String> {
    msgs.iter().map(body_str).collect()
}

fn strs(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// How many messages the broker has in flight to `client` on `topic`/`channel`.
fn in_flight_of(tb: &TestBroker, topic: &str, channel: &str, client: &Client) -> u64 {
    let addr = client.local_addr();
    let snapshot = tb
        .broker()
        .existing_channel(topic, channel)
        .unwrap()
        .snapshot();
    let info = snapshot
        .clients
        .iter()
        .find(|c| c.remote_addr == addr)
        .expect("client is a consumer");
    info.in_flight.load(Ordering::Relaxed)
}

// ---------------------------------------------------------------- topology

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_gets_every_message() {
    let tb = start_broker(|_| {}).await;
    let mut a = tb.consumer("t", "a", 100).await;
    let mut b = tb.consumer("t", "b", 100).await;
    tb.publish_all("t", bodies("m", 10)).await;
    for consumer in [&mut a, &mut b] {
        let msgs = consumer.read_messages(10).await;
        assert_eq!(body_strs(&msgs), strs("m", 10));
        assert!(msgs.iter().all(|m| m.attempts == 1));
        consumer.expect_nothing_for(QUIET).await;
    }
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_of_one_channel_share_its_messages() {
    let tb = start_broker(|_| {}).await;
    let mut a = tb.consumer("t", "c", 1).await;
    let mut b = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", bodies("m", 10)).await;
    // RDY 1 each: each holds exactly one, and not the same one.
    let first_a = a.read_message().await;
    let first_b = b.read_message().await;
    assert_ne!(first_a.id, first_b.id);
    a.expect_nothing_for(QUIET).await;
    b.expect_nothing_for(Duration::from_millis(50)).await;

    let mut seen = vec![body_str(&first_a), body_str(&first_b)];
    a.fin(&first_a.id).await;
    b.fin(&first_b.id).await;
    a.rdy(10).await;
    b.rdy(10).await;
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    wait_until("all 8 remaining messages are in flight", || {
        let s = channel.snapshot();
        s.depth == 0 && s.in_flight == 8
    })
    .await;
    let for_a = in_flight_of(&tb, "t", "c", &a) as usize;
    let for_b = in_flight_of(&tb, "t", "c", &b) as usize;
    assert_eq!(for_a + for_b, 8);
    seen.extend(body_strs(&a.read_messages(for_a).await));
    seen.extend(body_strs(&b.read_messages(for_b).await));
    a.expect_nothing_for(Duration::from_millis(100)).await;
    b.expect_nothing_for(Duration::from_millis(100)).await;
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 10, "each message exactly once: {seen:?}");
    assert_eq!(unique, strs("m", 10).iter().collect::<HashSet<_>>());
    tb.shutdown().await;
}

#[tokio::test]
async fn topic_without_channel_keeps_messages_for_its_first_channel() {
    let tb = start_broker(|_| {}).await;
    tb.publish_all("t", bodies("early", 3)).await;
    assert_eq!(tb.broker().existing_topic("t").unwrap().snapshot().depth, 3);
    let mut first = tb.consumer("t", "first", 10).await;
    assert_eq!(body_strs(&first.read_messages(3).await), strs("early", 3));
    assert_eq!(tb.broker().existing_topic("t").unwrap().snapshot().depth, 0);
    // A later channel starts from now: the early messages went to the first one.
    let mut second = tb.consumer("t", "second", 10).await;
    second.expect_nothing_for(QUIET).await;
    tb.publish_all("t", ["late"]).await;
    assert_eq!(body_str(&first.read_message().await), "late");
    assert_eq!(body_str(&second.read_message().await), "late");
    tb.shutdown().await;
}

// ---------------------------------------------------------------- RDY

#[tokio::test]
async fn rdy_is_a_window_of_messages_in_flight() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.sub("t", "c").await;
    tb.publish_all("t", bodies("m", 10)).await;
    c.expect_nothing_for(Duration::from_millis(100)).await; // new subscribers start at RDY 0
    c.rdy(2).await;
    let two = c.read_messages(2).await;
    c.expect_nothing_for(QUIET).await;
    // One FIN makes room for exactly one more.
    c.fin(&two[0].id).await;
    let third = c.read_message().await;
    c.expect_nothing_for(QUIET).await;
    c.fin(&two[1].id).await;
    c.fin(&third.id).await;
    let next_two = c.read_messages(2).await;
    c.expect_nothing_for(QUIET).await;
    // Raising RDY to 5 with 2 in flight: 3 more.
    c.rdy(5).await;
    let three = c.read_messages(3).await;
    c.expect_nothing_for(QUIET).await;
    let all: Vec<Message> = two
        .into_iter()
        .chain([third])
        .chain(next_two)
        .chain(three)
        .collect();
    assert_eq!(body_strs(&all), strs("m", 8), "in publish order");
    assert_eq!(
        tb.broker()
            .existing_channel("t", "c")
            .unwrap()
            .snapshot()
            .depth,
        2
    );
    tb.shutdown().await;
}

/// With most of its RDY in hand, a consumer's freed credit may wait for a
/// batch (see `Session::holds_for_credit`), but only for a millisecond: a
/// single FIN still brings the next message, and a batch of FINs as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_freed_a_little_at_a_time_still_brings_messages_promptly() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 100).await;
    tb.publish_all("t", bodies("m", 300)).await;
    let mut held = c.read_messages(100).await;
    for _ in 0..5 {
        // One credit of 100: less than a batch.
        c.fin(&held.remove(0).id).await;
        let next = c.try_read_message(Duration::from_secs(1)).await;
        held.push(next.expect("one FIN brings one message within the hold's bound"));
    }
    for msg in held.drain(..40) {
        c.fin(&msg.id).await;
    }
    let batch = c.read_messages(40).await;
    c.expect_nothing_for(QUIET).await;
    let mut seen: Vec<String> = held.iter().chain(&batch).map(body_str).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 100, "each message once");
    tb.shutdown().await;
}

#[tokio::test]
async fn rdy_zero_stops_delivery() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 5).await;
    tb.publish_all("t", ["a", "b"]).await;
    let got = c.read_messages(2).await;
    c.rdy(0).await;
    for msg in &got {
        c.fin(&msg.id).await;
    }
    tb.publish_all("t", ["c", "d", "e"]).await;
    c.expect_nothing_for(QUIET).await;
    c.rdy(3).await;
    assert_eq!(body_strs(&c.read_messages(3).await), ["c", "d", "e"]);
    tb.shutdown().await;
}

// ---------------------------------------------------------------- REQ, timeouts, TOUCH

#[tokio::test]
async fn req_zero_redelivers_at_once_with_attempts_plus_one() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["x"]).await;
    let first = c.read_message().await;
    assert_eq!(first.attempts, 1);
    c.req(&first.id, 0).await;
    let second = c.read_message().await;
    assert_eq!(
        (second.id, &second.body, second.timestamp_ns),
        (first.id, &first.body, first.timestamp_ns)
    );
    assert_eq!(second.attempts, 2);
    c.req(&second.id, 0).await;
    let third = c.read_message().await;
    assert_eq!((third.id, third.attempts), (first.id, 3));
    c.fin(&third.id).await;
    c.assert_alive().await;
    assert_eq!(
        tb.broker()
            .existing_channel("t", "c")
            .unwrap()
            .counters
            .requeue_count
            .load(Ordering::Relaxed),
        2
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn req_with_delay_redelivers_no_earlier_than_the_delay() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["later"]).await;
    let first = c.read_message().await;
    let start = Instant::now();
    c.req(&first.id, 600).await;
    // The REQ gave the credit back: another message flows meanwhile.
    tb.publish_all("t", ["meanwhile"]).await;
    let other = c.read_message().await;
    assert_eq!(body_str(&other), "meanwhile");
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "the deferred message did not block the channel"
    );
    c.fin(&other.id).await;
    let again = c.read_message().await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(600),
        "redelivered after {waited:?}, before the 600 ms delay"
    );
    assert!(
        waited < Duration::from_secs(3),
        "redelivered only after {waited:?}"
    );
    // A delayed requeue of a persistent topic goes through the delayed tier
    // and comes back at a new place in the log: same body and attempts,
    // a new id (see the README's differences from nsqd).
    assert_eq!((body_str(&again), again.attempts), (body_str(&first), 2));
    tb.shutdown().await;
}

#[tokio::test]
async fn req_delay_over_max_req_timeout_is_clamped() {
    let tb = start_broker(|c| c.max_req_timeout = Duration::from_millis(400)).await;
    let mut c = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["x"]).await;
    let first = c.read_message().await;
    let start = Instant::now();
    c.req(&first.id, 3_600_000).await;
    let again = c.read_message().await;
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(
        waited < Duration::from_secs(3),
        "REQ delay not clamped to max_req_timeout: {waited:?}"
    );
    assert_eq!((body_str(&again), again.attempts), (body_str(&first), 2));
    tb.shutdown().await;
}

#[tokio::test]
async fn msg_timeout_redelivers_with_attempts_plus_one() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    let reply = c
        .identify_ok(json!({"feature_negotiation": true, "msg_timeout": 1000}))
        .await
        .unwrap();
    assert_eq!(reply["msg_timeout"], 1000);
    c.sub("t", "c").await;
    c.rdy(1).await;
    tb.publish_all("t", ["slow"]).await;
    let first = c.read_message().await;
    let start = Instant::now();
    let again = c.read_message().await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "timed out after only {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "timed out only after {waited:?}"
    );
    assert_eq!((again.id, again.attempts), (first.id, 2));
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    assert_eq!(channel.counters.timeout_count.load(Ordering::Relaxed), 1);
    // The timed-out delivery is gone: FIN of the redelivery works.
    c.fin(&again.id).await;
    c.assert_alive().await;
    tb.shutdown().await;
}

/// Consumers of one channel may ask for different msg_timeouts. A short one
/// arriving after a long one must still be honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_msg_timeout_after_a_long_one_on_the_same_channel() {
    let tb = start_broker(|_| {}).await;
    let mut slow = tb.connect().await;
    slow.identify_ok(json!({"msg_timeout": 60_000})).await;
    slow.sub("t", "c").await;
    slow.rdy(1).await;
    let mut fast = tb.connect().await;
    fast.identify_ok(json!({"msg_timeout": 1000})).await;
    fast.sub("t", "c").await;

    tb.publish_all("t", ["for-slow"]).await;
    let held = slow.read_message().await; // in flight for 60 s
    fast.rdy(1).await;
    tb.publish_all("t", ["for-fast"]).await;
    let first = fast.read_message().await;
    assert_eq!(body_str(&first), "for-fast");
    let start = Instant::now();
    let again = fast
        .try_read_message(Duration::from_secs(4))
        .await
        .unwrap_or_else(|| {
            panic!(
                "a message delivered with msg_timeout 1000 ms was not redelivered within 4 s \
             (the channel timer is still sleeping until the 60 s deadline of {:?})",
                String::from_utf8_lossy(held.id.as_bytes())
            )
        });
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert_eq!((again.id, again.attempts), (first.id, 2));
    tb.shutdown().await;
}

#[tokio::test]
async fn touch_extends_the_timeout() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.identify_ok(json!({"msg_timeout": 1000})).await;
    c.sub("t", "c").await;
    c.rdy(1).await;
    tb.publish_all("t", ["x"]).await;
    let msg = c.read_message().await;
    c.expect_nothing_for(Duration::from_millis(600)).await;
    c.touch(&msg.id).await;
    // Past the original 1 s deadline, and still in flight.
    c.expect_nothing_for(Duration::from_millis(700)).await;
    c.fin(&msg.id).await;
    c.assert_alive().await; // an E_FIN_FAILED would arrive before the OK
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    assert_eq!(channel.counters.timeout_count.load(Ordering::Relaxed), 0);
    tb.shutdown().await;
}

#[tokio::test]
async fn touch_is_capped_at_delivery_plus_max_msg_timeout() {
    let tb = start_broker(|c| c.max_msg_timeout = Duration::from_millis(1300)).await;
    let mut c = tb.connect().await;
    c.identify_ok(json!({"msg_timeout": 1000})).await;
    c.sub("t", "c").await;
    c.rdy(1).await;
    tb.publish_all("t", ["x"]).await;
    let msg = c.read_message().await;
    let start = Instant::now();
    c.expect_nothing_for(Duration::from_millis(600)).await;
    c.touch(&msg.id).await; // uncapped: +1000 ms from now; capped at delivery + 1300 ms
    let again = c.read_message().await;
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1200),
        "the TOUCH had no effect: redelivered after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1550),
        "TOUCH not capped at max_msg_timeout: redelivered after {waited:?}"
    );
    assert_eq!((again.id, again.attempts), (msg.id, 2));
    tb.shutdown().await;
}

// ---------------------------------------------------------------- DPUB

#[tokio::test]
async fn dpub_delivers_no_earlier_than_the_defer() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 5).await;
    let mut producer = tb.connect().await;
    let start = Instant::now();
    producer.dpub("t", 500, "later").await;
    producer.publish("t", "now").await;
    let first = c.read_message().await;
    assert_eq!(body_str(&first), "now");
    let deferred = c.read_message().await;
    let waited = start.elapsed();
    assert_eq!(body_str(&deferred), "later");
    assert_eq!(deferred.attempts, 1);
    assert!(
        waited >= Duration::from_millis(500),
        "deferred message after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "deferred message only after {waited:?}"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn dpub_to_a_topic_without_channel_is_deferred_too() {
    let tb = start_broker(|_| {}).await;
    let mut producer = tb.connect().await;
    let start = Instant::now();
    producer.dpub("t", 500, "later").await;
    let mut c = tb.consumer("t", "c", 5).await;
    let msg = c.read_message().await;
    assert_eq!(body_str(&msg), "later");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "after {:?}",
        start.elapsed()
    );
    tb.shutdown().await;
}

// ---------------------------------------------------------------- memory-tier bounds

#[tokio::test]
async fn memory_bound_refuses_the_sixth_message_of_a_topic_without_channel() {
    let tb = start_broker(|c| {
        c.mem_queue_size = 5;
        c.default_tier = Tier::Memory;
        c.memory_overflow = OverflowPolicy::Reject;
    })
    .await;
    let mut producer = tb.connect().await;
    for body in bodies("m", 5) {
        producer.publish("t", body).await;
    }
    producer
        .send(&Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"sixth"),
        })
        .await;
    producer.expect_fatal(ErrorCode::PubFailed).await;
    assert_eq!(tb.broker().existing_topic("t").unwrap().snapshot().depth, 5);
    let mut c = tb.consumer("t", "c", 10).await;
    assert_eq!(body_strs(&c.read_messages(5).await), strs("m", 5));
    c.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn memory_bound_refuses_the_sixth_message_of_a_channel() {
    let tb = start_broker(|c| {
        c.mem_queue_size = 5;
        c.default_tier = Tier::Memory;
        c.memory_overflow = OverflowPolicy::Reject;
    })
    .await;
    let mut c = tb.consumer("t", "c", 0).await;
    let mut producer = tb.connect().await;
    for body in bodies("m", 5) {
        producer.publish("t", body).await;
    }
    producer
        .send(&Command::Pub {
            topic: "t".into(),
            body: Bytes::from_static(b"sixth"),
        })
        .await;
    producer.expect_fatal(ErrorCode::PubFailed).await;
    // MPUB and DPUB are refused whole, with their own codes.
    let mut producer = tb.connect().await;
    producer
        .send(&Command::Mpub {
            topic: "t".into(),
            bodies: bodies("x", 2),
        })
        .await;
    producer.expect_fatal(ErrorCode::MpubFailed).await;
    let mut producer = tb.connect().await;
    producer
        .send(&Command::Dpub {
            topic: "t".into(),
            defer_ms: 100,
            body: Bytes::from_static(b"d"),
        })
        .await;
    producer.expect_fatal(ErrorCode::DpubFailed).await;
    // Consuming makes room again.
    c.rdy(10).await;
    let msgs = c.read_messages(5).await;
    assert_eq!(body_strs(&msgs), strs("m", 5));
    c.expect_nothing_for(Duration::from_millis(100)).await;
    let mut producer = tb.connect().await;
    producer.publish("t", "fits again").await;
    assert_eq!(body_str(&c.read_message().await), "fits again");
    tb.shutdown().await;
}

#[tokio::test]
async fn mpub_over_the_memory_bound_publishes_nothing() {
    let tb = start_broker(|c| {
        c.mem_queue_size = 5;
        c.default_tier = Tier::Memory;
        c.memory_overflow = OverflowPolicy::Reject;
    })
    .await;
    let mut producer = tb.connect().await;
    producer.mpub("t", bodies("a", 3)).await;
    producer
        .send(&Command::Mpub {
            topic: "t".into(),
            bodies: bodies("b", 3),
        })
        .await;
    producer.expect_fatal(ErrorCode::MpubFailed).await;
    assert_eq!(
        tb.broker().existing_topic("t").unwrap().snapshot().depth,
        3,
        "MPUB is all or nothing"
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn ephemeral_overflow_is_dropped_silently() {
    let tb = start_broker(|c| {
        c.mem_queue_size = 5;
        c.default_tier = Tier::Memory;
        c.memory_overflow = OverflowPolicy::Reject;
    })
    .await;
    let mut producer = tb.connect().await;
    // An ephemeral topic without a channel yet.
    for body in bodies("e", 8) {
        producer.publish("t#ephemeral", body).await;
    }
    let mut c = tb.consumer("t#ephemeral", "c", 100).await;
    assert_eq!(body_strs(&c.read_messages(5).await), strs("e", 5));
    c.expect_nothing_for(QUIET).await;
    // An ephemeral channel of an ordinary topic.
    let mut d = tb.consumer("u", "c#ephemeral", 0).await;
    for body in bodies("f", 8) {
        producer.publish("u", body).await;
    }
    d.rdy(100).await;
    assert_eq!(body_strs(&d.read_messages(5).await), strs("f", 5));
    d.expect_nothing_for(QUIET).await;
    producer.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn ephemeral_channel_goes_with_its_last_consumer() {
    let tb = start_broker(|_| {}).await;
    let broker = tb.broker().clone();
    let a = tb.consumer("t", "c#ephemeral", 0).await;
    let b = tb.consumer("t", "c#ephemeral", 0).await;
    let durable = tb.consumer("t", "durable", 0).await;
    let channel = broker.existing_channel("t", "c#ephemeral").unwrap();
    assert_eq!(channel.snapshot().clients.len(), 2);
    drop(a);
    wait_until("the first consumer has left", || {
        channel.snapshot().clients.len() == 1
    })
    .await;
    assert!(
        broker.existing_channel("t", "c#ephemeral").is_ok(),
        "one consumer is left"
    );
    drop(b);
    wait_until("the ephemeral channel is gone", || {
        broker.existing_channel("t", "c#ephemeral").is_err()
    })
    .await;
    // An ordinary channel stays without consumers, and so does its topic.
    drop(durable);
    let kept = broker.existing_channel("t", "durable").unwrap();
    wait_until("the durable consumer has left", || {
        kept.snapshot().clients.is_empty()
    })
    .await;
    assert!(broker.existing_channel("t", "durable").is_ok());
    let names: Vec<String> = broker.topics().iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, ["t"]);
    let channels: Vec<String> = broker
        .existing_topic("t")
        .unwrap()
        .snapshot()
        .channels
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(channels, ["durable"]);
    tb.shutdown().await;
}

#[tokio::test]
async fn ephemeral_topic_goes_with_its_last_channel() {
    let tb = start_broker(|_| {}).await;
    let broker = tb.broker().clone();
    let c = tb.consumer("e#ephemeral", "c#ephemeral", 0).await;
    assert!(broker.topics().iter().any(|t| t.name == "e#ephemeral"));
    drop(c);
    wait_until("the ephemeral topic is gone", || {
        broker.topics().iter().all(|t| t.name != "e#ephemeral")
    })
    .await;
    assert!(broker.existing_topic("e#ephemeral").is_err());
    tb.shutdown().await;
}

// ---------------------------------------------------------------- heartbeats, handshake

#[tokio::test]
async fn heartbeats_arrive_every_interval() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.identify_ok(json!({"heartbeat_interval": 1000})).await;
    let start = Instant::now();
    let frame = c.read_frame_raw().await;
    assert!(
        common::is_heartbeat(&frame),
        "expected _heartbeat_, got {}",
        common::describe(&frame)
    );
    let first = start.elapsed();
    assert!(
        first >= Duration::from_millis(800) && first < Duration::from_millis(2000),
        "first heartbeat after {first:?}"
    );
    c.nop().await;
    let frame = c.read_frame_raw().await;
    assert!(
        common::is_heartbeat(&frame),
        "expected _heartbeat_, got {}",
        common::describe(&frame)
    );
    tb.shutdown().await;
}

#[tokio::test]
async fn client_that_never_answers_heartbeats_is_disconnected() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.identify_ok(json!({"heartbeat_interval": 1000})).await;
    c.sub("t", "c").await;
    let (_, took) = timed(c.expect_closed_within(Duration::from_secs(6))).await;
    assert!(c.heartbeats >= 1, "closed without a heartbeat first");
    assert!(
        took >= Duration::from_millis(1500),
        "disconnected already after {took:?}"
    );
    assert!(
        took < Duration::from_millis(4500),
        "disconnected only after {took:?}"
    );
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    wait_until("the consumer is removed", || {
        channel.snapshot().clients.is_empty()
    })
    .await;
    tb.shutdown().await;
}

#[tokio::test]
async fn client_that_answers_heartbeats_stays() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.answer_heartbeats = true;
    c.identify_ok(json!({"heartbeat_interval": 1000})).await;
    c.sub("t", "c").await;
    c.expect_nothing_for(Duration::from_millis(3200)).await;
    assert!(
        c.heartbeats >= 2,
        "only {} heartbeats in 3.2 s",
        c.heartbeats
    );
    c.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_the_handshake_timeout() {
    let tb = start_broker(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    // Nothing at all.
    let mut raw = Client::connect_raw(tb.tcp_addr()).await;
    let (_, took) = timed(raw.expect_closed_within(Duration::from_secs(3))).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    // The magic, then nothing.
    let mut magic_only = tb.connect().await;
    let (_, took) = timed(magic_only.expect_closed_within(Duration::from_secs(3))).await;
    assert!(took >= Duration::from_millis(250), "closed after {took:?}");
    // A connection that has sent a command is no longer on the clock.
    let mut talked = tb.connect().await;
    talked.identify_ok(json!({})).await;
    talked.expect_nothing_for(Duration::from_millis(600)).await;
    talked.assert_alive().await;
    tb.shutdown().await;
}

// ---------------------------------------------------------------- compression

async fn compressed_round_trip(
    tb: &TestBroker,
    request: serde_json::Value,
    check: impl Fn(&serde_json::Value),
) {
    let mut consumer = tb.connect().await;
    let reply = consumer.identify_ok(request.clone()).await.unwrap();
    check(&reply);
    assert!(consumer.is_compressed());
    consumer.sub("t", "c").await;
    consumer.rdy(100).await;
    let mut producer = tb.connect().await;
    producer.identify_ok(request).await;
    assert!(producer.is_compressed());
    producer.publish("t", "hello").await;
    producer.mpub("t", bodies("m", 50)).await;
    let big: Bytes = (0..200_000u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    producer.publish("t", big.clone()).await;
    let msgs = consumer.read_messages(52).await;
    assert_eq!(body_str(&msgs[0]), "hello");
    assert_eq!(body_strs(&msgs[1..51]), strs("m", 50));
    assert_eq!(msgs[51].body, big);
    for msg in &msgs {
        consumer.fin(&msg.id).await;
    }
    consumer.assert_alive().await;
    assert_eq!(
        tb.broker()
            .existing_channel("t", "c")
            .unwrap()
            .snapshot()
            .in_flight,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_end_to_end() {
    let tb = start_broker(|_| {}).await;
    compressed_round_trip(
        &tb,
        json!({"feature_negotiation": true, "snappy": true}),
        |reply| {
            assert_eq!(reply["snappy"], true, "{reply}");
            assert_eq!(reply["deflate"], false, "{reply}");
        },
    )
    .await;
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_end_to_end_with_level_capped() {
    let tb = start_broker(|_| {}).await;
    compressed_round_trip(
        &tb,
        json!({"feature_negotiation": true, "deflate": true, "deflate_level": 9}),
        |reply| {
            assert_eq!(reply["deflate"], true, "{reply}");
            assert_eq!(reply["snappy"], false, "{reply}");
            assert_eq!(
                reply["deflate_level"], 6,
                "capped at max_deflate_level: {reply}"
            );
        },
    )
    .await;
    tb.shutdown().await;
}

#[tokio::test]
async fn compression_disabled_on_the_broker_is_not_negotiated() {
    let tb = start_broker(|c| {
        c.snappy = false;
        c.deflate = false;
    })
    .await;
    for request in [
        json!({"feature_negotiation": true, "snappy": true}),
        json!({"feature_negotiation": true, "deflate": true}),
    ] {
        let mut c = tb.connect().await;
        let reply = c.identify_ok(request.clone()).await.unwrap();
        assert_eq!(
            (reply["snappy"].clone(), reply["deflate"].clone()),
            (json!(false), json!(false)),
            "{reply}"
        );
        assert!(!c.is_compressed());
        c.assert_alive().await;
    }
    tb.shutdown().await;
}

// ---------------------------------------------------------------- sampling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rate_50_delivers_about_half() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.identify_ok(json!({"sample_rate": 50})).await;
    c.sub("t", "c").await;
    c.rdy(1000).await;
    let mut producer = tb.connect().await;
    producer.mpub("t", bodies("m", 400)).await;
    let mut delivered = 0;
    while let Some(msg) = c.try_read_message(Duration::from_millis(500)).await {
        delivered += 1;
        c.fin(&msg.id).await;
    }
    assert!(
        (100..=300).contains(&delivered),
        "{delivered} of 400 delivered at sample_rate 50"
    );
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    wait_until("the channel is drained", || {
        let s = channel.snapshot();
        s.depth == 0 && s.in_flight == 0
    })
    .await;
    tb.shutdown().await;
}

/// A sampled-out message is dropped for the client and must not use up its
/// RDY credit: with RDY 1, delivery has to go on past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_rate_with_rdy_1_keeps_delivering() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.connect().await;
    c.identify_ok(json!({"sample_rate": 50})).await;
    c.sub("t", "c").await;
    c.rdy(1).await;
    let mut producer = tb.connect().await;
    producer.mpub("t", bodies("m", 400)).await;
    let mut delivered = 0;
    while let Some(msg) = c.try_read_message(Duration::from_millis(500)).await {
        delivered += 1;
        c.fin(&msg.id).await;
    }
    let depth = tb
        .broker()
        .existing_channel("t", "c")
        .unwrap()
        .snapshot()
        .depth;
    assert_eq!(
        depth, 0,
        "delivery stalled after {delivered} messages with {depth} still queued and RDY 1 unused: \
         a sampled-out message consumed the credit"
    );
    assert!(
        (100..=300).contains(&delivered),
        "{delivered} of 400 delivered at sample_rate 50"
    );
    tb.shutdown().await;
}

// ---------------------------------------------------------------- pause

#[tokio::test]
async fn paused_channel_delivers_nothing_until_unpaused() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 10).await;
    tb.publish_all("t", ["before"]).await;
    let held = c.read_message().await;
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    channel.pause(true);
    assert!(channel.is_paused());
    tb.publish_all("t", bodies("p", 3)).await;
    c.expect_nothing_for(QUIET).await;
    // In-flight messages can still be finished while paused.
    c.fin(&held.id).await;
    c.expect_nothing_for(Duration::from_millis(100)).await;
    assert_eq!(channel.snapshot().depth, 3);
    channel.pause(false);
    assert_eq!(body_strs(&c.read_messages(3).await), strs("p", 3));
    tb.shutdown().await;
}

#[tokio::test]
async fn paused_topic_holds_messages_until_unpaused() {
    let tb = start_broker(|_| {}).await;
    let mut a = tb.consumer("t", "a", 10).await;
    let mut b = tb.consumer("t", "b", 10).await;
    let topic = tb.broker().existing_topic("t").unwrap();
    topic.pause(true);
    tb.publish_all("t", bodies("p", 2)).await;
    a.expect_nothing_for(QUIET).await;
    assert_eq!(topic.snapshot().depth, 2);
    topic.pause(false);
    assert_eq!(body_strs(&a.read_messages(2).await), strs("p", 2));
    assert_eq!(body_strs(&b.read_messages(2).await), strs("p", 2));
    tb.shutdown().await;
}

// ---------------------------------------------------------------- consumer loss

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_messages_of_a_lost_consumer_go_to_another() {
    let tb = start_broker(|_| {}).await;
    let mut a = tb.consumer("t", "c", 10).await;
    tb.publish_all("t", bodies("m", 3)).await;
    let taken = a.read_messages(3).await;
    let mut b = tb.consumer("t", "c", 10).await;
    b.expect_nothing_for(Duration::from_millis(100)).await; // all three are with `a`
    drop(a);
    let redelivered = b.read_messages(3).await;
    let ids = |msgs: &[Message]| msgs.iter().map(|m| m.id).collect::<HashSet<MessageId>>();
    assert_eq!(ids(&redelivered), ids(&taken));
    assert!(
        redelivered.iter().all(|m| m.attempts == 2),
        "{:?}",
        redelivered.iter().map(|m| m.attempts).collect::<Vec<_>>()
    );
    for msg in &redelivered {
        b.fin(&msg.id).await;
    }
    b.assert_alive().await;
    tb.shutdown().await;
}

#[tokio::test]
async fn cls_then_disconnect_requeues_what_was_in_flight() {
    let tb = start_broker(|_| {}).await;
    let mut a = tb.consumer("t", "c", 10).await;
    tb.publish_all("t", bodies("m", 2)).await;
    let taken = a.read_messages(2).await;
    a.cls().await;
    a.expect_response(triage_protocol::CLOSE_WAIT).await;
    a.fin(&taken[0].id).await;
    drop(a);
    let mut b = tb.consumer("t", "c", 10).await;
    let again = b.read_message().await;
    assert_eq!((again.id, again.attempts), (taken[1].id, 2));
    b.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn fin_after_a_timeout_fails_for_the_old_owner() {
    let tb = start_broker(|_| {}).await;
    let mut old = tb.connect().await;
    old.identify_ok(json!({"msg_timeout": 1000})).await;
    old.sub("t", "c").await;
    old.rdy(1).await;
    tb.publish_all("t", ["x"]).await;
    let first = old.read_message().await;
    old.rdy(0).await;
    let mut new = tb.consumer("t", "c", 1).await;
    let again = new.read_message().await; // after old's 1 s timeout
    assert_eq!((again.id, again.attempts), (first.id, 2));
    old.fin(&first.id).await;
    old.expect_error(ErrorCode::FinFailed).await;
    old.assert_alive().await;
    new.fin(&again.id).await;
    new.assert_alive().await;
    tb.shutdown().await;
}

// ---------------------------------------------------------------- admin actions

#[tokio::test]
async fn deleting_a_channel_or_topic_closes_its_consumers() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 1).await;
    let mut other = tb.consumer("t", "other", 1).await;
    tb.broker().delete_channel("t", "c").await.unwrap();
    c.expect_closed().await;
    other.expect_nothing_for(Duration::from_millis(100)).await;
    // The channel can be subscribed again, and starts empty.
    let mut again = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", ["new"]).await;
    assert_eq!(body_str(&again.read_message().await), "new");
    assert_eq!(body_str(&other.read_message().await), "new");
    tb.broker().delete_topic("t").await.unwrap();
    again.expect_closed().await;
    other.expect_closed().await;
    assert!(tb.broker().existing_topic("t").is_err());
    tb.shutdown().await;
}

#[tokio::test]
async fn emptying_a_channel_drops_queued_and_in_flight_messages() {
    let tb = start_broker(|_| {}).await;
    let mut c = tb.consumer("t", "c", 1).await;
    tb.publish_all("t", bodies("m", 3)).await;
    let held = c.read_message().await;
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    channel.empty();
    let snapshot = channel.snapshot();
    assert_eq!((snapshot.depth, snapshot.in_flight), (0, 0));
    c.fin(&held.id).await;
    c.expect_error(ErrorCode::FinFailed).await;
    c.expect_nothing_for(QUIET).await; // the two queued ones are gone too
    tb.publish_all("t", ["after"]).await;
    assert_eq!(
        body_str(&c.read_message().await),
        "after",
        "the client got its credit back"
    );
    tb.shutdown().await;
}

/// Deflate can expand ~1000:1, so a few pipelined PUBs of very compressible
/// bodies (each well under max_msg_size) arrive in one small read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deflate_pipelined_compressible_messages_are_accepted() {
    let tb = start_broker(|_| {}).await;
    let mut producer = tb.connect().await;
    producer
        .identify_ok(json!({"feature_negotiation": true, "deflate": true}))
        .await;
    let body = Bytes::from(vec![0u8; 1024 * 1024]);
    let mut pipelined = bytes::BytesMut::new();
    for _ in 0..8 {
        Command::Pub {
            topic: "t".into(),
            body: body.clone(),
        }
        .encode(&mut pipelined);
    }
    producer.send_raw(&pipelined).await;
    for i in 0..8 {
        match producer.read_within(common::READ_TIMEOUT).await {
            common::Read::Frame(frame)
                if frame == triage_protocol::Frame::Response(Bytes::from_static(b"OK")) => {}
            other => {
                panic!("PUB {i} of 8 pipelined 1 MiB PUBs over deflate: expected OK, got {other:?}")
            }
        }
    }
    assert_eq!(tb.broker().existing_topic("t").unwrap().snapshot().depth, 8);
    tb.shutdown().await;
}

#[tokio::test]
async fn an_ephemeral_first_channel_gets_what_a_persistent_topic_held() {
    // nsq_tail subscribes with an ephemeral channel; it must see the backlog,
    // which a persistent topic keeps on disk until its first channel.
    let tb = start_broker(|_| {}).await;
    tb.publish_all("held", ["a", "b", "c"]).await;
    let mut tail = tb.consumer("held", "tail#ephemeral", 10).await;
    let got: Vec<String> = tail.read_messages(3).await.iter().map(body_str).collect();
    assert_eq!(got, ["a", "b", "c"]);
    tb.publish_all("held", ["d"]).await;
    assert_eq!(body_str(&tail.read_message().await), "d");
    tb.shutdown().await;
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_cut_off_and_its_messages_go_to_others() {
    let tb = start_broker(|_| {}).await;
    // Subscribes with a lot of credit, then never reads a byte.
    let mut stalled = tb.connect().await;
    stalled
        .identify_ok(serde_json::json!({ "feature_negotiation": true, "heartbeat_interval": 1000 }))
        .await;
    stalled.sub("big", "c").await;
    stalled.rdy(2500).await;
    // Far more than loopback socket buffers hold: the broker's writes block.
    let body = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let mut producer = tb.connect().await;
    for _ in 0..8 {
        producer.mpub("big", vec![body.clone(); 50]).await;
    }
    let broker = tb.broker().clone();
    common::wait_until("the stalled consumer to be cut off", || {
        broker
            .existing_channel("big", "c")
            .is_ok_and(|c| c.snapshot().clients.is_empty())
    })
    .await;
    // What it held in flight is requeued at once for whoever comes next.
    let mut next = tb.consumer("big", "c", 500).await;
    let got = next.read_messages(400).await;
    assert!(got.iter().all(|m| m.body.len() == 64 * 1024));
    drop(stalled);
    tb.shutdown().await;
}
