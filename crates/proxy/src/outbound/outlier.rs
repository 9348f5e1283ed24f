//! Outlier ejection of one endpoint: `consecutive_failures` failures in a row (5xx answers,
//! connect failures, exchanges that broke) eject it for `base · 2^(times ejected before)`,
//! at most `max_ejection`; a success resets the count. At most `max_ejected_percent` % of
//! a service's endpoints are ejected at once, and never the last one: the ejection that
//! would pass the cap does not happen.

use std::sync::Mutex;
use std::time::Duration;

use api::contract::traffic::OutlierDetection;
use tokio::time::Instant;

use super::balance::EndpointSlot;

/// One endpoint's outlier state.
#[derive(Debug, Default)]
pub struct Outlier {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    ejections: u32,
    until: Option<Instant>,
}

impl Outlier {
    /// Whether the endpoint is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.lock().until.is_some_and(|until| now < until)
    }

    /// Records one outcome of a request to `slot` (one of `all`, its service's endpoints);
    /// true when this failure ejected it.
    pub fn record<S: AsRef<EndpointSlot>>(
        &self,
        success: bool,
        config: &OutlierDetection,
        all: &[S],
        slot: &EndpointSlot,
    ) -> bool {
        if config.consecutive_failures == 0 {
            return false;
        }
        let now = Instant::now();
        let mut state = self.lock();
        if success {
            state.consecutive = 0;
            return false;
        }
        state.consecutive += 1;
        if state.consecutive < config.consecutive_failures || state.until.is_some_and(|u| now < u) {
            return false;
        }
        drop(state);
        if !room_to_eject(config, all, now) {
            return false;
        }
        let mut state = self.lock();
        let factor = 2u64.saturating_pow(state.ejections.min(32));
        let length = config
            .base_ejection_ms
            .saturating_mul(factor)
            .min(config.max_ejection_ms);
        state.until = Some(now + Duration::from_millis(length));
        state.ejections += 1;
        state.consecutive = 0;
        tracing::warn!(endpoint = %slot.key().addr, identity = %slot.key().identity,
            ejected_ms = length, "endpoint ejected after consecutive failures");
        true
    }

    /// Test only: ejects for a minute from `now`.
    #[cfg(test)]
    pub fn eject_for_test(&self, now: Instant) {
        self.lock().until = Some(now + Duration::from_secs(60));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere cannot leave them inconsistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether one more of `all` may be ejected at `now` under the cap.
fn room_to_eject<S: AsRef<EndpointSlot>>(
    config: &OutlierDetection,
    all: &[S],
    now: Instant,
) -> bool {
    let ejected = all
        .iter()
        .filter(|s| s.as_ref().outlier().is_ejected(now))
        .count();
    let total = all.len();
    let cap = total * config.max_ejected_percent.min(100) as usize / 100;
    ejected < cap.min(total.saturating_sub(1))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::outbound::connect::PeerKey;

    fn slots(n: u16) -> Vec<Arc<EndpointSlot>> {
        (0..n)
            .map(|port| {
                Arc::new(EndpointSlot::new(PeerKey {
                    addr: ([127, 0, 0, 1], port).into(),
                    identity: "spiffe://meshwork.local/ns/default/sa/billing"
                        .parse()
                        .unwrap(),
                }))
            })
            .collect()
    }

    fn fail(all: &[Arc<EndpointSlot>], i: usize, times: u32, config: &OutlierDetection) {
        for _ in 0..times {
            all[i].outlier().record(false, config, all, &all[i]);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_for_a_growing_time_and_success_resets() {
        let config = OutlierDetection {
            consecutive_failures: 3,
            base_ejection_ms: 1_000,
            max_ejection_ms: 3_000,
            max_ejected_percent: 50,
        };
        let all = slots(2);
        fail(&all, 0, 2, &config);
        all[0].outlier().record(true, &config, &all, &all[0]);
        fail(&all, 0, 2, &config);
        assert!(
            !all[0].outlier().is_ejected(Instant::now()),
            "the success reset the count"
        );
        fail(&all, 0, 1, &config);
        assert!(all[0].outlier().is_ejected(Instant::now()));
        tokio::time::advance(Duration::from_millis(1_001)).await;
        assert!(!all[0].outlier().is_ejected(Instant::now()));
        fail(&all, 0, 3, &config);
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert!(
            all[0].outlier().is_ejected(Instant::now()),
            "second ejection: 2 s"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        assert!(!all[0].outlier().is_ejected(Instant::now()));
        fail(&all, 0, 3, &config);
        fail(&all, 0, 3, &config);
        tokio::time::advance(Duration::from_millis(2_900)).await;
        assert!(
            all[0].outlier().is_ejected(Instant::now()),
            "capped at 3 s, not 4"
        );
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(!all[0].outlier().is_ejected(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_cap_and_never_the_last_endpoint() {
        let config = OutlierDetection {
            consecutive_failures: 1,
            ..OutlierDetection::default()
        };
        let all = slots(2);
        fail(&all, 0, 1, &config);
        fail(&all, 1, 1, &config);
        let now = Instant::now();
        assert!(all[0].outlier().is_ejected(now));
        assert!(!all[1].outlier().is_ejected(now), "50 % of two is one");
        let one = slots(1);
        fail(&one, 0, 5, &config);
        assert!(
            !one[0].outlier().is_ejected(now),
            "the last endpoint is never ejected"
        );
    }
}
