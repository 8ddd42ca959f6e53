//! triage-worker: a consumer library for triage (and any NSQ broker) that
//! notices when it falls behind and tells the broker, and the
//! `triage-worker` binary built on it.
//!
//! The library:
//! - [`consumer`]: [`Consumer`] subscribes to topic/channel pairs over
//!   protocol V2 (one connection each, reconnected with backoff), runs a
//!   [`Handler`] per message with bounded concurrency, FINs successes, REQs
//!   failures with exponential [`Backoff`], TOUCHes long work, answers
//!   heartbeats and shuts down gracefully (RDY 0, finish in-flight, CLS).
//!   Brokers are given by address, found through lookupd, or both.
//! - [`budget`]: how one in-flight budget is shared by [`Priority`]
//!   (urgent first, batch last) at each degrade level.
//! - [`latency`]: [`LatencyMonitor`], a sliding window of handling times and
//!   message ages with their p99.
//! - [`degrade`]: [`DegradeController`], levels 0/1/2 with hysteresis.
//! - [`discovery`] (private): asks lookupd which brokers have a topic.
//! - [`wire`] (private): one broker socket, shared by connections and the producer.
//! - [`error`]: the error types.
//!
//! The binary's parts, usable as a library too:
//! - [`config`]: [`WorkerConfig`], one validated TOML file (defined in
//!   `triage_config::worker`, so `triagectl config check` shares its rules).
//! - [`steps`]: `http` and `exec` steps; [`pipeline`]: runs a subscription's
//!   steps, skips or defers non-core ones ([`deferred`] is the envelope,
//!   [`producer`] publishes it) and replays them.
//! - [`metrics`]: Prometheus `/metrics`; [`app`]: [`Worker`] wires it all up.
//!
//! Data flows from each connection task to handler tasks and back; each
//! outcome adds a [`latency::Sample`]. A controller task reads the window
//! periodically; when the level changes, the budget is re-planned: every
//! connection sends `BACKPRESSURE <level>` and its new RDY, so a triage
//! broker holds back delayed-tier (and at level 2 persistent-tier) work and
//! publishes the change on `_triage.backpressure`, and batch subscriptions
//! (including replay of deferred work) stop. The latency monitor, the
//! controller and the budget are pure and take the time from their caller.

// Tests may unwrap; the workspace lint is for library code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod app;
pub mod budget;
pub mod config;
pub mod consumer;
pub mod deferred;
pub mod degrade;
mod discovery;
pub mod error;
pub mod latency;
pub mod metrics;
pub mod pipeline;
pub mod producer;
pub mod steps;
mod wire;

pub use app::{Worker, WorkerError};
pub use budget::Priority;
pub use config::WorkerConfig;
pub use consumer::{
    Backoff, Consumer, ConsumerConfig, ConsumerStatus, Delivery, Handler, Subscription,
};
pub use degrade::{DegradeConfig, DegradeController, Level, Transition};
pub use error::{ConfigError, ConsumerError, HandlerError};
pub use latency::{LatencyMonitor, LatencySignal, LatencySnapshot, LatencyWindow, Sample};
