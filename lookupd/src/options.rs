//! Everything `triage-lookupd` can be told, and every default, in one place.

use std::net::SocketAddr;
use std::time::Duration;

/// nsqlookupd's options (`nsqlookupd/options.go`), same names and defaults,
/// except that the listeners default to loopback, as triaged's do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    /// Returned to nodes in the IDENTIFY reply; defaults to the hostname.
    pub broadcast_address: String,
    /// A node not heard from (IDENTIFY or PING) for this long is left out of
    /// `/lookup` and `/nodes` until it pings again.
    pub inactive_producer_timeout: Duration,
    /// How long `/topic/tombstone` hides a node's topic from `/lookup`.
    pub tombstone_lifetime: Duration,
    /// Open TCP connections at once; the accept loop waits beyond it.
    /// nsqlookupd has no such bound.
    pub max_connections: usize,
}

/// Largest IDENTIFY body: the node's details and triage's tier map
/// (about 60 bytes a topic), so room for some ten thousand topics.
pub const MAX_IDENTIFY_BODY: usize = 1 << 20;

/// Longest command line: two names of at most 64 bytes and a verb.
pub const MAX_LINE_LEN: usize = 1024;

/// A new connection must send the 4-byte magic within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Options {
    fn default() -> Self {
        Options {
            tcp_address: SocketAddr::from(([127, 0, 0, 1], 4160)),
            http_address: SocketAddr::from(([127, 0, 0, 1], 4161)),
            broadcast_address: triage_config::broker::hostname(),
            inactive_producer_timeout: Duration::from_secs(300),
            tombstone_lifetime: Duration::from_secs(45),
            max_connections: 10_000,
        }
    }
}
