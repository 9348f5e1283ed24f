//! The telemetry layer: labels every request with its service, route template, method and
//! peer, and reports it with its status and duration to [`ProxyMetrics::request`] when the
//! response head is ready. Outermost on both stacks, so refusals (400, 403, 502 …) count
//! and the duration covers everything the sidecar does.
//!
//! - **Inbound:** service = the backed service the host names, else the first one this
//!   workload backs (as authorization decides), else `[none]`; peer = the verified caller
//!   ([`PeerIdentity`]).
//! - **Outbound:** service = the mesh service the host names, else `[egress]`; peer = the
//!   identity of the service's endpoints — or, when endpoints of several identities back
//!   it, of the one that answered (the router reports it as [`AnsweredBy`] when asked by
//!   [`ReportPeer`]).
//! - **Route:** the service's first matching template ([`crate::route_classifier`]), else
//!   `[unmatched]`; raw paths and hosts never become labels.
//!
//! Requests whose caller goes away before the response head are not counted.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use identity::SpiffeId;
use tower::{Layer, Service};

use crate::body::ProxyBody;
use crate::forward_error::ForwardError;
use crate::inbound::client_id::PeerIdentity;
use crate::label::{EGRESS, Label, MethodLabel, NONE, UNMATCHED};
use crate::metrics::{Direction, ProxyMetrics, RequestRecord};
use crate::routes::{RouteTable, Routes};

/// Request extension: the telemetry layer asks the outbound router to name the peer that
/// answered (only for services whose endpoints present several identities).
#[derive(Debug, Clone, Copy)]
pub struct ReportPeer;

/// Response extension: the identity of the peer sidecar that answered (see [`ReportPeer`]).
#[derive(Debug, Clone, Copy)]
pub struct AnsweredBy(pub Label);

/// Tower layer recording request metrics (see the [module docs](self)).
#[derive(Clone)]
pub struct TelemetryLayer {
    routes: Routes,
    metrics: Arc<dyn ProxyMetrics>,
    /// Inbound: this workload's identity (which services a request can be for).
    own: Option<Arc<SpiffeId>>,
}

impl TelemetryLayer {
    /// For the inbound stack of the workload whose SVID is `own`.
    pub fn inbound(routes: Routes, own: SpiffeId, metrics: Arc<dyn ProxyMetrics>) -> Self {
        TelemetryLayer {
            routes,
            metrics,
            own: Some(Arc::new(own)),
        }
    }

    /// For the outbound stack.
    pub fn outbound(routes: Routes, metrics: Arc<dyn ProxyMetrics>) -> Self {
        TelemetryLayer {
            routes,
            metrics,
            own: None,
        }
    }
}

impl<S> Layer<S> for TelemetryLayer {
    type Service = Telemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Telemetry {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`TelemetryLayer`].
#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    layer: TelemetryLayer,
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
    metrics: Arc<dyn ProxyMetrics>,
}

impl<S> Service<Request<ProxyBody>> for Telemetry<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Unpin,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let start = Instant::now();
        let table = self.layer.routes.load();
        let (direction, (service, route, peer)) = match &self.layer.own {
            Some(own) => (Direction::Inbound, inbound_labels(&table, own, &request)),
            None => (Direction::Outbound, outbound_labels(&table, &mut request)),
        };
        let pending = Pending {
            direction,
            service,
            route,
            method: MethodLabel::of(request.method()),
            peer,
            start,
            metrics: Arc::clone(&self.layer.metrics),
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
        let (status, answered) = match result {
            Ok(response) => (
                response.status(),
                response.extensions().get::<AnsweredBy>().map(|a| a.0),
            ),
            Err(error) => (error.status(), None),
        };
        self.metrics.request(&RequestRecord {
            direction: self.direction,
            service: self.service,
            route: self.route,
            method: self.method,
            status,
            peer: self.peer.or(answered).unwrap_or(NONE),
            elapsed: self.start.elapsed(),
        });
    }
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

/// Service, route and (when known up front) peer of an outbound request; asks the router
/// for the peer when the service's endpoints disagree on identity.
fn outbound_labels<B>(
    table: &RouteTable,
    request: &mut Request<B>,
) -> (Label, Label, Option<Label>) {
    let Some(host) = request_host(request) else {
        return (NONE, UNMATCHED, Some(NONE));
    };
    let Some(labels) = table.classifier().service(host) else {
        return (EGRESS, UNMATCHED, Some(NONE));
    };
    let route = labels.route(request.uri().path_and_query());
    let peer = labels.peer();
    if peer.is_none() {
        request.extensions_mut().insert(ReportPeer);
    }
    (labels.service(), route, peer)
}

/// The request's host without port: the URI's authority (absolute-form, authority-form,
/// h2 `:authority`), else the `Host` header's. Borrowed: nothing is copied per request.
/// Userinfo is not split off: such a host names no service (the router refuses it).
fn request_host<B>(request: &Request<B>) -> Option<&str> {
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
mod tests;
