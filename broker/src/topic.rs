//! A topic: fans every message out to each of its channels. Until its first
//! channel appears (or while paused) it keeps messages itself, as nsqd does.
//!
//! A persistent topic writes each message once to its log in the store and
//! acknowledges it only when the write is durable; its channels then hold it
//! in memory for delivery and track which log seqs they still owe, and
//! [`Topic::checkpoint`] turns that into FIN marks, watermarks and log trims.
//!
//! A topic's tier and settings can change in place ([`Topic::change_tier`]).
//! Only topics with a log can change between tiers: persistent and delayed
//! topics, and memory topics that spill to it. For them the tiers differ only
//! in how a new publish is taken (memory path or log, default delay) and
//! where a delayed requeue waits, so the change is one field that each
//! publish reads once; what is already in memory or in the log stays where
//! it is, and the sequencer keeps the log in order across the change.
//!
//! Lock order is topic, then channel; a channel never takes its topic's lock.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triage_config::{Tier, TopicSettings};
use triage_protocol::{Message, MessageId};

use crate::backlog::Backlog;
use crate::channel::{Channel, Durable};
use crate::client::unix_nanos;
use crate::live_tier::LiveTier;
use crate::store::{DelayedKey, DelayedRelease, Store, StoreError, StoredMessage};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("topic {topic} is full ({bound} messages queued in memory on {queue})")]
    Full {
        topic: String,
        queue: String,
        bound: u64,
    },
    #[error("topic {0} is exiting")]
    Exiting(String),
    /// The durable write failed (full or failing disk): nothing was acknowledged.
    #[error("topic {topic}: {source}")]
    Store { topic: String, source: StoreError },
}

/// A message with its due time, if deferred.
type Held = (Message, Option<Instant>);

/// A publish waiting in the sequencer for the ones before it.
#[derive(Debug)]
struct Handover {
    count: u64,
    msgs: Vec<Held>,
    /// Delayed requeues go back to their channel only.
    only: Option<String>,
}

/// What a topic is, as created or recovered.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec {
    pub tier: Tier,
    pub settings: TopicSettings,
    /// Tells this topic from an earlier one of the same name; see `TopicMeta`.
    pub incarnation: u64,
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<String, Arc<Channel>>,
    /// Messages waiting for a first channel or for unpause, with their due time if deferred.
    pending: VecDeque<(Message, Option<Instant>)>,
    paused: bool,
    deleted: bool,
    /// Persistent topics: publishes whose writes finished before an earlier
    /// one's, by first seq, waiting to be handed over in log order. A failed
    /// write leaves an empty entry so the order can move past it.
    sequencer: BTreeMap<u64, Handover>,
    /// Persistent topics without a channel: the first seq held for the first
    /// channel to come. The messages themselves stay on disk.
    held_from: Option<u64>,
}

/// What the last checkpoint wrote, so the next writes only what moved.
#[derive(Debug, Default)]
struct Checkpointed {
    watermarks: HashMap<String, u64>,
    trimmed_below: u64,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    /// Shared with the channels (delayed requeues) and their sessions
    /// (BACKPRESSURE); changed only by [`Topic::change_tier`].
    tier: Arc<LiveTier>,
    /// std Mutex: copied out or replaced whole, never held across `.await`.
    settings: Mutex<TopicSettings>,
    /// Set while the topic is, or since start was, memory-tier: its channels
    /// may hold messages that are only in memory, which a clean shutdown saves.
    held_memory_tier: AtomicBool,
    pub incarnation: u64,
    pub ephemeral: bool,
    bound: u64,
    /// std Mutex: short sections with no `.await` (see the module doc for lock order).
    state: Mutex<State>,
    next_seq: AtomicU64,
    /// Persistent topics: every seq below it has been through the sequencer.
    handed_over: AtomicU64,
    /// Persistent topics: every seq below it may reach the channels; it stays
    /// behind `handed_over` while the topic is paused. Shared with each
    /// channel's [`Backlog`], which reads it without the topic's lock.
    released: Arc<AtomicU64>,
    pub message_count: AtomicU64,
    pub message_bytes: AtomicU64,
    /// Parent of every channel's token.
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
    /// Persistent topics only: the log every message is written to before it is acknowledged.
    store: Option<Arc<Store>>,
    /// Touched only by the one checkpoint task (std Mutex, never held across `.await`).
    checkpointed: Mutex<Checkpointed>,
}

#[derive(Debug, Clone)]
pub struct TopicSnapshot {
    pub depth: u64,
    pub paused: bool,
    pub channels: Vec<Arc<Channel>>,
}

impl Topic {
    /// `store` makes the topic persistent; `next_seq` is where its ids resume.
    pub fn new(
        name: &str,
        spec: TopicSpec,
        bound: u64,
        store: Option<Arc<Store>>,
        next_seq: u64,
        cancel: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> Arc<Topic> {
        Arc::new(Topic {
            name: name.to_owned(),
            tier: Arc::new(LiveTier::new(spec.tier)),
            settings: Mutex::new(spec.settings),
            held_memory_tier: AtomicBool::new(spec.tier == Tier::Memory),
            incarnation: spec.incarnation,
            ephemeral: triage_protocol::names::is_ephemeral(name),
            bound,
            state: Mutex::new(State::default()),
            next_seq: AtomicU64::new(next_seq),
            handed_over: AtomicU64::new(next_seq),
            released: Arc::new(AtomicU64::new(next_seq)),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            cancel,
            tracker,
            store,
            checkpointed: Mutex::new(Checkpointed::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning would need a panic inside a few collection operations; the state stays valid.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// The tier now; see [`Topic::change_tier`].
    pub fn tier(&self) -> Tier {
        self.tier.get()
    }

    /// The cell behind [`Topic::tier`], for those that read it on every pass.
    pub fn live_tier(&self) -> Arc<LiveTier> {
        self.tier.clone()
    }

    pub fn settings(&self) -> TopicSettings {
        *self
            .settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether its channels may hold messages that are only in memory.
    pub fn held_memory_tier(&self) -> bool {
        self.held_memory_tier.load(Ordering::Acquire)
    }

    /// Whether [`Topic::change_tier`] may move this topic to `tier`: only
    /// a topic with a log can change (see the module doc), and ephemeral and
    /// system topics never leave memory.
    pub fn can_become(&self, tier: Tier) -> Result<(), &'static str> {
        if tier == self.tier() {
            return Ok(());
        }
        if self.ephemeral {
            return Err("an #ephemeral topic is always memory-tier");
        }
        if self
            .name
            .starts_with(triage_config::tier::SYSTEM_TOPIC_PREFIX)
        {
            // The broker publishes its events there as memory-tier.
            return Err("a _triage. system topic is always memory-tier");
        }
        if self.store.is_none() {
            return Err(
                "a memory topic without a log (memory_overflow = reject) cannot change tier",
            );
        }
        Ok(())
    }

    /// Changes the tier and settings in place, for publishes from now on.
    /// Taken under the topic's lock, so no publish is half under the old
    /// rules and half under the new. What the topic and its channels hold
    /// stays where it is: memory-only messages in memory, logged ones in the
    /// log, pending delayed entries in the delayed tier until due. The caller
    /// has checked [`Topic::can_become`] and recorded the change durably.
    pub fn change_tier(&self, tier: Tier, settings: TopicSettings) {
        let state = self.lock();
        *self
            .settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = settings;
        if tier == Tier::Memory {
            self.held_memory_tier.store(true, Ordering::Release);
        }
        self.tier.set(tier);
        for channel in state.channels.values() {
            channel.set_max_attempts(settings.max_attempts);
        }
    }

    /// Publishes `bodies` atomically: all are accepted or none. `due` defers
    /// them (DPUB). On a persistent topic this returns only once the messages
    /// are durable. A full memory queue refuses the lot, except on ephemeral
    /// topics and channels, which drop what overflows as nsqd does.
    pub async fn publish(
        &self,
        bodies: Vec<Bytes>,
        due: Option<Instant>,
    ) -> Result<(), PublishError> {
        self.publish_as(self.tier(), bodies, due).await
    }

    /// [`Topic::publish`] under the rules of `tier`, as the caller read it
    /// once for the whole publish.
    pub async fn publish_as(
        &self,
        tier: Tier,
        bodies: Vec<Bytes>,
        due: Option<Instant>,
    ) -> Result<(), PublishError> {
        let Some(store) = &self.store else {
            return self.publish_in_memory(bodies, due);
        };
        let count = bodies.len() as u64;
        if tier == Tier::Memory {
            // A memory topic that spills: in memory while every channel has
            // room and nothing is waiting on disk or being written; otherwise
            // the overflow takes the persistent path below, in log order.
            let mut state = self.lock();
            if state.deleted {
                return Err(PublishError::Exiting(self.name.clone()));
            }
            let next = self.next_seq.load(Ordering::Relaxed);
            // Nothing being written or waiting on disk ahead of this publish.
            let in_order =
                self.handed_over.load(Ordering::Acquire) == next && state.held_from.is_none();
            let to_channels = in_order
                && !state.paused
                && !state.channels.is_empty()
                && state
                    .channels
                    .values()
                    .all(|c| c.ephemeral || c.has_room(count));
            // A channel-less topic holds up to its bound in memory, as nsqd.
            let to_pending = in_order
                && !state.paused
                && state.channels.is_empty()
                && state.pending.len() as u64 + count <= self.bound;
            if to_channels || to_pending {
                self.next_seq.store(next + count, Ordering::Relaxed);
                self.handed_over.store(next + count, Ordering::Release);
                self.released.store(next + count, Ordering::Release);
                let msgs = self.make_messages(next, bodies);
                if to_pending {
                    state.pending.extend(msgs.into_iter().map(|m| (m, due)));
                } else {
                    for channel in state.channels.values() {
                        channel.put_in_memory(msgs.iter().map(|m| (m.clone(), due)));
                    }
                }
                return Ok(());
            }
        }
        let first = {
            let state = self.lock();
            if state.deleted {
                return Err(PublishError::Exiting(self.name.clone()));
            }
            self.next_seq.fetch_add(count, Ordering::Relaxed)
        };
        let msgs = self.make_messages(first, bodies);
        let stored: Vec<StoredMessage> = msgs
            .iter()
            .map(|m| StoredMessage {
                timestamp_ns: m.timestamp_ns,
                attempts: 0,
                body: m.body.clone(),
            })
            .collect();
        let mut in_order = InOrder {
            topic: self,
            first,
            count,
            msgs: Some(msgs.into_iter().map(|m| (m, due)).collect()),
            only: None,
        };
        let written = store.append(&self.name, first, &stored).await;
        // Durable (or failed): hand over in log order, after any earlier publish.
        in_order.finish(written.is_ok());
        written.map_err(|source| PublishError::Store {
            topic: self.name.clone(),
            source,
        })
    }

    /// Moves due delayed entries into the log and on to the channels, in
    /// log order with publishes: every channel's for a deferred publish,
    /// only `channel`'s for a delayed requeue (the others get FIN marks at
    /// those seqs, in the same write, and skip them).
    ///
    /// # Errors
    /// When the topic was deleted or the write failed; the entries stay pending.
    pub async fn release_delayed(
        &self,
        channel: Option<&str>,
        entries: Vec<(DelayedKey, StoredMessage)>,
    ) -> Result<(), PublishError> {
        let Some(store) = &self.store else {
            return Err(PublishError::Exiting(self.name.clone()));
        };
        let count = entries.len() as u64;
        let (first, skip_channels) = {
            let state = self.lock();
            if state.deleted {
                return Err(PublishError::Exiting(self.name.clone()));
            }
            let skip: Vec<String> = match channel {
                Some(only) => state
                    .channels
                    .values()
                    .filter(|c| c.name != only && !c.ephemeral)
                    .map(|c| c.name.clone())
                    .collect(),
                None => Vec::new(),
            };
            (self.next_seq.fetch_add(count, Ordering::Relaxed), skip)
        };
        let (keys, stored): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        let msgs: Vec<Held> = stored
            .iter()
            .zip(first..)
            .map(|(m, seq)| {
                let msg = Message {
                    timestamp_ns: m.timestamp_ns,
                    attempts: m.attempts,
                    id: MessageId::from_u64(seq),
                    body: m.body.clone(),
                };
                (msg, None)
            })
            .collect();
        let mut in_order = InOrder {
            topic: self,
            first,
            count,
            msgs: Some(msgs),
            only: channel.map(str::to_owned),
        };
        let written = store
            .release_delayed(DelayedRelease {
                topic: &self.name,
                channel,
                first_seq: first,
                messages: &stored,
                keys: &keys,
                skip_channels: &skip_channels,
            })
            .await;
        in_order.finish(written.is_ok());
        written.map_err(|source| PublishError::Store {
            topic: self.name.clone(),
            source,
        })
    }

    /// Records that the publish of `first..first + count` is done and hands
    /// over, in log order, every publish that is no longer waiting for an
    /// earlier one. In-order hand-over is what lets a channel's [`Backlog`]
    /// keep a single cursor into the log.
    fn sequence(&self, first: u64, handover: Handover) {
        let mut state = self.lock();
        state.sequencer.insert(first, handover);
        loop {
            let next = self.handed_over.load(Ordering::Acquire);
            let Some(entry) = state.sequencer.first_entry() else {
                break;
            };
            if *entry.key() != next {
                break;
            }
            let Handover { count, msgs, only } = entry.remove();
            self.handed_over.store(next + count, Ordering::Release);
            if state.deleted {
                continue;
            }
            let seqs = next..next + count;
            if state.channels.is_empty() || state.paused {
                // Held on disk for the first channel, or until unpause. A
                // deferred message of a spilling memory topic has its due
                // time only in memory, so those stay in memory.
                if state.channels.is_empty() {
                    state.held_from.get_or_insert(next);
                }
                for channel in state.channels.values() {
                    if only.as_deref().is_some_and(|only| only != channel.name) {
                        channel.skip(seqs.clone(), false);
                    }
                }
                state
                    .pending
                    .extend(msgs.into_iter().filter(|(_, due)| due.is_some()));
                continue;
            }
            // Released before the channels see them: see `Backlog::apply_refill`.
            self.released.store(next + count, Ordering::Release);
            for channel in state.channels.values() {
                match &only {
                    Some(only) if *only != channel.name => channel.skip(seqs.clone(), true),
                    _ => channel.put_all(msgs.iter().cloned()),
                }
            }
        }
        if !state.paused && state.channels.is_empty() {
            self.released
                .store(self.handed_over.load(Ordering::Acquire), Ordering::Release);
        }
    }

    fn publish_in_memory(
        &self,
        bodies: Vec<Bytes>,
        due: Option<Instant>,
    ) -> Result<(), PublishError> {
        let count = bodies.len() as u64;
        let mut state = self.lock();
        if state.deleted {
            return Err(PublishError::Exiting(self.name.clone()));
        }
        if state.paused || state.channels.is_empty() {
            if !self.ephemeral && state.pending.len() as u64 + count > self.bound {
                return Err(PublishError::Full {
                    topic: self.name.clone(),
                    queue: "the topic (no channel yet, or paused)".into(),
                    bound: self.bound,
                });
            }
        } else if let Some(full) = state
            .channels
            .values()
            .find(|c| !c.ephemeral && c.free_capacity() < count)
        {
            return Err(PublishError::Full {
                topic: self.name.clone(),
                queue: format!("channel {}", full.name),
                bound: full.bound(),
            });
        }
        let first = self.next_seq.fetch_add(count, Ordering::Relaxed);
        let msgs = self.make_messages(first, bodies);
        self.hand_over(&mut state, msgs.into_iter().map(|m| (m, due)));
        Ok(())
    }

    /// Counts accepted messages in `message_count` and `message_bytes`.
    pub fn count_published(&self, bodies: &[Bytes]) {
        let bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();
        self.message_count
            .fetch_add(bodies.len() as u64, Ordering::Relaxed);
        self.message_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn make_messages(&self, first: u64, bodies: Vec<Bytes>) -> Vec<Message> {
        let timestamp_ns = unix_nanos();
        self.count_published(&bodies);
        bodies
            .into_iter()
            .zip(first..)
            .map(|(body, seq)| Message {
                timestamp_ns,
                attempts: 0,
                id: MessageId::from_u64(seq),
                body,
            })
            .collect()
    }

    /// Gives accepted messages to every channel, or keeps them while there is
    /// none or the topic is paused. Capacity was checked by the caller; what
    /// still overflows here is dropped only where nsqd drops it (ephemeral).
    fn hand_over(&self, state: &mut State, msgs: impl Iterator<Item = (Message, Option<Instant>)>) {
        if state.paused || state.channels.is_empty() {
            for item in msgs {
                if !self.ephemeral || (state.pending.len() as u64) < self.bound {
                    state.pending.push_back(item);
                }
            }
        } else {
            let msgs: Vec<_> = msgs.collect();
            for channel in state.channels.values() {
                channel.put_all(msgs.iter().cloned());
            }
        }
    }

    /// Returns the channel, creating it (and starting its timer) if needed.
    /// The first channel of a topic takes every message the topic was holding.
    /// For a new channel, also returns the log seq it starts from (its low
    /// watermark), for the caller to persist.
    pub fn channel(
        &self,
        name: &str,
        bound: u64,
    ) -> Result<(Arc<Channel>, Option<u64>), PublishError> {
        let mut state = self.lock();
        if state.deleted {
            return Err(PublishError::Exiting(self.name.clone()));
        }
        if let Some(channel) = state.channels.get(name) {
            return Ok((channel.clone(), None));
        }
        let first_channel = state.channels.is_empty();
        let ephemeral = triage_protocol::names::is_ephemeral(name);
        let (starts_at, durable, pending, load_held) = match &self.store {
            Some(store) => {
                // A log-backed topic gives its first channel what it held, in
                // memory (pending) and on disk (from `held_from`), and what is
                // still being written; a later channel starts with the next
                // publish, or at the pause point of a paused topic.
                let released = self.released.load(Ordering::Acquire);
                let default_start = if first_channel || state.paused {
                    released
                } else {
                    self.next_seq.load(Ordering::Relaxed)
                };
                // An ephemeral channel of a paused topic leaves the held
                // messages for unpause (it cannot read the log later).
                let held = if first_channel && !(ephemeral && state.paused) {
                    state.held_from.take()
                } else {
                    None
                };
                let oldest_pending = if first_channel {
                    state
                        .pending
                        .iter()
                        .filter_map(|(m, _)| m.id.to_u64())
                        .min()
                } else {
                    None
                };
                let starts_at = [held, oldest_pending]
                    .into_iter()
                    .flatten()
                    .fold(default_start, u64::min);
                let backlog = match held {
                    Some(_) => {
                        Backlog::on_disk_from(starts_at, HashSet::new(), self.released.clone())
                    }
                    None => Backlog::new(starts_at, self.released.clone()),
                };
                let durable = (!ephemeral).then(|| Durable {
                    backlog,
                    store: store.clone(),
                });
                let pending = if first_channel && !state.paused {
                    state.pending.drain(..).collect()
                } else {
                    Vec::new()
                };
                // An ephemeral channel has no view of the log: what the topic
                // held on disk is read into its memory instead (as nsqd hands
                // a topic's backlog to its first channel, `nsq_tail`'s too).
                let load_held = if ephemeral {
                    held.map(|from| (store.clone(), from, released))
                } else {
                    None
                };
                (starts_at, durable, pending, load_held)
            }
            None => {
                // A memory topic hands what it held to its first channel, now
                // or at unpause.
                let pending = if first_channel && !state.paused {
                    state.pending.drain(..).collect()
                } else {
                    Vec::new()
                };
                (self.next_seq.load(Ordering::Relaxed), None, pending, None)
            }
        };
        let channel = self.new_channel(name, bound, durable);
        // Held in memory, so not (only) on disk: into memory whatever the window.
        channel.put_in_memory(pending);
        if let Some((store, from, upto)) = load_held {
            self.tracker.spawn(load_into_memory(
                store,
                self.name.clone(),
                from,
                upto,
                channel.clone(),
            ));
        }
        state.channels.insert(name.to_owned(), channel.clone());
        tracing::info!(topic = %self.name, channel = name, "channel created");
        Ok((channel, Some(starts_at)))
    }

    /// A channel of this topic, with its timer task running.
    fn new_channel(&self, name: &str, bound: u64, durable: Option<Durable>) -> Arc<Channel> {
        let channel = Channel::new(
            &self.name,
            name,
            bound,
            self.settings().max_attempts,
            self.tier.clone(),
            durable,
            self.cancel.child_token(),
        );
        self.tracker.spawn(channel.clone().run_timer());
        channel
    }

    /// Recovery: a channel as the store remembers it (`watermark`: every seq
    /// below it was finished; `finished`: FIN marks at or above it). Its
    /// backlog stays on disk and is read in as consumers make room.
    pub fn restore_channel(
        &self,
        name: &str,
        bound: u64,
        paused: bool,
        watermark: u64,
        finished: HashSet<u64>,
    ) {
        let durable = self.store.as_ref().map(|store| Durable {
            backlog: Backlog::on_disk_from(watermark, finished, self.released.clone()),
            store: store.clone(),
        });
        let channel = self.new_channel(name, bound, durable);
        channel.pause(paused);
        self.checkpointed_lock()
            .watermarks
            .insert(name.to_owned(), watermark);
        self.lock().channels.insert(name.to_owned(), channel);
    }

    /// Recovery: the topic's paused state, without the side effects of [`Topic::pause`].
    pub fn restore_paused(&self, paused: bool) {
        self.lock().paused = paused;
    }

    /// What a memory topic holds, for saving at shutdown: its own pending
    /// messages (under `None`) and each non-ephemeral channel's.
    pub fn held_messages(&self) -> Vec<(Option<String>, Vec<Message>)> {
        let state = self.lock();
        let mut held = vec![(None, state.pending.iter().map(|(m, _)| m.clone()).collect())];
        for channel in state.channels.values().filter(|c| !c.ephemeral) {
            held.push((Some(channel.name.clone()), channel.held_messages()));
        }
        held
    }

    /// Restores saved messages to a channel (or to the topic itself for
    /// `None`) with fresh ids, keeping their timestamps and attempts.
    pub fn restore_saved(&self, channel: Option<&str>, saved: Vec<StoredMessage>) {
        let first = self
            .next_seq
            .fetch_add(saved.len() as u64, Ordering::Relaxed);
        let msgs = saved.into_iter().zip(first..).map(|(m, seq)| Message {
            timestamp_ns: m.timestamp_ns,
            attempts: m.attempts,
            id: MessageId::from_u64(seq),
            body: m.body,
        });
        let mut state = self.lock();
        match channel.and_then(|name| state.channels.get(name).cloned()) {
            Some(channel) => channel.put_in_memory(msgs.map(|m| (m, None))),
            None => state.pending.extend(msgs.map(|m| (m, None))),
        }
    }

    /// Recovery: a channel-less persistent topic holds its log from `from` on.
    pub fn restore_held(&self, from: u64) {
        self.lock().held_from = Some(from);
    }

    pub fn existing_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.lock().channels.get(name).cloned()
    }

    /// Removes and deletes a channel. `None` if there was none; otherwise
    /// whether the topic is now channel-less (ephemeral topics then go too).
    pub fn delete_channel(&self, name: &str) -> Option<bool> {
        let mut state = self.lock();
        let channel = state.channels.remove(name)?;
        channel.delete();
        tracing::info!(topic = %self.name, channel = name, "channel deleted");
        Some(state.channels.is_empty())
    }

    pub fn pause(&self, paused: bool) {
        let mut state = self.lock();
        state.paused = paused;
        if !paused && self.store.is_some() {
            // What was written while paused waits on disk: release it.
            self.released
                .store(self.handed_over.load(Ordering::Acquire), Ordering::Release);
            let held: Vec<_> = state.pending.drain(..).collect();
            for channel in state.channels.values() {
                channel.catch_up();
                channel.put_in_memory(held.iter().cloned());
            }
            return;
        }
        if !paused && !state.channels.is_empty() {
            let pending: Vec<_> = state.pending.drain(..).collect();
            for channel in state.channels.values() {
                channel.put_all(pending.iter().cloned());
            }
        }
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Drops what the topic itself holds (not its channels), as nsqd's `/topic/empty`.
    pub fn empty(&self) {
        let mut state = self.lock();
        state.pending.clear();
        state.held_from = None;
    }

    /// Deletes every channel and refuses further publishes.
    pub fn delete(&self) {
        let mut state = self.lock();
        state.deleted = true;
        for (_, channel) in state.channels.drain() {
            channel.delete();
        }
        state.pending.clear();
        drop(state);
        self.cancel.cancel();
    }

    pub fn snapshot(&self) -> TopicSnapshot {
        let state = self.lock();
        let mut channels: Vec<_> = state.channels.values().cloned().collect();
        channels.sort_by(|a, b| a.name.cmp(&b.name));
        TopicSnapshot {
            depth: if self.store.is_some() {
                // Written but not given to channels: held for a first channel,
                // or written while paused; plus what a memory-tier topic (now
                // or before a tier change) holds in memory only. A topic that
                // never was memory-tier holds nothing in `pending`.
                let handed_over = self.handed_over.load(Ordering::Acquire);
                let from = state
                    .held_from
                    .unwrap_or_else(|| self.released.load(Ordering::Acquire));
                let memory_only = state.pending.len() as u64;
                handed_over.saturating_sub(from) + memory_only
            } else {
                state.pending.len() as u64
            },
            paused: state.paused,
            channels,
        }
    }

    fn checkpointed_lock(&self) -> MutexGuard<'_, Checkpointed> {
        self.checkpointed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes what the channels finished since the last checkpoint: FIN marks,
    /// moved low watermarks, and a trim of the log below the lowest of them,
    /// so disk use falls as consumers keep up. Nothing here is fsynced on its
    /// own: losing a checkpoint in a crash only means redeliveries.
    ///
    /// # Errors
    /// When a store write fails; FINs not written are kept for the next try.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let (channels, pending_floor) = {
            let state = self.lock();
            if state.deleted {
                return Ok(());
            }
            (
                state.channels.values().cloned().collect::<Vec<_>>(),
                state.held_from,
            )
        };
        // What is held for a first channel, or not through the sequencer yet,
        // is in no channel but not finished either.
        let handed_over = self.handed_over.load(Ordering::Acquire);
        let mut lowest = pending_floor.map_or(handed_over, |held| held.min(handed_over));
        for channel in channels {
            let Some(checkpoint) = channel.checkpoint() else {
                continue;
            };
            if !checkpoint.finished.is_empty() {
                if let Err(e) = store
                    .finish_many(&self.name, &channel.name, &checkpoint.finished)
                    .await
                {
                    channel.restore_finished(checkpoint.finished);
                    return Err(e);
                }
            }
            let last = self
                .checkpointed_lock()
                .watermarks
                .get(&channel.name)
                .copied()
                .unwrap_or(0);
            // Watermarks never go back, even if a late message below one was handed over.
            let watermark = checkpoint.low_watermark.max(last);
            if watermark > last {
                store
                    .advance_channel(&self.name, &channel.name, watermark)
                    .await?;
                self.checkpointed_lock()
                    .watermarks
                    .insert(channel.name.clone(), watermark);
            }
            lowest = lowest.min(checkpoint.low_watermark);
        }
        let trimmed = self.checkpointed_lock().trimmed_below;
        if lowest > trimmed {
            store.trim_log(&self.name, lowest).await?;
            self.checkpointed_lock().trimmed_below = lowest;
        }
        Ok(())
    }
}

/// Reads `topic`'s log from `from` to `upto` (exclusive), at most the
/// channel's bound, into an ephemeral channel's memory.
async fn load_into_memory(
    store: Arc<Store>,
    topic: String,
    from: u64,
    upto: u64,
    channel: Arc<Channel>,
) {
    let limit = usize::try_from(channel.bound()).unwrap_or(usize::MAX);
    let name = topic.clone();
    let read = tokio::task::spawn_blocking(move || store.read_log(&name, from, limit)).await;
    match read {
        Ok(Ok(entries)) => {
            channel.put_in_memory(entries.into_iter().take_while(|(seq, _)| *seq < upto).map(
                |(seq, m)| {
                    let msg = Message {
                        timestamp_ns: m.timestamp_ns,
                        attempts: m.attempts,
                        id: MessageId::from_u64(seq),
                        body: m.body,
                    };
                    (msg, None)
                },
            ))
        }
        Ok(Err(e)) => {
            tracing::warn!(%topic, channel = %channel.name, error = %e, "cannot read held messages for an ephemeral channel")
        }
        Err(e) => tracing::error!(error = %e, "held-message read task failed"),
    }
}

/// A persistent publish between its seqs being assigned and its hand-over.
/// If the publishing future is dropped mid-write (an HTTP client hanging up),
/// its messages are still handed over, in order: a gap in the sequence would
/// stop every later publish of the topic from reaching its channels.
struct InOrder<'a> {
    topic: &'a Topic,
    first: u64,
    count: u64,
    msgs: Option<Vec<(Message, Option<Instant>)>>,
    only: Option<String>,
}

impl InOrder<'_> {
    /// `written`: the messages are durable; otherwise only their place in the
    /// order is handed over.
    fn finish(&mut self, written: bool) {
        if let Some(msgs) = self.msgs.take() {
            let msgs = if written { msgs } else { Vec::new() };
            let handover = Handover {
                count: self.count,
                msgs,
                only: self.only.take(),
            };
            self.topic.sequence(self.first, handover);
        }
    }
}

impl Drop for InOrder<'_> {
    fn drop(&mut self) {
        self.finish(true);
    }
}
