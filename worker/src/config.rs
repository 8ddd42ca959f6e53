//! The `triage-worker` binary's configuration: one TOML file, read into a
//! typed tree and validated before anything starts. Every error names the
//! full path of the key, e.g. `subscriptions[1].steps[0].url: ...`.
//!
//! The file is walked by hand rather than through serde so that type errors,
//! unknown keys and bad values all carry that path. [`WorkerConfig::from_toml_str`]
//! does no I/O, so `triage-worker --check` and other tools can reuse it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use toml::{Table, Value};
use triage_config::units::parse_duration;
use triage_protocol::names::{is_valid_channel_name, is_valid_topic_name};

use crate::budget::Priority;
use crate::consumer::{Backoff, Compression, ConsumerConfig};
use crate::degrade::DegradeConfig;
use crate::discovery::lookupd_authority;
use crate::error::ConfigError;
use crate::latency::{LatencySignal, LatencyWindow};

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

impl WorkerConfig {
    /// Parses and validates a whole file.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first key that is missing, unknown, of the
    /// wrong type or of a value that cannot work (or the line of a TOML
    /// syntax error).
    pub fn from_toml_str(text: &str) -> Result<WorkerConfig, ConfigError> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            let key = line.map_or_else(|| "file".to_owned(), |l| format!("line {l}"));
            ConfigError::new(key, format!("not valid TOML: {}", e.message()))
        })?;
        read_worker(&table)
    }

    /// The consumer settings this configuration implies.
    pub fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            address: self.broker.clone(),
            lookupd_http_addresses: self.lookupd_http_addresses.clone(),
            lookupd_poll_interval: self.lookupd_poll_interval,
            client_id: self.client_id.clone(),
            hostname: self.hostname.clone(),
            concurrency: self.concurrency,
            max_in_flight: self.max_in_flight,
            backoff: self.backoff,
            shutdown_timeout: self.shutdown_timeout,
            compression: self.compression,
            latency_window: LatencyWindow {
                max_age: Some(self.latency_window),
                ..LatencyWindow::default()
            },
            latency_signal: self.latency_signal,
            degrade: self.degrade,
            ..ConsumerConfig::default()
        }
    }
}

/// A table and the path that leads to it, for error messages.
struct Section<'a> {
    path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::new(self.key(key), reason)
    }

    fn only(&self, allowed: &[&str]) -> Result<(), ConfigError> {
        match self.table.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(self.error(
                unknown,
                format!("unknown key; allowed here: {}", allowed.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    fn required_string(&self, key: &str) -> Result<&'a str, ConfigError> {
        self.string(key)?
            .ok_or_else(|| self.error(key, "is required"))
    }

    fn integer(&self, key: &str, min: u64) -> Result<Option<u64>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Integer(n)) => match u64::try_from(*n) {
                Ok(n) if n >= min => Ok(Some(n)),
                _ => Err(self.error(key, format!("must be at least {min}, got {n}"))),
            },
            Some(_) => Err(self.error(key, "must be an integer")),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    fn duration(&self, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.string(key).map_err(|_| {
            self.error(
                key,
                "must be a duration in quotes, such as \"500ms\" or \"2s\"",
            )
        })?
        else {
            return Ok(None);
        };
        let duration = parse_duration(text)
            .map_err(|e| self.error(key, format!("{e} (e.g. \"500ms\", \"2s\")")))?;
        if duration.is_zero() {
            return Err(self.error(key, "must be above zero"));
        }
        Ok(Some(duration))
    }

    fn section(&self, key: &str) -> Result<Option<Section<'a>>, ConfigError> {
        match self.table.get(key) {
            None => Ok(None),
            Some(Value::Table(table)) => Ok(Some(Section {
                path: self.key(key),
                table,
            })),
            Some(_) => Err(self.error(key, "must be a table")),
        }
    }

    /// An array of tables (`[[key]]`), each with its indexed path.
    fn sections(&self, key: &str) -> Result<Vec<Section<'a>>, ConfigError> {
        let Some(value) = self.table.get(key) else {
            return Ok(Vec::new());
        };
        let Value::Array(items) = value else {
            return Err(self.error(key, "must be an array of tables ([[...]])"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{}[{i}]", self.key(key));
                match item {
                    Value::Table(table) => Ok(Section { path, table }),
                    _ => Err(ConfigError::new(path, "must be a table")),
                }
            })
            .collect()
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(value) = self.table.get(key) else {
            return Ok(None);
        };
        let not_strings = || self.error(key, "must be an array of strings");
        let Value::Array(items) = value else {
            return Err(not_strings());
        };
        items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(not_strings))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn read_worker(table: &Table) -> Result<WorkerConfig, ConfigError> {
    let root = Section {
        path: String::new(),
        table,
    };
    root.only(&[
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
    ])?;
    let broker = root.string("broker")?;
    if let Some(broker) = broker.filter(|b| !is_host_port(b)) {
        return Err(root.error(
            "broker",
            format!("must be host:port, e.g. \"127.0.0.1:4150\", got {broker:?}"),
        ));
    }
    let lookupd_http_addresses = root.strings("lookupd_http_addresses")?.unwrap_or_default();
    for (i, address) in lookupd_http_addresses.iter().enumerate() {
        if lookupd_authority(address).is_none() {
            return Err(root.error(
                &format!("lookupd_http_addresses[{i}]"),
                format!("must be host:port or http://host:port, e.g. \"127.0.0.1:4161\", got {address:?}"),
            ));
        }
    }
    if broker.is_none() && lookupd_http_addresses.is_empty() {
        return Err(root.error(
            "broker",
            "is required unless lookupd_http_addresses lists at least one lookupd",
        ));
    }
    let lookupd_poll_interval = root
        .duration("lookupd_poll_interval")?
        .unwrap_or(defaults::LOOKUPD_POLL_INTERVAL);
    let http_address = root
        .string("http_address")?
        .unwrap_or(defaults::HTTP_ADDRESS);
    let http_address = http_address.parse().map_err(|_| {
        root.error(
            "http_address",
            format!("must be ip:port, e.g. \"127.0.0.1:4155\", got {http_address:?}"),
        )
    })?;
    let client_id = root.string("client_id")?.unwrap_or(defaults::CLIENT_ID);
    let hostname = root.string("hostname")?.unwrap_or(defaults::HOSTNAME);
    let concurrency = root
        .integer("concurrency", 1)?
        .unwrap_or(defaults::CONCURRENCY);
    let max_in_flight = root.integer("max_in_flight", 1)?;
    let shutdown_timeout = root
        .duration("shutdown_timeout")?
        .unwrap_or(defaults::SHUTDOWN_TIMEOUT);
    let compression = read_compression(&root)?;
    let (degrade, latency_window, latency_signal) = read_degrade(root.section("degrade")?)?;
    let backoff = read_backoff(root.section("backoff")?)?;

    let sections = root.sections("subscriptions")?;
    if sections.is_empty() {
        return Err(root.error(
            "subscriptions",
            "at least one [[subscriptions]] is required",
        ));
    }
    let mut subscriptions = Vec::with_capacity(sections.len());
    let mut pairs = HashSet::new();
    for section in &sections {
        let subscription = read_subscription(section)?;
        if !pairs.insert((subscription.topic.clone(), subscription.channel.clone())) {
            return Err(section.error(
                "channel",
                format!(
                    "{}/{} is subscribed twice",
                    subscription.topic, subscription.channel
                ),
            ));
        }
        if broker.is_none() && subscription.has_noncore_steps() {
            return Err(root.error(
                "broker",
                format!(
                    "is required when a subscription has non-core steps ({}/{}): \
                     its deferred work is published there",
                    subscription.topic, subscription.channel
                ),
            ));
        }
        subscriptions.push(subscription);
    }
    // Each subscription with non-core steps also consumes its deferral topic
    // on its channel; that pair must not be claimed twice.
    for (section, subscription) in sections.iter().zip(&subscriptions) {
        if subscription.has_noncore_steps()
            && !pairs.insert((
                subscription.deferred_topic.clone(),
                subscription.channel.clone(),
            ))
        {
            return Err(section.error(
                "deferred_topic",
                format!(
                    "{}/{} is already consumed by another subscription or its replay",
                    subscription.deferred_topic, subscription.channel
                ),
            ));
        }
    }
    Ok(WorkerConfig {
        broker: broker.map(str::to_owned),
        lookupd_http_addresses,
        lookupd_poll_interval,
        http_address,
        client_id: client_id.to_owned(),
        hostname: hostname.to_owned(),
        concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
        max_in_flight,
        degrade,
        latency_window,
        latency_signal,
        backoff,
        shutdown_timeout,
        compression,
        subscriptions,
    })
}

fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn read_compression(root: &Section<'_>) -> Result<Compression, ConfigError> {
    let level = root.integer("deflate_level", 1)?;
    let compression = match root.string("compression")?.unwrap_or("none") {
        "none" => Compression::None,
        "snappy" => Compression::Snappy,
        "deflate" => {
            let level = level.unwrap_or(defaults::DEFLATE_LEVEL);
            match u8::try_from(level) {
                Ok(level) if level <= 9 => Compression::Deflate(level),
                _ => {
                    return Err(root.error("deflate_level", format!("must be 1 to 9, got {level}")))
                }
            }
        }
        other => {
            return Err(root.error(
                "compression",
                format!("must be \"none\", \"snappy\" or \"deflate\", got {other:?}"),
            ))
        }
    };
    if level.is_some() && !matches!(compression, Compression::Deflate(_)) {
        return Err(root.error("deflate_level", "only with compression = \"deflate\""));
    }
    Ok(compression)
}

fn read_degrade(
    section: Option<Section<'_>>,
) -> Result<(DegradeConfig, Duration, LatencySignal), ConfigError> {
    let mut degrade = DegradeConfig::default();
    let Some(section) = section else {
        return Ok((degrade, defaults::LATENCY_WINDOW, LatencySignal::default()));
    };
    section.only(&[
        "threshold",
        "overload_threshold",
        "recover_below",
        "hold",
        "window",
        "signal",
    ])?;
    let signal = match section.string("signal")?.unwrap_or("handling") {
        "handling" => LatencySignal::Handling,
        "age" => LatencySignal::Age,
        "worst" => LatencySignal::Worst,
        other => {
            return Err(section.error(
                "signal",
                format!("must be \"handling\", \"age\" or \"worst\", got {other:?}"),
            ))
        }
    };
    if let Some(threshold) = section.duration("threshold")? {
        degrade.threshold = threshold;
        // Defaults that follow a changed threshold, so setting only it stays valid.
        degrade.recover_below = threshold / 2;
        degrade.overload_threshold = threshold * 4;
    }
    if let Some(d) = section.duration("overload_threshold")? {
        degrade.overload_threshold = d;
    }
    if let Some(d) = section.duration("recover_below")? {
        degrade.recover_below = d;
    }
    if let Some(d) = section.duration("hold")? {
        degrade.hold = d;
    }
    let window = section
        .duration("window")?
        .unwrap_or(defaults::LATENCY_WINDOW);
    degrade.validate()?;
    Ok((degrade, window, signal))
}

fn read_backoff(section: Option<Section<'_>>) -> Result<Backoff, ConfigError> {
    let mut backoff = Backoff::default();
    let Some(section) = section else {
        return Ok(backoff);
    };
    section.only(&["base", "max"])?;
    if let Some(d) = section.duration("base")? {
        backoff.base = d;
    }
    if let Some(d) = section.duration("max")? {
        backoff.max = d;
    }
    if backoff.max < backoff.base {
        return Err(section.error("max", "must be at least backoff.base"));
    }
    Ok(backoff)
}

fn read_subscription(section: &Section<'_>) -> Result<SubscriptionConfig, ConfigError> {
    section.only(&[
        "topic",
        "channel",
        "max_in_flight",
        "priority",
        "deferred_topic",
        "steps",
    ])?;
    let topic = section.required_string("topic")?;
    if !is_valid_topic_name(topic) {
        return Err(section.error(
            "topic",
            format!("{topic:?} is not a valid topic name (1-64 of a-z A-Z 0-9 . _ -)"),
        ));
    }
    let channel = section.required_string("channel")?;
    if !is_valid_channel_name(channel) {
        return Err(section.error(
            "channel",
            format!("{channel:?} is not a valid channel name (1-64 of a-z A-Z 0-9 . _ -)"),
        ));
    }
    let max_in_flight = section.integer("max_in_flight", 1)?.unwrap_or(1);
    let priority = match section.string("priority")? {
        None => Priority::default(),
        Some(text) => text.parse().map_err(|()| {
            section.error(
                "priority",
                format!("must be one of urgent, normal, batch; got {text:?}"),
            )
        })?,
    };
    let deferred_topic = match section.string("deferred_topic")? {
        Some(name) => name.to_owned(),
        None => format!("{}{DEFERRED_SUFFIX}", topic.trim_end_matches("#ephemeral")),
    };
    if !is_valid_topic_name(&deferred_topic) || deferred_topic == topic {
        let hint = if section.table.contains_key("deferred_topic") {
            "must be a valid topic name other than topic"
        } else {
            "the default <topic>.deferred is too long; set a shorter deferred_topic"
        };
        return Err(section.error("deferred_topic", format!("{hint}, got {deferred_topic:?}")));
    }
    let step_sections = section.sections("steps")?;
    if step_sections.is_empty() {
        return Err(section.error("steps", "at least one [[subscriptions.steps]] is required"));
    }
    let mut steps = Vec::with_capacity(step_sections.len());
    let mut names = HashSet::new();
    for step_section in &step_sections {
        let step = read_step(step_section)?;
        if !names.insert(step.name.clone()) {
            return Err(step_section.error(
                "name",
                format!(
                    "{:?} is used by another step of this subscription",
                    step.name
                ),
            ));
        }
        steps.push(step);
    }
    Ok(SubscriptionConfig {
        topic: topic.to_owned(),
        channel: channel.to_owned(),
        max_in_flight,
        priority,
        deferred_topic,
        steps,
    })
}

fn read_step(section: &Section<'_>) -> Result<StepConfig, ConfigError> {
    section.only(&["name", "kind", "core", "timeout", "url", "command"])?;
    let name = section.required_string("name")?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(section.error(
            "name",
            format!("must be 1 or more of a-z A-Z 0-9 . _ -, got {name:?}"),
        ));
    }
    let core = section.boolean("core")?.unwrap_or(defaults::CORE);
    let timeout = section
        .duration("timeout")?
        .unwrap_or(defaults::STEP_TIMEOUT);
    let kind = section.required_string("kind")?;
    let action = match kind {
        "http" => {
            if section.table.contains_key("command") {
                return Err(section.error("command", "only for kind = \"exec\""));
            }
            let url = section.required_string("url")?;
            check_http_url(url).map_err(|reason| section.error("url", reason))?;
            StepAction::Http {
                url: url.to_owned(),
            }
        }
        "exec" => {
            if section.table.contains_key("url") {
                return Err(section.error("url", "only for kind = \"http\""));
            }
            let command = section
                .strings("command")?
                .ok_or_else(|| section.error("command", "is required for kind = \"exec\""))?;
            if command.first().is_none_or(|program| program.is_empty()) {
                return Err(section.error(
                    "command",
                    "must name a program first, e.g. [\"sh\", \"-c\", \"...\"]",
                ));
            }
            StepAction::Exec { command }
        }
        other => {
            return Err(section.error(
                "kind",
                format!("must be \"http\" or \"exec\", got {other:?}"),
            ))
        }
    };
    Ok(StepConfig {
        name: name.to_owned(),
        core,
        timeout,
        action,
    })
}

fn check_http_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("not a valid URL ({e}): {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "must start with http:// (https is not supported), got {url:?}"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("must name a host, got {url:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
broker = "127.0.0.1:4150"

[[subscriptions]]
topic = "tickets"
channel = "work"

[[subscriptions.steps]]
name = "update"
kind = "exec"
command = ["true"]
"#;

    fn error_of(text: &str) -> ConfigError {
        WorkerConfig::from_toml_str(text).unwrap_err()
    }

    /// The minimal file with `extra` appended to the first step.
    fn with_step(extra: &str) -> String {
        format!("{MINIMAL}{extra}\n")
    }

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let config = WorkerConfig::from_toml_str(MINIMAL).unwrap();
        assert_eq!(config.broker.as_deref(), Some("127.0.0.1:4150"));
        assert!(config.lookupd_http_addresses.is_empty());
        assert_eq!(config.http_address.to_string(), defaults::HTTP_ADDRESS);
        assert_eq!(config.degrade, DegradeConfig::default());
        assert_eq!(config.degrade.threshold, Duration::from_millis(500));
        assert_eq!(config.max_in_flight, None);
        let sub = &config.subscriptions[0];
        assert_eq!(sub.deferred_topic, "tickets.deferred");
        assert_eq!(sub.priority, Priority::Normal);
        assert_eq!(sub.max_in_flight, 1);
        assert!(sub.steps[0].core);
        assert_eq!(sub.steps[0].timeout, defaults::STEP_TIMEOUT);
        assert!(!sub.has_noncore_steps());
        config.consumer_config().validate().unwrap();
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
broker = "broker.internal:4150"
http_address = "0.0.0.0:9000"
client_id = "w1"
hostname = "host-1"
concurrency = 4
max_in_flight = 30
shutdown_timeout = "5s"
compression = "deflate"
deflate_level = 3

[degrade]
threshold = "300ms"
overload_threshold = "1s"
recover_below = "100ms"
hold = "2s"
window = "3s"
signal = "worst"

[backoff]
base = "50ms"
max = "5s"

[[subscriptions]]
topic = "urgent"
channel = "c"
max_in_flight = 10
priority = "urgent"
deferred_topic = "later"

[[subscriptions.steps]]
name = "update"
kind = "http"
url = "http://127.0.0.1:8080/update"
timeout = "1s"
core = true

[[subscriptions.steps]]
name = "notify"
kind = "exec"
command = ["sh", "-c", "cat > /dev/null"]
core = false
"#;
        let c = WorkerConfig::from_toml_str(text).unwrap();
        assert_eq!(
            (c.client_id.as_str(), c.hostname.as_str(), c.concurrency),
            ("w1", "host-1", 4)
        );
        assert_eq!(c.max_in_flight, Some(30));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
        assert_eq!(c.compression, Compression::Deflate(3));
        assert_eq!(c.degrade.threshold, Duration::from_millis(300));
        assert_eq!(c.degrade.overload_threshold, Duration::from_secs(1));
        assert_eq!(c.degrade.recover_below, Duration::from_millis(100));
        assert_eq!(c.degrade.hold, Duration::from_secs(2));
        assert_eq!(c.latency_window, Duration::from_secs(3));
        assert_eq!(c.latency_signal, LatencySignal::Worst);
        assert_eq!(c.backoff.base, Duration::from_millis(50));
        let sub = &c.subscriptions[0];
        assert_eq!(sub.priority, Priority::Urgent);
        assert_eq!(sub.deferred_topic, "later");
        assert_eq!(
            sub.steps[0].action,
            StepAction::Http {
                url: "http://127.0.0.1:8080/update".to_owned()
            }
        );
        assert!(!sub.steps[1].core);
        assert_eq!(sub.steps[1].action.kind(), "exec");
        assert!(sub.has_noncore_steps());
    }

    #[test]
    fn errors_name_the_full_key() {
        let cases: &[(String, &str)] = &[
            (
                MINIMAL.replace("broker = \"127.0.0.1:4150\"", ""),
                "broker: is required",
            ),
            (
                MINIMAL.replace("4150\"", "4150\"\nbrokr = 1"),
                "brokr: unknown key",
            ),
            (
                MINIMAL.replace("\"127.0.0.1:4150\"", "\"nohost\""),
                "broker: must be host:port",
            ),
            (
                MINIMAL.replace("\"tickets\"", "\"bad topic\""),
                "subscriptions[0].topic: ",
            ),
            (
                with_step("url = \"http://x\""),
                "subscriptions[0].steps[0].url: only for kind",
            ),
            (
                MINIMAL.replace("\"exec\"", "\"grpc\""),
                "subscriptions[0].steps[0].kind: must be",
            ),
            (
                MINIMAL.replace("command = [\"true\"]", "command = []"),
                "subscriptions[0].steps[0].command: must name a program",
            ),
            (
                with_step("timeout = 5"),
                "subscriptions[0].steps[0].timeout: must be a duration",
            ),
            (
                with_step("timeout = \"5 parsecs\""),
                "subscriptions[0].steps[0].timeout: unknown unit",
            ),
            (
                with_step("core = \"yes\""),
                "subscriptions[0].steps[0].core: must be true or false",
            ),
            (
                format!("{MINIMAL}\n[degrade]\nthreshold = \"100ms\"\nrecover_below = \"200ms\"\n"),
                "degrade.recover_below: must be below",
            ),
            (
                format!("{MINIMAL}\n[degrade]\nsignal = \"p50\"\n"),
                "degrade.signal: must be \"handling\", \"age\" or \"worst\"",
            ),
            (
                MINIMAL.replace("channel = \"work\"", "channel = \"work\"\npriority = \"high\""),
                "subscriptions[0].priority: must be one of urgent, normal, batch",
            ),
            (
                MINIMAL.replace("channel = \"work\"", "channel = \"work\"\nmax_in_flight = 0"),
                "subscriptions[0].max_in_flight: must be at least 1",
            ),
            (
                format!("{MINIMAL}\n[[subscriptions.steps]]\nname = \"update\"\nkind = \"exec\"\ncommand = [\"true\"]\n"),
                "subscriptions[0].steps[1].name: \"update\" is used by another step",
            ),
            (
                format!("{MINIMAL}\n[[subscriptions]]\ntopic = \"tickets\"\nchannel = \"work\"\n[[subscriptions.steps]]\nname = \"a\"\nkind = \"exec\"\ncommand = [\"true\"]\n"),
                "subscriptions[1].channel: tickets/work is subscribed twice",
            ),
            (
                MINIMAL.replace("name = \"update\"\nkind = \"exec\"\ncommand = [\"true\"]", "name = \"u\"\nkind = \"http\"\nurl = \"https://x/\""),
                "subscriptions[0].steps[0].url: must start with http://",
            ),
            ("broker = [".to_owned(), "line 1: not valid TOML"),
            (
                MINIMAL.replace("4150\"", "4150\"\ncompression = \"lz4\""),
                "compression: must be \"none\", \"snappy\" or \"deflate\"",
            ),
            (
                MINIMAL.replace("4150\"", "4150\"\ncompression = \"deflate\"\ndeflate_level = 10"),
                "deflate_level: must be 1 to 9",
            ),
            (
                MINIMAL.replace("4150\"", "4150\"\ndeflate_level = 3"),
                "deflate_level: only with compression",
            ),
            (
                "broker = \"h:1\"\n".to_owned(),
                "subscriptions: at least one",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(text).to_string();
            assert!(
                error.starts_with(expected),
                "expected {expected:?}, got {error:?} for\n{text}"
            );
        }
    }

    #[test]
    fn a_long_topic_needs_an_explicit_deferred_topic() {
        let long = "t".repeat(60);
        let text = MINIMAL.replace("\"tickets\"", &format!("\"{long}\""));
        assert!(error_of(&text)
            .to_string()
            .starts_with("subscriptions[0].deferred_topic: the default"));
        let text = text.replace(
            "channel = \"work\"",
            "channel = \"work\"\ndeferred_topic = \"short.deferred\"",
        );
        WorkerConfig::from_toml_str(&text).unwrap();
    }

    #[test]
    fn setting_only_the_threshold_keeps_the_hysteresis_valid() {
        let text = format!("{MINIMAL}\n[degrade]\nthreshold = \"100ms\"\n");
        let c = WorkerConfig::from_toml_str(&text).unwrap();
        assert_eq!(c.degrade.recover_below, Duration::from_millis(50));
        assert_eq!(c.degrade.overload_threshold, Duration::from_millis(400));
    }

    #[test]
    fn lookupd_addresses_replace_or_join_the_broker() {
        let only_lookupd = MINIMAL.replace(
            "broker = \"127.0.0.1:4150\"",
            "lookupd_http_addresses = [\"127.0.0.1:4161\", \"http://lk2:4161\"]\nlookupd_poll_interval = \"2s\"",
        );
        let c = WorkerConfig::from_toml_str(&only_lookupd).unwrap();
        assert_eq!(c.broker, None);
        assert_eq!(
            c.lookupd_http_addresses,
            ["127.0.0.1:4161", "http://lk2:4161"]
        );
        let consumer = c.consumer_config();
        assert_eq!(consumer.address, None);
        assert_eq!(consumer.lookupd_poll_interval, Duration::from_secs(2));
        consumer.validate().unwrap();

        let both = format!("lookupd_http_addresses = [\"127.0.0.1:4161\"]\n{MINIMAL}");
        let c = WorkerConfig::from_toml_str(&both).unwrap();
        assert_eq!(c.broker.as_deref(), Some("127.0.0.1:4150"));
        assert_eq!(c.lookupd_poll_interval, defaults::LOOKUPD_POLL_INTERVAL);

        let neither = MINIMAL.replace("broker = \"127.0.0.1:4150\"", "");
        let e = error_of(&neither);
        assert_eq!(e.key, "broker");
        assert!(e.reason.contains("lookupd_http_addresses"), "{e}");
        let empty = MINIMAL.replace("broker = \"127.0.0.1:4150\"", "lookupd_http_addresses = []");
        assert_eq!(error_of(&empty).key, "broker");

        let not_host_port = MINIMAL.replace(
            "broker = \"127.0.0.1:4150\"",
            "lookupd_http_addresses = [\"lk:4161\", \"https://lk:4161\"]",
        );
        assert_eq!(error_of(&not_host_port).key, "lookupd_http_addresses[1]");
        let not_strings = format!("lookupd_http_addresses = \"lk:4161\"\n{MINIMAL}");
        assert_eq!(error_of(&not_strings).key, "lookupd_http_addresses");
        let zero = format!("lookupd_poll_interval = \"0s\"\n{MINIMAL}");
        assert_eq!(error_of(&zero).key, "lookupd_poll_interval");

        // Deferred work needs a broker to be published to.
        let noncore = with_step("core = false").replace(
            "broker = \"127.0.0.1:4150\"",
            "lookupd_http_addresses = [\"lk:4161\"]",
        );
        let e = error_of(&noncore);
        assert_eq!(e.key, "broker");
        assert!(e.reason.contains("non-core"), "{e}");
    }
}
