//! Peak-EWMA load of one endpoint, the cost power-of-two-choices compares.
//!
//! The estimator is tower's (`tower::load::PeakEwma`, after Finagle's): the round-trip
//! estimate jumps to any slower sample at once (the "peak") and decays towards faster
//! ones with time constant [`DECAY`]; the cost is the estimate times the requests in
//! flight plus one. Why not tower's type itself: it wraps a `Service` and is read through
//! `Discover`, while meshwork's endpoints are snapshot data whose state (this load, the
//! outlier and circuit-breaker state) must survive snapshot updates, and one pool serves
//! every endpoint. So the arithmetic is tower's, held per endpoint in atomics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// How fast the estimate forgets a slow sample (tower's default is 10 s; a mesh hop
/// wants to follow a recovered replica sooner).
pub const DECAY: Duration = Duration::from_secs(5);

/// The estimate of an endpoint nothing was measured on yet (tower's default: 1 s would
/// keep new endpoints unused; 1 ms lets them be tried at once).
const DEFAULT_RTT: Duration = Duration::from_millis(1);

/// One endpoint's load (see the [module docs](self)).
#[derive(Debug)]
pub struct PeakEwma {
    /// (estimate in nanoseconds, when it was last updated).
    estimate: Mutex<(f64, Option<Instant>)>,
    in_flight: AtomicU32,
}

impl Default for PeakEwma {
    fn default() -> Self {
        PeakEwma {
            estimate: Mutex::new((nanos(DEFAULT_RTT), None)),
            in_flight: AtomicU32::new(0),
        }
    }
}

impl PeakEwma {
    /// The cost at `now`: the decayed estimate × (requests in flight + 1).
    pub fn cost(&self, now: Instant) -> f64 {
        let (estimate, at) = *self.lock();
        let decayed = at.map_or(estimate, |at| {
            estimate * decay(now.saturating_duration_since(at))
        });
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        decayed * pending
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request starts; pair with [`PeakEwma::finish`].
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request that started ends; `rtt`: its round trip, when it measured one.
    pub fn finish(&self, rtt: Option<(Duration, Instant)>) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some((rtt, now)) = rtt {
            self.observe(rtt, now);
        }
    }

    /// A request that started ends unanswered after `waited` (its caller gave up): its
    /// round trip is unknown but at least `waited`, so it may raise the estimate as a peak
    /// and never lowers it.
    pub fn abandon(&self, waited: Duration, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        let mut estimate = self.lock();
        let (current, at) = *estimate;
        let decayed = at.map_or(current, |at| {
            current * decay(now.saturating_duration_since(at))
        });
        let sample = nanos(waited);
        if sample > decayed {
            *estimate = (sample, Some(now));
        }
    }

    fn observe(&self, rtt: Duration, now: Instant) {
        let mut estimate = self.lock();
        let (current, at) = *estimate;
        let sample = nanos(rtt);
        let next = if sample > current {
            sample
        } else {
            let w = at.map_or(0.0, |at| decay(now.saturating_duration_since(at)));
            current * w + sample * (1.0 - w)
        };
        *estimate = (next, Some(now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (f64, Option<Instant>)> {
        // Two floats: a panic elsewhere cannot leave them half-written.
        self.estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_slow_sample_counts_at_once_and_decays_with_time() {
        let load = PeakEwma::default();
        let now = Instant::now();
        load.start();
        load.finish(Some((Duration::from_millis(100), now)));
        assert!((load.cost(now) - 100e6).abs() < 1.0, "peak taken at once");
        load.start();
        assert!(
            (load.cost(now) - 200e6).abs() < 1.0,
            "in flight doubles the cost"
        );
        load.finish(Some((Duration::from_millis(1), now + DECAY)));
        let later = load.cost(now + DECAY);
        assert!(
            later < 100e6 * 0.4 && later > 1e6,
            "decayed towards the fast sample: {later}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_given_up_on_raises_the_estimate_but_never_lowers_it() {
        let load = PeakEwma::default();
        let now = Instant::now();
        load.start();
        load.abandon(Duration::from_millis(100), now);
        assert_eq!(load.in_flight(), 0);
        assert!((load.cost(now) - 100e6).abs() < 1.0, "at least 100 ms");
        load.start();
        load.abandon(Duration::from_millis(1), now);
        assert_eq!(load.in_flight(), 0);
        assert!(
            (load.cost(now) - 100e6).abs() < 1.0,
            "a caller leaving early says nothing about a faster round trip"
        );
    }
}
