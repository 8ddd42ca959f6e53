//! The four scenarios, built from the same parts: admin calls to set tiers
//! up, [`Publishers`], [`Consumers`], the progress line, and a stop token that
//! fires at `--duration` (or at Ctrl-C, through `shutdown`).
//!
//! Every wait is bounded: publishing by the duration (plus one reply
//! timeout for the command in flight), draining by `--drain-timeout`,
//! closing by the reply timeout.

use std::sync::atomic::Ordering;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminError};
use crate::body::now_ns;
use crate::cli::{Cli, Common, IsolationArgs, Mode, PubArgs, PubSubArgs, SubArgs, Tier};
use crate::consumer::{drain, ConsumeOutcome, ConsumePlan, Consumers};
use crate::progress::{Gauge, Progress};
use crate::publisher::{PublishOutcome, PublishPlan, Publishers};
use crate::report::{Report, StreamReport, AGE_ON_ARRIVAL, END_TO_END};
use crate::wire::WireError;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Runs the scenario `cli` names against its broker. `shutdown` ends it
/// early (what ran so far is still reported).
///
/// # Errors
/// When setting up fails: an admin call is refused, or a connection cannot
/// be opened or subscribed. Failures once the load runs are in the report's
/// `errors` instead.
pub async fn run(cli: &Cli, shutdown: &CancellationToken) -> Result<Report, RunError> {
    let started_unix_ms = now_ns() / 1_000_000;
    let started = Instant::now();
    let c = &cli.common;
    let streams = match &cli.mode {
        Mode::Pub(a) => vec![run_pub(c, a, shutdown).await?],
        Mode::Sub(a) => vec![run_sub(c, a, shutdown).await?],
        Mode::Pubsub(a) => vec![run_pubsub(c, a, shutdown).await?],
        Mode::Isolation(a) => run_isolation(c, a, shutdown).await?,
    };
    Ok(Report {
        tool: "triage-bench",
        version: env!("CARGO_PKG_VERSION"),
        mode: cli.mode.name(),
        started_unix_ms,
        elapsed_s: started.elapsed().as_secs_f64(),
        settings: serde_json::json!({ "common": c, "mode": &cli.mode }),
        streams,
    })
}

/// A child of `parent` that is also cancelled after `after`.
fn stop_after(parent: &CancellationToken, after: Duration) -> CancellationToken {
    let stop = parent.child_token();
    let timer = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = timer.cancelled() => {}
            () = tokio::time::sleep(after) => timer.cancel(),
        }
    });
    stop
}

/// With `--http`, creates the topic (with its tier) and the channel.
async fn set_up(
    c: &Common,
    topic: &str,
    tier: Option<Tier>,
    channel: Option<&str>,
) -> Result<Option<Tier>, AdminError> {
    let Some(http) = c.http else {
        return Ok(None);
    };
    // The default delay belongs to the delayed tier only.
    let delay = c.delay.filter(|_| tier == Some(Tier::Delayed));
    admin::create_topic(http, topic, tier, delay).await?;
    if let Some(channel) = channel {
        admin::create_channel(http, topic, channel).await?;
    }
    Ok(tier)
}

fn publish_gauge(name: &'static str, publishers: &Publishers) -> Gauge {
    let counters = publishers.counters();
    (
        name,
        Box::new(move || counters.published.load(Ordering::Relaxed)),
    )
}

fn receive_gauge(name: &'static str, consumers: &Consumers) -> Gauge {
    let counters = consumers.counters();
    (
        name,
        Box::new(move || counters.received.load(Ordering::Relaxed)),
    )
}

/// Waits for `consumers` to count `target` fresh messages, at most
/// `--drain-timeout`, and not past a shutdown.
async fn drain_within(
    c: &Common,
    consumers: &Consumers,
    target: u64,
    shutdown: &CancellationToken,
) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = drain(consumers, target, Instant::now() + c.drain_timeout) => {}
    }
}

async fn run_pub(
    c: &Common,
    a: &PubArgs,
    shutdown: &CancellationToken,
) -> Result<StreamReport, RunError> {
    let topic = &a.topic.topic;
    let tier = set_up(c, topic, a.topic.tier, a.channel.as_deref()).await?;
    let plan = PublishPlan {
        topic: topic.clone(),
        connections: a.connections,
        size: a.load.size,
        batch: a.load.batch,
        rate: a.load.rate,
        count: a.load.count,
    };
    let stop = stop_after(shutdown, c.duration);
    let publishers = Publishers::start(c.tcp, &plan, stop.clone()).await?;
    let progress = Progress::start(
        vec![publish_gauge("published", &publishers)],
        c.duration,
        c.quiet,
    );
    let outcome = publishers.finish().await;
    stop.cancel();
    progress.stop().await;
    let mut stream = StreamReport::new("pub", topic, None, tier);
    stream.add_publish(outcome, plan.rate);
    Ok(stream)
}

async fn run_sub(
    c: &Common,
    a: &SubArgs,
    shutdown: &CancellationToken,
) -> Result<StreamReport, RunError> {
    let topic = &a.topic.topic;
    let tier = set_up(c, topic, a.topic.tier, Some(&a.channel)).await?;
    let plan = ConsumePlan {
        topic: topic.clone(),
        channel: a.channel.clone(),
        connections: a.connections,
        rdy: a.rdy,
        count: a.count,
        stale_before_ns: None,
        output_buffer_timeout_ms: c.output_buffer_timeout,
    };
    let stop = stop_after(shutdown, c.duration);
    let consumers = Consumers::start(c.tcp, &plan, &stop).await?;
    let progress = Progress::start(
        vec![receive_gauge("received", &consumers)],
        c.duration,
        c.quiet,
    );
    // Cancelled by the duration (through `stop`) or by reaching --count.
    consumers.stopped_by(Instant::now() + c.duration).await;
    let outcome = consumers.finish().await;
    stop.cancel();
    progress.stop().await;
    let mut stream = StreamReport::new("sub", topic, Some(&a.channel), tier);
    stream.add_consume(outcome, AGE_ON_ARRIVAL);
    Ok(stream)
}

async fn run_pubsub(
    c: &Common,
    a: &PubSubArgs,
    shutdown: &CancellationToken,
) -> Result<StreamReport, RunError> {
    let topic = &a.topic.topic;
    let tier = set_up(c, topic, a.topic.tier, Some(&a.channel)).await?;
    let run_start_ns = now_ns();
    let consume_plan = ConsumePlan {
        topic: topic.clone(),
        channel: a.channel.clone(),
        connections: a.consumers,
        rdy: a.rdy,
        count: None,
        stale_before_ns: Some(run_start_ns),
        output_buffer_timeout_ms: c.output_buffer_timeout,
    };
    let publish_plan = PublishPlan {
        topic: topic.clone(),
        connections: a.publishers,
        size: a.load.size,
        batch: a.load.batch,
        rate: a.load.rate,
        count: a.load.count,
    };
    let (published, consumed) =
        publish_and_consume(c, &publish_plan, &consume_plan, c.duration, shutdown).await?;
    Ok(pubsub_stream(
        "pubsub",
        &consume_plan,
        publish_plan.rate,
        tier,
        published,
        consumed,
    ))
}

/// Subscribes first (so every message is end to end), publishes for
/// `duration`, then gives the consumers `--drain-timeout` to catch up.
async fn publish_and_consume(
    c: &Common,
    publish_plan: &PublishPlan,
    consume_plan: &ConsumePlan,
    duration: Duration,
    shutdown: &CancellationToken,
) -> Result<(PublishOutcome, ConsumeOutcome), RunError> {
    let consumers = Consumers::start(c.tcp, consume_plan, shutdown).await?;
    let publish_stop = stop_after(shutdown, duration);
    let publishers = Publishers::start(c.tcp, publish_plan, publish_stop.clone()).await?;
    let progress = Progress::start(
        vec![
            publish_gauge("published", &publishers),
            receive_gauge("received", &consumers),
        ],
        duration,
        c.quiet,
    );
    let published = publishers.finish().await;
    publish_stop.cancel();
    drain_within(c, &consumers, published.published, shutdown).await;
    let consumed = consumers.finish().await;
    progress.stop().await;
    Ok((published, consumed))
}

/// A stream whose messages this run stamped: end-to-end latency.
fn pubsub_stream(
    name: &str,
    plan: &ConsumePlan,
    target_rate: Option<u64>,
    tier: Option<Tier>,
    published: PublishOutcome,
    consumed: ConsumeOutcome,
) -> StreamReport {
    let mut stream = StreamReport::new(name, &plan.topic, Some(&plan.channel), tier);
    stream.add_publish(published, target_rate);
    stream.add_consume(consumed, END_TO_END);
    stream
}

async fn run_isolation(
    c: &Common,
    a: &IsolationArgs,
    shutdown: &CancellationToken,
) -> Result<Vec<StreamReport>, RunError> {
    let urgent_tier = set_up(c, &a.urgent_topic, Some(Tier::Memory), Some(&a.channel)).await?;
    let flood_tier = set_up(c, &a.flood_topic, Some(Tier::Persistent), Some(&a.channel)).await?;
    let run_start_ns = now_ns();
    let consume = |topic: &str, connections: u32| ConsumePlan {
        topic: topic.to_owned(),
        channel: a.channel.clone(),
        connections,
        rdy: a.rdy,
        count: None,
        stale_before_ns: Some(run_start_ns),
        output_buffer_timeout_ms: c.output_buffer_timeout,
    };
    let probes = PublishPlan {
        topic: a.urgent_topic.clone(),
        connections: 1,
        size: a.size,
        batch: 1,
        rate: Some(a.probe_rate),
        count: None,
    };
    let flood = PublishPlan {
        topic: a.flood_topic.clone(),
        connections: a.flood_publishers,
        size: a.size,
        batch: a.flood_batch,
        rate: None,
        count: None,
    };
    let mut streams = Vec::new();

    let urgent_plan = consume(&a.urgent_topic, 1);
    if !a.baseline.is_zero() {
        let (probed, received) =
            publish_and_consume(c, &probes, &urgent_plan, a.baseline, shutdown).await?;
        streams.push(pubsub_stream(
            "urgent_idle",
            &urgent_plan,
            probes.rate,
            urgent_tier,
            probed,
            received,
        ));
    }

    let urgent = Consumers::start(c.tcp, &urgent_plan, shutdown).await?;
    let flood_consumers = if a.flood_consumers > 0 {
        Some(Consumers::start(c.tcp, &consume(&a.flood_topic, a.flood_consumers), shutdown).await?)
    } else {
        None
    };
    let stop = stop_after(shutdown, c.duration);
    let flooders = Publishers::start(c.tcp, &flood, stop.clone()).await?;
    let prober = Publishers::start(c.tcp, &probes, stop.clone()).await?;
    let mut gauges = vec![
        publish_gauge("probes", &prober),
        receive_gauge("received", &urgent),
        publish_gauge("flood", &flooders),
    ];
    if let Some(consumers) = &flood_consumers {
        gauges.push(receive_gauge("flood received", consumers));
    }
    let progress = Progress::start(gauges, c.duration, c.quiet);
    let probed = prober.finish().await;
    let flooded = flooders.finish().await;
    stop.cancel();
    drain_within(c, &urgent, probed.published, shutdown).await;
    let received = urgent.finish().await;
    let flood_received = match flood_consumers {
        Some(consumers) => Some(consumers.finish().await),
        None => None,
    };
    progress.stop().await;

    streams.push(pubsub_stream(
        "urgent",
        &urgent_plan,
        probes.rate,
        urgent_tier,
        probed,
        received,
    ));
    let channel = flood_received.as_ref().map(|_| a.channel.as_str());
    let mut stream = StreamReport::new("flood", &a.flood_topic, channel, flood_tier);
    stream.add_publish(flooded, None);
    if let Some(received) = flood_received {
        stream.add_consume(received, END_TO_END);
    }
    streams.push(stream);
    Ok(streams)
}
