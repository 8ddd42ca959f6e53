//! Checking a config file offline, for `triagectl config check`: which
//! program a TOML file configures, and every problem in it by that program's
//! own rules ([`check_broker_toml`] for triaged, [`check_worker_toml`] for
//! triage-worker).

use std::path::Path;

use crate::load::{check_broker_toml, closest, KEYS as BROKER_KEYS};
use crate::worker::{check_worker_toml, TOP_LEVEL_KEYS as WORKER_KEYS};

/// Which program a config file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigKind {
    /// triaged's file (`triaged --config`).
    Broker,
    /// triage-worker's file.
    Worker,
}

impl ConfigKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigKind::Broker => "broker",
            ConfigKind::Worker => "worker",
        }
    }
}

/// The kind of file `text` is, from its top-level keys: `subscriptions`
/// (`[[subscriptions]]`, which every worker file needs) makes it a worker
/// file; else any key triaged knows, or no key at all (triaged's defaults),
/// a broker file; else any other key triage-worker knows, a worker file;
/// else a typo of a key (as triaged's did-you-mean finds them), broker's
/// first. `None`: no key either program knows. Text that is not TOML counts
/// as a broker file, whose check then names the line of the syntax error.
pub fn guess_kind(text: &str) -> Option<ConfigKind> {
    let Ok(table) = text.parse::<toml::Table>() else {
        return Some(ConfigKind::Broker);
    };
    let has_any = |known: &[&str]| table.keys().any(|k| known.contains(&k.as_str()));
    let has_typo_of = |known: &[&'static str]| table.keys().any(|k| closest(k, known).is_some());
    if table.contains_key("subscriptions") {
        Some(ConfigKind::Worker)
    } else if table.is_empty() || has_any(BROKER_KEYS) {
        Some(ConfigKind::Broker)
    } else if has_any(WORKER_KEYS) {
        Some(ConfigKind::Worker)
    } else if has_typo_of(BROKER_KEYS) {
        Some(ConfigKind::Broker)
    } else if has_typo_of(WORKER_KEYS) {
        Some(ConfigKind::Worker)
    } else {
        None
    }
}

/// Every problem in the file at `path` read as `kind`, one sentence each
/// naming the file; empty when it is good.
pub fn check_config_toml(text: &str, path: &Path, kind: ConfigKind) -> Vec<String> {
    match kind {
        ConfigKind::Broker => check_broker_toml(text, path)
            .iter()
            .map(ToString::to_string)
            .collect(),
        ConfigKind::Worker => check_worker_toml(text)
            .iter()
            .map(|e| format!("worker config file {}: {e}", path.display()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_follows_the_top_level_keys() {
        let cases = [
            (
                "[[subscriptions]]\ntopic = \"t\"\n",
                Some(ConfigKind::Worker),
            ),
            // A key both know does not decide; subscriptions does.
            (
                "http_address = \"127.0.0.1:1\"\n[[subscriptions]]\n",
                Some(ConfigKind::Worker),
            ),
            ("http_address = \"127.0.0.1:1\"\n", Some(ConfigKind::Broker)),
            ("mem_queue_size = 10\n", Some(ConfigKind::Broker)),
            ("max_msg_sise = 1024\n", Some(ConfigKind::Broker)),
            ("[degrad]\nthreshold = \"1s\"\n", Some(ConfigKind::Worker)),
            ("", Some(ConfigKind::Broker)),
            ("broker = \"127.0.0.1:4150\"\n", Some(ConfigKind::Worker)),
            ("[degrade]\nthreshold = \"1s\"\n", Some(ConfigKind::Worker)),
            ("[package]\nname = \"x\"\n", None),
            ("not = [toml", Some(ConfigKind::Broker)),
        ];
        for (text, kind) in cases {
            assert_eq!(guess_kind(text), kind, "{text}");
        }
    }
}
