//! The innermost inbound service: forwards to the local application over plain HTTP
//! on a pooled client (HTTP/1.1 keep-alive by default, HTTP/2 prior knowledge if the
//! app speaks it). Bodies stream in both directions.
//!
//! Idle keep-alive connections are dropped after [`APP_IDLE_TIMEOUT`], and a request
//! lost to the app closing a reused idle connection is sent again on a fresh connection
//! when that is safe ([`crate::retry`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, Error as ClientError};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;

use super::app_connector::{AppConnector, ConnectionUse};
use super::app_readiness::AppReadiness;
use crate::AppProtocol;
use crate::body::{ProxyBody, boxed};
use crate::forward_error::ForwardError;
use crate::retry::{self, Replay};

/// Idle connections to the app are closed after this. Apps close idle keep-alive
/// connections themselves, commonly after 5 s (Node.js `keepAliveTimeout`, uvicorn,
/// Apache httpd); reusing one near that moment races the app's close, so we give up
/// on it first. (hyper-util's default, 90 s, is what made the race common.) Apps with
/// a shorter timeout (gunicorn: 2 s) still hit the race; the replay covers the
/// idempotent requests among those. A new loopback connection costs little.
const APP_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Pooled plain-HTTP client for the local application.
#[derive(Clone, Debug)]
pub struct AppService {
    addr: SocketAddr,
    authority: Authority,
    /// Shared: one `Arc` clone per request instead of two client clones.
    clients: Arc<AppClients>,
}

#[derive(Debug)]
struct AppClients {
    /// The keep-alive pool every request tries first.
    pooled: Client<AppConnector, ProxyBody>,
    /// No idle pool, so every request dials: replays go out on a connection the app
    /// has not had time to close.
    fresh: Client<AppConnector, ProxyBody>,
    /// Read only after a failed connect: refused before the app ever listened is a 503.
    readiness: Arc<AppReadiness>,
}

impl AppClients {
    fn new(protocol: AppProtocol, readiness: Arc<AppReadiness>) -> Self {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if protocol == AppProtocol::Http2 {
            builder.http2_only(true);
        }
        let connector = AppConnector::new(Arc::clone(&readiness));
        AppClients {
            pooled: builder
                .clone()
                .pool_idle_timeout(APP_IDLE_TIMEOUT)
                .build(connector.clone()),
            fresh: builder.pool_max_idle_per_host(0).build(connector),
            readiness,
        }
    }

    /// Sends `request` on a pooled connection; replays it once on a fresh one if the
    /// pooled connection was a reused one that the app closed under it, and the request
    /// is idempotent with an empty body. Anything else fails as it did.
    async fn send(&self, request: Request<ProxyBody>) -> Result<Response<Incoming>, ClientError> {
        let replay = Replay::of(&request);
        let error = match self.pooled.request(request).await {
            Ok(response) => {
                ConnectionUse::record(&response);
                return Ok(response);
            }
            Err(error) => error,
        };
        match replay {
            Some(replay)
                if ConnectionUse::was_reused(&error) && retry::closed_before_response(&error) =>
            {
                let error = crate::forward_error::error_chain(&error);
                tracing::debug!(%error, "app closed a reused connection; replaying");
                self.fresh.request(replay.into_request()).await
            }
            _ => Err(error),
        }
    }
}

impl AppService {
    /// A client for the app at `readiness.addr()` speaking `protocol`.
    pub fn new(readiness: Arc<AppReadiness>, protocol: AppProtocol) -> Result<Self, http::Error> {
        let addr = readiness.addr();
        Ok(AppService {
            addr,
            authority: Authority::try_from(addr.to_string())?,
            clients: Arc::new(AppClients::new(protocol, readiness)),
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
        // The legacy client is always ready; it queues on its pool internally.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let retargeted = self.retarget(&mut request);
        let clients = Arc::clone(&self.clients);
        let addr = self.addr;
        Box::pin(async move {
            retargeted?;
            // The app sees the version it speaks, not whatever the caller used.
            *request.version_mut() = http::Version::default();
            match clients.send(request).await {
                Ok(response) => Ok(response.map(boxed)),
                Err(error) if error.is_connect() && !clients.readiness.is_listening() => {
                    Err(ForwardError::AppStarting { addr })
                }
                Err(error) => Err(ForwardError::AppUnavailable {
                    addr,
                    retryable: error.is_connect(),
                    source: Box::new(error),
                }),
            }
        })
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
