//! Serving one HTTP connection as a task the control plane owns.
//!
//! Every task the control plane starts holds the registry or the issuer, and with them the
//! state file. `serve` ends only after all of them have ended, so that a stopped control plane
//! has closed its database (a restart in the same process, or a replica taking over, opens it
//! next). Hence our own accept loops instead of `axum::serve`: axum's connection tasks report
//! themselves finished *before* they drop their copy of the router, and its HTTP/2 streams run
//! on tasks nobody waits for. Here every connection, and every task hyper spawns for one, runs
//! on the control plane's [`TaskTracker`], which counts a task done only once its future,
//! captures included, has been dropped.

use std::future::Future;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Set when the control plane stops: long polls answer at once with what they have, so
/// that a graceful shutdown does not wait out [`api::contract::LONG_POLL_SECS`].
#[derive(Debug, Clone)]
pub(crate) struct Stopping(pub CancellationToken);

/// hyper's executor (HTTP/2 streams): spawns on the tracker, so streams are awaited too.
#[derive(Debug, Clone)]
struct Tracked(TaskTracker);

impl<F> hyper::rt::Executor<F> for Tracked
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        self.0.spawn(fut);
    }
}

/// Serves HTTP/1 or HTTP/2 on `io` until the peer closes; once `stop` is cancelled,
/// in-flight requests finish and the connection closes.
pub(crate) async fn http<I>(io: I, service: Router, stop: CancellationToken, tasks: TaskTracker)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let builder = Builder::new(Tracked(tasks));
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "control connection ended with an error");
    }
}
