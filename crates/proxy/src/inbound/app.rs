//! The innermost inbound service: forwards to the local application over plain HTTP on
//! the shared connection pool ([`crate::pool`], the one the outbound side uses for peers):
//! HTTP/1.1 keep-alive by default, HTTP/2 prior knowledge if the app speaks it. Bodies
//! stream in both directions.
//!
//! Idle keep-alive connections are not reused after [`APP_IDLE_TIMEOUT`], and a request
//! lost to the app closing a reused idle connection is sent again on a fresh connection
//! when that is safe ([`crate::retry`], the pool's one replay scheme).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Response, header};
use tower::Service;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::app_connector::{App, AppDialer, connect_app};
use super::app_readiness::AppReadiness;
use crate::AppProtocol;
use crate::body::ProxyBody;
use crate::forward_error::ForwardError;
use crate::hop_by_hop::requested_upgrade;
use crate::pool::{Pool, SendError, Timeouts};
use crate::reserved_headers::untrusted_response;

/// Idle connections to the app are not reused after this. Apps close idle keep-alive
/// connections themselves, commonly after 5 s (Node.js `keepAliveTimeout`, uvicorn,
/// Apache httpd); reusing one near that moment races the app's close, so we give up
/// on it first. Apps with a shorter timeout (gunicorn: 2 s) still hit the race; the
/// replay covers the idempotent requests among those. A new loopback connection costs
/// little.
const APP_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Connecting to the app on loopback: it listens or it refuses at once; this bounds an
/// app whose accept queue is full.
const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const APP_TIMEOUTS: Timeouts = Timeouts {
    connect: APP_CONNECT_TIMEOUT,
    idle: APP_IDLE_TIMEOUT,
    idle_http2: APP_IDLE_TIMEOUT,
};

/// Pooled plain-HTTP client for the local application.
#[derive(Clone)]
pub struct AppService {
    addr: SocketAddr,
    authority: Authority,
    pool: Pool<AppDialer>,
    /// Read only after a failed connect: refused before the app ever listened is a 503.
    readiness: Arc<AppReadiness>,
}

impl AppService {
    /// A client for the app at `readiness.addr()` speaking `protocol`.
    pub fn new(readiness: Arc<AppReadiness>, protocol: AppProtocol) -> Result<Self, http::Error> {
        let addr = readiness.addr();
        Ok(AppService {
            addr,
            authority: Authority::try_from(addr.to_string())?,
            pool: Pool::new(AppDialer::new(Arc::clone(&readiness), protocol)),
            readiness,
        })
    }

    /// Points the request at the app, keeping the caller's host for the app to see.
    fn retarget(&self, request: &mut Request<ProxyBody>) -> Result<(), ForwardError> {
        let original = request.uri().authority().cloned();
        if let (None, Some(authority)) = (request.headers().get(header::HOST), original) {
            // h2 carries the host in :authority; an h1 app needs it as Host.
            if let Ok(value) = HeaderValue::from_str(authority.as_str()) {
                request.headers_mut().insert(header::HOST, value);
            }
        }
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        *request.uri_mut() = Uri::from_parts(parts).map_err(|e| ForwardError::BadRequest {
            reason: format!("cannot build the application URI: {e}"),
        })?;
        Ok(())
    }
}

impl Service<Request<ProxyBody>> for AppService {
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool is always ready: it dials on demand.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let retargeted = self.retarget(&mut request);
        let app = self.clone();
        // An upgrade (WebSocket) gets a connection of its own ([`crate::upgrade`]).
        let upgrade = requested_upgrade(&request)
            .is_some()
            .then(|| request.extensions_mut().remove::<OnUpgrade>())
            .flatten();
        Box::pin(async move {
            retargeted?;
            if let Some(client) = upgrade {
                return app.upgrade(request, client).await;
            }
            match app.pool.send(&App, request, APP_TIMEOUTS).await {
                // The app's x-meshwork-* fields are not the mesh's: a forged denial or
                // client id goes no further.
                Ok(response) => Ok(untrusted_response(response)),
                Err(error) => Err(app.failure(error)),
            }
        })
    }
}

impl AppService {
    /// Sends an upgrade request to the app on a fresh HTTP/1.1 connection (whatever
    /// `protocol` says: HTTP/2 has no `Upgrade`) and splices on `101`.
    async fn upgrade(
        &self,
        request: Request<ProxyBody>,
        client: OnUpgrade,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        let addr = self.addr;
        let tcp = connect_app(&self.readiness, addr, APP_CONNECT_TIMEOUT)
            .await
            .map_err(|error| match self.readiness.is_listening() {
                false => ForwardError::AppStarting { addr },
                true => ForwardError::AppUnavailable {
                    addr,
                    retryable: true,
                    source: Box::new(error),
                },
            })?;
        self.readiness.mark_listening();
        match crate::upgrade::exchange(TokioIo::new(tcp), request, client).await {
            Ok(response) => Ok(untrusted_response(response)),
            Err(error) => Err(ForwardError::AppUnavailable {
                addr,
                retryable: false,
                source: Box::new(error),
            }),
        }
    }

    /// The error for a failed send: refused before the app ever listened is a 503.
    fn failure(&self, error: SendError) -> ForwardError {
        let addr = self.addr;
        match error {
            SendError::Connect { .. } if !self.readiness.is_listening() => {
                ForwardError::AppStarting { addr }
            }
            SendError::Connect { error, .. } => ForwardError::AppUnavailable {
                addr,
                retryable: true,
                source: error,
            },
            SendError::Exchange { error, request } => ForwardError::AppUnavailable {
                addr,
                retryable: request.is_some(),
                source: Box::new(error),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::body::empty;

    #[tokio::test]
    async fn retarget_keeps_path_and_moves_authority_to_host() {
        let app = AppService::new(
            AppReadiness::new(([127, 0, 0, 1], 8080).into()),
            AppProtocol::Http1,
        )
        .unwrap();
        let mut request = Request::builder()
            .uri("http://billing/charges?id=7")
            .body(empty())
            .unwrap();
        app.retarget(&mut request).unwrap();
        assert_eq!(request.uri(), "http://127.0.0.1:8080/charges?id=7");
        assert_eq!(request.headers()[header::HOST], "billing");
    }

    #[tokio::test]
    async fn retarget_keeps_an_existing_host_header() {
        let app = AppService::new(
            AppReadiness::new(([127, 0, 0, 1], 8080).into()),
            AppProtocol::Http1,
        )
        .unwrap();
        let mut request = Request::builder()
            .uri("/charges")
            .header(header::HOST, "billing:80")
            .body(empty())
            .unwrap();
        app.retarget(&mut request).unwrap();
        assert_eq!(request.uri(), "http://127.0.0.1:8080/charges");
        assert_eq!(request.headers()[header::HOST], "billing:80");
    }
}
