//! triage-lookupd: a discovery daemon compatible with nsqlookupd 1.x.
//!
//! Nodes (triaged or nsqd) connect over TCP ([`tcp`]), say who they are with
//! IDENTIFY and REGISTER their topics and channels; each command lands in the
//! [`db::RegistrationDb`]. Consumers and nsqadmin ask the HTTP API ([`http`])
//! which nodes hold a topic. [`server::Lookupd`] binds both listeners, runs
//! them and shuts them down; [`options`] holds every default.

pub mod db;
pub mod http;
pub mod options;
pub mod server;
pub mod tcp;

pub use options::Options;
pub use server::{Lookupd, StartError};

/// Reported in the IDENTIFY reply and `/info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
