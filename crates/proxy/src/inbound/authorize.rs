//! Inbound authorization: every request that reached this workload over mTLS is decided by
//! the policy engine of the current snapshot, with the caller's *verified* SPIFFE ID and the
//! one normalised path (`policy::NormalizedPath`).
//!
//! - **Target service:** the mesh services whose endpoints carry this workload's identity (from
//!   the snapshot, never from the caller). When the request's host names one of them, that one
//!   is decided; otherwise every one of them must allow the request. A workload that backs no
//!   service has no policy (`no_policy`).
//! - **Path:** decided in normalised form, and the request goes on to the application with
//!   that same path (the raw query kept), so the app acts on exactly what policy allowed.
//!   A path the normaliser refuses (`%2F`, `\`, control characters …) gets `400`.
//! - **Denied:** `403` with `{"error":"forbidden","policy","rule","decision_id",…}` and one log
//!   line carrying the same `decision_id`. Audit-mode findings ("would deny") are logged, with
//!   their own decision id, and never change the outcome.
//! - **Live updates:** the engine is read from the current [`RouteTable`] per request; a new
//!   snapshot applies to the next request on every open connection.

use std::cell::OnceCell;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{self, Either, Ready};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use identity::SpiffeId;
use policy::{Decision, DecisionKind, DecisionReason, Engine, NormalizedPath};
use serde_json::json;
use tower::{Layer, Service};

use crate::body::{ProxyBody, json_response};
use crate::denial::{decision_id, forbidden};
use crate::forward_error::ForwardError;
use crate::routes::{RouteTable, Routes};
use crate::server::PeerIdentity;
use crate::span_notes;
use crate::trace_context::TraceIdField;

/// Tower layer deciding every inbound request (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    routes: Routes,
    own: Arc<SpiffeId>,
}

impl AuthorizeLayer {
    /// Decides with the policies in `routes`, for the workload whose SVID is `own`.
    pub fn new(routes: Routes, own: SpiffeId) -> Self {
        AuthorizeLayer {
            routes,
            own: Arc::new(own),
        }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            routes: self.routes.clone(),
            own: Arc::clone(&self.own),
        }
    }
}

/// The service produced by [`AuthorizeLayer`].
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    routes: Routes,
    own: Arc<SpiffeId>,
}

impl<S> Service<Request<ProxyBody>> for Authorize<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = Either<S::Future, Ready<Result<Response<ProxyBody>, ForwardError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        match authorize(&self.routes.load(), &self.own, &mut request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refusal) => Either::Right(future::ready(Ok(*refusal))),
        }
    }
}

/// Decides `request`; when allowed, puts the normalised path on it. `Err` is the response to
/// send instead (400, 403, or 503 when the policies are unusable), boxed: refusals are the
/// rare path.
pub fn authorize<B>(
    table: &RouteTable,
    own: &SpiffeId,
    request: &mut Request<B>,
) -> Result<(), Box<Response<ProxyBody>>> {
    let (path, rewritten) = normalised_target(request)?;
    decide_request(table, own, request, &path)?;
    if let Some(target) = rewritten {
        set_path_and_query(request, &target);
    }
    Ok(())
}

/// Decides and logs `request` at `path`. The request is only borrowed here, so the caller's
/// identity and the host are read in place rather than copied (this runs on every request).
fn decide_request<B>(
    table: &RouteTable,
    own: &SpiffeId,
    request: &Request<B>,
    path: &NormalizedPath,
) -> Result<(), Box<Response<ProxyBody>>> {
    let engine = table.policies().engine.as_ref().map_err(|error| {
        let body = json!({"error": "policy_unavailable", "side": "proxy", "retryable": false,
                          "description": format!("this proxy's policies do not compile: {error}")});
        Box::new(json_response(StatusCode::SERVICE_UNAVAILABLE, &body))
    })?;
    let caller = request.extensions().get::<PeerIdentity>().map(|p| &p.0);
    let services = target_services(table.services_of(own), request);
    let (decision, service) = decide(engine, services, caller, request, path);
    let described = Described {
        id: OnceCell::new(),
        caller,
        service,
        method: request.method().as_str(),
        path,
        policy_hash: &table.policies().hash,
        trace_id: span_notes::trace_id(request),
    };
    described.log(&decision);
    if let Some(notes) = span_notes::notes(request) {
        span_notes::note_decision(notes, &decision, described.id());
    }
    if !decision.allowed {
        let context = json!({"service": service, "caller": caller.map(SpiffeId::as_str)});
        let refusal = forbidden("forbidden", described.id(), &decision.reason, context);
        return Err(Box::new(refusal));
    }
    Ok(())
}

/// The request's normalised path, and the new request target (normalised path plus the raw
/// query) when it differs from the one sent; `400` when the normaliser refuses the path.
fn normalised_target<B>(
    request: &Request<B>,
) -> Result<(NormalizedPath, Option<String>), Box<Response<ProxyBody>>> {
    let raw = request
        .uri()
        .path_and_query()
        .map_or("/", PathAndQuery::as_str);
    let (path, query) = NormalizedPath::parse_request_target(raw).map_err(|error| {
        let body = json!({"error": "bad_path", "side": "client", "retryable": false,
                          "description": format!("request path {raw:?} refused: {error}")});
        Box::new(json_response(StatusCode::BAD_REQUEST, &body))
    })?;
    let sent_path = raw.split(['?', '#']).next().unwrap_or(raw);
    let rewritten = (path.as_str() != sent_path).then(|| {
        format!(
            "{path}{}",
            query.map(|q| format!("?{q}")).unwrap_or_default()
        )
    });
    Ok((path, rewritten))
}

/// The service the request's host names when this workload backs it, else every backed
/// service. The host is `:authority` (or the absolute URI's host), else `Host`, without
/// port, compared in lower case.
fn target_services<'a, B>(backed: &'a [String], request: &Request<B>) -> &'a [String] {
    let named = match request.uri().host() {
        Some(host) => backed_named(backed, host),
        None => host_header(request).and_then(|authority| backed_named(backed, authority.host())),
    };
    named.map_or(backed, std::slice::from_ref)
}

/// The `Host` header, when it parses as an authority.
fn host_header<B>(request: &Request<B>) -> Option<http::uri::Authority> {
    let value = request.headers().get(http::header::HOST)?.to_str().ok()?;
    value.parse().ok()
}

/// The backed service named `host` once `host` is lower-cased (without allocating the
/// lower-case copy).
fn backed_named<'a>(backed: &'a [String], host: &str) -> Option<&'a String> {
    backed.iter().find(|service| {
        service.len() == host.len()
            && service
                .bytes()
                .zip(host.bytes())
                .all(|(s, h)| s == h.to_ascii_lowercase())
    })
}

/// The first denial over `services`, else the first service's decision.
fn decide<'s, B>(
    engine: &Engine,
    services: &'s [String],
    caller: Option<&SpiffeId>,
    request: &Request<B>,
    path: &NormalizedPath,
) -> (Decision, &'s str) {
    let mut allowed = None;
    for service in services {
        let decision = engine.authorize(&policy::Request {
            target_service: service,
            caller,
            method: request.method().as_str(),
            path,
            headers: request.headers(),
        });
        if !decision.allowed {
            return (decision, service);
        }
        allowed.get_or_insert((decision, service.as_str()));
    }
    allowed.unwrap_or_else(|| (unserved(), ""))
}

/// The decision for a workload that backs no mesh service: no policy can target it.
fn unserved() -> Decision {
    Decision {
        allowed: true,
        reason: DecisionReason {
            policy: None,
            rule: None,
            matcher: "this workload backs no mesh service, so no policy targets it".to_owned(),
            kind: DecisionKind::NoPolicy,
        },
        audit: Vec::new(),
    }
}

/// What a log line says about one decided request.
struct Described<'a> {
    /// Made on first use: most requests are allowed and logged at a disabled level, so
    /// nothing quotes their id (`rand` plus a formatted string per request otherwise).
    id: OnceCell<String>,
    caller: Option<&'a SpiffeId>,
    service: &'a str,
    method: &'a str,
    path: &'a NormalizedPath,
    policy_hash: &'a str,
    trace_id: TraceIdField,
}

impl Described<'_> {
    /// The decision id: the same for every log line and the 403 of this request.
    fn id(&self) -> &str {
        self.id.get_or_init(decision_id)
    }

    /// Tracing evaluates an event's fields only when the event is enabled, so `self.id()`
    /// in them creates the id only for lines that are actually written.
    fn log(&self, decision: &Decision) {
        let caller = self.caller.map_or("-", SpiffeId::as_str);
        let (service, method, path, hash, trace_id) = (
            self.service,
            self.method,
            self.path.as_str(),
            self.policy_hash,
            &self.trace_id,
        );
        for note in &decision.audit {
            tracing::info!(decision_id = self.id(), caller, service, method, path, policy_hash = hash,
                outcome = ?note.outcome, policy = ?note.reason.policy, rule = ?note.reason.rule,
                matcher = %note.reason.matcher, %trace_id, "audit: policy in audit mode would decide otherwise");
        }
        let reason = &decision.reason;
        if decision.allowed {
            tracing::debug!(decision_id = self.id(), caller, service, method, path, kind = ?reason.kind,
                policy = ?reason.policy, rule = ?reason.rule, %trace_id, "inbound request allowed");
        } else {
            tracing::warn!(decision_id = self.id(), caller, service, method, path, policy_hash = hash,
                kind = ?reason.kind, policy = ?reason.policy, rule = ?reason.rule,
                matcher = %reason.matcher, %trace_id, "inbound request denied by policy");
        }
    }
}

fn set_path_and_query<B>(request: &mut Request<B>, target: &str) {
    let mut parts = request.uri().clone().into_parts();
    // A normalised path plus the raw query is valid URI text; should that ever fail, the
    // original target (which normalises to the decided path) goes on unchanged.
    if let Ok(pq) = PathAndQuery::try_from(target) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
