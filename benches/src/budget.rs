//! A message budget shared by the connections of one group, so a run with
//! `--count N` publishes (or counts as received) exactly N whatever the
//! number of connections.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Budget {
    remaining: AtomicU64,
}

impl Budget {
    /// `None`: no limit (the run's duration still bounds it).
    pub fn new(limit: Option<u64>) -> Budget {
        Budget {
            remaining: AtomicU64::new(limit.unwrap_or(u64::MAX)),
        }
    }

    /// Takes up to `wanted` from the budget; returns how many were granted
    /// (0 once it is spent).
    pub fn claim(&self, wanted: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                granted = left.min(wanted);
                Some(left - granted)
            });
        granted
    }

    pub fn is_spent(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_never_exceed_the_limit() {
        let budget = Budget::new(Some(250));
        assert_eq!(budget.claim(100), 100);
        assert_eq!(budget.claim(100), 100);
        assert_eq!(budget.claim(100), 50);
        assert!(budget.is_spent());
        assert_eq!(budget.claim(1), 0);
    }

    #[test]
    fn no_limit_means_practically_endless() {
        let budget = Budget::new(None);
        assert_eq!(budget.claim(1_000_000), 1_000_000);
        assert!(!budget.is_spent());
    }
}
