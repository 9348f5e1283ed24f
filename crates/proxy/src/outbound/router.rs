//! The innermost outbound service: decides what a proxy request may reach and
//! forwards mesh requests to one of the service's endpoints.
//!
//! - `http://SERVICE[:port]/path` where SERVICE is in the snapshot → an endpoint,
//!   over the pooled mTLS connection to that peer sidecar.
//! - `CONNECT SERVICE:port` → `200`, then HTTP inside the tunnel is forwarded to SERVICE
//!   the same way ([`super::mesh_tunnel`]); other bytes close it.
//! - Anything else is egress: decided by `EgressPolicy` and carried out by [`Egress`].

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};

use super::egress::Egress;
use super::mesh_tunnel::MeshTunnel;
use super::pool::{PeerKey, PeerPool, SendError};
use super::target::Target;
use crate::body::{ProxyBody, boxed};
use crate::forward_error::{ForwardError, error_chain};
use crate::label::Label;
use crate::metrics::ProxyMetrics;
use crate::routes::{Routes, ServiceEndpoints};
use crate::telemetry::{AnsweredBy, ReportPeer};

/// Routes outbound proxy requests to mesh services.
#[derive(Clone)]
pub struct Router {
    routes: Routes,
    pool: PeerPool,
    egress: Egress,
    /// For the connections served inside mesh tunnels.
    metrics: Arc<dyn ProxyMetrics>,
}

impl Router {
    /// A router reading the current table from `routes`, sending mesh requests through
    /// `pool` and everything else through `egress`.
    pub fn new(
        routes: Routes,
        pool: PeerPool,
        egress: Egress,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        Router {
            routes,
            pool,
            egress,
            metrics,
        }
    }
}

impl tower::Service<Request<ProxyBody>> for Router {
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let router = self.clone();
        Box::pin(async move { route(&router, request).await })
    }
}

async fn route(
    router: &Router,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let target = Target::of(&request)?;
    let table = router.routes.load();
    let service = table.service(target.host());
    match (target, service) {
        (Target::Connect { host, port }, Some(_)) => {
            let (routes, pool) = (router.routes.clone(), router.pool.clone());
            let tunnel = MeshTunnel::new(host, port, routes, pool, Arc::clone(&router.metrics));
            Ok(tunnel.accept(request))
        }
        (Target::Http { host, .. }, Some(service)) => {
            forward(&router.pool, &host, service, request).await
        }
        (target, None) => router.egress.handle(&table, target, request).await,
    }
}

/// Tries the service's endpoints in round-robin order until one accepts the request.
/// Moving on is only done while the request is provably unsent (connect failures,
/// connections closed before sending), so non-idempotent requests are never repeated.
pub(super) async fn forward(
    pool: &PeerPool,
    service_name: &str,
    service: &ServiceEndpoints,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let mut request = request;
    let report_peer = request.extensions().get::<ReportPeer>().is_some();
    let mut last_failure = "the service has no endpoints".to_owned();
    for endpoint in service.round_robin() {
        let key = PeerKey {
            addr: endpoint.addr,
            identity: endpoint.identity.clone(),
        };
        match pool.send(&key, request).await {
            Ok(response) => {
                let mut response = response.map(boxed);
                if report_peer {
                    let peer = AnsweredBy(Label::intern(key.identity.as_str()));
                    response.extensions_mut().insert(peer);
                }
                return Ok(response);
            }
            Err(SendError::Connect {
                error,
                request: unsent,
            }) => {
                last_failure = connect_failure(service_name, key, error);
                request = unsent;
            }
            Err(SendError::Exchange {
                error,
                request: Some(unsent),
            }) => {
                last_failure = format!("{} at {}: {error}", key.identity, key.addr);
                request = unsent;
            }
            Err(SendError::Exchange {
                error,
                request: None,
            }) => {
                return Err(ForwardError::PeerRequest {
                    service: service_name.to_owned(),
                    retryable: false,
                    source: error,
                });
            }
        }
    }
    Err(ForwardError::PeerUnavailable {
        service: service_name.to_owned(),
        reason: last_failure,
    })
}

/// Logs a failed endpoint connect and describes it for the final error.
fn connect_failure(service: &str, key: PeerKey, source: crate::body::BoxError) -> String {
    let error = ForwardError::PeerConnect {
        addr: key.addr,
        identity: key.identity,
        source,
    };
    let description = error_chain(&error);
    tracing::info!(service, error = %description, "endpoint failed; trying the next");
    description
}
