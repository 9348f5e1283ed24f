//! A pooled connection's response body. On HTTP/1.1 it also carries the connection's
//! sender and puts it back in the idle pool when the body ends, without a task per request
//! to wait for it. A body dropped before its end takes the sender with it: the connection
//! is closed.

use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::time::Instant;

use super::{Dial, Entry, Idle, Inner, MAX_IDLE_HTTP1, drop_expired, lock};
use crate::body::ProxyBody;

/// See the [module docs](self).
pub struct PoolBody<D: Dial> {
    inner: Incoming,
    recycle: Option<Recycle<D>>,
}

// Never pinned structurally: the inner body is `Unpin` and is polled through `Pin::new`.
impl<D: Dial> Unpin for PoolBody<D> {}

impl<D: Dial> PoolBody<D> {
    /// A body with no connection to return (HTTP/2: the sender stays pooled meanwhile).
    pub(super) fn plain(inner: Incoming) -> Self {
        PoolBody {
            inner,
            recycle: None,
        }
    }

    /// A body whose end returns its HTTP/1.1 connection to the pool.
    pub(super) fn recycling(inner: Incoming, recycle: Recycle<D>) -> Self {
        PoolBody {
            inner,
            recycle: Some(recycle),
        }
    }

    fn finish(&mut self) {
        if let Some(recycle) = self.recycle.take() {
            recycle.run();
        }
    }
}

impl<D: Dial> Body for PoolBody<D> {
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

impl<D: Dial> Drop for PoolBody<D> {
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
pub(super) struct Recycle<D: Dial> {
    pool: Weak<Inner<D>>,
    key: D::Key,
    sender: http1::SendRequest<ProxyBody>,
}

impl<D: Dial> Recycle<D> {
    pub(super) fn new(
        pool: Weak<Inner<D>>,
        key: D::Key,
        sender: http1::SendRequest<ProxyBody>,
    ) -> Self {
        Recycle { pool, key, sender }
    }

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
fn put_idle<D: Dial>(pool: &Weak<Inner<D>>, key: D::Key, sender: http1::SendRequest<ProxyBody>) {
    let Some(inner) = pool.upgrade() else { return };
    let mut entries = lock(&inner.entries);
    // A key forgotten meanwhile gets its idle timeout back from its next checkout.
    let entry = entries
        .entry(key)
        .or_insert_with(|| Entry::new(std::time::Duration::ZERO));
    let now = Instant::now();
    let timeout = entry.idle_timeout;
    drop_expired(&mut entry.idle_http1, now, timeout);
    if entry.idle_http1.len() < MAX_IDLE_HTTP1 {
        entry.idle_http1.push(Idle { sender, since: now });
    }
}
