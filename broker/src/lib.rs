//! triage-broker: the `triaged` daemon as a library with a thin binary.
//!
//! Data flows from a socket through [`tcp::connection`] (bytes, compression)
//! and [`tcp::session`] (the client's state machine) to one of
//! [`tcp`]'s command files, which act on the [`broker::Broker`]: a registry of
//! [`topic::Topic`]s, each fanning messages out to its [`channel::Channel`]s.
//! A channel owns its queue, its in-flight and deferred messages, and one
//! timer task for both. [`http`] serves nsqd's HTTP API over the same broker;
//! [`server::Server`] binds both front ends and shuts them down. [`store`]
//! is the RocksDB layer under persistent topics and [`backlog`] a persistent
//! channel's view of its log; [`ctl`] is the HTTP client behind `triagectl`; [`metrics`] serves
//! Prometheus metrics at `GET /metrics`; [`lookup`] registers topics and
//! channels with every configured lookupd; [`live_tier`] is a topic's tier,
//! which `/topic/tier` changes in place.

pub mod auth;
pub mod backlog;
pub mod broker;
pub mod channel;
pub mod client;
pub mod ctl;
pub mod delayed;
pub mod http;
pub mod in_flight;
pub mod live_tier;
pub mod lookup;
pub mod metrics;
mod seq_runs;
pub mod server;
pub mod store;
pub mod tcp;
pub mod tls;
pub mod topic;

pub use broker::Broker;
pub use server::{Server, StartError};

/// Reported in IDENTIFY, `/info` and `/stats`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
