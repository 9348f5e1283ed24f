//! `Service` `spec.traffic`: meshwork's own resiliency knobs, for what the Gateway API has no
//! field for (connect and idle timeouts, outlier ejection, circuit breaking) and the retry
//! budget (GEP-3388's `retryConstraint`, which upstream puts on a `BackendTrafficPolicy`).
//! Every field is bounded and optional; omitted ones take [`TrafficPolicy::default`]'s value.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounded::BoundedU32;
use crate::contract::traffic::{CircuitBreaker, OutlierDetection, RetryBudget, TrafficPolicy};
use crate::duration::BoundedDuration;

/// `connectTimeout`: 10 ms to 1 min.
pub type ConnectTimeout = BoundedDuration<10, 60_000>;
/// `idleTimeout`: 1 s to 1 h.
pub type IdleTimeout = BoundedDuration<1_000, 3_600_000>;
/// GEP-3388's intervals: 1 s to 1 h.
pub type BudgetInterval = BoundedDuration<1_000, 3_600_000>;
/// A percentage, 0–100.
pub type Percent = BoundedU32<0, 100>;
/// `minRetryRate.count`: 0–1,000,000.
pub type RetryCount = BoundedU32<0, 1_000_000>;
/// `consecutiveFailures`: 0 (never eject) to 1000.
pub type ConsecutiveFailures = BoundedU32<0, 1_000>;
/// Ejection times: 100 ms to 1 h.
pub type EjectionTime = BoundedDuration<100, 3_600_000>;
/// Circuit-breaker caps: 1 to 1,000,000 requests.
pub type RequestCap = BoundedU32<1, 1_000_000>;

/// `spec.traffic` of a `Service`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficSpec {
    /// TCP, TLS and HTTP handshake to one endpoint, 10ms–1m (default 5s).
    #[serde(default)]
    pub connect_timeout: Option<ConnectTimeout>,
    /// A pooled connection idle this long is closed, 1s–1h (default 90s).
    #[serde(default)]
    pub idle_timeout: Option<IdleTimeout>,
    /// Caps retries across every request to the service (GEP-3388's shape).
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetSpec>,
    /// Ejects endpoints that keep failing.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetectionSpec>,
    /// Per-endpoint caps on waiting and in-flight requests.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerSpec>,
}

/// `retryBudget`: retries may add `percent` % of the requests of the last `interval`, plus
/// `minRetryRate.count` per `minRetryRate.interval` whatever the traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudgetSpec {
    /// 0–100 (default 20).
    #[serde(default)]
    pub percent: Option<Percent>,
    /// 1s–1h (default 10s).
    #[serde(default)]
    pub interval: Option<BudgetInterval>,
    /// The floor below which retries are always allowed.
    #[serde(default)]
    pub min_retry_rate: Option<MinRetryRateSpec>,
}

/// `retryBudget.minRetryRate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MinRetryRateSpec {
    /// 0–1,000,000 (default 10).
    #[serde(default)]
    pub count: Option<RetryCount>,
    /// 1s–1h (default 1s).
    #[serde(default)]
    pub interval: Option<BudgetInterval>,
}

/// `outlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetectionSpec {
    /// Consecutive failures (5xx answers, connect failures, resets, route timeouts) that eject
    /// an endpoint, 0–1000
    /// (default 5; 0 never ejects).
    #[serde(default)]
    pub consecutive_failures: Option<ConsecutiveFailures>,
    /// The first ejection's length, doubled on each further ejection, 100ms–1h (default 30s).
    #[serde(default)]
    pub base_ejection_time: Option<EjectionTime>,
    /// The longest ejection, 100ms–1h and at least `baseEjectionTime` (default 5m).
    #[serde(default)]
    pub max_ejection_time: Option<EjectionTime>,
    /// At most this share of the endpoints is ejected at once, 0–100 (default 50); the last
    /// endpoint never is.
    #[serde(default)]
    pub max_ejected_percent: Option<Percent>,
}

/// `circuitBreaker`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerSpec {
    /// Requests sent to one endpoint and still waiting for their response head, 1–1,000,000
    /// (default 1024).
    #[serde(default)]
    pub max_pending_requests: Option<RequestCap>,
    /// Requests in flight on one endpoint, 1–1,000,000 (default 1024).
    #[serde(default)]
    pub max_requests: Option<RequestCap>,
}

fn ms<const MIN: u64, const MAX: u64>(d: Option<BoundedDuration<MIN, MAX>>, or: u64) -> u64 {
    d.map_or(or, |d| {
        u64::try_from(d.get().as_millis()).unwrap_or(u64::MAX)
    })
}

impl TrafficSpec {
    /// The knobs with defaults applied, as the snapshot carries them.
    pub fn policy(&self) -> TrafficPolicy {
        let d = TrafficPolicy::default();
        let budget = self.retry_budget.clone().unwrap_or_default();
        let rate = budget.min_retry_rate.clone().unwrap_or_default();
        let outlier = self.outlier_detection.clone().unwrap_or_default();
        let breaker = self.circuit_breaker.clone().unwrap_or_default();
        let (db, dout, dcb) = (&d.retry_budget, &d.outlier_detection, &d.circuit_breaker);
        TrafficPolicy {
            connect_timeout_ms: ms(self.connect_timeout, d.connect_timeout_ms),
            idle_timeout_ms: ms(self.idle_timeout, d.idle_timeout_ms),
            retry_budget: RetryBudget {
                percent: budget.percent.map_or(db.percent, |p| p.get()),
                interval_ms: ms(budget.interval, db.interval_ms),
                min_retry_rate_count: rate.count.map_or(db.min_retry_rate_count, |c| c.get()),
                min_retry_rate_interval_ms: ms(rate.interval, db.min_retry_rate_interval_ms),
            },
            outlier_detection: OutlierDetection {
                consecutive_failures: outlier
                    .consecutive_failures
                    .map_or(dout.consecutive_failures, |c| c.get()),
                base_ejection_ms: ms(outlier.base_ejection_time, dout.base_ejection_ms),
                max_ejection_ms: ms(outlier.max_ejection_time, dout.max_ejection_ms),
                max_ejected_percent: outlier
                    .max_ejected_percent
                    .map_or(dout.max_ejected_percent, |p| p.get()),
            },
            circuit_breaker: CircuitBreaker {
                max_pending_requests: breaker
                    .max_pending_requests
                    .map_or(dcb.max_pending_requests, |c| c.get()),
                max_requests: breaker.max_requests.map_or(dcb.max_requests, |c| c.get()),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn omitted_knobs_take_the_contract_defaults() {
        assert_eq!(TrafficSpec::default().policy(), TrafficPolicy::default());
        let spec: TrafficSpec = serde_json::from_value(serde_json::json!({
            "connectTimeout": "250ms",
            "retryBudget": {"percent": 50, "minRetryRate": {"count": 3}},
            "outlierDetection": {"baseEjectionTime": "2s", "maxEjectionTime": "10s"},
            "circuitBreaker": {"maxRequests": 64},
        }))
        .unwrap();
        let p = spec.policy();
        assert_eq!(p.connect_timeout_ms, 250);
        assert_eq!(p.idle_timeout_ms, 90_000);
        assert_eq!(p.retry_budget.percent, 50);
        assert_eq!(p.retry_budget.interval_ms, 10_000);
        assert_eq!(p.retry_budget.min_retry_rate_count, 3);
        assert_eq!(p.retry_budget.min_retry_rate_interval_ms, 1_000);
        assert_eq!(p.outlier_detection.base_ejection_ms, 2_000);
        assert_eq!(p.outlier_detection.max_ejection_ms, 10_000);
        assert_eq!(p.outlier_detection.consecutive_failures, 5);
        assert_eq!(p.circuit_breaker.max_requests, 64);
        assert_eq!(p.circuit_breaker.max_pending_requests, 1_024);
    }
}
