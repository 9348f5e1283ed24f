//! What both listeners share: the accept loop with graceful drain, the hyper
//! connection builder (h1 + h2 on one port), the adaptor from a boxed tower stack
//! to a hyper service, where [`ForwardError`]s become JSON responses, and what a
//! connection tells every request on it ([`PeerIdentity`]).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use identity::SpiffeId;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::body::{ProxyBody, boxed};
use crate::forward_error::ForwardError;
use crate::metrics::{Direction, ProxyMetrics};
use crate::trace_context::TraceIdField;

/// A proxy stack as seen from the listener: boxed once, cloned per connection.
pub type Stack = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, ForwardError>;

/// The caller's SPIFFE ID, verified by the mTLS handshake; a request extension set
/// per connection by the inbound listener (through `hyper_service_with`). The
/// inbound layers (client id, authorization) and telemetry read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub SpiffeId);

/// The caller's address (the TCP peer of an inbound connection); a request extension set
/// per connection next to [`PeerIdentity`]. Spans report it as `network.peer.address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// What a connection puts on each of its requests (nothing, or the verified caller).
pub trait ConnectionExtensions: Clone + Send + Sync + 'static {
    /// Inserts this connection's extensions into a request's.
    fn insert_into(&self, extensions: &mut http::Extensions);
}

impl ConnectionExtensions for () {
    fn insert_into(&self, _extensions: &mut http::Extensions) {}
}

/// An inbound connection: the verified caller, and its address when the OS told it.
#[derive(Debug, Clone)]
pub struct InboundPeer {
    /// The caller's SPIFFE ID.
    pub identity: PeerIdentity,
    /// The caller's socket address.
    pub addr: Option<PeerAddr>,
}

impl ConnectionExtensions for InboundPeer {
    fn insert_into(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.identity.clone());
        if let Some(addr) = self.addr {
            extensions.insert(addr);
        }
    }
}

impl ConnectionExtensions for PeerIdentity {
    fn insert_into(&self, extensions: &mut http::Extensions) {
        extensions.insert(self.clone());
    }
}

/// How long in-flight requests get to finish after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// After an accept error (e.g. out of file descriptors) wait before accepting again,
/// instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// An HTTP/1.1 connection must deliver a request head within this (hyper's default,
/// stated here because others depend on it). The timer also runs while a keep-alive
/// connection sits idle, so it is this listener's idle keep-alive timeout too: a peer
/// sidecar's pool must stop reusing idle connections well before it
/// (`outbound::connect::PEER_IDLE_TIMEOUT`).
pub const HTTP1_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The hyper connection builder both listeners use: h1 and h2 (by preface/ALPN).
pub fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP1_HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .adaptive_window(true);
    builder
}

/// Accepts connections until `shutdown` is cancelled, hands each to `handle` on its
/// own task, then waits (up to [`DRAIN_TIMEOUT`]) for watched connections to finish
/// their in-flight requests. Connections still open after that are aborted.
pub async fn accept_loop<H, F>(listener: TcpListener, shutdown: CancellationToken, handle: H)
where
    H: Fn(TcpStream, Watcher) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _remote)) => {
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(handle(stream, graceful.watcher()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed; pausing before the next accept");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = tasks.len(),
            "drain timed out; closing remaining connections"
        );
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// How a listener boxes the incoming request body (streaming): [`boxed`] as it is, or
/// wrapped first (the inbound's trailer filter), still with one allocation.
pub type BodyAdaptor = fn(Incoming) -> ProxyBody;

/// Adapts a boxed stack to hyper: boxes the incoming body with [`boxed`] (streaming),
/// inserts a per-connection request extension, and renders errors as JSON responses.
pub fn hyper_service<X>(
    stack: Stack,
    extension: X,
    direction: Direction,
    metrics: Arc<dyn ProxyMetrics>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
> + Clone
where
    X: ConnectionExtensions,
{
    hyper_service_with(stack, extension, direction, metrics, boxed::<Incoming>)
}

/// As [`hyper_service`], boxing the request body with `body`.
pub fn hyper_service_with<X>(
    stack: Stack,
    extension: X,
    direction: Direction,
    metrics: Arc<dyn ProxyMetrics>,
    body: BodyAdaptor,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
> + Clone
where
    X: ConnectionExtensions,
{
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let mut request = request.map(body);
        extension.insert_into(request.extensions_mut());
        let stack = stack.clone();
        let metrics = Arc::clone(&metrics);
        answer(stack, request, direction, metrics)
    })
}

/// Boxed here, in a non-generic function, so the compiler proves `Send` for this
/// concrete future once (proving it through the generic hyper service trips the
/// higher-ranked lifetime limitation of rust-lang/rust#102211).
fn answer(
    stack: Stack,
    request: Request<ProxyBody>,
    direction: Direction,
    metrics: Arc<dyn ProxyMetrics>,
) -> BoxFuture<'static, Result<Response<ProxyBody>, Infallible>> {
    let mut stack = stack;
    Box::pin(async move {
        // Not `oneshot`: its generic state machine is what trips the lifetime check.
        let result = match std::future::poll_fn(|cx| stack.poll_ready(cx)).await {
            Ok(()) => stack.call(request).await,
            Err(error) => Err(error),
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => render_error(direction, &error, &*metrics, &TraceIdField::NONE),
        };
        metrics.response(direction, response.status());
        Ok(response)
    })
}

/// The response for a request that failed in the proxy, logged (with the trace id when the
/// request is traced) and counted: the one place a [`ForwardError`] becomes an answer. The
/// trace layer calls it for the requests it sees, so their log line carries the trace id;
/// the listener for the rest.
pub fn render_error(
    direction: Direction,
    error: &ForwardError,
    metrics: &dyn ProxyMetrics,
    trace_id: &TraceIdField,
) -> Response<ProxyBody> {
    tracing::warn!(
        ?direction,
        side = error.side().as_str(),
        retryable = error.retryable(),
        error = %crate::forward_error::error_chain(error),
        %trace_id,
        "request failed"
    );
    metrics.forward_error(direction, error);
    error.to_response()
}

/// Serves one connection's worth of HTTP with `service` until it closes or the
/// graceful watcher asks it to finish.
pub async fn serve_connection<I, S>(io: I, service: S, watcher: Watcher)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = http_builder();
    let connection = builder.serve_connection_with_upgrades(io, service);
    if let Err(error) = watcher.watch(connection).await {
        // Peers resetting connections is normal life for a proxy: debug, not warn.
        tracing::debug!(error = %error, "connection ended with an error");
    }
}

/// Boxes a composed service into a [`Stack`] (the type boundary between the layer
/// chain and the listener).
pub fn box_stack<S>(service: S) -> Stack
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    BoxCloneSyncService::new(service)
}
