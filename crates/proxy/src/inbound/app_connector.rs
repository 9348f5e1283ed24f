//! The app client's connector: plain TCP (hyper-util's `HttpConnector`), with every
//! connection tagged by a count of the responses it has carried.
//!
//! Why: a request that fails on a *reused* keep-alive connection may have lost a race
//! with the app closing that idle connection, and can be replayed; the same failure
//! on a fresh connection is the app's own doing and is not. hyper-util's legacy client
//! knows which it was but does not say so in its `Error`; it does hand out the
//! connection's `Connected` metadata, whose "extra" value we set here.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Extensions, Response, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::app_readiness::AppReadiness;
use crate::body::BoxError;

/// How many responses one app connection has carried (shared by every copy of the
/// connection's metadata).
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnectionUse(Arc<AtomicU64>);

impl ConnectionUse {
    /// Counts `response` against the connection that carried it. (hyper-util copies
    /// the connection's extras into every response's extensions.)
    pub(crate) fn record<B>(response: &Response<B>) {
        if let Some(uses) = response.extensions().get::<ConnectionUse>() {
            uses.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether the connection `error` happened on had carried a response before: i.e.
    /// it was a reused keep-alive connection. An HTTP/1.1 connection carries one
    /// exchange at a time, and a response is recorded the moment its head arrives, long
    /// before the connection could carry another exchange to a failure.
    pub(crate) fn was_reused(error: &hyper_util::client::legacy::Error) -> bool {
        let Some(connected) = error.connect_info() else {
            return false;
        };
        let mut extras = Extensions::new();
        connected.get_extras(&mut extras);
        extras
            .get::<ConnectionUse>()
            .is_some_and(|uses| uses.0.load(Ordering::Relaxed) > 0)
    }
}

/// Dials the app over TCP (no Nagle), tagging each connection. A dial that succeeds
/// also proves the app listens ([`AppReadiness`]), sooner than the probe might.
#[derive(Clone, Debug)]
pub(crate) struct AppConnector {
    http: HttpConnector,
    readiness: Arc<AppReadiness>,
}

impl AppConnector {
    pub(crate) fn new(readiness: Arc<AppReadiness>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        AppConnector { http, readiness }
    }
}

impl Service<Uri> for AppConnector {
    type Response = AppConnection;
    type Error = BoxError;
    // Boxed: dialling is the cold path (the pool reuses connections).
    type Future = BoxFuture<'static, Result<AppConnection, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let readiness = Arc::clone(&self.readiness);
        Box::pin(async move {
            let io = connecting.await?;
            readiness.mark_listening();
            let uses = ConnectionUse::default();
            Ok(AppConnection { io, uses })
        })
    }
}

/// A TCP connection to the app with its [`ConnectionUse`].
pub(crate) struct AppConnection {
    io: TokioIo<TcpStream>,
    uses: ConnectionUse,
}

impl Connection for AppConnection {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl Read for AppConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for AppConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
