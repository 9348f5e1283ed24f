//! Balancing: power-of-two-choices over peak-EWMA load among the endpoints of the service
//! a request goes to ([`Classified::backend`]), skipping endpoints the service's outlier
//! state ejects ([`OutlierDetector`]) and endpoints at their circuit-breaker cap; then the
//! request is sent by [`Endpoint`].
//!
//! The circuit breaker is two counters per endpoint: `maxPendingRequests`, requests sent to
//! the endpoint and still waiting for their response head (the estimator's in-flight
//! count), and `maxRequests`, requests open until their response body ends
//! ([`crate::endpoint_slot::open_requests`]). A full endpoint is a retryable `503`
//! ([`ForwardError::Overloaded`]).
//!
//! Why not `tower::balance::p2c::Balance`: it balances over a `Discover` stream of ready
//! services and owns them, while meshwork's endpoints are snapshot data shared by every
//! connection, their state must survive snapshot updates ([`EndpointSlot`]s are carried
//! over by the route table), and the pick must be able to exclude endpoints already tried.
//! So the pick is written here — two distinct random candidates, the lower
//! [`PeakEwma::cost`](crate::endpoint_slot::load::PeakEwma::cost) wins — over tower's
//! estimator arithmetic ([`crate::endpoint_slot::load`]).
//!
//! A request that provably never left (connect failure, connection closed before sending)
//! moves on to another endpoint, so a dead endpoint costs one failed connect, not a failed
//! request. One endpoint (the common case) skips the random draw and the clock.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use opentelemetry::KeyValue;
use rand::Rng;
use tokio::time::Instant;
use tower::Service;

use super::classify::Classified;
use super::endpoint::{Endpoint, Sent};
use crate::body::ProxyBody;
use crate::endpoint_slot::EndpointSlot;
use crate::forward_error::{ForwardError, OverloadLimit};
use crate::label::Label;
use crate::metrics::ProxyMetrics;
use crate::resilience::outlier::{Outcome, OutlierDetector};
use crate::resilience::timeout::TimeoutFlags;
use crate::routes::{MeshService, RouteTable};
use crate::span_notes::{self, bounded_value};

/// Picks an endpoint of `endpoints` not in `tried` (a bit per index, the first 64; the
/// caller bounds its tries, so endpoints past 64 cannot loop): two distinct random candidates
/// among those neither ejected nor full, the cheaper wins; when every untried endpoint is
/// ejected or full, the cheapest untried one anyway (failing the request outright would be
/// worse than trying an endpoint that may have recovered).
///
/// Each endpoint's health is read once per pick: in-flight counts and ejections change under
/// concurrent requests, and two reads could disagree (a candidate counted, then gone).
pub fn pick(
    endpoints: &[Arc<EndpointSlot>],
    tried: u64,
    (caps, outlier): ((u32, u32), Option<&OutlierDetector>),
    now: Instant,
) -> Option<usize> {
    let untried = |i: &usize| *i >= 64 || tried & (1 << i) == 0;
    if let [_only] = endpoints {
        return untried(&0).then_some(0);
    }
    let healthy = |i: &usize| {
        let slot = &endpoints[*i];
        let available = outlier.is_none_or(|o| o.is_available(slot.key(), now));
        available && slot.full(caps).is_none()
    };
    // Two distinct uniform candidates in one pass (reservoir sampling of size 2).
    let mut rng = rand::rng();
    let (mut pair, mut seen) = ([0usize; 2], 0usize);
    for i in (0..endpoints.len()).filter(untried).filter(healthy) {
        if seen < 2 {
            pair[seen] = i;
        } else if let Some(slot) = pair.get_mut(rng.random_range(0..=seen)) {
            *slot = i;
        }
        seen += 1;
    }
    match seen {
        0 => fallback(endpoints, untried, caps, now),
        1 => Some(pair[0]),
        _ => {
            let (a, b) = (
                endpoints[pair[0]].load().cost(now),
                endpoints[pair[1]].load().cost(now),
            );
            let first = a < b || (a == b && rng.random_bool(0.5));
            Some(if first { pair[0] } else { pair[1] })
        }
    }
}

/// No untried endpoint is healthy: an ejected one rather than none; a full one only when all
/// are (the caller then refuses: the circuit is open).
fn fallback(
    endpoints: &[Arc<EndpointSlot>],
    untried: impl Fn(&usize) -> bool,
    caps: (u32, u32),
    now: Instant,
) -> Option<usize> {
    let cost = |i: &usize| {
        let slot = &endpoints[*i];
        (slot.full(caps).is_some(), slot.load().cost(now))
    };
    (0..endpoints.len()).filter(untried).min_by(|a, b| {
        let (a, b) = (cost(a), cost(b));
        a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
    })
}

/// The balancing service: the innermost of the mesh stack (it sends through [`Endpoint`],
/// which is not a tower service of its own: the send and the loop over endpoints share the
/// one boxed future of the mesh path).
#[derive(Clone)]
pub struct Balance {
    /// One `Arc`: cloned into every request's future.
    shared: Arc<Shared>,
}

struct Shared {
    endpoint: Endpoint,
    metrics: Arc<dyn ProxyMetrics>,
}

impl Balance {
    /// Balances, then sends through `endpoint`; ejections and open circuits are counted in
    /// `metrics`.
    pub fn new(endpoint: Endpoint, metrics: Arc<dyn ProxyMetrics>) -> Self {
        let shared = Arc::new(Shared { endpoint, metrics });
        Balance { shared }
    }
}

impl Service<Request<ProxyBody>> for Balance {
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    // The one box of the mesh path: dialling and the exchange are async.
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { balance(&this, request).await })
    }
}

async fn balance(
    this: &Balance,
    mut request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let (table, backend, report_peer) = destination(&request)?;
    // invariant: `destination` checked that the backend is a service of this table.
    let Some(service) = table.service_at(backend) else {
        return Err(unclassified());
    };
    let policy = service.traffic().policy();
    // A cap of 0 is no cap.
    let cap = |max: u32| Some(max).filter(|&max| max > 0).unwrap_or(u32::MAX);
    let breaker = &policy.circuit_breaker;
    let caps = (cap(breaker.max_pending_requests), cap(breaker.max_requests));
    // Only a choice needs the outlier state: one endpoint is never ejected.
    let outlier = (service.endpoints().len() > 1).then(|| {
        let label = Label::intern(service.name());
        let metrics = Arc::clone(&this.shared.metrics);
        service.outlier(|| OutlierDetector::new(label, &policy.outlier_detection, metrics))
    });
    // The clock is read only when there is a choice to make.
    let now = outlier.is_some().then(Instant::now);
    let (mut tried, mut last_failure) = (0u64, None);
    // At most one try per endpoint: `tried` has a bit for the first 64 only.
    let mut tries_left = service.endpoints().len();
    while let Some(index) = match now {
        _ if tries_left == 0 => None,
        Some(now) => pick(service.endpoints(), tried, (caps, outlier), now),
        None => (tried == 0 && !service.endpoints().is_empty()).then_some(0),
    } {
        tries_left -= 1;
        if index < 64 {
            tried |= 1 << index;
        }
        let slot = &service.endpoints()[index];
        if let Some(full) = slot.full(caps) {
            return Err(this.overloaded(service, slot, full));
        }
        match send(this, service, outlier, slot, request, report_peer).await {
            Ok(response) => return Ok(response),
            Err(Failed::Final(error)) => return Err(error),
            Err(Failed::Unsent {
                request: unsent,
                reason,
            }) => {
                last_failure = Some(reason);
                request = unsent;
            }
        }
    }
    Err(ForwardError::PeerUnavailable {
        service: service.name().to_owned(),
        reason: last_failure.unwrap_or_else(|| "the service has no endpoints".to_owned()),
    })
}

impl Balance {
    /// The refusal of a request every endpoint of `service` is too full for (counted).
    fn overloaded(
        &self,
        service: &MeshService,
        slot: &EndpointSlot,
        (limit, max): (OverloadLimit, u32),
    ) -> ForwardError {
        let endpoint = slot.key().addr;
        let label = Label::intern(service.name());
        self.shared.metrics.circuit_open(label, endpoint, limit);
        ForwardError::Overloaded {
            service: service.name().to_owned(),
            endpoint,
            limit,
            max,
        }
    }
}

/// The table, the service the request goes to (its index) and whether the answering peer
/// must be reported, from the request's [`Classified`].
fn destination(
    request: &Request<ProxyBody>,
) -> Result<(Arc<RouteTable>, usize, bool), ForwardError> {
    let classified = request
        .extensions()
        .get::<Classified>()
        .ok_or_else(unclassified)?;
    let table = &classified.table;
    let Some(backend) = classified
        .backend
        .filter(|&i| table.service_at(i).is_some())
    else {
        let parent = classified.mesh_service();
        return Err(ForwardError::NoRoute {
            service: parent.map_or_else(String::new, |s| s.name().to_owned()),
            reason: "the route rule's backend is not a mesh service, or has weight 0".to_owned(),
        });
    };
    let report_peer = classified
        .service
        .and_then(|i| table.classifier().labels_at(i))
        .is_some_and(|labels| labels.peer().is_none());
    Ok((Arc::clone(table), backend, report_peer))
}

/// How one endpoint failed a request.
enum Failed {
    /// Nothing was sent: another endpoint may take it.
    Unsent {
        request: Request<ProxyBody>,
        reason: String,
    },
    /// Final for this request.
    Final(ForwardError),
}

/// Sends to one endpoint, keeping its load and outlier state.
async fn send(
    this: &Balance,
    service: &MeshService,
    outlier: Option<&OutlierDetector>,
    slot: &Arc<EndpointSlot>,
    request: Request<ProxyBody>,
    report_peer: bool,
) -> Result<Response<ProxyBody>, Failed> {
    let policy = service.traffic().policy();
    let several = service.endpoints().len() > 1;
    let timeouts = request.extensions().get::<TimeoutFlags>();
    let mut attempt = Attempt::start(outlier, slot, several, timeouts.cloned());
    let sent = this.shared.endpoint.send(slot, request, policy).await;
    match sent {
        Sent::Answered(mut response) => {
            attempt.finish(Some(!response.status().is_server_error()));
            if report_peer {
                let peer = crate::telemetry::AnsweredBy(slot.peer());
                response.extensions_mut().insert(peer);
            }
            Ok(response)
        }
        Sent::Unsent {
            request,
            reason,
            connect,
        } => {
            // A stale pooled connection says nothing about the endpoint.
            attempt.finish(connect.then_some(false));
            tracing::info!(service = service.name(), error = %reason, "endpoint failed; trying the next");
            if let Some(notes) = span_notes::notes(&request) {
                let endpoint = KeyValue::new("meshwork.endpoint", slot.key().addr.to_string());
                let error = KeyValue::new("error.message", bounded_value(&reason));
                notes.event("endpoint_failed", vec![endpoint, error]);
            }
            Err(Failed::Unsent { request, reason })
        }
        Sent::Failed(error) => {
            attempt.finish(Some(false));
            Err(Failed::Final(ForwardError::PeerRequest {
                service: service.name().to_owned(),
                retryable: false,
                source: error,
            }))
        }
    }
}

/// One request in flight on an endpoint until its response head (or failure).
///
/// Dropped unfinished, it was given up on before its head: by a route timeout — a stalled
/// endpoint is what timeouts find, so that is a failure, with the time waited as its round
/// trip — or by the caller (its own timeout, Ctrl-C, a reset of its h2 stream), which says
/// nothing about the endpoint's health: no outcome, else impatient callers would eject
/// healthy replicas; the time waited still raises the load estimate as a lower bound of
/// the round trip. The [`TimeoutFlags`] the try carried tell the two apart.
struct Attempt<'a> {
    outlier: Option<&'a OutlierDetector>,
    slot: &'a EndpointSlot,
    /// Measured only when there is a choice to make.
    started: Option<Instant>,
    /// The route timeouts bounding the try (none: the route has none).
    timeouts: Option<TimeoutFlags>,
    done: bool,
}

impl<'a> Attempt<'a> {
    /// A try on `slot`, one of `several` endpoints or the only one, bounded by `timeouts`.
    fn start(
        outlier: Option<&'a OutlierDetector>,
        slot: &'a EndpointSlot,
        several: bool,
        timeouts: Option<TimeoutFlags>,
    ) -> Self {
        slot.load().start();
        Attempt {
            outlier,
            slot,
            started: several.then(Instant::now),
            timeouts,
            done: false,
        }
    }

    /// Ends the attempt; `success`: what it says about the endpoint, if anything.
    fn finish(&mut self, success: Option<bool>) {
        self.end(success, false);
    }

    /// Ends the attempt; `abandoned`: no answer came, its round trip is only a lower bound.
    fn end(&mut self, success: Option<bool>, abandoned: bool) {
        self.done = true;
        let waited = self.started.map(|started| {
            let now = Instant::now();
            (now.duration_since(started), now)
        });
        match waited {
            Some((waited, now)) if abandoned => self.slot.load().abandon(waited, now),
            waited => self.slot.load().finish(waited),
        }
        if let (Some(success), Some((_, now)), Some(outlier)) = (success, waited, self.outlier) {
            let outcome = if success {
                Outcome::Success
            } else {
                Outcome::Failure
            };
            // The detector counts ejections in the metrics itself.
            outlier.record(self.slot.key(), outcome, now);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.timeouts.as_ref().is_some_and(TimeoutFlags::fired) {
            self.finish(Some(false));
        } else {
            self.end(None, true);
        }
    }
}

fn unclassified() -> ForwardError {
    ForwardError::BadRequest {
        reason: "request was not classified".to_owned(),
    }
}

#[cfg(test)]
mod tests;
