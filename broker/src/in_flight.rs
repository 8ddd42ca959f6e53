//! One consumer's in-flight messages and their timeout order, cheap on the
//! hot path. Every delivery adds a message and nearly every one is finished
//! soon after, in about the order it was delivered; a map of whole entries
//! plus a separate deadline queue cost two scattered cache misses per message.
//! (Each consumer of a channel has its own set: consumers' sessions run on
//! different threads, and a set shared between them moved its cache lines
//! from core to core on every delivery and FIN.)
//!
//! Here messages sit in a ring of slots in delivery order, each slot holding
//! the message with its deadline. A FIN empties its slot, and empty slots
//! leave from the front, so in-order FINs walk the ring's front as deliveries
//! fill its back: memory touched in sequence. A FIN of the front slot needs
//! no lookup at all; any other is found through an index (id -> position)
//! built lazily: a miss indexes the slots not yet indexed, scanning from
//! where the last scan stopped, so each slot is indexed at most once and
//! consumers that finish in order never pay for it. Deadlines are "delivery time + timeout",
//! so the slots' deadlines mostly rise with their positions and the earliest
//! is at the front; the few that do not (a consumer with a shorter timeout
//! than another's, a TOUCH) are kept in a small ordered side set.
//!
//! A message held long (TOUCHed for minutes) would keep every emptied slot
//! behind it; when empty slots outnumber live ones by enough, live slots at
//! the front move to the back, out of deadline order, so the ring stays
//! within a constant factor of what is in flight.

use std::collections::{BTreeSet, VecDeque};

use foldhash::HashMap;
use tokio::time::Instant;
use triage_protocol::{Message, MessageId};

/// Empty slots tolerated beyond twice the live ones before a compaction
/// (small in tests, so the model test reaches it).
const COMPACT_SLACK: usize = if cfg!(test) { 4 } else { 4096 };

/// A message out with a consumer.
#[derive(Debug)]
pub struct InFlight {
    pub msg: Message,
    pub deadline: Instant,
    pub delivered_at: Instant,
}

#[derive(Debug)]
struct Slot {
    /// `None` once the message left flight.
    entry: Option<InFlight>,
    /// Its deadline is in the side set rather than in position order.
    out_of_order: bool,
    /// It has an entry in the index.
    indexed: bool,
}

/// Message ids are unique among what a consumer has in flight (a message
/// leaves flight before it can be delivered again).
#[derive(Debug, Default)]
pub struct InFlightSet {
    /// Delivery order; the front is never an empty slot.
    slots: VecDeque<Slot>,
    /// Position of `slots[0]`; positions only grow.
    head: u64,
    /// Live slots.
    live: usize,
    /// id -> position of the live slots marked `indexed`.
    index: HashMap<MessageId, u64>,
    /// Every live slot before this position is indexed.
    indexed_to: u64,
    /// Deadlines not in position order, with their slot's position.
    out_of_order: BTreeSet<(Instant, u64)>,
    /// Every in-order live slot is at or after this position (advanced lazily).
    in_order_front: u64,
    /// The latest in-order deadline added: a later insert with an earlier
    /// deadline goes to the side set.
    last_in_order: Option<Instant>,
}

impl InFlightSet {
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds a delivered message.
    pub fn insert(&mut self, entry: InFlight) {
        self.compact();
        let pos = self.end();
        let in_order = self.last_in_order.is_none_or(|last| entry.deadline >= last);
        if in_order {
            self.last_in_order = Some(entry.deadline);
        } else {
            self.out_of_order.insert((entry.deadline, pos));
        }
        self.live += 1;
        self.slots.push_back(Slot {
            entry: Some(entry),
            out_of_order: !in_order,
            indexed: false,
        });
    }

    pub fn get(&mut self, id: &MessageId) -> Option<&InFlight> {
        let pos = self.find(id)?;
        self.slots[self.offset(pos)].entry.as_ref()
    }

    /// Takes `id` out of flight.
    pub fn remove(&mut self, id: &MessageId) -> Option<InFlight> {
        let pos = self.find(id)?;
        self.empty_slot(pos)
    }

    /// Gives `id` the deadline `deadline_for` computes from its entry
    /// (TOUCH). Returns false if it is not in flight.
    pub fn touch(
        &mut self,
        id: &MessageId,
        deadline_for: impl FnOnce(&InFlight) -> Instant,
    ) -> bool {
        let Some(pos) = self.find(id) else {
            return false;
        };
        let i = self.offset(pos);
        let slot = &mut self.slots[i];
        let Some(entry) = slot.entry.as_mut() else {
            return false;
        };
        if slot.out_of_order {
            self.out_of_order.remove(&(entry.deadline, pos));
        }
        entry.deadline = deadline_for(entry);
        slot.out_of_order = true;
        self.out_of_order.insert((entry.deadline, pos));
        true
    }

    /// The earliest deadline of a message in flight.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.first_deadline().map(|(deadline, _)| deadline)
    }

    /// Takes out the message with the earliest deadline if it is at or before `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<InFlight> {
        let (deadline, pos) = self.first_deadline()?;
        if deadline > now {
            return None;
        }
        self.empty_slot(pos)
    }

    /// Everything in flight, roughly in delivery order.
    pub fn iter(&self) -> impl Iterator<Item = &InFlight> {
        self.slots.iter().filter_map(|slot| slot.entry.as_ref())
    }

    /// Takes out everything, roughly in delivery order.
    pub fn drain(&mut self) -> Vec<InFlight> {
        let entries = std::mem::take(&mut self.slots)
            .into_iter()
            .filter_map(|slot| slot.entry)
            .collect();
        self.clear();
        entries
    }

    pub fn clear(&mut self) {
        *self = InFlightSet::default();
    }

    fn end(&self) -> u64 {
        self.head + self.slots.len() as u64
    }

    fn offset(&self, pos: u64) -> usize {
        (pos - self.head) as usize
    }

    /// The position of `id`'s slot: the front (a FIN in delivery order),
    /// else the index, else the slots not yet indexed, indexing them on the way.
    fn find(&mut self, id: &MessageId) -> Option<u64> {
        let front = self.slots.front()?.entry.as_ref()?;
        if front.msg.id == *id {
            return Some(self.head);
        }
        if let Some(&pos) = self.index.get(id) {
            return Some(pos);
        }
        self.indexed_to = self.indexed_to.max(self.head);
        while self.indexed_to < self.end() {
            let pos = self.indexed_to;
            self.indexed_to += 1;
            let i = self.offset(pos);
            let slot = &mut self.slots[i];
            let Some(entry) = slot.entry.as_ref() else {
                continue;
            };
            slot.indexed = true;
            self.index.insert(entry.msg.id, pos);
            if entry.msg.id == *id {
                return Some(pos);
            }
        }
        None
    }

    /// Empties the live slot at `pos` and drops empty slots from the front.
    fn empty_slot(&mut self, pos: u64) -> Option<InFlight> {
        let i = self.offset(pos);
        let slot = &mut self.slots[i];
        let entry = slot.entry.take()?;
        self.live -= 1;
        if slot.out_of_order {
            self.out_of_order.remove(&(entry.deadline, pos));
        }
        if slot.indexed {
            self.index.remove(&entry.msg.id);
        }
        self.drop_empty_front();
        if self.slots.is_empty() {
            self.last_in_order = None;
        }
        Some(entry)
    }

    fn drop_empty_front(&mut self) {
        while self.slots.front().is_some_and(|slot| slot.entry.is_none()) {
            self.slots.pop_front();
            self.head += 1;
        }
    }

    /// The earliest deadline and its slot's position.
    fn first_deadline(&mut self) -> Option<(Instant, u64)> {
        let in_order = self.first_in_order();
        let side = self.out_of_order.first().copied();
        match (in_order, side) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The first live in-order slot's deadline and position.
    fn first_in_order(&mut self) -> Option<(Instant, u64)> {
        self.in_order_front = self.in_order_front.max(self.head);
        loop {
            let slot = self.slots.get(self.offset(self.in_order_front))?;
            if let (Some(entry), false) = (&slot.entry, slot.out_of_order) {
                return Some((entry.deadline, self.in_order_front));
            }
            self.in_order_front += 1;
        }
    }

    /// Moves live slots from the front to the back until empty slots are
    /// within bounds; amortised over the removals that emptied them, a
    /// constant cost per message.
    fn compact(&mut self) {
        while self.slots.len() > 2 * self.live + COMPACT_SLACK {
            let Some(mut slot) = self.slots.pop_front() else {
                break;
            };
            let old = self.head;
            self.head += 1;
            let Some(entry) = slot.entry.as_ref() else {
                continue;
            };
            let new = self.end();
            if slot.out_of_order {
                self.out_of_order.remove(&(entry.deadline, old));
            }
            self.out_of_order.insert((entry.deadline, new));
            if slot.indexed {
                // Past `indexed_to` now: a scan finds it again.
                self.index.remove(&entry.msg.id);
            }
            slot.out_of_order = true;
            slot.indexed = false;
            self.slots.push_back(slot);
        }
        self.drop_empty_front();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap as StdHashMap;
    use std::time::Duration;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn entry(n: u64, base: Instant, deadline_ms: u64) -> InFlight {
        InFlight {
            msg: Message {
                id: MessageId::from_u64(n),
                timestamp_ns: n as i64,
                attempts: 1,
                body: Bytes::new(),
            },
            deadline: base + Duration::from_millis(deadline_ms),
            delivered_at: base,
        }
    }

    fn expire_all(set: &mut InFlightSet) -> Vec<u64> {
        let far = Instant::now() + Duration::from_secs(3600);
        std::iter::from_fn(|| set.pop_expired(far))
            .map(|e| e.msg.id.to_u64().unwrap())
            .collect()
    }

    #[test]
    fn messages_expire_in_deadline_order_whatever_the_insert_order() {
        let base = Instant::now();
        let mut set = InFlightSet::default();
        // In order, then one earlier (a shorter timeout), then a tie.
        for (n, ms) in [(1, 10), (2, 20), (3, 30), (4, 5), (5, 30), (6, 25)] {
            set.insert(entry(n, base, ms));
        }
        assert_eq!(set.next_deadline(), Some(base + Duration::from_millis(5)));
        assert_eq!(expire_all(&mut set), [4, 1, 2, 6, 3, 5]);
        assert!(set.is_empty());
    }

    #[test]
    fn nothing_expires_before_its_deadline() {
        let base = Instant::now();
        let mut set = InFlightSet::default();
        set.insert(entry(1, base, 10));
        assert!(set.pop_expired(base + Duration::from_millis(9)).is_none());
        assert_eq!(set.len(), 1);
        assert!(set.pop_expired(base + Duration::from_millis(10)).is_some());
    }

    #[test]
    fn a_touched_message_moves_to_its_new_deadline() {
        let base = Instant::now();
        let mut set = InFlightSet::default();
        for n in 1..=3 {
            set.insert(entry(n, base, n * 10));
        }
        assert!(set.touch(&MessageId::from_u64(1), |_| base
            + Duration::from_millis(25)));
        assert!(!set.touch(&MessageId::from_u64(9), |_| base));
        assert_eq!(expire_all(&mut set), [2, 1, 3]);
    }

    #[test]
    fn a_long_held_message_keeps_the_ring_bounded() {
        let base = Instant::now();
        let mut set = InFlightSet::default();
        set.insert(entry(0, base, 1_000_000));
        for n in 1..4 * COMPACT_SLACK as u64 {
            set.insert(entry(n, base, 1_000_000 + n));
            set.remove(&MessageId::from_u64(n)).unwrap();
            assert!(
                set.slots.len() <= 2 + COMPACT_SLACK + 1,
                "{}",
                set.slots.len()
            );
        }
        assert_eq!(set.len(), 1);
        assert_eq!(expire_all(&mut set), [0]);
    }

    /// The index points at live slots of the same id, and only at slots
    /// marked indexed; the live count and the front are right.
    fn check_invariants(set: &InFlightSet) {
        assert!(set.slots.front().is_none_or(|s| s.entry.is_some()));
        let live = set.slots.iter().filter(|s| s.entry.is_some()).count();
        assert_eq!(set.len(), live);
        for (id, &pos) in &set.index {
            assert!(pos >= set.head, "index entry before the ring");
            let slot = &set.slots[set.offset(pos)];
            assert!(slot.indexed);
            assert_eq!(slot.entry.as_ref().map(|e| e.msg.id), Some(*id));
        }
        let marked = set
            .slots
            .iter()
            .filter(|s| s.indexed && s.entry.is_some())
            .count();
        assert_eq!(marked, set.index.len());
    }

    #[test]
    fn a_message_moved_by_compaction_is_found_again() {
        let base = Instant::now();
        let mut set = InFlightSet::default();
        set.insert(entry(0, base, 1_000_000));
        set.insert(entry(1, base, 1_000_001));
        // A lookup past the front indexes both.
        assert!(set.touch(&MessageId::from_u64(1), |e| e.deadline));
        for n in 2..4 * COMPACT_SLACK as u64 {
            set.insert(entry(n, base, 1_000_000 + n));
            check_invariants(&set);
            set.remove(&MessageId::from_u64(n)).unwrap();
            check_invariants(&set);
        }
        assert_eq!(
            set.remove(&MessageId::from_u64(1)).map(|e| e.msg.id),
            Some(MessageId::from_u64(1))
        );
        assert_eq!(
            set.remove(&MessageId::from_u64(0)).map(|e| e.msg.id),
            Some(MessageId::from_u64(0))
        );
        assert!(set.is_empty());
    }

    /// One operation of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Insert the next id with a deadline this many ms from base.
        Insert(u64),
        Remove(u64),
        Touch(u64, u64),
        Expire(u64),
        Drain,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..100u64).prop_map(Op::Insert),
            4 => (0..64u64).prop_map(Op::Remove),
            1 => (0..64u64, 0..100u64).prop_map(|(n, ms)| Op::Touch(n, ms)),
            1 => (0..100u64).prop_map(Op::Expire),
            1 => Just(Op::Drain),
        ]
    }

    proptest! {
        /// Against a map of id -> deadline: the same messages are
        /// in flight, and expiry takes the earliest deadline each time.
        #[test]
        fn behaves_like_a_map_ordered_by_deadline(ops in proptest::collection::vec(op(), 0..300)) {
            let base = Instant::now();
            let ms = |n: u64| base + Duration::from_millis(n);
            let mut set = InFlightSet::default();
            let mut model: StdHashMap<u64, Instant> = StdHashMap::new();
            let mut next_id = 0u64;
            for op in ops {
                match op {
                    Op::Insert(d) => {
                        set.insert(entry(next_id, base, d));
                        model.insert(next_id, ms(d));
                        next_id += 1;
                    }
                    Op::Remove(n) => {
                        let got = set.remove(&MessageId::from_u64(n)).map(|e| e.deadline);
                        prop_assert_eq!(got, model.remove(&n));
                    }
                    Op::Touch(n, d) => {
                        let found = set.touch(&MessageId::from_u64(n), |_| ms(d));
                        prop_assert_eq!(found, model.contains_key(&n));
                        if let Some(t) = model.get_mut(&n) { *t = ms(d); }
                    }
                    Op::Expire(d) => {
                        let want = model.values().copied().min().filter(|&t| t <= ms(d));
                        let got = set.pop_expired(ms(d));
                        prop_assert_eq!(got.as_ref().map(|e| e.deadline), want);
                        if let Some(e) = got {
                            prop_assert_eq!(model.remove(&e.msg.id.to_u64().unwrap()), Some(e.deadline));
                        }
                    }
                    Op::Drain => {
                        let mut got: Vec<u64> = set.drain().iter().map(|e| e.msg.id.to_u64().unwrap()).collect();
                        let mut want: Vec<u64> = model.drain().map(|(k, _)| k).collect();
                        got.sort_unstable();
                        want.sort_unstable();
                        prop_assert_eq!(got, want);
                    }
                }
                prop_assert_eq!(set.len(), model.len());
                prop_assert_eq!(set.next_deadline(), model.values().copied().min());
                check_invariants(&set);
            }
        }
    }
}
