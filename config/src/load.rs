//! Merging the layers: defaults < TOML file < `TRIAGE_*` environment < flags,
//! then [`BrokerConfig::validate`].
//!
//! The file and the environment go through one path: each is a `Source`
//! asked for every key in [`KEYS`] order by `apply`, so a key is read,
//! converted and reported the same way wherever it comes from. Flags arrive
//! already typed from clap and are copied over last. Every key set by a layer
//! records where it came from, so a validation error can say
//! `(from --max-rdy-count)` or `(from TRIAGE_MSG_TIMEOUT)`.
//!
//! In the TOML file, durations are strings (`"60s"`) or integers meaning
//! milliseconds (as in nsqd's config file); sizes are strings (`"1 MiB"`) or
//! integers meaning bytes. In the environment, values are written as on the
//! command line; lists are comma-separated; an empty value clears an optional
//! path or a list.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::BrokerConfig;
use crate::flags::{self, BrokerArgs};
use crate::tier::{TierRule, TopicSettings};

/// A configuration problem. Each message names the key, where its value came
/// from, and what would have been accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value that could not be read as its key's type.
    #[error("invalid value {value} for {key} (from {origin}): {problem}")]
    Parse {
        key: String,
        /// The value as written, quoted if it was text.
        value: String,
        origin: Origin,
        /// What was expected, and what was wrong.
        problem: String,
    },
    /// A value that was read but is out of bounds or conflicts with another.
    #[error("invalid {key} = {value}{}: {reason}", origin_suffix(.origin.as_ref()))]
    Invalid {
        /// The key, or an element of it: `tier_rules[1].pattern`.
        key: String,
        value: String,
        reason: String,
        /// Filled in by the loader; `None` from a bare [`BrokerConfig::validate`].
        origin: Option<Origin>,
    },
    #[error("unknown key {key:?} in config file {}{}", path.display(), did_you_mean(*.suggestion))]
    UnknownKey {
        key: String,
        path: PathBuf,
        /// The known key spelled most like it, if any is close.
        suggestion: Option<&'static str>,
    },
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },
}

impl ConfigError {
    /// The key the error is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Parse { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::UnknownKey { key, .. } => Some(key),
            ConfigError::ReadFile { .. } | ConfigError::Toml { .. } => None,
        }
    }
}

fn origin_suffix(origin: Option<&Origin>) -> String {
    origin.map_or_else(String::new, |o| format!(" (from {o})"))
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!("; did you mean {s:?}?"))
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    /// The variable's name, e.g. `TRIAGE_MSG_TIMEOUT`.
    Env(String),
    /// The flag, e.g. `--msg-timeout`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "config file {}", path.display()),
            Origin::Env(name) | Origin::Flag(name) => f.write_str(name),
        }
    }
}

/// Every configuration key: the TOML key and the [`BrokerConfig`] field name.
/// Its variable is [`env_var`]`(key)` and its flag [`flag_for`]`(key)`.
pub const KEYS: &[&str] = &[
    "tcp_address",
    "http_address",
    "broadcast_address",
    "data_path",
    "mem_queue_size",
    "max_msg_size",
    "max_body_size",
    "msg_timeout",
    "max_msg_timeout",
    "max_rdy_count",
    "max_req_timeout",
    "max_heartbeat_interval",
    "client_timeout",
    "max_output_buffer_size",
    "max_output_buffer_timeout",
    "min_output_buffer_timeout",
    "snappy",
    "deflate",
    "max_deflate_level",
    "max_channel_consumers",
    "max_connections",
    "max_line_len",
    "handshake_timeout",
    "tls_cert",
    "tls_key",
    "tls_root_ca_file",
    "tls_required",
    "tls_client_auth_policy",
    "tls_min_version",
    "https_address",
    "auth_http_addresses",
    "auth_http_request_method",
    "auth_tokens_file",
    "admin_token",
    "lookupd_tcp_addresses",
    "log_format",
    "log_level",
    "default_tier",
    "memory_overflow",
    "sync_policy",
    "save_memory_on_shutdown",
    "tier_rules",
];

/// The environment variable for the config file path, when `--config` is not given.
pub const CONFIG_ENV_VAR: &str = "TRIAGE_CONFIG";

/// The environment variable for `key`: `TRIAGE_` and the key in upper case.
pub fn env_var(key: &str) -> String {
    format!("TRIAGE_{}", key.to_ascii_uppercase())
}

/// The command-line flag for `key`: nsqd's name where nsqd has the option.
pub fn flag_for(key: &str) -> String {
    match key {
        "lookupd_tcp_addresses" => "--lookupd-tcp-address".to_owned(),
        "auth_http_addresses" => "--auth-http-address".to_owned(),
        "tier_rules" => "--tier-rule".to_owned(),
        _ => format!("--{}", key.replace('_', "-")),
    }
}

/// Loads the broker's configuration with the process environment.
///
/// # Errors
/// See [`load_broker_with_env`].
pub fn load_broker(args: &BrokerArgs) -> Result<BrokerConfig, ConfigError> {
    load_broker_with_env(args, &|name| {
        // Not-UTF-8 values are kept (lossily) so they fail to parse loudly
        // rather than being ignored.
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    })
}

/// Defaults, then the TOML file (`--config`, else `TRIAGE_CONFIG`), then
/// `TRIAGE_*` variables looked up with `env`, then `args`; then validation.
/// Tests pass their own `env` instead of changing the process's.
///
/// # Errors
/// The file cannot be read or is not TOML, has an unknown key, a value cannot
/// be parsed, or the result fails [`BrokerConfig::validate`].
pub fn load_broker_with_env(
    args: &BrokerArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BrokerConfig, ConfigError> {
    let mut config = BrokerConfig::default();
    let mut origins = Origins::default();
    let file = args.config.clone().or_else(|| {
        env(CONFIG_ENV_VAR)
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
    });
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadFile {
            path: path.clone(),
            source,
        })?;
        apply_toml(&mut config, &text, &path, &mut origins)?;
    }
    apply(&mut config, &mut EnvSource { env }, &mut origins)?;
    apply_flags(&mut config, args, &mut origins);
    config.validate().map_err(|e| origins.attach(e))?;
    Ok(config)
}

/// Defaults, then the TOML `text`, then validation: for tests and for
/// checking a file's contents without the environment or flags.
///
/// # Errors
/// As [`load_broker_with_env`], with `<toml>` as the file name.
pub fn broker_from_toml(text: &str) -> Result<BrokerConfig, ConfigError> {
    let mut config = BrokerConfig::default();
    let mut origins = Origins::default();
    apply_toml(&mut config, text, Path::new("<toml>"), &mut origins)?;
    config.validate().map_err(|e| origins.attach(e))?;
    Ok(config)
}

/// toml's own `Display` is a multi-line snippet with a caret; an error at
/// start-up should be one sentence.
fn one_line_toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim_end_matches('.').replace('\n', " ");
    match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("{message} at line {line}, column {column}")
        }
        None => message,
    }
}

/// Checks a broker config file's `text` without stopping at the first
/// problem, for `triagectl config check`: a TOML syntax error (alone, since
/// nothing can be read past it), else every unknown key, then every value
/// that cannot be read; when all were read, the first rule
/// [`BrokerConfig::validate`] finds broken. Empty: the file is good.
pub fn check_broker_toml(text: &str, path: &Path) -> Vec<ConfigError> {
    let mut config = BrokerConfig::default();
    let mut origins = Origins::default();
    let errors = toml_errors(&mut config, text, path, &mut origins);
    if !errors.is_empty() {
        return errors;
    }
    config
        .validate()
        .map_err(|e| origins.attach(e))
        .err()
        .into_iter()
        .collect()
}

fn apply_toml(
    config: &mut BrokerConfig,
    text: &str,
    path: &Path,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    toml_errors(config, text, path, origins)
        .into_iter()
        .next()
        .map_or(Ok(()), Err)
}

/// Reads the file's keys into `config`; every problem found on the way.
fn toml_errors(
    config: &mut BrokerConfig,
    text: &str,
    path: &Path,
    origins: &mut Origins,
) -> Vec<ConfigError> {
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => {
            return vec![ConfigError::Toml {
                path: path.to_owned(),
                message: one_line_toml_error(text, &e),
            }]
        }
    };
    let mut errors: Vec<ConfigError> = table
        .keys()
        .filter(|key| !KEYS.contains(&key.as_str()))
        .map(|key| ConfigError::UnknownKey {
            key: key.clone(),
            path: path.to_owned(),
            suggestion: closest_key(key),
        })
        .collect();
    errors.extend(apply_all(
        config,
        &mut FileSource {
            table,
            origin: Origin::File(path.to_owned()),
        },
        origins,
    ));
    errors
}

/// A value before conversion: text from the environment, or a TOML value.
enum Raw {
    Text(String),
    Toml(toml::Value),
}

impl Raw {
    /// The value as the user wrote it, for error messages.
    fn shown(&self) -> String {
        let shown = match self {
            Raw::Text(text) => format!("{text:?}"),
            Raw::Toml(value) => value.to_string(),
        };
        if shown.chars().count() > 80 {
            format!("{}...", shown.chars().take(77).collect::<String>())
        } else {
            shown
        }
    }

    /// The text of a string value, or `Err(expected)` for other TOML types.
    fn text(&self, expected: &str) -> Result<&str, String> {
        match self {
            Raw::Text(text) | Raw::Toml(toml::Value::String(text)) => Ok(text),
            Raw::Toml(other) => Err(format!("{expected} (got a {})", other.type_str())),
        }
    }

    /// A non-negative TOML integer, if this is an integer.
    fn integer(&self) -> Option<Result<u64, String>> {
        match self {
            Raw::Toml(toml::Value::Integer(n)) => {
                Some(u64::try_from(*n).map_err(|_| "negative values are not allowed".to_owned()))
            }
            _ => None,
        }
    }
}

/// One layer below the flags.
trait Source {
    /// The value of `key` in this layer, if set, removing it.
    fn take(&mut self, key: &'static str) -> Option<(Raw, Origin)>;
}

struct FileSource {
    table: toml::Table,
    origin: Origin,
}

impl Source for FileSource {
    fn take(&mut self, key: &'static str) -> Option<(Raw, Origin)> {
        let value = self.table.remove(key)?;
        Some((Raw::Toml(value), self.origin.clone()))
    }
}

struct EnvSource<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Source for EnvSource<'_> {
    fn take(&mut self, key: &'static str) -> Option<(Raw, Origin)> {
        let name = env_var(key);
        let value = (self.env)(&name)?;
        Some((Raw::Text(value), Origin::Env(name)))
    }
}

/// Which layer set each key last.
#[derive(Default)]
struct Origins(BTreeMap<&'static str, Origin>);

impl Origins {
    /// Adds the origin of the offending key to a validation error.
    fn attach(&self, error: ConfigError) -> ConfigError {
        match error {
            ConfigError::Invalid {
                key,
                value,
                reason,
                origin: None,
            } => {
                let field = key.split('[').next().unwrap_or(&key);
                let origin = self.0.get(field).cloned().unwrap_or(Origin::Default);
                ConfigError::Invalid {
                    key,
                    value,
                    reason,
                    origin: Some(origin),
                }
            }
            other => other,
        }
    }
}

/// Reads every key the source has into `config`; the first value that
/// cannot be read is the error.
fn apply(
    config: &mut BrokerConfig,
    source: &mut dyn Source,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    apply_all(config, source, origins)
        .into_iter()
        .next()
        .map_or(Ok(()), Err)
}

/// Reads every key the source has into `config`, and returns an error for
/// each value that cannot be read (its key keeps its previous value). One
/// line per key; the key order is [`KEYS`] (a test holds them together).
fn apply_all(
    config: &mut BrokerConfig,
    source: &mut dyn Source,
    origins: &mut Origins,
) -> Vec<ConfigError> {
    let mut set = Setter {
        source,
        origins,
        errors: Vec::new(),
    };
    set.key("tcp_address", &mut config.tcp_address, address);
    set.key("http_address", &mut config.http_address, address);
    set.key("broadcast_address", &mut config.broadcast_address, string);
    set.key("data_path", &mut config.data_path, path);
    set.key("mem_queue_size", &mut config.mem_queue_size, count);
    set.key("max_msg_size", &mut config.max_msg_size, size);
    set.key("max_body_size", &mut config.max_body_size, size);
    set.key("msg_timeout", &mut config.msg_timeout, duration);
    set.key("max_msg_timeout", &mut config.max_msg_timeout, duration);
    set.key("max_rdy_count", &mut config.max_rdy_count, count);
    set.key("max_req_timeout", &mut config.max_req_timeout, duration);
    let heartbeat = &mut config.max_heartbeat_interval;
    set.key("max_heartbeat_interval", heartbeat, duration);
    set.key("client_timeout", &mut config.client_timeout, duration);
    let buffer_size = &mut config.max_output_buffer_size;
    set.key("max_output_buffer_size", buffer_size, size);
    let max_buffer_timeout = &mut config.max_output_buffer_timeout;
    set.key("max_output_buffer_timeout", max_buffer_timeout, duration);
    let min_buffer_timeout = &mut config.min_output_buffer_timeout;
    set.key("min_output_buffer_timeout", min_buffer_timeout, duration);
    set.key("snappy", &mut config.snappy, boolean);
    set.key("deflate", &mut config.deflate, boolean);
    set.key("max_deflate_level", &mut config.max_deflate_level, count);
    set.key(
        "max_channel_consumers",
        &mut config.max_channel_consumers,
        count,
    );
    set.key("max_connections", &mut config.max_connections, count);
    set.key("max_line_len", &mut config.max_line_len, size);
    set.key("handshake_timeout", &mut config.handshake_timeout, duration);
    set.key("tls_cert", &mut config.tls_cert, optional_path);
    set.key("tls_key", &mut config.tls_key, optional_path);
    set.key(
        "tls_root_ca_file",
        &mut config.tls_root_ca_file,
        optional_path,
    );
    set.key("tls_required", &mut config.tls_required, tls_required);
    let policy = &mut config.tls_client_auth_policy;
    set.key("tls_client_auth_policy", policy, name);
    set.key("tls_min_version", &mut config.tls_min_version, name);
    set.key("https_address", &mut config.https_address, optional_address);
    set.key("auth_http_addresses", &mut config.auth_http_addresses, list);
    let method = &mut config.auth_http_request_method;
    set.key("auth_http_request_method", method, name);
    set.key(
        "auth_tokens_file",
        &mut config.auth_tokens_file,
        optional_path,
    );
    set.key("admin_token", &mut config.admin_token, optional_string);
    let lookupd = &mut config.lookupd_tcp_addresses;
    set.key("lookupd_tcp_addresses", lookupd, list);
    set.key("log_format", &mut config.log_format, name);
    set.key("log_level", &mut config.log_level, string);
    set.key("default_tier", &mut config.default_tier, name);
    set.key("memory_overflow", &mut config.memory_overflow, name);
    set.key("sync_policy", &mut config.sync_policy, sync_policy);
    let save = &mut config.save_memory_on_shutdown;
    set.key("save_memory_on_shutdown", save, boolean);
    set.key("tier_rules", &mut config.tier_rules, tier_rules);
    set.errors
}

struct Setter<'a> {
    source: &'a mut dyn Source,
    origins: &'a mut Origins,
    errors: Vec<ConfigError>,
}

impl Setter<'_> {
    fn key<T>(&mut self, key: &'static str, field: &mut T, convert: fn(&Raw) -> Result<T, String>) {
        let Some((raw, origin)) = self.source.take(key) else {
            return;
        };
        match convert(&raw) {
            Ok(value) => {
                *field = value;
                self.origins.0.insert(key, origin);
            }
            Err(problem) => self.errors.push(ConfigError::Parse {
                key: key.to_owned(),
                value: raw.shown(),
                origin,
                problem,
            }),
        }
    }
}

fn address(raw: &Raw) -> Result<std::net::SocketAddr, String> {
    flags::socket_addr(raw.text(flags::ADDRESS_EXPECTED)?)
}

fn optional_address(raw: &Raw) -> Result<Option<std::net::SocketAddr>, String> {
    let text = raw.text(flags::ADDRESS_EXPECTED)?;
    if text.is_empty() {
        return Ok(None);
    }
    flags::socket_addr(text).map(Some)
}

fn optional_string(raw: &Raw) -> Result<Option<String>, String> {
    let text = raw.text("expected a string, or \"\" for none")?;
    Ok((!text.is_empty()).then(|| text.to_owned()))
}

fn string(raw: &Raw) -> Result<String, String> {
    raw.text("expected a string").map(str::to_owned)
}

fn path(raw: &Raw) -> Result<PathBuf, String> {
    raw.text("expected a path").map(PathBuf::from)
}

/// An empty string clears the path.
fn optional_path(raw: &Raw) -> Result<Option<PathBuf>, String> {
    let text = raw.text("expected a path, or \"\" for none")?;
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

fn count<T: TryFrom<u64>>(raw: &Raw) -> Result<T, String> {
    if let Some(n) = raw.integer() {
        let n = n.map_err(|e| format!("{} ({e})", flags::COUNT_EXPECTED))?;
        return T::try_from(n).map_err(|_| format!("{} (too large)", flags::COUNT_EXPECTED));
    }
    flags::count(raw.text(flags::COUNT_EXPECTED)?)
}

/// Text like `"1 MiB"`, or a TOML integer of bytes.
fn size<T: TryFrom<u64>>(raw: &Raw) -> Result<T, String> {
    if let Some(n) = raw.integer() {
        let n = n.map_err(|e| format!("{} ({e})", flags::SIZE_EXPECTED))?;
        return T::try_from(n).map_err(|_| format!("{} (too large)", flags::SIZE_EXPECTED));
    }
    flags::size(raw.text(flags::SIZE_EXPECTED)?)
}

/// Text like `"60s"`, or a TOML integer of milliseconds (nsqd's config file
/// reads integers that way too).
fn duration(raw: &Raw) -> Result<Duration, String> {
    const EXPECTED: &str =
        "expected a duration like \"60s\" or \"1m30s\", or an integer of milliseconds";
    if let Some(ms) = raw.integer() {
        return ms
            .map(Duration::from_millis)
            .map_err(|e| format!("{EXPECTED} ({e})"));
    }
    match raw {
        Raw::Text(text) => flags::duration(text),
        Raw::Toml(_) => flags::duration(raw.text(EXPECTED)?),
    }
}

fn boolean(raw: &Raw) -> Result<bool, String> {
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        _ => flags::bool_value(raw.text(flags::BOOL_EXPECTED)?),
    }
}

fn tls_required(raw: &Raw) -> Result<bool, String> {
    match raw {
        Raw::Toml(toml::Value::Boolean(b)) => Ok(*b),
        _ => flags::tls_required(raw.text(flags::BOOL_EXPECTED)?),
    }
}

fn name<T: std::str::FromStr<Err = crate::tier::ParseNameError>>(raw: &Raw) -> Result<T, String> {
    flags::name(raw.text("expected a name")?)
}

/// `"always"`, `"group"`, `"interval:200"` or `"never"`.
fn sync_policy(raw: &Raw) -> Result<crate::sync::SyncPolicy, String> {
    flags::sync_policy(raw.text(crate::sync::SyncPolicy::EXPECTED)?)
}

/// A TOML array of strings, or comma-separated text (empty text is an empty list).
fn list(raw: &Raw) -> Result<Vec<String>, String> {
    const EXPECTED: &str = "expected a list of strings like [\"127.0.0.1:4160\"]";
    match raw {
        Raw::Toml(toml::Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(format!("{EXPECTED} (got a {} in it)", other.type_str())),
            })
            .collect(),
        _ => Ok(raw
            .text(EXPECTED)?
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()),
    }
}

/// `[[tier_rules]]` tables with `pattern` and `tier` and, optionally, the
/// topic settings `delay`, `batch_window` and `max_attempts`; or text
/// `PATTERN=TIER,PATTERN=TIER` (empty text is no rules).
fn tier_rules(raw: &Raw) -> Result<Vec<TierRule>, String> {
    const EXPECTED: &str = "expected [[tier_rules]] tables with pattern and tier";
    const ALLOWED: &[&str] = &["pattern", "tier", "delay", "batch_window", "max_attempts"];
    let items = match raw {
        Raw::Toml(toml::Value::Array(items)) => items,
        Raw::Text(text) => {
            return text
                .split(',')
                .filter(|rule| !rule.trim().is_empty())
                .map(flags::tier_rule)
                .collect();
        }
        Raw::Toml(other) => return Err(format!("{EXPECTED} (got a {})", other.type_str())),
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let toml::Value::Table(table) = item else {
                return Err(format!("{EXPECTED} (entry {i} is a {})", item.type_str()));
            };
            if let Some(key) = table.keys().find(|k| !ALLOWED.contains(&k.as_str())) {
                return Err(format!(
                    "{EXPECTED} (entry {i} has unknown key {key:?}; allowed: {})",
                    ALLOWED.join(", ")
                ));
            }
            let string = |key: &str| match table.get(key) {
                Some(toml::Value::String(s)) => Ok(Some(s.as_str())),
                Some(other) => Err(format!(
                    "{EXPECTED} (entry {i}: {key} must be a string, not a {})",
                    other.type_str()
                )),
                None => Ok(None),
            };
            let required = |key: &str| {
                string(key)?.ok_or_else(|| format!("{EXPECTED} (entry {i} has no {key})"))
            };
            let duration = |key: &str| match table.get(key) {
                None => Ok(Duration::ZERO),
                Some(value) => self::duration(&Raw::Toml(value.clone()))
                    .map_err(|e| format!("entry {i}: {key} {e}")),
            };
            let max_attempts = match table.get("max_attempts") {
                None => 0,
                Some(toml::Value::Integer(n)) => u16::try_from(*n)
                    .map_err(|_| format!("entry {i}: max_attempts must be 0 to 65535, not {n}"))?,
                Some(other) => {
                    return Err(format!(
                        "entry {i}: max_attempts must be an integer, not a {}",
                        other.type_str()
                    ))
                }
            };
            let tier =
                flags::name(required("tier")?).map_err(|e| format!("entry {i}: tier {e}"))?;
            Ok(TierRule {
                pattern: required("pattern")?.to_owned(),
                tier,
                settings: TopicSettings {
                    delay: duration("delay")?,
                    batch_window: duration("batch_window")?,
                    max_attempts,
                },
            })
        })
        .collect()
}

fn apply_flags(config: &mut BrokerConfig, args: &BrokerArgs, origins: &mut Origins) {
    /// `flag!(key)` copies the flag of the same name over the key when it was
    /// given; `flag!(key <- arg)` when the field is named differently.
    /// `.into()` turns a path into the `Option` the TLS fields hold, so a
    /// flag can set a TLS path but not clear one (`TRIAGE_TLS_CERT=""` can).
    macro_rules! flag {
        ($key:ident) => {
            flag!($key <- $key)
        };
        ($key:ident <- $arg:ident) => {
            if let Some(value) = args.$arg.given() {
                config.$key = value.into();
                let key = stringify!($key);
                origins.0.insert(key, Origin::Flag(flag_for(key)));
            }
        };
    }
    flag!(tcp_address);
    flag!(http_address);
    flag!(broadcast_address);
    flag!(data_path);
    flag!(mem_queue_size);
    flag!(max_msg_size);
    flag!(max_body_size);
    flag!(msg_timeout);
    flag!(max_msg_timeout);
    flag!(max_rdy_count);
    flag!(max_req_timeout);
    flag!(max_heartbeat_interval);
    flag!(client_timeout);
    flag!(max_output_buffer_size);
    flag!(max_output_buffer_timeout);
    flag!(min_output_buffer_timeout);
    flag!(snappy);
    flag!(deflate);
    flag!(max_deflate_level);
    flag!(max_channel_consumers);
    flag!(max_connections);
    flag!(max_line_len);
    flag!(handshake_timeout);
    flag!(tls_cert);
    flag!(tls_key);
    flag!(tls_root_ca_file);
    flag!(tls_required);
    flag!(tls_client_auth_policy);
    flag!(tls_min_version);
    flag!(https_address);
    flag!(auth_http_addresses <- auth_http_address);
    flag!(auth_http_request_method);
    flag!(auth_tokens_file);
    flag!(admin_token);
    flag!(lookupd_tcp_addresses <- lookupd_tcp_address);
    flag!(log_format);
    flag!(log_level);
    flag!(default_tier);
    flag!(memory_overflow);
    flag!(sync_policy);
    flag!(save_memory_on_shutdown);
    flag!(tier_rules <- tier_rule);
}

/// A flag's value if it was given: `Some` for an `Option` flag, non-empty for
/// a repeated one.
trait Given {
    type Value;
    fn given(&self) -> Option<Self::Value>;
}

impl<T: Clone> Given for Option<T> {
    type Value = T;
    fn given(&self) -> Option<T> {
        self.clone()
    }
}

impl<T: Clone> Given for Vec<T> {
    type Value = Vec<T>;
    fn given(&self) -> Option<Vec<T>> {
        (!self.is_empty()).then(|| self.clone())
    }
}

/// The known key closest to a misspelt one (`msg-timeout`, `nsqlookupd_tcp_addresses`).
fn closest_key(unknown: &str) -> Option<&'static str> {
    closest(unknown, KEYS)
}

/// The key of `keys` that `unknown` is most likely a typo of, if any.
pub(crate) fn closest(unknown: &str, keys: &[&'static str]) -> Option<&'static str> {
    let unknown = unknown.to_ascii_lowercase().replace('-', "_");
    keys.iter()
        .map(|key| (edit_distance(&unknown, key), *key))
        .filter(|&(distance, key)| distance <= 3.max(key.len() / 4))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, key)| key)
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current[j + 1] = substitute.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Answers nothing, remembering what it was asked.
    #[derive(Default)]
    struct Recorder(Vec<&'static str>);

    impl Source for Recorder {
        fn take(&mut self, key: &'static str) -> Option<(Raw, Origin)> {
            self.0.push(key);
            None
        }
    }

    #[test]
    fn apply_reads_exactly_the_listed_keys_in_order() {
        let mut recorder = Recorder::default();
        let mut config = BrokerConfig::default();
        apply(&mut config, &mut recorder, &mut Origins::default()).unwrap();
        assert_eq!(recorder.0, KEYS);
        assert_eq!(config, BrokerConfig::default());
    }

    #[test]
    fn every_key_has_its_flag() {
        use clap::CommandFactory;
        let command = BrokerArgs::command();
        let longs: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(|l| format!("--{l}")))
            .collect();
        for key in KEYS {
            assert!(longs.contains(&flag_for(key)), "no flag for {key}");
        }
    }

    #[test]
    fn names_derive_from_keys() {
        assert_eq!(env_var("mem_queue_size"), "TRIAGE_MEM_QUEUE_SIZE");
        assert_eq!(flag_for("mem_queue_size"), "--mem-queue-size");
        assert_eq!(flag_for("lookupd_tcp_addresses"), "--lookupd-tcp-address");
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        assert_eq!(closest_key("msg-timeout"), Some("msg_timeout"));
        assert_eq!(closest_key("MAX_RDY_COUNT"), Some("max_rdy_count"));
        assert_eq!(closest_key("max_rdy"), None);
        assert_eq!(closest_key("tls_crt"), Some("tls_cert"));
        assert_eq!(closest_key("colour"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn origins_attach_to_element_keys() {
        let mut origins = Origins::default();
        origins
            .0
            .insert("tier_rules", Origin::Env("TRIAGE_TIER_RULES".into()));
        let err = ConfigError::Invalid {
            key: "tier_rules[2].pattern".into(),
            value: "\"\"".into(),
            reason: "r".into(),
            origin: None,
        };
        assert_eq!(
            origins.attach(err).to_string(),
            "invalid tier_rules[2].pattern = \"\" (from TRIAGE_TIER_RULES): r"
        );
    }
}
