//! What the `triage-worker` binary does with a message: run its
//! subscription's steps in order, skip (while degraded) or defer (on
//! failure) the non-core ones, and replay deferred steps later.
//!
//! A message of a subscription runs every core step; a failing core step
//! fails the message, which is requeued with backoff. Non-core steps run
//! only at level 0; skipped or failed ones are collected and published in one
//! [`Deferral`] to the subscription's deferral topic, and the message
//! succeeds (is FINed) only once that publish is acknowledged: nothing is
//! lost. A message of a deferral topic runs the steps it names; if one fails,
//! it is requeued with backoff and replayed again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use crate::config::{SubscriptionConfig, WorkerConfig};
use crate::consumer::{Delivery, Handler};
use crate::deferred::Deferral;
use crate::degrade::Level;
use crate::error::HandlerError;
use crate::metrics::WorkerMetrics;
use crate::producer::Producer;
use crate::steps::{HttpClient, Step};

/// One subscription's steps and where its skipped work goes.
#[derive(Debug)]
pub struct Pipeline {
    topic: String,
    channel: String,
    deferred_topic: String,
    steps: Vec<Step>,
}

impl Pipeline {
    pub fn new(config: &SubscriptionConfig, client: &HttpClient) -> Pipeline {
        Pipeline {
            topic: config.topic.clone(),
            channel: config.channel.clone(),
            deferred_topic: config.deferred_topic.clone(),
            steps: config.steps.iter().map(|s| Step::new(s, client)).collect(),
        }
    }
}

/// Whether a subscription carries original messages or deferred work.
#[derive(Debug, Clone)]
enum Route {
    Original(Arc<Pipeline>),
    Replay(Arc<Pipeline>),
}

/// The consumer's handler: routes each delivery by topic and channel.
#[derive(Debug, Clone)]
pub struct PipelineHandler {
    routes: Arc<HashMap<(String, String), Route>>,
    producer: Arc<Producer>,
    metrics: Arc<WorkerMetrics>,
}

impl PipelineHandler {
    /// Routes every subscription of `config` and, for those with non-core
    /// steps, its deferral topic on the same channel.
    pub fn new(
        config: &WorkerConfig,
        client: &HttpClient,
        producer: Arc<Producer>,
        metrics: Arc<WorkerMetrics>,
    ) -> PipelineHandler {
        let mut routes = HashMap::new();
        for subscription in &config.subscriptions {
            let pipeline = Arc::new(Pipeline::new(subscription, client));
            for step in &subscription.steps {
                metrics.declare_step(
                    &subscription.topic,
                    &subscription.channel,
                    &step.name,
                    step.core,
                );
            }
            let channel = subscription.channel.clone();
            if subscription.has_noncore_steps() {
                routes.insert(
                    (subscription.deferred_topic.clone(), channel.clone()),
                    Route::Replay(pipeline.clone()),
                );
            }
            routes.insert(
                (subscription.topic.clone(), channel),
                Route::Original(pipeline),
            );
        }
        PipelineHandler {
            routes: Arc::new(routes),
            producer,
            metrics,
        }
    }

    async fn run_original(
        &self,
        pipeline: &Pipeline,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let body = delivery.message.body;
        let mut deferred = Vec::new();
        for step in &pipeline.steps {
            if !step.core && delivery.level != Level::Normal {
                deferred.push(step.name.to_string());
                continue;
            }
            match self.run_step(pipeline, step, &body).await {
                Ok(()) => {}
                Err(e) if step.core => return Err(e),
                Err(e) => {
                    tracing::warn!(topic = %pipeline.topic, step = %step.name, error = %e, "non-core step failed; deferring it");
                    deferred.push(step.name.to_string());
                }
            }
        }
        if deferred.is_empty() {
            return Ok(());
        }
        let deferral = Deferral {
            topic: pipeline.topic.clone(),
            channel: pipeline.channel.clone(),
            steps: deferred,
            body,
        };
        self.producer
            .publish(&pipeline.deferred_topic, deferral.to_json())
            .await
            .map_err(|e| format!("cannot defer to {}: {e}", pipeline.deferred_topic))?;
        for step in &deferral.steps {
            self.metrics.deferred(step);
        }
        Ok(())
    }

    async fn run_replay(
        &self,
        pipeline: &Pipeline,
        delivery: Delivery,
    ) -> Result<(), HandlerError> {
        let deferral = match Deferral::from_json(&delivery.message.body) {
            Ok(deferral) => deferral,
            Err(e) => {
                // It can never succeed; requeueing it would loop forever.
                tracing::error!(topic = %pipeline.deferred_topic, error = %e, "dropping an unreadable deferral");
                return Ok(());
            }
        };
        for name in &deferral.steps {
            let Some(step) = pipeline.steps.iter().find(|s| *s.name == **name) else {
                tracing::warn!(topic = %pipeline.topic, step = %name, "deferred step is no longer configured; skipping it");
                continue;
            };
            self.run_step(pipeline, step, &deferral.body).await?;
            self.metrics.replayed(name);
        }
        Ok(())
    }

    async fn run_step(
        &self,
        pipeline: &Pipeline,
        step: &Step,
        body: &bytes::Bytes,
    ) -> Result<(), HandlerError> {
        let started = Instant::now();
        let result = step.run(body.clone()).await;
        self.metrics.observe_step(
            &pipeline.topic,
            &pipeline.channel,
            &step.name,
            started.elapsed(),
        );
        result.map_err(|e| {
            self.metrics
                .step_failed(&pipeline.topic, &pipeline.channel, &step.name);
            format!("step {}: {e}", step.name).into()
        })
    }
}

impl Handler for PipelineHandler {
    fn handle(&self, delivery: Delivery) -> impl Future<Output = Result<(), HandlerError>> + Send {
        let this = self.clone();
        async move {
            let key = (delivery.topic.to_string(), delivery.channel.to_string());
            match this.routes.get(&key).cloned() {
                Some(Route::Original(pipeline)) => this.run_original(&pipeline, delivery).await,
                Some(Route::Replay(pipeline)) => this.run_replay(&pipeline, delivery).await,
                None => Err(format!("no pipeline for {}/{}", key.0, key.1).into()),
            }
        }
    }
}
