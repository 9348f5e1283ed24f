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

/// Picks an endpoint of `endpoints` not in `tried` (a bit per index, the first 64): two
/// distinct random candidates among those neither ejected nor full, the cheaper wins; when
/// every untried endpoint is ejected or full, the cheapest untried one anyway (failing the
/// request outright would be worse than trying an endpoint that may have recovered).
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
    let count = (0..endpoints.len()).filter(untried).filter(healthy).count();
    if count == 0 {
        // Ejected endpoints rather than none; a full one only when all are (the caller
        // then refuses: the circuit is open).
        let cost = |i: &usize| {
            let slot = &endpoints[*i];
            (slot.full(caps).is_some(), slot.load().cost(now))
        };
        return (0..endpoints.len()).filter(untried).min_by(|a, b| {
            let (a, b) = (cost(a), cost(b));
            a.0.cmp(&b.0).then(a.1.total_cmp(&b.1))
        });
    }
    let nth = |n: usize| (0..endpoints.len()).filter(untried).filter(healthy).nth(n);
    let mut rng = rand::rng();
    let a = rng.random_range(0..count);
    if count == 1 {
        return nth(a);
    }
    // A second, distinct candidate: draw from the others.
    let b = (a + rng.random_range(1..count)) % count;
    let (a, b) = (nth(a)?, nth(b)?);
    let cheaper = endpoints[a].load().cost(now) <= endpoints[b].load().cost(now);
    Some(if cheaper { a } else { b })
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
    while let Some(index) = match now {
        Some(now) => pick(service.endpoints(), tried, (caps, outlier), now),
        None => (tried == 0 && !service.endpoints().is_empty()).then_some(0),
    } {
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
        return Err(ForwardError::PeerUnavailable {
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::Duration;

    use api::contract::traffic::OutlierDetection;
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::forward_error::TimeoutKind;
    use crate::metrics::NoMetrics;
    use crate::resilience::EndpointKey;
    use crate::resilience::timeout::TimeoutLayer;

    fn slots(n: u16) -> Vec<Arc<EndpointSlot>> {
        (0..n)
            .map(|port| {
                Arc::new(EndpointSlot::new(EndpointKey {
                    addr: ([127, 0, 0, 1], port).into(),
                    identity: "spiffe://meshwork.local/ns/default/sa/billing"
                        .parse()
                        .unwrap(),
                }))
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn the_less_loaded_of_two_wins_and_tried_endpoints_are_skipped() {
        let endpoints = slots(2);
        let now = Instant::now();
        endpoints[0].load().start();
        endpoints[0]
            .load()
            .finish(Some((Duration::from_millis(50), now)));
        for _ in 0..100 {
            assert_eq!(pick(&endpoints, 0, ((1024, u32::MAX), None), now), Some(1));
        }
        assert_eq!(
            pick(&endpoints, 0b10, ((1024, u32::MAX), None), now),
            Some(0)
        );
        assert_eq!(pick(&endpoints, 0b11, ((1024, u32::MAX), None), now), None);
        assert_eq!(pick(&slots(1), 0, ((1024, u32::MAX), None), now), Some(0));
        assert_eq!(pick(&slots(1), 1, ((1024, u32::MAX), None), now), None);
        assert_eq!(pick(&[], 0, ((1024, u32::MAX), None), now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn endpoints_at_max_requests_are_avoided_until_a_body_ends() {
        let endpoints = slots(2);
        let now = Instant::now();
        let open = crate::endpoint_slot::open_requests::OpenRequest::begin(&endpoints[0]);
        assert_eq!(
            endpoints[0].full((1024, 1)),
            Some((OverloadLimit::Requests, 1))
        );
        for _ in 0..100 {
            assert_eq!(pick(&endpoints, 0, ((1024, 1), None), now), Some(1));
        }
        drop(open);
        assert_eq!(endpoints[0].full((1024, 1)), None);
    }

    #[tokio::test(start_paused = true)]
    async fn full_endpoints_are_avoided_while_another_has_room() {
        let endpoints = slots(3);
        let now = Instant::now();
        endpoints[1].load().start();
        for _ in 0..100 {
            assert_ne!(pick(&endpoints, 0, ((1, u32::MAX), None), now), Some(1));
        }
        // Every untried endpoint full: picked, for the caller to refuse.
        assert_eq!(pick(&endpoints, 0b101, ((1, u32::MAX), None), now), Some(1));
        let config = OutlierDetection {
            consecutive_failures: 1,
            ..OutlierDetection::default()
        };
        let outlier = OutlierDetector::new(Label::intern("billing"), &config, Arc::new(NoMetrics));
        outlier.set_endpoints(endpoints.iter().map(|slot| slot.key()));
        assert!(outlier.record(endpoints[0].key(), Outcome::Failure, now));
        assert_eq!(
            pick(&endpoints, 0b100, ((1, u32::MAX), Some(&outlier)), now),
            Some(0),
            "ejected beats full"
        );
        for _ in 0..100 {
            let picked = pick(&endpoints, 0, ((1024, u32::MAX), Some(&outlier)), now);
            assert_ne!(
                picked,
                Some(0),
                "ejected: not picked while others are available"
            );
        }
    }

    /// Two endpoints under outlier detection that ejects at the first failure, and a
    /// service that starts an [`Attempt`] on the first for each request and never answers.
    fn stalled_first_endpoint() -> (
        Arc<OutlierDetector>,
        Arc<EndpointSlot>,
        impl Service<
            Request<ProxyBody>,
            Response = Response<ProxyBody>,
            Error = ForwardError,
            Future: Send + 'static,
        > + Clone,
    ) {
        let endpoints = slots(2);
        let config = OutlierDetection {
            consecutive_failures: 1,
            ..OutlierDetection::default()
        };
        let outlier = OutlierDetector::new(Label::intern("billing"), &config, Arc::new(NoMetrics));
        outlier.set_endpoints(endpoints.iter().map(|slot| slot.key()));
        let (outlier, slot) = (Arc::new(outlier), Arc::clone(&endpoints[0]));
        let (o, s) = (Arc::clone(&outlier), Arc::clone(&slot));
        let service = tower::service_fn(move |request: Request<ProxyBody>| {
            let (outlier, slot) = (Arc::clone(&o), Arc::clone(&s));
            let timeouts = request.extensions().get::<TimeoutFlags>().cloned();
            async move {
                let _attempt = Attempt::start(Some(&outlier), &slot, true, timeouts);
                std::future::pending::<Result<Response<ProxyBody>, ForwardError>>().await
            }
        });
        (outlier, slot, service)
    }

    fn try_timeout(after: Duration) -> TimeoutLayer {
        let metrics = Arc::new(NoMetrics);
        TimeoutLayer::new(after, TimeoutKind::Try, Label::intern("billing"), metrics)
    }

    fn get() -> Request<ProxyBody> {
        Request::get("http://billing/charges")
            .body(crate::body::empty())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_a_route_timeout_gave_up_on_is_a_failure_of_its_endpoint() {
        let (outlier, slot, upstream) = stalled_first_endpoint();
        let service = try_timeout(Duration::from_millis(200)).layer(upstream);
        let error = service.oneshot(get()).await.unwrap_err();
        assert!(matches!(error, ForwardError::Timeout { .. }), "{error:?}");
        assert!(
            !outlier.is_available(slot.key(), Instant::now()),
            "ejected: a mesh timeout found it stalled"
        );
        assert_eq!(slot.load().in_flight(), 0);
        assert!(
            slot.load().cost(Instant::now()) > 199e6,
            "the wait is its RTT"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_its_caller_gave_up_on_says_nothing_about_its_endpoint() {
        // Under a route timeout that did not fire, and without any route timeout.
        let (outlier, slot, upstream) = stalled_first_endpoint();
        let timed = try_timeout(Duration::from_secs(10)).layer(upstream.clone());
        let untimed = upstream;
        let waited = Duration::from_millis(200);
        let gave_up = tokio::time::timeout(waited, timed.oneshot(get())).await;
        assert!(gave_up.is_err(), "the caller went away first");
        let gave_up = tokio::time::timeout(waited, untimed.oneshot(get())).await;
        assert!(gave_up.is_err(), "the caller went away first");
        assert!(
            outlier.is_available(slot.key(), Instant::now()),
            "not ejected: impatient callers are no failure of the endpoint"
        );
        assert_eq!(slot.load().in_flight(), 0);
        assert!(
            slot.load().cost(Instant::now()) > 199e6,
            "the time waited is a lower bound of its round trip"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_endpoint_gets_a_share_when_loads_are_equal() {
        let endpoints = slots(3);
        let now = Instant::now();
        let mut seen = [0u32; 3];
        for _ in 0..300 {
            seen[pick(&endpoints, 0, ((1024, u32::MAX), None), now).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
