//! The statistics and number formats the benchmarks share: nearest-rank
//! quantiles, a median of timed runs, and how durations appear in the human
//! lines (`ms`, `secs`) and in the JSON reports (`millis`).

use std::time::{Duration, Instant};

/// Nearest-rank quantiles of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Quantiles {
    /// Nearest-rank quantiles (sorting `samples`); None when there are no samples.
    pub fn of(samples: &mut [Duration]) -> Option<Quantiles> {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1];
        let max = *samples.last()?;
        Some(Quantiles { p50: at(0.50), p90: at(0.90), p99: at(0.99), max })
    }
}

/// Runs `f` `runs` times (`runs` at least 1) and returns the median wall-clock time.
pub fn median_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[times.len() / 2]
}

/// How a target met or missed appears in the human lines.
pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}

/// `1.23 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// `12.3 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Milliseconds rounded to a tenth: the unit of every `*_ms` field of the JSON reports.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut samples = ms_list(&(1..=100).rev().collect::<Vec<_>>());
        let q = Quantiles::of(&mut samples).unwrap();
        assert_eq!(q, Quantiles { p50: ms_d(50), p90: ms_d(90), p99: ms_d(99), max: ms_d(100) });
        let q = Quantiles::of(&mut ms_list(&[7])).unwrap();
        assert_eq!(q, Quantiles { p50: ms_d(7), p90: ms_d(7), p99: ms_d(7), max: ms_d(7) });
        assert_eq!(Quantiles::of(&mut []), None);
    }

    fn ms_d(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    #[test]
    fn formats() {
        assert_eq!(ms(Duration::from_micros(12_345)), "12.3 ms");
        assert_eq!(secs(Duration::from_millis(1_234)), "1.23 s");
        assert_eq!(millis(Duration::from_micros(12_345)), 12.3);
        assert_eq!((verdict(true), verdict(false)), ("PASS", "MISS"));
    }

    #[test]
    fn median_of_runs_each_time() {
        let mut n = 0;
        median_of(5, || n += 1);
        assert_eq!(n, 5);
    }
}
