//! The degrade controller: turns a latency p99 into a level, with hysteresis.
//!
//! A level is entered as soon as the p99 passes its entry threshold, and left
//! (one level at a time) only after the p99 has stayed below that level's
//! recovery threshold for `hold`. Entering fast protects urgent work at once;
//! leaving slowly keeps a worker whose latency hovers around a threshold from
//! flapping, which would make the broker and every listener of
//! `_triage.backpressure` flap with it.
//!
//! Pure: [`DegradeController::observe`] takes the instant from its caller.

use std::time::{Duration, Instant};

/// How loaded the worker is; sent to the broker as `BACKPRESSURE <level>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    #[default]
    Normal = 0,
    /// The broker stops sending delayed-tier (batch) work.
    Degraded = 1,
    /// The broker stops sending persistent-tier work too; only the memory tier flows.
    Overloaded = 2,
}

impl Level {
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The level one step less loaded (`Normal` stays `Normal`).
    pub fn down(self) -> Level {
        match self {
            Level::Overloaded => Level::Degraded,
            Level::Degraded | Level::Normal => Level::Normal,
        }
    }
}

/// The controller's thresholds; defined with the config file they are read from.
pub use triage_config::worker::DegradeConfig;

/// A change of level, as [`DegradeController::observe`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Level,
    pub to: Level,
    pub at: Instant,
}

#[derive(Debug, Clone)]
pub struct DegradeController {
    config: DegradeConfig,
    level: Level,
    /// Since when the p99 has been below the current level's recovery threshold.
    calm_since: Option<Instant>,
    transitions: u64,
    /// Transitions by `[from][to]` level.
    between: [[u64; 3]; 3],
}

impl DegradeController {
    pub fn new(config: DegradeConfig) -> Self {
        DegradeController {
            config,
            level: Level::Normal,
            calm_since: None,
            transitions: 0,
            between: [[0; 3]; 3],
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// How many transitions there have been so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// How many transitions went from `from` to `to`.
    pub fn transitions_between(&self, from: Level, to: Level) -> u64 {
        self.between[usize::from(from.as_u8())][usize::from(to.as_u8())]
    }

    /// Feeds the p99 seen at `now`; returns the transition it causes, if any.
    pub fn observe(&mut self, now: Instant, p99: Duration) -> Option<Transition> {
        let pressed = if p99 > self.config.overload_threshold {
            Level::Overloaded
        } else if p99 > self.config.threshold {
            Level::Degraded
        } else {
            Level::Normal
        };
        if pressed > self.level {
            return Some(self.move_to(pressed, now));
        }
        let recover_below = match self.level {
            Level::Normal => return None,
            Level::Degraded => self.config.recover_below,
            Level::Overloaded => self.config.threshold,
        };
        if p99 >= recover_below {
            self.calm_since = None;
            return None;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.config.hold {
            return None;
        }
        Some(self.move_to(self.level.down(), now))
    }

    fn move_to(&mut self, to: Level, at: Instant) -> Transition {
        let from = std::mem::replace(&mut self.level, to);
        // The next step down needs a whole `hold` of calm at the new level.
        self.calm_since = None;
        self.transitions += 1;
        self.between[usize::from(from.as_u8())][usize::from(to.as_u8())] += 1;
        Transition { from, to, at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn config() -> DegradeConfig {
        DegradeConfig {
            threshold: ms(500),
            overload_threshold: ms(2000),
            recover_below: ms(250),
            hold: ms(10_000),
        }
    }

    /// Feeds `p99` every 100 ms from `start` for `duration`; returns the transitions.
    fn feed(
        controller: &mut DegradeController,
        start: Instant,
        duration: Duration,
        p99: impl Fn(u64) -> Duration,
    ) -> Vec<(u64, Level, Level)> {
        let mut seen = Vec::new();
        for step in 0..=duration.as_millis() as u64 / 100 {
            let t = step * 100;
            if let Some(tr) = controller.observe(start + ms(t), p99(t)) {
                seen.push((t, tr.from, tr.to));
            }
        }
        seen
    }

    #[test]
    fn defaults_are_valid_and_match_the_design() {
        let defaults = DegradeConfig::default();
        defaults.validate().unwrap();
        assert_eq!(defaults.threshold, ms(500));
    }

    #[test]
    fn validation_names_the_key() {
        let bad = DegradeConfig {
            recover_below: ms(500),
            ..config()
        };
        assert_eq!(bad.validate().unwrap_err().key, "degrade.recover_below");
        let bad = DegradeConfig {
            overload_threshold: ms(400),
            ..config()
        };
        assert_eq!(
            bad.validate().unwrap_err().key,
            "degrade.overload_threshold"
        );
    }

    #[test]
    fn enters_as_soon_as_p99_passes_the_threshold() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        assert_eq!(
            c.observe(t0, ms(500)),
            None,
            "at the threshold is not past it"
        );
        let tr = c.observe(t0 + ms(1), ms(501)).unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.at),
            (Level::Normal, Level::Degraded, t0 + ms(1))
        );
        assert_eq!(c.level(), Level::Degraded);
        let tr = c.observe(t0 + ms(2), ms(2001)).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Degraded, Level::Overloaded));
    }

    #[test]
    fn jumps_straight_to_overloaded() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        let tr = c.observe(t0, Duration::from_secs(5)).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Normal, Level::Overloaded));
    }

    #[test]
    fn leaves_only_after_hold_below_recover_below() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        c.observe(t0, ms(600)).unwrap();
        // Below the threshold but not below recover_below: stays degraded however long.
        assert_eq!(c.observe(t0 + ms(100), ms(300)), None);
        assert_eq!(c.observe(t0 + ms(60_000), ms(300)), None);
        // Calm starts now; one ms short of hold is not enough.
        let calm = t0 + ms(60_100);
        assert_eq!(c.observe(calm, ms(100)), None);
        assert_eq!(c.observe(calm + ms(9_999), ms(100)), None);
        let tr = c.observe(calm + ms(10_000), ms(100)).unwrap();
        assert_eq!((tr.from, tr.to), (Level::Degraded, Level::Normal));
        assert_eq!(c.transitions(), 2);
        assert_eq!(c.transitions_between(Level::Normal, Level::Degraded), 1);
        assert_eq!(c.transitions_between(Level::Degraded, Level::Normal), 1);
        assert_eq!(c.transitions_between(Level::Normal, Level::Overloaded), 0);
    }

    #[test]
    fn a_spike_during_hold_restarts_it() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        c.observe(t0, ms(600)).unwrap();
        assert_eq!(c.observe(t0 + ms(1_000), ms(100)), None);
        assert_eq!(
            c.observe(t0 + ms(9_000), ms(400)),
            None,
            "spike above recover_below"
        );
        assert_eq!(c.observe(t0 + ms(9_100), ms(100)), None);
        assert_eq!(c.observe(t0 + ms(19_099), ms(100)), None);
        assert!(c.observe(t0 + ms(19_100), ms(100)).is_some());
    }

    #[test]
    fn steps_down_one_level_per_hold() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        let seen = feed(&mut c, t0, ms(40_000), |t| {
            if t == 0 {
                ms(3_000)
            } else {
                ms(10)
            }
        });
        assert_eq!(
            seen,
            [
                (0, Level::Normal, Level::Overloaded),
                // Calm from 100 ms; hold 10 s.
                (10_100, Level::Overloaded, Level::Degraded),
                // Calm again from the next observation, 10.2 s.
                (20_200, Level::Degraded, Level::Normal),
            ]
        );
    }

    #[test]
    fn overloaded_recovers_to_degraded_below_the_threshold() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        let seen = feed(&mut c, t0, ms(30_000), |t| {
            if t == 0 {
                ms(3_000)
            } else {
                ms(400)
            }
        });
        // 400 ms is below the threshold (leave overloaded) but not below
        // recover_below (stay degraded).
        assert_eq!(
            seen,
            [
                (0, Level::Normal, Level::Overloaded),
                (10_100, Level::Overloaded, Level::Degraded),
            ]
        );
    }

    #[test]
    fn latency_oscillating_around_the_threshold_does_not_flap() {
        let t0 = Instant::now();
        let mut c = DegradeController::new(config());
        // 450/550 ms alternating every 100 ms for ten minutes.
        let seen = feed(&mut c, t0, Duration::from_secs(600), |t| {
            if (t / 100) % 2 == 0 {
                ms(450)
            } else {
                ms(550)
            }
        });
        assert_eq!(seen, [(100, Level::Normal, Level::Degraded)]);
        // Around the recovery threshold instead: at most one step down per hold.
        let mut c = DegradeController::new(config());
        let seen = feed(&mut c, t0, Duration::from_secs(600), |t| match t {
            0 => ms(600),
            t if (t / 100) % 2 == 0 => ms(200),
            _ => ms(300),
        });
        assert_eq!(seen, [(0, Level::Normal, Level::Degraded)]);
        assert_eq!(c.transitions(), 1);
    }

    #[test]
    fn levels_step_down_and_print_as_wire_numbers() {
        assert_eq!(Level::Overloaded.down(), Level::Degraded);
        assert_eq!(Level::Degraded.down(), Level::Normal);
        assert_eq!(Level::Normal.down(), Level::Normal);
        assert_eq!(
            [Level::Normal, Level::Degraded, Level::Overloaded].map(Level::as_u8),
            [0, 1, 2]
        );
    }
}
