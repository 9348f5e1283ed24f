//! Egress: what the local application asks for outside the mesh. Egress is default-deny;
//! every request is decided by the current snapshot's `EgressPolicy`s for *this* workload's
//! SPIFFE ID before anything is resolved or dialled.
//!
//! - `CONNECT host:port` (what HTTPS through `HTTPS_PROXY` uses): decided on host and port,
//!   then a TCP tunnel to what the proxy itself resolved. TLS stays end to end between the
//!   application and the destination.
//! - `http://host[:port]/path` (plain HTTP through `HTTP_PROXY`): decided on host, port,
//!   method and the normalised path, then forwarded over HTTP/1.1 with that same path.
//! - IP-literal destinations match only `cidr` rules, which policies must opt into.
//! - A single-label name that is no mesh service and that no policy allows is answered
//!   `404 unknown_service` instead ([`super::unknown_service`]): a misspelt service name.
//! - Refusals are `403` with `{"error":"egress_denied","policy","rule","decision_id",…}` and a
//!   log line with the same decision id.

use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use identity::SpiffeId;
use policy::{Decision, EgressRequest, Host, NormalizedPath};
use serde_json::json;
use tokio::net::TcpStream;

use super::claim_binding::{Admission, ClaimBindings};
use super::classify::Classified;
use super::resolve::HostResolver;
use super::target::Target;
use super::unknown_service;
use crate::body::{BoxError, ProxyBody, json_response};
use crate::denial::{decision_id, forbidden};
use crate::forward_error::ForwardError;
use crate::reserved_headers::untrusted_response;
use crate::routes::RouteTable;
use crate::span_notes;

/// A destination that does not answer within this is given up on (per address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Decides and carries out egress for one workload.
#[derive(Debug, Clone)]
pub struct Egress {
    caller: SpiffeId,
    resolver: HostResolver,
    /// This workload's bindings, for claimed services' names (pod mode).
    bindings: Option<ClaimBindings>,
}

/// An egress request, parsed from its target.
struct Destination {
    host: Host,
    port: u16,
    /// Plain HTTP: the normalised path and the raw query.
    http: Option<(NormalizedPath, Option<String>)>,
}

impl Egress {
    /// Egress as `caller` (this workload's SVID), resolving names with `resolver`.
    pub fn new(caller: SpiffeId, resolver: HostResolver) -> Egress {
        Egress {
            caller,
            resolver,
            bindings: None,
        }
    }

    /// Admits connections to claimed services' names by this workload's bindings under
    /// `bindings` ([`super::claim_binding`]).
    pub fn with_bindings(mut self, bindings: Option<ClaimBindings>) -> Egress {
        self.bindings = bindings;
        self
    }

    /// Decides `request` to the non-mesh destination `classified` names and, when
    /// allowed, carries it out.
    pub async fn handle(
        &self,
        classified: Classified,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let (table, destination) = Destination::classified(classified)?;
        let Ok(engine) = &table.policies().engine else {
            let body = json!({"error": "policy_unavailable", "side": "proxy", "retryable": false,
                              "description": "this proxy's policies do not compile"});
            return Ok(json_response(StatusCode::SERVICE_UNAVAILABLE, &body));
        };
        let http = destination.http.as_ref();
        let decision = engine.egress(&EgressRequest {
            caller: &self.caller,
            host: &destination.host,
            port: destination.port,
            method: http.map(|_| request.method().as_str()),
            path: http.map(|(path, _)| path),
        });
        if !decision.allowed && unknown_service::looks_like_a_service(&destination.host) {
            let name = destination.host.to_string();
            tracing::info!(caller = self.caller.as_str(), service = %name, "no such mesh service");
            return Ok(unknown_service::not_found(&name, &table.service_names()));
        }
        let id = decision_id();
        let trace_id = span_notes::trace_id(&request);
        let method = request.method().as_str();
        self.log(
            &id,
            &destination,
            method,
            &trace_id,
            &decision,
            &table.policies().hash,
        );
        if let Some(notes) = span_notes::notes(&request) {
            span_notes::note_decision(notes, &decision, &id);
        }
        if !decision.allowed {
            let context = json!({"host": destination.host.to_string(), "port": destination.port,
                                 "caller": self.caller.as_str()});
            return Ok(forbidden("egress_denied", &id, &decision.reason, context));
        }
        let upstream = self.dial(&destination).await?;
        match &destination.http {
            None => Ok(tunnel(request, upstream, &destination.host)),
            Some((path, query)) => {
                let target = format!(
                    "{path}{}",
                    query.as_ref().map(|q| format!("?{q}")).unwrap_or_default()
                );
                forward(request, upstream, target, &destination).await
            }
        }
    }

    /// Decides a TCP connection to `host:port` (a pod's captured TLS or opaque TCP, which
    /// has no HTTP request) as a `CONNECT host:port` is decided, logged the same way, and
    /// when allowed dials what this proxy resolves for `host`.
    pub async fn connect(
        &self,
        table: &RouteTable,
        host: &Host,
        port: u16,
    ) -> Result<TcpStream, TcpEgressError> {
        if let Host::Dns(name) = host
            && let Some((claim, namespace)) = api::taxonomy::parse_claim_host(name.as_str())
        {
            return self.connect_claim(claim, namespace, port).await;
        }
        let Ok(engine) = &table.policies().engine else {
            return Err(TcpEgressError::PolicyUnavailable);
        };
        let decision = engine.egress(&EgressRequest {
            caller: &self.caller,
            host,
            port,
            method: None,
            path: None,
        });
        let id = decision_id();
        let destination = Destination {
            host: host.clone(),
            port,
            http: None,
        };
        // No request, so no trace: `-`, as the log of an untraced request says.
        let hash = &table.policies().hash;
        self.log(&id, &destination, "CONNECT", &"-", &decision, hash);
        if !decision.allowed {
            return Err(TcpEgressError::Denied { decision_id: id });
        }
        self.dial(&destination)
            .await
            .map_err(|e| TcpEgressError::Unreachable(Box::new(e)))
    }

    /// A TCP connection to claim `claim`'s name: admitted by this workload's binding of it
    /// (and dialled at the binding's address), else refused; logged with a decision id
    /// either way.
    async fn connect_claim(
        &self,
        claim: &str,
        namespace: &str,
        port: u16,
    ) -> Result<TcpStream, TcpEgressError> {
        let id = decision_id();
        let caller = self.caller.as_str();
        let admission = match &self.bindings {
            Some(bindings) => bindings.admit(claim, port).await,
            None => Admission::Refused("this sidecar reads no bindings".to_owned()),
        };
        let (host, port) = match admission {
            Admission::Bound { host, port } => (host, port),
            Admission::Refused(reason) => {
                tracing::warn!(decision_id = %id, caller, claim, namespace, port, %reason,
                    "connection to a claimed service denied: not bound to this workload");
                return Err(TcpEgressError::Denied { decision_id: id });
            }
        };
        tracing::info!(decision_id = %id, caller, claim, namespace, port, instance = %host,
            "connection to a claimed service allowed by its binding");
        let destination = Destination {
            host: host.parse().map_err(|e: policy::DnsError| {
                TcpEgressError::Unreachable(Box::new(ForwardError::EgressUnreachable {
                    host: host.clone(),
                    port,
                    source: Box::new(e),
                }))
            })?,
            port,
            http: None,
        };
        self.dial(&destination)
            .await
            .map_err(|e| TcpEgressError::Unreachable(Box::new(e)))
    }

    fn log(
        &self,
        id: &str,
        to: &Destination,
        method: &str,
        trace_id: &dyn std::fmt::Display,
        decision: &Decision,
        hash: &str,
    ) {
        let (caller, host, port) = (self.caller.as_str(), to.host.to_string(), to.port);
        let path = to.http.as_ref().map_or("-", |(p, _)| p.as_str());
        let reason = &decision.reason;
        if decision.allowed {
            tracing::info!(decision_id = id, caller, %host, port, method, path, policy = ?reason.policy,
                rule = ?reason.rule, %trace_id, "egress allowed");
        } else {
            tracing::warn!(decision_id = id, caller, %host, port, method, path, policy_hash = hash,
                kind = ?reason.kind, policy = ?reason.policy, rule = ?reason.rule,
                matcher = %reason.matcher, %trace_id, "egress denied by policy");
        }
    }

    /// Resolves the destination (itself) and connects to the first address that answers.
    async fn dial(&self, to: &Destination) -> Result<TcpStream, ForwardError> {
        let unreachable = |source: BoxError| ForwardError::EgressUnreachable {
            host: to.host.to_string(),
            port: to.port,
            source,
        };
        let addrs = self
            .resolver
            .resolve(&to.host, to.port)
            .await
            .map_err(unreachable)?;
        let mut last: BoxError = "no addresses".into();
        for addr in addrs {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => last = format!("{addr}: {error}").into(),
                Err(_) => last = format!("{addr}: no answer within {CONNECT_TIMEOUT:?}").into(),
            }
        }
        Err(unreachable(last))
    }
}

/// Why [`Egress::connect`] gave no connection.
#[derive(Debug, thiserror::Error)]
pub enum TcpEgressError {
    /// The policy refused (logged with this decision id).
    #[error("egress denied by policy (decision {decision_id})")]
    Denied {
        /// The decision id of the log line.
        decision_id: String,
    },
    /// This proxy's policies do not compile.
    #[error("this proxy's policies do not compile")]
    PolicyUnavailable,
    /// Allowed, but the destination could not be resolved or reached.
    #[error("egress destination unreachable")]
    Unreachable(#[source] Box<ForwardError>),
}

impl Destination {
    /// The destination `classified` names, and the table it was classified against.
    fn classified(classified: Classified) -> Result<(Arc<RouteTable>, Destination), ForwardError> {
        let Classified {
            table,
            target,
            path,
            ..
        } = classified;
        let target = target.map_err(|reason| ForwardError::BadRequest { reason })?;
        Ok((table, Destination::of(&target, path)?))
    }

    /// The destination of `target`, with the path [`Classified`] normalised for it.
    fn of(
        target: &Target,
        path: Option<Result<NormalizedPath, String>>,
    ) -> Result<Destination, ForwardError> {
        let bad = |reason: String| ForwardError::BadRequest { reason };
        let (host, port, http) = match target {
            Target::Connect { host, port } => (host, *port, None),
            Target::Http {
                host,
                port,
                path_and_query,
            } => (host, port.unwrap_or(80), Some(path_and_query)),
        };
        let host: Host = host.parse().map_err(|e| {
            bad(format!(
                "{host:?} is neither a DNS name nor an IP literal: {e}"
            ))
        })?;
        let http = match (http, path) {
            (None, _) => None,
            (Some(pq), Some(path)) => Some((path.map_err(bad)?, pq.query().map(str::to_owned))),
            // invariant: classify normalises the path of every HTTP request outside the mesh;
            // should that change, normalise here rather than forward an unchecked path.
            (Some(pq), None) => {
                let (path, query) = NormalizedPath::parse_request_target(pq.as_str())
                    .map_err(|e| bad(format!("request path {:?} refused: {e}", pq.as_str())))?;
                Some((path, query.map(str::to_owned)))
            }
        };
        Ok(Destination { host, port, http })
    }
}

/// Answers the CONNECT with 200 and splices the upgraded client connection to `upstream`.
fn tunnel(request: Request<ProxyBody>, upstream: TcpStream, host: &Host) -> Response<ProxyBody> {
    let upgrade = hyper::upgrade::on(request);
    let host = host.to_string();
    tokio::spawn(async move {
        let mut upstream = upstream;
        match upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    Ok((sent, received)) => {
                        tracing::debug!(%host, sent, received, "egress tunnel closed")
                    }
                    Err(error) => {
                        tracing::debug!(%host, %error, "egress tunnel ended with an error")
                    }
                }
            }
            Err(error) => tracing::debug!(%host, %error, "CONNECT was not upgraded"),
        }
    });
    Response::new(crate::body::full(bytes::Bytes::new()))
}

/// Sends `request` over HTTP/1.1 on `upstream`, in origin-form with `target` (the
/// normalised path and the raw query).
async fn forward(
    mut request: Request<ProxyBody>,
    upstream: TcpStream,
    target: String,
    to: &Destination,
) -> Result<Response<ProxyBody>, ForwardError> {
    let failed = |retryable: bool, source: BoxError| ForwardError::EgressRequest {
        host: to.host.to_string(),
        port: to.port,
        retryable,
        source,
    };
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    *request.uri_mut() = PathAndQuery::try_from(target)
        .map(http::Uri::from)
        .map_err(|e| failed(false, e.into()))?;
    if let Some(authority) = authority.and_then(|a| http::HeaderValue::from_str(&a).ok()) {
        request.headers_mut().insert(http::header::HOST, authority);
    }
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| failed(true, e.into()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "egress connection ended with an error");
        }
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| failed(false, e.into()))?;
    // An egress server's x-meshwork-* fields are not the mesh's (a forged denial).
    Ok(untrusted_response(response))
}
