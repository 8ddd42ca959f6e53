//! A set of log seqs stored as runs of consecutive seqs. A channel's
//! outstanding messages (see `Backlog`) are nearly always one or a few runs:
//! seqs come in log order and are finished roughly in order. A tree of
//! single seqs paid an insert per published message and a removal per FIN,
//! and held every seq of a ten-million-message memory backlog; here the
//! common cases (the next seq after the last, the first seq of the first
//! run) touch one entry of a tiny map, and memory follows the number of
//! gaps, not of messages.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct SeqRuns {
    /// start -> end (exclusive) of each run; runs never touch or overlap.
    runs: BTreeMap<u64, u64>,
}

impl SeqRuns {
    pub fn insert(&mut self, seq: u64) {
        let Some(after) = seq.checked_add(1) else {
            return; // u64::MAX is never a seq (ids are a counter from 0).
        };
        let before = self.run_at_or_before(seq);
        if let Some((start, end)) = before {
            if seq < end {
                return; // already in
            }
            if seq == end {
                // Extends the run before it, and may join the one after.
                let joined_end = self.runs.remove(&after).unwrap_or(after);
                self.runs.insert(start, joined_end);
                return;
            }
        }
        let end = self.runs.remove(&after).unwrap_or(after);
        self.runs.insert(seq, end);
    }

    pub fn remove(&mut self, seq: u64) {
        let Some((start, end)) = self.run_at_or_before(seq) else {
            return;
        };
        if seq >= end {
            return; // not in
        }
        if seq == start {
            self.runs.remove(&start);
        } else {
            self.runs.insert(start, seq);
        }
        if seq + 1 < end {
            self.runs.insert(seq + 1, end);
        }
    }

    /// The smallest seq in the set.
    pub fn first(&self) -> Option<u64> {
        self.runs.first_key_value().map(|(start, _)| *start)
    }

    pub fn clear(&mut self) {
        self.runs.clear();
    }

    fn run_at_or_before(&self, seq: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=seq)
            .next_back()
            .map(|(start, end)| (*start, *end))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn contents(set: &SeqRuns) -> Vec<u64> {
        set.runs.iter().flat_map(|(s, e)| *s..*e).collect()
    }

    #[test]
    fn in_order_traffic_stays_one_run() {
        let mut set = SeqRuns::default();
        for seq in 100..1100 {
            set.insert(seq);
        }
        for seq in 100..600 {
            set.remove(seq);
        }
        assert_eq!(set.runs.len(), 1);
        assert_eq!(set.first(), Some(600));
        set.remove(800); // a FIN out of order splits it
        assert_eq!(set.runs.len(), 2);
        set.insert(800);
        assert_eq!(set.runs.len(), 1);
    }

    proptest! {
        /// Whatever the operations, the set holds exactly what a set of
        /// single seqs would, and its runs never touch.
        #[test]
        fn behaves_like_a_set_of_seqs(ops in prop::collection::vec((any::<bool>(), 0u64..64), 0..400)) {
            let mut runs = SeqRuns::default();
            let mut model = BTreeSet::new();
            for (insert, seq) in ops {
                if insert {
                    runs.insert(seq);
                    model.insert(seq);
                } else {
                    runs.remove(seq);
                    model.remove(&seq);
                }
                prop_assert_eq!(contents(&runs), model.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(runs.first(), model.first().copied());
                let mut last_end = None;
                for (start, end) in &runs.runs {
                    prop_assert!(start < end);
                    if let Some(last) = last_end {
                        prop_assert!(last < *start, "runs {last} and {start} touch");
                    }
                    last_end = Some(*end);
                }
            }
        }
    }
}
