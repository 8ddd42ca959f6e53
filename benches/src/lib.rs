//! triage-benches: `triage-bench`, a load generator speaking NSQ protocol V2
//! (aimable at triaged or at a real nsqd), and the criterion micro-benchmarks
//! under `benches/`.
//!
//! A run flows from [`cli`] (options and their checks) into [`scenario`],
//! which sets tiers up through [`admin`] (triaged's HTTP API), starts
//! [`publisher::Publishers`] and [`consumer::Consumers`] — each connection a
//! [`wire::Connection`] over `triage_protocol`'s codec — and shows
//! [`progress`] while they run. Bodies carry their send time ([`body`]), so
//! consumers record end-to-end [`latency`]; a shared [`budget`] makes
//! `--count` exact. The result is a [`report::Report`] (JSON and a summary)
//! and, with `--plot`, a PNG from [`plot`].

// Tests may unwrap; the workspace lint is for library code.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod body;
pub mod budget;
pub mod cli;
pub mod consumer;
pub mod latency;
pub mod plot;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod scenario;
pub mod wire;

/// How long opening one TCP connection may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
