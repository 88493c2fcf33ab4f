//! When each target is probed: every `interval`, at a phase of its own.
//!
//! A target's phase is a hash of its identity spread over the interval, so
//! 1,000 VIPs × 10 reals at one interval probe at 10,000 evenly spread
//! instants rather than all at once, and a target keeps its phase across
//! configuration changes of other targets.

use std::hash::{Hash, Hasher};
use std::time::Duration;

/// The offset within `interval` at which the target identified by `key` is
/// probed (the same for the same key and interval).
pub fn phase(key: &impl Hash, interval: Duration) -> Duration {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(hasher.finish() % nanos)
}

/// The first probe instant strictly after `now` for a target of `phase` and
/// `interval`, both measured from the same origin.
pub fn next_after(now: Duration, phase: Duration, interval: Duration) -> Duration {
    let interval = interval.max(Duration::from_millis(1));
    if now < phase {
        return phase;
    }
    let periods = (now - phase).as_nanos() / interval.as_nanos() + 1;
    phase + interval * periods as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        let mut buckets = [0u32; 10];
        for vip in 0..1000u32 {
            for real in 0..10u32 {
                let p = phase(&(vip, real), interval);
                assert!(p < interval);
                buckets[(p.as_millis() / 100) as usize] += 1;
            }
        }
        // 10,000 targets over ten 100 ms slices: each slice within ±10% of 1,000.
        for (slice, n) in buckets.iter().enumerate() {
            assert!((900..=1100).contains(n), "slice {slice}: {n} targets");
        }
        assert_eq!(phase(&(1u32, 2u32), interval), phase(&(1u32, 2u32), interval));
    }

    #[test]
    fn the_next_instant_is_on_the_targets_grid() {
        let (p, i) = (Duration::from_millis(300), Duration::from_secs(1));
        assert_eq!(next_after(Duration::ZERO, p, i), p);
        assert_eq!(next_after(p, p, i), Duration::from_millis(1300));
        assert_eq!(next_after(Duration::from_millis(1299), p, i), Duration::from_millis(1300));
        assert_eq!(next_after(Duration::from_millis(5000), p, i), Duration::from_millis(5300));
    }
}
