//! `GET /metrics` against an in-process broker: messages flow over TCP
//! (PUB, delivery, FIN, REQ, a timeout) and the counters and gauges for that
//! topic and channel show exactly what happened, the depth gauges agree with
//! `/stats`, and every line of the output is valid Prometheus text
//! exposition format (the stand-in for `promtool check metrics`).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use common::{start_broker, Client};
use triage_protocol::Command;

const DEADLINE: Duration = Duration::from_secs(10);

/// One `GET` over a fresh connection; returns (status, content type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let raw = tokio::time::timeout(DEADLINE, exchange).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "the test client reads only plain bodies"
    );
    (status, content_type, body.to_owned())
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `{a="x",b="y"}` (escapes `\\`, `\"`, `\n`) into a map; `None` if malformed.
fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (name, after) = rest.split_once("=\"")?;
        if !is_label_name(name) {
            return None;
        }
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return None,
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return None;
        }
        rest = &after[end + 1..];
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return None,
        };
    }
    Some(labels)
}

/// Parses the whole exposition, panicking with the offending line on
/// anything `promtool check metrics` would reject: a malformed line, a
/// sample without `# HELP` and `# TYPE` before it, a family split in two, a
/// duplicate series, a counter not named `_total`, or a histogram whose
/// buckets are not cumulative or do not end in `+Inf` = `_count`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    let mut help: HashSet<String> = HashSet::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished_families: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines");
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let kind = parts.next().unwrap();
            let name = parts
                .next()
                .unwrap_or_else(|| panic!("bad comment: {line}"));
            assert!(is_metric_name(name), "bad metric name: {line}");
            let rest = parts
                .next()
                .unwrap_or_else(|| panic!("empty {kind}: {line}"));
            match kind {
                "HELP" => assert!(help.insert(name.to_owned()), "second HELP: {line}"),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                        "bad type: {line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), rest.to_owned()).is_none(),
                        "second TYPE: {line}"
                    );
                    if rest == "counter" {
                        assert!(name.ends_with("_total"), "counter without _total: {line}");
                    }
                }
                _ => panic!("unknown comment: {line}"),
            }
            if current.as_deref() != Some(name) {
                if let Some(previous) = current.replace(name.to_owned()) {
                    finished_families.insert(previous);
                }
                assert!(!finished_families.contains(name), "family split: {line}");
            }
            continue;
        }
        let (series_part, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = parse_value(value).unwrap_or_else(|| panic!("bad value: {line}"));
        let (name, labels) = match series_part.split_once('{') {
            Some((name, labels)) => {
                let labels = labels
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                (
                    name,
                    parse_labels(labels).unwrap_or_else(|| panic!("bad labels: {line}")),
                )
            }
            None => (series_part, BTreeMap::new()),
        };
        assert!(is_metric_name(name), "bad metric name: {line}");
        let family = current
            .as_deref()
            .unwrap_or_else(|| panic!("sample before HELP/TYPE: {line}"));
        let kind = &types[family];
        let belongs = name == family
            || (kind == "histogram"
                && [
                    format!("{family}_bucket"),
                    format!("{family}_sum"),
                    format!("{family}_count"),
                ]
                .iter()
                .any(|n| n == name));
        assert!(belongs, "sample outside its family {family}: {line}");
        assert!(help.contains(family), "no HELP for {family}");
        if name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        assert!(
            series.insert(format!("{name}{labels:?}")),
            "duplicate series: {line}"
        );
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    for (family, kind) in &types {
        assert!(help.contains(family), "TYPE without HELP: {family}");
        if kind == "histogram" {
            check_histogram(family, &samples);
        }
    }
    samples
}

fn check_histogram(family: &str, samples: &[Sample]) {
    let bucket = format!("{family}_bucket");
    let count = format!("{family}_count");
    for total in samples.iter().filter(|s| s.name == count) {
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter(|s| {
                let mut l = s.labels.clone();
                l.remove("le");
                l == total.labels
            })
            .map(|s| (parse_value(&s.labels["le"]).unwrap(), s.value))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family}: buckets not cumulative"
        );
        let last = buckets.last().unwrap();
        assert!(last.0.is_infinite(), "{family}: no +Inf bucket");
        assert_eq!(last.1, total.value, "{family}: +Inf bucket != _count");
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "content type {content_type}"
    );
    parse_exposition(&body)
}

async fn stats_json(addr: SocketAddr) -> Value {
    let (status, _, body) = get(addr, "/stats?format=json").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Scrapes until `check` holds on a scrape, failing after [`DEADLINE`].
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&[Sample]) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check(&scrape(addr).await) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post(addr: SocketAddr, path: &str) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let raw = tokio::time::timeout(DEADLINE, exchange).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "POST {path}: {raw}");
}

#[tokio::test]
async fn counters_and_gauges_follow_the_traffic() {
    let broker = start_broker(|_| {}).await;
    let http = broker.server.http_addr;
    let (topic, ch) = ("metrics_flow", "workers");
    let tc: &[(&str, &str)] = &[("topic", topic), ("channel", ch)];

    // A second channel that nobody consumes from holds every message.
    post(http, &format!("/channel/create?topic={topic}&channel=idle")).await;
    let mut consumer = broker.connect().await;
    consumer.identify_ok(json!({ "msg_timeout": 1000 })).await;
    consumer.sub(topic, ch).await;

    broker
        .publish_all(topic, (0..5).map(|i| format!("m{i}")))
        .await;
    consumer.rdy(5).await;
    let msgs = consumer.read_messages(5).await;
    // No more deliveries: what is requeued or times out stays queued.
    consumer.rdy(0).await;
    consumer.fin(&msgs[0].id).await;
    consumer.fin(&msgs[1].id).await;
    consumer.req(&msgs[2].id, 60_000).await;
    // msgs[3] and msgs[4] time out after one second.

    scrape_until(http, "two timeouts", |s| {
        value(s, "triage_messages_timed_out_total", tc) == Some(2.0)
    })
    .await;
    let s = scrape(http).await;
    let tier = stats_json(http).await["topics"][0]["tier"]
        .as_str()
        .unwrap()
        .to_owned();
    let tct: &[(&str, &str)] = &[("topic", topic), ("channel", ch), ("tier", &tier)];
    let idle: &[(&str, &str)] = &[("topic", topic), ("channel", "idle"), ("tier", &tier)];

    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&s, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}"))
    };
    let published = [("topic", topic), ("tier", tier.as_str())];
    assert_eq!(get("triage_messages_published_total", &published), 5.0);
    assert_eq!(get("triage_messages_delivered_total", tc), 5.0);
    assert_eq!(get("triage_messages_finished_total", tc), 2.0);
    assert_eq!(get("triage_messages_requeued_total", tc), 1.0);
    assert_eq!(get("triage_messages_timed_out_total", tc), 2.0);
    assert_eq!(get("triage_channel_depth", tct), 2.0);
    assert_eq!(get("triage_channel_in_flight", tct), 0.0);
    assert_eq!(get("triage_channel_deferred", tct), 1.0);
    // The REQ with a delay waits in the delayed tier (a persistent topic).
    if tier == "persistent" {
        assert_eq!(get("triage_delayed_pending", &[("topic", topic)]), 1.0);
    }
    assert_eq!(get("triage_channel_backend_depth", tct), 0.0);
    assert_eq!(get("triage_channel_consumers", tct), 1.0);
    assert_eq!(get("triage_channel_depth", idle), 5.0);
    assert_eq!(get("triage_channel_consumers", idle), 0.0);
    let idle_tc = [("topic", topic), ("channel", "idle")];
    assert_eq!(get("triage_messages_delivered_total", &idle_tc), 0.0);
    // Five PUBs, each observed once in its tier's histogram.
    assert_eq!(
        get("triage_publish_seconds_count", &[("tier", tier.as_str())]),
        5.0
    );

    // The depth gauges say what /stats says.
    let stats = stats_json(http).await;
    let topic_stats = &stats["topics"][0];
    assert_eq!(topic_stats["topic_name"], topic);
    for channel in topic_stats["channels"].as_array().unwrap() {
        let name = channel["channel_name"].as_str().unwrap();
        let labels = [("topic", topic), ("channel", name), ("tier", tier.as_str())];
        for (metric, field) in [
            ("triage_channel_depth", "depth"),
            ("triage_channel_in_flight", "in_flight_count"),
            ("triage_channel_deferred", "deferred_count"),
            ("triage_channel_backend_depth", "backend_depth"),
        ] {
            assert_eq!(
                get(metric, &labels),
                channel[field].as_f64().unwrap(),
                "{metric} vs /stats {field} for {name}"
            );
        }
        let counters = [("topic", topic), ("channel", name)];
        assert_eq!(
            get("triage_messages_requeued_total", &counters),
            channel["requeue_count"].as_f64().unwrap()
        );
        assert_eq!(
            get("triage_messages_timed_out_total", &counters),
            channel["timeout_count"].as_f64().unwrap()
        );
    }

    // Bounds and store figures are there for dashboards.
    let config = &broker.broker().config;
    assert_eq!(
        get("triage_config_mem_queue_size", &[]),
        config.mem_queue_size as f64
    );
    assert_eq!(
        get("triage_config_max_rdy_count", &[]),
        config.max_rdy_count as f64
    );
    assert_eq!(
        get("triage_config_max_msg_size", &[]),
        f64::from(config.max_msg_size)
    );
    assert_eq!(
        get("triage_config_max_connections", &[]),
        config.max_connections as f64
    );
    assert!(get("triage_store_queue_capacity", &[]) > 0.0);
    for name in [
        "triage_store_fsyncs_total",
        "triage_store_fsync_seconds_total",
        "triage_store_batches_total",
        "triage_store_write_errors_total",
        "triage_store_queue_depth",
    ] {
        get(name, &[]);
    }

    // The producer's connection has gone; the consumer's is still open.
    scrape_until(http, "one client", |s| {
        value(s, "triage_clients", &[]) == Some(1.0)
    })
    .await;

    // A deleted channel's series go with it.
    post(http, &format!("/channel/delete?topic={topic}&channel=idle")).await;
    let s = scrape(http).await;
    assert!(
        !s.iter()
            .any(|x| x.labels.get("channel").map(String::as_str) == Some("idle")),
        "deleted channel still exported"
    );
    assert_eq!(value(&s, "triage_channel_depth", tct), Some(2.0));

    drop(consumer);
    broker.shutdown().await;
}

#[tokio::test]
async fn labels_are_bounded_and_values_escaped() {
    let broker = start_broker(|_| {}).await;
    let http = broker.server.http_addr;
    let mut consumer = broker.consumer("bounded", "c#ephemeral", 10).await;
    broker.publish_all("bounded", ["a", "b", "c"]).await;
    for msg in consumer.read_messages(3).await {
        consumer.fin(&msg.id).await;
    }
    let tc: &[(&str, &str)] = &[("topic", "bounded"), ("channel", "c#ephemeral")];
    scrape_until(http, "three FINs", |s| {
        value(s, "triage_messages_finished_total", tc) == Some(3.0)
    })
    .await;
    let s = scrape(http).await;
    // `reason` takes only the values of DISCONNECT_REASONS (checked below).
    let allowed: HashSet<&str> = ["topic", "channel", "tier", "le", "level", "reason"].into();
    for sample in &s {
        for label in sample.labels.keys() {
            assert!(
                allowed.contains(label.as_str()),
                "unbounded label {label} on {}",
                sample.name
            );
        }
        if let Some(reason) = sample.labels.get("reason") {
            assert!(
                triage_broker::metrics::DISCONNECT_REASONS.contains(&reason.as_str()),
                "{reason}"
            );
        }
    }
    drop(consumer);
    broker.shutdown().await;
}

#[test]
fn the_parser_rejects_what_promtool_rejects() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{topic=\"t\\\"x\"} 3\n";
    assert_eq!(parse_exposition(ok)[0].labels["topic"], "t\"x");
    for bad in [
        "a_total 3\n",                                                     // no HELP/TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{topic=t} 3\n", // unquoted
        "# HELP a A.\n# TYPE a counter\na 3\n",                            // counter without _total
        "# HELP a A.\n# TYPE a gauge\na x\n",                              // bad value
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",                         // duplicate series
    ] {
        let result = std::panic::catch_unwind(|| parse_exposition(bad));
        assert!(result.is_err(), "accepted {bad:?}");
    }
}

/// A broker without traffic still serves a valid, non-empty exposition.
#[tokio::test]
async fn an_idle_broker_exports_its_bounds() {
    let broker = start_broker(|c| c.mem_queue_size = 1234).await;
    let s = scrape(broker.server.http_addr).await;
    assert_eq!(value(&s, "triage_config_mem_queue_size", &[]), Some(1234.0));
    assert_eq!(value(&s, "triage_clients", &[]), Some(0.0));
    broker.shutdown().await;
}

#[tokio::test]
async fn end_to_end_counts_each_fin_and_goes_with_its_channel() {
    let broker = start_broker(|_| {}).await;
    let http = broker.server.http_addr;
    let (topic, ch) = ("e2e", "workers");
    let mut consumer = broker.consumer(topic, ch, 10).await;
    broker.publish_all(topic, ["a", "b", "c"]).await;
    let msgs = consumer.read_messages(3).await;
    consumer.fin(&msgs[0].id).await;
    consumer.fin(&msgs[1].id).await;
    // The third is requeued, not finished: it must not be counted.
    consumer.req(&msgs[2].id, 60_000).await;

    let tier = stats_json(http).await["topics"][0]["tier"]
        .as_str()
        .unwrap()
        .to_owned();
    let tct: &[(&str, &str)] = &[("topic", topic), ("channel", ch), ("tier", &tier)];
    scrape_until(http, "two end-to-end observations", |s| {
        value(s, "triage_end_to_end_seconds_count", tct) == Some(2.0)
    })
    .await;
    let s = scrape(http).await;
    let sum = value(&s, "triage_end_to_end_seconds_sum", tct).unwrap();
    assert!(sum >= 0.0, "sum {sum}");
    // Both FINs came well within the largest finite bucket (an hour).
    let mut bounded = tct.to_vec();
    bounded.push(("le", "3600"));
    assert_eq!(
        value(&s, "triage_end_to_end_seconds_bucket", &bounded),
        Some(2.0)
    );

    drop(consumer);
    post(http, &format!("/channel/delete?topic={topic}&channel={ch}")).await;
    scrape_until(http, "the deleted channel's end-to-end series gone", |s| {
        !s.iter()
            .any(|x| x.name.starts_with("triage_end_to_end_seconds"))
    })
    .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn backpressure_levels_are_counted_per_channel_and_shown_in_stats() {
    let broker = start_broker(|_| {}).await;
    let http = broker.server.http_addr;
    let (topic, ch) = ("loaded", "workers");
    let calm = broker.consumer(topic, ch, 1).await;
    let mut degraded = broker.consumer(topic, ch, 1).await;
    degraded.send(&Command::Backpressure(1)).await;
    degraded.expect_ok().await;
    let mut overloaded = broker.consumer(topic, ch, 1).await;
    overloaded.send(&Command::Backpressure(2)).await;
    overloaded.expect_ok().await;

    let at = |level: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("topic", topic), ("channel", ch), ("level", level)]
    };
    let s = scrape(http).await;
    assert_eq!(
        value(&s, "triage_consumers_backpressure", &at("0")),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "triage_consumers_backpressure", &at("1")),
        Some(1.0)
    );
    assert_eq!(
        value(&s, "triage_consumers_backpressure", &at("2")),
        Some(1.0)
    );

    // Each level change was also published on `_triage.backpressure`.
    let stats = stats_json(http).await;
    let loaded = stats["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == topic)
        .unwrap();
    let clients = loaded["channels"][0]["clients"].as_array().unwrap();
    let mut levels: Vec<u64> = clients
        .iter()
        .map(|c| c["backpressure_level"].as_u64().unwrap())
        .collect();
    levels.sort_unstable();
    assert_eq!(levels, [0, 1, 2]);

    // Back to normal, and a consumer gone: the gauges follow.
    overloaded.send(&Command::Backpressure(0)).await;
    overloaded.expect_ok().await;
    drop(degraded);
    scrape_until(http, "two consumers at level 0, none above", |s| {
        value(s, "triage_consumers_backpressure", &at("0")) == Some(2.0)
            && value(s, "triage_consumers_backpressure", &at("1")) == Some(0.0)
            && value(s, "triage_consumers_backpressure", &at("2")) == Some(0.0)
    })
    .await;
    drop((calm, overloaded));
    broker.shutdown().await;
}

#[tokio::test]
async fn store_histograms_count_fsyncs_and_batch_sizes() {
    let broker = start_broker(|_| {}).await;
    let http = broker.server.http_addr;
    // Persistent (the default tier): each PUB is a durable, fsynced write.
    broker
        .publish_all("durable", ["a", "b", "c", "d", "e"])
        .await;
    let mut producer = broker.connect().await;
    producer
        .mpub("durable", vec!["f".into(), "g".into(), "h".into()])
        .await;
    let s = scrape(http).await;
    let fsyncs = value(&s, "triage_store_fsyncs_total", &[]).unwrap();
    let count = value(&s, "triage_store_fsync_seconds_count", &[]).unwrap();
    assert!(count >= 1.0, "no fsync recorded");
    assert_eq!(count, fsyncs, "one observation per fsync");
    let fsync_seconds = value(&s, "triage_store_fsync_seconds_sum", &[]).unwrap();
    let total = value(&s, "triage_store_fsync_seconds_total", &[]).unwrap();
    // The same fsyncs, timed once, summed in two units: micro- and nanoseconds.
    assert!(
        (fsync_seconds - total).abs() <= 1e-6 * count,
        "{fsync_seconds} vs {total}"
    );
    // Eight messages appended, in at most as many writes; the MPUB's three
    // went together, so at least one write held three or more.
    assert_eq!(value(&s, "triage_store_batch_messages_sum", &[]), Some(8.0));
    let writes = value(&s, "triage_store_batch_messages_count", &[]).unwrap();
    assert!((1.0..=6.0).contains(&writes), "{writes} writes");
    let at_most_two = value(&s, "triage_store_batch_messages_bucket", &[("le", "2")]).unwrap();
    assert!(at_most_two < writes, "the MPUB's write is above le=2");
    broker.shutdown().await;
}

#[tokio::test]
async fn disconnects_are_counted_by_the_limit_that_cut_them_off() {
    let broker = start_broker(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let http = broker.server.http_addr;
    let s = scrape(http).await;
    for reason in triage_broker::metrics::DISCONNECT_REASONS {
        let labels: &[(&str, &str)] = &[("reason", reason)];
        assert_eq!(
            value(&s, "triage_client_disconnects_total", labels),
            Some(0.0),
            "{reason}"
        );
    }
    assert_eq!(
        value(&s, "triage_config_max_line_len", &[]),
        Some(broker.broker().config.max_line_len as f64)
    );

    // Connects and says nothing: cut off at the handshake deadline.
    let mut idle = Client::connect_raw(broker.tcp_addr()).await;
    idle.expect_closed_within(Duration::from_secs(5)).await;
    // A line past max_line_len: a fatal protocol error.
    let mut long = broker.connect().await;
    long.send_raw(format!("PUB {}\n", "x".repeat(2000)).as_bytes())
        .await;
    long.expect_fatal(triage_protocol::ErrorCode::Invalid).await;
    // An ordinary close.
    let mut polite = broker.connect().await;
    polite.assert_alive().await;
    drop(polite);

    let counted = |s: &[Sample], reason: &str| {
        value(s, "triage_client_disconnects_total", &[("reason", reason)]).unwrap_or(0.0)
    };
    scrape_until(http, "three disconnects", |s| {
        counted(s, "handshake_timeout") == 1.0
            && counted(s, "protocol_error") == 1.0
            && counted(s, "closed") == 1.0
    })
    .await;
    broker.shutdown().await;
}
