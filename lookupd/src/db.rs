//! The registration database, as nsqlookupd's `registration_db.go` keeps it:
//! a map from a registration (a connected node, a topic, or a topic's
//! channel) to the producers (nodes) that registered it, keyed by the
//! node's connection address.
//!
//! As in nsqlookupd, a registration outlives its last producer (until
//! `/topic/delete` or `/channel/delete` removes it), inactivity and
//! tombstones only hide producers from `/lookup` and `/nodes`, and a node's
//! registrations go when its connection closes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// What a producer can be registered under. The derived order (nodes, then
/// topics by name, then channels by topic and name) makes every listing
/// deterministic; nsqlookupd lists in Go's random map order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Registration {
    /// A connected, identified node (nsqlookupd's category `client`).
    Node,
    Topic(String),
    Channel {
        topic: String,
        channel: String,
    },
}

/// What a node said about itself in IDENTIFY, plus where it connected from.
#[derive(Debug, Serialize)]
pub struct PeerInfo {
    /// The connection's remote address: unique per connection.
    #[serde(skip)]
    pub id: String,
    pub remote_address: String,
    pub hostname: String,
    pub broadcast_address: String,
    pub tcp_port: u16,
    pub http_port: u16,
    pub version: String,
    pub topology_zone: String,
    pub topology_region: String,
    /// triage's extension: each topic's tier, from IDENTIFY and then from
    /// `TIER` commands. Shown only by `/nodes`; empty for nsqd. std Mutex:
    /// one map operation at a time, no `.await`.
    #[serde(skip)]
    triage_tiers: Mutex<BTreeMap<String, String>>,
    /// Set at IDENTIFY and by every PING. std Mutex: a copy in, a copy out.
    #[serde(skip)]
    last_update: Mutex<Instant>,
}

impl PeerInfo {
    /// A peer seen just now.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        hostname: String,
        broadcast_address: String,
        tcp_port: u16,
        http_port: u16,
        version: String,
        topology_zone: String,
        topology_region: String,
        triage_tiers: BTreeMap<String, String>,
    ) -> PeerInfo {
        PeerInfo {
            remote_address: id.clone(),
            id,
            hostname,
            broadcast_address,
            tcp_port,
            http_port,
            version,
            topology_zone,
            topology_region,
            triage_tiers: Mutex::new(triage_tiers),
            last_update: Mutex::new(Instant::now()),
        }
    }

    pub fn touch(&self) {
        *self.last_seen_lock() = Instant::now();
    }

    pub fn last_update(&self) -> Instant {
        *self.last_seen_lock()
    }

    fn last_seen_lock(&self) -> MutexGuard<'_, Instant> {
        // An Instant cannot be left half-written; a poisoned lock is still valid.
        self.last_update
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the node's topic tiers.
    pub fn tiers(&self) -> BTreeMap<String, String> {
        self.tiers_lock().clone()
    }

    /// Records a topic's tier, or forgets it (`None`).
    pub fn set_tier(&self, topic: &str, tier: Option<&str>) {
        let mut tiers = self.tiers_lock();
        match tier {
            Some(tier) => tiers.insert(topic.to_owned(), tier.to_owned()),
            None => tiers.remove(topic),
        };
    }

    fn tiers_lock(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        // A BTreeMap operation cannot leave the map invalid; a poisoned lock is still usable.
        self.triage_tiers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `broadcast_address:http_port`, how `/topic/tombstone?node=` names a node.
    pub fn node_name(&self) -> String {
        format!("{}:{}", self.broadcast_address, self.http_port)
    }
}

/// A node registered under one registration; the tombstone is per registration.
#[derive(Debug, Clone)]
pub struct Producer {
    pub peer: Arc<PeerInfo>,
    pub tombstoned_at: Option<Instant>,
}

impl Producer {
    pub fn is_tombstoned(&self, lifetime: Duration, now: Instant) -> bool {
        self.tombstoned_at
            .is_some_and(|at| now.saturating_duration_since(at) < lifetime)
    }

    /// nsqlookupd's `FilterByActive`: pinged within `inactive_timeout` and
    /// not tombstoned within `tombstone_lifetime`.
    pub fn is_active(&self, inactive_timeout: Duration, lifetime: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.peer.last_update()) <= inactive_timeout
            && !self.is_tombstoned(lifetime, now)
    }
}

type ProducerMap = BTreeMap<String, Producer>;

#[derive(Debug, Default)]
pub struct RegistrationDb {
    /// std Mutex: every operation is a few map steps with no `.await`, and
    /// registrations change at human pace (topic and channel creation).
    map: Mutex<BTreeMap<Registration, ProducerMap>>,
}

impl RegistrationDb {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Registration, ProducerMap>> {
        // Poisoning would need a panic inside a BTreeMap operation; the map stays valid.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a registration with no producers (`/topic/create`, `/channel/create`).
    pub fn add_registration(&self, key: Registration) {
        self.lock().entry(key).or_default();
    }

    /// Registers a producer; false if it was registered already (an existing
    /// producer keeps its tombstone, as in nsqlookupd).
    pub fn add_producer(&self, key: Registration, peer: &Arc<PeerInfo>) -> bool {
        let mut map = self.lock();
        let producers = map.entry(key).or_default();
        if producers.contains_key(&peer.id) {
            return false;
        }
        producers.insert(
            peer.id.clone(),
            Producer {
                peer: peer.clone(),
                tombstoned_at: None,
            },
        );
        true
    }

    /// Removes a producer from a registration; returns whether it was there
    /// and how many producers are left. The registration itself stays.
    pub fn remove_producer(&self, key: &Registration, id: &str) -> (bool, usize) {
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(producers) => (producers.remove(id).is_some(), producers.len()),
            None => (false, 0),
        }
    }

    pub fn remove_registration(&self, key: &Registration) {
        self.lock().remove(key);
    }

    pub fn has(&self, key: &Registration) -> bool {
        self.lock().contains_key(key)
    }

    /// Every registered topic name, with or without producers.
    pub fn topics(&self) -> Vec<String> {
        self.lock()
            .keys()
            .filter_map(|key| match key {
                Registration::Topic(name) => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Every registered channel of a topic.
    pub fn channels(&self, topic: &str) -> Vec<String> {
        self.lock()
            .keys()
            .filter_map(|key| match key {
                Registration::Channel { topic: t, channel } if t == topic => Some(channel.clone()),
                _ => None,
            })
            .collect()
    }

    /// The producers of one registration, tombstoned and inactive included.
    pub fn producers(&self, key: &Registration) -> Vec<Producer> {
        self.lock()
            .get(key)
            .map(|producers| producers.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every registration a node (by connection id) holds.
    pub fn registrations_of(&self, id: &str) -> Vec<Registration> {
        self.lock()
            .iter()
            .filter(|(_, producers)| producers.contains_key(id))
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// Removes every channel registration of a topic, then the topic's.
    pub fn remove_topic(&self, topic: &str) {
        self.lock().retain(|key, _| match key {
            Registration::Topic(t) | Registration::Channel { topic: t, .. } => t != topic,
            Registration::Node => true,
        });
    }

    /// Tombstones the topic's producers whose `broadcast_address:http_port`
    /// is `node`; returns how many.
    pub fn tombstone(&self, topic: &str, node: &str, now: Instant) -> usize {
        let mut map = self.lock();
        let Some(producers) = map.get_mut(&Registration::Topic(topic.to_owned())) else {
            return 0;
        };
        let mut count = 0;
        for producer in producers.values_mut() {
            if producer.peer.node_name() == node {
                producer.tombstoned_at = Some(now);
                count += 1;
            }
        }
        count
    }

    /// Unregisters a topic or channel for one node, as nsqlookupd's
    /// UNREGISTER: without a channel it also drops the node's channels of the
    /// topic; an `#ephemeral` registration left with no producer is removed.
    pub fn unregister(&self, id: &str, topic: &str, channel: Option<&str>) {
        let ephemeral = triage_protocol::names::is_ephemeral;
        let mut map = self.lock();
        match channel {
            Some(channel) => {
                let key = Registration::Channel {
                    topic: topic.to_owned(),
                    channel: channel.to_owned(),
                };
                remove_id(&mut map, key, id, ephemeral(channel));
            }
            None => {
                let channels: Vec<Registration> = map
                    .keys()
                    .filter(
                        |key| matches!(key, Registration::Channel { topic: t, .. } if t == topic),
                    )
                    .cloned()
                    .collect();
                for key in channels {
                    remove_id(&mut map, key, id, false);
                }
                let key = Registration::Topic(topic.to_owned());
                remove_id(&mut map, key, id, ephemeral(topic));
            }
        }
    }
}

/// Removes one producer; with `drop_if_empty`, the registration too if none is left.
fn remove_id(
    map: &mut BTreeMap<Registration, ProducerMap>,
    key: Registration,
    id: &str,
    drop_if_empty: bool,
) {
    if let Some(producers) = map.get_mut(&key) {
        producers.remove(id);
        if producers.is_empty() && drop_if_empty {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, http_port: u16) -> Arc<PeerInfo> {
        Arc::new(PeerInfo::new(
            id.into(),
            "host".into(),
            "10.0.0.1".into(),
            4150,
            http_port,
            "1.3.0".into(),
            String::new(),
            String::new(),
            BTreeMap::new(),
        ))
    }

    fn channel(topic: &str, channel: &str) -> Registration {
        Registration::Channel {
            topic: topic.into(),
            channel: channel.into(),
        }
    }

    #[test]
    fn a_producer_registers_once_and_its_registration_outlives_it() {
        let db = RegistrationDb::default();
        let a = peer("a", 4151);
        let topic = Registration::Topic("t".into());
        assert!(db.add_producer(topic.clone(), &a));
        assert!(!db.add_producer(topic.clone(), &a));
        assert_eq!(db.remove_producer(&topic, "a"), (true, 0));
        assert_eq!(db.remove_producer(&topic, "a"), (false, 0));
        assert_eq!(db.topics(), vec!["t".to_owned()]);
    }

    #[test]
    fn unregistering_a_topic_drops_the_nodes_channels_and_empty_ephemeral_keys() {
        let db = RegistrationDb::default();
        let (a, b) = (peer("a", 1), peer("b", 2));
        db.add_producer(channel("t", "c"), &a);
        db.add_producer(channel("t", "c"), &b);
        db.add_producer(Registration::Topic("t".into()), &a);
        db.add_producer(channel("t", "x#ephemeral"), &a);
        db.unregister("a", "t", None);
        assert!(db.registrations_of("a").is_empty());
        assert_eq!(db.producers(&channel("t", "c")).len(), 1);
        // A normal channel stays even when empty; only ephemeral ones go.
        assert_eq!(
            db.channels("t"),
            vec!["c".to_owned(), "x#ephemeral".to_owned()]
        );
        db.unregister("b", "t", Some("c"));
        assert_eq!(
            db.channels("t"),
            vec!["c".to_owned(), "x#ephemeral".to_owned()]
        );
        db.add_producer(channel("t", "y#ephemeral"), &b);
        db.unregister("b", "t", Some("y#ephemeral"));
        assert!(!db.has(&channel("t", "y#ephemeral")));
    }

    #[test]
    fn tombstones_hide_a_producer_for_their_lifetime_only() {
        let db = RegistrationDb::default();
        let (a, b) = (peer("a", 4151), peer("b", 4152));
        let topic = Registration::Topic("t".into());
        db.add_producer(topic.clone(), &a);
        db.add_producer(topic.clone(), &b);
        let now = Instant::now();
        assert_eq!(db.tombstone("t", "10.0.0.1:4152", now), 1);
        let lifetime = Duration::from_secs(45);
        let active = |at: Instant| -> Vec<u16> {
            db.producers(&topic)
                .iter()
                .filter(|p| p.is_active(Duration::from_secs(300), lifetime, at))
                .map(|p| p.peer.http_port)
                .collect()
        };
        assert_eq!(active(now), vec![4151]);
        assert_eq!(active(now + lifetime), vec![4151, 4152]);
    }

    #[test]
    fn deleting_a_topic_removes_its_channels_but_not_other_topics() {
        let db = RegistrationDb::default();
        db.add_registration(channel("t", "c"));
        db.add_registration(Registration::Topic("t".into()));
        db.add_registration(channel("u", "c"));
        db.remove_topic("t");
        assert!(db.topics().is_empty());
        assert!(db.channels("t").is_empty());
        assert_eq!(db.channels("u"), vec!["c".to_owned()]);
    }
}
