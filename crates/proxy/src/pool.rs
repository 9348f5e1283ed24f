//! The one connection pool of both hops: sidecar → peer sidecar (mTLS, keyed by endpoint
//! address and expected identity) and inbound sidecar → local app (plain TCP or h2c). What
//! differs between them is only how a connection is opened ([`Dial`]).
//!
//! HTTP/2 connections (peers offer `h2` by ALPN; apps with `protocol: http2`) are shared:
//! one per key, its `SendRequest` cloned per request. HTTP/1.1 connections are kept alive
//! while idle: a sender returns to the pool when its response body ends ([`PoolBody`]).
//! Closed connections are dropped at checkout and a new one is dialled, so a restart costs
//! nothing but the reconnect.
//!
//! Dialling is done once per key even when many first requests arrive together: the first
//! dials while the others wait at the key's gate, then find the pooled HTTP/2 connection
//! (or, when that dial failed moments ago, fail with its error instead of each waiting out
//! a connect timeout of its own). Once a key is known to speak HTTP/1.1, which needs a
//! connection per concurrent request, dials are not serialised.
//!
//! An idle HTTP/1.1 connection is reused only for the idle timeout the caller gives, and a
//! request that a *reused* HTTP/1.1 connection loses to the server closing it is sent again
//! on a fresh one when that is safe ([`crate::retry`]: the one replay scheme of both hops).
//! Idle HTTP/2 connections are closed by a reaper after an idle period without requests.

mod body;
pub(crate) mod forms;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};
use crate::retry::{self, Replay};
pub use body::PoolBody;
use body::Recycle;

/// Idle HTTP/1.1 connections kept per key; more are closed when they become idle.
const MAX_IDLE_HTTP1: usize = 32;

/// A request sender on a fresh connection.
pub enum Sender {
    /// Multiplexed: clone freely, one connection per key.
    Http2(http2::SendRequest<ProxyBody>),
    /// One request at a time; pooled while idle.
    Http1(http1::SendRequest<ProxyBody>),
}

/// How a pool opens connections.
pub(crate) trait Dial: Send + Sync + 'static {
    /// What a connection is for (one pool entry per key).
    type Key: Clone + Eq + Hash + Debug + Send + Sync + 'static;

    /// Opens a connection for `key` within `timeout`, HTTP handshake included.
    fn dial(
        &self,
        key: &Self::Key,
        timeout: Duration,
    ) -> impl Future<Output = Result<Sender, BoxError>> + Send;
}

/// The timeouts of one send.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Opening a connection (TCP, TLS, HTTP handshake).
    pub connect: Duration,
    /// How long an HTTP/1.1 connection may sit idle and still be reused.
    pub idle: Duration,
    /// How long a shared HTTP/2 connection may go without requests before it is closed.
    pub idle_http2: Duration,
}

struct Entry {
    http2: Option<http2::SendRequest<ProxyBody>>,
    /// Checkouts of the HTTP/2 connection, for its idle reaper.
    http2_uses: u64,
    /// Oldest first: pushed as connections become idle.
    idle_http1: Vec<Idle>,
    /// The idle timeout of the last send.
    idle_timeout: Duration,
    /// Held while dialling, so concurrent first requests dial once.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The server answered a dial with HTTP/1.1: dials need no gate.
    http1_only: bool,
    /// The last dial failure: when, and why.
    failed: Option<(Instant, Arc<str>)>,
}

impl Entry {
    fn new(idle_timeout: Duration) -> Entry {
        Entry {
            http2: None,
            http2_uses: 0,
            idle_http1: Vec::new(),
            idle_timeout,
            gate: Arc::default(),
            http1_only: false,
            failed: None,
        }
    }
}

/// An HTTP/1.1 connection waiting for its next request.
struct Idle {
    sender: http1::SendRequest<ProxyBody>,
    since: Instant,
}

/// Drops the connections of `idle` (oldest first) idle for `timeout` or longer.
fn drop_expired(idle: &mut Vec<Idle>, now: Instant, timeout: Duration) {
    let expired = idle.partition_point(|i| now.duration_since(i.since) >= timeout);
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

/// A pool of connections opened by `D` (see the [module docs](self)).
pub struct Pool<D: Dial> {
    inner: Arc<Inner<D>>,
}

impl<D: Dial> Clone for Pool<D> {
    fn clone(&self) -> Self {
        Pool {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<D: Dial> {
    dialer: D,
    entries: Mutex<HashMap<D::Key, Entry>>,
}

impl<D: Dial> Pool<D> {
    /// An empty pool dialling with `dialer`.
    pub fn new(dialer: D) -> Self {
        let inner = Inner {
            dialer,
            entries: Mutex::new(HashMap::new()),
        };
        Pool {
            inner: Arc::new(inner),
        }
    }

    /// How this pool opens connections (for connections it does not pool, such as opaque TCP).
    pub(crate) fn dialer(&self) -> &D {
        &self.inner.dialer
    }

    /// Sends `request` on a connection for `key`, reusing a pooled one if there is one.
    /// A pooled connection that turns out to be closed before the request left is
    /// replaced by a fresh one, once; so is a reused HTTP/1.1 connection that the
    /// server closed under a replayable request ([`crate::retry`]).
    pub async fn send(
        &self,
        key: &D::Key,
        request: Request<ProxyBody>,
        timeouts: Timeouts,
    ) -> Result<Response<PoolBody<D>>, SendError> {
        let request = match self.checkout(key, timeouts.idle) {
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
        match Box::pin(self.dial_once(key, timeouts)).await {
            Ok(sender) => self.send_on(key, sender, request).await,
            Err(error) => Err(SendError::Connect { error, request }),
        }
    }

    /// A sender for `key`: a connection another request dialled while this one waited at
    /// the key's gate, else a fresh one (see the [module docs](self)).
    async fn dial_once(&self, key: &D::Key, timeouts: Timeouts) -> Result<Sender, BoxError> {
        let gate = {
            let mut entries = self.lock();
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| Entry::new(timeouts.idle));
            (!entry.http1_only).then(|| Arc::clone(&entry.gate))
        };
        let Some(gate) = gate else {
            return self.dial(key, timeouts).await;
        };
        let waited_since = Instant::now();
        let _dialling = gate.lock().await;
        {
            let mut entries = self.lock();
            let entry = entries
                .entry(key.clone())
                .or_insert_with(|| Entry::new(timeouts.idle));
            if let Some(sender) = entry.http2.as_ref().filter(|s| !s.is_closed()) {
                return Ok(Sender::Http2(sender.clone()));
            }
            if let Some((at, error)) = &entry.failed
                && *at >= waited_since
            {
                let error = format!("dialled by a concurrent request, which failed: {error}");
                return Err(error.into());
            }
        }
        let dialled = self.dial(key, timeouts).await;
        if let Err(error) = &dialled {
            let mut entries = self.lock();
            let failure = (Instant::now(), Arc::from(error.to_string()));
            if let Some(entry) = entries.get_mut(key) {
                entry.failed = Some(failure);
            }
        }
        dialled
    }

    /// One attempt on a pooled connection, telling apart failures a fresh connection
    /// may fix.
    async fn send_reused(
        &self,
        key: &D::Key,
        sender: Sender,
        request: Request<ProxyBody>,
    ) -> Result<Response<PoolBody<D>>, Reused> {
        // Only HTTP/1.1 races an idle close: an HTTP/2 server announces it with GOAWAY,
        // and hyper hands back (as unsent) the requests the server never processed.
        let replay = match &sender {
            Sender::Http1(_) => Replay::of(&request),
            Sender::Http2(_) => None,
        };
        match (self.send_on(key, sender, request).await, replay) {
            (Ok(response), _) => Ok(response),
            (
                Err(SendError::Exchange {
                    request: Some(request),
                    error,
                }),
                _,
            ) => {
                tracing::debug!(?key, %error, "pooled connection was stale; redialling");
                Err(Reused::Redial(request))
            }
            (Err(SendError::Exchange { error, .. }), Some(replay))
                if retry::closed_before_response(&error) =>
            {
                tracing::debug!(?key, %error, "server closed a reused connection; replaying");
                Err(Reused::Redial(replay.into_request()))
            }
            (Err(error), _) => Err(Reused::Failed(error)),
        }
    }

    async fn send_on(
        &self,
        key: &D::Key,
        sender: Sender,
        request: Request<ProxyBody>,
    ) -> Result<Response<PoolBody<D>>, SendError> {
        match sender {
            Sender::Http2(mut sender) => sender
                .try_send_request(forms::http2(request))
                .await
                .map(|response| response.map(PoolBody::plain))
                .map_err(exchange_error),
            Sender::Http1(mut sender) => {
                let response = sender
                    .try_send_request(forms::http1(request))
                    .await
                    .map_err(exchange_error)?;
                // On an error the sender is dropped, which closes the connection.
                let recycle = Recycle::new(Arc::downgrade(&self.inner), key.clone(), sender);
                Ok(response.map(|inner| PoolBody::recycling(inner, recycle)))
            }
        }
    }

    fn checkout(&self, key: &D::Key, idle_timeout: Duration) -> Option<Sender> {
        let mut entries = self.lock();
        let entry = entries.get_mut(key)?;
        entry.idle_timeout = idle_timeout;
        if let Some(sender) = &entry.http2 {
            if !sender.is_closed() {
                entry.http2_uses += 1;
                return Some(Sender::Http2(sender.clone()));
            }
            entry.http2 = None;
        }
        drop_expired(&mut entry.idle_http1, Instant::now(), idle_timeout);
        while let Some(idle) = entry.idle_http1.pop() {
            if idle.sender.is_ready() {
                return Some(Sender::Http1(idle.sender));
            }
        }
        // Nothing usable left: forget the key (an endpoint may have left the mesh), unless
        // a dial is under way or waited for.
        if Arc::strong_count(&entry.gate) == 1 {
            entries.remove(key);
        }
        None
    }

    async fn dial(&self, key: &D::Key, timeouts: Timeouts) -> Result<Sender, BoxError> {
        let sender = self.inner.dialer.dial(key, timeouts.connect).await?;
        let mut entries = self.lock();
        let entry = entries
            .entry(key.clone())
            .or_insert_with(|| Entry::new(timeouts.idle));
        entry.failed = None;
        match &sender {
            Sender::Http2(http2) => {
                entry.http2 = Some(http2.clone());
                reap_when_idle(
                    Arc::downgrade(&self.inner),
                    key.clone(),
                    timeouts.idle_http2,
                );
            }
            Sender::Http1(_) => entry.http1_only = true,
        }
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<D::Key, Entry>> {
        lock(&self.inner.entries)
    }
}

/// Drops the pool's HTTP/2 connection for `key` once a whole idle period passed without a
/// checkout (requests in flight keep their own senders; the connection closes after them).
/// One task per HTTP/2 connection: they are few, and dialled rarely.
fn reap_when_idle<D: Dial>(pool: std::sync::Weak<Inner<D>>, key: D::Key, idle: Duration) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut seen = None;
        loop {
            tokio::time::sleep(idle).await;
            let Some(inner) = pool.upgrade() else { return };
            let mut entries = lock(&inner.entries);
            let Some(entry) = entries.get_mut(&key) else {
                return;
            };
            if entry.http2.as_ref().is_none_or(|s| s.is_closed()) {
                return;
            }
            if seen == Some(entry.http2_uses) {
                tracing::debug!(?key, "closing an idle HTTP/2 connection");
                entry.http2 = None;
                return;
            }
            seen = Some(entry.http2_uses);
        }
    });
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
