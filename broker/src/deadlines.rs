//! The timeout order of a channel's in-flight messages, cheap on the hot
//! path: every delivery adds an entry and every FIN would remove one, so an
//! ordered set costs two tree operations per message. Here a delivery
//! appends to a queue (deadlines mostly come in order: each is "now" plus the
//! consumer's timeout) and a FIN removes nothing. Entries of messages no
//! longer in flight, or touched to a new deadline, are left behind as stale
//! and dropped when they reach the front or when a compaction finds them;
//! the owner says which entries are live. Compaction keeps the entries within
//! a constant factor of the messages in flight, so memory stays bounded by
//! the consumers' RDY as before.

use std::collections::{BTreeSet, VecDeque};

use tokio::time::Instant;
use triage_protocol::MessageId;

/// Stale entries tolerated beyond twice the live ones before a compaction.
const COMPACT_SLACK: usize = 4096;

#[derive(Debug, Default)]
pub struct Deadlines {
    /// Non-decreasing deadlines in the order they were added.
    in_order: VecDeque<(Instant, MessageId)>,
    /// Deadlines earlier than the last one added when they came (a consumer
    /// with a shorter timeout than another's, TOUCH), kept sorted.
    out_of_order: BTreeSet<(Instant, MessageId)>,
}

impl Deadlines {
    pub fn push(&mut self, deadline: Instant, id: MessageId) {
        match self.in_order.back() {
            Some(&(last, _)) if deadline < last => {
                self.out_of_order.insert((deadline, id));
            }
            _ => self.in_order.push_back((deadline, id)),
        }
    }

    /// The earliest entry, live or stale.
    pub fn first(&self) -> Option<(Instant, MessageId)> {
        match (self.in_order.front(), self.out_of_order.first()) {
            (Some(a), Some(b)) => Some(*a.min(b)),
            (a, b) => a.or(b).copied(),
        }
    }

    /// Removes and returns the earliest entry, live or stale.
    pub fn pop_first(&mut self) -> Option<(Instant, MessageId)> {
        let from_queue = match (self.in_order.front(), self.out_of_order.first()) {
            (Some(a), Some(b)) => a <= b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if from_queue {
            self.in_order.pop_front()
        } else {
            self.out_of_order.pop_first()
        }
    }

    /// Drops stale entries from the front, so [`Deadlines::first`] is a
    /// live deadline worth waking up for.
    pub fn drop_stale_front(&mut self, is_live: impl Fn(Instant, &MessageId) -> bool) {
        while let Some((deadline, id)) = self.first() {
            if is_live(deadline, &id) {
                break;
            }
            self.pop_first();
        }
    }

    /// Drops every stale entry once they outnumber the live ones (`live` of
    /// them) by enough; amortised over the pushes that made them, this is a
    /// constant cost per message.
    pub fn compact(&mut self, live: usize, is_live: impl Fn(Instant, &MessageId) -> bool) {
        if self.len() <= 2 * live + COMPACT_SLACK {
            return;
        }
        self.in_order
            .retain(|(deadline, id)| is_live(*deadline, id));
        self.out_of_order
            .retain(|(deadline, id)| is_live(*deadline, id));
    }

    pub fn len(&self) -> usize {
        self.in_order.len() + self.out_of_order.len()
    }

    pub fn clear(&mut self) {
        self.in_order.clear();
        self.out_of_order.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;

    fn id(n: u64) -> MessageId {
        MessageId::from_u64(n)
    }

    #[test]
    fn entries_come_out_in_deadline_order_whatever_the_push_order() {
        let base = Instant::now();
        let mut deadlines = Deadlines::default();
        // In order, then one earlier (a shorter timeout), then a tie.
        for (n, ms) in [(1, 10), (2, 20), (3, 30), (4, 5), (5, 30), (6, 25)] {
            deadlines.push(base + Duration::from_millis(ms), id(n));
        }
        let mut order = Vec::new();
        while let Some((_, got)) = deadlines.pop_first() {
            order.push(got.to_u64().unwrap());
        }
        assert_eq!(order, [4, 1, 2, 6, 3, 5]);
        assert_eq!(deadlines.len(), 0);
    }

    #[test]
    fn stale_fronts_are_dropped_and_live_ones_kept() {
        let base = Instant::now();
        let mut deadlines = Deadlines::default();
        for n in 0..10 {
            deadlines.push(base + Duration::from_millis(n), id(n));
        }
        let live: HashSet<u64> = [3, 7].into();
        deadlines.drop_stale_front(|_, i| live.contains(&i.to_u64().unwrap()));
        assert_eq!(deadlines.first().map(|(_, i)| i), Some(id(3)));
        // The stale entries behind a live front stay until a compaction.
        assert_eq!(deadlines.len(), 7);
    }

    #[test]
    fn compaction_bounds_stale_entries_by_the_live_count() {
        let base = Instant::now();
        let mut deadlines = Deadlines::default();
        // One message stays in flight while many others come and go.
        deadlines.push(base, id(0));
        for n in 1..3 * COMPACT_SLACK as u64 {
            deadlines.push(base + Duration::from_micros(n), id(n));
            deadlines.compact(1, |_, i| *i == id(0));
            assert!(
                deadlines.len() <= 2 + COMPACT_SLACK + 1,
                "{}",
                deadlines.len()
            );
        }
        deadlines.drop_stale_front(|_, i| *i == id(0));
        assert_eq!(deadlines.pop_first(), Some((base, id(0))));
    }
}
