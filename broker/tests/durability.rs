//! The persistent tier against real crashes: the real `triaged` process,
//! killed with SIGKILL (`Child::kill`) mid-stream and restarted on the same
//! data directory. Nothing acknowledged may be lost; duplicates are allowed
//! (delivery is at-least-once) and counted.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::triaged::{Triaged, DEADLINE};
use common::{body_str, Client, Read};
use triage_protocol::{Command, Frame};

/// Publishes until the connection fails, recording every body the broker acknowledged.
async fn publish_until_cut(addr: SocketAddr, producer: usize, acked: Arc<Mutex<Vec<String>>>) {
    let mut client = Client::connect(addr).await;
    for round in 0.. {
        let bodies: Vec<String> = if round % 10 == 0 {
            (0..10)
                .map(|i| format!("p{producer}-r{round}-{i}"))
                .collect()
        } else {
            vec![format!("p{producer}-r{round}")]
        };
        let command = match bodies.as_slice() {
            [one] => Command::Pub {
                topic: "t".into(),
                body: Bytes::from(one.clone()),
            },
            _ => Command::Mpub {
                topic: "t".into(),
                bodies: bodies.iter().map(|b| Bytes::from(b.clone())).collect(),
            },
        };
        if client.try_send(&command).await.is_err() {
            return;
        }
        match client.read_within(DEADLINE).await {
            Read::Frame(Frame::Response(r)) if &r[..] == b"OK" => {
                acked.lock().unwrap().extend(bodies)
            }
            _ => return,
        }
    }
}

/// Subscribes and reads until every body in `wanted` arrived (FINing all);
/// returns how often each body was seen.
async fn drain(addr: SocketAddr, wanted: &HashSet<String>) -> HashMap<String, usize> {
    let mut consumer = Client::connect(addr).await;
    consumer.sub("t", "c").await;
    consumer.rdy(500).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !wanted.iter().all(|b| seen.contains_key(b)) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(msg) = consumer
            .try_read_message(left.min(Duration::from_secs(2)))
            .await
        else {
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            continue;
        };
        consumer.fin(&msg.id).await;
        *seen.entry(body_str(&msg)).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_kill_9_mid_stream() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    assert_eq!(
        broker.http("POST", "/channel/create?topic=t&channel=c").0,
        200
    );

    let acked = Arc::new(Mutex::new(Vec::new()));
    let publishers: Vec<_> = (0..4)
        .map(|p| tokio::spawn(publish_until_cut(broker.tcp, p, acked.clone())))
        .collect();
    common::wait_until("3000 acknowledged publishes", || {
        acked.lock().unwrap().len() >= 3000
    })
    .await;
    broker.kill9();
    for publisher in publishers {
        tokio::time::timeout(DEADLINE, publisher)
            .await
            .unwrap()
            .unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();

    let broker = Triaged::start(data.path());
    let seen = drain(broker.tcp, &acked).await;
    let lost: Vec<_> = acked.iter().filter(|b| !seen.contains_key(*b)).collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "{} acknowledged, {} received, {duplicates} duplicates",
        acked.len(),
        seen.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    broker.stop();
}

/// Half of a backlog is finished, then the broker stops (cleanly or not) and
/// comes back: every unfinished message is delivered again; after a clean
/// stop, no finished one is.
async fn finish_half_then_restart(crash: bool) -> (HashSet<String>, HashMap<String, usize>) {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    let mut producer = Client::connect(broker.tcp).await;
    let all: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    producer
        .mpub("t", all.iter().map(|b| Bytes::from(b.clone())).collect())
        .await;
    consumer.rdy(100).await;
    let delivered = consumer.read_messages(100).await;
    // No more deliveries: the FINs below would otherwise free credit for them.
    consumer.rdy(0).await;
    let mut finished = HashSet::new();
    for msg in delivered {
        consumer.fin(&msg.id).await;
        finished.insert(body_str(&msg));
    }
    // Every FIN has reached the broker once a NOP round trip after them is answered.
    consumer.assert_alive().await;
    if crash {
        broker.kill9();
    } else {
        drop(consumer);
        broker.stop();
    }
    let unfinished: HashSet<String> = all.into_iter().filter(|b| !finished.contains(b)).collect();
    let broker = Triaged::start(data.path());
    let mut seen = drain(broker.tcp, &unfinished).await;
    // Give finished messages a chance to show up (they must not, after a clean stop).
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    consumer.rdy(500).await;
    while let Some(msg) = consumer.try_read_message(Duration::from_millis(300)).await {
        *seen.entry(body_str(&msg)).or_default() += 1;
    }
    broker.stop();
    for body in &unfinished {
        assert!(
            seen.contains_key(body),
            "unfinished {body} was not delivered again"
        );
    }
    (finished, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_stop_only_unfinished_messages_come_back() {
    let (finished, seen) = finish_half_then_restart(false).await;
    let again: Vec<_> = finished.iter().filter(|b| seen.contains_key(*b)).collect();
    assert!(
        again.is_empty(),
        "finished messages delivered again after a clean stop: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_unfinished_message_comes_back() {
    let (finished, seen) = finish_half_then_restart(true).await;
    let again = finished.iter().filter(|b| seen.contains_key(*b)).count();
    eprintln!(
        "{again} of {} finished messages were delivered again after kill -9",
        finished.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_channels_tiers_and_pauses_survive_restarts() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    for path in [
        "/topic/create?topic=urgent&tier=memory",
        "/topic/create?topic=tickets&tier=persistent",
        "/channel/create?topic=tickets&channel=agents",
        "/channel/create?topic=tickets&channel=audit",
        "/channel/pause?topic=tickets&channel=audit",
        "/channel/create?topic=urgent&channel=pager",
        "/topic/pause?topic=urgent",
        "/topic/create?topic=gone",
        "/topic/delete?topic=gone",
    ] {
        assert_eq!(broker.http("POST", path).0, 200, "{path}");
    }
    broker.kill9();

    let broker = Triaged::start(data.path());
    let stats = broker.stats();
    let topics = stats["topics"].as_array().unwrap();
    let topic = |name: &str| topics.iter().find(|t| t["topic_name"] == name).cloned();
    assert!(topic("gone").is_none(), "a deleted topic came back");
    let urgent = topic("urgent").expect("urgent survived");
    assert_eq!(
        (urgent["tier"].as_str(), urgent["paused"].as_bool()),
        (Some("memory"), Some(true))
    );
    assert_eq!(urgent["channels"][0]["channel_name"], "pager");
    let tickets = topic("tickets").expect("tickets survived");
    assert_eq!(
        (tickets["tier"].as_str(), tickets["paused"].as_bool()),
        (Some("persistent"), Some(false))
    );
    let channels: Vec<(String, bool)> = tickets["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel_name"].as_str().unwrap().to_owned(),
                c["paused"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        channels,
        vec![("agents".to_owned(), false), ("audit".to_owned(), true)]
    );
    broker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_created_later_sees_only_later_messages_even_after_restart() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start(data.path());
    let mut producer = Client::connect(broker.tcp).await;
    assert_eq!(
        broker
            .http("POST", "/channel/create?topic=t&channel=first")
            .0,
        200
    );
    producer.publish("t", "before").await;
    assert_eq!(
        broker.http("POST", "/channel/create?topic=t&channel=c").0,
        200
    );
    producer.publish("t", "after").await;
    drop(producer);
    broker.kill9();

    let broker = Triaged::start(data.path());
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    consumer.rdy(10).await;
    let msg = consumer.read_message().await;
    assert_eq!(body_str(&msg), "after");
    consumer
        .expect_nothing_for(Duration::from_millis(300))
        .await;
    let mut first = Client::connect(broker.tcp).await;
    first.sub("t", "first").await;
    first.rdy(10).await;
    let got: Vec<String> = first.read_messages(2).await.iter().map(body_str).collect();
    assert_eq!(got, vec!["before".to_owned(), "after".to_owned()]);
    broker.stop();
}

/// Consumed and finished messages leave the log: trimmed by range at the
/// next checkpoint, so disk use falls as consumers keep up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_messages_are_trimmed_from_the_log() {
    let tb = common::start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 1000).await;
    let mut producer = tb.connect().await;
    producer.mpub("t", common::bodies("m", 500)).await;
    let store = tb.broker().store.clone();
    assert_eq!(store.read_log("t", 0, usize::MAX).unwrap().len(), 500);
    for msg in consumer.read_messages(500).await {
        consumer.fin(&msg.id).await;
    }
    consumer.assert_alive().await;
    tb.broker().checkpoint().await;
    assert!(
        store.read_log("t", 0, usize::MAX).unwrap().is_empty(),
        "finished messages are still in the log"
    );
    tb.shutdown().await;
}

/// A checkpoint writes FIN marks only above the channel's low watermark:
/// FINs in order are covered by the watermark alone, one out of order is
/// marked until the watermark passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_mark_only_fins_above_the_watermark() {
    let tb = common::start_broker(|_| {}).await;
    let mut consumer = tb.consumer("t", "c", 100).await;
    let mut producer = tb.connect().await;
    producer.mpub("t", common::bodies("m", 10)).await;
    let msgs = consumer.read_messages(10).await;
    let seqs: Vec<u64> = msgs.iter().map(|m| m.id.to_u64().unwrap()).collect();
    // All but the fourth.
    for msg in msgs.iter().filter(|m| m.id != msgs[3].id) {
        consumer.fin(&msg.id).await;
    }
    consumer.assert_alive().await;
    // What the channel hands the checkpoint: the watermark and the FINs above it.
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    let taken = channel.checkpoint().unwrap();
    assert_eq!(taken.low_watermark, seqs[3]);
    assert_eq!(taken.finished, seqs[4..]);
    channel.restore_finished(taken.finished);
    tb.broker().checkpoint().await;
    let store = tb.broker().store.clone();
    let marked = store.finished("t", "c", 0, usize::MAX).unwrap();
    assert_eq!(
        marked,
        seqs[4..],
        "only FINs above the watermark (seq {})",
        seqs[3]
    );
    // Only the fourth is left in the log's live part.
    consumer.fin(&msgs[3].id).await;
    consumer.assert_alive().await;
    tb.broker().checkpoint().await;
    assert!(store.finished("t", "c", 0, usize::MAX).unwrap().is_empty());
    assert!(store.read_log("t", 0, usize::MAX).unwrap().is_empty());
    tb.shutdown().await;
}

/// A full disk: publishes fail with E_PUB_FAILED and a reason, never a false
/// OK; once space returns, publishing works again without a restart; and
/// every message that was acknowledged is there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_and_recovers_when_space_returns() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start_with_file_limit(data.path(), 2048);
    assert_eq!(
        broker.http("POST", "/channel/create?topic=t&channel=c").0,
        200
    );
    let mut acked = HashSet::new();
    let mut client = Client::connect(broker.tcp).await;
    let mut refused = None;
    for i in 0..2000 {
        let body = format!("{i:06}-{}", "x".repeat(16 * 1024));
        client
            .send(&Command::Pub {
                topic: "t".into(),
                body: Bytes::from(body.clone()),
            })
            .await;
        match client.read_within(DEADLINE).await {
            Read::Frame(Frame::Response(r)) if &r[..] == b"OK" => {
                acked.insert(body);
            }
            Read::Frame(Frame::Error(e)) => {
                refused = Some(String::from_utf8_lossy(&e).into_owned());
                break;
            }
            other => panic!("unexpected reply to PUB {i}: {other:?}"),
        }
    }
    let refused = refused.expect("publishing 32 MiB under a 2 MiB file limit must fail");
    assert!(refused.starts_with("E_PUB_FAILED"), "{refused}");
    assert!(
        refused.contains("I/O error"),
        "the reason is given: {refused}"
    );
    assert!(!acked.is_empty(), "some publishes fit before the limit");

    // Space returns: lift the limit on the running process.
    let pid = broker.child.id().to_string();
    let lifted = Process::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:"])
        .status()
        .unwrap();
    assert!(lifted.success());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut client = Client::connect(broker.tcp).await;
        let body = format!("after-{}", acked.len());
        client
            .send(&Command::Pub {
                topic: "t".into(),
                body: Bytes::from(body.clone()),
            })
            .await;
        if let Read::Frame(Frame::Response(r)) = client.read_within(DEADLINE).await {
            assert_eq!(&r[..], b"OK");
            acked.insert(body);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not resume after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.kill9();

    let broker = Triaged::start(data.path());
    let seen = drain(broker.tcp, &acked).await;
    let lost = acked.iter().filter(|b| !seen.contains_key(*b)).count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged messages lost",
        acked.len()
    );
    broker.stop();
}

/// Memory-tier messages are saved on a clean shutdown and come back at start
/// (queued, in flight and channel-less alike), unless configured off.
async fn memory_tier_across_a_clean_restart(save: bool) -> (Vec<String>, Vec<String>) {
    let data = tempfile::tempdir().unwrap();
    let flag = format!("--save-memory-on-shutdown={save}");
    // Without spill, so nothing of the memory tier is on disk while running.
    let flags = [flag.as_str(), "--memory-overflow=reject"];
    let broker = Triaged::start_with(data.path(), &flags);
    for path in [
        "/topic/create?topic=urgent&tier=memory",
        "/channel/create?topic=urgent&channel=c",
    ] {
        assert_eq!(broker.http("POST", path).0, 200, "{path}");
    }
    assert_eq!(
        broker
            .http("POST", "/topic/create?topic=solo&tier=memory")
            .0,
        200
    );
    let mut producer = Client::connect(broker.tcp).await;
    producer.mpub("urgent", common::bodies("u", 10)).await;
    producer.mpub("solo", common::bodies("s", 3)).await;
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("urgent", "c").await;
    consumer.rdy(3).await;
    let in_flight = consumer.read_messages(3).await;
    assert_eq!(in_flight.len(), 3);
    drop((producer, consumer));
    broker.stop();

    let broker = Triaged::start_with(data.path(), &flags);
    let mut got = Vec::new();
    for (topic, expected) in [("urgent", 10), ("solo", 3)] {
        let mut consumer = Client::connect(broker.tcp).await;
        consumer.sub(topic, "c").await;
        consumer.rdy(100).await;
        let mut bodies = Vec::new();
        while bodies.len() < expected {
            match consumer.try_read_message(Duration::from_millis(500)).await {
                Some(msg) => bodies.push(body_str(&msg)),
                None => break,
            }
        }
        bodies.sort();
        got.push(bodies);
    }
    broker.stop();
    let solo = got.pop().unwrap();
    (got.pop().unwrap(), solo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_restart_restores_what_the_memory_tier_held() {
    let (urgent, solo) = memory_tier_across_a_clean_restart(true).await;
    let mut expected: Vec<String> = common::bodies("u", 10)
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    expected.sort();
    assert_eq!(
        urgent, expected,
        "queued and in-flight messages of a memory channel come back"
    );
    assert_eq!(
        solo.len(),
        3,
        "a channel-less memory topic's messages come back: {solo:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_saving_off_a_clean_restart_drops_the_memory_tier() {
    let (urgent, solo) = memory_tier_across_a_clean_restart(false).await;
    assert!(urgent.is_empty() && solo.is_empty(), "{urgent:?} {solo:?}");
}

/// A persistent channel keeps at most `mem_queue_size` messages in memory;
/// the rest waits in the store and is read back in order as consumers make
/// room, so memory does not grow with the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_backlog_beyond_the_window_stays_on_disk() {
    let tb = common::start_broker(|c| c.mem_queue_size = 20).await;
    tb.broker().channel("t", "c").await.unwrap();
    let mut producer = tb.connect().await;
    for batch in 0..10 {
        producer
            .mpub("t", common::bodies(&format!("b{batch}-"), 50))
            .await;
    }
    let channel = tb.broker().existing_channel("t", "c").unwrap();
    let snapshot = channel.snapshot();
    assert_eq!(snapshot.depth, 500, "depth counts what waits on disk");
    assert!(
        snapshot.depth - snapshot.backend_depth <= 20,
        "{snapshot:?}"
    );

    let mut consumer = tb.consumer("t", "c", 100).await;
    let mut ids = Vec::new();
    while ids.len() < 500 {
        let msg = consumer.read_message().await;
        consumer.fin(&msg.id).await;
        ids.push(msg.id.to_u64().unwrap());
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 500, "each message once");
    assert_eq!(ids, sorted, "read back in log order");
    consumer
        .expect_nothing_for(Duration::from_millis(200))
        .await;
    tb.shutdown().await;
}

/// Publishers and a consumer at once with a small window: hand-over in log
/// order and refills from disk race, and every acknowledged message must
/// arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_and_refills_lose_and_repeat_nothing() {
    let tb = common::start_broker(|c| c.mem_queue_size = 16).await;
    let mut consumer = tb.consumer("t", "c", 8).await;
    let addr = tb.tcp_addr();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for round in 0..50 {
                    let bodies = (0..5)
                        .map(|i| Bytes::from(format!("p{p}-{round}-{i}")))
                        .collect();
                    client.mpub("t", bodies).await;
                }
            })
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    while seen.len() < 1000 {
        let msg = consumer.read_message().await;
        consumer.fin(&msg.id).await;
        *seen.entry(body_str(&msg)).or_default() += 1;
    }
    for publisher in publishers {
        publisher.await.unwrap();
    }
    consumer
        .expect_nothing_for(Duration::from_millis(300))
        .await;
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered twice without a crash: {repeated:?}"
    );
    tb.shutdown().await;
}

/// After a crash the backlog is not read into memory at start: it is
/// served from disk through the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_a_large_backlog_through_the_window() {
    let data = tempfile::tempdir().unwrap();
    let broker = Triaged::start_with(data.path(), &["--mem-queue-size=25"]);
    assert_eq!(
        broker.http("POST", "/channel/create?topic=t&channel=c").0,
        200
    );
    let mut producer = Client::connect(broker.tcp).await;
    let all: Vec<Bytes> = common::bodies("m", 300);
    for chunk in all.chunks(100) {
        producer.mpub("t", chunk.to_vec()).await;
    }
    drop(producer);
    broker.kill9();

    let broker = Triaged::start_with(data.path(), &["--mem-queue-size=25"]);
    let stats = broker.stats();
    let channel = &stats["topics"][0]["channels"][0];
    assert_eq!(channel["depth"], 300, "{channel}");
    assert!(
        channel["backend_depth"].as_u64().unwrap() >= 275,
        "{channel}"
    );
    let wanted: HashSet<String> = all
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    let seen = drain(broker.tcp, &wanted).await;
    assert!(
        wanted.iter().all(|b| seen.contains_key(b)),
        "{} of 300 delivered",
        seen.len()
    );
    broker.stop();
}

/// A paused persistent topic gives its channels nothing new, even channels
/// reading their backlog from disk; unpausing releases what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_topic_releases_nothing_even_to_channels_reading_from_disk() {
    let tb = common::start_broker(|c| c.mem_queue_size = 5).await;
    tb.broker().channel("t", "c").await.unwrap();
    let mut producer = tb.connect().await;
    producer.mpub("t", common::bodies("before", 20)).await;
    tb.broker().pause_topic("t", true).await.unwrap();
    producer.mpub("t", common::bodies("paused", 10)).await;
    assert_eq!(
        tb.broker().existing_topic("t").unwrap().snapshot().depth,
        10
    );

    let mut consumer = tb.consumer("t", "c", 100).await;
    let mut got = Vec::new();
    while let Some(msg) = consumer.try_read_message(Duration::from_millis(400)).await {
        consumer.fin(&msg.id).await;
        got.push(body_str(&msg));
    }
    assert_eq!(got.len(), 20, "only what came before the pause: {got:?}");
    assert!(got.iter().all(|b| b.starts_with("before")), "{got:?}");

    tb.broker().pause_topic("t", false).await.unwrap();
    let after: Vec<String> = consumer
        .read_messages(10)
        .await
        .iter()
        .map(body_str)
        .collect();
    assert!(after.iter().all(|b| b.starts_with("paused")), "{after:?}");
    tb.shutdown().await;
}

/// The memory tier's overflow spills to the store instead of being refused:
/// nothing is lost, order is kept, and a clean restart brings back what was
/// in memory and what had spilled, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_channel_spills_to_disk_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let flags = [
        "--default-tier=memory",
        "--mem-queue-size=10",
        "--memory-overflow=spill",
    ];
    let broker = Triaged::start_with(data.path(), &flags);
    assert_eq!(
        broker.http("POST", "/channel/create?topic=t&channel=c").0,
        200
    );
    let mut producer = Client::connect(broker.tcp).await;
    // These fit in memory and are never written while running...
    for body in common::bodies("m", 5) {
        producer.publish("t", body).await;
    }
    // ...and these overflow to disk.
    for batch in 0..5 {
        producer
            .mpub("t", common::bodies(&format!("b{batch}-"), 20))
            .await;
    }
    let stats = broker.stats();
    let channel = &stats["topics"][0]["channels"][0];
    assert_eq!(channel["depth"], 105, "{channel}");
    assert!(
        channel["backend_depth"].as_u64().unwrap() >= 95,
        "{channel}"
    );
    drop(producer);
    broker.stop();

    let mut seen: HashMap<String, usize> = HashMap::new();
    let broker = Triaged::start_with(data.path(), &flags);
    let mut consumer = Client::connect(broker.tcp).await;
    consumer.sub("t", "c").await;
    consumer.rdy(50).await;
    while let Some(msg) = consumer.try_read_message(Duration::from_millis(500)).await {
        consumer.fin(&msg.id).await;
        *seen.entry(body_str(&msg)).or_default() += 1;
    }
    broker.stop();
    assert_eq!(seen.len(), 105, "every message arrived: {seen:?}");
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered twice across a clean restart: {repeated:?}"
    );
}

/// A channel-less memory topic holds up to its bound in memory and spills
/// the rest; its first channel gets all of it, in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_less_memory_topic_holds_in_memory_then_spills() {
    let tb = common::start_broker(|c| {
        c.default_tier = triage_config::Tier::Memory;
        c.mem_queue_size = 10;
    })
    .await;
    let mut producer = tb.connect().await;
    for body in common::bodies("m", 8) {
        producer.publish("t", body).await;
    }
    producer.mpub("t", common::bodies("over", 30)).await;
    assert_eq!(
        tb.broker().existing_topic("t").unwrap().snapshot().depth,
        38
    );
    let mut consumer = tb.consumer("t", "c", 100).await;
    let mut got = Vec::new();
    while got.len() < 38 {
        let msg = consumer.read_message().await;
        consumer.fin(&msg.id).await;
        got.push(msg.id.to_u64().unwrap());
    }
    consumer
        .expect_nothing_for(Duration::from_millis(300))
        .await;
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 38, "each once");
    assert_eq!(got, sorted, "in publish order");
    tb.shutdown().await;
}
