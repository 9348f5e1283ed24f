//! The resiliency counters of [`super::PrometheusMetrics`] (issue 11):
//!
//! - `meshwork_retries_total{service,reason}`
//! - `meshwork_retry_budget_exhausted_total{service}`
//! - `meshwork_timeouts_total{service,kind}`
//! - `meshwork_ejections_total{service,endpoint}`
//! - `meshwork_circuit_open_total{service,endpoint,limit}`
//! - `meshwork_opaque_connections_total{direction,service,outcome}` (opaque TCP)
//!
//! Counted as the request metrics are: a read-locked lookup of a `Copy` key and a relaxed
//! add, the write lock only for a label set's first event. Endpoints are labelled by address:
//! bounded by the endpoints the snapshots named.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use policy::hasher::FxBuildHasher as FxBuild;

use crate::exposition::{self, Kind};
use crate::forward_error::{OverloadLimit, TimeoutKind};
use crate::label::Label;
use crate::metrics::{Direction, OpaqueOutcome, RetryReason};

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct ResilienceCounters {
    pub(super) retries: Counters<(Label, RetryReason)>,
    pub(super) budget_exhausted: Counters<Label>,
    pub(super) timeouts: Counters<(Label, TimeoutKind)>,
    pub(super) ejections: Counters<(Label, SocketAddr)>,
    pub(super) circuit_open: Counters<(Label, SocketAddr, OverloadLimit)>,
    /// Opaque TCP connections by direction, service and outcome (not resiliency, but the
    /// same kind of keyed counter).
    pub(super) opaque: Counters<(Direction, Label, OpaqueOutcome)>,
}

/// One counter family's series, by label set.
#[derive(Debug)]
pub(super) struct Counters<K> {
    series: RwLock<HashMap<K, AtomicU64, FxBuild>>,
}

impl<K> Default for Counters<K> {
    fn default() -> Self {
        Counters {
            series: RwLock::new(HashMap::default()),
        }
    }
}

impl<K: Copy + Eq + Hash> Counters<K> {
    /// Adds one to `key`'s series.
    pub(super) fn add(&self, key: K) {
        {
            let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(count) = series.get(&key) {
                // Relaxed: an independent counter.
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        series
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every series as label values and count, in label order.
    fn samples<const N: usize>(
        &self,
        labels: impl Fn(&K) -> [String; N],
    ) -> Vec<([String; N], u64)> {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        let mut samples: Vec<([String; N], u64)> = series
            .iter()
            .map(|(key, count)| (labels(key), count.load(Ordering::Relaxed)))
            .collect();
        drop(series);
        samples.sort();
        samples
    }
}

impl ResilienceCounters {
    /// Writes the six families.
    pub(super) fn encode(&self, out: &mut String) {
        let samples = self
            .retries
            .samples(|(service, reason)| [service.as_str().into(), reason.as_str().into()]);
        write_family(
            out,
            "meshwork_retries",
            "Requests sent again, by service and the reason of the retry",
            ["service", "reason"],
            &samples,
        );
        let samples = self
            .budget_exhausted
            .samples(|service| [service.as_str().into()]);
        write_family(
            out,
            "meshwork_retry_budget_exhausted",
            "Retries the service's retry budget refused (the failure went to the caller)",
            ["service"],
            &samples,
        );
        let samples = self
            .timeouts
            .samples(|(service, kind)| [service.as_str().into(), kind.as_str().into()]);
        write_family(
            out,
            "meshwork_timeouts",
            "Route timeouts that fired, by service and kind (request or try)",
            ["service", "kind"],
            &samples,
        );
        let samples = self
            .ejections
            .samples(|(service, endpoint)| [service.as_str().into(), endpoint.to_string()]);
        write_family(
            out,
            "meshwork_ejections",
            "Endpoints ejected by outlier detection, by service and endpoint address",
            ["service", "endpoint"],
            &samples,
        );
        let samples = self.circuit_open.samples(|(service, endpoint, limit)| {
            [
                service.as_str().into(),
                endpoint.to_string(),
                limit.as_str().into(),
            ]
        });
        write_family(
            out,
            "meshwork_circuit_open",
            "Requests refused with a 503 because an endpoint was at a circuit-breaker cap",
            ["service", "endpoint", "limit"],
            &samples,
        );
        let samples = self.opaque.samples(|(direction, service, outcome)| {
            [
                direction.as_str().into(),
                service.as_str().into(),
                outcome.as_str().into(),
            ]
        });
        write_family(
            out,
            "meshwork_opaque_connections",
            "Opaque TCP connections between sidecars, by direction, service and outcome \
             (spliced, denied by policy, refused, unreachable)",
            ["direction", "service", "outcome"],
            &samples,
        );
    }
}

fn write_family<const N: usize>(
    out: &mut String,
    family: &str,
    help: &str,
    names: [&str; N],
    samples: &[([String; N], u64)],
) {
    exposition::family(out, family, Kind::Counter, help);
    let total = format!("{family}_total");
    for (values, count) in samples {
        let labels: [(&str, &str); N] = std::array::from_fn(|i| (names[i], values[i].as_str()));
        exposition::sample(out, &total, &labels, count);
    }
}
