//! The broker's registry of topics, shared by the TCP and HTTP front ends,
//! and the one place that keeps the store's metadata (topics, channels,
//! tiers, paused) in step with it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triage_config::{BrokerConfig, ConfigError, OverflowPolicy, Tier, TierMatcher, TopicSettings};
use triage_protocol::Message;

use crate::channel::Channel;
use crate::client::ClientId;
use crate::delayed::{Clock, Delayed};
use crate::metrics::Metrics;
use crate::store::{ChannelMeta, DelayedMessage, Store, StoreError, StoredMessage, TopicMeta};
use crate::topic::{PublishError, Topic, TopicSpec};

/// How often FINs, watermarks and log trims of persistent topics are written.
/// A crash loses at most this much of them, which means redeliveries, not losses.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(200);

/// Where a memory topic's channel (or, for `None`, the topic itself) saves
/// its messages at shutdown: a log under a name no topic can have, since
/// `/` is not allowed in topic names.
fn saved_name(topic: &str, channel: Option<&str>) -> String {
    format!("{topic}/{}", channel.unwrap_or(""))
}

/// `<topic>.dead`, if that is a valid topic name.
fn dead_letter_topic(topic: &str) -> Option<String> {
    let name = format!("{topic}.dead");
    (triage_protocol::names::is_valid_topic_name(&name)
        && !triage_protocol::names::is_ephemeral(topic))
    .then_some(name)
}

/// The body of a dead letter: the original message and why it died, as
/// JSON. The body is a string when it is UTF-8, hex (`body_hex`) otherwise.
fn dead_letter_body(topic: &str, channel: &str, msg: &Message, reason: &str) -> Bytes {
    let mut envelope = serde_json::json!({
        "topic": topic,
        "channel": channel,
        "id": String::from_utf8_lossy(msg.id.as_bytes()),
        "attempts": msg.attempts,
        "reason": reason,
        "timestamp_ns": msg.timestamp_ns,
    });
    match std::str::from_utf8(&msg.body) {
        Ok(text) => envelope["body"] = text.into(),
        Err(_) => {
            let hex: String = msg.body.iter().map(|b| format!("{b:02x}")).collect();
            envelope["body_hex"] = hex.into();
        }
    }
    Bytes::from(envelope.to_string())
}

/// Settings given with a tier change; `None` keeps what the topic has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SettingsChange {
    pub delay: Option<Duration>,
    pub batch_window: Option<Duration>,
    pub max_attempts: Option<u16>,
}

impl SettingsChange {
    pub fn is_empty(&self) -> bool {
        *self == SettingsChange::default()
    }

    /// The settings of a new topic: what is not given is the default.
    pub fn to_new(self) -> TopicSettings {
        self.apply(TopicSettings::default(), Tier::Delayed)
    }

    /// The settings after a change to `tier`: what is given wins; the rest
    /// is `current`, except that a topic that is not delayed has no delay
    /// or batch window (they apply to the delayed tier only).
    pub fn apply(self, current: TopicSettings, tier: Tier) -> TopicSettings {
        let delayed_only = |value: Duration| {
            if tier == Tier::Delayed {
                value
            } else {
                Duration::ZERO
            }
        };
        TopicSettings {
            delay: self.delay.unwrap_or(delayed_only(current.delay)),
            batch_window: self
                .batch_window
                .unwrap_or(delayed_only(current.batch_window)),
            max_attempts: self.max_attempts.unwrap_or(current.max_attempts),
        }
    }
}

/// Why a topic could not be created or found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0} not found")]
    NotFound(String),
    #[error("channel {1} of topic {0} not found")]
    ChannelNotFound(String, String),
    #[error("topic {topic} already exists with tier {existing}")]
    TierConflict {
        topic: String,
        existing: &'static str,
    },
    #[error("topic {topic} already exists with other settings ({existing:?})")]
    SettingsConflict {
        topic: String,
        existing: TopicSettings,
    },
    #[error("topic {topic}: {field} {reason}")]
    InvalidSettings {
        topic: String,
        field: &'static str,
        reason: String,
    },
    #[error("topic {topic} cannot become {tier}: {reason}")]
    TierChangeRefused {
        topic: String,
        tier: &'static str,
        reason: &'static str,
    },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("cannot record topic or channel metadata: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct Broker {
    pub config: Arc<BrokerConfig>,
    /// The config's tier rules, compiled once.
    tiers: TierMatcher,
    /// std Mutex: lookups and inserts only; no `.await` while held.
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Serialises creating and deleting topics and channels, which await the
    /// store: a topic's record must be durable before its first message is
    /// acknowledged, or a crash could leave log entries no topic owns. Rare
    /// operations, so one async lock for all of them costs nothing.
    metadata: tokio::sync::Mutex<()>,
    pub store: Arc<Store>,
    next_client_id: AtomicU64,
    pub start_time: i64,
    /// Cancelled at shutdown; every task selects on it or on a child of it.
    pub shutdown: CancellationToken,
    /// Every spawned task, so shutdown can wait for all of them.
    pub tracker: TaskTracker,
    /// Served at `GET /metrics`; read from the topics at scrape time.
    pub metrics: Metrics,
    /// The delayed tier's clock, scheduler wake-ups and pending counts.
    pub delayed: Delayed,
    /// Set when `tls_cert` and `tls_key` are: for IDENTIFY's `tls_v1` and HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Set when AUTH is required (auth servers or static tokens).
    pub auth: Option<crate::auth::Auth>,
    /// Told of every topic and channel created or deleted, for lookupd.
    pub topology: crate::lookup::TopologyChanges,
}

impl Broker {
    /// # Errors
    /// When a tier rule's pattern does not compile (a validated config has
    /// none), or the TLS certificate, key or CA file cannot be used.
    pub fn new(
        config: BrokerConfig,
        store: Arc<Store>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Broker>, ConfigError> {
        let tls = crate::tls::server_config(&config).map_err(|e| e.into_config_error())?;
        Broker::with_tls(config, store, shutdown, tls)
    }

    /// [`Broker::new`] with the TLS server config already built (from
    /// [`crate::tls::server_config`]), as the server does before it opens
    /// the store.
    ///
    /// # Errors
    /// When a tier rule's pattern does not compile (a validated config has none).
    pub fn with_tls(
        config: BrokerConfig,
        store: Arc<Store>,
        shutdown: CancellationToken,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Arc<Broker>, ConfigError> {
        let tiers = config.tier_matcher()?;
        let auth = crate::auth::Auth::from_config(&config)?;
        Ok(Arc::new_cyclic(|broker| Broker {
            metrics: Metrics::new(broker.clone(), &config),
            tiers,
            config: Arc::new(config),
            topics: Mutex::new(HashMap::new()),
            metadata: tokio::sync::Mutex::new(()),
            store,
            next_client_id: AtomicU64::new(1),
            start_time: crate::client::unix_secs(),
            shutdown,
            tracker: TaskTracker::new(),
            delayed: Delayed::new(Clock::new()),
            tls,
            auth,
            topology: Default::default(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Topic>>> {
        // Poisoning would need a panic inside a HashMap operation; the map stays valid.
        self.topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The sizes the protocol decoder enforces, for TCP and binary `/mpub` alike.
    pub fn protocol_limits(&self) -> triage_protocol::Limits {
        triage_protocol::Limits {
            max_msg_size: self.config.max_msg_size,
            max_body_size: self.config.max_body_size,
            max_line_len: self.config.max_line_len,
        }
    }

    pub fn next_client_id(&self) -> ClientId {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Returns the topic, creating it with the tier its name's rules give.
    pub async fn topic(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        if let Some(topic) = self.lock().get(name) {
            return Ok(topic.clone());
        }
        self.topic_with_tier(name, None, None).await
    }

    /// Creates the topic (or returns the existing one). An explicit tier or
    /// settings that differ from an existing topic's are an error rather
    /// than a silent change; without them, the config's rules decide.
    pub async fn topic_with_tier(
        &self,
        name: &str,
        tier: Option<Tier>,
        settings: Option<TopicSettings>,
    ) -> Result<Arc<Topic>, TopicError> {
        let _metadata = self.metadata.lock().await;
        if let Some(topic) = self.lock().get(name) {
            return match (tier, settings) {
                (Some(t), _) if t != topic.tier() => Err(TopicError::TierConflict {
                    topic: name.to_owned(),
                    existing: topic.tier().as_str(),
                }),
                (_, Some(s)) if s != topic.settings() => Err(TopicError::SettingsConflict {
                    topic: name.to_owned(),
                    existing: topic.settings(),
                }),
                _ => Ok(topic.clone()),
            };
        }
        let (rule_tier, rule_settings) = self.tiers.rule_for(name);
        let tier = tier.unwrap_or(rule_tier);
        let settings = settings.unwrap_or(if tier == rule_tier {
            rule_settings
        } else {
            TopicSettings::default()
        });
        self.check_settings(name, tier, settings)?;
        let ephemeral = triage_protocol::names::is_ephemeral(name);
        let incarnation = if ephemeral {
            0
        } else {
            u64::try_from(crate::client::unix_nanos()).unwrap_or(0)
        };
        if !ephemeral {
            self.store
                .put_topic(&TopicMeta {
                    name: name.to_owned(),
                    tier: tier.as_str().to_owned(),
                    paused: false,
                    incarnation,
                    settings,
                })
                .await?;
        }
        let with_log = self.keeps_a_log(name, tier);
        let next_seq = if with_log {
            self.store.next_seq(name)?
        } else {
            1
        };
        let spec = TopicSpec {
            tier,
            settings,
            incarnation,
        };
        let topic = self.new_topic(name, spec, next_seq, with_log);
        self.lock().insert(name.to_owned(), topic.clone());
        self.topology.notify();
        tracing::info!(topic = name, tier = tier.as_str(), "topic created");
        Ok(topic)
    }

    /// Whether `settings` fit a topic `name` of `tier` (see [`TopicSettings::check`]).
    fn check_settings(
        &self,
        name: &str,
        tier: Tier,
        settings: TopicSettings,
    ) -> Result<(), TopicError> {
        settings
            .check(tier, self.config.max_req_timeout)
            .map_err(|(field, reason)| TopicError::InvalidSettings {
                topic: name.to_owned(),
                field,
                reason,
            })
    }

    /// Persistent and delayed topics keep a log (a delayed topic's messages
    /// go into it when due); so do memory topics that spill their overflow
    /// to it (never ephemeral ones: they drop overflow, as nsqd).
    fn keeps_a_log(&self, name: &str, tier: Tier) -> bool {
        match tier {
            Tier::Persistent | Tier::Delayed => true,
            Tier::Memory => {
                self.config.memory_overflow == OverflowPolicy::Spill
                    && !triage_protocol::names::is_ephemeral(name)
            }
        }
    }

    /// `with_log`: see [`Broker::keeps_a_log`]; at recovery, also a memory
    /// topic whose log still holds what it took while it was persistent.
    fn new_topic(&self, name: &str, spec: TopicSpec, next_seq: u64, with_log: bool) -> Arc<Topic> {
        let store = with_log.then(|| self.store.clone());
        Topic::new(
            name,
            spec,
            self.config.mem_queue_size,
            store,
            next_seq,
            self.shutdown.child_token(),
            self.tracker.clone(),
        )
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

    /// Returns the channel, creating it (and its topic) if needed; a new
    /// channel's record is durable before this returns.
    pub async fn channel(
        &self,
        topic_name: &str,
        channel: &str,
    ) -> Result<Arc<Channel>, TopicError> {
        let topic = self.topic(topic_name).await?;
        if let Some(existing) = topic.existing_channel(channel) {
            return Ok(existing);
        }
        let _metadata = self.metadata.lock().await;
        let (created, starts_at) = topic.channel(channel, self.config.mem_queue_size)?;
        if let Some(starts_at) = starts_at {
            if !topic.ephemeral && !created.ephemeral {
                let meta = ChannelMeta {
                    name: channel.to_owned(),
                    paused: false,
                };
                self.store
                    .create_channel(topic_name, &meta, starts_at)
                    .await?;
            }
            self.topology.notify();
        }
        Ok(created)
    }

    /// Publishes to a topic, creating it if needed. `defer` delays delivery;
    /// so does a delayed topic's default delay. A deferred publish to a
    /// persistent or delayed topic goes to the delayed tier in the store,
    /// durably; to a memory topic it waits in memory (and a crash loses it,
    /// like any memory-tier message).
    /// Every publish front end (PUB, MPUB, DPUB, `/pub`, `/mpub`) comes
    /// through here, so this is where `triage_publish_seconds` is observed.
    pub async fn publish(
        &self,
        topic: &str,
        bodies: Vec<Bytes>,
        defer: Option<Duration>,
    ) -> Result<(), TopicError> {
        let started = Instant::now();
        let topic = self.topic(topic).await?;
        // Read once: the whole publish follows one tier's rules even if
        // `/topic/tier` changes it meanwhile.
        let (tier, settings) = (topic.tier(), topic.settings());
        let default_delay = (tier == Tier::Delayed).then_some(settings.delay);
        let delay = defer.or(default_delay).filter(|d| !d.is_zero());
        match delay {
            Some(delay) if tier != Tier::Memory && topic.is_durable() => {
                self.publish_delayed(&topic, bodies, delay, settings.batch_window)
                    .await?;
            }
            _ => {
                topic
                    .publish_as(tier, bodies, delay.map(|d| started + d))
                    .await?
            }
        }
        self.metrics.observe_publish(tier, started.elapsed());
        Ok(())
    }

    /// Writes a deferred publish to the delayed tier; the scheduler moves it
    /// into the topic's log when due.
    async fn publish_delayed(
        &self,
        topic: &Topic,
        bodies: Vec<Bytes>,
        delay: Duration,
        batch_window: Duration,
    ) -> Result<(), TopicError> {
        let due_ms = self.delayed.due_ms(delay, batch_window);
        let timestamp_ns = crate::client::unix_nanos();
        let entries: Vec<DelayedMessage> = bodies
            .into_iter()
            .map(|body| DelayedMessage {
                topic: topic.name.clone(),
                channel: None,
                incarnation: topic.incarnation,
                message: StoredMessage {
                    timestamp_ns,
                    attempts: 0,
                    body,
                },
            })
            .collect();
        let keys = self
            .store
            .put_delayed(due_ms, &entries)
            .await
            .map_err(|source| PublishError::Store {
                topic: topic.name.clone(),
                source,
            })?;
        self.delayed.scheduled(&topic.name, None, &keys);
        topic.count_published(
            &entries
                .into_iter()
                .map(|e| e.message.body)
                .collect::<Vec<_>>(),
        );
        Ok(())
    }

    /// `REQ` with a delay on a persistent or delayed topic: writes the
    /// message to the delayed tier (and its channel's FIN mark) so the delay
    /// survives a restart. If the write fails, the delay is kept in memory.
    pub async fn requeue_delayed(&self, channel: &Channel, msg: Message, delay: Duration) {
        let (Ok(topic), Some(seq)) = (self.existing_topic(&channel.topic_name), msg.id.to_u64())
        else {
            channel.defer_in_memory(msg, Instant::now() + delay);
            return;
        };
        let due_ms = self.delayed.due_ms(delay, Duration::ZERO);
        let entry = DelayedMessage {
            topic: topic.name.clone(),
            channel: Some(channel.name.clone()),
            incarnation: topic.incarnation,
            message: StoredMessage {
                timestamp_ns: msg.timestamp_ns,
                attempts: msg.attempts,
                body: msg.body.clone(),
            },
        };
        match self.store.requeue_delayed(due_ms, &entry, seq).await {
            Ok(key) => {
                channel.requeue_written(&msg.id);
                self.delayed
                    .scheduled(&topic.name, Some(&channel.name), &[key]);
            }
            Err(e) => {
                tracing::warn!(topic = %topic.name, channel = %channel.name, error = %e, "cannot write a delayed requeue; its delay is kept in memory only");
                channel.defer_in_memory(msg, Instant::now() + delay);
            }
        }
    }

    pub async fn pause_topic(&self, name: &str, paused: bool) -> Result<(), TopicError> {
        let topic = self.existing_topic(name)?;
        // Held until the pause applies: a tier change in between would
        // write the record with the old paused state.
        let _metadata = self.metadata.lock().await;
        if !topic.ephemeral {
            let meta = TopicMeta {
                name: name.to_owned(),
                tier: topic.tier().as_str().to_owned(),
                paused,
                incarnation: topic.incarnation,
                settings: topic.settings(),
            };
            self.store.put_topic(&meta).await?;
        }
        topic.pause(paused);
        Ok(())
    }

    /// Changes an existing topic's tier, and the settings `change` gives
    /// (see [`SettingsChange::apply`]), in place (see [`Topic::change_tier`]).
    /// The new tier is durable in the topic's record before this returns,
    /// so a restart (clean or not) comes back with it. The same tier with
    /// the same settings changes nothing.
    ///
    /// # Errors
    /// [`TopicError::NotFound`]; [`TopicError::TierChangeRefused`] for a
    /// topic that cannot change tier; [`TopicError::InvalidSettings`];
    /// [`TopicError::Store`] when the record cannot be written (nothing changes).
    pub async fn change_tier(
        &self,
        name: &str,
        tier: Tier,
        change: SettingsChange,
    ) -> Result<(), TopicError> {
        let _metadata = self.metadata.lock().await;
        let topic = self.existing_topic(name)?;
        topic
            .can_become(tier)
            .map_err(|reason| TopicError::TierChangeRefused {
                topic: name.to_owned(),
                tier: tier.as_str(),
                reason,
            })?;
        let current = topic.settings();
        let settings = change.apply(current, tier);
        if tier == topic.tier() && settings == current {
            return Ok(());
        }
        self.check_settings(name, tier, settings)?;
        if !topic.ephemeral {
            self.store
                .put_topic(&TopicMeta {
                    name: name.to_owned(),
                    tier: tier.as_str().to_owned(),
                    paused: topic.is_paused(),
                    incarnation: topic.incarnation,
                    settings,
                })
                .await?;
        }
        let from = topic.tier();
        topic.change_tier(tier, settings);
        // lookupd is told the new tier on its next sync.
        self.topology.notify();
        tracing::info!(
            topic = name,
            from = from.as_str(),
            to = tier.as_str(),
            "topic tier changed"
        );
        Ok(())
    }

    pub async fn pause_channel(
        &self,
        topic_name: &str,
        name: &str,
        paused: bool,
    ) -> Result<(), TopicError> {
        let channel = self.existing_channel(topic_name, name)?;
        if !channel.ephemeral && !triage_protocol::names::is_ephemeral(topic_name) {
            let _metadata = self.metadata.lock().await;
            self.store
                .put_channel(
                    topic_name,
                    &ChannelMeta {
                        name: name.to_owned(),
                        paused,
                    },
                )
                .await?;
        }
        channel.pause(paused);
        Ok(())
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), TopicError> {
        let _metadata = self.metadata.lock().await;
        let topic = self
            .lock()
            .remove(name)
            .ok_or_else(|| TopicError::NotFound(name.to_owned()))?;
        topic.delete();
        self.delayed.forget(name, None);
        self.topology.notify();
        if !topic.ephemeral {
            self.store.delete_topic(name).await?;
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub async fn delete_channel(&self, topic_name: &str, channel: &str) -> Result<(), TopicError> {
        let _metadata = self.metadata.lock().await;
        let topic = self.existing_topic(topic_name)?;
        let now_empty = topic.delete_channel(channel).ok_or_else(|| {
            TopicError::ChannelNotFound(topic_name.to_owned(), channel.to_owned())
        })?;
        self.delayed.forget(topic_name, Some(channel));
        self.topology.notify();
        if !topic.ephemeral && !triage_protocol::names::is_ephemeral(channel) {
            self.store.delete_channel(topic_name, channel).await?;
        }
        if now_empty && topic.ephemeral {
            self.remove_topic_if_same(&topic);
        }
        Ok(())
    }

    /// A consumer left an ephemeral channel: the channel goes with its last
    /// consumer, and an ephemeral topic with its last channel. Ephemeral
    /// names are never in the store, so this needs no metadata write.
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
        self.topology.notify();
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

    /// Brings back every topic and channel the store knows, and what
    /// memory-tier channels held at the last clean shutdown. A persistent
    /// channel resumes at its low watermark, skipping its FIN marks; its
    /// backlog is read from disk as consumers make room (at least once: some
    /// messages may have been finished after the last checkpoint). Blocking:
    /// reads metadata and FIN marks, never a backlog.
    /// Returns the names of the saved memory-tier logs it restored, which the
    /// caller deletes (see [`Broker::forget_saved`]) before serving.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn recover(&self) -> Result<Vec<String>, StoreError> {
        let mut restored = Vec::new();
        self.delayed.restore_counts(self.store.delayed_counts()?);
        for state in self.store.load_topics()? {
            let name = state.meta.name.clone();
            let Ok(tier) = state.meta.tier.parse::<Tier>() else {
                tracing::warn!(topic = %name, tier = %state.meta.tier, "unknown tier in the store; topic skipped");
                continue;
            };
            let spec = TopicSpec {
                tier,
                settings: state.meta.settings,
                incarnation: state.meta.incarnation,
            };
            // A memory topic whose log still holds messages (it was
            // persistent or delayed before a tier change) keeps its log even
            // under `memory_overflow = reject`, until those are delivered.
            let with_log = self.keeps_a_log(&name, tier)
                || (tier == Tier::Memory && !self.store.read_log(&name, 0, 1)?.is_empty());
            let topic = self.new_topic(&name, spec, state.next_seq.max(1), with_log);
            topic.restore_paused(state.meta.paused);
            if topic.is_durable() && state.channels.is_empty() {
                if let Some(&(first, _)) = self.store.read_log(&name, 0, 1)?.first() {
                    topic.restore_held(first);
                }
            }
            for channel in &state.channels {
                let (channel_name, watermark) = (&channel.meta.name, channel.low_watermark);
                let finished: HashSet<u64> = if topic.is_durable() {
                    self.store
                        .finished(&name, channel_name, watermark, usize::MAX)?
                        .into_iter()
                        .collect()
                } else {
                    HashSet::new()
                };
                topic.restore_channel(
                    channel_name,
                    self.config.mem_queue_size,
                    channel.meta.paused,
                    watermark,
                    finished,
                );
            }
            if tier == Tier::Memory {
                let holders = state.channels.iter().map(|c| Some(c.meta.name.as_str()));
                for channel in holders.chain([None]) {
                    let name = saved_name(&name, channel);
                    let saved: Vec<_> = self
                        .store
                        .read_log(&name, 0, usize::MAX)?
                        .into_iter()
                        .map(|(_, m)| m)
                        .collect();
                    if !saved.is_empty() {
                        topic.restore_saved(channel, saved);
                        restored.push(name);
                    }
                }
            }
            let backlog: usize = topic
                .snapshot()
                .channels
                .iter()
                .map(|c| c.snapshot().depth as usize)
                .sum();
            tracing::info!(topic = %name, tier = tier.as_str(), channels = state.channels.len(), backlog, "topic recovered");
            self.lock().insert(name, topic);
        }
        Ok(restored)
    }

    /// Deletes saved memory-tier logs once they are restored, so the next
    /// start does not restore them again.
    ///
    /// # Errors
    /// When the store cannot write.
    pub async fn forget_saved(&self, names: &[String]) -> Result<(), StoreError> {
        for name in names {
            self.store.delete_topic(name).await?;
        }
        Ok(())
    }

    /// Clean shutdown: writes what every memory-tier channel (and channel-less
    /// memory topic) holds to the store, for [`Broker::recover`] to restore;
    /// also for topics that were memory-tier earlier since start (see
    /// [`Topic::held_memory_tier`]), whose channels may still hold such messages.
    pub async fn save_memory(&self) {
        let memory_topics = self
            .topics()
            .into_iter()
            .filter(|t| t.held_memory_tier() && !t.ephemeral);
        for topic in memory_topics {
            let held = topic.held_messages();
            if topic.is_durable() {
                // A spilling topic has a log: write what memory holds into it,
                // at each message's own seq (the same message in several
                // channels, or one already spilled, is written once or again,
                // never twice), and its channels read it back like a backlog.
                let mut by_seq = std::collections::BTreeMap::new();
                for msg in held.into_iter().flat_map(|(_, msgs)| msgs) {
                    if let Some(seq) = msg.id.to_u64() {
                        by_seq.insert(seq, msg);
                    }
                }
                let count = by_seq.len();
                // One write per run of consecutive seqs.
                let mut runs: Vec<(u64, Vec<StoredMessage>)> = Vec::new();
                for (seq, msg) in by_seq {
                    let stored = StoredMessage {
                        timestamp_ns: msg.timestamp_ns,
                        attempts: msg.attempts,
                        body: msg.body,
                    };
                    match runs.last_mut() {
                        Some((first, run)) if *first + run.len() as u64 == seq => run.push(stored),
                        _ => runs.push((seq, vec![stored])),
                    }
                }
                for (first, run) in runs {
                    if let Err(e) = self.store.append(&topic.name, first, &run).await {
                        tracing::error!(topic = %topic.name, error = %e, "cannot save memory-tier messages; they are lost");
                        break;
                    }
                }
                tracing::info!(topic = %topic.name, count, "memory-tier messages saved to the topic's log");
                continue;
            }
            for (channel, msgs) in held {
                if msgs.is_empty() {
                    continue;
                }
                let count = msgs.len();
                let stored: Vec<StoredMessage> = msgs
                    .into_iter()
                    .map(|m| StoredMessage {
                        timestamp_ns: m.timestamp_ns,
                        attempts: m.attempts,
                        body: m.body,
                    })
                    .collect();
                let name = saved_name(&topic.name, channel.as_deref());
                match self.store.append(&name, 0, &stored).await {
                    Ok(()) => {
                        tracing::info!(topic = %topic.name, ?channel, count, "memory-tier messages saved")
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.name, ?channel, error = %e, "cannot save memory-tier messages; they are lost")
                    }
                }
            }
        }
    }

    /// Checkpoints every persistent topic now, and moves messages that
    /// used up their attempts to their dead-letter topics.
    pub async fn checkpoint(&self) {
        for topic in self.topics() {
            // Whatever `max_attempts` is now: it may have been lowered to 0
            // (by a tier change) after messages were set aside as dead.
            self.move_dead_letters(&topic).await;
            if let Err(e) = topic.checkpoint().await {
                tracing::warn!(topic = %topic.name, error = %e, "checkpoint failed; will retry");
            }
        }
    }

    /// Publishes what `topic`'s channels set aside as dead to the persistent
    /// topic `<topic>.dead`, each as a JSON envelope with its attempts and
    /// the reason; only then is the original finished.
    async fn move_dead_letters(&self, topic: &Topic) {
        let dead_topic = dead_letter_topic(&topic.name);
        for channel in topic.snapshot().channels {
            let dead = channel.take_dead();
            if dead.is_empty() {
                continue;
            }
            let bodies = dead
                .iter()
                .map(|(msg, reason)| dead_letter_body(&topic.name, &channel.name, msg, reason))
                .collect();
            let published = match &dead_topic {
                Some(name) => self.publish_dead(name, bodies).await,
                None => Err(format!(
                    "{}.dead is not a valid topic name (too long)",
                    topic.name
                )),
            };
            match published {
                Ok(()) => {
                    let ids: Vec<_> = dead.iter().map(|(m, _)| m.id).collect();
                    channel.dead_written(&ids);
                    tracing::info!(topic = %topic.name, channel = %channel.name, count = ids.len(), "messages moved to the dead-letter topic");
                }
                Err(e) => {
                    tracing::warn!(topic = %topic.name, channel = %channel.name, error = %e, "cannot move messages to the dead-letter topic; will retry");
                    channel.restore_dead(dead);
                }
            }
        }
    }

    async fn publish_dead(&self, name: &str, bodies: Vec<Bytes>) -> Result<(), String> {
        let topic = match self.existing_topic(name) {
            Ok(topic) => topic,
            Err(_) => self
                .topic_with_tier(name, Some(Tier::Persistent), None)
                .await
                .map_err(|e| e.to_string())?,
        };
        topic.publish(bodies, None).await.map_err(|e| e.to_string())
    }

    /// Checkpoints every [`CHECKPOINT_INTERVAL`] until shutdown.
    pub async fn run_checkpoints(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(CHECKPOINT_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = ticker.tick() => self.checkpoint().await,
            }
        }
    }
}
