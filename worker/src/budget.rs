//! How the in-flight budget is shared between subscriptions by priority.
//!
//! Each subscription wants some RDY at the current degrade level (urgent all
//! of its `max_in_flight` at every level, normal less as the level rises,
//! batch nothing once degraded). [`allocate`] hands out one global budget in
//! priority order, so when it runs short batch subscriptions lose their RDY
//! first and urgent ones last; within a priority, what is left is shared in
//! proportion to what each wants, so no subscription of a class starves
//! another of it. Pure: no I/O, no clock.

use crate::degrade::Level;

/// A subscription's priority; defined with the config file it is read from.
pub use triage_config::worker::Priority;

/// The RDY a normal-priority subscription of `max_in_flight` asks for at
/// `level`: all of it when normal, half when degraded, a quarter when
/// overloaded, never below 1 (RDY 0 would also stop the urgent messages the
/// broker still sends).
pub fn rdy_for(max_in_flight: u64, level: Level) -> u64 {
    let divisor = match level {
        Level::Normal => 1,
        Level::Degraded => 2,
        Level::Overloaded => 4,
    };
    max_in_flight.div_ceil(divisor).max(1)
}

/// The RDY a subscription wants at `level`, before the global budget.
pub fn wanted(priority: Priority, max_in_flight: u64, level: Level) -> u64 {
    match (priority, level) {
        (Priority::Urgent, _) => max_in_flight,
        (Priority::Normal, level) => rdy_for(max_in_flight, level),
        (Priority::Batch, Level::Normal) => max_in_flight,
        (Priority::Batch, _) => 0,
    }
}

/// The RDY of each subscription (given as `(priority, max_in_flight)`, in
/// the same order) at `level` with at most `budget` in flight in total
/// (`None`: no global limit). Urgent subscriptions are served first, then
/// normal, then batch; when a priority's wants exceed what is left, it is
/// shared among them in proportion to their wants. Urgent and normal
/// subscriptions always keep RDY 1, even past the budget: with RDY 0 they
/// would never see another message.
pub fn allocate(subscriptions: &[(Priority, u64)], budget: Option<u64>, level: Level) -> Vec<u64> {
    let mut rdy = vec![0; subscriptions.len()];
    let mut remaining = budget.unwrap_or(u64::MAX);
    for priority in Priority::ALL {
        let members: Vec<usize> = (0..subscriptions.len())
            .filter(|&i| subscriptions[i].0 == priority)
            .collect();
        let wants: Vec<u64> = members
            .iter()
            .map(|&i| wanted(priority, subscriptions[i].1, level))
            .collect();
        for (&i, share) in members.iter().zip(share(&wants, remaining)) {
            rdy[i] = if priority == Priority::Batch {
                share
            } else {
                share.max(1)
            };
            remaining = remaining.saturating_sub(rdy[i]);
        }
    }
    rdy
}

/// Splits up to `available` among `wants`: each gets its want when they all
/// fit, else its proportional part (rounded down), with the units left over
/// by rounding given one each, in order, to those still short.
fn share(wants: &[u64], available: u64) -> Vec<u64> {
    let total: u128 = wants.iter().map(|&w| u128::from(w)).sum();
    if total <= u128::from(available) {
        return wants.to_vec();
    }
    let mut shares: Vec<u64> = wants
        .iter()
        // Below `want`, so it fits in u64.
        .map(|&w| (u128::from(w) * u128::from(available) / total) as u64)
        .collect();
    let mut left = available - shares.iter().sum::<u64>();
    for (share, &want) in shares.iter_mut().zip(wants) {
        if left == 0 {
            break;
        }
        if *share < want {
            *share += 1;
            left -= 1;
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdy_shrinks_with_the_level_but_never_to_zero() {
        assert_eq!(rdy_for(100, Level::Normal), 100);
        assert_eq!(rdy_for(100, Level::Degraded), 50);
        assert_eq!(rdy_for(100, Level::Overloaded), 25);
        assert_eq!(rdy_for(5, Level::Degraded), 3);
        assert_eq!(rdy_for(1, Level::Overloaded), 1);
    }

    #[test]
    fn priorities_parse_and_print() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
        }
        assert!("high".parse::<Priority>().is_err());
    }

    #[test]
    fn without_a_budget_each_gets_what_its_priority_wants() {
        let subs = [
            (Priority::Batch, 10),
            (Priority::Normal, 10),
            (Priority::Urgent, 10),
        ];
        assert_eq!(allocate(&subs, None, Level::Normal), [10, 10, 10]);
        assert_eq!(allocate(&subs, None, Level::Degraded), [0, 5, 10]);
        assert_eq!(allocate(&subs, None, Level::Overloaded), [0, 3, 10]);
    }

    #[test]
    fn a_short_budget_is_taken_from_batch_first_and_urgent_last() {
        let subs = [
            (Priority::Batch, 10),
            (Priority::Normal, 10),
            (Priority::Urgent, 10),
        ];
        assert_eq!(allocate(&subs, Some(30), Level::Normal), [10, 10, 10]);
        assert_eq!(allocate(&subs, Some(25), Level::Normal), [5, 10, 10]);
        assert_eq!(allocate(&subs, Some(15), Level::Normal), [0, 5, 10]);
        assert_eq!(allocate(&subs, Some(15), Level::Degraded), [0, 5, 10]);
        // Urgent keeps all of its RDY when degraded; normal and batch pay.
        assert_eq!(allocate(&subs, Some(12), Level::Degraded), [0, 2, 10]);
    }

    #[test]
    fn urgent_and_normal_keep_rdy_1_past_the_budget() {
        let subs = [
            (Priority::Urgent, 10),
            (Priority::Urgent, 10),
            (Priority::Normal, 4),
            (Priority::Batch, 4),
        ];
        assert_eq!(allocate(&subs, Some(12), Level::Normal), [6, 6, 1, 0]);
        assert_eq!(allocate(&subs, Some(5), Level::Normal), [3, 2, 1, 0]);
    }

    #[test]
    fn a_priority_shares_what_is_left_in_proportion() {
        // Four batch subscriptions (say, two of them replays) and 10 left for them.
        let subs = [
            (Priority::Urgent, 20),
            (Priority::Batch, 10),
            (Priority::Batch, 10),
            (Priority::Batch, 10),
            (Priority::Batch, 10),
        ];
        assert_eq!(allocate(&subs, Some(30), Level::Normal), [20, 3, 3, 2, 2]);
        let uneven = [(Priority::Normal, 30), (Priority::Normal, 10)];
        assert_eq!(allocate(&uneven, Some(20), Level::Normal), [15, 5]);
        assert_eq!(share(&[3, 3], 6), [3, 3]);
        assert_eq!(share(&[3, 3], 1), [1, 0]);
        assert_eq!(share(&[], 5), Vec::<u64>::new());
    }
}
