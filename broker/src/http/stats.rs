//! `/ping`, `/info` and `/stats`, the last in nsqd's JSON shape (nsqadmin,
//! nsq_stat and nsq_exporter read it) plus a `tier` field per topic; and
//! `/metrics`, the same state for Prometheus (see [`crate::metrics`]).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::{json, text, Params};
use crate::broker::Broker;
use crate::channel::Channel;
use crate::topic::Topic;

pub async fn ping() -> Response {
    text("OK")
}

#[derive(Serialize)]
struct Info<'a> {
    version: &'a str,
    broadcast_address: &'a str,
    hostname: &'a str,
    http_port: u16,
    tcp_port: u16,
    start_time: i64,
    max_heartbeat_interval: u128,
    max_output_buffer_size: u64,
    max_output_buffer_timeout: u128,
    max_deflate_level: u32,
}

pub async fn info(State(broker): State<Arc<Broker>>) -> Response {
    let config = &broker.config;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    json(&Info {
        version: crate::VERSION,
        broadcast_address: &config.broadcast_address,
        hostname: hostname.trim(),
        http_port: config.http_address.port(),
        tcp_port: config.tcp_address.port(),
        start_time: broker.start_time,
        // nsqd reports durations as Go's time.Duration: nanoseconds.
        max_heartbeat_interval: config.max_heartbeat_interval.as_nanos(),
        max_output_buffer_size: config.max_output_buffer_size,
        max_output_buffer_timeout: config.max_output_buffer_timeout.as_nanos(),
        max_deflate_level: config.max_deflate_level,
    })
}

#[derive(Serialize)]
pub struct Stats {
    pub version: &'static str,
    pub health: &'static str,
    pub start_time: i64,
    pub topics: Vec<TopicStats>,
    pub producers: Vec<serde_json::Value>,
}

#[derive(Serialize)]
pub struct TopicStats {
    pub topic_name: String,
    /// Extension: the topic's delivery tier.
    pub tier: &'static str,
    pub channels: Vec<ChannelStats>,
    pub depth: u64,
    pub backend_depth: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    /// Extension: deferred publishes waiting in the delayed tier.
    pub delayed_count: u64,
    pub paused: bool,
    pub e2e_processing_latency: Latency,
}

#[derive(Serialize)]
pub struct ChannelStats {
    pub channel_name: String,
    pub depth: u64,
    pub backend_depth: u64,
    pub in_flight_count: u64,
    /// Requeued with a delay: in memory plus `delayed_count`.
    pub deferred_count: u64,
    /// Extension: what waits for this channel in the delayed tier: the
    /// topic's deferred publishes and the channel's delayed requeues.
    pub delayed_count: u64,
    pub message_count: u64,
    pub requeue_count: u64,
    pub timeout_count: u64,
    pub client_count: usize,
    pub clients: Vec<ClientStats>,
    pub paused: bool,
    pub e2e_processing_latency: Latency,
}

#[derive(Serialize)]
pub struct ClientStats {
    pub client_id: String,
    pub hostname: String,
    pub version: &'static str,
    pub remote_address: String,
    pub state: i32,
    pub ready_count: u64,
    pub in_flight_count: u64,
    pub message_count: u64,
    pub finish_count: u64,
    pub requeue_count: u64,
    pub connect_ts: i64,
    pub sample_rate: i64,
    pub deflate: bool,
    pub snappy: bool,
    pub user_agent: String,
    pub tls: bool,
    pub tls_cipher_suite: String,
    pub tls_version: &'static str,
    pub tls_negotiated_protocol: &'static str,
    pub tls_negotiated_protocol_is_mutual: bool,
    /// Extension: the client's last `BACKPRESSURE` level (0 normal, 1
    /// degraded, 2 overloaded); 0 for clients that never sent one.
    pub backpressure_level: u8,
}

/// nsqd's shape for a disabled e2e latency percentile.
#[derive(Serialize)]
pub struct Latency {
    pub count: u64,
    pub percentiles: Option<Vec<serde_json::Value>>,
}

const NO_LATENCY: fn() -> Latency = || Latency {
    count: 0,
    percentiles: None,
};

pub fn collect(
    broker: &Broker,
    topic_filter: Option<&str>,
    channel_filter: Option<&str>,
    clients: bool,
) -> Stats {
    let topics = broker
        .topics()
        .into_iter()
        .filter(|t| topic_filter.is_none_or(|f| f == t.name))
        // As nsqd's GetStats: with a channel filter, a topic without that
        // channel is left out rather than listed with no channels.
        .filter(|t| channel_filter.is_none_or(|f| t.existing_channel(f).is_some()))
        .map(|t| topic_stats(broker, &t, channel_filter, clients))
        .collect();
    Stats {
        version: crate::VERSION,
        health: "OK",
        start_time: broker.start_time,
        topics,
        producers: Vec::new(),
    }
}

fn topic_stats(
    broker: &Broker,
    topic: &Topic,
    channel_filter: Option<&str>,
    clients: bool,
) -> TopicStats {
    let snapshot = topic.snapshot();
    TopicStats {
        topic_name: topic.name.clone(),
        tier: topic.tier().as_str(),
        channels: snapshot
            .channels
            .iter()
            .filter(|c| channel_filter.is_none_or(|f| f == c.name))
            .map(|c| channel_stats(broker, c, clients))
            .collect(),
        depth: snapshot.depth,
        backend_depth: 0,
        message_count: topic.message_count.load(Ordering::Relaxed),
        message_bytes: topic.message_bytes.load(Ordering::Relaxed),
        delayed_count: broker.delayed.pending_for_topic(&topic.name),
        paused: snapshot.paused,
        e2e_processing_latency: NO_LATENCY(),
    }
}

fn channel_stats(broker: &Broker, channel: &Channel, include_clients: bool) -> ChannelStats {
    let snapshot = channel.snapshot();
    // A deferred publish waits once, at the topic, but is deferred for every
    // channel (as nsqd counts it); a delayed requeue for its channel only.
    let requeued = broker
        .delayed
        .pending_for_channel(&channel.topic_name, &channel.name);
    let delayed = requeued + broker.delayed.pending_for_topic(&channel.topic_name);
    let clients = if include_clients {
        snapshot
            .clients
            .iter()
            .map(|c| {
                let identity = c.identity();
                ClientStats {
                    client_id: identity.client_id,
                    hostname: identity.hostname,
                    version: "V2",
                    remote_address: c.remote_addr.to_string(),
                    // nsqd's stateSubscribed.
                    state: 3,
                    ready_count: c.ready_count.load(Ordering::Relaxed),
                    in_flight_count: c.in_flight.load(Ordering::Relaxed),
                    message_count: c.message_count.load(Ordering::Relaxed),
                    finish_count: c.finish_count.load(Ordering::Relaxed),
                    requeue_count: c.requeue_count.load(Ordering::Relaxed),
                    connect_ts: c.connect_ts,
                    sample_rate: identity.sample_rate,
                    deflate: identity.deflate,
                    snappy: identity.snappy,
                    user_agent: identity.user_agent,
                    tls: identity.tls.is_some(),
                    tls_cipher_suite: identity
                        .tls
                        .as_ref()
                        .map(|t| t.cipher_suite.clone())
                        .unwrap_or_default(),
                    tls_version: identity.tls.as_ref().map_or("", |t| t.version),
                    tls_negotiated_protocol: "",
                    tls_negotiated_protocol_is_mutual: identity
                        .tls
                        .as_ref()
                        .is_some_and(|t| t.client_certificate),
                    backpressure_level: c.backpressure(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    ChannelStats {
        channel_name: channel.name.clone(),
        depth: snapshot.depth,
        backend_depth: snapshot.backend_depth,
        in_flight_count: snapshot.in_flight,
        deferred_count: snapshot.deferred + delayed,
        delayed_count: delayed,
        message_count: channel.counters.message_count.load(Ordering::Relaxed),
        requeue_count: channel.counters.requeue_count.load(Ordering::Relaxed),
        timeout_count: channel.counters.timeout_count.load(Ordering::Relaxed),
        client_count: snapshot.clients.len(),
        clients,
        paused: snapshot.paused,
        e2e_processing_latency: NO_LATENCY(),
    }
}

pub async fn stats(State(broker): State<Arc<Broker>>, Query(params): Query<Params>) -> Response {
    let include_clients = params.get("include_clients").is_none_or(|v| v != "false");
    let stats = collect(
        &broker,
        params.get("topic").map(String::as_str),
        params.get("channel").map(String::as_str),
        include_clients,
    );
    if params.get("format").is_some_and(|f| f == "json") {
        return json(&stats);
    }
    let mut out = format!(
        "triaged v{}\nstart_time {}\n\nHealth: OK\n\n",
        stats.version, stats.start_time
    );
    if stats.topics.is_empty() {
        out.push_str("\nNO_TOPICS\n");
    }
    for topic in &stats.topics {
        let _ = writeln!(
            out,
            "[{:<25}] tier: {} depth: {:<5} msgs: {:<8} paused: {}",
            topic.topic_name, topic.tier, topic.depth, topic.message_count, topic.paused
        );
        for channel in &topic.channels {
            let _ = writeln!(
                out,
                "    [{:<25}] depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} clients: {} paused: {}",
                channel.channel_name,
                channel.depth,
                channel.in_flight_count,
                channel.deferred_count,
                channel.requeue_count,
                channel.timeout_count,
                channel.message_count,
                channel.client_count,
                channel.paused
            );
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response()
}

/// `GET /metrics`: Prometheus text exposition format.
pub async fn metrics(State(broker): State<Arc<Broker>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            crate::metrics::Metrics::content_type(),
        )],
        broker.metrics.render(),
    )
        .into_response()
}
