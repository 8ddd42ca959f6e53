//! A topic's tier as it is now. `/topic/tier` changes it in place (see
//! `Broker::change_tier`); the topic, its channels and their sessions share
//! one cell, and each publish, requeue or delivery pass reads it once, so
//! each works under exactly one tier's rules.

use std::sync::atomic::{AtomicU8, Ordering};

use triage_config::Tier;

#[derive(Debug)]
pub struct LiveTier(AtomicU8);

impl LiveTier {
    pub fn new(tier: Tier) -> LiveTier {
        LiveTier(AtomicU8::new(encode(tier)))
    }

    pub fn get(&self) -> Tier {
        decode(self.0.load(Ordering::Acquire))
    }

    pub fn set(&self, tier: Tier) {
        self.0.store(encode(tier), Ordering::Release);
    }
}

fn encode(tier: Tier) -> u8 {
    match tier {
        Tier::Memory => 0,
        Tier::Persistent => 1,
        Tier::Delayed => 2,
    }
}

fn decode(raw: u8) -> Tier {
    match raw {
        0 => Tier::Memory,
        1 => Tier::Persistent,
        // Only `encode` writes the cell.
        _ => Tier::Delayed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tier_reads_back_as_set() {
        let cell = LiveTier::new(Tier::Memory);
        for tier in [Tier::Persistent, Tier::Delayed, Tier::Memory] {
            cell.set(tier);
            assert_eq!(cell.get(), tier);
        }
    }
}
