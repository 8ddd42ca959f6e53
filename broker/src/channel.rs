//! A channel: one queue shared by its consumers, plus what it owns about
//! delivery — in-flight messages with their timeouts, and deferred messages.
//!
//! All of a channel's mutable state sits behind one std `Mutex`: every critical
//! section is a few map and queue operations with no `.await`, so a sync lock
//! is cheaper than an async one and cannot be held across a suspension point.
//! Timeouts and deferrals are served by one timer task per channel
//! ([`Channel::run_timer`]), never a timer per message: each consumer's
//! in-flight messages keep their deadlines in delivery order (see
//! `in_flight`), and deferred messages sit in an ordered set.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use triage_config::Tier;
use triage_protocol::{Message, MessageId};

use crate::backlog::{Backlog, RefillPlan};
use crate::client::{ClientId, ClientInfo};
use crate::in_flight::{InFlight, InFlightSet};
use crate::live_tier::LiveTier;
use crate::store::Store;

/// Why a channel refused an operation on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InFlightError {
    #[error("message not in flight")]
    NotInFlight,
    #[error("message in flight with another client")]
    WrongClient,
}

/// A consumer as the channel sees it: its messages in flight are its own,
/// so its session touches memory no other consumer's writes to. Aligned so
/// two consumers never share a cache line (or an adjacent-line prefetch pair).
#[derive(Debug)]
#[repr(align(128))]
struct Consumer {
    info: Arc<ClientInfo>,
    in_flight: InFlightSet,
}

impl Consumer {
    /// Publishes the in-flight count for `/stats` and the session's credit.
    fn count_changed(&self) {
        self.info
            .in_flight
            .store(self.in_flight.len() as u64, Ordering::Relaxed);
    }
}

/// What makes a channel of a persistent topic durable: its view of the
/// topic's log, and the store to read its on-disk backlog from.
#[derive(Debug)]
pub struct Durable {
    pub backlog: Backlog,
    pub store: Arc<Store>,
}

/// What became of a requeued message.
#[derive(Debug)]
pub enum Requeued {
    /// Queued again, deferred in memory, or set aside for `<topic>.dead`.
    Done,
    /// Out of flight and to be written to the delayed tier by the caller,
    /// who then calls [`Channel::requeue_written`] (or, if the write failed,
    /// [`Channel::defer_in_memory`]).
    ToStore(Message),
}

/// Why a message went to `<topic>.dead`.
pub const DEAD_REQUEUED: &str = "requeued";
pub const DEAD_TIMED_OUT: &str = "timed out";

/// What a checkpoint writes for one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub finished: Vec<u64>,
    /// Every seq below it is finished.
    pub low_watermark: u64,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Message>,
    /// Due order of deferred messages.
    deferred: BTreeMap<(Instant, MessageId), Message>,
    /// Boxed, so each consumer's state has its own cache lines.
    consumers: HashMap<ClientId, Box<Consumer>>,
    /// What the timer task sleeps until (`None`: nothing to wait for). A new
    /// deadline or due time earlier than this wakes it.
    timer_at: Option<Instant>,
    paused: bool,
    deleted: bool,
    /// `Some` for channels of persistent topics.
    backlog: Option<Backlog>,
    /// Messages that reached `max_attempts`, with the reason, waiting for
    /// the checkpoint to move them to `<topic>.dead`. At most what was in
    /// flight, so bounded by the consumers' RDY.
    dead: Vec<(Message, &'static str)>,
}

impl State {
    /// Computes the earliest timeout or due time (one pass over the
    /// consumers; the timer task's, not the hot path's).
    fn next_deadline(&mut self) -> Option<Instant> {
        let timeout = self
            .consumers
            .values_mut()
            .filter_map(|consumer| consumer.in_flight.next_deadline())
            .min();
        let due = self.deferred.first_key_value().map(|((t, _), _)| *t);
        match (timeout, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether `at` is earlier than what the timer sleeps until; if so, it
    /// becomes what the timer is woken for.
    fn wakes_timer(&mut self, at: Instant) -> bool {
        let earlier = self.timer_at.is_none_or(|next| at < next);
        if earlier {
            self.timer_at = Some(at);
        }
        earlier
    }

    /// Takes `id` out of flight if `client` has it. The caller publishes
    /// the consumer's new count.
    fn take_in_flight_of(
        &mut self,
        client: ClientId,
        id: &MessageId,
    ) -> Result<InFlight, InFlightError> {
        if let Some(entry) = self
            .consumers
            .get_mut(&client)
            .and_then(|consumer| consumer.in_flight.remove(id))
        {
            return Ok(entry);
        }
        Err(self.why_not_in_flight(client, id))
    }

    /// The error for `id`, not in flight with `client` (the uncommon path:
    /// it looks through the other consumers).
    fn why_not_in_flight(&mut self, client: ClientId, id: &MessageId) -> InFlightError {
        let elsewhere = self
            .consumers
            .iter_mut()
            .any(|(other, consumer)| *other != client && consumer.in_flight.get(id).is_some());
        if elsewhere {
            InFlightError::WrongClient
        } else {
            InFlightError::NotInFlight
        }
    }

    fn count_changed(&self, client: ClientId) {
        if let Some(consumer) = self.consumers.get(&client) {
            consumer.count_changed();
        }
    }
}

/// Counters nsqd reports per channel in `/stats`, plus the delivered and
/// finished counts `/metrics` reports (bumped by the session that sends or
/// finishes).
#[derive(Debug, Default)]
pub struct ChannelCounters {
    pub message_count: AtomicU64,
    pub requeue_count: AtomicU64,
    pub timeout_count: AtomicU64,
    pub delivered_count: AtomicU64,
    pub finish_count: AtomicU64,
}

#[derive(Debug)]
pub struct Channel {
    pub name: String,
    pub topic_name: String,
    /// `#ephemeral`: overflow is dropped and the channel goes with its last consumer.
    pub ephemeral: bool,
    /// Memory-tier bound: queued plus deferred messages.
    bound: u64,
    /// 0: never dead-letter; else a message delivered this many times that
    /// comes back (REQ or timeout) goes to `<topic>.dead`. Atomic: the
    /// topic's settings can change in place with its tier.
    max_attempts: AtomicU16,
    /// The topic's tier, read per requeue: persistent and delayed topics put
    /// a requeue with a delay in the delayed tier of the store; memory-tier
    /// topics keep it in memory.
    tier: Arc<LiveTier>,
    state: Mutex<State>,
    /// Consumers with credit and nothing to take wait here; every put wakes them.
    available: Notify,
    /// Wakes the timer task when a deadline earlier than the one it sleeps on appears.
    timer_wake: Notify,
    /// Cancelled when the channel is deleted or the broker shuts down.
    cancel: CancellationToken,
    /// Persistent topics only: where refills read the on-disk backlog.
    store: Option<Arc<Store>>,
    pub counters: ChannelCounters,
}

/// A point-in-time view for `/stats`.
#[derive(Debug, Clone)]
pub struct ChannelSnapshot {
    /// Waiting for delivery: in memory plus `backend_depth`, as nsqd counts it.
    pub depth: u64,
    /// Persistent channels: waiting in the store, beyond the in-memory window.
    pub backend_depth: u64,
    pub in_flight: u64,
    pub deferred: u64,
    pub paused: bool,
    pub clients: Vec<Arc<ClientInfo>>,
}

impl Channel {
    /// `durable`: the channel belongs to a persistent topic; it keeps at most
    /// `bound` messages in memory and reads the rest of its backlog from the
    /// store as consumers make room (see [`Backlog`]).
    pub fn new(
        topic_name: &str,
        name: &str,
        bound: u64,
        max_attempts: u16,
        tier: Arc<LiveTier>,
        durable: Option<Durable>,
        cancel: CancellationToken,
    ) -> Arc<Channel> {
        let (backlog, store) = match durable {
            Some(Durable { backlog, store }) => (Some(backlog), Some(store)),
            None => (None, None),
        };
        Arc::new(Channel {
            name: name.to_owned(),
            topic_name: topic_name.to_owned(),
            ephemeral: triage_protocol::names::is_ephemeral(name),
            bound,
            max_attempts: AtomicU16::new(max_attempts),
            tier,
            state: Mutex::new(State {
                backlog,
                ..State::default()
            }),
            store,
            available: Notify::new(),
            timer_wake: Notify::new(),
            cancel,
            counters: ChannelCounters::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in a few lines of
        // collection code; the state is still structurally valid, so go on.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// Room left for new messages under the memory-tier bound.
    pub fn free_capacity(&self) -> u64 {
        let state = self.lock();
        self.bound
            .saturating_sub((state.queue.len() + state.deferred.len()) as u64)
    }

    /// Queues messages, deferred ones (with a due time) into the deferred set.
    /// The caller has checked capacity; ephemeral channels drop what overflows;
    /// a persistent channel leaves what does not fit its window on disk.
    pub fn put_all(&self, msgs: impl IntoIterator<Item = (Message, Option<Instant>)>) {
        self.put(msgs, false);
    }

    /// Like [`Channel::put_all`], but into memory whatever the window: for
    /// messages that are not (or not only) on disk.
    pub fn put_in_memory(&self, msgs: impl IntoIterator<Item = (Message, Option<Instant>)>) {
        self.put(msgs, true);
    }

    /// Whether `count` more messages fit in memory now, with nothing waiting
    /// on disk ahead of them.
    pub fn has_room(&self, count: u64) -> bool {
        let state = self.lock();
        let in_memory = (state.queue.len() + state.deferred.len()) as u64;
        !state.backlog.as_ref().is_some_and(Backlog::is_behind) && in_memory + count <= self.bound
    }

    fn put(&self, msgs: impl IntoIterator<Item = (Message, Option<Instant>)>, force: bool) {
        let mut state = self.lock();
        let mut queued = false;
        let mut earlier_due = false;
        for (msg, due) in msgs {
            let in_memory = state.queue.len() + state.deferred.len();
            if self.ephemeral && in_memory as u64 >= self.bound {
                continue;
            }
            self.counters.message_count.fetch_add(1, Ordering::Relaxed);
            if let (Some(backlog), Some(seq)) = (state.backlog.as_mut(), msg.id.to_u64()) {
                let admitted = if force || due.is_some() {
                    backlog.admit_in_memory(seq)
                } else {
                    backlog.admit(seq, in_memory, self.bound as usize)
                };
                if !admitted {
                    continue; // on disk; a refill brings it in order
                }
            }
            match due {
                Some(due) => {
                    earlier_due |= state.wakes_timer(due);
                    state.deferred.insert((due, msg.id), msg);
                }
                None => {
                    state.queue.push_back(msg);
                    queued = true;
                }
            }
        }
        drop(state);
        if queued {
            self.available.notify_waiters();
        }
        if earlier_due {
            self.timer_wake.notify_one();
        }
    }

    /// Registers a consumer. Fails if the channel was deleted meanwhile.
    pub fn add_consumer(
        &self,
        info: Arc<ClientInfo>,
        max_consumers: u32,
    ) -> Result<(), &'static str> {
        let mut state = self.lock();
        if state.deleted {
            return Err("channel is exiting");
        }
        if max_consumers > 0 && state.consumers.len() >= max_consumers as usize {
            return Err("channel consumers for this channel reached the limit");
        }
        state.consumers.insert(
            info.id,
            Box::new(Consumer {
                info,
                in_flight: InFlightSet::default(),
            }),
        );
        Ok(())
    }

    /// Removes a consumer and requeues what it had in flight at once (nsqd
    /// waits for each message's timeout; there is no reason to make others wait).
    /// Returns how many consumers remain.
    pub fn remove_consumer(&self, client: ClientId) -> usize {
        let mut state = self.lock();
        let orphaned = state
            .consumers
            .remove(&client)
            .map(|mut consumer| consumer.in_flight.drain())
            .unwrap_or_default();
        let requeued = !orphaned.is_empty();
        for entry in orphaned {
            self.counters.requeue_count.fetch_add(1, Ordering::Relaxed);
            state.queue.push_back(entry.msg);
        }
        let remaining = state.consumers.len();
        drop(state);
        if requeued {
            self.available.notify_waiters();
        }
        remaining
    }

    /// Takes up to `rdy - in_flight` messages for `client` (at most `max`), each
    /// with `attempts + 1` and a timeout of `msg_timeout`. Returns whether
    /// waiting for [`Channel::available`] makes sense: the client still has
    /// credit (or the channel is paused), so the next put or unpause is for it.
    pub fn take_for(
        &self,
        client: ClientId,
        rdy: u64,
        msg_timeout: Duration,
        max: usize,
        out: &mut Vec<Message>,
    ) -> bool {
        let mut guard = self.lock();
        let now = Instant::now();
        let deadline = now + msg_timeout;
        if guard.deleted {
            return false;
        }
        if guard.paused {
            // Unpausing wakes everyone waiting for messages.
            return true;
        }
        let state = &mut *guard;
        let Some(consumer) = state.consumers.get_mut(&client) else {
            return false;
        };
        let mut taken = 0;
        while (consumer.in_flight.len() as u64) < rdy && taken < max {
            let Some(mut msg) = state.queue.pop_front() else {
                break;
            };
            msg.attempts = msg.attempts.saturating_add(1);
            consumer.in_flight.insert(InFlight {
                msg: msg.clone(),
                deadline,
                delivered_at: now,
            });
            taken += 1;
            out.push(msg);
        }
        consumer.count_changed();
        let credit_left = (consumer.in_flight.len() as u64) < rdy;
        // Clients choose their own msg_timeout, so a new deadline can precede the timer's.
        let wake_timer = taken > 0 && state.wakes_timer(deadline);
        let in_memory = state.queue.len() + state.deferred.len();
        let refill = state
            .backlog
            .as_ref()
            .is_some_and(|b| b.refill_plan(in_memory, self.bound as usize).is_some());
        drop(guard);
        if taken > 0 && (wake_timer || refill) {
            self.timer_wake.notify_one();
        }
        credit_left
    }

    /// A future that completes at the next put (create it before [`take_for`]
    /// and `enable` it, so a put in between is not missed).
    pub fn available(&self) -> tokio::sync::futures::Notified<'_> {
        self.available.notified()
    }

    /// `FIN`: the message is done. Returns its publish timestamp (ns since the epoch).
    pub fn finish(&self, client: ClientId, id: &MessageId) -> Result<i64, InFlightError> {
        let mut state = self.lock();
        let finished = Self::finish_locked(&mut state, client, id);
        state.count_changed(client);
        finished
    }

    fn finish_locked(
        state: &mut State,
        client: ClientId,
        id: &MessageId,
    ) -> Result<i64, InFlightError> {
        let entry = state.take_in_flight_of(client, id)?;
        if let (Some(backlog), Some(seq)) = (state.backlog.as_mut(), id.to_u64()) {
            backlog.finish(seq);
        }
        Ok(entry.msg.timestamp_ns)
    }

    /// `FIN` of several messages under one lock, as a consumer's FINs
    /// arrive together: for each id in order, its publish timestamp or why
    /// it could not be finished, appended to `out`.
    pub fn finish_all(
        &self,
        client: ClientId,
        ids: &[MessageId],
        out: &mut Vec<Result<i64, InFlightError>>,
    ) {
        let mut state = self.lock();
        out.extend(
            ids.iter()
                .map(|id| Self::finish_locked(&mut state, client, id)),
        );
        state.count_changed(client);
    }

    /// Whether a message coming back has used up its attempts.
    fn is_spent(&self, msg: &Message) -> bool {
        let max_attempts = self.max_attempts.load(Ordering::Relaxed);
        max_attempts > 0 && msg.attempts >= max_attempts
    }

    /// The topic's settings changed (see `Topic::change_tier`).
    pub fn set_max_attempts(&self, max_attempts: u16) {
        self.max_attempts.store(max_attempts, Ordering::Relaxed);
    }

    /// `REQ`: back to the queue now, or deferred by `delay`: in the store
    /// for persistent and delayed topics (the caller writes it), in memory
    /// otherwise. A message that has used up `max_attempts` goes to
    /// `<topic>.dead` instead.
    pub fn requeue(
        &self,
        client: ClientId,
        id: &MessageId,
        delay: Duration,
    ) -> Result<Requeued, InFlightError> {
        let mut state = self.lock();
        let entry = state.take_in_flight_of(client, id)?;
        state.count_changed(client);
        self.counters.requeue_count.fetch_add(1, Ordering::Relaxed);
        if self.is_spent(&entry.msg) {
            state.dead.push((entry.msg, DEAD_REQUEUED));
            return Ok(Requeued::Done);
        }
        if delay.is_zero() {
            state.queue.push_back(entry.msg);
            drop(state);
            self.available.notify_waiters();
            return Ok(Requeued::Done);
        }
        if self.tier.get() != Tier::Memory
            && state.backlog.is_some()
            && entry.msg.id.to_u64().is_some()
        {
            return Ok(Requeued::ToStore(entry.msg));
        }
        drop(state);
        self.defer_in_memory(entry.msg, Instant::now() + delay);
        Ok(Requeued::Done)
    }

    /// Defers a message in memory until `due`.
    pub fn defer_in_memory(&self, msg: Message, due: Instant) {
        let mut state = self.lock();
        let earlier = state.wakes_timer(due);
        state.deferred.insert((due, msg.id), msg);
        drop(state);
        if earlier {
            self.timer_wake.notify_one();
        }
    }

    /// A [`Requeued::ToStore`] message is in the delayed tier now (and FIN
    /// marked at its log seq there): the channel is done with that seq.
    pub fn requeue_written(&self, id: &MessageId) {
        if let (Some(backlog), Some(seq)) = (self.lock().backlog.as_mut(), id.to_u64()) {
            backlog.finish(seq);
        }
    }

    /// Seqs released for another channel only: this one passes over them.
    pub fn skip(&self, seqs: std::ops::Range<u64>, in_order: bool) {
        if let Some(backlog) = self.lock().backlog.as_mut() {
            for seq in seqs {
                backlog.skip(seq, in_order);
            }
        }
    }

    /// Takes the messages waiting to go to `<topic>.dead`.
    pub fn take_dead(&self) -> Vec<(Message, &'static str)> {
        std::mem::take(&mut self.lock().dead)
    }

    /// Dead letters are written to `<topic>.dead`: done with them here.
    pub fn dead_written(&self, ids: &[MessageId]) {
        let mut state = self.lock();
        if let Some(backlog) = state.backlog.as_mut() {
            for seq in ids.iter().filter_map(MessageId::to_u64) {
                backlog.finish(seq);
            }
        }
    }

    /// Dead letters that could not be written: queued again, to try later.
    pub fn restore_dead(&self, dead: Vec<(Message, &'static str)>) {
        self.lock().dead.extend(dead);
    }

    /// `TOUCH`: the timeout starts again, capped at delivery + `max_msg_timeout`.
    pub fn touch(
        &self,
        client: ClientId,
        id: &MessageId,
        msg_timeout: Duration,
        max_msg_timeout: Duration,
    ) -> Result<(), InFlightError> {
        let mut state = self.lock();
        let now = Instant::now();
        let touched = state.consumers.get_mut(&client).is_some_and(|consumer| {
            consumer.in_flight.touch(id, |entry| {
                (now + msg_timeout).min(entry.delivered_at + max_msg_timeout)
            })
        });
        if touched {
            Ok(())
        } else {
            Err(state.why_not_in_flight(client, id))
        }
    }

    /// Requeues timed-out messages and releases due deferred ones. Returns the
    /// next deadline to sleep until.
    fn process_deadlines(&self, now: Instant) -> Option<Instant> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut released = false;
        for consumer in state.consumers.values_mut() {
            let mut timed_out = 0;
            while let Some(entry) = consumer.in_flight.pop_expired(now) {
                timed_out += 1;
                if self.is_spent(&entry.msg) {
                    state.dead.push((entry.msg, DEAD_TIMED_OUT));
                } else {
                    state.queue.push_back(entry.msg);
                    released = true;
                }
            }
            if timed_out > 0 {
                self.counters
                    .timeout_count
                    .fetch_add(timed_out, Ordering::Relaxed);
                consumer.count_changed();
                consumer.info.wake(); // its connection has credit again
            }
        }
        while let Some(entry) = state.deferred.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let msg = entry.remove();
            state.queue.push_back(msg);
            released = true;
        }
        let next = state.next_deadline();
        state.timer_at = next;
        drop(guard);
        if released {
            self.available.notify_waiters();
        }
        next
    }

    /// The channel's one timer task: sleeps until the earliest in-flight
    /// timeout or deferred due time, and is woken early when an earlier one appears.
    pub async fn run_timer(self: Arc<Self>) {
        loop {
            // Register interest before reading the deadline, so an insert in between wakes us.
            let wake = self.timer_wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let next = self.process_deadlines(Instant::now());
            if let Some(plan) = self.refill_plan() {
                tokio::select! {
                    _ = self.cancel.cancelled() => return,
                    _ = self.refill(plan) => {}
                }
                continue;
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = &mut wake => {}
                _ = sleep_until_opt(next) => {}
            }
        }
    }

    pub fn pause(&self, paused: bool) {
        self.lock().paused = paused;
        if !paused {
            self.available.notify_waiters();
        }
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// Drops everything queued, deferred and in flight (nsqd's `/channel/empty`).
    pub fn empty(&self) {
        let mut state = self.lock();
        state.queue.clear();
        state.deferred.clear();
        state.dead.clear();
        if let Some(backlog) = state.backlog.as_mut() {
            backlog.empty();
        }
        for consumer in state.consumers.values_mut() {
            consumer.in_flight.clear();
            consumer.count_changed();
            consumer.info.wake();
        }
    }

    /// Marks the channel deleted, stops its timer and tells its consumers,
    /// whose connections then close (as nsqd closes them).
    pub fn delete(&self) {
        let mut state = self.lock();
        state.deleted = true;
        for consumer in state.consumers.values() {
            consumer.info.wake();
        }
        drop(state);
        self.cancel.cancel();
        self.available.notify_waiters();
    }

    /// Everything the channel holds (in flight, queued, deferred), oldest
    /// deliveries first, for saving the memory tier at shutdown.
    pub fn held_messages(&self) -> Vec<Message> {
        let state = self.lock();
        let mut in_flight: Vec<_> = state
            .consumers
            .values()
            .flat_map(|consumer| consumer.in_flight.iter())
            .collect();
        in_flight.sort_by_key(|f| f.delivered_at);
        in_flight
            .into_iter()
            .map(|f| f.msg.clone())
            .chain(state.queue.iter().cloned())
            .chain(state.deferred.values().cloned())
            .chain(state.dead.iter().map(|(m, _)| m.clone()))
            .collect()
    }

    /// Takes the FINs not yet recorded and the current low watermark, for a
    /// persistent topic's checkpoint. `None` for memory-tier channels.
    ///
    /// Only FINs at or above the watermark need a mark in the store: the
    /// watermark, written in the same checkpoint, covers every seq below it.
    /// Consumers finish mostly in order, so most FINs need no write at all.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let mut state = self.lock();
        let backlog = state.backlog.as_mut()?;
        let low_watermark = backlog.low_watermark();
        let mut finished = backlog.take_finished();
        finished.retain(|&seq| seq >= low_watermark);
        Some(Checkpoint {
            finished,
            low_watermark,
        })
    }

    /// Gives back FINs a failed checkpoint could not write, to try again.
    pub fn restore_finished(&self, finished: Vec<u64>) {
        if let Some(backlog) = self.lock().backlog.as_mut() {
            backlog.restore_finished(finished);
        }
    }

    /// The topic was unpaused: read what it released meanwhile from disk.
    pub fn catch_up(&self) {
        if let Some(backlog) = self.lock().backlog.as_mut() {
            backlog.catch_up();
        }
        self.timer_wake.notify_one();
    }

    /// What a refill should read now, if anything.
    fn refill_plan(&self) -> Option<RefillPlan> {
        let state = self.lock();
        let in_memory = state.queue.len() + state.deferred.len();
        state
            .backlog
            .as_ref()?
            .refill_plan(in_memory, self.bound as usize)
    }

    /// Reads the next part of the on-disk backlog into the queue.
    async fn refill(&self, plan: RefillPlan) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let topic = self.topic_name.clone();
        let read =
            tokio::task::spawn_blocking(move || store.read_log(&topic, plan.from, plan.limit))
                .await;
        let entries = match read {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!(topic = %self.topic_name, channel = %self.name, error = %e, "cannot read the backlog; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "backlog read task failed");
                return;
            }
        };
        let mut state = self.lock();
        let Some(backlog) = state.backlog.as_mut() else {
            return;
        };
        let loaded = backlog.apply_refill(plan, entries);
        let any = !loaded.is_empty();
        state.queue.extend(loaded);
        drop(state);
        if any {
            self.available.notify_waiters();
        }
    }

    pub fn is_deleted(&self) -> bool {
        self.lock().deleted
    }

    pub fn snapshot(&self) -> ChannelSnapshot {
        let state = self.lock();
        let backend_depth = state.backlog.as_ref().map_or(0, Backlog::on_disk);
        ChannelSnapshot {
            depth: state.queue.len() as u64 + backend_depth,
            backend_depth,
            in_flight: state
                .consumers
                .values()
                .map(|consumer| consumer.in_flight.len() as u64)
                .sum(),
            deferred: state.deferred.len() as u64,
            paused: state.paused,
            clients: state.consumers.values().map(|c| c.info.clone()).collect(),
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
