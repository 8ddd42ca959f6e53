//! The broker's registry of topics, shared by the TCP and HTTP front ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triage_config::{BrokerConfig, ConfigError, Tier, TierMatcher};

use crate::channel::Channel;
use crate::client::ClientId;
use crate::topic::{PublishError, Topic};

/// Why a topic could not be created or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0} not found")]
    NotFound(String),
    #[error("channel {1} of topic {0} not found")]
    ChannelNotFound(String, String),
    #[error("the {0} tier is not available yet in this build of triage (only memory is)")]
    TierUnavailable(&'static str),
    #[error("topic {topic} already exists with tier {existing}")]
    TierConflict {
        topic: String,
        existing: &'static str,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[derive(Debug)]
pub struct Broker {
    pub config: Arc<BrokerConfig>,
    /// The config's tier rules, compiled once.
    tiers: TierMatcher,
    /// std Mutex: lookups and inserts only; no `.await` while held.
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    next_client_id: AtomicU64,
    pub start_time: i64,
    /// Cancelled at shutdown; every task selects on it or on a child of it.
    pub shutdown: CancellationToken,
    /// Every spawned task, so shutdown can wait for all of them.
    pub tracker: TaskTracker,
}

impl Broker {
    /// # Errors
    /// When a tier rule's pattern does not compile (a validated config has none).
    pub fn new(
        config: BrokerConfig,
        shutdown: CancellationToken,
    ) -> Result<Arc<Broker>, ConfigError> {
        Ok(Arc::new(Broker {
            tiers: config.tier_matcher()?,
            config: Arc::new(config),
            topics: Mutex::new(HashMap::new()),
            next_client_id: AtomicU64::new(1),
            start_time: crate::client::unix_secs(),
            shutdown,
            tracker: TaskTracker::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Topic>>> {
        // Poisoning would need a panic inside a HashMap operation; the map stays valid.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Returns the topic, creating it with the tier its name's rules give.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.topic_with_tier(name, None)
    }

    /// Creates the topic (or returns the existing one). An explicit tier that
    /// differs from an existing topic's is an error rather than a silent change.
    pub fn topic_with_tier(
        &self,
        name: &str,
        tier: Option<Tier>,
    ) -> Result<Arc<Topic>, TopicError> {
        let mut topics = self.lock();
        if let Some(topic) = topics.get(name) {
            return match tier {
                Some(t) if t != topic.tier => Err(TopicError::TierConflict {
                    topic: name.to_owned(),
                    existing: topic.tier.as_str(),
                }),
                _ => Ok(topic.clone()),
            };
        }
        let tier = tier.unwrap_or_else(|| self.tiers.tier_for(name));
        if tier != Tier::Memory {
            return Err(TopicError::TierUnavailable(tier.as_str()));
        }
        let topic = Topic::new(
            name,
            tier,
            self.config.mem_queue_size,
            self.shutdown.child_token(),
            self.tracker.clone(),
        );
        topics.insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, tier = tier.as_str(), "topic created");
        Ok(topic)
    }

    pub fn existing_topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| TopicError::NotFound(name.to_owned()))
    }

    pub fn existing_channel(&self, topic: &str, channel: &str) -> Result<Arc<Channel>, TopicError> {
        self.existing_topic(topic)?
            .existing_channel(channel)
            .ok_or_else(|| TopicError::ChannelNotFound(topic.to_owned(), channel.to_owned()))
    }

    pub fn channel(&self, topic: &str, channel: &str) -> Result<Arc<Channel>, TopicError> {
        Ok(self
            .topic(topic)?
            .channel(channel, self.config.mem_queue_size)?)
    }

    /// Publishes to a topic, creating it if needed. `defer` delays delivery.
    pub fn publish(
        &self,
        topic: &str,
        bodies: Vec<Bytes>,
        defer: Option<Duration>,
    ) -> Result<(), TopicError> {
        let due = defer.filter(|d| !d.is_zero()).map(|d| Instant::now() + d);
        self.topic(topic)?.publish(bodies, due)?;
        Ok(())
    }

    pub fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let topic = self
            .lock()
            .remove(name)
            .ok_or_else(|| TopicError::NotFound(name.to_owned()))?;
        topic.delete();
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub fn delete_channel(&self, topic_name: &str, channel: &str) -> Result<(), TopicError> {
        let topic = self.existing_topic(topic_name)?;
        let now_empty = topic.delete_channel(channel).ok_or_else(|| {
            TopicError::ChannelNotFound(topic_name.to_owned(), channel.to_owned())
        })?;
        if now_empty && topic.ephemeral {
            self.remove_topic_if_same(&topic);
        }
        Ok(())
    }

    /// A consumer left an ephemeral channel: the channel goes with its last
    /// consumer, and an ephemeral topic with its last channel.
    pub fn consumer_left(&self, channel: &Arc<Channel>, remaining: usize) {
        if remaining > 0 || !channel.ephemeral {
            return;
        }
        let Ok(topic) = self.existing_topic(&channel.topic_name) else {
            return;
        };
        match topic.existing_channel(&channel.name) {
            Some(current) if Arc::ptr_eq(&current, channel) => {}
            _ => return,
        }
        if topic.delete_channel(&channel.name) == Some(true) && topic.ephemeral {
            self.remove_topic_if_same(&topic);
        }
    }

    fn remove_topic_if_same(&self, topic: &Arc<Topic>) {
        let mut topics = self.lock();
        if topics
            .get(&topic.name)
            .is_some_and(|t| Arc::ptr_eq(t, topic))
        {
            topics.remove(&topic.name);
            drop(topics);
            topic.delete();
            tracing::info!(topic = %topic.name, "ephemeral topic deleted with its last channel");
        }
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut topics: Vec<_> = self.lock().values().cloned().collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        topics
    }
}
