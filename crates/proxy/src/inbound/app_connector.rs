//! How the inbound sidecar opens a connection to its local app for the shared pool
//! ([`crate::pool`]): plain TCP (no Nagle), then HTTP/1.1 or HTTP/2 with prior knowledge
//! (`protocol: http2`). A dial that succeeds also proves the app listens
//! ([`AppReadiness`]), sooner than the probe might.
//!
//! [`connect_app`] is the one function that makes a socket to the app: the HTTP pool, opaque
//! TCP splices ([`super::opaque`]) and the readiness probe all go through it, so that pod mode
//! can create that socket inside the pod's network namespace in one place.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::app_readiness::AppReadiness;
use crate::AppProtocol;
use crate::body::BoxError;
use crate::pool::{Dial, Sender};

/// The app's key in the pool: there is one app per sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct App;

/// Dials the local app.
pub(crate) struct AppDialer {
    readiness: Arc<AppReadiness>,
    protocol: AppProtocol,
}

impl AppDialer {
    pub(crate) fn new(readiness: Arc<AppReadiness>, protocol: AppProtocol) -> Self {
        AppDialer {
            readiness,
            protocol,
        }
    }
}

impl Dial for AppDialer {
    type Key = App;

    async fn dial(&self, _app: &App, timeout: Duration) -> Result<Sender, BoxError> {
        let tcp = connect_app(&self.readiness, self.readiness.addr(), timeout).await?;
        self.readiness.mark_listening();
        let io = TokioIo::new(tcp);
        match self.protocol {
            AppProtocol::Http2 => {
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await?;
                tokio::spawn(drive(connection));
                Ok(Sender::Http2(sender))
            }
            AppProtocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await?;
                tokio::spawn(drive(connection));
                Ok(Sender::Http1(sender))
            }
        }
    }
}

/// Opens a TCP connection (no Nagle) to the app at `addr` within `timeout`, from inside the
/// app's pod in pod mode (`readiness` knows how). Every socket to the app is made here (see
/// the [module docs](self)).
pub(crate) async fn connect_app(
    readiness: &AppReadiness,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, readiness.connect_to(addr))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting to the app at {addr} took longer than {timeout:?}"),
            )
        })??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Runs an app connection to completion.
async fn drive<C>(connection: C)
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(error) = connection.await {
        tracing::debug!(%error, "app connection ended with an error");
    }
}
