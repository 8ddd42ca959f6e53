//! Walks a worker TOML file into a [`WorkerConfig`], by hand rather than
//! through serde so that type errors, unknown keys and bad values all carry
//! the key's full path.
//!
//! It does not stop at the first problem: a key that cannot be read is
//! recorded and its default stands in, so one pass names every bad key. A
//! rule that ties keys together (thresholds in order, a pair subscribed
//! once) is checked only when the keys it reads were all read cleanly, so a
//! stand-in default never causes a second, made-up error.

use std::cell::RefCell;
use std::collections::HashSet;
use std::time::Duration;

use toml::{Table, Value};
use triage_protocol::names::{is_valid_channel_name, is_valid_topic_name};

use super::{
    defaults, lookupd_authority, Backoff, Compression, ConfigError, DegradeConfig, LatencySignal,
    Priority, StepAction, StepConfig, SubscriptionConfig, WorkerConfig, DEFERRED_SUFFIX,
    TOP_LEVEL_KEYS,
};
use crate::units::parse_duration;

/// Checks a worker config file's `text`, for `triagectl config check`: a
/// TOML syntax error (alone, since nothing can be read past it), else every
/// key that is unknown, missing, of the wrong type or of a value that cannot
/// work. Empty: the file is good.
pub fn check_worker_toml(text: &str) -> Vec<ConfigError> {
    worker_from_toml(text).err().unwrap_or_default()
}

/// The tree, or every problem found (never an empty list).
pub(super) fn worker_from_toml(text: &str) -> Result<WorkerConfig, Vec<ConfigError>> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let key = line.map_or_else(|| "file".to_owned(), |l| format!("line {l}"));
        vec![ConfigError::new(
            key,
            format!("not valid TOML: {}", e.message()),
        )]
    })?;
    let problems = Problems::default();
    let config = read_worker(&Section {
        path: String::new(),
        table: &table,
        problems: &problems,
    });
    let errors = problems.0.into_inner();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        // A reader gives up only after recording why; should one ever not,
        // the file is still refused rather than the list left empty.
        _ if errors.is_empty() => Err(vec![ConfigError::new("file", "cannot be read")]),
        _ => Err(errors),
    }
}

/// Every problem found so far. A `RefCell`: the sections of one file share
/// it while it is read, on one thread.
#[derive(Default)]
struct Problems(RefCell<Vec<ConfigError>>);

impl Problems {
    fn count(&self) -> usize {
        self.0.borrow().len()
    }
}

/// A table and the path that leads to it, for error messages. Its getters
/// record a bad value and return `None`, as for an absent key; [`Section::has`]
/// tells the two apart where that matters.
struct Section<'a> {
    path: String,
    table: &'a Table,
    problems: &'a Problems,
}

impl<'a> Section<'a> {
    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn report(&self, key: &str, reason: impl Into<String>) {
        self.problems
            .0
            .borrow_mut()
            .push(ConfigError::new(self.key(key), reason));
    }

    fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    /// Records every key not in `allowed`.
    fn only(&self, allowed: &[&str]) {
        for unknown in self.table.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.report(
                unknown,
                format!("unknown key; allowed here: {}", allowed.join(", ")),
            );
        }
    }

    fn string(&self, key: &str) -> Option<&'a str> {
        match self.table.get(key)? {
            Value::String(s) => Some(s),
            _ => {
                self.report(key, "must be a string");
                None
            }
        }
    }

    fn required_string(&self, key: &str) -> Option<&'a str> {
        if !self.has(key) {
            self.report(key, "is required");
        }
        self.string(key)
    }

    fn integer(&self, key: &str, min: u64) -> Option<u64> {
        match self.table.get(key)? {
            Value::Integer(n) => match u64::try_from(*n) {
                Ok(n) if n >= min => Some(n),
                _ => {
                    self.report(key, format!("must be at least {min}, got {n}"));
                    None
                }
            },
            _ => {
                self.report(key, "must be an integer");
                None
            }
        }
    }

    fn boolean(&self, key: &str) -> Option<bool> {
        match self.table.get(key)? {
            Value::Boolean(b) => Some(*b),
            _ => {
                self.report(key, "must be true or false");
                None
            }
        }
    }

    fn duration(&self, key: &str) -> Option<Duration> {
        let text = match self.table.get(key)? {
            Value::String(text) => text,
            _ => {
                self.report(
                    key,
                    "must be a duration in quotes, such as \"500ms\" or \"2s\"",
                );
                return None;
            }
        };
        match parse_duration(text) {
            Ok(duration) if duration.is_zero() => {
                self.report(key, "must be above zero");
                None
            }
            Ok(duration) => Some(duration),
            Err(e) => {
                self.report(key, format!("{e} (e.g. \"500ms\", \"2s\")"));
                None
            }
        }
    }

    fn section(&self, key: &str) -> Option<Section<'a>> {
        match self.table.get(key)? {
            Value::Table(table) => Some(Section {
                path: self.key(key),
                table,
                problems: self.problems,
            }),
            _ => {
                self.report(key, "must be a table");
                None
            }
        }
    }

    /// An array of tables (`[[key]]`), each with its indexed path; items
    /// that are not tables are recorded and left out.
    fn sections(&self, key: &str) -> Option<Vec<Section<'a>>> {
        let Value::Array(items) = self.table.get(key)? else {
            self.report(key, "must be an array of tables ([[...]])");
            return None;
        };
        let mut sections = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let path = format!("{}[{i}]", self.key(key));
            match item {
                Value::Table(table) => sections.push(Section {
                    path,
                    table,
                    problems: self.problems,
                }),
                _ => self
                    .problems
                    .0
                    .borrow_mut()
                    .push(ConfigError::new(path, "must be a table")),
            }
        }
        Some(sections)
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        let items = match self.table.get(key)? {
            Value::Array(items) if items.iter().all(Value::is_str) => items,
            _ => {
                self.report(key, "must be an array of strings");
                return None;
            }
        };
        Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        )
    }
}

fn read_worker(root: &Section<'_>) -> Option<WorkerConfig> {
    root.only(TOP_LEVEL_KEYS);
    let broker = root.string("broker");
    if let Some(broker) = broker.filter(|b| !is_host_port(b)) {
        root.report(
            "broker",
            format!("must be host:port, e.g. \"127.0.0.1:4150\", got {broker:?}"),
        );
    }
    let lookupd_http_addresses = root.strings("lookupd_http_addresses");
    for (i, address) in lookupd_http_addresses.iter().flatten().enumerate() {
        if lookupd_authority(address).is_none() {
            root.report(
                &format!("lookupd_http_addresses[{i}]"),
                format!("must be host:port or http://host:port, e.g. \"127.0.0.1:4161\", got {address:?}"),
            );
        }
    }
    let no_lookupd = !root.has("lookupd_http_addresses")
        || lookupd_http_addresses.as_ref().is_some_and(Vec::is_empty);
    if !root.has("broker") && no_lookupd {
        root.report(
            "broker",
            "is required unless lookupd_http_addresses lists at least one lookupd",
        );
    }
    let lookupd_poll_interval = root
        .duration("lookupd_poll_interval")
        .unwrap_or(defaults::LOOKUPD_POLL_INTERVAL);
    let http_address = root
        .string("http_address")
        .unwrap_or(defaults::HTTP_ADDRESS);
    let http_address = http_address.parse().ok().or_else(|| {
        root.report(
            "http_address",
            format!("must be ip:port, e.g. \"127.0.0.1:4155\", got {http_address:?}"),
        );
        None
    });
    let client_id = root.string("client_id").unwrap_or(defaults::CLIENT_ID);
    let hostname = root.string("hostname").unwrap_or(defaults::HOSTNAME);
    let concurrency = root
        .integer("concurrency", 1)
        .unwrap_or(defaults::CONCURRENCY);
    let max_in_flight = root.integer("max_in_flight", 1);
    let shutdown_timeout = root
        .duration("shutdown_timeout")
        .unwrap_or(defaults::SHUTDOWN_TIMEOUT);
    let compression = read_compression(root);
    let (degrade, latency_window, latency_signal) = read_degrade(root.section("degrade"));
    let backoff = read_backoff(root.section("backoff"));
    let subscriptions = read_subscriptions(root);
    if root.problems.count() > 0 {
        return None;
    }
    Some(WorkerConfig {
        broker: broker.map(str::to_owned),
        lookupd_http_addresses: lookupd_http_addresses.unwrap_or_default(),
        lookupd_poll_interval,
        http_address: http_address?,
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

/// Every `[[subscriptions]]`, and the rules between them.
fn read_subscriptions(root: &Section<'_>) -> Vec<SubscriptionConfig> {
    let Some(sections) = root.sections("subscriptions") else {
        if !root.has("subscriptions") {
            root.report(
                "subscriptions",
                "at least one [[subscriptions]] is required",
            );
        }
        return Vec::new();
    };
    if sections.is_empty() {
        root.report(
            "subscriptions",
            "at least one [[subscriptions]] is required",
        );
    }
    // Only the subscriptions read cleanly take part in the rules below.
    let read: Vec<(&Section<'_>, SubscriptionConfig)> = sections
        .iter()
        .filter_map(|section| Some((section, read_subscription(section)?)))
        .collect();
    let mut pairs = HashSet::new();
    for (section, subscription) in &read {
        if !pairs.insert((subscription.topic.clone(), subscription.channel.clone())) {
            section.report(
                "channel",
                format!(
                    "{}/{} is subscribed twice",
                    subscription.topic, subscription.channel
                ),
            );
        }
        if !root.has("broker") && subscription.has_noncore_steps() {
            root.report(
                "broker",
                format!(
                    "is required when a subscription has non-core steps ({}/{}): \
                     its deferred work is published there",
                    subscription.topic, subscription.channel
                ),
            );
        }
    }
    // Each subscription with non-core steps also consumes its deferral topic
    // on its channel; that pair must not be claimed twice.
    for (section, subscription) in &read {
        if subscription.has_noncore_steps()
            && !pairs.insert((
                subscription.deferred_topic.clone(),
                subscription.channel.clone(),
            ))
        {
            section.report(
                "deferred_topic",
                format!(
                    "{}/{} is already consumed by another subscription or its replay",
                    subscription.deferred_topic, subscription.channel
                ),
            );
        }
    }
    read.into_iter().map(|(_, s)| s).collect()
}

fn is_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn read_compression(root: &Section<'_>) -> Compression {
    let level = root.integer("deflate_level", 1);
    let compression = match root.string("compression") {
        None if root.has("compression") => return Compression::None,
        None | Some("none") => Compression::None,
        Some("snappy") => Compression::Snappy,
        Some("deflate") => {
            let level = level.unwrap_or(defaults::DEFLATE_LEVEL);
            match u8::try_from(level) {
                Ok(level) if level <= 9 => Compression::Deflate(level),
                _ => {
                    root.report("deflate_level", format!("must be 1 to 9, got {level}"));
                    Compression::None
                }
            }
        }
        Some(other) => {
            root.report(
                "compression",
                format!("must be \"none\", \"snappy\" or \"deflate\", got {other:?}"),
            );
            return Compression::None;
        }
    };
    if level.is_some() && !matches!(compression, Compression::Deflate(_)) {
        root.report("deflate_level", "only with compression = \"deflate\"");
    }
    compression
}

fn read_degrade(section: Option<Section<'_>>) -> (DegradeConfig, Duration, LatencySignal) {
    let mut degrade = DegradeConfig::default();
    let Some(section) = section else {
        return (degrade, defaults::LATENCY_WINDOW, LatencySignal::default());
    };
    let before = section.problems.count();
    section.only(&[
        "threshold",
        "overload_threshold",
        "recover_below",
        "hold",
        "window",
        "signal",
    ]);
    let signal = match section.string("signal").unwrap_or("handling") {
        "handling" => LatencySignal::Handling,
        "age" => LatencySignal::Age,
        "worst" => LatencySignal::Worst,
        other => {
            section.report(
                "signal",
                format!("must be \"handling\", \"age\" or \"worst\", got {other:?}"),
            );
            LatencySignal::default()
        }
    };
    if let Some(threshold) = section.duration("threshold") {
        degrade.threshold = threshold;
        // Defaults that follow a changed threshold, so setting only it stays valid.
        degrade.recover_below = threshold / 2;
        degrade.overload_threshold = threshold * 4;
    }
    if let Some(d) = section.duration("overload_threshold") {
        degrade.overload_threshold = d;
    }
    if let Some(d) = section.duration("recover_below") {
        degrade.recover_below = d;
    }
    if let Some(d) = section.duration("hold") {
        degrade.hold = d;
    }
    let window = section
        .duration("window")
        .unwrap_or(defaults::LATENCY_WINDOW);
    if section.problems.count() == before {
        if let Err(e) = degrade.validate() {
            section.problems.0.borrow_mut().push(e);
        }
    }
    (degrade, window, signal)
}

fn read_backoff(section: Option<Section<'_>>) -> Backoff {
    let mut backoff = Backoff::default();
    let Some(section) = section else {
        return backoff;
    };
    let before = section.problems.count();
    section.only(&["base", "max"]);
    if let Some(d) = section.duration("base") {
        backoff.base = d;
    }
    if let Some(d) = section.duration("max") {
        backoff.max = d;
    }
    if section.problems.count() == before && backoff.max < backoff.base {
        section.report("max", "must be at least backoff.base");
    }
    backoff
}

/// `None` when anything in it was bad (and recorded).
fn read_subscription(section: &Section<'_>) -> Option<SubscriptionConfig> {
    let before = section.problems.count();
    section.only(&[
        "topic",
        "channel",
        "max_in_flight",
        "priority",
        "deferred_topic",
        "steps",
    ]);
    let topic = section.required_string("topic").filter(|topic| {
        let valid = is_valid_topic_name(topic);
        if !valid {
            section.report(
                "topic",
                format!("{topic:?} is not a valid topic name (1-64 of a-z A-Z 0-9 . _ -)"),
            );
        }
        valid
    });
    let channel = section.required_string("channel").filter(|channel| {
        let valid = is_valid_channel_name(channel);
        if !valid {
            section.report(
                "channel",
                format!("{channel:?} is not a valid channel name (1-64 of a-z A-Z 0-9 . _ -)"),
            );
        }
        valid
    });
    let max_in_flight = section.integer("max_in_flight", 1).unwrap_or(1);
    let priority = match section.string("priority") {
        None => Priority::default(),
        Some(text) => text.parse().unwrap_or_else(|()| {
            section.report(
                "priority",
                format!("must be one of urgent, normal, batch; got {text:?}"),
            );
            Priority::default()
        }),
    };
    let deferred_topic = match section.string("deferred_topic") {
        Some(name) => Some(name.to_owned()),
        None if section.has("deferred_topic") => None,
        None => {
            topic.map(|topic| format!("{}{DEFERRED_SUFFIX}", topic.trim_end_matches("#ephemeral")))
        }
    };
    let deferred_topic = deferred_topic.filter(|deferred_topic| {
        let valid = is_valid_topic_name(deferred_topic) && Some(deferred_topic.as_str()) != topic;
        if !valid {
            let hint = if section.has("deferred_topic") {
                "must be a valid topic name other than topic"
            } else {
                "the default <topic>.deferred is too long; set a shorter deferred_topic"
            };
            section.report("deferred_topic", format!("{hint}, got {deferred_topic:?}"));
        }
        valid
    });
    let steps = read_steps(section);
    if section.problems.count() > before {
        return None;
    }
    Some(SubscriptionConfig {
        topic: topic?.to_owned(),
        channel: channel?.to_owned(),
        max_in_flight,
        priority,
        deferred_topic: deferred_topic?,
        steps,
    })
}

fn read_steps(subscription: &Section<'_>) -> Vec<StepConfig> {
    let sections = subscription.sections("steps");
    if sections.as_ref().is_some_and(Vec::is_empty) || !subscription.has("steps") {
        subscription.report("steps", "at least one [[subscriptions.steps]] is required");
    }
    let mut steps = Vec::new();
    let mut names = HashSet::new();
    for section in sections.iter().flatten() {
        let Some(step) = read_step(section) else {
            continue;
        };
        if !names.insert(step.name.clone()) {
            section.report(
                "name",
                format!(
                    "{:?} is used by another step of this subscription",
                    step.name
                ),
            );
        }
        steps.push(step);
    }
    steps
}

/// `None` when anything in it was bad (and recorded).
fn read_step(section: &Section<'_>) -> Option<StepConfig> {
    let before = section.problems.count();
    section.only(&["name", "kind", "core", "timeout", "url", "command"]);
    let name = section.required_string("name").filter(|name| {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            section.report(
                "name",
                format!("must be 1 or more of a-z A-Z 0-9 . _ -, got {name:?}"),
            );
        }
        valid
    });
    let core = section.boolean("core").unwrap_or(defaults::CORE);
    let timeout = section
        .duration("timeout")
        .unwrap_or(defaults::STEP_TIMEOUT);
    let action = match section.required_string("kind")? {
        "http" => read_http_step(section),
        "exec" => read_exec_step(section),
        other => {
            section.report(
                "kind",
                format!("must be \"http\" or \"exec\", got {other:?}"),
            );
            None
        }
    };
    if section.problems.count() > before {
        return None;
    }
    Some(StepConfig {
        name: name?.to_owned(),
        core,
        timeout,
        action: action?,
    })
}

fn read_http_step(section: &Section<'_>) -> Option<StepAction> {
    if section.has("command") {
        section.report("command", "only for kind = \"exec\"");
    }
    let url = section.required_string("url")?;
    if let Err(reason) = check_http_url(url) {
        section.report("url", reason);
        return None;
    }
    Some(StepAction::Http {
        url: url.to_owned(),
    })
}

fn read_exec_step(section: &Section<'_>) -> Option<StepAction> {
    if section.has("url") {
        section.report("url", "only for kind = \"http\"");
    }
    if !section.has("command") {
        section.report("command", "is required for kind = \"exec\"");
    }
    let command = section.strings("command")?;
    if command.first().is_none_or(|program| program.is_empty()) {
        section.report(
            "command",
            "must name a program first, e.g. [\"sh\", \"-c\", \"...\"]",
        );
        return None;
    }
    Some(StepAction::Exec { command })
}

fn check_http_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
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
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn every_bad_key_is_named_once_in_file_order() {
        let text = r#"
broker = "127.0.0.1:4150"
colour = "blue"
concurrency = 0

[degrade]
threshold = "soon"
recover_below = "1s"

[[subscriptions]]
topic = "bad topic"
channel = "work"
priorty = "urgent"

[[subscriptions.steps]]
name = "update"
kind = "exec"
command = ["true"]
url = "http://x/"

[[subscriptions]]
topic = "other"
channel = "work"

[[subscriptions.steps]]
name = "a"
kind = "grpc"
timeout = 5
"#;
        let keys: Vec<String> = check_worker_toml(text).into_iter().map(|e| e.key).collect();
        // Not degrade.recover_below: the threshold it is compared with was
        // not read, so comparing it with the default would be made up.
        assert_eq!(
            keys,
            [
                "colour",
                "concurrency",
                "degrade.threshold",
                "subscriptions[0].priorty",
                "subscriptions[0].topic",
                "subscriptions[0].steps[0].url",
                "subscriptions[1].steps[0].timeout",
                "subscriptions[1].steps[0].kind",
            ]
        );
        assert_eq!(
            WorkerConfig::from_toml_str(text).unwrap_err().key,
            "colour",
            "from_toml_str reports the first"
        );
    }

    #[test]
    fn a_bad_value_is_not_also_reported_missing() {
        let cases = [
            (
                MINIMAL.replace("\"127.0.0.1:4150\"", "5"),
                "broker",
                "must be a string",
            ),
            (
                MINIMAL.replace("\"tickets\"", "[]"),
                "subscriptions[0].topic",
                "must be a string",
            ),
            (
                MINIMAL.replace("[\"true\"]", "\"true\""),
                "subscriptions[0].steps[0].command",
                "must be an array of strings",
            ),
            (
                "broker = \"h:1\"\nsubscriptions = 5\n".to_owned(),
                "subscriptions",
                "must be an array of tables ([[...]])",
            ),
        ];
        for (text, key, reason) in cases {
            assert_eq!(
                check_worker_toml(&text),
                [ConfigError::new(key, reason)],
                "{text}"
            );
        }
        assert!(check_worker_toml(MINIMAL).is_empty());
    }

    #[test]
    fn lookupd_addresses_take_both_forms() {
        assert_eq!(lookupd_authority("127.0.0.1:4161"), Some("127.0.0.1:4161"));
        assert_eq!(lookupd_authority("http://lk:4161/"), Some("lk:4161"));
        assert_eq!(lookupd_authority("https://lk:4161"), None);
        assert_eq!(lookupd_authority("lk"), None);
        assert_eq!(lookupd_authority(":4161"), None);
    }
}
