//! The `triage-worker` configuration: one TOML file, read into a typed tree
//! and validated before anything starts. Every error names the full path of
//! the key, e.g. `subscriptions[1].steps[0].url: ...`.
//!
//! It lives in this crate rather than in the worker's so that `triagectl
//! config check` (in the broker crate, which the worker's tests depend on)
//! checks worker files by the worker's own rules; `triage_worker` re-exports
//! all of it. [`read`] walks a file into the tree, collecting every problem
//! on the way; nothing here does I/O.

mod read;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

pub use read::check_worker_toml;

/// The keys a worker file may have at its top level; `subscriptions` is
/// required, so a file with it is a worker's.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "broker",
    "lookupd_http_addresses",
    "lookupd_poll_interval",
    "http_address",
    "client_id",
    "hostname",
    "concurrency",
    "max_in_flight",
    "shutdown_timeout",
    "compression",
    "deflate_level",
    "degrade",
    "backoff",
    "subscriptions",
];

/// The suffix of the default deferral topic, `<topic>.deferred`.
pub const DEFERRED_SUFFIX: &str = ".deferred";

/// The whole worker: where the broker is, how to degrade, what to consume.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    /// A broker's TCP address, `host:port`; also where deferred work is
    /// published. `None`: only brokers found through lookupd.
    pub broker: Option<String>,
    /// lookupd HTTP addresses polled for the brokers of each subscription's topic.
    pub lookupd_http_addresses: Vec<String>,
    pub lookupd_poll_interval: Duration,
    /// Where `/metrics` is served.
    pub http_address: SocketAddr,
    pub client_id: String,
    pub hostname: String,
    /// Handlers running at once across every subscription.
    pub concurrency: usize,
    /// The in-flight budget shared by priority; `None`: no global limit.
    pub max_in_flight: Option<u64>,
    pub degrade: DegradeConfig,
    /// How long a latency sample counts towards the p99.
    pub latency_window: Duration,
    /// Which p99 the degrade controller follows.
    pub latency_signal: LatencySignal,
    /// REQ delays for failed core steps.
    pub backoff: Backoff,
    /// How long shutdown waits for in-flight messages.
    pub shutdown_timeout: Duration,
    /// Asked of the broker for every subscription's connection.
    pub compression: Compression,
    pub subscriptions: Vec<SubscriptionConfig>,
}

impl WorkerConfig {
    /// Parses and validates a whole file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first key that is missing, unknown, of the
    /// wrong type or of a value that cannot work (or the line of a TOML
    /// syntax error); [`check_worker_toml`] lists every one.
    pub fn from_toml_str(text: &str) -> Result<WorkerConfig, ConfigError> {
        read::worker_from_toml(text).map_err(|mut errors| errors.swap_remove(0))
    }
}

/// One topic/channel pair and the pipeline each of its messages runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub topic: String,
    pub channel: String,
    pub max_in_flight: u64,
    pub priority: Priority,
    /// Where skipped non-core work goes, and is replayed from.
    pub deferred_topic: String,
    pub steps: Vec<StepConfig>,
}

impl SubscriptionConfig {
    pub fn has_noncore_steps(&self) -> bool {
        self.steps.iter().any(|s| !s.core)
    }
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConfig {
    /// Unique within its subscription; names the step in metrics and deferrals.
    pub name: String,
    /// A failing core step requeues the message; a non-core one is deferred.
    pub core: bool,
    pub timeout: Duration,
    pub action: StepAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// POST the body to `url` (plain `http://`); a 2xx status is success.
    Http { url: String },
    /// Run `command` (argv, no shell) with the body on stdin; exit 0 is success.
    Exec { command: Vec<String> },
}

impl StepAction {
    pub fn kind(&self) -> &'static str {
        match self {
            StepAction::Http { .. } => "http",
            StepAction::Exec { .. } => "exec",
        }
    }
}

/// Defaults, in one place.
pub mod defaults {
    use std::time::Duration;

    pub const HTTP_ADDRESS: &str = "127.0.0.1:4155";
    pub const CLIENT_ID: &str = "triage-worker";
    pub const HOSTNAME: &str = "localhost";
    pub const CONCURRENCY: u64 = 16;
    pub const LATENCY_WINDOW: Duration = Duration::from_secs(30);
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);
    pub const CORE: bool = true;
    pub const DEFLATE_LEVEL: u64 = 6;
    /// As go-nsq.
    pub const LOOKUPD_POLL_INTERVAL: Duration = Duration::from_secs(15);
}

/// A configuration value that cannot work; `key` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The key's full path, e.g. `subscriptions[1].steps[0].url`.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// A subscription's priority; urgent is served first, batch last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Urgent,
    #[default]
    Normal,
    /// Also what replay subscriptions (`<topic>.deferred`) use: nothing while degraded.
    Batch,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Urgent, Priority::Normal, Priority::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Urgent => "urgent",
            Priority::Normal => "normal",
            Priority::Batch => "batch",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or(())
    }
}

/// REQ delay for a failed message: `base * 2^(attempts - 1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay after the `attempts`-th delivery failed (attempts start at 1).
    pub fn delay(&self, attempts: u16) -> Duration {
        let doublings = u32::from(attempts.saturating_sub(1)).min(31);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// The degrade controller's thresholds on the p99 it follows. Defaults
/// follow DESIGN.md: degrade when the p99 passes 500 ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DegradeConfig {
    /// Above this p99, enter the degraded level; below it for `hold`, leave overloaded.
    pub threshold: Duration,
    /// Above this p99, enter the overloaded level.
    pub overload_threshold: Duration,
    /// Below this p99 for `hold`, leave the degraded level.
    pub recover_below: Duration,
    /// How long the p99 must stay below a recovery threshold before stepping down.
    pub hold: Duration,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        DegradeConfig {
            threshold: Duration::from_millis(500),
            overload_threshold: Duration::from_secs(2),
            recover_below: Duration::from_millis(250),
            hold: Duration::from_secs(10),
        }
    }
}

impl DegradeConfig {
    /// # Errors
    /// [`ConfigError`] naming the key when the thresholds are not ordered
    /// `recover_below < threshold < overload_threshold`; without that gap
    /// there is no hysteresis.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.recover_below >= self.threshold {
            return Err(ConfigError::new(
                "degrade.recover_below",
                format!(
                    "must be below degrade.threshold ({:?}), got {:?}",
                    self.threshold, self.recover_below
                ),
            ));
        }
        if self.overload_threshold <= self.threshold {
            return Err(ConfigError::new(
                "degrade.overload_threshold",
                format!(
                    "must be above degrade.threshold ({:?}), got {:?}",
                    self.threshold, self.overload_threshold
                ),
            ));
        }
        Ok(())
    }
}

/// Which p99 the degrade controller is fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LatencySignal {
    /// Handling time only. The default: messages a degraded worker held back
    /// (via BACKPRESSURE) arrive old once it recovers, and counting their age
    /// would push it straight back into degraded mode.
    #[default]
    Handling,
    /// Message age on arrival only.
    Age,
    /// The worse of the two.
    Worst,
}

/// What IDENTIFY asks the broker to compress with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    None,
    Snappy,
    /// Raw deflate at level 1 (fastest) to 9 (smallest).
    Deflate(u8),
}

/// `host:port` of a lookupd given as `host:port` or `http://host:port`
/// (both forms go-nsq and pynsq accept), `None` for anything else.
pub fn lookupd_authority(address: &str) -> Option<&str> {
    let authority = address.strip_prefix("http://").unwrap_or(address);
    let authority = authority.strip_suffix('/').unwrap_or(authority);
    match authority.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty()
                && !host.contains('/')
                && port.parse::<u16>().is_ok_and(|p| p > 0) =>
        {
            Some(authority)
        }
        _ => None,
    }
}
