//! The `triage-worker` process as a library: starts the consumer with a
//! [`PipelineHandler`], the deferral producer and the `/metrics` server from
//! one [`WorkerConfig`], and shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Priority;
use crate::config::WorkerConfig;
use crate::consumer::{Consumer, ConsumerConfig, Subscription};
use crate::error::ConsumerError;
use crate::metrics::{self, WorkerMetrics};
use crate::pipeline::PipelineHandler;
use crate::producer::Producer;
use crate::steps::http_client;

/// Why the worker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot listen on http_address {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{topic}/{channel}: {source}")]
    Subscribe {
        topic: String,
        channel: String,
        source: ConsumerError,
    },
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
}

impl WorkerError {
    /// Whether trying again later may work: the broker could not be reached
    /// or dropped the connection, as when it is not up yet.
    pub fn is_transient(&self) -> bool {
        let consumer = match self {
            WorkerError::Subscribe { source, .. } | WorkerError::Consumer(source) => source,
            WorkerError::Bind { .. } => return false,
        };
        matches!(
            consumer,
            ConsumerError::Connect { .. }
                | ConsumerError::Io(_)
                | ConsumerError::Closed
                | ConsumerError::TimedOut(_)
        )
    }
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    consumer: Consumer<PipelineHandler>,
    metrics_address: SocketAddr,
    stop_http: CancellationToken,
    http: TaskTracker,
}

impl Worker {
    /// Binds `/metrics`, connects every subscription (and the replay
    /// subscription of each one with non-core steps) and starts consuming.
    ///
    /// # Errors
    /// [`WorkerError`] when the HTTP address is taken or a subscription fails.
    pub async fn start(config: &WorkerConfig) -> Result<Worker, WorkerError> {
        let listener = TcpListener::bind(config.http_address)
            .await
            .map_err(|source| WorkerError::Bind {
                address: config.http_address,
                source,
            })?;
        let metrics_address = listener.local_addr().map_err(|source| WorkerError::Bind {
            address: config.http_address,
            source,
        })?;
        let consumer_config = ConsumerConfig::from(config);
        let metrics = Arc::new(WorkerMetrics::new());
        let producer = Arc::new(Producer::new(consumer_config.clone()));
        let handler = PipelineHandler::new(config, &http_client(), producer, metrics.clone());
        let consumer = Consumer::new(consumer_config, handler)?;
        for s in &config.subscriptions {
            let mut subscriptions = vec![Subscription {
                topic: s.topic.clone(),
                channel: s.channel.clone(),
                max_in_flight: s.max_in_flight,
                priority: s.priority,
            }];
            if s.has_noncore_steps() {
                // Replay is batch work: it stops whenever the worker is degraded.
                subscriptions.push(Subscription {
                    topic: s.deferred_topic.clone(),
                    channel: s.channel.clone(),
                    max_in_flight: s.max_in_flight,
                    priority: Priority::Batch,
                });
            }
            for subscription in subscriptions {
                let (topic, channel) = (subscription.topic.clone(), subscription.channel.clone());
                consumer
                    .subscribe_with(subscription)
                    .await
                    .map_err(|source| WorkerError::Subscribe {
                        topic,
                        channel,
                        source,
                    })?;
            }
        }
        let stop_http = CancellationToken::new();
        let http = TaskTracker::new();
        http.spawn(metrics::serve(
            listener,
            metrics,
            consumer.status(),
            stop_http.clone(),
        ));
        http.close();
        tracing::info!(
            %metrics_address,
            broker = ?config.broker,
            lookupd = ?config.lookupd_http_addresses,
            "worker started"
        );
        Ok(Worker {
            consumer,
            metrics_address,
            stop_http,
            http,
        })
    }

    /// Where `/metrics` is served (useful when configured with port 0).
    pub fn metrics_address(&self) -> SocketAddr {
        self.metrics_address
    }

    /// Finishes in-flight messages, closes every connection, then stops `/metrics`.
    ///
    /// # Errors
    /// [`WorkerError::Consumer`] when in-flight work outlasted `shutdown_timeout`.
    pub async fn shutdown(self) -> Result<(), WorkerError> {
        let result = self.consumer.shutdown().await;
        self.stop_http.cancel();
        self.http.wait().await;
        Ok(result?)
    }
}
