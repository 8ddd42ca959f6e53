//! A sliding window of recent handling times and message ages, and their p99.
//!
//! Pure: every method takes the current instant from its caller, so tests
//! drive it with explicit timestamps and the consumer with the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Which samples count: at most `max_samples` of the latest, and (when set)
/// only those recorded within `max_age` of now. Both bounds together keep the
/// window small under load and fresh when traffic stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyWindow {
    pub max_samples: usize,
    pub max_age: Option<Duration>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            max_samples: 1000,
            max_age: Some(Duration::from_secs(30)),
        }
    }
}

/// One handled message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When handling finished.
    pub at: Instant,
    /// How long the handler ran.
    pub handling: Duration,
    /// How old the message was when it arrived (now minus its publish timestamp).
    pub age: Duration,
}

/// The p99s over the window at one instant; `None` when the window is empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub samples: usize,
    pub handling_p99: Option<Duration>,
    pub age_p99: Option<Duration>,
}

/// Which p99 the degrade controller is fed; defined with the config file it is read from.
pub use triage_config::worker::LatencySignal;

impl LatencySnapshot {
    /// The value `signal` selects; an empty window reads as zero (nothing is slow).
    pub fn signal(&self, signal: LatencySignal) -> Duration {
        let handling = self.handling_p99.unwrap_or_default();
        let age = self.age_p99.unwrap_or_default();
        match signal {
            LatencySignal::Handling => handling,
            LatencySignal::Age => age,
            LatencySignal::Worst => handling.max(age),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LatencyMonitor {
    window: LatencyWindow,
    /// Oldest first; samples arrive in (nearly) time order, so expiry pops the front.
    samples: VecDeque<Sample>,
}

impl LatencyMonitor {
    pub fn new(window: LatencyWindow) -> Self {
        let window = LatencyWindow {
            // A window that holds nothing would report nothing, ever.
            max_samples: window.max_samples.max(1),
            ..window
        };
        LatencyMonitor {
            window,
            samples: VecDeque::with_capacity(window.max_samples.min(4096)),
        }
    }

    pub fn record(&mut self, sample: Sample) {
        while self.samples.len() >= self.window.max_samples {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// Drops samples older than the window's `max_age` at `now`.
    pub fn expire(&mut self, now: Instant) {
        let Some(max_age) = self.window.max_age else {
            return;
        };
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > max_age)
        {
            self.samples.pop_front();
        }
    }

    /// Expires old samples, then computes both p99s.
    pub fn snapshot(&mut self, now: Instant) -> LatencySnapshot {
        self.expire(now);
        let mut handling: Vec<Duration> = self.samples.iter().map(|s| s.handling).collect();
        let mut age: Vec<Duration> = self.samples.iter().map(|s| s.age).collect();
        LatencySnapshot {
            samples: self.samples.len(),
            handling_p99: percentile(&mut handling, 0.99),
            age_p99: percentile(&mut age, 0.99),
        }
    }
}

/// The nearest-rank percentile `q` (0..=1) of `values`, which it sorts.
/// `None` for no values.
pub fn percentile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    // Nearest rank: the smallest value with at least q of all values at or below it.
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(at: Instant, handling: u64, age: u64) -> Sample {
        Sample {
            at,
            handling: ms(handling),
            age: ms(age),
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert_eq!(percentile(&mut [], 0.99), None);
        assert_eq!(percentile(&mut [ms(7)], 0.99), Some(ms(7)));
        let mut hundred: Vec<Duration> = (1..=100).rev().map(ms).collect();
        assert_eq!(percentile(&mut hundred, 0.99), Some(ms(99)));
        assert_eq!(percentile(&mut hundred, 0.5), Some(ms(50)));
        assert_eq!(percentile(&mut hundred, 1.0), Some(ms(100)));
        assert_eq!(percentile(&mut hundred, 0.0), Some(ms(1)));
        // With fewer than 100 values, p99 is the maximum.
        let mut ten: Vec<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&mut ten, 0.99), Some(ms(10)));
    }

    #[test]
    fn window_by_count_keeps_the_latest() {
        let t0 = Instant::now();
        let mut monitor = LatencyMonitor::new(LatencyWindow {
            max_samples: 3,
            max_age: None,
        });
        for (i, handling) in [900, 10, 20, 30].into_iter().enumerate() {
            monitor.record(sample(t0 + ms(i as u64), handling, 5));
        }
        let snap = monitor.snapshot(t0 + Duration::from_secs(3600));
        assert_eq!(snap.samples, 3);
        assert_eq!(
            snap.handling_p99,
            Some(ms(30)),
            "the 900 ms sample fell out"
        );
        assert_eq!(snap.age_p99, Some(ms(5)));
    }

    #[test]
    fn window_by_time_forgets_old_samples() {
        let t0 = Instant::now();
        let mut monitor = LatencyMonitor::new(LatencyWindow {
            max_samples: 100,
            max_age: Some(Duration::from_secs(10)),
        });
        monitor.record(sample(t0, 800, 0));
        monitor.record(sample(t0 + Duration::from_secs(5), 20, 0));
        assert_eq!(
            monitor.snapshot(t0 + ms(10_000)).handling_p99,
            Some(ms(800))
        );
        assert_eq!(monitor.snapshot(t0 + ms(10_001)).handling_p99, Some(ms(20)));
        let empty = monitor.snapshot(t0 + Duration::from_secs(16));
        assert_eq!(empty, LatencySnapshot::default());
        assert_eq!(empty.signal(LatencySignal::Worst), Duration::ZERO);
    }

    #[test]
    fn signal_picks_handling_age_or_the_worse() {
        let snap = LatencySnapshot {
            samples: 1,
            handling_p99: Some(ms(10)),
            age_p99: Some(ms(40)),
        };
        assert_eq!(snap.signal(LatencySignal::Handling), ms(10));
        assert_eq!(snap.signal(LatencySignal::Age), ms(40));
        assert_eq!(snap.signal(LatencySignal::Worst), ms(40));
    }

    #[test]
    fn a_zero_sized_window_still_holds_one_sample() {
        let t0 = Instant::now();
        let mut monitor = LatencyMonitor::new(LatencyWindow {
            max_samples: 0,
            max_age: None,
        });
        monitor.record(sample(t0, 1, 1));
        monitor.record(sample(t0, 2, 2));
        assert_eq!(monitor.snapshot(t0).handling_p99, Some(ms(2)));
    }
}
