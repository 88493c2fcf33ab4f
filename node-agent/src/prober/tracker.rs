//! Probe results against the thresholds: a pure state machine per real.

use std::time::SystemTime;

/// Successive results that change a real's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Successes in a row that make an unhealthy real healthy (≥ 1).
    pub healthy: u32,
    /// Failures in a row that make a healthy real unhealthy (≥ 1).
    pub unhealthy: u32,
}

impl Default for Thresholds {
    /// katran-server's defaults: 3 and 3.
    fn default() -> Self {
        Self { healthy: 3, unhealthy: 3 }
    }
}

/// What the prober knows of one real of one VIP (`/vips/healthcheck/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealHealth {
    pub healthy: bool,
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Successes since the last failure.
    pub consecutive_successes: u32,
    /// When the last probe finished.
    pub last_check: Option<SystemTime>,
    /// When `healthy` last changed (not set by the initial state).
    pub last_change: Option<SystemTime>,
    /// Why the last probe failed, when it did.
    pub last_error: Option<String>,
}

impl RealHealth {
    /// A real not probed yet: unhealthy until probes promote it.
    pub fn new() -> Self {
        Self::starting(false)
    }

    /// A real not probed yet, with the health it has now.
    pub fn starting(healthy: bool) -> Self {
        Self {
            healthy,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_check: None,
            last_change: None,
            last_error: None,
        }
    }

    /// Records one probe's result at `now`; returns the new health when this
    /// result crossed a threshold.
    pub fn record(&mut self, result: Result<(), String>, now: SystemTime, thresholds: Thresholds) -> Option<bool> {
        self.last_check = Some(now);
        let turned = match result {
            Ok(()) => {
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                self.consecutive_failures = 0;
                self.last_error = None;
                !self.healthy && self.consecutive_successes >= thresholds.healthy.max(1)
            }
            Err(why) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_successes = 0;
                self.last_error = Some(why);
                self.healthy && self.consecutive_failures >= thresholds.unhealthy.max(1)
            }
        };
        if turned {
            self.healthy = !self.healthy;
            self.last_change = Some(now);
            return Some(self.healthy);
        }
        None
    }
}

impl Default for RealHealth {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { healthy: 2, unhealthy: 3 };

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
    }

    #[test]
    fn a_new_real_turns_healthy_after_the_healthy_threshold() {
        let mut h = RealHealth::new();
        assert_eq!(h.record(Ok(()), at(1), T), None);
        assert!(!h.healthy);
        assert_eq!(h.record(Ok(()), at(2), T), Some(true));
        assert_eq!((h.healthy, h.last_change, h.last_check), (true, Some(at(2)), Some(at(2))));
        // More successes change nothing.
        assert_eq!(h.record(Ok(()), at(3), T), None);
    }

    #[test]
    fn failures_must_be_successive_to_demote() {
        let mut h = RealHealth::new();
        h.record(Ok(()), at(1), T);
        h.record(Ok(()), at(2), T);
        assert_eq!(h.record(Err("refused".into()), at(3), T), None);
        assert_eq!(h.record(Err("refused".into()), at(4), T), None);
        assert_eq!(h.record(Ok(()), at(5), T), None, "a success resets the failures");
        assert_eq!(h.consecutive_failures, 0);
        for s in 6..8 {
            assert_eq!(h.record(Err("timed out".into()), at(s), T), None);
        }
        assert_eq!(h.record(Err("timed out".into()), at(8), T), Some(false));
        assert_eq!(
            (h.consecutive_failures, h.last_error.as_deref(), h.last_change),
            (3, Some("timed out"), Some(at(8)))
        );
        // A failing unhealthy real stays unhealthy, with no new transition.
        assert_eq!(h.record(Err("timed out".into()), at(9), T), None);
        assert_eq!(h.last_change, Some(at(8)));
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let t = Thresholds { healthy: 0, unhealthy: 0 };
        let mut h = RealHealth::new();
        assert_eq!(h.record(Ok(()), at(1), t), Some(true));
        assert_eq!(h.record(Err("x".into()), at(2), t), Some(false));
    }
}
