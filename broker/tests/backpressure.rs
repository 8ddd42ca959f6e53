//! `BACKPRESSURE <level>` over real sockets: which tiers a loaded connection
//! is still sent, that lowering the level resumes delivery, that bad levels
//! are fatal, and that every change is published on `_triage.backpressure`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::{body_str, start_broker, Client, TestBroker, QUIET};
use serde_json::{json, Value};
use triage_broker::tcp::BACKPRESSURE_EVENTS_TOPIC;
use triage_config::{Tier, TierRule};
use triage_protocol::{Command, ErrorCode, Frame, Message};

/// Topics named `urgent*` are memory-tier, `batch*` delayed-tier (no
/// default delay); everything else is persistent (the default).
async fn broker() -> TestBroker {
    start_broker(|config| {
        config.default_tier = Tier::Persistent;
        config.tier_rules = vec![
            TierRule {
                settings: Default::default(),
                pattern: "urgent*".into(),
                tier: Tier::Memory,
            },
            TierRule {
                settings: Default::default(),
                pattern: "batch*".into(),
                tier: Tier::Delayed,
            },
        ];
    })
    .await
}

/// BACKPRESSURE that must succeed.
async fn backpressure(client: &mut Client, level: u8) {
    client.send(&Command::Backpressure(level)).await;
    client.expect_ok().await;
}

/// A consumer that identified itself, so events carry its names.
async fn worker(tb: &TestBroker, topic: &str, channel: &str) -> Client {
    let mut client = tb.connect().await;
    client
        .identify_ok(json!({"client_id": "worker-1", "hostname": "box.example"}))
        .await;
    client.sub(topic, channel).await;
    client.rdy(10).await;
    client
}

async fn next_event(listener: &mut Client) -> Value {
    let msg = listener.read_message().await;
    listener.fin(&msg.id).await;
    serde_json::from_slice(&msg.body).expect("event is JSON")
}

#[tokio::test]
async fn level_2_holds_back_persistent_and_0_resumes() {
    let tb = broker().await;
    let mut client = worker(&tb, "tickets", "c").await;
    backpressure(&mut client, 2).await;
    tb.publish_all("tickets", ["held-0", "held-1"]).await;
    client.expect_nothing_for(QUIET).await;

    backpressure(&mut client, 0).await;
    let msgs = client.read_messages(2).await;
    let mut got: Vec<String> = msgs.iter().map(body_str).collect();
    got.sort();
    assert_eq!(got, ["held-0", "held-1"]);
    tb.shutdown().await;
}

#[tokio::test]
async fn memory_tier_flows_at_every_level() {
    let tb = broker().await;
    let mut client = worker(&tb, "urgent", "c").await;
    for level in [2, 1, 0] {
        backpressure(&mut client, level).await;
        let body = format!("urgent-at-{level}");
        tb.publish_all("urgent", [body.clone()]).await;
        let msg = client.read_message().await;
        assert_eq!(body_str(&msg), body);
        client.fin(&msg.id).await;
    }
    tb.shutdown().await;
}

#[tokio::test]
async fn level_1_holds_back_the_delayed_tier_and_0_resumes() {
    let tb = broker().await;
    let mut client = worker(&tb, "batch-nightly", "c").await;
    backpressure(&mut client, 1).await;
    // Deferred and due while the worker is degraded: still not delivered.
    tb.connect().await.dpub("batch-nightly", 50, "report").await;
    tb.publish_all("batch-nightly", ["now"]).await;
    client.expect_nothing_for(QUIET).await;
    assert_eq!(
        tb.broker().delayed.pending_total("batch-nightly"),
        0,
        "released, held back"
    );

    backpressure(&mut client, 0).await;
    let mut got: Vec<String> = client.read_messages(2).await.iter().map(body_str).collect();
    got.sort();
    assert_eq!(got, ["now", "report"]);
    tb.shutdown().await;
}

#[tokio::test]
async fn level_1_does_not_hold_back_persistent() {
    let tb = broker().await;
    let mut client = worker(&tb, "tickets", "c").await;
    backpressure(&mut client, 1).await;
    tb.publish_all("tickets", ["flows"]).await;
    assert_eq!(body_str(&client.read_message().await), "flows");
    tb.shutdown().await;
}

#[tokio::test]
async fn held_back_connection_leaves_the_channel_to_others() {
    let tb = broker().await;
    let mut loaded = worker(&tb, "tickets", "c").await;
    let mut idle = worker(&tb, "tickets", "c").await;
    backpressure(&mut loaded, 2).await;
    tb.publish_all("tickets", ["a", "b", "c"]).await;
    assert_eq!(idle.read_messages(3).await.len(), 3);
    loaded.expect_nothing_for(QUIET).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn allowed_before_identify_and_sub_and_applies_once_subscribed() {
    let tb = broker().await;
    let mut client = tb.connect().await;
    backpressure(&mut client, 2).await;
    client.sub("tickets", "c").await;
    client.rdy(5).await;
    tb.publish_all("tickets", ["x"]).await;
    client.expect_nothing_for(QUIET).await;
    backpressure(&mut client, 1).await;
    assert_eq!(body_str(&client.read_message().await), "x");
    tb.shutdown().await;
}

#[tokio::test]
async fn bad_levels_are_fatal() {
    let tb = broker().await;
    let cases: [(&[u8], &str); 5] = [
        (
            b"BACKPRESSURE 3\n",
            "BACKPRESSURE invalid level \"3\" (want 0, 1 or 2)",
        ),
        (
            b"BACKPRESSURE -1\n",
            "BACKPRESSURE invalid level \"-1\" (want 0, 1 or 2)",
        ),
        (
            b"BACKPRESSURE high\n",
            "BACKPRESSURE invalid level \"high\" (want 0, 1 or 2)",
        ),
        (b"BACKPRESSURE\n", "BACKPRESSURE missing level (0, 1 or 2)"),
        (
            b"BACKPRESSURE 1 now\n",
            "BACKPRESSURE takes exactly one parameter, the level (0, 1 or 2)",
        ),
    ];
    for (wire, text) in cases {
        let mut client = tb.connect().await;
        client.send_raw(wire).await;
        assert_eq!(client.expect_fatal(ErrorCode::Invalid).await, text);
    }
    // A subscribed client is closed just the same.
    let mut client = worker(&tb, "tickets", "c").await;
    client.send_raw(b"BACKPRESSURE 9\n").await;
    client.expect_fatal(ErrorCode::Invalid).await;
    tb.shutdown().await;
}

#[tokio::test]
async fn each_change_is_an_event_on_the_memory_topic() {
    let tb = broker().await;
    // Subscribing first creates the topic: it must still come out memory-tier.
    let mut listener = tb.consumer(BACKPRESSURE_EVENTS_TOPIC, "watch", 10).await;
    assert_eq!(
        tb.broker()
            .existing_topic(BACKPRESSURE_EVENTS_TOPIC)
            .unwrap()
            .tier(),
        Tier::Memory
    );
    let mut client = worker(&tb, "tickets", "billing").await;
    let before = now_ms();
    backpressure(&mut client, 1).await;
    let event = next_event(&mut listener).await;
    assert_eq!(event["client_id"], "worker-1");
    assert_eq!(event["hostname"], "box.example");
    assert_eq!(event["topic"], "tickets");
    assert_eq!(event["channel"], "billing");
    assert_eq!(event["level"], 1);
    let time = event["time"].as_i64().expect("time is an integer");
    assert!(
        (before..=now_ms()).contains(&time),
        "time {time} is not now in ms"
    );
    assert_eq!(event.as_object().unwrap().len(), 6, "{event}");

    // The same level again is not a change.
    backpressure(&mut client, 1).await;
    listener.expect_nothing_for(QUIET).await;
    backpressure(&mut client, 2).await;
    assert_eq!(next_event(&mut listener).await["level"], 2);
    backpressure(&mut client, 0).await;
    assert_eq!(next_event(&mut listener).await["level"], 0);
    tb.shutdown().await;
}

#[tokio::test]
async fn a_degraded_client_that_leaves_is_announced_as_normal() {
    let tb = broker().await;
    let mut listener = tb.consumer(BACKPRESSURE_EVENTS_TOPIC, "watch", 10).await;
    let mut client = tb.connect().await;
    backpressure(&mut client, 2).await;
    let event = next_event(&mut listener).await;
    assert_eq!(event["level"], 2);
    // Not identified, not subscribed: known by address, no topic.
    let host = client.local_addr().ip().to_string();
    assert_eq!(event["client_id"], host.as_str());
    assert_eq!(event["hostname"], host.as_str());
    assert_eq!(event["topic"], Value::Null);
    assert_eq!(event["channel"], Value::Null);
    drop(client);
    let event = next_event(&mut listener).await;
    assert_eq!(event["level"], 0);
    assert_eq!(event["client_id"], host.as_str());
    tb.shutdown().await;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Frames up to the next `OK`; the messages among them.
async fn messages_until_ok(client: &mut Client) -> Vec<Message> {
    let mut messages = Vec::new();
    loop {
        match client.read_frame().await {
            Frame::Message(msg) => messages.push(msg),
            Frame::Response(data) if data == triage_protocol::OK => return messages,
            other => panic!("expected messages then OK, got {other:?}"),
        }
    }
}

/// A consumer with most of its RDY in hand makes the broker wait for a
/// batch of FINs before delivering more, and meanwhile its socket wakes the
/// broker only once a batch's worth of bytes is in. Whatever that wait was
/// doing when a BACKPRESSURE holds the tier back, a later small command (the
/// level going down again) must still be read at once: the test repeats FIN,
/// then FINs with BACKPRESSURE 2 in one write, then BACKPRESSURE 0 alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_waiting_for_a_credit_batch_still_has_small_commands_read() {
    let tb = broker().await;
    let mut client = tb.consumer("tickets", "c", 100).await;
    tb.publish_all("tickets", (0..2000).map(|i| format!("m{i}")))
        .await;
    let mut held = client.read_messages(100).await;
    for round in 0..20 {
        client.fin(&held.remove(0).id).await;
        // Long enough for the broker to read that FIN and start waiting for
        // more credit, shorter than the wait (1 ms); a blocking sleep, since
        // tokio's timer counts whole milliseconds.
        std::thread::sleep(Duration::from_micros(300));
        let mut write = BytesMut::new();
        for msg in held.drain(..30) {
            Command::Fin(msg.id).encode(&mut write);
        }
        Command::Backpressure(2).encode(&mut write);
        client.send_raw(&write).await;
        held.extend(messages_until_ok(&mut client).await);
        client.send(&Command::Backpressure(0)).await;
        let answered =
            tokio::time::timeout(Duration::from_secs(2), messages_until_ok(&mut client)).await;
        held.extend(answered.unwrap_or_else(|_| {
            panic!("round {round}: BACKPRESSURE 0 was not answered within 2 s")
        }));
        while held.len() < 100 {
            held.push(client.read_message().await);
        }
    }
    tb.shutdown().await;
}
