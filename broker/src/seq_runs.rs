//! A set of log seqs stored as runs of consecutive seqs. A channel's
//! outstanding messages (see `Backlog`) are nearly always one or a few runs:
//! seqs come in log order and are finished roughly in order. A tree of
//! single seqs paid an insert per published message and a removal per FIN,
//! and held every seq of a ten-million-message memory backlog; here the
//! common cases (the next seq after the last, the first seq of the only
//! run) change one pair of numbers, and memory follows the number of gaps,
//! not of messages.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct SeqRuns {
    /// start -> end (exclusive) of each run below the last; runs never
    /// touch or overlap.
    earlier: BTreeMap<u64, u64>,
    /// The highest run, kept out of the map: publishing the next seq, and
    /// finishing the first seq while it is the only run, change it in place
    /// without a tree operation. `None` only when the set is empty.
    last: Option<(u64, u64)>,
}

impl SeqRuns {
    pub fn insert(&mut self, seq: u64) {
        let Some(after) = seq.checked_add(1) else {
            return; // u64::MAX is never a seq (ids are a counter from 0).
        };
        let Some((start, end)) = self.last else {
            self.last = Some((seq, after));
            return;
        };
        if seq > end {
            self.earlier.insert(start, end);
            self.last = Some((seq, after));
        } else if seq == end {
            self.last = Some((start, after));
        } else if seq >= start {
            // already in
        } else if after == start {
            // Extends the last run down, and may join the run before it.
            let joined = match self.earlier.last_key_value() {
                Some((&before, &before_end)) if before_end == seq => {
                    self.earlier.pop_last();
                    before
                }
                _ => seq,
            };
            self.last = Some((joined, end));
        } else {
            insert_into(&mut self.earlier, seq, after);
        }
    }

    pub fn remove(&mut self, seq: u64) {
        let Some((start, end)) = self.last else {
            return;
        };
        if seq >= end {
            return; // not in
        }
        if seq < start {
            remove_from(&mut self.earlier, seq);
        } else if seq == start {
            self.last = if seq + 1 == end {
                self.earlier.pop_last()
            } else {
                Some((seq + 1, end))
            };
        } else if seq + 1 == end {
            self.last = Some((start, seq));
        } else {
            self.earlier.insert(start, seq);
            self.last = Some((seq + 1, end));
        }
    }

    /// The smallest seq in the set.
    pub fn first(&self) -> Option<u64> {
        self.earlier
            .first_key_value()
            .map(|(start, _)| *start)
            .or(self.last.map(|(start, _)| start))
    }

    pub fn clear(&mut self) {
        self.earlier.clear();
        self.last = None;
    }
}

/// Adds `seq` (`after` = seq + 1) to a map of runs, joining neighbours.
fn insert_into(runs: &mut BTreeMap<u64, u64>, seq: u64, after: u64) {
    if let Some((start, end)) = run_at_or_before(runs, seq) {
        if seq < end {
            return; // already in
        }
        if seq == end {
            // Extends the run before it, and may join the one after.
            let joined_end = runs.remove(&after).unwrap_or(after);
            runs.insert(start, joined_end);
            return;
        }
    }
    let end = runs.remove(&after).unwrap_or(after);
    runs.insert(seq, end);
}

/// Takes `seq` out of a map of runs, splitting its run.
fn remove_from(runs: &mut BTreeMap<u64, u64>, seq: u64) {
    let Some((start, end)) = run_at_or_before(runs, seq) else {
        return;
    };
    if seq >= end {
        return; // not in
    }
    if seq == start {
        runs.remove(&start);
    } else {
        runs.insert(start, seq);
    }
    if seq + 1 < end {
        runs.insert(seq + 1, end);
    }
}

fn run_at_or_before(runs: &BTreeMap<u64, u64>, seq: u64) -> Option<(u64, u64)> {
    runs.range(..=seq)
        .next_back()
        .map(|(start, end)| (*start, *end))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn runs(set: &SeqRuns) -> Vec<(u64, u64)> {
        set.earlier
            .iter()
            .map(|(s, e)| (*s, *e))
            .chain(set.last)
            .collect()
    }

    fn contents(set: &SeqRuns) -> Vec<u64> {
        runs(set).into_iter().flat_map(|(s, e)| s..e).collect()
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
        assert_eq!(runs(&set), [(600, 1100)]);
        assert!(set.earlier.is_empty(), "the one run stays out of the tree");
        assert_eq!(set.first(), Some(600));
        set.remove(800); // a FIN out of order splits it
        assert_eq!(runs(&set), [(600, 800), (801, 1100)]);
        set.insert(800);
        assert_eq!(runs(&set), [(600, 1100)]);
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
                for (start, end) in super::tests::runs(&runs) {
                    prop_assert!(start < end);
                    if let Some(last) = last_end {
                        prop_assert!(last < start, "runs {last} and {start} touch");
                    }
                    last_end = Some(end);
                }
                prop_assert!(runs.last.is_some() || runs.earlier.is_empty());
            }
        }
    }
}
