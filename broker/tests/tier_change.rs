//! Changing a topic's tier in place (`POST /topic/tier`, `triagectl topic
//! set-tier`) against the real `triaged` process: what is published after
//! the `OK` follows the new tier, what was accepted before keeps its
//! guarantee, across `kill -9` and clean restarts, and publishes racing a
//! change are neither lost nor reordered.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::triaged::{http_at, Triaged, DEADLINE};
use common::{body_str, Client, Read};
use triage_protocol::{Command, Frame, Message};

/// `triagectl` (the real binary) against `broker`; returns stdout, failing
/// the test on a non-zero exit.
fn ctl(broker: &Triaged, args: &[&str]) -> String {
    let output = Process::new(env!("CARGO_BIN_EXE_triagectl"))
        .arg("--http-address")
        .arg(broker.http.to_string())
        .args(args)
        .env_remove("TRIAGECTL_HTTP_ADDRESS")
        .env_remove("TRIAGECTL_ADMIN_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "triagectl {args:?}: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A POST that must answer 200 OK.
fn post_ok(broker: &Triaged, path: &str) {
    let (status, body) = broker.http("POST", path);
    assert_eq!((status, body.as_str()), (200, "OK"), "POST {path}");
}

fn topic_stats(broker: &Triaged, topic: &str) -> serde_json::Value {
    broker.stats()["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == topic)
        .unwrap_or_else(|| panic!("no topic {topic} in /stats"))
        .clone()
}

fn tier_of(broker: &Triaged, topic: &str) -> String {
    topic_stats(broker, topic)["tier"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The next message within [`DEADLINE`], answering heartbeats meanwhile.
async fn next_message(consumer: &mut Client) -> Message {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match consumer.read_until(deadline).await {
            Read::Frame(Frame::Message(msg)) => return msg,
            Read::Frame(frame) if common::is_heartbeat(&frame) => consumer.nop().await,
            Read::Frame(other) => panic!("expected a message, got {}", common::describe(&other)),
            Read::TimedOut => panic!("no message within {DEADLINE:?}"),
            Read::Closed => panic!("connection closed while waiting for a message"),
        }
    }
}

/// Subscribes to `topic`/`c` and reads (FINing each) until every body of
/// `wanted` was seen; returns every body in the order it came.
async fn drain(addr: SocketAddr, topic: &str, wanted: &HashSet<String>) -> Vec<String> {
    let mut consumer = Client::connect(addr).await;
    consumer.sub(topic, "c").await;
    consumer.rdy(200).await;
    let mut seen = Vec::new();
    let mut missing = wanted.clone();
    while !missing.is_empty() {
        let msg = next_message(&mut consumer).await;
        consumer.fin(&msg.id).await;
        let body = body_str(&msg);
        missing.remove(&body);
        seen.push(body);
    }
    seen
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_persistent_then_kill_9_delivers_every_later_message() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    post_ok(&broker, "/topic/create?topic=t&tier=memory");
    post_ok(&broker, "/channel/create?topic=t&channel=c");
    let mut producer = Client::connect(broker.tcp).await;
    for body in names("before", 20) {
        producer.publish("t", body).await;
    }
    assert_eq!(
        ctl(&broker, &["topic", "set-tier", "t", "persistent"]),
        "topic t tier set to persistent\n"
    );
    assert_eq!(tier_of(&broker, "t"), "persistent");
    let (status, metrics) = broker.http("GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("triage_messages_published_total")
                && l.contains(r#"topic="t""#)
                && l.contains(r#"tier="persistent""#)),
        "/metrics labels t with its new tier"
    );
    let after = names("after", 50);
    for chunk in after.chunks(10) {
        let bodies = chunk.iter().map(|b| Bytes::from(b.clone())).collect();
        producer.mpub("t", bodies).await;
    }
    broker.kill9();

    let broker = Triaged::start(data.path());
    assert_eq!(tier_of(&broker, "t"), "persistent", "the change survived");
    let wanted: HashSet<String> = after.iter().cloned().collect();
    let seen = drain(broker.tcp, "t", &wanted).await;
    // Memory-tier messages from before the change may be lost (they were
    // acknowledged from memory); every later one comes back, in order.
    let later: Vec<&String> = seen.iter().filter(|b| b.starts_with("after")).collect();
    let mut first_seen = Vec::new();
    for body in later {
        if !first_seen.contains(body) {
            first_seen.push(body.clone());
        }
    }
    assert_eq!(
        first_seen, after,
        "every message after the change, in order"
    );
    broker.stop();
}

/// Persistent, then memory: what was logged before the change survives
/// `kill -9`, and the new tier survives the crash and a clean restart.
async fn persistent_to_memory_keeps_what_was_logged(extra: &[&str]) {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start_with(data.path(), extra);
    post_ok(&broker, "/topic/create?topic=t&tier=persistent");
    post_ok(&broker, "/channel/create?topic=t&channel=c");
    let before = names("before", 30);
    let mut producer = Client::connect(broker.tcp).await;
    for body in &before {
        producer.publish("t", body.clone()).await;
    }
    post_ok(&broker, "/topic/tier?topic=t&tier=memory");
    assert_eq!(tier_of(&broker, "t"), "memory");
    for body in names("after", 5) {
        producer.publish("t", body).await;
    }
    broker.kill9();

    let broker = Triaged::start_with(data.path(), extra);
    assert_eq!(
        tier_of(&broker, "t"),
        "memory",
        "the change survived kill -9"
    );
    let wanted: HashSet<String> = before.iter().cloned().collect();
    let seen = drain(broker.tcp, "t", &wanted).await;
    let logged: Vec<&String> = seen.iter().filter(|b| b.starts_with("before")).collect();
    assert_eq!(logged.len(), before.len(), "each once: {seen:?}");
    broker.stop();

    let broker = Triaged::start_with(data.path(), extra);
    assert_eq!(tier_of(&broker, "t"), "memory", "and a clean restart");
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_to_memory_keeps_logged_messages_across_kill_9() {
    persistent_to_memory_keeps_what_was_logged(&[]).await;
}

/// Under `memory_overflow = reject` a memory topic has no log of its own:
/// the one it had while persistent must still be read after the crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_to_memory_keeps_logged_messages_even_when_memory_rejects_overflow() {
    persistent_to_memory_keeps_what_was_logged(&["--memory-overflow=reject"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_to_persistent_keeps_memory_messages_across_a_clean_restart() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    post_ok(&broker, "/topic/create?topic=t&tier=memory");
    post_ok(&broker, "/channel/create?topic=t&channel=c");
    let mut producer = Client::connect(broker.tcp).await;
    let before = names("before", 10);
    for body in &before {
        producer.publish("t", body.clone()).await;
    }
    post_ok(&broker, "/topic/tier?topic=t&tier=persistent");
    let after = names("after", 10);
    for body in &after {
        producer.publish("t", body.clone()).await;
    }
    broker.stop();

    let broker = Triaged::start(data.path());
    assert_eq!(tier_of(&broker, "t"), "persistent");
    let wanted: HashSet<String> = before.iter().chain(&after).cloned().collect();
    let seen = drain(broker.tcp, "t", &wanted).await;
    assert_eq!(seen.len(), wanted.len(), "each once: {seen:?}");
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_tier_changes_hold_later_publishes_and_keep_pending_ones() {
    const DELAY: Duration = Duration::from_millis(1500);
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    post_ok(&broker, "/topic/create?topic=jobs&tier=persistent");
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("jobs", "c").await;
    consumer.rdy(10).await;
    let mut producer = Client::connect(broker.tcp).await;

    assert_eq!(
        ctl(
            &broker,
            &["topic", "set-tier", "jobs", "delayed", "--delay", "1500"]
        ),
        "topic jobs tier set to delayed\n"
    );
    assert_eq!(tier_of(&broker, "jobs"), "delayed");
    let published = Instant::now();
    producer.publish("jobs", "late").await;
    let msg = next_message(&mut consumer).await;
    assert_eq!(body_str(&msg), "late");
    assert!(
        published.elapsed() >= DELAY,
        "a publish after the change waits the topic's delay"
    );
    consumer.fin(&msg.id).await;

    // An hour's delay, a message under it, and one with its own short delay.
    post_ok(&broker, "/topic/tier?topic=jobs&tier=delayed&delay=1h");
    producer.publish("jobs", "held").await;
    let deferred = Instant::now();
    producer.dpub("jobs", 1500, "soon").await;
    // Leaving delayed: later publishes go straight through; what is pending
    // in the delayed tier stays there and comes out when due.
    post_ok(&broker, "/topic/tier?topic=jobs&tier=memory");
    producer.publish("jobs", "now").await;
    let mut arrived = HashMap::new();
    while arrived.len() < 2 {
        let msg = next_message(&mut consumer).await;
        consumer.fin(&msg.id).await;
        arrived.insert(body_str(&msg), deferred.elapsed());
    }
    assert!(arrived.contains_key("now"), "{arrived:?}");
    assert!(
        arrived["soon"] >= DELAY,
        "a pending entry comes out at its due time, not before: {arrived:?}"
    );
    let stats = topic_stats(&broker, "jobs");
    assert_eq!(stats["tier"], "memory");
    assert_eq!(stats["delayed_count"], 1, "the hour-long one is pending");
    broker.stop();
}

/// Publishes `rounds` messages one at a time, in order; returns what was acknowledged.
async fn publish_in_order(addr: SocketAddr, producer: usize, rounds: usize) -> Vec<String> {
    let mut client = Client::connect(addr).await;
    let mut acked = Vec::new();
    for round in 0..rounds {
        let body = format!("p{producer}-{round:05}");
        client
            .send(&Command::Pub {
                topic: "race".into(),
                body: Bytes::from(body.clone()),
            })
            .await;
        client.expect_ok().await;
        acked.push(body);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_racing_tier_changes_are_neither_lost_nor_reordered() {
    const PRODUCERS: usize = 3;
    const ROUNDS: usize = 400;
    const CHANGES: usize = 30;
    let data = tempfile::tempdir().unwrap();
    // A small memory queue, so the memory tier spills to the log too.
    let broker = Triaged::start_with(data.path(), &["--mem-queue-size=50"]);
    post_ok(&broker, "/topic/create?topic=race&tier=memory");
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("race", "c").await;
    consumer.rdy(20).await;
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| tokio::spawn(publish_in_order(broker.tcp, p, ROUNDS)))
        .collect();
    let tiers = ["persistent", "delayed", "memory"];
    let http = broker.http;
    let changer = tokio::task::spawn_blocking(move || {
        let mut done = 0;
        for change in 0..CHANGES {
            let tier = tiers[change % tiers.len()];
            let path = format!("/topic/tier?topic=race&tier={tier}");
            let (status, body) = http_at(http, "POST", &path);
            assert_eq!((status, body.as_str()), (200, "OK"), "{path}");
            done += 1;
        }
        done
    });

    let mut seen: HashMap<usize, Vec<String>> = HashMap::new();
    let mut total = 0;
    while total < PRODUCERS * ROUNDS {
        let msg = next_message(&mut consumer).await;
        consumer.fin(&msg.id).await;
        let body = body_str(&msg);
        let producer: usize = body[1..body.find('-').unwrap()].parse().unwrap();
        seen.entry(producer).or_default().push(body);
        total += 1;
    }
    assert_eq!(changer.await.unwrap(), CHANGES);
    for (p, handle) in producers.into_iter().enumerate() {
        let acked = handle.await.unwrap();
        assert_eq!(
            seen[&p], acked,
            "producer {p}: every message once, in order"
        );
    }
    broker.stop();
}
