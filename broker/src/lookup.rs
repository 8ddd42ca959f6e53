//! Registration with lookupd (nsqlookupd or triage-lookupd), as nsqd's
//! `nsqd/lookup.go` and `lookup_peer.go` do it: one task per configured
//! address connects, sends the magic `"  V1"` and IDENTIFY, REGISTERs every
//! topic and channel, PINGs every 15 s, and follows topic and channel
//! creation and deletion with REGISTER and UNREGISTER. When the connection
//! fails (a lookupd restart drops every registration) the task reconnects
//! with backoff and registers everything again.
//!
//! Each topic's tier goes to lookupd as an extension nsqlookupd ignores: a
//! `triage_topic_tiers` field in IDENTIFY, and, to a lookupd whose IDENTIFY
//! reply says `"triage_tiers": true` (triage-lookupd), `TIER <topic> <tier>`
//! for topics created later.
//!
//! The broker only says *that* its topics or channels changed
//! ([`TopologyChanges`]); each task compares what the broker holds with
//! what it has registered and sends the difference, so a burst of changes
//! costs one pass and none can be missed or reordered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::broker::Broker;

/// nsqd pings every 15 s; nsqlookupd forgets a node after 5 min without one.
pub const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Connecting, and each command's round trip, must finish within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnect waits double from the first to the last.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Largest reply accepted: lookupd's replies are `OK` or a small JSON object.
const MAX_REPLY: u32 = 64 << 10;

/// "The set of topics or channels changed", from the broker to every
/// registration task. A `watch` because only the latest news matters:
/// changes in a burst coalesce into one wake-up, and nothing queues up.
#[derive(Debug)]
pub struct TopologyChanges(watch::Sender<()>);

impl Default for TopologyChanges {
    fn default() -> Self {
        TopologyChanges(watch::channel(()).0)
    }
}

impl TopologyChanges {
    /// Called wherever a topic or channel is created or deleted.
    pub fn notify(&self) {
        self.0.send_replace(());
    }

    pub fn subscribe(&self) -> watch::Receiver<()> {
        self.0.subscribe()
    }
}

#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("no reply within {}s", COMMAND_TIMEOUT.as_secs())]
    Timeout,
    #[error("lookupd refused {command}: {reply}")]
    Refused { command: String, reply: String },
    #[error("lookupd sent data nobody asked for")]
    Unsolicited,
    #[error("reply of {0} bytes is larger than {MAX_REPLY}")]
    ReplyTooLarge(u32),
}

/// A topic, or a topic's channel, as REGISTER names it.
type Key = (String, Option<String>);

/// Starts one registration task per configured lookupd; each stops with the broker.
pub fn spawn(broker: &Arc<Broker>) {
    for addr in &broker.config.lookupd_tcp_addresses {
        broker.tracker.spawn(run(broker.clone(), addr.clone()));
    }
}

async fn run(broker: Arc<Broker>, addr: String) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let failure = tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            failure = session(&broker, &addr) => failure,
        };
        // A connection that lasted was healthy: the next one waits the least.
        if started.elapsed() > MAX_BACKOFF {
            backoff = FIRST_BACKOFF;
        }
        tracing::warn!(lookupd = %addr, error = %failure, retry_in_ms = backoff.as_millis() as u64, "lookupd connection lost");
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection, from IDENTIFY until it fails; returns why.
async fn session(broker: &Broker, addr: &str) -> PeerError {
    // Subscribed before the first snapshot, so no change after it is missed.
    let mut changes = broker.topology.subscribe();
    let mut peer = match timeout(COMMAND_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Peer { stream },
        Ok(Err(e)) => return e.into(),
        Err(_) => return PeerError::Timeout,
    };
    let mut registered = Registered::default();
    let result = async {
        peer.send(b"  V1").await?;
        let (command, tiers) = identify(broker);
        let reply = peer.command(&command).await?;
        tracing::info!(lookupd = %addr, reply = %String::from_utf8_lossy(&reply), "identified to lookupd");
        let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
        if reply["triage_tiers"] == true {
            registered.tiers = Some(tiers);
        }
        sync(&mut peer, &mut registered, broker).await?;
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut probe = [0u8; 1];
        loop {
            tokio::select! {
                // lookupd speaks only when asked, so a readable socket between
                // commands means it closed (or broke protocol): reconnect now
                // rather than at the next PING (when nsqd would notice).
                read = peer.stream.read(&mut probe) => {
                    return Err(match read {
                        Ok(0) => std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into(),
                        Ok(_) => PeerError::Unsolicited,
                        Err(e) => e.into(),
                    });
                }
                _ = ping.tick() => {
                    peer.command(b"PING\n").await?;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The broker is gone; shutdown cancels this task first.
                        return Ok(());
                    }
                    sync(&mut peer, &mut registered, broker).await?;
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) => PeerError::Io(std::io::ErrorKind::BrokenPipe.into()),
        Err(e) => e,
    }
}

/// `IDENTIFY` with nsqd's fields, and the tier of each topic as an extension
/// nsqlookupd ignores (its JSON decoder skips unknown fields).
/// Returns the command and the tiers it told.
fn identify(broker: &Broker) -> (Vec<u8>, BTreeMap<String, &'static str>) {
    let config = &broker.config;
    let tiers: BTreeMap<String, &'static str> = broker
        .topics()
        .iter()
        .map(|t| (t.name.clone(), t.tier().as_str()))
        .collect();
    let body = serde_json::json!({
        "broadcast_address": config.broadcast_address,
        "tcp_port": config.tcp_address.port(),
        "http_port": config.http_address.port(),
        "version": crate::VERSION,
        "hostname": triage_config::broker::hostname(),
        "triage_topic_tiers": tiers,
    })
    .to_string();
    let mut command = b"IDENTIFY\n".to_vec();
    command.extend_from_slice(&(body.len() as u32).to_be_bytes());
    command.extend_from_slice(body.as_bytes());
    (command, tiers)
}

/// What one lookupd has been told on this connection.
#[derive(Default)]
struct Registered {
    keys: BTreeSet<Key>,
    /// Each topic's tier as told; `None` when lookupd does not take `TIER`.
    tiers: Option<BTreeMap<String, &'static str>>,
}

/// Every topic and every channel the broker holds now, and each topic's tier.
fn desired(broker: &Broker) -> (BTreeSet<Key>, BTreeMap<String, &'static str>) {
    let mut keys = BTreeSet::new();
    let mut tiers = BTreeMap::new();
    for topic in broker.topics() {
        for channel in topic.snapshot().channels {
            keys.insert((topic.name.clone(), Some(channel.name.clone())));
        }
        keys.insert((topic.name.clone(), None));
        tiers.insert(topic.name.clone(), topic.tier().as_str());
    }
    (keys, tiers)
}

/// Sends what changed since `registered`: UNREGISTERs in reverse name order
/// (a topic's channels before the topic), REGISTERs in name order (a topic
/// before its channels), then the tiers lookupd was not told yet.
async fn sync(
    peer: &mut Peer,
    registered: &mut Registered,
    broker: &Broker,
) -> Result<(), PeerError> {
    let (keys, tiers) = desired(broker);
    let gone: Vec<&Key> = registered.keys.difference(&keys).collect();
    for (topic, channel) in gone.into_iter().rev() {
        peer.command(&line("UNREGISTER", topic, channel.as_deref()))
            .await?;
    }
    for (topic, channel) in keys.difference(&registered.keys) {
        peer.command(&line("REGISTER", topic, channel.as_deref()))
            .await?;
    }
    registered.keys = keys;
    if let Some(told) = &mut registered.tiers {
        // lookupd forgets a topic's tier when the topic is unregistered.
        told.retain(|topic, _| tiers.contains_key(topic));
        for (topic, tier) in tiers {
            if told.get(&topic) != Some(&tier) {
                peer.command(format!("TIER {topic} {tier}\n").as_bytes())
                    .await?;
                told.insert(topic, tier);
            }
        }
    }
    Ok(())
}

fn line(verb: &str, topic: &str, channel: Option<&str>) -> Vec<u8> {
    match channel {
        Some(channel) => format!("{verb} {topic} {channel}\n").into_bytes(),
        None => format!("{verb} {topic}\n").into_bytes(),
    }
}

/// The connection to one lookupd: each command is one round trip.
struct Peer {
    stream: TcpStream,
}

impl Peer {
    async fn send(&mut self, bytes: &[u8]) -> Result<(), PeerError> {
        match timeout(COMMAND_TIMEOUT, self.stream.write_all(bytes)).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(PeerError::Timeout),
        }
    }

    /// Sends a command and reads its reply, `[4-byte length][data]`; a
    /// reply starting `E_` is lookupd's error (and it closes the connection).
    async fn command(&mut self, command: &[u8]) -> Result<Vec<u8>, PeerError> {
        self.send(command).await?;
        let reply = timeout(COMMAND_TIMEOUT, async {
            let size = self.stream.read_u32().await?;
            if size > MAX_REPLY {
                return Err(PeerError::ReplyTooLarge(size));
            }
            let mut reply = vec![0; size as usize];
            self.stream.read_exact(&mut reply).await?;
            Ok(reply)
        })
        .await
        .map_err(|_| PeerError::Timeout)??;
        if reply.starts_with(b"E_") {
            let command = String::from_utf8_lossy(command);
            return Err(PeerError::Refused {
                command: command.lines().next().unwrap_or_default().to_owned(),
                reply: String::from_utf8_lossy(&reply).into_owned(),
            });
        }
        Ok(reply)
    }
}
