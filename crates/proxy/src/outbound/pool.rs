//! Connections to peer sidecars, keyed by (endpoint address, expected identity).
//!
//! HTTP/2 peers (the normal case: every meshwork inbound offers `h2` by ALPN) get one
//! multiplexed connection whose `SendRequest` is cloned per request. HTTP/1.1 peers get
//! a keep-alive pool of idle connections: a sender returns to the pool when the response
//! body ends ([`PeerBody`]). Closed connections are dropped at checkout and a new one is
//! dialled, so a peer restart costs nothing but the reconnect.
//!
//! Dialling is done once per peer even when many first requests arrive together: the
//! first dials while the others wait at the peer's dial gate, then find the pooled HTTP/2
//! connection (or, when that dial failed moments ago, fail with its error instead of
//! each waiting out a connect timeout of its own). Once a peer is known to speak
//! HTTP/1.1, which needs a connection per concurrent request, dials are not serialised.
//!
//! An idle HTTP/1.1 connection is only reused for [`PEER_IDLE_TIMEOUT`], and a request
//! that a reused HTTP/1.1 connection loses to the peer closing it is sent again on a
//! fresh one when that is safe ([`crate::retry`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use identity::SpiffeId;
use tokio::time::Instant;

use super::connect::{PeerConnector, PeerSender};
use crate::body::{BoxError, ProxyBody};
use crate::retry::{self, Replay};
use crate::server::HTTP1_HEADER_READ_TIMEOUT;

/// Idle HTTP/1.1 connections kept per peer; more are closed when they become idle.
const MAX_IDLE_HTTP1: usize = 32;

/// An HTTP/1.1 peer connection idle for longer is not reused: it is dropped (which
/// closes it) at the next checkout or return for that peer, or else closed by the peer.
/// A meshwork inbound closes idle keep-alive connections at its header-read timeout
/// (30 s, [`HTTP1_HEADER_READ_TIMEOUT`]): reusing one near that deadline races the
/// close, so stop at half of it, a wide margin for scheduling delays. The cost is a
/// reconnect (TLS resumption) after 15 s of quiet, which is cheap.
const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const _: () = assert!(PEER_IDLE_TIMEOUT.as_secs() * 2 <= HTTP1_HEADER_READ_TIMEOUT.as_secs());

/// A peer connection's identity: where it goes and who must answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// The peer's inbound address.
    pub addr: SocketAddr,
    /// The SPIFFE ID the peer must prove.
    pub identity: SpiffeId,
}

#[derive(Default)]
struct Entry {
    http2: Option<http2::SendRequest<ProxyBody>>,
    /// Oldest first: pushed as connections become idle.
    idle_http1: Vec<Idle>,
    /// Held while dialling, so concurrent first requests dial once.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The peer answered a dial with HTTP/1.1: dials need no gate.
    http1_peer: bool,
    /// The last dial failure: when, and why.
    failed: Option<(Instant, Arc<str>)>,
}

/// An HTTP/1.1 connection waiting for its next request.
struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// Drops the connections of `idle` (oldest first) that have been idle too long.
fn drop_expired(idle: &mut Vec<Idle>, now: Instant) {
    let expired = idle.partition_point(|i| now.duration_since(i.since) >= PEER_IDLE_TIMEOUT);
    idle.drain(..expired);
}

/// How an attempt on a reused connection ended without a response.
enum Reused {
    /// Safe to send again on a fresh connection: here is the request.
    Redial(Request<ProxyBody>),
    /// Final.
    Failed(SendError),
}

/// How sending on a pooled connection failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be established: nothing was sent; here is the request back.
    Connect {
        /// The cause.
        error: BoxError,
        /// The unsent request.
        request: Request<ProxyBody>,
    },
    /// The exchange failed; `request` is `Some` if it was provably never sent.
    Exchange {
        /// The cause.
        error: hyper::Error,
        /// The unsent request, when retrying is safe.
        request: Option<Request<ProxyBody>>,
    },
}

/// The pool of connections to peer sidecars.
#[derive(Clone)]
pub struct PeerPool {
    inner: Arc<Inner>,
}

struct Inner {
    connector: PeerConnector,
    entries: Mutex<HashMap<PeerKey, Entry>>,
}

impl PeerPool {
    /// An empty pool dialling with `connector`.
    pub fn new(connector: PeerConnector) -> Self {
        let inner = Inner {
            connector,
            entries: Mutex::new(HashMap::new()),
        };
        PeerPool {
            inner: Arc::new(inner),
        }
    }

    /// Sends `request` to the peer `key`, reusing a pooled connection if there is one.
    /// A pooled connection that turns out to be closed before the request left is
    /// replaced by a fresh one, once; so is a reused HTTP/1.1 connection that the
    /// peer closed under a replayable request ([`crate::retry`]).
    pub async fn send(
        &self,
        key: &PeerKey,
        request: Request<ProxyBody>,
        connect_timeout: Duration,
    ) -> Result<Response<PeerBody>, SendError> {
        let request = match self.checkout(key) {
            Some(sender) => match self.send_reused(key, sender, request).await {
                Ok(response) => return Ok(response),
                Err(Reused::Failed(error)) => return Err(error),
                Err(Reused::Redial(request)) => request,
            },
            None => request,
        };
        // Boxed: dialling (TCP + TLS + HTTP handshake) is the cold path, and its state
        // would otherwise be inlined into every request's future and copied with it
        // (callgrind showed ~8.7k instructions/request of memcpy in the client sidecar).
        match Box::pin(self.dial_once(key, connect_timeout)).await {
            Ok(sender) => self.send_on(key, sender, request).await,
            Err(error) => Err(SendError::Connect { error, request }),
        }
    }

    /// A sender for `key`: a connection another request dialled while this one waited at
    /// the peer's gate, else a fresh one (see the [module docs](self)).
    async fn dial_once(&self, key: &PeerKey, timeout: Duration) -> Result<PeerSender, BoxError> {
        let gate = {
            let mut entries = self.lock();
            let entry = entries.entry(key.clone()).or_default();
            (!entry.http1_peer).then(|| Arc::clone(&entry.gate))
        };
        let Some(gate) = gate else {
            return self.dial(key, timeout).await;
        };
        let waited_since = Instant::now();
        let _dialling = gate.lock().await;
        {
            let mut entries = self.lock();
            let entry = entries.entry(key.clone()).or_default();
            if let Some(sender) = entry.http2.as_ref().filter(|s| !s.is_closed()) {
                return Ok(PeerSender::Http2(sender.clone()));
            }
            if let Some((at, error)) = &entry.failed
                && *at >= waited_since
            {
                return Err(
                    format!("dialled by a concurrent request, which failed: {error}").into(),
                );
            }
        }
        let dialled = self.dial(key, timeout).await;
        if let Err(error) = &dialled {
            let mut entries = self.lock();
            let failure = (Instant::now(), Arc::from(error.to_string()));
            entries.entry(key.clone()).or_default().failed = Some(failure);
        }
        dialled
    }

    /// One attempt on a pooled connection, telling apart failures a fresh connection
    /// may fix.
    async fn send_reused(
        &self,
        key: &PeerKey,
        sender: PeerSender,
        request: Request<ProxyBody>,
    ) -> Result<Response<PeerBody>, Reused> {
        // Only HTTP/1.1 races an idle close: an HTTP/2 peer announces it with GOAWAY,
        // and hyper hands back (as unsent) the requests the peer never processed.
        let replay = match &sender {
            PeerSender::Http1(_) => Replay::of(&request),
            PeerSender::Http2(_) => None,
        };
        let addr = key.addr;
        match (self.send_on(key, sender, request).await, replay) {
            (Ok(response), _) => Ok(response),
            (
                Err(SendError::Exchange {
                    request: Some(request),
                    error,
                }),
                _,
            ) => {
                tracing::debug!(%addr, %error, "pooled connection was stale; redialling");
                Err(Reused::Redial(request))
            }
            (Err(SendError::Exchange { error, .. }), Some(replay))
                if retry::closed_before_response(&error) =>
            {
                tracing::debug!(%addr, %error, "peer closed a reused connection; replaying");
                Err(Reused::Redial(replay.into_request()))
            }
            (Err(error), _) => Err(Reused::Failed(error)),
        }
    }

    async fn send_on(
        &self,
        key: &PeerKey,
        sender: PeerSender,
        request: Request<ProxyBody>,
    ) -> Result<Response<PeerBody>, SendError> {
        match sender {
            PeerSender::Http2(mut sender) => sender
                .try_send_request(into_http2(request))
                .await
                .map(|response| response.map(PeerBody::plain))
                .map_err(exchange_error),
            PeerSender::Http1(mut sender) => {
                let response = sender
                    .try_send_request(into_http1(request))
                    .await
                    .map_err(exchange_error)?;
                // On an error the sender is dropped, which closes the connection.
                let recycle = Recycle {
                    pool: Arc::downgrade(&self.inner),
                    key: key.clone(),
                    sender,
                };
                Ok(response.map(|inner| PeerBody {
                    inner,
                    recycle: Some(recycle),
                }))
            }
        }
    }

    fn checkout(&self, key: &PeerKey) -> Option<PeerSender> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        if let Some(sender) = &entry.http2 {
            if !sender.is_closed() {
                return Some(PeerSender::Http2(sender.clone()));
            }
            entry.http2 = None;
        }
        drop_expired(&mut entry.idle_http1, Instant::now());
        while let Some(idle) = entry.idle_http1.pop() {
            if idle.sender.is_ready() {
                return Some(PeerSender::Http1(idle.sender));
            }
        }
        // Nothing usable left: forget the peer (it may have left the mesh), unless a dial
        // is under way or waited for.
        if Arc::strong_count(&entry.gate) == 1 {
            entries.remove(key);
        }
        None
    }

    async fn dial(&self, key: &PeerKey, timeout: Duration) -> Result<PeerSender, BoxError> {
        let sender = self
            .inner
            .connector
            .connect(key.addr, &key.identity, timeout)
            .await?;
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_default();
        entry.failed = None;
        match &sender {
            PeerSender::Http2(http2) => entry.http2 = Some(http2.clone()),
            PeerSender::Http1(_) => entry.http1_peer = true,
        }
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PeerKey, Entry>> {
        lock(&self.inner.entries)
    }
}

/// A peer's response body. On HTTP/1.1 it also carries the connection's sender and puts
/// it back in the idle pool when the body ends, without a task per request to wait for it.
/// A body dropped before its end takes the sender with it: the connection is closed.
pub struct PeerBody {
    inner: Incoming,
    recycle: Option<Recycle>,
}

impl PeerBody {
    /// A body with no connection to return (HTTP/2: the sender stays pooled meanwhile).
    fn plain(inner: Incoming) -> Self {
        PeerBody {
            inner,
            recycle: None,
        }
    }

    fn finish(&mut self) {
        if let Some(recycle) = self.recycle.take() {
            recycle.run();
        }
    }
}

impl Body for PeerBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if this.recycle.is_some() {
            match &frame {
                // A known length ends with its last byte: the reader need not poll again.
                None => this.finish(),
                Some(Ok(_)) if this.inner.is_end_stream() => this.finish(),
                Some(Ok(_)) => {}
                // A broken exchange: drop (and so close) the connection.
                Some(Err(_)) => this.recycle = None,
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PeerBody {
    fn drop(&mut self) {
        // A body that is empty from the start (HEAD, 204, 304, `Content-Length: 0`) is
        // usually dropped unpolled; it still completed its exchange. (`recycle` first: on
        // HTTP/2 there is nothing to return, and asking h2 takes its stream lock.)
        if self.recycle.is_some() && self.inner.is_end_stream() {
            self.finish();
        }
    }
}

/// What it takes to return an HTTP/1.1 sender to the pool.
struct Recycle {
    pool: Weak<Inner>,
    key: PeerKey,
    sender: http1::SendRequest<ProxyBody>,
}

impl Recycle {
    /// Pools the sender if its connection is ready for another request. It usually is by
    /// the time its response body has ended; if not (the connection task has not caught up
    /// yet, or the request body is still being sent), one task waits for it, as it is not
    /// known to be unusable.
    fn run(self) {
        let Recycle {
            pool,
            key,
            mut sender,
        } = self;
        if sender.is_ready() {
            put_idle(&pool, key, sender);
        } else if !sender.is_closed()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    put_idle(&pool, key, sender);
                }
            });
        }
    }
}

/// Adds a ready HTTP/1.1 sender to `key`'s idle connections (unless the pool is gone or
/// holds [`MAX_IDLE_HTTP1`] already), dropping the ones idle too long.
fn put_idle(pool: &Weak<Inner>, key: PeerKey, sender: http1::SendRequest<ProxyBody>) {
    let Some(inner) = pool.upgrade() else { return };
    let mut entries = lock(&inner.entries);
    let idle = &mut entries.entry(key).or_default().idle_http1;
    let now = Instant::now();
    drop_expired(idle, now);
    if idle.len() < MAX_IDLE_HTTP1 {
        idle.push(Idle { sender, since: now });
    }
}

/// The map holds only senders, never half-updated state, so a panic elsewhere while
/// holding the lock leaves it consistent: recover from poisoning.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn exchange_error(mut error: hyper::client::conn::TrySendError<Request<ProxyBody>>) -> SendError {
    let request = error.take_message();
    SendError::Exchange {
        error: error.into_error(),
        request,
    }
}

/// HTTP/2 carries the host as `:authority` (from an absolute URI), not as `Host`.
/// (A request coming back unsent from an HTTP/1.1 attempt is origin-form again; its
/// `Host` is moved back into the URI.)
fn into_http2(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    *request.version_mut() = http::Version::HTTP_2;
    let host = request.headers_mut().remove(http::header::HOST);
    if request.uri().authority().is_none() {
        let authority = host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = authority;
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// HTTP/1.1 to a peer uses origin-form; the host travels in `Host`.
fn into_http1(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    *request.version_mut() = http::Version::HTTP_11;
    if let Some(authority) = request.uri().authority().cloned()
        && !request.headers().contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    if let Some(path) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = http::Uri::from(path);
    }
    request
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::body::empty;

    /// An idle entry on a real (in-memory) HTTP/1.1 connection.
    async fn idle_since(since: Instant) -> Idle {
        let (io, _server) = tokio::io::duplex(64);
        let io = hyper_util::rt::TokioIo::new(io);
        let (sender, connection) = http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        Idle { sender, since }
    }

    #[tokio::test]
    async fn connections_idle_for_the_idle_timeout_are_dropped_and_younger_ones_kept() {
        let now = Instant::now() + PEER_IDLE_TIMEOUT * 2;
        let mut idle = Vec::new();
        for age in [
            PEER_IDLE_TIMEOUT * 2,
            PEER_IDLE_TIMEOUT,
            PEER_IDLE_TIMEOUT / 2,
        ] {
            idle.push(idle_since(now - age).await);
        }
        idle.push(idle_since(now).await);
        drop_expired(&mut idle, now);
        let ages: Vec<_> = idle.iter().map(|i| now - i.since).collect();
        assert_eq!(ages, [PEER_IDLE_TIMEOUT / 2, Duration::ZERO]);
    }

    #[test]
    fn http1_form_is_origin_form_with_host() {
        let request = Request::builder()
            .uri("http://billing:80/charges?x=1")
            .body(empty())
            .unwrap();
        let request = into_http1(request);
        assert_eq!(request.uri(), "/charges?x=1");
        assert_eq!(request.headers()[http::header::HOST], "billing:80");
    }

    #[test]
    fn http2_form_is_absolute_without_host_even_after_an_http1_attempt() {
        let request = Request::builder()
            .uri("http://billing/charges")
            .header(http::header::HOST, "billing")
            .body(empty())
            .unwrap();
        let request = into_http2(into_http1(request));
        assert_eq!(request.uri(), "http://billing/charges");
        assert!(request.headers().get(http::header::HOST).is_none());
        assert_eq!(request.version(), http::Version::HTTP_2);
    }
}
