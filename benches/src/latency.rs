//! Latency recording: an HDR histogram in nanoseconds (3 significant digits,
//! 1 ns to 1 h), one per connection task so recording takes no lock, merged
//! when the tasks finish; and the summary a report prints.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value tracked; longer latencies are clamped to it.
const MAX_TRACKABLE_NS: u64 = 3_600_000_000_000;

#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        Latencies {
            histogram: Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3)
                .expect("1 ns .. 1 h at 3 significant digits are valid bounds"),
        }
    }

    /// Records one latency; values out of range are clamped.
    pub fn record(&mut self, ns: u64) {
        self.histogram.saturating_record(ns.max(1));
    }

    /// Adds another recorder's values (same bounds, so this cannot fail).
    pub fn merge(&mut self, other: &Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms with the same bounds always merge");
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The latency at `quantile` (0.0..=1.0), in nanoseconds.
    pub fn at_quantile(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        let empty = self.count() == 0;
        let q = |quantile: f64| {
            if empty {
                0.0
            } else {
                us(self.at_quantile(quantile))
            }
        };
        LatencySummary {
            count: self.count(),
            min_us: if empty { 0.0 } else { us(self.histogram.min()) },
            mean_us: if empty {
                0.0
            } else {
                self.histogram.mean() / 1000.0
            },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if empty { 0.0 } else { us(self.histogram.max()) },
        }
    }
}

/// Percentiles in microseconds, as the JSON report and the summary show them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl LatencySummary {
    /// `p50 0.41 ms  p90 ...` for the terminal.
    pub fn one_line(&self) -> String {
        let ms = |us: f64| format!("{:.3} ms", us / 1000.0);
        format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_merge_adds_counts() {
        let mut a = Latencies::new();
        let mut b = Latencies::new();
        for ns in 1..=1000u64 {
            a.record(ns * 1000);
            b.record(ns * 2000);
        }
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 2000);
        assert!(s.min_us <= s.p50_us && s.p50_us <= s.p90_us);
        assert!(s.p90_us <= s.p99_us && s.p99_us <= s.p999_us && s.p999_us <= s.max_us);
        assert!((s.max_us - 2000.0).abs() < 2.0, "{s:?}");
    }

    #[test]
    fn an_empty_recorder_summarises_to_zeros() {
        let s = Latencies::new().summary();
        assert_eq!((s.count, s.p99_us, s.max_us), (0, 0.0, 0.0));
    }

    #[test]
    fn zero_and_huge_values_are_clamped_not_lost() {
        let mut l = Latencies::new();
        l.record(0);
        l.record(u64::MAX);
        assert_eq!(l.count(), 2);
    }
}
