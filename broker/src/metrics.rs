//! Prometheus metrics, served as text at `GET /metrics` on the HTTP port.
//!
//! Almost everything is read at scrape time from state the broker already
//! keeps for `/stats` (channel snapshots, the per-topic and per-channel
//! atomics, [`Store::stats`](crate::store::Store::stats)) by one
//! [`Collector`], so the hot path pays nothing for it. The exceptions are
//! the publish latency histogram (one observation per PUB/MPUB/DPUB or HTTP
//! publish, on a handle resolved once per tier) and the connection gauge
//! (once per connection). Labels are bounded: topic, channel, tier; never a
//! message or client id.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use triage_config::{BrokerConfig, Tier};

use crate::broker::Broker;

/// Publish-to-OK buckets, in seconds: memory publishes take microseconds,
/// persistent ones an fsync (milliseconds).
const PUBLISH_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// The broker's metric registry and the few metrics updated as traffic passes.
pub struct Metrics {
    registry: Registry,
    clients: IntGauge,
    /// `triage_publish_seconds` per tier, indexed by [`tier_index`].
    publish_seconds: [Histogram; 3],
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn tier_index(tier: Tier) -> usize {
    match tier {
        Tier::Memory => 0,
        Tier::Persistent => 1,
        Tier::Delayed => 2,
    }
}

impl Metrics {
    /// `broker` is read at each scrape (weak: the broker owns this).
    pub(crate) fn new(broker: Weak<Broker>, config: &BrokerConfig) -> Metrics {
        let registry = Registry::new();
        let clients =
            IntGauge::new("triage_clients", "Open TCP client connections.").expect("valid metric");
        let publish = HistogramVec::new(
            HistogramOpts::new(
                "triage_publish_seconds",
                "Time from receiving a publish (PUB, MPUB, DPUB, /pub, /mpub) to answering OK, by tier.",
            )
            .buckets(PUBLISH_BUCKETS.to_vec()),
            &["tier"],
        )
        .expect("valid metric");
        let publish_seconds = [Tier::Memory, Tier::Persistent, Tier::Delayed]
            .map(|tier| publish.with_label_values(&[tier.as_str()]));
        let bounds = [
            (
                "triage_config_mem_queue_size",
                "Configured per-channel in-memory bound (mem-queue-size).",
                config.mem_queue_size as i64,
            ),
            (
                "triage_config_max_rdy_count",
                "Configured largest RDY a consumer may ask for (max-rdy-count).",
                config.max_rdy_count as i64,
            ),
            (
                "triage_config_max_msg_size",
                "Configured largest message body in bytes (max-msg-size).",
                i64::from(config.max_msg_size),
            ),
            (
                "triage_config_max_connections",
                "Configured largest number of TCP connections (max-connections).",
                config.max_connections as i64,
            ),
        ];
        let register = |c: Box<dyn Collector>| registry.register(c).expect("unique metric names");
        for (name, help, value) in bounds {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            gauge.set(value);
            register(Box::new(gauge));
        }
        register(Box::new(clients.clone()));
        register(Box::new(publish));
        register(Box::new(BrokerCollector::new(broker)));
        Metrics {
            registry,
            clients,
            publish_seconds,
        }
    }

    /// Records one publish that was answered OK.
    pub fn observe_publish(&self, tier: Tier, elapsed: Duration) {
        self.publish_seconds[tier_index(tier)].observe(elapsed.as_secs_f64());
    }

    /// Counts a TCP connection in `triage_clients` until the guard drops.
    pub fn connection(&self) -> ConnectionGuard {
        self.clients.inc();
        ConnectionGuard(self.clients.clone())
    }

    /// Every metric in the text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a Vec fails only on a malformed family, which ours are not.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The `Content-Type` of [`Metrics::render`]'s output.
    pub fn content_type() -> String {
        TextEncoder::new().format_type().to_owned()
    }
}

/// Holds one count in `triage_clients`.
#[derive(Debug)]
pub struct ConnectionGuard(IntGauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Reads topics, channels and the store at scrape time. The families are
/// kept (for their descriptors) and refilled at each scrape under `scrape`,
/// so deleted topics and channels disappear and concurrent scrapes do not
/// interleave.
struct BrokerCollector {
    broker: Weak<Broker>,
    scrape: Mutex<()>,
    published: IntCounterVec,
    delivered: IntCounterVec,
    finished: IntCounterVec,
    requeued: IntCounterVec,
    timed_out: IntCounterVec,
    depth: IntGaugeVec,
    in_flight: IntGaugeVec,
    backend_depth: IntGaugeVec,
    deferred: IntGaugeVec,
    consumers: IntGaugeVec,
    delayed_pending: IntGaugeVec,
    store_fsyncs: IntCounter,
    store_fsync_seconds: Counter,
    store_batches: IntCounter,
    store_messages: IntCounter,
    store_write_errors: IntCounter,
    store_reopens: IntCounter,
    store_queue_depth: IntGauge,
    store_queue_capacity: IntGauge,
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge_vec(name: &str, help: &str) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), &["topic", "channel", "tier"]).expect("valid metric")
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::new(name, help).expect("valid metric")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).expect("valid metric")
}

impl BrokerCollector {
    fn new(broker: Weak<Broker>) -> BrokerCollector {
        const TC: &[&str] = &["topic", "channel"];
        BrokerCollector {
            broker,
            scrape: Mutex::new(()),
            published: counter_vec(
                "triage_messages_published_total",
                "Messages accepted by a topic.",
                &["topic", "tier"],
            ),
            delivered: counter_vec(
                "triage_messages_delivered_total",
                "Messages sent to a consumer (redeliveries included).",
                TC,
            ),
            finished: counter_vec(
                "triage_messages_finished_total",
                "Messages a consumer finished (FIN).",
                TC,
            ),
            requeued: counter_vec(
                "triage_messages_requeued_total",
                "Messages requeued by a consumer (REQ, or its disconnect).",
                TC,
            ),
            timed_out: counter_vec(
                "triage_messages_timed_out_total",
                "In-flight messages requeued because their timeout passed.",
                TC,
            ),
            depth: gauge_vec(
                "triage_channel_depth",
                "Messages waiting for delivery in a channel (memory plus backend).",
            ),
            in_flight: gauge_vec(
                "triage_channel_in_flight",
                "Messages sent to consumers and not yet finished, requeued or timed out.",
            ),
            backend_depth: gauge_vec(
                "triage_channel_backend_depth",
                "Messages of a persistent channel waiting on disk, beyond its in-memory window.",
            ),
            deferred: gauge_vec(
                "triage_channel_deferred",
                "Deferred messages (DPUB, REQ with a delay) waiting for their time, in memory or in the delayed tier.",
            ),
            consumers: gauge_vec(
                "triage_channel_consumers",
                "Consumers subscribed to a channel.",
            ),
            delayed_pending: IntGaugeVec::new(
                Opts::new(
                    "triage_delayed_pending",
                    "Entries waiting in the delayed tier: deferred publishes and delayed requeues of a topic and its channels.",
                ),
                &["topic"],
            )
            .expect("valid metric"),
            store_fsyncs: counter("triage_store_fsyncs_total", "WAL fsyncs of the store."),
            store_fsync_seconds: Counter::new(
                "triage_store_fsync_seconds_total",
                "Time spent in WAL fsyncs (a synced write timed whole).",
            )
            .expect("valid metric"),
            store_batches: counter(
                "triage_store_batches_total",
                "Store writes (one per group of requests).",
            ),
            store_messages: counter(
                "triage_store_messages_total",
                "Messages appended to topic logs.",
            ),
            store_write_errors: counter(
                "triage_store_write_errors_total",
                "Failed store writes and syncs.",
            ),
            store_reopens: counter(
                "triage_store_reopens_total",
                "Times the database was reopened to recover from a failed write.",
            ),
            store_queue_depth: gauge(
                "triage_store_queue_depth",
                "Write requests waiting for the store's writer.",
            ),
            store_queue_capacity: gauge(
                "triage_store_queue_capacity",
                "Bound of the store's write queue.",
            ),
        }
    }

    fn vecs(&self) -> [&dyn Collector; 19] {
        [
            &self.published,
            &self.delivered,
            &self.finished,
            &self.requeued,
            &self.timed_out,
            &self.depth,
            &self.in_flight,
            &self.backend_depth,
            &self.deferred,
            &self.consumers,
            &self.delayed_pending,
            &self.store_fsyncs,
            &self.store_fsync_seconds,
            &self.store_batches,
            &self.store_messages,
            &self.store_write_errors,
            &self.store_reopens,
            &self.store_queue_depth,
            &self.store_queue_capacity,
        ]
    }

    fn refill(&self, broker: &Broker) {
        self.published.reset();
        self.delivered.reset();
        self.finished.reset();
        self.requeued.reset();
        self.timed_out.reset();
        self.depth.reset();
        self.in_flight.reset();
        self.backend_depth.reset();
        self.deferred.reset();
        self.consumers.reset();
        self.delayed_pending.reset();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for topic in broker.topics() {
            let tier = topic.tier.as_str();
            self.published
                .with_label_values(&[topic.name.as_str(), tier])
                .inc_by(load(&topic.message_count));
            if topic.tier != Tier::Memory {
                self.delayed_pending
                    .with_label_values(&[topic.name.as_str()])
                    .set(
                        i64::try_from(broker.delayed.pending_total(&topic.name))
                            .unwrap_or(i64::MAX),
                    );
            }
            for channel in topic.snapshot().channels {
                let tc = [topic.name.as_str(), channel.name.as_str()];
                let c = &channel.counters;
                self.delivered
                    .with_label_values(&tc)
                    .inc_by(load(&c.delivered_count));
                self.finished
                    .with_label_values(&tc)
                    .inc_by(load(&c.finish_count));
                self.requeued
                    .with_label_values(&tc)
                    .inc_by(load(&c.requeue_count));
                self.timed_out
                    .with_label_values(&tc)
                    .inc_by(load(&c.timeout_count));
                let snapshot = channel.snapshot();
                let tct = [topic.name.as_str(), channel.name.as_str(), tier];
                let set = |g: &IntGaugeVec, v: u64| {
                    g.with_label_values(&tct)
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                };
                set(&self.depth, snapshot.depth);
                set(&self.in_flight, snapshot.in_flight);
                set(&self.backend_depth, snapshot.backend_depth);
                // As /stats: in memory plus what waits in the delayed tier.
                let delayed = broker
                    .delayed
                    .pending_for_channel(&topic.name, &channel.name)
                    + broker.delayed.pending_for_topic(&topic.name);
                set(&self.deferred, snapshot.deferred + delayed);
                set(&self.consumers, snapshot.clients.len() as u64);
            }
        }
        let stats = broker.store.stats();
        let set_counter = |c: &IntCounter, v: u64| {
            c.reset();
            c.inc_by(v);
        };
        set_counter(&self.store_fsyncs, stats.syncs);
        set_counter(&self.store_batches, stats.batches);
        set_counter(&self.store_messages, stats.messages);
        set_counter(&self.store_write_errors, stats.write_errors);
        set_counter(&self.store_reopens, stats.reopens);
        self.store_fsync_seconds.reset();
        self.store_fsync_seconds
            .inc_by(stats.sync_nanos_total as f64 / 1e9);
        self.store_queue_depth
            .set(i64::try_from(stats.queued).unwrap_or(i64::MAX));
        self.store_queue_capacity
            .set(i64::try_from(stats.queue_capacity).unwrap_or(i64::MAX));
    }
}

impl Collector for BrokerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.vecs().into_iter().flat_map(Collector::desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(broker) = self.broker.upgrade() {
            self.refill(&broker);
        }
        self.vecs()
            .into_iter()
            .flat_map(Collector::collect)
            .collect()
    }
}
