//! Per-destination rate limits, shared by every dispatcher instance and both lanes: the Generic Cell
//! Rate Algorithm (GCRA, as ATM networks and most API gateways meter traffic) over one stored value
//! per destination, its theoretical arrival time `tat`.
//!
//! A delivery reserves a slot: `slot = max(tat, now - tolerance)`, then `tat = slot + interval`
//! (`interval` = 1 s / `per_second`, `tolerance` = (`burst` - 1) × `interval`). It is sent at
//! `max(slot, now)`. Reserved slots are `interval` apart, so whatever the number of instances, over
//! any window of `w` seconds the destination receives at most `w × per_second + burst` deliveries
//! (sends are made at their slot, never later than the slot except by the moment it takes to send).
//! Slots reserved but not used (a job dropped as a duplicate after its reservation) only lower the
//! rate. The store makes the reservation atomic ([`RateLimiter`]; DynamoDB: a conditional `ADD`).
//!
//! What the dispatcher does with a slot (`dispatch`): now or within the wait it can afford in this
//! invocation: wait and send; further out: the job goes to the retry lane with the slot, due a
//! little before it, and waits in SQS, not in a Lambda; no attempt is spent and nothing is recorded.

use crate::records::StoreError;
use serde::{Deserialize, Serialize};

/// Highest `per_second` a destination may set: each delivery writes its destination's one item,
/// and a DynamoDB item takes at most 1,000 write units a second; half leaves room for the
/// conditional writes that fail (an idle schedule's first) and for bursts.
pub const MAX_PER_SECOND: u32 = 500;

/// A destination's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: u32,
    /// Deliveries that may go at once after an idle spell (1: none beyond the rate).
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_PER_SECOND).contains(&self.per_second) {
            return Err(format!("per_second must be between 1 and {MAX_PER_SECOND}"));
        }
        if !(1..=self.per_second.max(1)).contains(&self.burst) {
            return Err("burst must be between 1 and per_second".into());
        }
        Ok(())
    }

    /// Microseconds between two slots.
    pub fn interval_us(&self) -> u64 {
        1_000_000 / u64::from(self.per_second.max(1))
    }

    /// How far before `now` a slot may lie (the burst allowance).
    pub fn tolerance_us(&self) -> u64 {
        u64::from(self.burst.saturating_sub(1)) * self.interval_us()
    }
}

/// One GCRA step: the slot for a delivery at `now_us` given the stored `tat` (none: never used),
/// and the new `tat`.
pub fn schedule(tat_us: Option<u64>, now_us: u64, limit: RateLimit) -> (u64, u64) {
    let floor = now_us.saturating_sub(limit.tolerance_us());
    let slot = tat_us.unwrap_or(0).max(floor);
    (slot, slot + limit.interval_us())
}

/// The store of each destination's `tat`.
pub trait RateLimiter: Send + Sync {
    /// Reserves the next slot of `destination` (microseconds since the epoch), atomically across
    /// every caller.
    fn reserve(
        &self,
        destination: &str,
        now_us: u64,
        limit: RateLimit,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl<T: RateLimiter> RateLimiter for std::sync::Arc<T> {
    fn reserve(
        &self,
        destination: &str,
        now_us: u64,
        limit: RateLimit,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).reserve(destination, now_us, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_an_interval_apart_and_a_burst_goes_at_once_after_idle() {
        let limit = RateLimit {
            per_second: 10,
            burst: 3,
        };
        assert_eq!(limit.interval_us(), 100_000);
        let now = 5_000_000;
        let mut tat = None;
        let mut slots = Vec::new();
        for _ in 0..6 {
            let (slot, next) = schedule(tat, now, limit);
            slots.push(slot);
            tat = Some(next);
        }
        // Three at once (the burst: slots at or before now), then one per 100 ms.
        assert!(slots[..3].iter().all(|s| *s <= now), "{slots:?}");
        assert_eq!(&slots[3..], &[now + 100_000, now + 200_000, now + 300_000]);
        // After an idle spell the schedule starts again from now.
        let (slot, _) = schedule(tat, now + 10_000_000, limit);
        assert_eq!(slot, now + 10_000_000 - 200_000);
    }

    #[test]
    fn any_window_holds_at_most_rate_times_length_plus_burst() {
        // Requests arriving in clumps, sent at max(slot, arrival): count every 1 s window.
        let limit = RateLimit {
            per_second: 20,
            burst: 5,
        };
        let mut tat = None;
        let mut sends = Vec::new();
        let mut now = 1_000_000_000u64;
        for clump in 0..50u64 {
            for _ in 0..(clump % 7) * 9 {
                let (slot, next) = schedule(tat, now, limit);
                tat = Some(next);
                sends.push(slot.max(now));
            }
            now += 370_000;
        }
        sends.sort_unstable();
        for (i, start) in sends.iter().enumerate() {
            let in_window = sends[i..]
                .iter()
                .take_while(|t| **t < start + 1_000_000)
                .count();
            assert!(
                in_window <= 20 + 5,
                "{in_window} sends in the second from {start}"
            );
        }
    }

    #[test]
    fn limits_are_validated() {
        for (per_second, burst, ok) in [
            (1, 1, true),
            (500, 500, true),
            (0, 1, false),
            (501, 1, false),
            (10, 0, false),
            (10, 11, false),
        ] {
            assert_eq!(
                RateLimit { per_second, burst }.validate().is_ok(),
                ok,
                "{per_second} {burst}"
            );
        }
    }
}
