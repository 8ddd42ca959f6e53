//! triage-worker: a consumer library for triage (and any NSQ broker) that
//! notices when it falls behind and tells the broker.
//!
//! - [`consumer`]: [`Consumer`] subscribes to topic/channel pairs over
//!   protocol V2 (one connection each), runs a [`Handler`] per message with
//!   bounded concurrency, FINs successes, REQs failures with exponential
//!   [`Backoff`], TOUCHes long work, answers heartbeats and shuts down
//!   gracefully (RDY 0, finish in-flight, CLS).
//! - [`latency`]: [`LatencyMonitor`], a sliding window of handling times and
//!   message ages with their p99.
//! - [`degrade`]: [`DegradeController`], levels 0/1/2 with hysteresis.
//! - [`error`]: the error types.
//!
//! Data flows from each connection task to handler tasks and back; each
//! outcome adds a [`latency::Sample`]. A controller task reads the window
//! periodically; when the level changes, every connection shrinks its RDY
//! ([`consumer::rdy_for`]) and sends `BACKPRESSURE <level>`, so a triage
//! broker holds back delayed-tier (and at level 2 persistent-tier) work and
//! publishes the change on `_triage.backpressure`. The latency monitor and
//! the controller are pure and take the time from their caller.

// Tests may unwrap; the workspace lint is for library code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod consumer;
pub mod degrade;
pub mod error;
pub mod latency;

pub use consumer::{Backoff, Consumer, ConsumerConfig, Delivery, Handler};
pub use degrade::{DegradeConfig, DegradeController, Level, Transition};
pub use error::{ConfigError, ConsumerError, HandlerError};
pub use latency::{LatencyMonitor, LatencySignal, LatencySnapshot, LatencyWindow, Sample};
