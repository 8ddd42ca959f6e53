//! The worker library against a real triage broker started in-process: a
//! slow handler drives the controller to degraded and the broker publishes
//! the worker's BACKPRESSURE on `_triage.backpressure`; failures are retried
//! with backoff; shutdown finishes in-flight work; one budget is shared by
//! priority; snappy and deflate work; a lost connection comes back.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use triage_broker::tcp::BACKPRESSURE_EVENTS_TOPIC;
use triage_worker::consumer::Compression;
use triage_worker::{
    Backoff, Consumer, ConsumerConfig, DegradeConfig, Delivery, HandlerError, LatencyWindow, Level,
    Priority, Subscription,
};

mod common;

use common::{bodies, start_broker, start_broker_on, wait_until, TestBroker};

const WAIT: Duration = Duration::from_secs(5);

/// A consumer of `_triage.backpressure` that forwards each event.
async fn event_listener(
    tb: &TestBroker,
) -> (
    Consumer<impl triage_worker::Handler>,
    mpsc::UnboundedReceiver<Value>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |delivery: Delivery| {
        let tx = tx.clone();
        async move {
            let event: Value = serde_json::from_slice(&delivery.message.body)?;
            let _ = tx.send(event);
            Ok::<(), HandlerError>(())
        }
    };
    let listener = Consumer::new(tb.config("listener"), handler).unwrap();
    listener
        .subscribe(BACKPRESSURE_EVENTS_TOPIC, "watch", 10)
        .await
        .unwrap();
    (listener, rx)
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Value>) -> Value {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a backpressure event within 5 s")
        .unwrap()
}

async fn wait_for_level(consumer: &Consumer<impl triage_worker::Handler>, level: Level) {
    let mut watch = consumer.watch_level();
    tokio::time::timeout(WAIT, watch.wait_for(|l| *l == level))
        .await
        .unwrap_or_else(|_| panic!("level {level:?} within 5 s"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_degrades_the_worker_and_the_broker_hears_of_it() {
    let tb = start_broker().await;
    let (listener, mut events) = event_listener(&tb).await;

    let delay_ms = Arc::new(AtomicU64::new(200));
    let handled = Arc::new(Mutex::new(HashSet::new()));
    let handler = {
        let (delay_ms, handled) = (delay_ms.clone(), handled.clone());
        move |delivery: Delivery| {
            let (delay_ms, handled) = (delay_ms.clone(), handled.clone());
            async move {
                let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed));
                tokio::time::sleep(delay).await;
                let body = String::from_utf8(delivery.message.body.to_vec())?;
                handled.lock().unwrap().insert(body);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let config = ConsumerConfig {
        concurrency: 4,
        evaluate_every: Duration::from_millis(20),
        latency_window: LatencyWindow {
            max_samples: 100,
            // Short, so slow samples age out once the handler is fast again.
            max_age: Some(Duration::from_millis(500)),
        },
        degrade: DegradeConfig {
            threshold: Duration::from_millis(100),
            overload_threshold: Duration::from_secs(10),
            recover_below: Duration::from_millis(50),
            hold: Duration::from_millis(300),
        },
        ..tb.config("e2e-worker")
    };
    let worker = Consumer::new(config, handler).unwrap();
    worker.subscribe("tickets", "work", 4).await.unwrap();

    tb.publish("tickets", bodies("slow", 6)).await;
    wait_for_level(&worker, Level::Degraded).await;
    let event = next_event(&mut events).await;
    assert_eq!(event["level"], 1, "{event}");
    assert_eq!(event["client_id"], "e2e-worker");
    assert_eq!(event["hostname"], "test-host");
    assert_eq!(event["topic"], "tickets");
    assert_eq!(event["channel"], "work");

    // Fast again: back to normal after the window empties and `hold` passes.
    delay_ms.store(0, Ordering::Relaxed);
    tb.publish("tickets", bodies("fast", 20)).await;
    wait_for_level(&worker, Level::Normal).await;
    let event = next_event(&mut events).await;
    assert_eq!(event["level"], 0, "{event}");
    assert_eq!(worker.transitions(), 2);

    // Degraded (level 1) still takes persistent-tier work: nothing was held back or lost.
    wait_until("every message is handled", WAIT, || {
        handled.lock().unwrap().len() == 26
    })
    .await;
    worker.shutdown().await.unwrap();
    listener.shutdown().await.unwrap();
    let channel = tb
        .server
        .broker
        .existing_channel("tickets", "work")
        .unwrap()
        .snapshot();
    assert_eq!((channel.depth, channel.in_flight), (0, 0));
    tb.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_requeued_with_backoff_and_retried() {
    let tb = start_broker().await;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let attempts = attempts.clone();
        move |delivery: Delivery| {
            let attempts = attempts.clone();
            async move {
                let n = delivery.message.attempts;
                attempts.lock().unwrap().push(n);
                if n < 3 {
                    return Err::<(), HandlerError>(format!("attempt {n} fails").into());
                }
                Ok(())
            }
        }
    };
    let config = ConsumerConfig {
        backoff: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_secs(1),
        },
        ..tb.config("retrier")
    };
    let worker = Consumer::new(config, handler).unwrap();
    worker.subscribe("jobs", "retry", 1).await.unwrap();
    tb.publish("jobs", ["flaky".to_owned()]).await;
    wait_until("the third attempt succeeds", WAIT, || {
        attempts.lock().unwrap().len() == 3
    })
    .await;
    assert_eq!(*attempts.lock().unwrap(), [1, 2, 3]);
    worker.shutdown().await.unwrap();
    tb.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_work_then_closes() {
    let tb = start_broker().await;
    let started = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicU64::new(0));
    let handler = {
        let (started, finished) = (started.clone(), finished.clone());
        move |_delivery: Delivery| {
            let (started, finished) = (started.clone(), finished.clone());
            async move {
                started.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
                finished.fetch_add(1, Ordering::Relaxed);
                Ok::<(), HandlerError>(())
            }
        }
    };
    let worker = Consumer::new(tb.config("drainer"), handler).unwrap();
    worker.subscribe("orders", "ship", 3).await.unwrap();
    tb.publish("orders", bodies("order", 3)).await;
    wait_until("three handlers run", WAIT, || {
        started.load(Ordering::Relaxed) == 3
    })
    .await;
    worker.shutdown().await.unwrap();
    assert_eq!(finished.load(Ordering::Relaxed), 3);
    let channel = tb.server.broker.existing_channel("orders", "ship").unwrap();
    // The broker sees the close a moment after the worker returns.
    wait_until("the broker sees the worker leave", WAIT, || {
        channel.snapshot().clients.is_empty()
    })
    .await;
    // Every message was FINed before the connection closed: none requeued.
    let snapshot = channel.snapshot();
    assert_eq!((snapshot.depth, snapshot.in_flight), (0, 0));
    tb.server.shutdown().await;
}

/// The RDY the broker has from the (single) consumer of `topic`/`channel`, if any.
fn broker_rdy(tb: &TestBroker, topic: &str, channel: &str) -> Option<u64> {
    let channel = tb.server.broker.existing_channel(topic, channel).ok()?;
    let clients = channel.snapshot().clients;
    clients
        .first()
        .map(|c| c.ready_count.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_budget_is_shared_by_priority_and_batch_stops_first_when_degraded() {
    let tb = start_broker().await;
    let handler = |delivery: Delivery| async move {
        if delivery.message.body.starts_with(b"slow") {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<(), HandlerError>(())
    };
    let config = ConsumerConfig {
        max_in_flight: Some(10),
        evaluate_every: Duration::from_millis(20),
        degrade: DegradeConfig {
            threshold: Duration::from_millis(100),
            overload_threshold: Duration::from_secs(10),
            recover_below: Duration::from_millis(50),
            // Long: the test reads the degraded RDYs before any recovery.
            hold: Duration::from_secs(60),
        },
        ..tb.config("budgeted")
    };
    let worker = Consumer::new(config, handler).unwrap();
    for (topic, priority) in [
        ("urgent", Priority::Urgent),
        ("normal", Priority::Normal),
        ("batch", Priority::Batch),
    ] {
        worker
            .subscribe_with(Subscription::new(topic, "w", 4).with_priority(priority))
            .await
            .unwrap();
    }
    let rdys = || ["urgent", "normal", "batch"].map(|topic| broker_rdy(&tb, topic, "w"));
    // Level 0: urgent and normal get all they ask for, batch what is left of 10.
    wait_until("the broker has the level-0 RDYs", WAIT, || {
        rdys() == [Some(4), Some(4), Some(2)]
    })
    .await;

    tb.publish("normal", bodies("slow", 2)).await;
    wait_for_level(&worker, Level::Degraded).await;
    // Degraded: urgent keeps its RDY, normal halves, batch stops.
    wait_until("the broker has the degraded RDYs", WAIT, || {
        rdys() == [Some(4), Some(2), Some(0)]
    })
    .await;
    let status = worker.status();
    let planned: Vec<u64> = status.rdy().into_iter().map(|(_, rdy)| rdy).collect();
    assert_eq!(planned, [4, 2, 0]);
    worker.shutdown().await.unwrap();
    tb.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snappy_and_deflate_connections_consume_and_finish() {
    for compression in [Compression::Snappy, Compression::Deflate(6)] {
        let tb = start_broker().await;
        let handled = Arc::new(Mutex::new(HashSet::new()));
        let handler = {
            let handled = handled.clone();
            move |delivery: Delivery| {
                let handled = handled.clone();
                async move {
                    handled
                        .lock()
                        .unwrap()
                        .insert(delivery.message.body.to_vec());
                    Ok::<(), HandlerError>(())
                }
            }
        };
        let config = ConsumerConfig {
            compression,
            ..tb.config("compressed")
        };
        let worker = Consumer::new(config, handler).unwrap();
        worker.subscribe("zipped", "w", 8).await.unwrap();
        let channel = tb.server.broker.existing_channel("zipped", "w").unwrap();
        let identity = channel.snapshot().clients[0].identity();
        assert_eq!(
            (identity.snappy, identity.deflate),
            (
                compression == Compression::Snappy,
                matches!(compression, Compression::Deflate(_))
            ),
            "{compression:?} negotiated"
        );
        // Small and large (multi-block, compressible) bodies.
        let mut sent: Vec<String> = bodies("small", 40);
        sent.extend((0..5).map(|i| format!("large-{i}-{}", "ticket text ".repeat(20_000))));
        tb.publish("zipped", sent.clone()).await;
        wait_until("every compressed message is handled", WAIT, || {
            handled.lock().unwrap().len() == sent.len()
        })
        .await;
        worker.shutdown().await.unwrap();
        let snapshot = channel.snapshot();
        assert_eq!(
            (snapshot.depth, snapshot.in_flight),
            (0, 0),
            "{compression:?}"
        );
        tb.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_reconnected() {
    let first = start_broker().await;
    let address = first.server.tcp_addr;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = move |delivery: Delivery| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(delivery.message.body.to_vec());
            Ok::<(), HandlerError>(())
        }
    };
    let config = ConsumerConfig {
        reconnect: Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        ..first.config("reconnecting")
    };
    let worker = Consumer::new(config, handler).unwrap();
    worker.subscribe("jobs", "w", 2).await.unwrap();
    first.publish("jobs", ["before".to_owned()]).await;
    let body = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body, b"before");

    // The broker goes away and comes back on the same address.
    first.server.shutdown().await;
    let second = start_broker_on(address).await;
    second.publish("jobs", ["after".to_owned()]).await;
    let body = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the message published after the restart within 5 s")
        .unwrap();
    assert_eq!(body, b"after");
    worker.shutdown().await.unwrap();
    second.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_oscillating_around_the_threshold_does_not_flap() {
    let tb = start_broker().await;
    let (listener, mut events) = event_listener(&tb).await;
    // Handling alternates just below and just above the 100 ms threshold.
    let handler = |delivery: Delivery| async move {
        let odd = delivery.message.body.last().is_some_and(|b| b % 2 == 1);
        tokio::time::sleep(Duration::from_millis(if odd { 130 } else { 70 })).await;
        Ok::<(), HandlerError>(())
    };
    let config = ConsumerConfig {
        evaluate_every: Duration::from_millis(20),
        // p99 of the last sample only, so it swings across the threshold with every message.
        latency_window: LatencyWindow {
            max_samples: 1,
            max_age: Some(Duration::from_secs(60)),
        },
        degrade: DegradeConfig {
            threshold: Duration::from_millis(100),
            overload_threshold: Duration::from_secs(10),
            recover_below: Duration::from_millis(50),
            hold: Duration::from_millis(300),
        },
        ..tb.config("oscillating")
    };
    let worker = Consumer::new(config, handler).unwrap();
    worker.subscribe("wobbly", "w", 4).await.unwrap();
    let n = 40;
    tb.publish("wobbly", bodies("m", n)).await;
    wait_until("every message is finished", WAIT, || {
        tb.server
            .broker
            .existing_channel("wobbly", "w")
            .is_ok_and(|c| c.counters.finish_count.load(Ordering::Relaxed) == n as u64)
    })
    .await;
    // One entry into degraded, no flapping back and forth while it oscillates.
    assert_eq!(worker.transitions(), 1);
    assert_eq!(next_event(&mut events).await["level"], 1);
    worker.shutdown().await.unwrap();
    listener.shutdown().await.unwrap();
    tb.server.shutdown().await;
}
