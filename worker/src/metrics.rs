//! The worker's Prometheus metrics, served as text at `GET /metrics` on its
//! own HTTP address.
//!
//! Step timings, failures, deferrals and replays are observed as messages
//! pass through the pipeline; the degrade level, the p99, the RDYs and the
//! transition counts are read from the consumer at scrape time
//! ([`WorkerMetrics::refresh`]). Labels are bounded: topic, channel, step,
//! level; never a message.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::consumer::ConsumerStatus;
use crate::degrade::Level;

/// Step durations, in seconds: from a quick local command to a slow webhook.
const STEP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const LEVELS: [Level; 3] = [Level::Normal, Level::Degraded, Level::Overloaded];

pub struct WorkerMetrics {
    registry: Registry,
    handle_seconds: HistogramVec,
    step_failures: IntCounterVec,
    noncore_deferred: IntCounterVec,
    replayed: IntCounterVec,
    degraded: IntGauge,
    latency_p99: Gauge,
    rdy: IntGaugeVec,
    transitions: IntCounterVec,
}

impl fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerMetrics").finish_non_exhaustive()
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    pub fn new() -> WorkerMetrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let handle_seconds = HistogramVec::new(
            HistogramOpts::new(
                "triage_worker_handle_seconds",
                "Time one pipeline step took on one message, by topic, channel and step.",
            )
            .buckets(STEP_BUCKETS.to_vec()),
            &["topic", "channel", "step"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(handle_seconds.clone()))
            .expect("unique metric");
        let step_failures = counter(
            "triage_worker_step_failures_total",
            "Step runs that failed (core: the message is requeued; non-core: the step is deferred).",
            &["topic", "channel", "step"],
        );
        let noncore_deferred = counter(
            "triage_worker_noncore_deferred_total",
            "Non-core step runs skipped or failed and published to the deferral topic, by step.",
            &["step"],
        );
        let replayed = counter(
            "triage_worker_replayed_total",
            "Deferred non-core step runs replayed successfully, by step.",
            &["step"],
        );
        let transitions = counter(
            "triage_worker_degrade_transitions_total",
            "Degrade level changes, by level before and after (0 normal, 1 degraded, 2 overloaded).",
            &["from", "to"],
        );
        for from in LEVELS {
            for to in LEVELS.into_iter().filter(|&to| to != from) {
                transitions
                    .with_label_values(&[level_label(from).as_str(), level_label(to).as_str()]);
            }
        }
        let degraded = IntGauge::new(
            "triage_worker_degraded",
            "The worker's degrade level: 0 normal, 1 degraded, 2 overloaded.",
        )
        .expect("valid metric");
        let latency_p99 = Gauge::new(
            "triage_worker_latency_p99_seconds",
            "p99 of message handling time over the latency window, the degrade controller's input.",
        )
        .expect("valid metric");
        let rdy = IntGaugeVec::new(
            Opts::new(
                "triage_worker_rdy",
                "RDY each subscription is given now, after priority and degradation.",
            ),
            &["topic", "channel"],
        )
        .expect("valid metric");
        for c in [
            Box::new(degraded.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency_p99.clone()),
            Box::new(rdy.clone()),
        ] {
            registry.register(c).expect("unique metric");
        }
        WorkerMetrics {
            registry,
            handle_seconds,
            step_failures,
            noncore_deferred,
            replayed,
            degraded,
            latency_p99,
            rdy,
            transitions,
        }
    }

    /// Makes a step's counters visible at 0 before it first counts.
    pub fn declare_step(&self, topic: &str, channel: &str, step: &str, core: bool) {
        self.step_failures
            .with_label_values(&[topic, channel, step]);
        if !core {
            self.noncore_deferred.with_label_values(&[step]);
            self.replayed.with_label_values(&[step]);
        }
    }

    pub fn observe_step(&self, topic: &str, channel: &str, step: &str, elapsed: Duration) {
        self.handle_seconds
            .with_label_values(&[topic, channel, step])
            .observe(elapsed.as_secs_f64());
    }

    pub fn step_failed(&self, topic: &str, channel: &str, step: &str) {
        self.step_failures
            .with_label_values(&[topic, channel, step])
            .inc();
    }

    pub fn deferred(&self, step: &str) {
        self.noncore_deferred.with_label_values(&[step]).inc();
    }

    pub fn replayed(&self, step: &str) {
        self.replayed.with_label_values(&[step]).inc();
    }

    /// Copies the consumer's level, p99, RDYs and transition counts into the gauges and counters.
    pub fn refresh(&self, status: &ConsumerStatus) {
        self.degraded.set(i64::from(status.level().as_u8()));
        let p99 = status.latency().handling_p99.unwrap_or_default();
        self.latency_p99.set(p99.as_secs_f64());
        for (subscription, rdy) in status.rdy() {
            self.rdy
                .with_label_values(&[subscription.topic.as_str(), subscription.channel.as_str()])
                .set(i64::try_from(rdy).unwrap_or(i64::MAX));
        }
        for from in LEVELS {
            for to in LEVELS.into_iter().filter(|&to| to != from) {
                let counter = self
                    .transitions
                    .with_label_values(&[level_label(from).as_str(), level_label(to).as_str()]);
                let total = status.transitions_between(from, to);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }

    /// Every metric in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Writing to a Vec fails only on a malformed family, which ours are not.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn level_label(level: Level) -> String {
    level.as_u8().to_string()
}

#[derive(Debug, Clone)]
struct MetricsState {
    metrics: Arc<WorkerMetrics>,
    status: ConsumerStatus,
}

async fn scrape(State(state): State<MetricsState>) -> impl IntoResponse {
    state.metrics.refresh(&state.status);
    (
        [(
            header::CONTENT_TYPE,
            TextEncoder::new().format_type().to_owned(),
        )],
        state.metrics.render(),
    )
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<WorkerMetrics>,
    status: ConsumerStatus,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(MetricsState { metrics, status });
    let address: Option<SocketAddr> = listener.local_addr().ok();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = result {
        tracing::error!(?address, error = %e, "metrics server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_required_family_is_rendered() {
        let metrics = WorkerMetrics::new();
        metrics.declare_step("t", "c", "notify", false);
        metrics.observe_step("t", "c", "notify", Duration::from_millis(3));
        metrics.deferred("notify");
        metrics.rdy.with_label_values(&["t", "c"]).set(5);
        let text = metrics.render();
        for family in [
            "triage_worker_degraded 0",
            "triage_worker_handle_seconds_bucket{channel=\"c\",step=\"notify\",topic=\"t\"",
            "triage_worker_latency_p99_seconds 0",
            "triage_worker_noncore_deferred_total{step=\"notify\"} 1",
            "triage_worker_rdy{channel=\"c\",topic=\"t\"} 5",
            "triage_worker_degrade_transitions_total{from=\"0\",to=\"1\"} 0",
            "triage_worker_replayed_total{step=\"notify\"} 0",
        ] {
            assert!(text.contains(family), "{family} missing from\n{text}");
        }
    }
}
