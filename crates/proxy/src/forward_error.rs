//! Errors of the data path: every failure says which side failed and whether a
//! retry is safe, and renders as a JSON response the caller can act on.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Response, StatusCode};
use identity::SpiffeId;
use serde_json::json;

use crate::body::{BoxError, ProxyBody, json_response};

/// Which party of a proxied exchange is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller (the local app on outbound, the calling sidecar on inbound) sent
    /// something the proxy cannot or will not forward.
    Client,
    /// The remote sidecar (the mesh service's inbound listener).
    Peer,
    /// The local application behind the inbound listener.
    Upstream,
    /// A destination outside the mesh (egress).
    External,
    /// This proxy itself.
    Proxy,
}

impl Side {
    /// Lower-case name used in JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Peer => "peer",
            Side::Upstream => "upstream",
            Side::External => "external",
            Side::Proxy => "proxy",
        }
    }
}

/// Which of a route's two timeouts fired (GEP-1742).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// `timeouts.request`: the whole exchange, retries and backoff included.
    Request,
    /// `timeouts.backendRequest`: one try.
    Try,
}

impl TimeoutKind {
    /// The `kind` label value and the JSON `timeout` field.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Request => "request",
            TimeoutKind::Try => "try",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which per-endpoint cap of a circuit breaker was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverloadLimit {
    /// `maxPendingRequests`: requests admitted to the endpoint still waiting for a response head.
    Pending,
    /// `maxRequests`: requests in flight on the endpoint, until their response bodies end.
    Requests,
}

impl OverloadLimit {
    /// The `limit` label value and JSON field.
    pub fn as_str(self) -> &'static str {
        match self {
            OverloadLimit::Pending => "pending",
            OverloadLimit::Requests => "requests",
        }
    }
}

impl fmt::Display for OverloadLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure while forwarding one request.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Egress: the destination (allowed by policy) could not be resolved or connected to.
    /// Nothing was sent, so a retry is safe.
    #[error("egress destination {host}:{port} is unreachable")]
    EgressUnreachable {
        /// The host the client asked for.
        host: String,
        /// The destination port.
        port: u16,
        /// Why (resolution or connection failure).
        #[source]
        source: BoxError,
    },
    /// Egress: the plain-HTTP exchange with the destination failed.
    #[error("egress request to {host}:{port} failed")]
    EgressRequest {
        /// The host the client asked for.
        host: String,
        /// The destination port.
        port: u16,
        /// True only if the request was provably never sent.
        retryable: bool,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Outbound: the request cannot be routed (e.g. origin-form on the proxy port).
    #[error("bad proxy request: {reason}")]
    BadRequest {
        /// What is wrong with it.
        reason: String,
    },
    /// Outbound: the mesh service has no endpoint we could connect to.
    #[error("mesh service {service:?} is unavailable: {reason}")]
    PeerUnavailable {
        /// The mesh service.
        service: String,
        /// Why (no endpoints, or every connect attempt failed).
        reason: String,
    },
    /// Outbound: the request has nowhere to go — the route rule's backend is no mesh service
    /// (or has weight 0), or a tunnel's service left the mesh. Not a network failure: trying
    /// again cannot help until the configuration changes, so it is never retried.
    #[error("no route to mesh service {service:?}: {reason}")]
    NoRoute {
        /// The mesh service asked for.
        service: String,
        /// Why there is no route.
        reason: String,
    },
    /// Outbound: connecting (TCP + mTLS + HTTP handshake) to one endpoint failed.
    /// Nothing was sent, so trying another endpoint is safe.
    #[error("connecting to {identity} at {addr} failed")]
    PeerConnect {
        /// The endpoint address.
        addr: SocketAddr,
        /// The identity it had to prove.
        identity: SpiffeId,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Outbound: the exchange with the remote sidecar failed after sending started.
    #[error("request to mesh service {service:?} failed at the peer sidecar")]
    PeerRequest {
        /// The mesh service.
        service: String,
        /// True only if the request was provably never sent.
        retryable: bool,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// Outbound: no response head within a route's timeout. The exchange was abandoned (the
    /// peer may have acted on the request).
    #[error("{which} timeout: mesh service {service:?} sent no response head within {after:?}")]
    Timeout {
        /// The mesh service.
        service: String,
        /// Which timeout fired.
        which: TimeoutKind,
        /// The configured limit.
        after: Duration,
        /// True only for a per-try timeout of a request that may be sent twice (idempotent
        /// or carrying `Idempotency-Key`); never for the whole-request timeout, whose time is
        /// up.
        retryable: bool,
    },
    /// Outbound: an endpoint is at a circuit-breaker cap, so the request was not sent to it.
    /// Nothing was sent: a retry (to this or another endpoint) is safe.
    #[error("endpoint {endpoint} of mesh service {service:?} is at its {limit} cap of {max}")]
    Overloaded {
        /// The mesh service.
        service: String,
        /// The endpoint's address.
        endpoint: SocketAddr,
        /// The cap that was reached.
        limit: OverloadLimit,
        /// Its configured value.
        max: u32,
    },
    /// Inbound: the local application could not be reached or failed mid-exchange.
    #[error("local application at {addr} failed")]
    AppUnavailable {
        /// The application's address.
        addr: SocketAddr,
        /// True if the connection was refused (nothing sent).
        retryable: bool,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// Inbound: the local application has not opened its port yet (its sidecar starts
    /// first). Nothing was sent: a `503` with `Retry-After`, not a failure of the app.
    #[error("local application at {addr} is not listening yet (starting)")]
    AppStarting {
        /// The application's address.
        addr: SocketAddr,
    },
    /// Inbound: the verified caller identity is missing (cannot happen with the
    /// required client certificates; fail closed if it ever does).
    #[error("no verified caller identity on this connection")]
    MissingPeerIdentity,
}

impl ForwardError {
    /// Which side failed.
    pub fn side(&self) -> Side {
        match self {
            ForwardError::BadRequest { .. } => Side::Client,
            ForwardError::EgressUnreachable { .. } | ForwardError::EgressRequest { .. } => {
                Side::External
            }
            ForwardError::PeerUnavailable { .. }
            | ForwardError::PeerConnect { .. }
            | ForwardError::PeerRequest { .. }
            | ForwardError::Timeout { .. }
            | ForwardError::Overloaded { .. } => Side::Peer,
            ForwardError::AppUnavailable { .. } | ForwardError::AppStarting { .. } => {
                Side::Upstream
            }
            ForwardError::MissingPeerIdentity | ForwardError::NoRoute { .. } => Side::Proxy,
        }
    }

    /// Whether the caller may safely retry the same request.
    pub fn retryable(&self) -> bool {
        match self {
            ForwardError::PeerUnavailable { .. }
            | ForwardError::PeerConnect { .. }
            | ForwardError::EgressUnreachable { .. }
            | ForwardError::AppStarting { .. }
            | ForwardError::Overloaded { .. } => true,
            ForwardError::PeerRequest { retryable, .. }
            | ForwardError::Timeout { retryable, .. }
            | ForwardError::AppUnavailable { retryable, .. }
            | ForwardError::EgressRequest { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The HTTP status the caller receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ForwardError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ForwardError::MissingPeerIdentity => StatusCode::INTERNAL_SERVER_ERROR,
            ForwardError::AppStarting { .. }
            | ForwardError::Overloaded { .. }
            | ForwardError::NoRoute { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ForwardError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ForwardError::BadRequest { .. } => "bad_proxy_request",
            ForwardError::EgressUnreachable { .. } | ForwardError::EgressRequest { .. } => {
                "egress_unreachable"
            }
            ForwardError::MissingPeerIdentity => "missing_peer_identity",
            ForwardError::AppStarting { .. } => "app_starting",
            ForwardError::Timeout { .. } => "upstream_timeout",
            ForwardError::Overloaded { .. } => "upstream_overloaded",
            ForwardError::NoRoute { .. } => "no_route",
            _ => "upstream_unavailable",
        }
    }

    /// The JSON error response for this failure.
    pub fn to_response(&self) -> Response<ProxyBody> {
        let mut body = json!({
            "error": self.code(),
            "side": self.side().as_str(),
            "retryable": self.retryable(),
            "description": error_chain(self),
        });
        match self {
            ForwardError::EgressUnreachable { host, port, .. }
            | ForwardError::EgressRequest { host, port, .. } => {
                body["host"] = json!(host);
                body["port"] = json!(port);
            }
            ForwardError::PeerUnavailable { service, .. }
            | ForwardError::NoRoute { service, .. }
            | ForwardError::PeerRequest { service, .. } => body["service"] = json!(service),
            ForwardError::Timeout {
                service,
                which,
                after,
                ..
            } => {
                body["service"] = json!(service);
                body["timeout"] = json!(which.as_str());
                body["after_ms"] = json!(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
            }
            ForwardError::Overloaded {
                service,
                endpoint,
                limit,
                ..
            } => {
                body["service"] = json!(service);
                body["endpoint"] = json!(endpoint.to_string());
                body["limit"] = json!(limit.as_str());
            }
            _ => {}
        }
        let mut response = json_response(self.status(), &body);
        if let ForwardError::AppStarting { .. } = self {
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static(APP_STARTING_RETRY_AFTER),
            );
        }
        response
    }
}

/// `Retry-After` (seconds) on [`ForwardError::AppStarting`]: apps usually open their port
/// within a second or two of starting.
const APP_STARTING_RETRY_AFTER: &str = "1";

/// `error: cause: cause` — the whole `source()` chain, for humans.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json_of(error: ForwardError) -> (StatusCode, serde_json::Value) {
        let response = error.to_response();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn unreachable_egress_names_the_destination_and_is_retryable() {
        let error = ForwardError::EgressUnreachable {
            host: "api.stripe.com".to_owned(),
            port: 443,
            source: "connection refused".into(),
        };
        let (status, body) = json_of(error).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["error"], "egress_unreachable");
        assert_eq!(body["host"], "api.stripe.com");
        assert_eq!(body["port"], 443);
        assert_eq!(body["side"], "external");
        assert_eq!(body["retryable"], true);
    }

    #[tokio::test]
    async fn an_app_not_listening_yet_is_a_retryable_503_with_retry_after() {
        let error = ForwardError::AppStarting {
            addr: ([127, 0, 0, 1], 8080).into(),
        };
        let response = error.to_response();
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");
        let (status, body) = json_of(error).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "app_starting");
        assert_eq!(body["side"], "upstream");
        assert_eq!(body["retryable"], true);
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .contains("127.0.0.1:8080 is not listening yet"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn timeouts_are_504s_and_only_a_per_try_timeout_can_be_retryable() {
        let timeout = |which, retryable| ForwardError::Timeout {
            service: "billing".to_owned(),
            which,
            after: Duration::from_millis(1500),
            retryable,
        };
        let (status, body) = json_of(timeout(TimeoutKind::Try, true)).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["error"], "upstream_timeout");
        assert_eq!(body["side"], "peer");
        assert_eq!(body["retryable"], true);
        assert_eq!(body["service"], "billing");
        assert_eq!(body["timeout"], "try");
        assert_eq!(body["after_ms"], 1500);
        let (status, body) = json_of(timeout(TimeoutKind::Request, false)).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(body["timeout"], "request");
        assert_eq!(body["retryable"], false);
        assert!(
            body["description"].as_str().unwrap().starts_with(
                "request timeout: mesh service \"billing\" sent no response head within 1.5s"
            ),
            "{body}"
        );
    }

    #[tokio::test]
    async fn a_full_endpoint_is_a_retryable_503_naming_the_endpoint_and_cap() {
        let error = ForwardError::Overloaded {
            service: "billing".to_owned(),
            endpoint: ([127, 0, 0, 1], 4001).into(),
            limit: OverloadLimit::Pending,
            max: 8,
        };
        let (status, body) = json_of(error).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"], "upstream_overloaded");
        assert_eq!(body["side"], "peer");
        assert_eq!(body["retryable"], true);
        assert_eq!(body["endpoint"], "127.0.0.1:4001");
        assert_eq!(body["limit"], "pending");
        assert!(
            body["description"]
                .as_str()
                .unwrap()
                .contains("pending cap of 8"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn unavailable_service_is_retryable_502() {
        let error = ForwardError::PeerUnavailable {
            service: "billing".to_owned(),
            reason: "no endpoints".to_owned(),
        };
        let (status, body) = json_of(error).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["error"], "upstream_unavailable");
        assert_eq!(body["service"], "billing");
        assert_eq!(body["retryable"], true);
        assert_eq!(body["side"], "peer");
    }
}
