//! Overload scenario: urgent end-to-end latency while non-core work
//! overloads a worker ten times over, with graceful degradation off and on.
//!
//! A triage broker runs in this process (urgent topic memory-tier, normal
//! topic persistent). One worker consumes both with the library's
//! [`Consumer`]: every message runs a 1 ms core step and, while the worker is
//! at level 0, a 20 ms non-core step (skipped, as if deferred, when degraded).
//! Normal messages arrive at ten times what the worker can handle with the
//! non-core step on; urgent ones at a steady trickle. The urgent latency is
//! from the broker's publish timestamp to the end of handling.
//!
//! ```sh
//! cargo run -p triage-worker --example overload            # 10 s per mode
//! cargo run -p triage-worker --example overload -- 20      # seconds per mode
//! ```
//! Debug builds are fine for the comparison; the absolute figures are a
//! shared, noisy machine's.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use triage_broker::Server;
use triage_config::{BrokerConfig, Tier, TierRule};
use triage_worker::latency::percentile;
use triage_worker::{
    Consumer, ConsumerConfig, DegradeConfig, Delivery, HandlerError, Level, Priority, Subscription,
};

const CONCURRENCY: usize = 8;
const CORE: Duration = Duration::from_millis(1);
const NONCORE: Duration = Duration::from_millis(20);
const URGENT_PER_SEC: u64 = 50;
const OVERLOAD: u64 = 10;
const TICK: Duration = Duration::from_millis(10);

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[derive(Debug)]
struct Outcome {
    p50: Duration,
    p99: Duration,
    urgent: usize,
    normal: u64,
    transitions: u64,
}

async fn run(seconds: u64, degrade: bool) -> Outcome {
    let data = tempfile::tempdir().unwrap();
    let broker = Server::start(BrokerConfig {
        tcp_address: "127.0.0.1:0".parse().unwrap(),
        http_address: "127.0.0.1:0".parse().unwrap(),
        data_path: data.path().to_path_buf(),
        tier_rules: vec![TierRule {
            pattern: "bench.urgent".to_owned(),
            tier: Tier::Memory,
            settings: Default::default(),
        }],
        ..BrokerConfig::default()
    })
    .await
    .unwrap();

    let urgent_latency = Arc::new(Mutex::new(Vec::new()));
    let normal_done = Arc::new(AtomicU64::new(0));
    let handler = {
        let (urgent_latency, normal_done) = (urgent_latency.clone(), normal_done.clone());
        move |delivery: Delivery| {
            let (urgent_latency, normal_done) = (urgent_latency.clone(), normal_done.clone());
            async move {
                tokio::time::sleep(CORE).await;
                if delivery.level == Level::Normal {
                    tokio::time::sleep(NONCORE).await;
                }
                if &*delivery.topic == "bench.urgent" {
                    let nanos = unix_nanos().saturating_sub(delivery.message.timestamp_ns);
                    let latency = Duration::from_nanos(u64::try_from(nanos).unwrap_or(0));
                    urgent_latency.lock().unwrap().push(latency);
                } else {
                    normal_done.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), HandlerError>(())
            }
        }
    };
    let degrade = if degrade {
        DegradeConfig {
            // Past the core step alone, below core plus non-core.
            threshold: Duration::from_millis(10),
            overload_threshold: Duration::from_secs(1),
            recover_below: Duration::from_millis(5),
            hold: Duration::from_secs(3600),
        }
    } else {
        DegradeConfig {
            threshold: Duration::from_secs(3600),
            overload_threshold: Duration::from_secs(7200),
            recover_below: Duration::from_secs(1800),
            hold: Duration::from_secs(3600),
        }
    };
    let worker = Consumer::new(
        ConsumerConfig {
            address: Some(broker.tcp_addr.to_string()),
            concurrency: CONCURRENCY,
            degrade,
            ..ConsumerConfig::default()
        },
        handler,
    )
    .unwrap();
    for (topic, priority, max_in_flight) in [
        ("bench.urgent", Priority::Urgent, 8),
        ("bench.normal", Priority::Normal, 32),
    ] {
        worker
            .subscribe_with(Subscription::new(topic, "w", max_in_flight).with_priority(priority))
            .await
            .unwrap();
    }

    // Capacity with the non-core step on: CONCURRENCY messages per (CORE + NONCORE).
    let capacity = CONCURRENCY as f64 / (CORE + NONCORE).as_secs_f64();
    let normal_per_tick = ((capacity * OVERLOAD as f64) * TICK.as_secs_f64()).ceil() as usize;
    let urgent_every = Duration::from_secs(1) / URGENT_PER_SEC as u32;
    let mut tick = tokio::time::interval(TICK);
    let mut next_urgent = tokio::time::Instant::now();
    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while tokio::time::Instant::now() < end {
        tick.tick().await;
        let batch = vec![Bytes::from_static(b"ticket"); normal_per_tick];
        broker
            .broker
            .publish("bench.normal", batch, None)
            .await
            .unwrap();
        while tokio::time::Instant::now() >= next_urgent {
            broker
                .broker
                .publish("bench.urgent", vec![Bytes::from_static(b"urgent")], None)
                .await
                .unwrap();
            next_urgent += urgent_every;
        }
    }
    let transitions = worker.transitions();
    drop(worker);
    broker.shutdown().await;

    let mut latencies = urgent_latency.lock().unwrap().clone();
    Outcome {
        urgent: latencies.len(),
        p50: percentile(&mut latencies, 0.5).unwrap_or_default(),
        p99: percentile(&mut latencies, 0.99).unwrap_or_default(),
        normal: normal_done.load(Ordering::Relaxed),
        transitions,
    }
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map_or(10, |s| s.parse().expect("seconds per mode, e.g. 10"));
    let capacity = CONCURRENCY as f64 / (CORE + NONCORE).as_secs_f64();
    println!(
        "normal: {:.0}/s ({OVERLOAD}x the ~{capacity:.0}/s the worker handles with its non-core step), \
         urgent: {URGENT_PER_SEC}/s, {seconds} s per mode, concurrency {CONCURRENCY}",
        capacity * OVERLOAD as f64
    );
    for degrade in [false, true] {
        let o = run(seconds, degrade).await;
        println!(
            "degradation {:3}: urgent p50 {:7.1} ms, p99 {:7.1} ms ({} urgent handled); {} normal handled; {} transitions",
            if degrade { "on" } else { "off" },
            o.p50.as_secs_f64() * 1e3,
            o.p99.as_secs_f64() * 1e3,
            o.urgent,
            o.normal,
            o.transitions,
        );
    }
}
