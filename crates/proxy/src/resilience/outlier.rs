//! [`OutlierDetector`]: which endpoints of one service are ejected from its balancer, and
//! until when (the `Service`'s `outlierDetection`).
//!
//! An endpoint whose last `consecutiveFailures` tries all failed — a 5xx answer, a connect
//! failure, a reset, a per-try timeout (a stalled replica fails that way) — is ejected for
//! `baseEjection · 2^k`, k being how often it was ejected before, at most `maxEjection`. A
//! success resets the count. An endpoint that stays in for `maxEjection` after returning
//! starts again from the base. At most `maxEjectedPercent` % of the endpoints (rounded down)
//! are out at once, and never the last one in: a service whose every replica fails is
//! better served by trying them than by refusing outright.
//!
//! Pure state: the time is an argument, and nothing here sleeps. The balancer asks
//! [`OutlierDetector::is_available`] when choosing, tells [`OutlierDetector::record`] how
//! each try ended. One lock, held for a map lookup, never across an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use api::contract::traffic::OutlierDetection;
use policy::hasher::FxBuildHasher as FxBuild;
use tokio::time::Instant;

use super::EndpointKey;
use crate::label::Label;
use crate::metrics::ProxyMetrics;

/// The longest ejection a snapshot can ask for (the loader's bound on `maxEjectionTime`).
const MAX_EJECTION_MS: u64 = 3_600_000;

/// How one try went, as far as the endpoint's health is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The endpoint answered, with anything but a 5xx.
    Success,
    /// A 5xx, or the exchange failed at the endpoint (connect, reset, per-try timeout).
    Failure,
}

/// One service's ejection state (see the [module docs](self)).
pub(crate) struct OutlierDetector {
    service: Label,
    threshold: u32,
    base: Duration,
    max: Duration,
    max_percent: usize,
    endpoints: Mutex<HashMap<EndpointKey, Health, FxBuild>>,
    metrics: Arc<dyn ProxyMetrics>,
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    /// Ejections so far (the exponent of the next one's length).
    ejections: u32,
    ejected_until: Option<Instant>,
    returned_at: Option<Instant>,
}

impl Health {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| until > now)
    }

    /// Takes the endpoint back once its time is up (with the clean count it was ejected
    /// with: answers while it was out are not counted).
    fn settle(&mut self, now: Instant) {
        if let Some(until) = self.ejected_until
            && until <= now
        {
            self.ejected_until = None;
            self.returned_at = Some(until);
        }
    }
}

impl OutlierDetector {
    /// Ejection state for `service`, by `config` (`consecutiveFailures: 0` disables it),
    /// counting ejections in `metrics`.
    pub(crate) fn new(
        service: Label,
        config: &OutlierDetection,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        // The loader bounds both to an hour; a snapshot is peer input all the same, and an
        // unbounded period would overflow `Instant` arithmetic.
        let ms = |ms: u64| Duration::from_millis(ms.min(MAX_EJECTION_MS));
        OutlierDetector {
            service,
            threshold: config.consecutive_failures,
            base: ms(config.base_ejection_ms),
            max: ms(config.max_ejection_ms.max(config.base_ejection_ms)),
            max_percent: usize::try_from(config.max_ejected_percent.min(100)).unwrap_or(100),
            endpoints: Mutex::default(),
            metrics,
        }
    }

    /// The service's endpoints now (call on every change): history is kept for those still
    /// present, dropped for the others, and the ejectable share counts these.
    pub(crate) fn set_endpoints<'a>(&self, current: impl IntoIterator<Item = &'a EndpointKey>) {
        let mut endpoints = self.lock();
        let mut kept: HashMap<EndpointKey, Health, FxBuild> = HashMap::default();
        for key in current {
            let health = endpoints.remove(key).unwrap_or_default();
            kept.insert(key.clone(), health);
        }
        *endpoints = kept;
    }

    /// Whether the balancer may choose `endpoint` at `now` (an endpoint never seen is).
    pub(crate) fn is_available(&self, endpoint: &EndpointKey, now: Instant) -> bool {
        self.lock()
            .get(endpoint)
            .is_none_or(|health| !health.is_ejected(now))
    }

    /// When the next ejected endpoint comes back, if any is out at `now` (how the tests read
    /// ejection lengths; the balancer asks [`OutlierDetector::is_available`] at each pick).
    #[cfg(test)]
    pub(crate) fn next_return(&self, now: Instant) -> Option<Instant> {
        self.lock()
            .values()
            .filter_map(|health| health.ejected_until)
            .filter(|until| *until > now)
            .min()
    }

    /// Notes how a try on `endpoint` ended at `now`; true if that ejected it.
    pub(crate) fn record(&self, endpoint: &EndpointKey, outcome: Outcome, now: Instant) -> bool {
        let mut endpoints = self.lock();
        let total = endpoints.len();
        let ejected = endpoints.values().filter(|h| h.is_ejected(now)).count();
        // An endpoint a newer snapshot removed (a try that started before it): not counted,
        // and not put back, or `total` would count endpoints that are gone.
        let Some(health) = endpoints.get_mut(endpoint) else {
            return false;
        };
        health.settle(now);
        if health.is_ejected(now) {
            // A late answer from before the ejection: it is out already.
            return false;
        }
        match outcome {
            Outcome::Success => {
                health.consecutive_failures = 0;
                return false;
            }
            Outcome::Failure => {
                health.consecutive_failures = health.consecutive_failures.saturating_add(1);
            }
        }
        if self.threshold == 0 || health.consecutive_failures < self.threshold {
            return false;
        }
        let allowed = (total * self.max_percent / 100).min(total - 1);
        if ejected >= allowed {
            // Stays in, still counting: it is ejected once another one returns.
            return false;
        }
        self.eject(health, now);
        self.metrics.ejection(self.service, endpoint.addr);
        true
    }

    fn eject(&self, health: &mut Health, now: Instant) {
        if health
            .returned_at
            .is_some_and(|back| now.saturating_duration_since(back) >= self.max)
        {
            health.ejections = 0;
        }
        let factor = 1u32
            .checked_shl(health.ejections.min(31))
            .unwrap_or(u32::MAX);
        let period = self.base.saturating_mul(factor).min(self.max);
        health.ejected_until = Some(now + period);
        health.ejections = health.ejections.saturating_add(1);
        health.consecutive_failures = 0;
    }

    /// Every update is a few stores on one entry, so a poisoned map is still consistent.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EndpointKey, Health, FxBuild>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
