//! A persistent channel's view of its topic's log: which messages it holds
//! in memory, where its on-disk backlog starts, and what it has finished.
//!
//! A persistent channel keeps at most a window of messages in memory (the
//! `mem_queue_size` bound); the rest of its backlog stays in the store and
//! is read back in batches as consumers make room, so memory does not grow
//! with the backlog. The topic releases messages strictly in log order (see
//! `Topic::publish`), which makes one cursor enough: every seq below it is
//! loaded, finished or a gap left by a failed write; every seq at or past it
//! is either not released yet or waiting on disk. A paused topic stops
//! releasing, so refills stop at the pause point too.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use triage_protocol::{Message, MessageId};

use crate::seq_runs::SeqRuns;
use crate::store::StoredMessage;

#[derive(Debug)]
pub struct Backlog {
    /// Seqs queued, deferred or in flight in memory.
    outstanding: SeqRuns,
    /// The next seq not loaded into memory.
    cursor: u64,
    /// Messages at or past `cursor` wait on disk; refills load them.
    behind: bool,
    /// Seqs at or past the cursor that refills skip: FIN marks found at
    /// recovery, and deferred messages taken into memory out of order.
    finished_on_disk: HashSet<u64>,
    /// FINs not yet written to the store.
    finished: Vec<u64>,
    /// The topic's release point: every seq below it may be delivered (it is
    /// durable, or its write failed). Shared with the topic.
    released: Arc<AtomicU64>,
}

/// What a refill should read: up to `limit` log entries from `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillPlan {
    pub from: u64,
    pub limit: usize,
    /// The release point before the read: every durable seq below it is in
    /// the log, so a read that comes back short has seen all of them.
    pub released: u64,
}

impl Backlog {
    /// A new channel that sees messages from `start` on, as they are released.
    pub fn new(start: u64, released: Arc<AtomicU64>) -> Backlog {
        Backlog {
            outstanding: SeqRuns::default(),
            cursor: start,
            behind: false,
            finished_on_disk: HashSet::new(),
            finished: Vec::new(),
            released,
        }
    }

    /// A channel whose messages from `start` on wait on disk, less the FIN
    /// marks in `finished_on_disk`: one coming back from the store, or the
    /// first channel of a topic that held messages while it had none.
    pub fn on_disk_from(
        start: u64,
        finished_on_disk: HashSet<u64>,
        released: Arc<AtomicU64>,
    ) -> Backlog {
        Backlog {
            behind: true,
            finished_on_disk,
            ..Backlog::new(start, released)
        }
    }

    /// A message released by the topic: true if it goes into memory now,
    /// false if it stays on disk (already loaded, or no room in the window).
    pub fn admit(&mut self, seq: u64, in_memory: usize, window: usize) -> bool {
        if seq < self.cursor {
            return false;
        }
        if self.behind || in_memory >= window {
            self.behind = true;
            return false;
        }
        self.cursor = seq + 1;
        self.outstanding.insert(seq);
        true
    }

    /// A message that must go into memory whatever the window: a deferred
    /// one (DPUB; its due time lives only in memory), one restored at start,
    /// or a memory-tier message that was never written. A refill that meets
    /// it on disk skips it.
    pub fn admit_in_memory(&mut self, seq: u64) -> bool {
        if seq < self.cursor {
            return false;
        }
        if !self.behind && seq > self.cursor && self.cursor < self.released.load(Ordering::Acquire)
        {
            // Released messages below `seq` were not loaded: read them from disk.
            self.behind = true;
        }
        if self.behind {
            self.finished_on_disk.insert(seq);
        } else {
            self.cursor = seq + 1;
        }
        self.outstanding.insert(seq);
        true
    }

    pub fn is_behind(&self) -> bool {
        self.behind
    }

    /// Whether the on-disk backlog should be read now: refill at half a window.
    pub fn refill_plan(&self, in_memory: usize, window: usize) -> Option<RefillPlan> {
        (self.behind && in_memory < window.div_ceil(2)).then(|| RefillPlan {
            from: self.cursor,
            limit: window - in_memory,
            released: self.released.load(Ordering::Acquire),
        })
    }

    /// Takes a refill's read into memory; returns the messages to queue.
    pub fn apply_refill(
        &mut self,
        plan: RefillPlan,
        entries: Vec<(u64, StoredMessage)>,
    ) -> Vec<Message> {
        if plan.from != self.cursor || !self.behind {
            // Emptied (or refilled) meanwhile: this read is stale.
            return Vec::new();
        }
        let mut at_end = entries.len() < plan.limit;
        let mut loaded = Vec::with_capacity(entries.len());
        for (seq, stored) in entries {
            if seq >= plan.released {
                // Written but not released yet (a paused topic, or an earlier
                // publish still being written): not for this channel yet.
                at_end = true;
                break;
            }
            self.cursor = seq + 1;
            if self.finished_on_disk.remove(&seq) {
                continue;
            }
            self.outstanding.insert(seq);
            loaded.push(Message {
                timestamp_ns: stored.timestamp_ns,
                attempts: stored.attempts,
                id: MessageId::from_u64(seq),
                body: stored.body,
            });
        }
        if at_end {
            // Nothing durable below the release point is left unread.
            self.cursor = self.cursor.max(plan.released);
            let cursor = self.cursor;
            self.finished_on_disk.retain(|&seq| seq >= cursor);
            // Messages released during the read were not admitted; catch up
            // with another read unless there were none.
            self.behind = self.cursor < self.released.load(Ordering::Acquire);
        }
        loaded
    }

    /// The topic released messages without handing them over (it was
    /// paused): read them from disk.
    pub fn catch_up(&mut self) {
        if self.cursor < self.released.load(Ordering::Acquire) {
            self.behind = true;
        }
    }

    /// A message released for another channel only (a delayed requeue):
    /// this channel treats it as finished. `in_order`: it is being handed
    /// over now, in log order, rather than held on disk for later.
    pub fn skip(&mut self, seq: u64, in_order: bool) {
        if seq < self.cursor {
            return;
        }
        if in_order && !self.behind && seq == self.cursor {
            self.cursor = seq + 1;
        } else {
            // A refill that meets it on disk passes over it.
            self.finished_on_disk.insert(seq);
        }
    }

    pub fn finish(&mut self, seq: u64) {
        self.outstanding.remove(seq);
        self.finished.push(seq);
    }

    /// Every seq below it is finished.
    pub fn low_watermark(&self) -> u64 {
        self.outstanding
            .first()
            .unwrap_or(self.cursor)
            .min(self.cursor)
    }

    pub fn take_finished(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.finished)
    }

    pub fn restore_finished(&mut self, finished: Vec<u64>) {
        self.finished.extend(finished);
    }

    /// `/channel/empty`: everything released so far counts as finished.
    pub fn empty(&mut self) {
        self.outstanding.clear();
        self.finished.clear();
        self.finished_on_disk.clear();
        self.cursor = self.cursor.max(self.released.load(Ordering::Acquire));
        self.behind = false;
    }

    /// Messages waiting on disk (approximate: failed writes and FIN marks
    /// found at recovery are counted too), for `/stats`' `backend_depth`.
    pub fn on_disk(&self) -> u64 {
        if self.behind {
            self.released
                .load(Ordering::Acquire)
                .saturating_sub(self.cursor)
        } else {
            0
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn stored(range: std::ops::Range<u64>) -> Vec<(u64, StoredMessage)> {
        range
            .map(|s| {
                let body = Bytes::from(s.to_string());
                (
                    s,
                    StoredMessage {
                        timestamp_ns: 1,
                        attempts: 0,
                        body,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn admits_within_the_window_then_falls_behind() {
        let released = Arc::new(AtomicU64::new(0));
        let mut backlog = Backlog::new(0, released.clone());
        assert!(backlog.admit(0, 0, 2));
        assert!(backlog.admit(1, 1, 2));
        assert!(!backlog.admit(2, 2, 2), "window full");
        // Once behind, later messages stay on disk even if room appears,
        // so they are read back in order.
        assert!(!backlog.admit(3, 0, 2));
        released.store(4, Ordering::Release);
        assert_eq!(backlog.low_watermark(), 0);
        let plan = backlog.refill_plan(0, 2).unwrap();
        assert_eq!((plan.from, plan.limit), (2, 2));
        assert_eq!(backlog.apply_refill(plan, stored(2..4)).len(), 2);
        // A full read: not known to be at the end yet.
        let plan = backlog.refill_plan(0, 2).unwrap();
        assert_eq!(plan.from, 4);
        assert!(backlog.apply_refill(plan, Vec::new()).is_empty());
        assert!(backlog.refill_plan(0, 2).is_none(), "caught up");
        assert!(backlog.admit(4, 0, 2), "admits again once caught up");
    }

    #[test]
    fn a_release_during_a_read_is_caught_up_with() {
        let released = Arc::new(AtomicU64::new(3));
        let mut backlog = Backlog::on_disk_from(0, HashSet::new(), released.clone());
        let plan = backlog.refill_plan(0, 10).unwrap();
        // Seq 3 is released (and not admitted: behind) while the read runs.
        released.store(4, Ordering::Release);
        assert!(!backlog.admit(3, 0, 10));
        assert_eq!(backlog.apply_refill(plan, stored(0..3)).len(), 3);
        let plan = backlog
            .refill_plan(3, 10)
            .expect("still behind: seq 3 is on disk only");
        assert_eq!(plan.from, 3);
    }

    #[test]
    fn recovered_marks_are_skipped_and_a_gap_is_passed() {
        let released = Arc::new(AtomicU64::new(10));
        let mut backlog = Backlog::on_disk_from(0, [1, 2].into_iter().collect(), released);
        let plan = backlog.refill_plan(0, 100).unwrap();
        // Seqs 5..10 failed to write: the log ends at 4.
        let loaded = backlog.apply_refill(plan, stored(0..5));
        let seqs: Vec<_> = loaded.iter().map(|m| m.id.to_u64().unwrap()).collect();
        assert_eq!(seqs, vec![0, 3, 4]);
        assert!(backlog.refill_plan(0, 100).is_none());
        backlog.finish(0);
        backlog.finish(3);
        assert_eq!(backlog.low_watermark(), 4);
        assert_eq!(backlog.take_finished(), vec![0, 3]);
    }

    #[test]
    fn refills_stop_at_the_release_point_and_catch_up_after() {
        // A paused topic: 10 messages written, 4 released.
        let released = Arc::new(AtomicU64::new(4));
        let mut backlog = Backlog::on_disk_from(0, HashSet::new(), released.clone());
        let plan = backlog.refill_plan(0, 100).unwrap();
        assert_eq!(
            backlog.apply_refill(plan, stored(0..10)).len(),
            4,
            "nothing past the pause point"
        );
        assert!(backlog.refill_plan(0, 100).is_none());
        // Unpause: the rest is released, and the channel reads it.
        released.store(10, Ordering::Release);
        backlog.catch_up();
        let plan = backlog.refill_plan(0, 100).unwrap();
        assert_eq!(plan.from, 4);
        assert_eq!(backlog.apply_refill(plan, stored(4..10)).len(), 6);
        assert!(backlog.refill_plan(0, 100).is_none());
    }

    #[test]
    fn a_deferred_message_goes_into_memory_and_is_skipped_on_disk() {
        let released = Arc::new(AtomicU64::new(3));
        let mut backlog = Backlog::on_disk_from(0, HashSet::new(), released);
        assert!(backlog.admit_in_memory(2));
        assert_eq!(backlog.low_watermark(), 0);
        let plan = backlog.refill_plan(1, 10).unwrap();
        let seqs: Vec<_> = backlog
            .apply_refill(plan, stored(0..3))
            .iter()
            .map(|m| m.id.to_u64().unwrap())
            .collect();
        assert_eq!(seqs, vec![0, 1], "seq 2 is already in memory");
    }

    #[test]
    fn taking_a_later_message_into_memory_does_not_skip_unread_ones() {
        // Unpaused: 0..5 released but not admitted; a held message 7 comes in.
        let released = Arc::new(AtomicU64::new(5));
        let mut backlog = Backlog::new(0, released);
        assert!(backlog.admit_in_memory(7));
        let plan = backlog.refill_plan(1, 10).expect("0..5 must still be read");
        assert_eq!(plan.from, 0);
        assert_eq!(backlog.low_watermark(), 0);
    }

    #[test]
    fn empty_skips_the_whole_backlog() {
        let released = Arc::new(AtomicU64::new(50));
        let mut backlog = Backlog::on_disk_from(0, HashSet::new(), released);
        backlog.empty();
        assert!(backlog.refill_plan(0, 10).is_none());
        assert_eq!(backlog.low_watermark(), 50);
        assert!(!backlog.admit(49, 0, 10));
        assert!(backlog.admit(50, 0, 10));
    }
}
