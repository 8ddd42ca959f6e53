//! The worker's configuration file. Its tree, defaults and checks live in
//! [`triage_config::worker`], so that `triagectl config check` reads worker
//! files by the same rules without depending on this crate; this module
//! re-exports them and turns a file into the consumer's settings.

pub use triage_config::worker::{
    check_worker_toml, defaults, StepAction, StepConfig, SubscriptionConfig, WorkerConfig,
    DEFERRED_SUFFIX,
};

use crate::consumer::ConsumerConfig;
use crate::latency::LatencyWindow;

/// The consumer settings a configuration implies.
impl From<&WorkerConfig> for ConsumerConfig {
    fn from(config: &WorkerConfig) -> Self {
        ConsumerConfig {
            address: config.broker.clone(),
            lookupd_http_addresses: config.lookupd_http_addresses.clone(),
            lookupd_poll_interval: config.lookupd_poll_interval,
            client_id: config.client_id.clone(),
            hostname: config.hostname.clone(),
            concurrency: config.concurrency,
            max_in_flight: config.max_in_flight,
            backoff: config.backoff,
            shutdown_timeout: config.shutdown_timeout,
            compression: config.compression,
            latency_window: LatencyWindow {
                max_age: Some(config.latency_window),
                ..LatencyWindow::default()
            },
            latency_signal: config.latency_signal,
            degrade: config.degrade,
            ..ConsumerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_file_becomes_valid_consumer_settings() {
        let minimal = "broker = \"127.0.0.1:4150\"\n[[subscriptions]]\ntopic = \"t\"\nchannel = \"c\"\n\
                       [[subscriptions.steps]]\nname = \"s\"\nkind = \"exec\"\ncommand = [\"true\"]\n";
        let consumer = ConsumerConfig::from(&WorkerConfig::from_toml_str(minimal).unwrap());
        assert_eq!(consumer.address.as_deref(), Some("127.0.0.1:4150"));
        assert_eq!(
            consumer.latency_window.max_age,
            Some(defaults::LATENCY_WINDOW)
        );
        consumer.validate().unwrap();

        let lookupd_only = minimal.replace(
            "broker = \"127.0.0.1:4150\"",
            "lookupd_http_addresses = [\"127.0.0.1:4161\"]\nlookupd_poll_interval = \"2s\"",
        );
        let consumer = ConsumerConfig::from(&WorkerConfig::from_toml_str(&lookupd_only).unwrap());
        assert_eq!(consumer.address, None);
        assert_eq!(consumer.lookupd_poll_interval, Duration::from_secs(2));
        consumer.validate().unwrap();
    }
}
