//! The delayed tier: deferred publishes (DPUB, `/pub?defer=`, a delayed
//! topic's default delay) and delayed requeues (`REQ <id> <ms>`) of
//! persistent and delayed topics wait in the store's `delayed` column family,
//! ordered by due time, not in memory; one scheduler task moves each into its
//! topic's log when it is due.
//!
//! The scheduler sleeps until the earliest due entry; a write of an earlier
//! one wakes it. It reads the head of the family in batches, and remembers
//! where the last batch ended (the cursor) so that it does not walk again
//! over the tombstones of entries it already released. A due entry goes
//! into its topic's log in the same atomic write that deletes it (see
//! `Store::release_delayed`), so a crash at any point leaves it in exactly
//! one of the two places: delivered once or pending, never lost.
//!
//! Due times are Unix milliseconds, so they survive a restart. While running,
//! "now" is the wall clock at start plus tokio's monotonic clock since then:
//! a wall-clock step does not release entries early, and tests can drive the
//! scheduler with tokio's paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::broker::Broker;
use crate::store::{DelayedKey, DelayedMessage, StoredMessage};

/// Entries read (and released) per scheduler pass.
const SCAN_BATCH: usize = 4096;

/// After a failed read or release, the scheduler tries again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Wall-clock milliseconds, advanced by tokio's clock. Kept in nanoseconds
/// and floored once, so "now" is never ahead of the wall clock by rounding.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_ns_at_start: u64,
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            wall_ns_at_start: u64::try_from(crate::client::unix_nanos()).unwrap_or(0),
            start: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wall_ns_at_start.saturating_add(elapsed) / 1_000_000
    }

    /// The tokio instant of a due time, for sleeping until it.
    fn instant_of(&self, due_ms: u64) -> Instant {
        let due_ns = due_ms.saturating_mul(1_000_000);
        self.start + Duration::from_nanos(due_ns.saturating_sub(self.wall_ns_at_start))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Where the next scan starts. `epoch` changes whenever an entry is written
/// below the cursor, so a scan that started before cannot move the cursor
/// past it.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    after: Option<DelayedKey>,
    epoch: u64,
}

/// Pending counts per topic (`None`) and channel, kept in step with the
/// store's `counts` family (which is what a restart reads back).
type Counts = HashMap<(String, Option<String>), u64>;

#[derive(Debug)]
pub struct Delayed {
    pub clock: Clock,
    cursor: Mutex<Cursor>,
    /// The due time the scheduler sleeps toward; `u64::MAX` while it scans
    /// (so every write wakes it) or when nothing is pending.
    next_due: AtomicU64,
    wake: Notify,
    counts: Mutex<Counts>,
}

impl Delayed {
    pub fn new(clock: Clock) -> Delayed {
        Delayed {
            clock,
            cursor: Mutex::new(Cursor::default()),
            next_due: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
            counts: Mutex::new(HashMap::new()),
        }
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cursor(&self) -> MutexGuard<'_, Cursor> {
        self.cursor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The due time of a delay from now: rounded up to the end of its
    /// batch window when the topic has one, so messages due within one
    /// window are released together.
    pub fn due_ms(&self, delay: Duration, batch_window: Duration) -> u64 {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let due = self.clock.now_ms().saturating_add(delay_ms);
        let window = u64::try_from(batch_window.as_millis()).unwrap_or(0);
        if window == 0 {
            due
        } else {
            due.div_ceil(window).saturating_mul(window)
        }
    }

    /// Recovery: the counts the store kept.
    pub fn restore_counts(&self, counts: Vec<(String, Option<String>, u64)>) {
        let mut map = self.counts();
        for (topic, channel, n) in counts {
            map.insert((topic, channel), n);
        }
    }

    /// Entries were written (durably) for `topic` / `channel`: count them and
    /// wake the scheduler if they are due before what it sleeps toward.
    pub fn scheduled(&self, topic: &str, channel: Option<&str>, keys: &[DelayedKey]) {
        let Some(&first) = keys.iter().min() else {
            return;
        };
        *self
            .counts()
            .entry((topic.to_owned(), channel.map(str::to_owned)))
            .or_default() += keys.len() as u64;
        {
            let mut cursor = self.cursor();
            if cursor.after.is_some_and(|after| first <= after) {
                // Written below where the next scan starts (a publish whose
                // write took longer than its delay): rescan from the start.
                cursor.after = None;
                cursor.epoch += 1;
            }
        }
        if first.due_ms < self.next_due.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    fn released(&self, topic: &str, channel: Option<&str>, n: u64) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(&(topic.to_owned(), channel.map(str::to_owned))) {
            *count = count.saturating_sub(n);
        }
    }

    /// A topic or channel was deleted: its counts go (the store deletes them too).
    pub fn forget(&self, topic: &str, channel: Option<&str>) {
        let mut counts = self.counts();
        match channel {
            Some(channel) => {
                counts.remove(&(topic.to_owned(), Some(channel.to_owned())));
            }
            None => counts.retain(|(t, _), _| t != topic),
        }
    }

    /// Pending entries of `topic` itself (deferred publishes).
    pub fn pending_for_topic(&self, topic: &str) -> u64 {
        self.counts()
            .get(&(topic.to_owned(), None))
            .copied()
            .unwrap_or(0)
    }

    /// Pending entries requeued with a delay on `topic/channel`.
    pub fn pending_for_channel(&self, topic: &str, channel: &str) -> u64 {
        self.counts()
            .get(&(topic.to_owned(), Some(channel.to_owned())))
            .copied()
            .unwrap_or(0)
    }

    /// Every pending entry of `topic`: its own and its channels'.
    pub fn pending_total(&self, topic: &str) -> u64 {
        self.counts()
            .iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The scheduler: runs until shutdown.
pub async fn run_scheduler(broker: Arc<Broker>) {
    let delayed = &broker.delayed;
    loop {
        // Register for wake-ups before reading, so a write during the read
        // is not missed; `next_due = MAX` makes every such write notify.
        let wake = delayed.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        delayed.next_due.store(u64::MAX, Ordering::Release);
        let cursor = *delayed.cursor();
        let now = delayed.clock.now_ms();
        let store = broker.store.clone();
        let read =
            tokio::task::spawn_blocking(move || store.read_delayed(cursor.after, now, SCAN_BATCH))
                .await;
        let sleep_until = match read {
            Ok(Ok(batch)) if !batch.due.is_empty() => {
                let last = batch.due.last().map(|(key, _)| *key);
                match release(&broker, batch.due).await {
                    Ok(()) => {
                        let mut current = delayed.cursor();
                        if current.epoch == cursor.epoch {
                            current.after = last;
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot release due delayed messages; retrying");
                        Some(Instant::now() + RETRY_AFTER)
                    }
                }
            }
            Ok(Ok(batch)) => {
                let next = batch.next_due_ms.unwrap_or(u64::MAX);
                delayed.next_due.store(next, Ordering::Release);
                batch.next_due_ms.map(|due| delayed.clock.instant_of(due))
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the delayed tier; retrying");
                Some(Instant::now() + RETRY_AFTER)
            }
            Err(e) => {
                tracing::error!(error = %e, "delayed-tier read task failed; retrying");
                Some(Instant::now() + RETRY_AFTER)
            }
        };
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = &mut wake => {}
            _ = sleep_until_opt(sleep_until) => {}
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Where due entries go: one release (one store write) per target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Target {
    topic: String,
    channel: Option<String>,
    incarnation: u64,
}

/// Releases due entries grouped by target, each group in due order.
async fn release(
    broker: &Broker,
    due: Vec<(DelayedKey, DelayedMessage)>,
) -> Result<(), crate::broker::TopicError> {
    let mut groups: Vec<(Target, Vec<(DelayedKey, StoredMessage)>)> = Vec::new();
    let mut index: HashMap<Target, usize> = HashMap::new();
    for (key, entry) in due {
        let target = Target {
            topic: entry.topic,
            channel: entry.channel,
            incarnation: entry.incarnation,
        };
        let at = *index.entry(target.clone()).or_insert_with(|| {
            groups.push((target, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push((key, entry.message));
    }
    for (target, entries) in groups {
        let Target {
            topic: topic_name,
            channel,
            incarnation,
        } = target;
        // Requeues made by an earlier channel of this name, deleted since,
        // are not for the channel that has the name now.
        let floor = match &channel {
            Some(name) => broker.store.requeue_floor(&topic_name, name)?,
            None => 0,
        };
        let (entries, stale): (Vec<_>, Vec<_>) =
            entries.into_iter().partition(|(key, _)| key.id >= floor);
        if !stale.is_empty() {
            let keys: Vec<_> = stale.into_iter().map(|(key, _)| key).collect();
            broker.store.drop_delayed(&keys).await?;
            tracing::debug!(topic = %topic_name, ?channel, count = keys.len(), "delayed requeues of a deleted channel dropped");
        }
        if entries.is_empty() {
            continue;
        }
        let count = entries.len() as u64;
        let target = broker
            .existing_topic(&topic_name)
            .ok()
            .filter(|topic| topic.incarnation == incarnation)
            .filter(|topic| {
                channel
                    .as_deref()
                    .is_none_or(|name| topic.existing_channel(name).is_some())
            });
        match target {
            Some(topic) => {
                topic
                    .release_delayed(channel.as_deref(), entries)
                    .await
                    .map_err(crate::broker::TopicError::from)?;
                broker
                    .delayed
                    .released(&topic_name, channel.as_deref(), count);
            }
            None => {
                // Its topic (or channel) was deleted since: its count went
                // with it, and nothing is left to deliver it to.
                let keys: Vec<_> = entries.into_iter().map(|(key, _)| key).collect();
                broker.store.drop_delayed(&keys).await?;
                tracing::debug!(topic = %topic_name, ?channel, count, "delayed entries of a deleted target dropped");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn due_times_round_up_to_the_batch_window() {
        let delayed = Delayed::new(Clock::new());
        let now = delayed.clock.now_ms();
        assert_eq!(
            delayed.due_ms(Duration::from_millis(250), Duration::ZERO),
            now + 250
        );
        let window = Duration::from_secs(60);
        let due = delayed.due_ms(Duration::from_millis(250), window);
        assert_eq!(due % 60_000, 0, "on a window boundary");
        assert!(
            due >= now + 250 && due < now + 250 + 60_000,
            "{due} vs {now}"
        );
        // Two delays in the same window share the due time.
        let other = delayed.due_ms(Duration::from_millis(251), window);
        assert!(
            other == due || (now + 250) % 60_000 == 59_999,
            "{other} vs {due}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_clock_follows_tokio_time() {
        let clock = Clock::new();
        let before = clock.now_ms();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_ms() - before, 5000);
        // Sleeping until a due time wakes no earlier than it.
        let due = before + 1000;
        let at = clock.instant_of(due);
        tokio::time::sleep_until(at).await;
        assert!(clock.now_ms() >= due);
    }

    #[test]
    fn counts_follow_schedules_releases_and_deletes() {
        let delayed = Delayed::new(Clock::new());
        let keys = |n: u64| {
            (0..n)
                .map(|id| DelayedKey { due_ms: 10, id })
                .collect::<Vec<_>>()
        };
        delayed.scheduled("t", None, &keys(3));
        delayed.scheduled("t", Some("c"), &keys(2));
        delayed.scheduled("u", None, &keys(1));
        assert_eq!(delayed.pending_for_topic("t"), 3);
        assert_eq!(delayed.pending_for_channel("t", "c"), 2);
        assert_eq!(delayed.pending_total("t"), 5);
        delayed.released("t", None, 2);
        assert_eq!(delayed.pending_for_topic("t"), 1);
        delayed.released("t", None, 5);
        assert_eq!(delayed.pending_for_topic("t"), 0, "never below zero");
        delayed.forget("t", Some("c"));
        assert_eq!(delayed.pending_total("t"), 0);
        delayed.forget("u", None);
        assert_eq!(delayed.pending_total("u"), 0);
    }

    #[test]
    fn a_write_below_the_cursor_resets_it() {
        let delayed = Delayed::new(Clock::new());
        let at = |due_ms, id| DelayedKey { due_ms, id };
        *delayed.cursor() = Cursor {
            after: Some(at(100, 5)),
            epoch: 0,
        };
        delayed.scheduled("t", None, &[at(200, 9)]);
        assert_eq!(delayed.cursor().after, Some(at(100, 5)), "above: kept");
        delayed.scheduled("t", None, &[at(100, 4)]);
        let cursor = *delayed.cursor();
        assert_eq!(cursor.after, None);
        assert_eq!(cursor.epoch, 1);
    }
}
