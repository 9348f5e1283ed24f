//! Whether the local application has opened its port yet.
//!
//! A sidecar starts before its app (the app needs the sidecar's outbound address), so
//! for a while the inbound listener serves callers while nothing listens on the app
//! port. Those requests are answered `503` with `retryable: true` and `Retry-After`
//! ([`crate::ForwardError::AppStarting`]) rather than the `502 upstream_unavailable` a
//! crashed app gets, and the admin `/ready` stays `503` until then.
//!
//! [`probe`] connects to the app port with a short capped backoff until one connection is
//! accepted (the app client's own dials count too); from then on the app counts as started for the life of the sidecar (a later
//! refusal is a failure, answered `502`). The data path reads the flag only when a connect
//! to the app has already failed: an accepted request costs nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use api::contract::client::Backoff;

/// The first probe retries after at most this; a just-started app is found quickly.
const PROBE_BASE: Duration = Duration::from_millis(10);
/// Probes never wait longer than this apart, so an app that listens late is noticed
/// within this much.
const PROBE_CAP: Duration = Duration::from_millis(250);
/// How long one connect attempt may take (loopback answers at once, unless the backlog
/// is full: then the app is listening anyway and the next attempt will tell).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How the sidecar opens a TCP connection to its app: from inside the app's pod in pod mode
/// (the app listens on the pod's loopback), else directly.
pub type AppConnect =
    Arc<dyn Fn(SocketAddr) -> BoxFuture<'static, std::io::Result<TcpStream>> + Send + Sync>;

/// Shared between the probe, the inbound app client and the admin `/ready`.
pub struct AppReadiness {
    addr: SocketAddr,
    connect: Option<AppConnect>,
    listening: AtomicBool,
    changed: Notify,
}

impl std::fmt::Debug for AppReadiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppReadiness")
            .field("addr", &self.addr)
            .field("in_pod", &self.connect.is_some())
            .field("listening", &self.is_listening())
            .finish()
    }
}

impl AppReadiness {
    /// Not listening yet: nothing has connected to `addr`.
    pub fn new(addr: SocketAddr) -> Arc<Self> {
        Arc::new(AppReadiness {
            addr,
            connect: None,
            listening: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// As [`AppReadiness::new`], connecting to the app with `connect` (pod mode).
    pub fn connecting_with(addr: SocketAddr, connect: AppConnect) -> Arc<Self> {
        Arc::new(AppReadiness {
            addr,
            connect: Some(connect),
            listening: AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    /// A new TCP connection to the app (not marked as proof of listening: callers do).
    pub async fn connect_to(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        match &self.connect {
            Some(connect) => connect(addr).await,
            None => TcpStream::connect(addr).await,
        }
    }

    /// The app's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True once the app has accepted a connection.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Records that the app accepted a connection, and wakes [`AppReadiness::listening`].
    pub fn mark_listening(&self) {
        // A plain load first: once listening (the usual case) nothing is written.
        if !self.is_listening() && !self.listening.swap(true, Ordering::AcqRel) {
            tracing::info!(app = %self.addr, "the app is listening; sidecar ready");
            self.changed.notify_waiters();
        }
    }

    /// Resolves once the app has accepted a connection.
    pub async fn listening(&self) {
        loop {
            // Registered before the check, so a mark in between is not missed.
            let notified = self.changed.notified();
            if self.is_listening() {
                return;
            }
            notified.await;
        }
    }
}

/// Connects to the app port until it accepts once (or `shutdown`), then marks it listening.
pub async fn probe(readiness: Arc<AppReadiness>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(PROBE_BASE, PROBE_CAP);
    while !readiness.is_listening() {
        if let Ok(_stream) =
            super::app_connector::connect_app(&readiness, readiness.addr, CONNECT_TIMEOUT).await
        {
            readiness.mark_listening();
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_probe_finds_an_app_that_listens_late() {
        // Reserve a port, release it, and listen on it only after the probe has failed.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let readiness = AppReadiness::new(addr);
        let probing = tokio::spawn(probe(Arc::clone(&readiness), CancellationToken::new()));
        tokio::task::yield_now().await;
        assert!(!readiness.is_listening());
        let _app = tokio::net::TcpListener::bind(addr).await.unwrap();
        readiness.listening().await;
        assert!(readiness.is_listening());
        probing.await.unwrap();
    }

    #[tokio::test]
    async fn the_probe_stops_on_shutdown() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let readiness = AppReadiness::new(addr);
        let shutdown = CancellationToken::new();
        let probing = tokio::spawn(probe(Arc::clone(&readiness), shutdown.clone()));
        shutdown.cancel();
        probing.await.unwrap();
        assert!(!readiness.is_listening());
    }
}
