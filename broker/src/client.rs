//! What the rest of the broker knows about a connected client: identity,
//! negotiated features and counters for `/stats`, and the wake-up its
//! connection task waits on. The connection task itself lives in [`crate::tcp`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use tokio::sync::Notify;

pub type ClientId = u64;

/// Set by IDENTIFY; read by `/stats`.
#[derive(Debug, Clone, Default)]
pub struct ClientIdentity {
    pub client_id: String,
    pub hostname: String,
    pub user_agent: String,
    pub deflate: bool,
    pub snappy: bool,
    pub sample_rate: i64,
    pub msg_timeout_ms: u64,
    /// Set once the connection upgraded to TLS.
    pub tls: Option<crate::tls::TlsInfo>,
}

#[derive(Debug)]
pub struct ClientInfo {
    pub id: ClientId,
    pub remote_addr: SocketAddr,
    pub connect_ts: i64,
    /// std Mutex: written once at IDENTIFY, cloned by `/stats`; never held across `.await`.
    identity: Mutex<ClientIdentity>,
    pub ready_count: AtomicU64,
    pub in_flight: AtomicU64,
    pub message_count: AtomicU64,
    pub finish_count: AtomicU64,
    pub requeue_count: AtomicU64,
    /// The last `BACKPRESSURE` level (0 normal, 1 degraded, 2 overloaded),
    /// for `/stats` and `/metrics`. The session keeps its own copy for
    /// delivery decisions; this one is only read from outside.
    backpressure: AtomicU8,
    /// The connection's `triage_end_to_end_seconds` series, resolved at its
    /// first FIN: a connection subscribes to one channel for its whole life.
    /// With the topic's tier then: after a tier change, FINs resolve the
    /// new tier's series each time (a map lookup).
    pub end_to_end: OnceLock<(triage_config::Tier, prometheus::Histogram)>,
    /// Wakes the connection when something outside it changed its state: a
    /// message of its timed out (credit regained), its channel was emptied or deleted.
    wake: Notify,
}

impl ClientInfo {
    pub fn new(id: ClientId, remote_addr: SocketAddr) -> ClientInfo {
        ClientInfo {
            id,
            remote_addr,
            connect_ts: unix_secs(),
            identity: Mutex::new(ClientIdentity::default()),
            ready_count: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            message_count: AtomicU64::new(0),
            finish_count: AtomicU64::new(0),
            requeue_count: AtomicU64::new(0),
            backpressure: AtomicU8::new(0),
            end_to_end: OnceLock::new(),
            wake: Notify::new(),
        }
    }

    pub fn set_identity(&self, identity: ClientIdentity) {
        *self.identity.lock().unwrap_or_else(|p| p.into_inner()) = identity;
    }

    /// Changes part of the identity (the TLS session, set after the upgrade).
    pub fn update_identity(&self, change: impl FnOnce(&mut ClientIdentity)) {
        change(&mut self.identity.lock().unwrap_or_else(|p| p.into_inner()));
    }

    pub fn identity(&self) -> ClientIdentity {
        self.identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_backpressure(&self, level: u8) {
        self.backpressure.store(level, Ordering::Relaxed);
    }

    pub fn backpressure(&self) -> u8 {
        self.backpressure.load(Ordering::Relaxed)
    }

    /// Stores a permit, so a wake between two waits is not lost.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

pub fn unix_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
