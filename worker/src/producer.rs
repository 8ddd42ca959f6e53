//! The worker's own publishing connection, used to defer skipped work.
//!
//! One connection, one PUB at a time: deferrals are rare (only while
//! degraded) and each must be acknowledged before its original message is
//! FINed, so a lock around a plain request/response is all it needs. A
//! connection the broker has closed (for example after missed heartbeats
//! while idle) is replaced once per publish.

use bytes::Bytes;
use tokio::sync::Mutex;
use tokio::time::Instant;
use triage_protocol::Command;

use crate::consumer::ConsumerConfig;
use crate::error::{ConfigError, ConsumerError};
use crate::wire::Wire;

#[derive(Debug)]
pub struct Producer {
    config: ConsumerConfig,
    /// tokio Mutex: held across the PUB and its reply, so replies cannot be mixed up.
    connection: Mutex<Option<Wire>>,
}

impl Producer {
    /// Connects lazily, on the first publish.
    pub fn new(config: ConsumerConfig) -> Self {
        Producer {
            config,
            connection: Mutex::new(None),
        }
    }

    /// Publishes `body` to `topic` and waits for the broker's `OK`.
    ///
    /// # Errors
    /// When the broker cannot be reached, refuses the PUB (`E_*`) or does
    /// not answer within `connect_timeout` plus `write_timeout`.
    pub async fn publish(&self, topic: &str, body: Bytes) -> Result<(), ConsumerError> {
        let command = Command::Pub {
            topic: topic.to_owned(),
            body,
        };
        let mut connection = self.connection.lock().await;
        let mut retried = false;
        loop {
            let deadline = Instant::now() + self.config.connect_timeout + self.config.write_timeout;
            let mut wire = match connection.take() {
                Some(wire) => wire,
                None => self.connect(deadline).await?,
            };
            match wire.request_ok(&command, deadline).await {
                Ok(()) => {
                    *connection = Some(wire);
                    return Ok(());
                }
                // Whatever the error, this connection's state is unknown now: it is dropped.
                Err(e) => {
                    let stale = matches!(e, ConsumerError::Io(_) | ConsumerError::Closed);
                    if retried || !stale {
                        return Err(e);
                    }
                    retried = true;
                }
            }
        }
    }

    /// Connects and IDENTIFYs (plainly: no compression, no negotiated settings),
    /// so the broker's stats name this connection after the worker.
    async fn connect(&self, deadline: Instant) -> Result<Wire, ConsumerError> {
        // Deferred work goes to the broker given by address, never to one found through lookupd.
        let address = self.config.address.as_deref().ok_or_else(|| {
            ConfigError::new("address", "no broker address to publish deferred work to")
        })?;
        let mut wire = Wire::connect(&self.config, address, deadline).await?;
        let identify = Command::Identify(self.config.identity());
        wire.request_ok(&identify, deadline).await?;
        Ok(wire)
    }
}
