//! A topic: fans every message out to each of its channels. Until its first
//! channel appears (or while paused) it keeps messages itself, as nsqd does.
//!
//! Lock order is topic, then channel; a channel never takes its topic's lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triage_config::Tier;
use triage_protocol::{Message, MessageId};

use crate::channel::Channel;
use crate::client::unix_nanos;

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
}

#[derive(Debug, Default)]
struct State {
    channels: HashMap<String, Arc<Channel>>,
    /// Messages waiting for a first channel or for unpause, with their due time if deferred.
    pending: VecDeque<(Message, Option<Instant>)>,
    paused: bool,
    deleted: bool,
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub tier: Tier,
    pub ephemeral: bool,
    bound: u64,
    /// std Mutex: short sections with no `.await` (see the module doc for lock order).
    state: Mutex<State>,
    next_seq: AtomicU64,
    pub message_count: AtomicU64,
    pub message_bytes: AtomicU64,
    /// Parent of every channel's token.
    cancel: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

#[derive(Debug, Clone)]
pub struct TopicSnapshot {
    pub depth: u64,
    pub paused: bool,
    pub channels: Vec<Arc<Channel>>,
}

impl Topic {
    pub fn new(
        name: &str,
        tier: Tier,
        bound: u64,
        cancel: CancellationToken,
        tracker: tokio_util::task::TaskTracker,
    ) -> Arc<Topic> {
        Arc::new(Topic {
            name: name.to_owned(),
            tier,
            ephemeral: triage_protocol::names::is_ephemeral(name),
            bound,
            state: Mutex::new(State::default()),
            next_seq: AtomicU64::new(1),
            message_count: AtomicU64::new(0),
            message_bytes: AtomicU64::new(0),
            cancel,
            tracker,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning would need a panic inside a few collection operations; the state stays valid.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Publishes `bodies` atomically: all are accepted or none. `due` defers
    /// them (DPUB). A full memory queue refuses the lot, except on ephemeral
    /// topics and channels, which drop what overflows as nsqd does.
    pub fn publish(&self, bodies: Vec<Bytes>, due: Option<Instant>) -> Result<(), PublishError> {
        let count = bodies.len() as u64;
        let timestamp_ns = unix_nanos();
        let mut state = self.lock();
        if state.deleted {
            return Err(PublishError::Exiting(self.name.clone()));
        }
        let held_here = state.paused || state.channels.is_empty();
        if held_here {
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
        let mut bytes = 0u64;
        let msgs = bodies.into_iter().enumerate().map(|(i, body)| {
            bytes += body.len() as u64;
            let msg = Message {
                timestamp_ns,
                attempts: 0,
                id: MessageId::from_u64(first + i as u64),
                body,
            };
            (msg, due)
        });
        if held_here {
            for item in msgs {
                if (state.pending.len() as u64) < self.bound {
                    state.pending.push_back(item);
                }
            }
        } else {
            let msgs: Vec<_> = msgs.collect();
            for channel in state.channels.values() {
                channel.put_all(msgs.iter().cloned());
            }
        }
        self.message_count.fetch_add(count, Ordering::Relaxed);
        self.message_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Returns the channel, creating it (and starting its timer) if needed.
    /// The first channel of a topic takes every message the topic was holding.
    pub fn channel(&self, name: &str, bound: u64) -> Result<Arc<Channel>, PublishError> {
        let mut state = self.lock();
        if state.deleted {
            return Err(PublishError::Exiting(self.name.clone()));
        }
        if let Some(channel) = state.channels.get(name) {
            return Ok(channel.clone());
        }
        let channel = Channel::new(&self.name, name, bound, self.cancel.child_token());
        self.tracker.spawn(channel.clone().run_timer());
        state.channels.insert(name.to_owned(), channel.clone());
        if !state.paused {
            let pending: Vec<_> = state.pending.drain(..).collect();
            channel.put_all(pending);
        }
        tracing::info!(topic = %self.name, channel = name, "channel created");
        Ok(channel)
    }

    pub fn existing_channel(&self, name: &str) -> Option<Arc<Channel>> {
        self.lock().channels.get(name).cloned()
    }

    /// Removes and deletes a channel. Returns false if there was none.
    /// Returns whether the topic is now channel-less (ephemeral topics then go too).
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
        if !paused && !state.channels.is_empty() {
            let pending: Vec<_> = state.pending.drain(..).collect();
            for channel in state.channels.values() {
                channel.put_all(pending.iter().cloned());
            }
        }
    }

    /// Drops what the topic itself holds (not its channels), as nsqd's `/topic/empty`.
    pub fn empty(&self) {
        self.lock().pending.clear();
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
            depth: state.pending.len() as u64,
            paused: state.paused,
            channels,
        }
    }
}
