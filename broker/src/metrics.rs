//! Prometheus metrics, served as text at `GET /metrics` on the HTTP port.
//!
//! Almost everything is read at scrape time from state the broker already
//! keeps for `/stats` (channel snapshots, the per-topic and per-channel
//! atomics, each client's backpressure level,
//! [`Store::stats`](crate::store::Store::stats) and the store's
//! [`Pow2Histogram`]s) by one [`Collector`], so the hot path pays nothing for
//! it. The exceptions are the publish latency histogram (one observation per
//! PUB/MPUB/DPUB or HTTP publish, on a handle resolved once per tier), the
//! end-to-end histogram (one observation per FIN, on a handle each
//! connection resolves once) and the connection gauge (once per connection).
//! Labels are bounded: topic, channel, tier, and a backpressure level of
//! 0..=2; never a message or client id.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
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

/// Publish-to-FIN buckets, in seconds: from an urgent message finished at
/// once to a batch job that waited an hour in the delayed tier.
const END_TO_END_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0, 3600.0,
];

/// The levels `BACKPRESSURE` accepts: 0 normal, 1 degraded, 2 overloaded.
const BACKPRESSURE_LEVELS: [&str; 3] = ["0", "1", "2"];

/// The broker's metric registry and the few metrics updated as traffic passes.
pub struct Metrics {
    registry: Registry,
    clients: IntGauge,
    /// `triage_publish_seconds` per tier, indexed by [`tier_index`].
    publish_seconds: [Histogram; 3],
    /// `triage_end_to_end_seconds`; the collector drops the series of
    /// channels that no longer exist.
    end_to_end: HistogramVec,
    /// `triage_client_disconnects_total` by reason: which limit (or what
    /// else) ended each connection.
    disconnects: IntCounterVec,
}

/// Why a TCP connection ended, as `triage_client_disconnects_total` labels
/// it: the limits (`handshake_timeout`, `heartbeats_missed`, `write_timeout`
/// for a consumer that stops reading, `protocol_error` for a line or body
/// past its cap and any other fatal error) and the ordinary ends.
pub const DISCONNECT_REASONS: &[&str] = &[
    "closed",
    "shutdown",
    "protocol_error",
    "io_error",
    "write_timeout",
    "heartbeats_missed",
    "handshake_timeout",
    "channel_deleted",
];

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
        let end_to_end = HistogramVec::new(
            HistogramOpts::new(
                "triage_end_to_end_seconds",
                "Time from a message's publish to its FIN, requeues and retries included.",
            )
            .buckets(END_TO_END_BUCKETS.to_vec()),
            &["topic", "channel", "tier"],
        )
        .expect("valid metric");
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
            (
                "triage_config_max_body_size",
                "Configured largest command body in bytes, a whole MPUB (max-body-size).",
                i64::from(config.max_body_size),
            ),
            (
                "triage_config_max_line_len",
                "Configured longest command line in bytes (max-line-len).",
                config.max_line_len as i64,
            ),
            (
                "triage_config_max_output_buffer_size",
                "Configured largest output buffer a client may ask for, in bytes.",
                config.max_output_buffer_size as i64,
            ),
            (
                "triage_config_handshake_timeout_seconds",
                "Configured time a new connection has for the magic and its first command.",
                config.handshake_timeout.as_secs() as i64,
            ),
        ];
        let register = |c: Box<dyn Collector>| registry.register(c).expect("unique metric names");
        for (name, help, value) in bounds {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            gauge.set(value);
            register(Box::new(gauge));
        }
        let disconnects = IntCounterVec::new(
            Opts::new(
                "triage_client_disconnects_total",
                "TCP connections ended, by reason (a limit that cut it off, an error, or a normal close).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for reason in DISCONNECT_REASONS {
            // Every reason shows from the start, at 0.
            disconnects.with_label_values(&[reason]);
        }
        register(Box::new(disconnects.clone()));
        register(Box::new(clients.clone()));
        register(Box::new(publish));
        register(Box::new(BrokerCollector::new(broker, end_to_end.clone())));
        Metrics {
            registry,
            clients,
            publish_seconds,
            end_to_end,
            disconnects,
        }
    }

    /// Counts a connection that ended, by one of [`DISCONNECT_REASONS`].
    pub fn disconnected(&self, reason: &'static str) {
        debug_assert!(DISCONNECT_REASONS.contains(&reason), "{reason}");
        self.disconnects.with_label_values(&[reason]).inc();
    }

    /// The `triage_end_to_end_seconds` series of one channel. Resolving it
    /// costs a map lookup, so a connection resolves it once and keeps it.
    pub fn end_to_end(&self, topic: &str, channel: &str, tier: Tier) -> Histogram {
        self.end_to_end
            .with_label_values(&[topic, channel, tier.as_str()])
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

/// Records one FIN in `histogram`: the time since `published_ns` (the
/// message's timestamp, nanoseconds since the Unix epoch). A clock that went
/// backwards counts as zero rather than as a negative latency.
pub fn observe_end_to_end(histogram: &Histogram, published_ns: i64, now_ns: i64) {
    let nanos = now_ns.saturating_sub(published_ns).max(0);
    histogram.observe(nanos as f64 / 1e9);
}

/// A histogram the hot path records into with three relaxed atomic adds and
/// no lock, read by the collector at scrape time. Bucket `i` holds values in
/// `(2^(i-1), 2^i]` (bucket 0: up to 1), in whatever integer unit the owner
/// records; the owner says how many make one exported unit when it is read
/// ([`Pow2Histogram::family`]). Power-of-two bounds make the bucket an
/// instruction (a leading-zero count) instead of a search.
#[derive(Debug)]
pub struct Pow2Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    /// Values above `2^(N-1)`: the `+Inf` bucket's own share.
    overflow: AtomicU64,
    sum: AtomicU64,
}

impl<const N: usize> Default for Pow2Histogram<N> {
    fn default() -> Self {
        Pow2Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Pow2Histogram<N> {
    pub fn record(&self, value: u64) {
        let index = if value <= 1 {
            0
        } else {
            (u64::BITS - (value - 1).leading_zeros()) as usize
        };
        self.buckets
            .get(index)
            .unwrap_or(&self.overflow)
            .fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The histogram as a Prometheus family, `per_unit` recorded units making
    /// one exported unit (1e6 for microseconds exported as seconds: dividing
    /// keeps bounds like `0.001024` exact in decimal). The count is the sum
    /// of the buckets read, so the exposition stays consistent (`+Inf` =
    /// `_count`) while writers keep recording.
    pub fn family(&self, desc: &Desc, per_unit: f64) -> MetricFamily {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(N);
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound((1u64 << i) as f64 / per_unit);
            b.set_cumulative_count(cumulative);
            buckets.push(b);
        }
        let count = cumulative + self.overflow.load(Ordering::Relaxed);
        let mut histogram = proto::Histogram::default();
        histogram.set_sample_count(count);
        histogram.set_sample_sum(self.sum.load(Ordering::Relaxed) as f64 / per_unit);
        histogram.set_bucket(buckets);
        let mut metric = proto::Metric::default();
        metric.set_histogram(histogram);
        let mut family = MetricFamily::default();
        family.set_name(desc.fq_name.clone());
        family.set_help(desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        family
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
    /// Shared with [`Metrics`], which observes into it; here only to be
    /// exported and pruned of deleted channels.
    end_to_end: HistogramVec,
    backpressure: IntGaugeVec,
    store_fsync_histogram: Desc,
    store_batch_histogram: Desc,
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

fn histogram_desc(name: &str, help: &str) -> Desc {
    Desc::new(name.to_owned(), help.to_owned(), Vec::new(), HashMap::new()).expect("valid metric")
}

impl BrokerCollector {
    fn new(broker: Weak<Broker>, end_to_end: HistogramVec) -> BrokerCollector {
        const TC: &[&str] = &["topic", "channel"];
        BrokerCollector {
            broker,
            scrape: Mutex::new(()),
            end_to_end,
            backpressure: IntGaugeVec::new(
                Opts::new(
                    "triage_consumers_backpressure",
                    "Consumers of a channel at each BACKPRESSURE level (0 normal, 1 degraded, 2 overloaded).",
                ),
                &["topic", "channel", "level"],
            )
            .expect("valid metric"),
            store_fsync_histogram: histogram_desc(
                "triage_store_fsync_seconds",
                "Duration of WAL fsyncs (a synced write timed whole).",
            ),
            store_batch_histogram: histogram_desc(
                "triage_store_batch_messages",
                "Messages appended per store write, for writes that append any (group commit size).",
            ),
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

    fn vecs(&self) -> [&dyn Collector; 21] {
        [
            &self.end_to_end,
            &self.backpressure,
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
        self.backpressure.reset();
        let mut live = HashSet::new();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        for topic in broker.topics() {
            let tier = topic.tier();
            self.published
                .with_label_values(&[topic.name.as_str(), tier.as_str()])
                .inc_by(load(&topic.message_count));
            // A topic changed from delayed to memory may still have entries
            // pending in the delayed tier: they come out when due.
            let delayed_pending = broker.delayed.pending_total(&topic.name);
            if tier != Tier::Memory || delayed_pending > 0 {
                self.delayed_pending
                    .with_label_values(&[topic.name.as_str()])
                    .set(i64::try_from(delayed_pending).unwrap_or(i64::MAX));
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
                let tct = [topic.name.as_str(), channel.name.as_str(), tier.as_str()];
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
                let mut levels = [0i64; BACKPRESSURE_LEVELS.len()];
                for client in &snapshot.clients {
                    let level = usize::from(client.backpressure());
                    levels[level.min(levels.len() - 1)] += 1;
                }
                for (level, count) in BACKPRESSURE_LEVELS.iter().zip(levels) {
                    self.backpressure
                        .with_label_values(&[topic.name.as_str(), channel.name.as_str(), level])
                        .set(count);
                }
                live.insert(tct.map(str::to_owned));
            }
        }
        self.prune_end_to_end(&live);
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

    /// Drops the end-to-end series of channels that are gone, so a deleted
    /// channel disappears from `/metrics` as its other series do.
    fn prune_end_to_end(&self, live: &HashSet<[String; 3]>) {
        for family in self.end_to_end.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                let key = ["topic", "channel", "tier"]
                    .map(|name| labels.get(name).copied().unwrap_or_default());
                if !live.contains(&key.map(str::to_owned)) {
                    let _ = self.end_to_end.remove_label_values(&key);
                }
            }
        }
    }
}

impl Collector for BrokerCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs: Vec<&Desc> = self.vecs().into_iter().flat_map(Collector::desc).collect();
        descs.push(&self.store_fsync_histogram);
        descs.push(&self.store_batch_histogram);
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self
            .scrape
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let broker = self.broker.upgrade();
        if let Some(broker) = &broker {
            self.refill(broker);
        }
        let mut families: Vec<MetricFamily> = self
            .vecs()
            .into_iter()
            .flat_map(Collector::collect)
            .collect();
        if let Some(broker) = &broker {
            let store = &broker.store;
            // Recorded in microseconds and in messages.
            families.push(
                store
                    .fsync_histogram()
                    .family(&self.store_fsync_histogram, 1e6),
            );
            families.push(
                store
                    .batch_histogram()
                    .family(&self.store_batch_histogram, 1.0),
            );
        }
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow2_buckets_hold_values_up_to_their_bound() {
        let histogram = Pow2Histogram::<4>::default();
        // Bounds 1, 2, 4, 8; 9 and above only in +Inf.
        for value in [0, 1, 2, 3, 4, 5, 8, 9, 1000] {
            histogram.record(value);
        }
        let desc = histogram_desc("h", "H.");
        let family = histogram.family(&desc, 1.0);
        let h = family.get_metric()[0].get_histogram();
        let buckets: Vec<(f64, u64)> = h
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(buckets, [(1.0, 2), (2.0, 3), (4.0, 5), (8.0, 7)]);
        assert_eq!(h.get_sample_count(), 9);
        assert_eq!(h.get_sample_sum(), 1032.0);

        let seconds = histogram.family(&desc, 1e6);
        let bounds: Vec<String> = seconds.get_metric()[0]
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| b.upper_bound().to_string())
            .collect();
        assert_eq!(bounds, ["0.000001", "0.000002", "0.000004", "0.000008"]);
    }
}
