//! The telemetry layer: labels every request with its service, route template, method and
//! peer, and reports it with its status and duration to [`ProxyMetrics::request`] when the
//! response head is ready. Outermost on both stacks, so refusals (400, 403, 502 …) count
//! and the duration covers everything the sidecar does.
//!
//! - **Inbound:** service = the backed service the host names, else the first one this
//!   workload backs (as authorization decides), else `[none]`; peer = the verified caller
//!   ([`PeerIdentity`]).
//! - **Outbound:** read from the request's classification by the outbound stack's own
//!   [`RequestLabels`] (`outbound::labels`; the classify layer above runs once per
//!   request, nothing is parsed again): service = the mesh service the target names, else
//!   `[egress]` (`[none]` for an unusable target); peer = the identity of the service's
//!   endpoints — or, when endpoints of several identities back it, of the one that
//!   answered (the balancer reports it as [`AnsweredBy`]).
//! - **Route:** the service's first matching template ([`crate::route_classifier`]), else
//!   `[unmatched]`; raw paths and hosts never become labels.
//!
//! The labelling is a type parameter of the layer, so each stack's is called directly.
//! Requests whose caller goes away before the response head are not counted.
//!
//! **Denials:** a `403` is recorded as denied (for `/decisions`, `/stats` and the tap) when
//! this sidecar refused it — the [`Denied`] extension of [`crate::denial::forbidden`]
//! (inbound authorization, egress policy) — or, outbound only, when a mesh peer's sidecar
//! did: its `403` carries [`DECISION_ID_HEADER`], which peers strip from their apps'
//! responses ([`RequestLabels::PEER_DENIALS`]). Inbound, a header is never evidence (the
//! app's responses are stripped of `x-meshwork-*` anyway).
//!
//! **Tap:** while someone taps ([`TapHub::is_tapped`], one relaxed load), the request
//! headers a tapper listed are kept — only while some tap lists headers
//! ([`TapHub::lists_headers`], another relaxed load; the dashboard's denied-only tap lists
//! none) — and the finished request is published with its denial and — tracing on — its
//! trace id ([`TracedAs`]); otherwise nothing is built. The metrics recorder and the hub
//! share one `Arc`, so a request costs one reference count whether tapped or not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime};

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use identity::SpiffeId;
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::denial::{DECISION_ID_HEADER, Denied};
use crate::forward_error::ForwardError;
use crate::label::{Label, MethodLabel, NONE, UNMATCHED};
use crate::metrics::{Direction, ProxyMetrics, RequestRecord};
use crate::routes::{RouteTable, Routes};
use crate::server::PeerIdentity;
use crate::tap::{TapHub, Tapped};
use crate::trace_context::TraceId;

/// Response extension: the identity of the peer sidecar that answered, set by the
/// outbound balancer for services whose endpoints present several identities.
#[derive(Debug, Clone, Copy)]
pub struct AnsweredBy(pub Label);

/// Response extension: the request's trace id, set by the trace layer below (only with
/// tracing on), for the tap.
#[derive(Debug, Clone, Copy)]
pub struct TracedAs(pub TraceId);

/// Request extension: the labels the telemetry layer gave a request, for the trace layer
/// below it (put there only when the layer was built [`TelemetryLayer::publishing`]), so
/// that the request is labelled once.
#[derive(Debug, Clone, Copy)]
pub struct Labelled {
    /// The mesh service, `[none]` or `[egress]`.
    pub service: Label,
    /// The route template, or `[unmatched]`.
    pub route: Label,
    /// The peer, when known before the response (else the response's [`AnsweredBy`]).
    pub peer: Option<Label>,
}

/// How a stack labels its requests before sending them on.
pub trait RequestLabels: Clone + Send + Sync + 'static {
    /// The direction the stack's requests are counted under.
    const DIRECTION: Direction;

    /// Whether a `403` carrying [`DECISION_ID_HEADER`] without a [`Denied`] extension is a
    /// denial: true only outbound, where such a response comes from a mesh peer's sidecar
    /// (which strips its app's `x-meshwork-*` fields; egress servers' are stripped here).
    const PEER_DENIALS: bool;

    /// Service, route and — when known up front — peer of `request` (`None`: taken from
    /// the response's [`AnsweredBy`]).
    fn labels(&self, request: &Request<ProxyBody>) -> (Label, Label, Option<Label>);
}

/// Tower layer recording request metrics (see the [module docs](self)), labelling
/// requests with `L`.
#[derive(Clone)]
pub struct TelemetryLayer<L> {
    sinks: Arc<Sinks>,
    labels: L,
    publish: bool,
}

/// Where finished requests go: one `Arc` cloned per request.
struct Sinks {
    metrics: Arc<dyn ProxyMetrics>,
    tap: Option<Arc<TapHub>>,
}

impl<L: RequestLabels> TelemetryLayer<L> {
    /// Records every request into `metrics`, labelled by `labels`.
    pub fn new(labels: L, metrics: Arc<dyn ProxyMetrics>) -> Self {
        TelemetryLayer {
            sinks: Arc::new(Sinks { metrics, tap: None }),
            labels,
            publish: false,
        }
    }

    /// Also publishes finished requests to `tap` while someone taps.
    pub fn tapped(mut self, tap: Arc<TapHub>) -> Self {
        let metrics = Arc::clone(&self.sinks.metrics);
        self.sinks = Arc::new(Sinks {
            metrics,
            tap: Some(tap),
        });
        self
    }

    /// Also puts each request's labels on it as [`Labelled`] (for a trace layer below).
    pub fn publishing(mut self, publish: bool) -> Self {
        self.publish = publish;
        self
    }
}

impl TelemetryLayer<InboundLabels> {
    /// For the inbound stack of the workload whose SVID is `own`.
    pub fn inbound(routes: Routes, own: SpiffeId, metrics: Arc<dyn ProxyMetrics>) -> Self {
        let own = Arc::new(own);
        TelemetryLayer::new(InboundLabels { routes, own }, metrics)
    }
}

/// The inbound stack's labels: from the routes and this workload's identity (which
/// services a request can be for) and the verified caller.
#[derive(Clone)]
pub struct InboundLabels {
    routes: Routes,
    own: Arc<SpiffeId>,
}

impl RequestLabels for InboundLabels {
    const DIRECTION: Direction = Direction::Inbound;
    const PEER_DENIALS: bool = false;

    fn labels(&self, request: &Request<ProxyBody>) -> (Label, Label, Option<Label>) {
        inbound_labels(&self.routes.load(), &self.own, request)
    }
}

impl<S, L: Clone> Layer<S> for TelemetryLayer<L> {
    type Service = Telemetry<S, L>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`TelemetryLayer`].
#[derive(Clone)]
pub struct Telemetry<S, L> {
    inner: S,
    layer: TelemetryLayer<L>,
}

/// The labels known before the response.
struct Pending {
    direction: Direction,
    service: Label,
    route: Label,
    method: MethodLabel,
    /// `None`: taken from the response's [`AnsweredBy`].
    peer: Option<Label>,
    start: Instant,
    sinks: Arc<Sinks>,
    /// Whether a `403` with [`DECISION_ID_HEADER`] alone is a denial.
    peer_denials: bool,
    /// The request headers some tap listed (empty unless one does).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl<S, L> Service<Request<ProxyBody>> for Telemetry<S, L>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Unpin,
    L: RequestLabels,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let start = Instant::now();
        let (service, route, peer) = self.layer.labels.labels(&request);
        if self.layer.publish {
            let labelled = Labelled {
                service,
                route,
                peer,
            };
            request.extensions_mut().insert(labelled);
        }
        let headers = match &self.layer.sinks.tap {
            Some(hub) if hub.is_tapped() && hub.lists_headers() => {
                hub.wanted_headers(request.headers())
            }
            _ => Vec::new(),
        };
        let pending = Pending {
            direction: L::DIRECTION,
            service,
            route,
            method: MethodLabel::of(request.method()),
            peer,
            start,
            sinks: Arc::clone(&self.layer.sinks),
            peer_denials: L::PEER_DENIALS,
            headers,
        };
        Recorded {
            inner: self.inner.call(request),
            pending: Some(pending),
        }
    }
}

/// The future of [`Telemetry`]: the inner one, reporting its outcome once.
pub struct Recorded<F> {
    inner: F,
    pending: Option<Pending>,
}

impl<F> Future for Recorded<F>
where
    F: Future<Output = Result<Response<ProxyBody>, ForwardError>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = ready!(Pin::new(&mut self.inner).poll(cx));
        if let Some(pending) = self.pending.take() {
            pending.record(&result);
        }
        Poll::Ready(result)
    }
}

impl Pending {
    fn record(self, result: &Result<Response<ProxyBody>, ForwardError>) {
        let (status, answered, denied) = match result {
            Ok(response) => (
                response.status(),
                response.extensions().get::<AnsweredBy>().map(|a| a.0),
                denial(response, self.peer_denials),
            ),
            Err(error) => (error.status(), None, None),
        };
        let peer = self.peer.or(answered).unwrap_or(NONE);
        let elapsed = self.start.elapsed();
        self.sinks.metrics.request(&RequestRecord {
            direction: self.direction,
            service: self.service,
            route: self.route,
            method: self.method,
            status,
            peer,
            elapsed,
            denied: denied.is_some(),
        });
        let Some(hub) = self.sinks.tap.as_ref().filter(|hub| hub.is_tapped()) else {
            return;
        };
        // Only denials while every tapper asked for denials only (the dashboard's standing
        // tap): the allowed majority is not built into events nobody reads.
        if denied.is_none() && !hub.wants_allowed() {
            return;
        }
        let trace_id = result
            .as_ref()
            .ok()
            .and_then(|r| r.extensions().get::<TracedAs>())
            .map(|t| t.0);
        hub.publish(Tapped {
            time: SystemTime::now(),
            direction: self.direction,
            service: self.service,
            route: self.route,
            method: self.method,
            status,
            peer,
            own: hub.own(),
            elapsed,
            denied,
            trace_id,
            headers: self.headers,
        });
    }
}

/// The policy denial `response` is, if any: this sidecar's own ([`Denied`]), else — only
/// with `peer_denials` (outbound) — a mesh peer's `403` carrying [`DECISION_ID_HEADER`].
/// A peer's denial has no policy or rule here: the caller's side only saw the 403.
fn denial(response: &Response<ProxyBody>, peer_denials: bool) -> Option<Denied> {
    if response.status() != StatusCode::FORBIDDEN {
        return None;
    }
    if let Some(own) = response.extensions().get::<Denied>() {
        return Some(own.clone());
    }
    if !peer_denials {
        return None;
    }
    let decision_id = response.headers().get(DECISION_ID_HEADER)?.clone();
    Some(Denied {
        decision_id,
        policy: None,
        rule: None,
    })
}

/// Service, route and peer of an inbound request.
fn inbound_labels<B>(
    table: &RouteTable,
    own: &SpiffeId,
    request: &Request<B>,
) -> (Label, Label, Option<Label>) {
    let service = table
        .classifier()
        .inbound_service(own, || request_host(request));
    let peer = request
        .extensions()
        .get::<PeerIdentity>()
        .map_or(NONE, |p| Label::intern(p.0.as_str()));
    match service {
        Some(labels) => (
            labels.service(),
            labels.route(request.uri().path_and_query()),
            Some(peer),
        ),
        None => (NONE, UNMATCHED, Some(peer)),
    }
}

/// The request's host without port: the URI's authority (absolute-form, authority-form,
/// h2 `:authority`), else the `Host` header's. Borrowed: nothing is copied per request.
/// Userinfo is not split off: such a host names no service.
pub(crate) fn request_host<B>(request: &Request<B>) -> Option<&str> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.as_str(),
        None => request.headers().get(http::header::HOST)?.to_str().ok()?,
    };
    Some(without_port(authority))
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`. (A byte scan: these are a few bytes long,
/// and `Authority::host` or a `str` searcher cost several times more per request.)
fn without_port(authority: &str) -> &str {
    let bytes = authority.as_bytes();
    let end = if bytes.first() == Some(&b'[') {
        bytes.iter().position(|&b| b == b']').map(|i| i + 1)
    } else {
        bytes.iter().position(|&b| b == b':')
    };
    end.map_or(authority, |end| &authority[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_support;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
