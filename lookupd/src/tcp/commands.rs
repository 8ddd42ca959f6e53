//! The four commands of protocol V1, with nsqlookupd's replies and error
//! texts: IDENTIFY, REGISTER, UNREGISTER, PING; and triage's extension
//! `TIER <topic> <tier>`, which the IDENTIFY reply advertises with
//! `"triage_tiers": true` so that a node sends it only to a lookupd that
//! knows it (nsqlookupd would close the connection on it).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use triage_protocol::names::{is_valid_channel_name, is_valid_topic_name};

use crate::db::{PeerInfo, Registration};
use crate::options::MAX_IDENTIFY_BODY;
use crate::server::Shared;

/// A protocol error: `"<CODE> <description>"` on the wire. Every one closes
/// the connection (nsqlookupd makes them all `FatalClientErr`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {description}")]
pub struct CommandError {
    pub code: &'static str,
    pub description: String,
}

impl CommandError {
    pub fn invalid(description: impl Into<String>) -> CommandError {
        CommandError {
            code: "E_INVALID",
            description: description.into(),
        }
    }

    fn bad_body(description: impl Into<String>) -> CommandError {
        CommandError {
            code: "E_BAD_BODY",
            description: description.into(),
        }
    }
}

/// IDENTIFY's JSON body. Unknown fields are ignored, as Go's decoder does.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct IdentifyBody {
    broadcast_address: String,
    tcp_port: u16,
    http_port: u16,
    version: String,
    hostname: String,
    topology_zone: String,
    topology_region: String,
    /// triage's extension: topic name to tier.
    triage_topic_tiers: BTreeMap<String, String>,
}

/// One node's connection: who it said it is, once it has.
#[derive(Debug)]
pub struct Connection {
    shared: Arc<Shared>,
    remote: String,
    peer: Option<Arc<PeerInfo>>,
}

impl Connection {
    pub fn new(shared: Arc<Shared>, remote: String) -> Connection {
        Connection {
            shared,
            remote,
            peer: None,
        }
    }

    /// Runs one command line (IDENTIFY reads its body from `reader`) and
    /// returns the reply.
    ///
    /// # Errors
    /// A [`CommandError`] to send before closing the connection.
    pub async fn execute<R: AsyncRead + Unpin>(
        &mut self,
        line: &[u8],
        reader: &mut R,
    ) -> Result<Vec<u8>, CommandError> {
        let line = String::from_utf8_lossy(line);
        let params: Vec<&str> = line.trim().split(' ').collect();
        match params[0] {
            "PING" => Ok(self.ping()),
            "IDENTIFY" => self.identify(reader).await,
            "REGISTER" => self.register(&params[1..]),
            "UNREGISTER" => self.unregister(&params[1..]),
            "TIER" => self.tier(&params[1..]),
            other => Err(CommandError::invalid(format!("invalid command {other}"))),
        }
    }

    fn ping(&self) -> Vec<u8> {
        // A PING may come before IDENTIFY; then there is no one to mark as seen.
        if let Some(peer) = &self.peer {
            peer.touch();
        }
        b"OK".to_vec()
    }

    async fn identify<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Vec<u8>, CommandError> {
        if self.peer.is_some() {
            return Err(CommandError::invalid("cannot IDENTIFY again"));
        }
        let size = reader
            .read_i32()
            .await
            .map_err(|_| CommandError::bad_body("IDENTIFY failed to read body size"))?;
        let size = usize::try_from(size)
            .ok()
            .filter(|&n| n > 0 && n <= MAX_IDENTIFY_BODY)
            .ok_or_else(|| {
                CommandError::bad_body(format!(
                    "IDENTIFY body size {size} is not within 1..={MAX_IDENTIFY_BODY}"
                ))
            })?;
        let mut body = vec![0; size];
        reader
            .read_exact(&mut body)
            .await
            .map_err(|_| CommandError::bad_body("IDENTIFY failed to read body"))?;
        let body: IdentifyBody = serde_json::from_slice(&body)
            .map_err(|_| CommandError::bad_body("IDENTIFY failed to decode JSON body"))?;
        if body.broadcast_address.is_empty()
            || body.tcp_port == 0
            || body.http_port == 0
            || body.version.is_empty()
        {
            return Err(CommandError::bad_body("IDENTIFY missing fields"));
        }
        let peer = Arc::new(PeerInfo::new(
            self.remote.clone(),
            body.hostname,
            body.broadcast_address,
            body.tcp_port,
            body.http_port,
            body.version,
            body.topology_zone,
            body.topology_region,
            body.triage_topic_tiers,
        ));
        tracing::info!(
            client = %self.remote,
            address = %peer.broadcast_address,
            tcp_port = peer.tcp_port,
            http_port = peer.http_port,
            version = %peer.version,
            "IDENTIFY"
        );
        self.shared.db.add_producer(Registration::Node, &peer);
        self.peer = Some(peer);
        let options = &self.shared.options;
        let reply = serde_json::json!({
            "tcp_port": options.tcp_address.port(),
            "http_port": options.http_address.port(),
            "version": crate::VERSION,
            "broadcast_address": options.broadcast_address,
            "hostname": self.shared.hostname,
            "triage_tiers": true,
        });
        Ok(reply.to_string().into_bytes())
    }

    fn identified(&self) -> Result<&Arc<PeerInfo>, CommandError> {
        self.peer
            .as_ref()
            .ok_or_else(|| CommandError::invalid("client must IDENTIFY"))
    }

    fn register(&self, params: &[&str]) -> Result<Vec<u8>, CommandError> {
        let peer = self.identified()?;
        let (topic, channel) = topic_and_channel("REGISTER", params)?;
        let db = &self.shared.db;
        if let Some(channel) = channel {
            let key = Registration::Channel {
                topic: topic.to_owned(),
                channel: channel.to_owned(),
            };
            if db.add_producer(key, peer) {
                tracing::info!(client = %self.remote, topic, channel, "REGISTER channel");
            }
        }
        // Registering a channel registers its topic too.
        if db.add_producer(Registration::Topic(topic.to_owned()), peer) {
            tracing::info!(client = %self.remote, topic, "REGISTER topic");
        }
        Ok(b"OK".to_vec())
    }

    fn unregister(&self, params: &[&str]) -> Result<Vec<u8>, CommandError> {
        let peer = self.identified()?;
        let (topic, channel) = topic_and_channel("UNREGISTER", params)?;
        self.shared.db.unregister(&peer.id, topic, channel);
        if channel.is_none() {
            peer.set_tier(topic, None);
        }
        tracing::info!(client = %self.remote, topic, ?channel, "UNREGISTER");
        Ok(b"OK".to_vec())
    }

    /// `TIER <topic> <tier>`: the node's tier for a topic (triage's extension).
    fn tier(&self, params: &[&str]) -> Result<Vec<u8>, CommandError> {
        let peer = self.identified()?;
        let (topic, tier) = match params {
            [topic, tier] => (*topic, *tier),
            _ => return Err(CommandError::invalid("TIER needs a topic and a tier")),
        };
        topic_and_channel("TIER", &[topic])?;
        let tier = tier
            .parse::<triage_config::Tier>()
            .map_err(|_| CommandError::invalid(format!("TIER unknown tier '{tier}'")))?;
        peer.set_tier(topic, Some(tier.as_str()));
        Ok(b"OK".to_vec())
    }

    /// The connection closed: its node's registrations go with it.
    pub fn close(&mut self) {
        if let Some(peer) = self.peer.take() {
            for key in self.shared.db.registrations_of(&peer.id) {
                self.shared.db.remove_producer(&key, &peer.id);
            }
        }
    }
}

/// nsqlookupd's `getTopicChan`: a topic, and a channel if a second
/// parameter is given and not empty; more parameters are ignored.
fn topic_and_channel<'a>(
    command: &str,
    params: &[&'a str],
) -> Result<(&'a str, Option<&'a str>), CommandError> {
    let Some(&topic) = params.first() else {
        return Err(CommandError::invalid(format!(
            "{command} insufficient number of params"
        )));
    };
    let channel = params.get(1).copied().filter(|c| !c.is_empty());
    if !is_valid_topic_name(topic) {
        return Err(CommandError {
            code: "E_BAD_TOPIC",
            description: format!("{command} topic name '{topic}' is not valid"),
        });
    }
    if let Some(channel) = channel.filter(|c| !is_valid_channel_name(c)) {
        return Err(CommandError {
            code: "E_BAD_CHANNEL",
            description: format!("{command} channel name '{channel}' is not valid"),
        });
    }
    Ok((topic, channel))
}
