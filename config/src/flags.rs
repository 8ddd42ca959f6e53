//! `triaged`'s command line: nsqd's flag names, so scripts and client test
//! suites that start nsqd can start triaged instead.
//!
//! Every field is an `Option` (or an empty `Vec`): a flag that is not given
//! leaves the lower layers (file, env, defaults) alone. Flags take the same
//! text as `TRIAGE_*` variables; the parsers here are shared with
//! [`crate::load`] so both read `60s` or `1 MiB` the same way.
//!
//! nsqd's Go `flag` package also accepts `-flag value` with one dash; run the
//! arguments through [`normalize_nsqd_args`] first (or use
//! [`BrokerArgs::parse_args`], which does).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser};

use crate::auth::AuthHttpRequestMethod;
use crate::broker::LogFormat;
use crate::sync::SyncPolicy;
use crate::tier::{OverflowPolicy, ParseNameError, Tier, TierRule};
use crate::tls::{TlsClientAuthPolicy, TlsMinVersion};
use crate::units::{parse_duration, parse_size};

/// What `--version` prints after the program name: `triaged v0.1.0 (nsqd-compatible)`.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"), " (nsqd-compatible)");

/// The whole `--version` line, `triaged v0.1.0 (nsqd-compatible)`.
pub fn version_line() -> String {
    format!("triaged {VERSION}")
}

/// `triaged`'s flags. Defaults are not repeated here: they live in
/// [`crate::BrokerConfig::default`] and docs/configuration.md.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "triaged",
    version = VERSION,
    about = "triage broker: an NSQ-compatible message broker with memory, persistent and delayed tiers",
    after_help = "Precedence: defaults < --config file < TRIAGE_* environment < flags. \
                  Single-dash flags (-tcp-address) work as in nsqd. \
                  Every key is described in docs/configuration.md."
)]
pub struct BrokerArgs {
    /// Path to a TOML config file (see triaged.example.toml); also TRIAGE_CONFIG
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// ADDR:PORT to listen on for TCP clients (`:4150` = every interface)
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    pub tcp_address: Option<SocketAddr>,
    /// ADDR:PORT to listen on for HTTP clients
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    pub http_address: Option<SocketAddr>,
    /// Address registered with lookupd (defaults to the OS hostname)
    #[arg(long, value_name = "HOST")]
    pub broadcast_address: Option<String>,
    /// Directory for the persistent and delayed tiers
    #[arg(long, value_name = "DIR")]
    pub data_path: Option<PathBuf>,
    /// Messages queued in memory per memory-tier channel (and channel-less topic)
    #[arg(long, value_name = "N", value_parser = count::<u64>)]
    pub mem_queue_size: Option<u64>,
    /// Largest single message (bytes, or e.g. 1MiB)
    #[arg(long, value_name = "SIZE", value_parser = size::<u32>)]
    pub max_msg_size: Option<u32>,
    /// Largest command body, e.g. a whole MPUB
    #[arg(long, value_name = "SIZE", value_parser = size::<u32>)]
    pub max_body_size: Option<u32>,
    /// Default time before an unfinished in-flight message is requeued
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub msg_timeout: Option<Duration>,
    /// Longest msg_timeout a client may ask for
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_msg_timeout: Option<Duration>,
    /// Largest RDY a client may send (1..65535)
    #[arg(long, value_name = "N", value_parser = count::<u64>)]
    pub max_rdy_count: Option<u64>,
    /// Longest REQ delay and DPUB defer
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_req_timeout: Option<Duration>,
    /// Longest heartbeat interval a client may ask for
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_heartbeat_interval: Option<Duration>,
    /// Silence after which a client is dropped; heartbeats every half of it
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub client_timeout: Option<Duration>,
    /// Largest output buffer a client may ask for
    #[arg(long, value_name = "SIZE", value_parser = size::<u64>)]
    pub max_output_buffer_size: Option<u64>,
    /// Longest output buffer flush timeout a client may ask for
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub max_output_buffer_timeout: Option<Duration>,
    /// Shortest output buffer flush timeout a client may ask for
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub min_output_buffer_timeout: Option<Duration>,
    /// Offer snappy compression (`--snappy` or `--snappy=false`)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = bool_value)]
    pub snappy: Option<bool>,
    /// Offer deflate compression (`--deflate` or `--deflate=false`)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = bool_value)]
    pub deflate: Option<bool>,
    /// Highest deflate level a client may negotiate (1..9)
    #[arg(long, value_name = "N", value_parser = count::<u32>)]
    pub max_deflate_level: Option<u32>,
    /// Consumers per channel at most; 0 = unlimited
    #[arg(long, value_name = "N", value_parser = count::<u32>)]
    pub max_channel_consumers: Option<u32>,
    /// TLS certificate file (PEM)
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key file (PEM)
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA file for verifying client certificates
    #[arg(long, value_name = "FILE")]
    pub tls_root_ca_file: Option<PathBuf>,
    /// Refuse clients that do not upgrade to TLS (`--tls-required`,
    /// `--tls-required=false`; nsqd's `tcp-https` means true)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = tls_required)]
    pub tls_required: Option<bool>,
    /// Client certificates: none, require (any), require-verify (against
    /// --tls-root-ca-file); any but none implies --tls-required
    #[arg(long, value_name = "POLICY", value_parser = name::<TlsClientAuthPolicy>)]
    pub tls_client_auth_policy: Option<TlsClientAuthPolicy>,
    /// Lowest TLS version: tls1.2 or tls1.3 (nsqd's ssl3.0, tls1.0 and
    /// tls1.1 mean tls1.2: nothing older is ever spoken)
    #[arg(long, value_name = "VERSION", value_parser = name::<TlsMinVersion>)]
    pub tls_min_version: Option<TlsMinVersion>,
    /// HTTPS listener for the HTTP API (needs --tls-cert and --tls-key)
    #[arg(long, value_name = "ADDR", value_parser = socket_addr)]
    pub https_address: Option<SocketAddr>,
    /// Auth server (HOST:PORT, or a full URL) that AUTH secrets are checked
    /// against, as nsqd's (repeat for several; tried in random order)
    #[arg(long = "auth-http-address", value_name = "ADDR")]
    pub auth_http_address: Vec<String>,
    /// How the auth server is asked: get or post
    #[arg(long, value_name = "METHOD", value_parser = name::<AuthHttpRequestMethod>)]
    pub auth_http_request_method: Option<AuthHttpRequestMethod>,
    /// JSON file of static AUTH secrets, each with an auth server's answer
    #[arg(long, value_name = "FILE")]
    pub auth_tokens_file: Option<PathBuf>,
    /// Bearer token that mutating HTTP endpoints require (prefer the
    /// environment or the config file: flags show in `ps`)
    #[arg(long, value_name = "TOKEN")]
    pub admin_token: Option<String>,
    /// lookupd TCP address to register with (repeat for several)
    #[arg(long = "lookupd-tcp-address", value_name = "ADDR")]
    pub lookupd_tcp_address: Vec<String>,

    /// Open TCP connections at most; the accept loop waits beyond it
    #[arg(long, value_name = "N", value_parser = count::<usize>)]
    pub max_connections: Option<usize>,
    /// Longest command line accepted
    #[arg(long, value_name = "SIZE", value_parser = size::<usize>)]
    pub max_line_len: Option<usize>,
    /// Time a new connection has to send the magic and its first command
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    pub handshake_timeout: Option<Duration>,
    /// Log format: text or json
    #[arg(long, value_name = "FORMAT", value_parser = name::<LogFormat>)]
    pub log_format: Option<LogFormat>,
    /// Log filter: debug, info, warn, error, or e.g. triage_broker=debug
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Tier of topics no rule matches: memory, persistent or delayed
    #[arg(long, value_name = "TIER", value_parser = name::<Tier>)]
    pub default_tier: Option<Tier>,
    /// What a full memory-tier channel does with more: spill (to the store; default) or reject
    #[arg(long, value_name = "POLICY", value_parser = name::<OverflowPolicy>)]
    pub memory_overflow: Option<OverflowPolicy>,
    /// When the persistent tier fsyncs: always, group, `interval:<ms>` or never
    /// (what each loses on kill -9 and power loss: docs/configuration.md)
    #[arg(long, value_name = "POLICY", value_parser = sync_policy)]
    pub sync_policy: Option<SyncPolicy>,
    /// On a clean shutdown, save what memory-tier channels hold and restore it
    /// at start (`--save-memory-on-shutdown=false` to drop it instead)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = bool_value)]
    pub save_memory_on_shutdown: Option<bool>,
    /// Tier rule PATTERN=TIER, e.g. 'tickets.*=persistent' (repeat; first match wins;
    /// replaces the file's rules)
    #[arg(long = "tier-rule", value_name = "PATTERN=TIER", value_parser = tier_rule)]
    pub tier_rule: Vec<TierRule>,

    #[command(flatten)]
    pub ignored: IgnoredNsqdArgs,
}

impl BrokerArgs {
    /// Parses nsqd-style arguments (the program name first, as
    /// `std::env::args()` gives them) after [`normalize_nsqd_args`]; on an
    /// error, or for `--help`/`--version`, prints and exits as clap does.
    pub fn parse_args(args: impl IntoIterator<Item = String>) -> Self {
        Self::parse_from(normalize_nsqd_args(args))
    }

    /// Like [`BrokerArgs::parse_args`] but returns clap's error (which also
    /// carries `--help` and `--version` output) instead of exiting.
    ///
    /// # Errors
    /// An unknown flag, a missing or malformed value, or a help/version request.
    pub fn try_parse_args(args: impl IntoIterator<Item = String>) -> Result<Self, clap::Error> {
        Self::try_parse_from(normalize_nsqd_args(args))
    }
}

/// nsqd flags that triaged accepts so that commands written for nsqd run
/// unchanged, but that have no effect here (their features are Go- or
/// diskqueue-specific, or not built). [`IgnoredNsqdArgs::given`] lists the
/// ones present, for a startup warning. `--sync-every` and `--sync-timeout`
/// tune nsqd's diskqueue; here `--sync-policy` says when the persistent tier
/// fsyncs.
///
/// nsqd's `--auth-fail-*` flags are deliberately not here: ignoring them
/// would silently drop a security setting.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "nsqd flags accepted for compatibility and ignored")]
pub struct IgnoredNsqdArgs {
    /// Ignored (deprecated in nsqd too); use --log-level
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = bool_value)]
    pub verbose: Option<bool>,
    /// Ignored: message ids here do not embed a node id
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Ignored (deprecated in nsqd)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = bool_value)]
    pub worker_id: Option<bool>,
    /// Ignored: log prefix
    #[arg(long, value_name = "PREFIX", allow_hyphen_values = true)]
    pub log_prefix: Option<String>,
    /// Ignored: timeout for nsqd's outgoing HTTP
    #[arg(long, value_name = "DURATION")]
    pub http_client_connect_timeout: Option<String>,
    /// Ignored: timeout for nsqd's outgoing HTTP
    #[arg(long, value_name = "DURATION")]
    pub http_client_request_timeout: Option<String>,
    /// Ignored: nsqd diskqueue file size
    #[arg(long, value_name = "BYTES")]
    pub max_bytes_per_file: Option<String>,
    /// Ignored: nsqd diskqueue fsync batch; use --sync-policy
    #[arg(long, value_name = "N")]
    pub sync_every: Option<String>,
    /// Ignored: nsqd diskqueue fsync interval; use --sync-policy
    #[arg(long, value_name = "DURATION")]
    pub sync_timeout: Option<String>,
    /// Ignored: nsqd timeout scanner tuning
    #[arg(long, value_name = "N")]
    pub queue_scan_worker_pool_max: Option<String>,
    /// Ignored: nsqd timeout scanner tuning
    #[arg(long, value_name = "N")]
    pub queue_scan_selection_count: Option<String>,
    /// Ignored: default client output buffer timeout
    #[arg(long, value_name = "DURATION")]
    pub output_buffer_timeout: Option<String>,
    /// Ignored: statsd (use GET /metrics)
    #[arg(long, value_name = "ADDR")]
    pub statsd_address: Option<String>,
    /// Ignored: statsd
    #[arg(long, value_name = "DURATION")]
    pub statsd_interval: Option<String>,
    /// Ignored: statsd
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = bool_value)]
    pub statsd_mem_stats: Option<bool>,
    /// Ignored: statsd
    #[arg(long, value_name = "PREFIX")]
    pub statsd_prefix: Option<String>,
    /// Ignored: statsd
    #[arg(long, value_name = "BYTES")]
    pub statsd_udp_packet_size: Option<String>,
    /// Ignored: latency percentiles (use GET /metrics)
    #[arg(long, value_name = "FLOAT")]
    pub e2e_processing_latency_percentile: Vec<String>,
    /// Ignored: latency percentile window
    #[arg(long, value_name = "DURATION")]
    pub e2e_processing_latency_window_time: Option<String>,
}

impl IgnoredNsqdArgs {
    /// The ignored flags that were given, as `--name`, for a startup warning.
    pub fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--verbose", self.verbose.is_some()),
            ("--node-id", self.node_id.is_some()),
            ("--worker-id", self.worker_id.is_some()),
            ("--log-prefix", self.log_prefix.is_some()),
            (
                "--http-client-connect-timeout",
                self.http_client_connect_timeout.is_some(),
            ),
            (
                "--http-client-request-timeout",
                self.http_client_request_timeout.is_some(),
            ),
            ("--max-bytes-per-file", self.max_bytes_per_file.is_some()),
            ("--sync-every", self.sync_every.is_some()),
            ("--sync-timeout", self.sync_timeout.is_some()),
            (
                "--queue-scan-worker-pool-max",
                self.queue_scan_worker_pool_max.is_some(),
            ),
            (
                "--queue-scan-selection-count",
                self.queue_scan_selection_count.is_some(),
            ),
            (
                "--output-buffer-timeout",
                self.output_buffer_timeout.is_some(),
            ),
            ("--statsd-address", self.statsd_address.is_some()),
            ("--statsd-interval", self.statsd_interval.is_some()),
            ("--statsd-mem-stats", self.statsd_mem_stats.is_some()),
            ("--statsd-prefix", self.statsd_prefix.is_some()),
            (
                "--statsd-udp-packet-size",
                self.statsd_udp_packet_size.is_some(),
            ),
            (
                "--e2e-processing-latency-percentile",
                !self.e2e_processing_latency_percentile.is_empty(),
            ),
            (
                "--e2e-processing-latency-window-time",
                self.e2e_processing_latency_window_time.is_some(),
            ),
        ];
        flags
            .into_iter()
            .filter_map(|(flag, given)| given.then_some(flag))
            .collect()
    }
}

/// Rewrites Go-style single-dash long flags into clap's double-dash form:
/// `-tcp-address 127.0.0.1:4150` and `-tcp-address=...` become
/// `--tcp-address ...`. An argument changes when it starts with exactly one
/// `-` followed by a name of two or more characters that does not start with
/// a digit or `.` (so `-h`, `-5` and `-1.5` are left alone). Nothing after a
/// bare `--` changes.
///
/// Without knowing which flags take values, a *value* that itself looks like
/// a single-dash flag (`-log-prefix -x-`) is rewritten too; write such values
/// as `-flag=value`.
pub fn normalize_nsqd_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut past_terminator = false;
    args.into_iter()
        .map(|arg| {
            if past_terminator {
                return arg;
            }
            if arg == "--" {
                past_terminator = true;
                return arg;
            }
            if is_single_dash_long(&arg) {
                format!("-{arg}")
            } else {
                arg
            }
        })
        .collect()
}

fn is_single_dash_long(arg: &str) -> bool {
    let Some(rest) = arg.strip_prefix('-') else {
        return false;
    };
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    match name.chars().next() {
        None | Some('-') => false,
        Some(first) if first.is_ascii_digit() || first == '.' => false,
        Some(_) => name.chars().count() >= 2,
    }
}

// Value parsers, shared by flags and `TRIAGE_*` variables. Each error says
// what was expected; clap and ConfigError add the flag or key.

/// What a duration looks like, for error messages.
pub(crate) const DURATION_EXPECTED: &str = "expected a duration like 60s, 1m30s or 100ms";
pub(crate) const SIZE_EXPECTED: &str = "expected a size like 1048576, 64KiB, 1 MiB or 5MB";
pub(crate) const COUNT_EXPECTED: &str = "expected a whole number";
pub(crate) const BOOL_EXPECTED: &str = "expected true or false";
pub(crate) const ADDRESS_EXPECTED: &str =
    "expected IP:PORT like 127.0.0.1:4150, or :PORT for every interface \
     (host names other than localhost are not resolved)";

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| format!("{DURATION_EXPECTED} ({e})"))
}

pub(crate) fn size<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let bytes = parse_size(s).map_err(|e| format!("{SIZE_EXPECTED} ({e})"))?;
    T::try_from(bytes).map_err(|_| format!("{SIZE_EXPECTED} (too large)"))
}

pub(crate) fn count<T: TryFrom<u64>>(s: &str) -> Result<T, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err(format!(
            "{COUNT_EXPECTED} (negative values are not allowed)"
        ));
    }
    let n: u64 = s
        .parse()
        .map_err(|_| format!("{COUNT_EXPECTED} (digits only)"))?;
    T::try_from(n).map_err(|_| format!("{COUNT_EXPECTED} (too large)"))
}

/// Go's `strconv.ParseBool` spellings, in any case: true/false, t/f, 1/0.
pub(crate) fn bool_value(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "1" => Ok(true),
        "false" | "f" | "0" => Ok(false),
        _ => Err(BOOL_EXPECTED.to_owned()),
    }
}

/// A bool, or nsqd's `tcp-https` (TLS required on TCP, plain HTTP allowed),
/// which is what `true` means here: the HTTP API has no TLS listener.
pub(crate) fn tls_required(s: &str) -> Result<bool, String> {
    if s.trim().eq_ignore_ascii_case("tcp-https") {
        return Ok(true);
    }
    bool_value(s).map_err(|_| format!("{BOOL_EXPECTED} (or tcp-https, which means true)"))
}

/// `IP:PORT`, `[IPv6]:PORT`, `localhost:PORT`, or `:PORT` for 0.0.0.0 (Go
/// listens on every interface for an empty host).
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port = |p: &str| p.parse::<u16>().map_err(|_| ADDRESS_EXPECTED.to_owned());
    if let Some(p) = s.strip_prefix(':') {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port(p)?)));
    }
    if let Some(p) = s.strip_prefix("localhost:") {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port(p)?)));
    }
    s.parse().map_err(|_| ADDRESS_EXPECTED.to_owned())
}

pub(crate) fn name<T: FromStr<Err = ParseNameError>>(s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|e: ParseNameError| format!("expected one of {}", e.allowed().join(", ")))
}

/// `always`, `group`, `interval:<ms>` or `never`; the error is
/// [`SyncPolicy::EXPECTED`] with the reason after it, as for durations.
pub(crate) fn sync_policy(s: &str) -> Result<SyncPolicy, String> {
    s.parse().map_err(|e: crate::sync::ParseSyncPolicyError| {
        format!("{} ({})", SyncPolicy::EXPECTED, e.reason())
    })
}

/// `PATTERN=TIER`, e.g. `tickets.*=persistent`.
pub(crate) fn tier_rule(s: &str) -> Result<TierRule, String> {
    let (pattern, tier) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected PATTERN=TIER, e.g. tickets.*=persistent".to_owned())?;
    Ok(TierRule {
        settings: Default::default(),
        pattern: pattern.trim().to_owned(),
        tier: name(tier)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    fn parse(args: &[&str]) -> BrokerArgs {
        let mut all = vec!["triaged"];
        all.extend_from_slice(args);
        BrokerArgs::try_parse_args(strings(&all)).unwrap()
    }

    fn parse_err(args: &[&str]) -> String {
        let mut all = vec!["triaged"];
        all.extend_from_slice(args);
        BrokerArgs::try_parse_args(strings(&all))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn normalizes_single_dash_long_flags() {
        let got = normalize_nsqd_args(strings(&[
            "nsqd",
            "-tcp-address",
            "127.0.0.1:4150",
            "-http-address=127.0.0.1:4151",
            "--data-path",
            "/tmp/x",
            "-h",
            "-V",
            "-5",
            "-1.5",
            "-",
            "-x=1",
            "--",
            "-tcp-address",
        ]));
        assert_eq!(
            got,
            strings(&[
                "nsqd",
                "--tcp-address",
                "127.0.0.1:4150",
                "--http-address=127.0.0.1:4151",
                "--data-path",
                "/tmp/x",
                "-h",
                "-V",
                "-5",
                "-1.5",
                "-",
                "-x=1",
                "--",
                "-tcp-address",
            ])
        );
    }

    #[test]
    fn nsqjs_command_line_parses() {
        let args = parse(&[
            "-http-address",
            "127.0.0.1:4151",
            "-tcp-address",
            "127.0.0.1:4150",
            "-broadcast-address",
            "127.0.0.1",
            "-data-path",
            "/tmp/nsq",
            "-tls-cert",
            "cert.pem",
            "-tls-key",
            "key.pem",
        ]);
        assert_eq!(args.tcp_address, Some("127.0.0.1:4150".parse().unwrap()));
        assert_eq!(args.http_address, Some("127.0.0.1:4151".parse().unwrap()));
        assert_eq!(args.broadcast_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(args.tls_key, Some(PathBuf::from("key.pem")));
    }

    #[test]
    fn go_nsq_and_pynsq_command_lines_parse() {
        let args = parse(&[
            "--data-path=/tmp",
            "--lookupd-tcp-address=127.0.0.1:4160",
            "--lookupd-tcp-address=127.0.0.1:4161",
            "--tls-cert=./test/server.pem",
            "--tls-key=./test/server.key",
            "--tls-root-ca-file=./test/ca.pem",
        ]);
        assert_eq!(
            args.lookupd_tcp_address,
            strings(&["127.0.0.1:4160", "127.0.0.1:4161"])
        );
        let args = parse(&["--verbose", "--snappy", "--tls-required"]);
        assert_eq!(args.snappy, Some(true));
        assert_eq!(args.deflate, None);
        assert_eq!(args.tls_required, Some(true));
        assert_eq!(args.ignored.given(), vec!["--verbose"]);
    }

    #[test]
    fn bool_flags_take_an_optional_value_after_equals() {
        let args = parse(&["--snappy=false", "--deflate=1", "--tls-required=tcp-https"]);
        assert_eq!(args.snappy, Some(false));
        assert_eq!(args.deflate, Some(true));
        assert_eq!(args.tls_required, Some(true));
        assert_eq!(parse(&["-tls-required=false"]).tls_required, Some(false));
        // As with Go's flag package, a bool never takes the next argument.
        assert!(parse_err(&["--snappy", "false"]).contains("false"));
        assert!(parse_err(&["--snappy=maybe"]).contains("expected true or false"));
    }

    #[test]
    fn typed_values_parse_with_units() {
        let args = parse(&[
            "--msg-timeout=1m30s",
            "--max-msg-size",
            "2MiB",
            "--max-body-size=10485760",
            "--max-rdy-count=100",
            "--tcp-address=:4150",
            "--http-address=localhost:0",
            "--default-tier=delayed",
            "--memory-overflow=reject",
            "--sync-policy=Interval:250ms",
            "--log-format=json",
            "--tier-rule=tickets.*=persistent",
            "--tier-rule",
            "batch-*=delayed",
        ]);
        assert_eq!(args.msg_timeout, Some(Duration::from_secs(90)));
        assert_eq!(args.max_msg_size, Some(2 << 20));
        assert_eq!(args.max_body_size, Some(10 << 20));
        assert_eq!(args.max_rdy_count, Some(100));
        assert_eq!(args.tcp_address, Some("0.0.0.0:4150".parse().unwrap()));
        assert_eq!(args.http_address, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(args.default_tier, Some(Tier::Delayed));
        assert_eq!(args.memory_overflow, Some(OverflowPolicy::Reject));
        assert_eq!(
            args.sync_policy,
            Some(SyncPolicy::Interval(Duration::from_millis(250)))
        );
        assert_eq!(
            parse(&["--sync-policy", "always"]).sync_policy,
            Some(SyncPolicy::Always)
        );
        assert_eq!(args.log_format, Some(LogFormat::Json));
        assert_eq!(
            args.tier_rule,
            vec![
                TierRule {
                    settings: Default::default(),
                    pattern: "tickets.*".into(),
                    tier: Tier::Persistent
                },
                TierRule {
                    settings: Default::default(),
                    pattern: "batch-*".into(),
                    tier: Tier::Delayed
                },
            ]
        );
    }

    #[test]
    fn bad_values_name_the_flag_and_the_expected_form() {
        let err = parse_err(&["--msg-timeout=abc"]);
        assert!(err.contains("--msg-timeout"), "{err}");
        assert!(err.contains("expected a duration like 60s"), "{err}");
        let err = parse_err(&["--msg-timeout=60"]);
        assert!(err.contains("needs a unit"), "{err}");
        let err = parse_err(&["--max-msg-size=8GiB"]);
        assert!(
            err.contains("--max-msg-size") && err.contains("too large"),
            "{err}"
        );
        let err = parse_err(&["--mem-queue-size=-1"]);
        assert!(err.contains("negative"), "{err}");
        let err = parse_err(&["--default-tier=disk"]);
        assert!(err.contains("memory, persistent, delayed"), "{err}");
        let err = parse_err(&["--tcp-address=example.com:4150"]);
        assert!(err.contains("IP:PORT"), "{err}");
        let err = parse_err(&["--sync-policy=sometimes"]);
        assert!(
            err.contains("--sync-policy")
                && err.contains("always, group, interval:<ms>")
                && err.contains("unknown policy"),
            "{err}"
        );
        let err = parse_err(&["--sync-policy=interval:0"]);
        assert!(err.contains("at least 1 ms"), "{err}");
        let err = parse_err(&["--tier-rule=tickets.*"]);
        assert!(err.contains("PATTERN=TIER"), "{err}");
    }

    #[test]
    fn ignored_nsqd_flags_are_accepted_and_reported() {
        let args = parse(&[
            "-node-id=7",
            "--sync-every",
            "2500",
            "--sync-timeout=2s",
            "--max-bytes-per-file=104857600",
            "--e2e-processing-latency-percentile=0.99",
            "--e2e-processing-latency-percentile=0.5",
            "--log-prefix=[nsqd] ",
        ]);
        assert_eq!(
            args.ignored.given(),
            vec![
                "--node-id",
                "--log-prefix",
                "--max-bytes-per-file",
                "--sync-every",
                "--sync-timeout",
                "--e2e-processing-latency-percentile",
            ]
        );
        assert!(BrokerArgs::default().ignored.given().is_empty());
    }

    #[test]
    fn auth_flags_take_nsqd_values() {
        let args = parse(&[
            "--auth-http-address=127.0.0.1:4181",
            "-auth-http-address=http://auth.example/v1/auth",
            "--auth-http-request-method=post",
        ]);
        assert_eq!(
            args.auth_http_address,
            ["127.0.0.1:4181", "http://auth.example/v1/auth"]
        );
        assert_eq!(
            args.auth_http_request_method,
            Some(AuthHttpRequestMethod::Post)
        );
        assert!(parse_err(&["--auth-http-request-method=put"]).contains("post"));
    }

    #[test]
    fn tls_flags_take_nsqd_values() {
        let args = parse(&[
            "--tls-client-auth-policy=require-verify",
            "-tls-min-version=tls1.0",
            "--https-address=127.0.0.1:4152",
        ]);
        assert_eq!(
            args.tls_client_auth_policy,
            Some(TlsClientAuthPolicy::RequireVerify)
        );
        assert_eq!(args.tls_min_version, Some(TlsMinVersion::Tls12));
        assert_eq!(args.https_address, Some("127.0.0.1:4152".parse().unwrap()));
        let err = parse_err(&["--tls-client-auth-policy=maybe"]);
        assert!(err.contains("require-verify"), "{err}");
    }

    #[test]
    fn version_names_the_crate_version() {
        let err = BrokerArgs::try_parse_args(strings(&["triaged", "-version"])).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayVersion);
        let expected = format!("triaged v{} (nsqd-compatible)", env!("CARGO_PKG_VERSION"));
        assert_eq!(err.to_string().trim_end(), expected);
        assert_eq!(version_line(), expected);
    }

    #[test]
    fn no_flags_means_nothing_set() {
        let args = parse(&[]);
        assert!(args.tcp_address.is_none() && args.snappy.is_none() && args.config.is_none());
        assert!(args.lookupd_tcp_address.is_empty() && args.tier_rule.is_empty());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        BrokerArgs::command().debug_assert();
    }
}
