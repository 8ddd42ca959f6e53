//! The broker's configuration tree and every default.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::AuthHttpRequestMethod;
use crate::load::ConfigError;
use crate::sync::{check_interval, SyncPolicy};
use crate::tier::{OverflowPolicy, ParseNameError, Tier, TierMatcher, TierRule};
use crate::tls::{TlsClientAuthPolicy, TlsMinVersion};
use crate::units::{format_duration, format_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything `triaged` can be told. Names follow nsqd's options where they exist.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerConfig {
    pub tcp_address: SocketAddr,
    pub http_address: SocketAddr,
    /// Address advertised to lookupd and in `/info`; defaults to the hostname.
    pub broadcast_address: String,
    pub data_path: PathBuf,
    /// Memory-tier bound: messages queued per channel (and per channel-less topic).
    pub mem_queue_size: u64,
    pub max_msg_size: u32,
    pub max_body_size: u32,
    pub msg_timeout: Duration,
    pub max_msg_timeout: Duration,
    /// Advertised in IDENTIFY as a u16 (tokio-nsq insists), so at most 65535.
    pub max_rdy_count: u64,
    /// Largest REQ delay and DPUB defer.
    pub max_req_timeout: Duration,
    pub max_heartbeat_interval: Duration,
    /// Heartbeat interval is half of this unless the client asks otherwise.
    pub client_timeout: Duration,
    pub max_output_buffer_size: u64,
    pub max_output_buffer_timeout: Duration,
    pub min_output_buffer_timeout: Duration,
    pub snappy: bool,
    pub deflate: bool,
    pub max_deflate_level: u32,
    /// 0 = unlimited, as nsqd.
    pub max_channel_consumers: u32,
    /// Open TCP connections at once; the accept loop waits beyond it.
    pub max_connections: usize,
    /// Longest command line accepted.
    pub max_line_len: usize,
    /// A new connection must send the magic and its first command within this.
    pub handshake_timeout: Duration,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_root_ca_file: Option<PathBuf>,
    pub tls_required: bool,
    /// nsqd's `--tls-client-auth-policy`; setting one implies `tls_required`.
    pub tls_client_auth_policy: TlsClientAuthPolicy,
    pub tls_min_version: TlsMinVersion,
    /// HTTPS listener for the HTTP API (needs `tls_cert` and `tls_key`).
    pub https_address: Option<SocketAddr>,
    /// nsqd's `--auth-http-address`: with any, or with `auth_tokens_file`,
    /// clients must AUTH before SUB and the publish commands.
    pub auth_http_addresses: Vec<String>,
    pub auth_http_request_method: AuthHttpRequestMethod,
    /// Static AUTH secrets: a JSON object from secret to what an auth server
    /// would answer for it (identity, identity_url, authorizations).
    pub auth_tokens_file: Option<PathBuf>,
    /// When set, mutating HTTP endpoints require `Authorization: Bearer <it>`.
    pub admin_token: Option<String>,
    pub lookupd_tcp_addresses: Vec<String>,
    pub log_format: LogFormat,
    /// A tracing-subscriber EnvFilter directive, e.g. `info` or `triage_broker=debug`.
    pub log_level: String,
    /// Tier of a topic no rule matches.
    pub default_tier: Tier,
    /// What a full memory-tier channel does with one more message: spill it
    /// to the store (the default; nothing lost) or refuse the publish.
    pub memory_overflow: OverflowPolicy,
    /// When the persistent tier fsyncs, and so what a `kill -9` or a power
    /// loss can lose; see [`SyncPolicy`].
    pub sync_policy: SyncPolicy,
    /// On a clean shutdown, write what memory-tier channels hold to the store
    /// and bring it back at start, as nsqd does. A crash still loses it.
    pub save_memory_on_shutdown: bool,
    /// First match wins; `#ephemeral` topics are always memory.
    pub tier_rules: Vec<TierRule>,
}

impl LogFormat {
    /// Every format's name, as [`LogFormat::as_str`] spells it.
    pub const NAMES: &'static [&'static str] = &["text", "json"];

    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogFormat {
    type Err = ParseNameError;

    /// `text` or `json`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ParseNameError::new("log format", s, LogFormat::NAMES)),
        }
    }
}

const KIB: u32 = 1 << 10;
const MIB: u32 = 1 << 20;

impl Default for BrokerConfig {
    /// nsqd 1.3's defaults (`nsqd/options.go`) where nsqd has the option, and
    /// ours for the rest. This is the only place a default is written down.
    fn default() -> Self {
        BrokerConfig {
            tcp_address: SocketAddr::from(([127, 0, 0, 1], 4150)),
            http_address: SocketAddr::from(([127, 0, 0, 1], 4151)),
            broadcast_address: hostname(),
            data_path: PathBuf::from("./data"),
            mem_queue_size: 10_000,
            max_msg_size: MIB,
            max_body_size: 5 * MIB,
            msg_timeout: Duration::from_secs(60),
            max_msg_timeout: Duration::from_secs(15 * 60),
            max_rdy_count: 2500,
            max_req_timeout: Duration::from_secs(60 * 60),
            max_heartbeat_interval: Duration::from_secs(60),
            client_timeout: Duration::from_secs(60),
            max_output_buffer_size: u64::from(64 * KIB),
            max_output_buffer_timeout: Duration::from_secs(30),
            min_output_buffer_timeout: Duration::from_millis(25),
            snappy: true,
            deflate: true,
            max_deflate_level: 6,
            max_channel_consumers: 0,
            max_connections: 10_000,
            max_line_len: 1024,
            handshake_timeout: Duration::from_secs(10),
            tls_cert: None,
            tls_key: None,
            tls_root_ca_file: None,
            tls_required: false,
            tls_client_auth_policy: TlsClientAuthPolicy::None,
            tls_min_version: TlsMinVersion::Tls12,
            https_address: None,
            auth_http_addresses: Vec::new(),
            auth_http_request_method: AuthHttpRequestMethod::Get,
            auth_tokens_file: None,
            admin_token: None,
            lookupd_tcp_addresses: Vec::new(),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            default_tier: Tier::Persistent,
            memory_overflow: OverflowPolicy::Spill,
            sync_policy: SyncPolicy::Group,
            save_memory_on_shutdown: true,
            tier_rules: Vec::new(),
        }
    }
}

/// The OS hostname, as nsqd uses for `--broadcast-address`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The longest valid command line: `SUB <topic> <channel>` with 64-character
/// names (nsqd's limit), plus its newline.
pub const MIN_LINE_LEN: usize = "SUB ".len() + 64 + 1 + 64 + 1;

/// The largest `max_rdy_count`: IDENTIFY advertises it, and tokio-nsq reads
/// it as a u16.
pub const MAX_RDY_COUNT_LIMIT: u64 = u16::MAX as u64;

impl BrokerConfig {
    /// Checks every bound and every combination of keys, before anything
    /// starts. Does not touch the filesystem or the network.
    ///
    /// # Errors
    /// The first problem found, as [`ConfigError::Invalid`] naming the key, its
    /// value and what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http_address == self.tcp_address && self.tcp_address.port() != 0 {
            return Err(invalid(
                "http_address",
                self.http_address,
                "must differ from tcp_address: both cannot listen on one port",
            ));
        }
        if self.broadcast_address.trim().is_empty() {
            return Err(invalid(
                "broadcast_address",
                "\"\"",
                "must not be empty; it is the host name lookupd hands to clients",
            ));
        }
        if self.data_path.as_os_str().is_empty() {
            return Err(invalid(
                "data_path",
                "\"\"",
                "must not be empty; use \".\" for the working directory",
            ));
        }
        if self.mem_queue_size == 0 {
            return Err(invalid(
                "mem_queue_size",
                0,
                "must be at least 1: it bounds each memory-tier channel, which must hold a \
                 message to deliver it (nsqd's 0, \"everything to disk\", has no equivalent)",
            ));
        }
        if self.max_msg_size == 0 {
            return Err(invalid("max_msg_size", 0, "must be at least 1 byte"));
        }
        if self.max_msg_size > self.max_body_size {
            return Err(invalid(
                "max_msg_size",
                format_size(self.max_msg_size.into()),
                format!(
                    "must be at most max_body_size ({}): a message travels in a command body",
                    format_size(self.max_body_size.into())
                ),
            ));
        }
        let second = Duration::from_secs(1);
        if self.msg_timeout < second {
            return Err(invalid(
                "msg_timeout",
                format_duration(self.msg_timeout),
                "must be at least 1s, the least a client may ask for in IDENTIFY",
            ));
        }
        if self.msg_timeout > self.max_msg_timeout {
            return Err(invalid(
                "msg_timeout",
                format_duration(self.msg_timeout),
                format!(
                    "must be at most max_msg_timeout ({})",
                    format_duration(self.max_msg_timeout)
                ),
            ));
        }
        if !(1..=MAX_RDY_COUNT_LIMIT).contains(&self.max_rdy_count) {
            return Err(invalid(
                "max_rdy_count",
                self.max_rdy_count,
                "must be between 1 and 65535: IDENTIFY advertises it, and clients read it as a u16",
            ));
        }
        if self.max_heartbeat_interval < second {
            return Err(invalid(
                "max_heartbeat_interval",
                format_duration(self.max_heartbeat_interval),
                "must be at least 1s, the least a client may ask for in IDENTIFY",
            ));
        }
        if self.client_timeout < 2 * second {
            return Err(invalid(
                "client_timeout",
                format_duration(self.client_timeout),
                "must be at least 2s: the default heartbeat is half of it and must be at least 1s",
            ));
        }
        if self.max_output_buffer_size < 64 {
            return Err(invalid(
                "max_output_buffer_size",
                format_size(self.max_output_buffer_size),
                "must be at least 64 bytes, the least a client may ask for in IDENTIFY",
            ));
        }
        if self.min_output_buffer_timeout > self.max_output_buffer_timeout {
            return Err(invalid(
                "min_output_buffer_timeout",
                format_duration(self.min_output_buffer_timeout),
                format!(
                    "must be at most max_output_buffer_timeout ({})",
                    format_duration(self.max_output_buffer_timeout)
                ),
            ));
        }
        if !(1..=9).contains(&self.max_deflate_level) {
            return Err(invalid(
                "max_deflate_level",
                self.max_deflate_level,
                "must be between 1 and 9, deflate's levels",
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                "max_connections",
                0,
                "must be at least 1, or no client could connect",
            ));
        }
        if self.max_line_len < MIN_LINE_LEN {
            return Err(invalid(
                "max_line_len",
                self.max_line_len,
                format!(
                    "must be at least {MIN_LINE_LEN} bytes: SUB with a 64-character topic and \
                     channel must fit"
                ),
            ));
        }
        if self.handshake_timeout.is_zero() {
            return Err(invalid(
                "handshake_timeout",
                "0s",
                "must be more than 0, or every connection would time out at once",
            ));
        }
        self.validate_tls()?;
        for (i, address) in self.auth_http_addresses.iter().enumerate() {
            if !address.contains("://") && !is_host_port(address) {
                return Err(invalid(
                    &format!("auth_http_addresses[{i}]"),
                    format!("{address:?}"),
                    "expected HOST:PORT (then http://HOST:PORT/auth is asked) or a full URL",
                ));
            }
        }
        if self
            .admin_token
            .as_deref()
            .is_some_and(|t| t.trim().len() < 16)
        {
            return Err(invalid(
                "admin_token",
                "(hidden)",
                "must be at least 16 characters: it guards every mutating HTTP endpoint",
            ));
        }
        for (i, address) in self.lookupd_tcp_addresses.iter().enumerate() {
            if !is_host_port(address) {
                return Err(invalid(
                    &format!("lookupd_tcp_addresses[{i}]"),
                    format!("{address:?}"),
                    "expected HOST:PORT, e.g. 127.0.0.1:4160",
                ));
            }
        }
        if self.log_level.trim().is_empty() {
            return Err(invalid(
                "log_level",
                "\"\"",
                "must not be empty; use debug, info, warn or error, or a filter like \
                 triage_broker=debug",
            ));
        }
        if let SyncPolicy::Interval(interval) = self.sync_policy {
            if let Err(reason) = check_interval(interval) {
                return Err(invalid(
                    "sync_policy",
                    format!("{:?}", self.sync_policy.to_string()),
                    reason,
                ));
            }
        }
        for (i, rule) in self.tier_rules.iter().enumerate() {
            if let Err((field, reason)) = rule.settings.check(rule.tier, self.max_req_timeout) {
                let value = match field {
                    "delay" => format!("{:?}", rule.settings.delay),
                    _ => format!("{:?}", rule.settings.batch_window),
                };
                return Err(invalid(&format!("tier_rules[{i}].{field}"), value, reason));
            }
        }
        self.tier_matcher().map(drop)
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(invalid(
                    "tls_key",
                    "(unset)",
                    "must be set when tls_cert is: TLS needs both",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls_cert",
                    "(unset)",
                    "must be set when tls_key is: TLS needs both",
                ))
            }
            _ => {}
        }
        if self.tls_cert.is_none() {
            if self.tls_required {
                return Err(invalid(
                    "tls_required",
                    true,
                    "needs tls_cert and tls_key, or no client could ever connect",
                ));
            }
            if let Some(ca) = &self.tls_root_ca_file {
                return Err(invalid(
                    "tls_root_ca_file",
                    format!("{:?}", ca.display().to_string()),
                    "needs tls_cert and tls_key: client certificates are checked only over TLS",
                ));
            }
            if self.tls_client_auth_policy != TlsClientAuthPolicy::None {
                return Err(invalid(
                    "tls_client_auth_policy",
                    self.tls_client_auth_policy,
                    "needs tls_cert and tls_key: client certificates exist only over TLS",
                ));
            }
            if let Some(https) = self.https_address {
                return Err(invalid(
                    "https_address",
                    https,
                    "needs tls_cert and tls_key to serve HTTPS",
                ));
            }
        }
        if self.tls_client_auth_policy == TlsClientAuthPolicy::RequireVerify
            && self.tls_root_ca_file.is_none()
        {
            return Err(invalid(
                "tls_client_auth_policy",
                self.tls_client_auth_policy,
                "needs tls_root_ca_file, the CA that client certificates must chain to",
            ));
        }
        if let Some(https) = self.https_address {
            if https == self.http_address || https == self.tcp_address {
                return Err(invalid(
                    "https_address",
                    https,
                    "must differ from http_address and tcp_address",
                ));
            }
        }
        Ok(())
    }

    /// Whether clients must AUTH before SUB, PUB, MPUB and DPUB.
    pub fn requires_auth(&self) -> bool {
        !self.auth_http_addresses.is_empty() || self.auth_tokens_file.is_some()
    }

    /// Whether clients must upgrade to TLS before any command but IDENTIFY:
    /// `tls_required`, or any client-certificate policy (as nsqd).
    pub fn requires_tls(&self) -> bool {
        self.tls_required || self.tls_client_auth_policy != TlsClientAuthPolicy::None
    }

    /// The tier rules compiled once, for the broker to keep and ask per topic.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `tier_rules[i].pattern` when a pattern is
    /// empty or not a glob ([`BrokerConfig::validate`] reports the same).
    pub fn tier_matcher(&self) -> Result<TierMatcher, ConfigError> {
        TierMatcher::new(&self.tier_rules, self.default_tier)
    }
}

fn invalid(key: &str, value: impl Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.into(),
        origin: None,
    }
}

/// `host:port` or `[v6]:port` with a port from 1 to 65535; the host is not
/// resolved here.
fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => !host.is_empty() && !host.contains(':'),
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}
