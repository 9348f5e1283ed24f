//! Capped exponential backoff with full jitter: the one retry delay of meshwork's
//! clients of the control plane (sidecars, agents), also used by the sidecar's retry
//! layer and app-readiness probe.
//!
//! Full jitter (a uniform delay in `[0, min(cap, base·2ⁿ)]`) spreads the retries of
//! many sidecars that lost control at the same moment, so a restarted control plane
//! is not hit by a synchronised thundering herd.

use std::time::Duration;

use rand::Rng;

/// Retry delays for one failing operation; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays grow from `base`, doubling per attempt, never beyond `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay, with random jitter.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = rand::rng().random_range(0.0..=1.0);
        self.next_delay_with(jitter)
    }

    /// The next delay for a given jitter fraction in `[0, 1]` (deterministic; for tests).
    pub fn next_delay_with(&mut self, jitter: f64) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The upper bound of the next delay: `min(cap, base·2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s: quick recovery from a control restart, gentle on an outage.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_then_caps() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..7)
            .map(|_| backoff.next_delay_with(1.0).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn jitter_scales_within_the_ceiling() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(backoff.next_delay_with(0.5), Duration::from_millis(50));
        assert_eq!(backoff.next_delay_with(0.0), Duration::ZERO);
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(1));
        }
    }

    #[test]
    fn many_attempts_do_not_overflow_and_reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..1000 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(10));
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
    }
}
