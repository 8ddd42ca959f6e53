//! Chaos on the real `triaged` process: rounds of mixed load on all three
//! tiers (concurrent publishers recording every acknowledged body, consumers
//! FINing what they get and requeueing some with a delay first), each ended
//! by `kill -9` at a random moment and a restart on the same data directory.
//! After every restart the consumers drain: every acknowledged persistent or
//! delayed message must be delivered and FINed, a requeued one after its
//! requeue.
//! Duplicates (at-least-once) are counted and reported; memory-tier losses
//! are expected by design (a crash loses what is only in memory) and are
//! counted and reported, not failed on.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::triaged::{Triaged, DEADLINE};
use common::{body_str, Client, Read};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use triage_protocol::{Command, Frame};

/// Crash-and-restart rounds; the whole test stays well under a minute.
const ROUNDS: usize = 5;
/// Acknowledged durable publishes a round needs before the kill may come.
const DURABLE_ACKS_PER_ROUND: usize = 300;
/// The kill comes at a random moment up to this long after that.
const MAX_EXTRA_LOAD: Duration = Duration::from_millis(400);

/// The three topics, one per tier; a body starts with its tier's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Tier {
    Memory,
    Persistent,
    Delayed,
}

const TIERS: [Tier; 3] = [Tier::Memory, Tier::Persistent, Tier::Delayed];

impl Tier {
    fn topic(self) -> &'static str {
        match self {
            Tier::Memory => "chaos_mem",
            Tier::Persistent => "chaos_per",
            Tier::Delayed => "chaos_del",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Tier::Memory => "mem",
            Tier::Persistent => "per",
            Tier::Delayed => "del",
        }
    }

    fn of(body: &str) -> Tier {
        TIERS
            .into_iter()
            .find(|t| body.starts_with(t.prefix()))
            .unwrap_or_else(|| panic!("a body from no tier: {body:?}"))
    }

    /// Whether an acknowledged message must survive `kill -9`.
    fn durable(self) -> bool {
        self != Tier::Memory
    }
}

/// Everything acknowledged and everything delivered, across all rounds.
#[derive(Default)]
struct Ledger {
    acked: HashSet<String>,
    /// How often each body was delivered to a consumer.
    seen: HashMap<String, usize>,
    /// Bodies a consumer sent FIN for: done, as far as a client can know.
    finished: HashSet<String>,
    /// Deliveries answered with REQ instead of FIN (not duplicates).
    requeues: usize,
    /// Durable acks in the current round.
    round_durable_acks: usize,
}

type Shared = Arc<Mutex<Ledger>>;

impl Ledger {
    /// Acknowledged bodies of `tier` never FINed.
    fn acked_unfinished(&self, tier: Tier) -> Vec<&String> {
        self.acked
            .iter()
            .filter(|b| Tier::of(b) == tier && !self.finished.contains(*b))
            .collect()
    }

    fn durable_unfinished(&self) -> usize {
        self.acked_unfinished(Tier::Persistent).len() + self.acked_unfinished(Tier::Delayed).len()
    }

    /// Deliveries beyond the first of each body, not counting the one after each REQ.
    fn duplicates(&self, tier: Tier) -> usize {
        self.seen
            .iter()
            .filter(|(b, _)| Tier::of(b) == tier)
            .map(|(b, n)| n - 1 - usize::from(requeued_once(b)).min(n - 1))
            .sum()
    }

    fn acked_count(&self, tier: Tier) -> usize {
        self.acked.iter().filter(|b| Tier::of(b) == tier).count()
    }
}

/// What one publisher sends next: a PUB, an MPUB of 5, or (persistent only) a
/// DPUB of 100 ms, which goes through the delayed store.
fn next_publish(tier: Tier, name: &str, seq: usize) -> (Command, Vec<String>) {
    let topic = tier.topic().to_owned();
    let body = |i: usize| format!("{}-{name}-{seq}-{i}", tier.prefix());
    match seq % 4 {
        1 => {
            let bodies: Vec<String> = (0..5).map(body).collect();
            let command = Command::Mpub {
                topic,
                bodies: bodies.iter().map(|b| Bytes::from(b.clone())).collect(),
            };
            (command, bodies)
        }
        3 if tier == Tier::Persistent => (
            Command::Dpub {
                topic,
                defer_ms: 100,
                body: Bytes::from(body(0)),
            },
            vec![body(0)],
        ),
        _ => (
            Command::Pub {
                topic,
                body: Bytes::from(body(0)),
            },
            vec![body(0)],
        ),
    }
}

/// Publishes until the broker goes away, recording each acknowledged body.
/// A body sent without a reply is in doubt: it may or may not arrive.
async fn publish_until_cut(mut client: Client, tier: Tier, name: String, ledger: Shared) {
    for seq in 0.. {
        let (command, bodies) = next_publish(tier, &name, seq);
        if client.try_send(&command).await.is_err() {
            return;
        }
        match client.read_within(DEADLINE).await {
            Read::Frame(Frame::Response(r)) if &r[..] == triage_protocol::OK => {
                let mut ledger = ledger.lock().unwrap();
                if tier.durable() {
                    ledger.round_durable_acks += bodies.len();
                }
                ledger.acked.extend(bodies);
            }
            Read::Frame(other) => panic!("{name}: {}", common::describe(&other)),
            Read::Closed | Read::TimedOut => return,
        }
    }
}

/// Whether a consumer answers this body's first delivery with a delayed REQ:
/// about one in eight, chosen by the body so every round and restart agrees.
fn requeued_once(body: &str) -> bool {
    body.bytes().map(usize::from).sum::<usize>() % 8 == 0
}

/// Delay of those requeues: on persistent and delayed topics they wait in the store.
const REQUEUE_MS: i64 = 100;

/// Reads and FINs (or first REQs, see [`requeued_once`]) until the broker
/// goes away or `stop` is set.
async fn consume(mut client: Client, ledger: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match client.read_within(Duration::from_millis(100)).await {
            Read::Frame(Frame::Message(msg)) => {
                let body = body_str(&msg);
                *ledger.lock().unwrap().seen.entry(body.clone()).or_default() += 1;
                let requeue = msg.attempts == 1 && requeued_once(&body);
                let command = if requeue {
                    Command::Req {
                        id: msg.id,
                        timeout_ms: REQUEUE_MS,
                    }
                } else {
                    Command::Fin(msg.id)
                };
                if client.try_send(&command).await.is_err() {
                    return;
                }
                let mut ledger = ledger.lock().unwrap();
                if requeue {
                    ledger.requeues += 1;
                } else {
                    ledger.finished.insert(body);
                }
            }
            // E_FIN_FAILED for a FIN the crash made stale is not fatal.
            Read::Frame(_) | Read::TimedOut => {}
            Read::Closed => return,
        }
    }
}

/// One running broker with a consumer on every tier's channel.
struct Round {
    broker: Triaged,
    consumers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Round {
    async fn start(data: &std::path::Path, ledger: &Shared, first: bool) -> Round {
        let broker = Triaged::start(data);
        if first {
            for (tier, query) in [
                (Tier::Memory, "tier=memory"),
                (Tier::Persistent, "tier=persistent"),
                (Tier::Delayed, "tier=delayed&delay=200"),
            ] {
                let topic = tier.topic();
                let (status, body) =
                    broker.http("POST", &format!("/topic/create?topic={topic}&{query}"));
                assert_eq!(status, 200, "{body}");
                let (status, body) =
                    broker.http("POST", &format!("/channel/create?topic={topic}&channel=c"));
                assert_eq!(status, 200, "{body}");
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut consumers = Vec::new();
        for tier in TIERS {
            let mut client = Client::connect(broker.tcp).await;
            client.answer_heartbeats = true;
            client.sub(tier.topic(), "c").await;
            client.rdy(100).await;
            consumers.push(tokio::spawn(consume(client, ledger.clone(), stop.clone())));
        }
        Round {
            broker,
            consumers,
            stop,
        }
    }

    /// Waits until every acknowledged durable message has been FINed; fails
    /// naming the missing ones after [`DEADLINE`].
    async fn drain(&self, ledger: &Shared, round: usize) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            {
                let ledger = ledger.lock().unwrap();
                if ledger.durable_unfinished() == 0 {
                    return;
                }
                if Instant::now() >= deadline {
                    let mut lost: Vec<_> = ledger.acked_unfinished(Tier::Persistent);
                    lost.extend(ledger.acked_unfinished(Tier::Delayed));
                    lost.sort();
                    panic!(
                        "after restart {round}: {} acknowledged durable messages lost, e.g. {:?}",
                        lost.len(),
                        &lost[..lost.len().min(10)]
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs publishers on every tier until enough durable acks, then a random
    /// while longer, then `kill -9`s the broker and waits for every task.
    async fn load_then_kill(self, ledger: &Shared, round: usize) {
        ledger.lock().unwrap().round_durable_acks = 0;
        let mut publishers = Vec::new();
        for (tier, count) in [(Tier::Memory, 1), (Tier::Persistent, 2), (Tier::Delayed, 1)] {
            for p in 0..count {
                let client = Client::connect(self.broker.tcp).await;
                let name = format!("r{round}-p{p}");
                publishers.push(tokio::spawn(publish_until_cut(
                    client,
                    tier,
                    name,
                    ledger.clone(),
                )));
            }
        }
        let deadline = Instant::now() + DEADLINE;
        while ledger.lock().unwrap().round_durable_acks < DURABLE_ACKS_PER_ROUND {
            assert!(
                Instant::now() < deadline,
                "round {round}: fewer than {DURABLE_ACKS_PER_ROUND} durable acks in {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let extra = rand::rng().random_range(0..MAX_EXTRA_LOAD.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(extra)).await;
        self.broker.kill9();
        for task in publishers.into_iter().chain(self.consumers) {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("a task ended after the kill")
                .unwrap();
        }
    }

    /// Stops the consumers and the broker cleanly.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.consumers {
            tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
        }
        self.broker.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_mixed_load_loses_no_acknowledged_durable_message() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let ledger: Shared = Arc::default();
    let mut round = Round::start(data.path(), &ledger, true).await;
    for n in 1..=ROUNDS {
        round.load_then_kill(&ledger, n).await;
        round = Round::start(data.path(), &ledger, false).await;
        round.drain(&ledger, n).await;
    }
    round.finish().await;

    let ledger = ledger.lock().unwrap();
    for tier in TIERS {
        let acked = ledger.acked_count(tier);
        let lost = ledger.acked_unfinished(tier).len();
        eprintln!(
            "{tier:?}: {acked} acknowledged, {lost} lost, {} duplicates",
            ledger.duplicates(tier)
        );
        assert!(acked > 0, "{tier:?}: nothing was acknowledged");
        if tier.durable() {
            assert_eq!(lost, 0, "{tier:?}: acknowledged messages lost");
        }
    }
    eprintln!(
        "{ROUNDS} kill -9 rounds in {:?}, {} delayed requeues",
        started.elapsed(),
        ledger.requeues
    );
}
