//! `CONNECT <mesh-service>:<port>` on the outbound listener: a tunnel that carries
//! HTTP to one mesh service, as Linkerd and Envoy treat HTTP inside a tunnel to an
//! in-mesh destination.
//!
//! Why the proxy terminates the tunnel instead of splicing bytes to a peer: a raw
//! splice would bypass what the mesh is for — mTLS as this workload, the
//! `x-meshwork-client-id` the peer stamps from it, and the peer's L7 authorization.
//! So the CONNECT is answered `200`, and HTTP/1.1 (or h2 with prior knowledge) is
//! served on the upgraded connection; every request inside goes the normal mesh path
//! (hop-by-hop stripping, the peer pool, mTLS) to the service named in the CONNECT.
//! The `Host`/`:authority` inside the tunnel never changes the destination.
//!
//! Bytes that are not HTTP (e.g. a TLS ClientHello, for `https://` through the
//! tunnel) close the tunnel: the mesh carries only HTTP to mesh services.

use std::io::Cursor;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::uri::{PathAndQuery, Uri};
use http::{Method, Request, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tower::ServiceBuilder;

use super::pool::PeerPool;
use super::router;
use crate::body::{ProxyBody, full};
use crate::forward_error::ForwardError;
use crate::hop_by_hop::HopByHopLayer;
use crate::metrics::{Direction, ProxyMetrics};
use crate::routes::Routes;
use crate::server::{self, Stack};

/// A client that opens a tunnel and says nothing for this long is disconnected
/// (the same bound hyper puts on reading a request head).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the tunnel's first bytes is looked at to tell HTTP from anything else.
const PEEK_LEN: usize = 16;

/// The TLS record type of a handshake (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A CONNECT tunnel pinned to one mesh service; also the tower service that forwards
/// each request inside it to that service.
#[derive(Clone)]
pub(super) struct MeshTunnel {
    service: String,
    port: u16,
    routes: Routes,
    pool: PeerPool,
    metrics: Arc<dyn ProxyMetrics>,
}

/// What the first bytes inside a tunnel look like.
#[derive(Debug, PartialEq, Eq)]
enum Opening {
    /// A request line (methods are upper-case tokens) or the h2 preface (`PRI`).
    Http,
    /// A TLS handshake record.
    Tls,
    /// Anything else.
    Other,
}

impl MeshTunnel {
    /// A tunnel to mesh `service` (as `CONNECT service:port` named it).
    pub(super) fn new(
        service: String,
        port: u16,
        routes: Routes,
        pool: PeerPool,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        MeshTunnel {
            service,
            port,
            routes,
            pool,
            metrics,
        }
    }

    /// Answers the CONNECT with `200` and serves HTTP on the upgraded connection.
    pub(super) fn accept(self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let upgrade = hyper::upgrade::on(request);
        tokio::spawn(async move {
            match upgrade.await {
                Ok(upgraded) => self.serve(upgraded).await,
                Err(error) => {
                    tracing::debug!(service = %self.service, %error, "CONNECT was not upgraded")
                }
            }
        });
        Response::new(full(Bytes::new()))
    }

    async fn serve(self, upgraded: Upgraded) {
        let mut io = TokioIo::new(upgraded);
        let first = match first_bytes(&mut io).await {
            Ok(first) if first.is_empty() => return,
            Ok(first) => first,
            Err(error) => {
                tracing::debug!(service = %self.service, %error, "mesh tunnel closed before any request");
                return;
            }
        };
        let opening = Opening::of(&first);
        if opening != Opening::Http {
            tracing::warn!(service = %self.service, port = self.port, ?opening,
                "closing CONNECT tunnel: the mesh only carries HTTP to mesh services \
                 (send plain http://SERVICE/...; the sidecars add mTLS)");
            return;
        }
        let service = server::hyper_service(
            self.stack(),
            (),
            Direction::Outbound,
            Arc::clone(&self.metrics),
        );
        let io = TokioIo::new(replay(first, io));
        if let Err(error) = server::http_builder().serve_connection(io, service).await {
            tracing::debug!(service = %self.service, %error, "mesh tunnel ended with an error");
        }
    }

    /// The per-request stack inside the tunnel: the outbound one, pinned to the service.
    fn stack(&self) -> Stack {
        server::box_stack(
            ServiceBuilder::new()
                .layer(HopByHopLayer)
                .service(self.clone()),
        )
    }

    async fn forward(
        self,
        request: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ForwardError> {
        if request.method() == Method::CONNECT {
            return Err(ForwardError::BadRequest {
                reason: format!(
                    "CONNECT inside the tunnel to mesh service {:?}",
                    self.service
                ),
            });
        }
        let request = self.pin(request)?;
        let table = self.routes.load();
        let Some(endpoints) = table.service(&self.service) else {
            return Err(ForwardError::PeerUnavailable {
                service: self.service.clone(),
                reason: "it left the mesh while the tunnel was open".to_owned(),
            });
        };
        router::forward(&self.pool, &self.service, endpoints, request).await
    }

    /// Points the request at the tunnel's service, whatever its own target says.
    fn pin(&self, mut request: Request<ProxyBody>) -> Result<Request<ProxyBody>, ForwardError> {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme("http")
            .authority(format!("{}:{}", self.service, self.port))
            .path_and_query(path)
            .build()
            .map_err(|error| ForwardError::BadRequest {
                reason: format!("request inside the tunnel to {:?}: {error}", self.service),
            })?;
        *request.uri_mut() = uri;
        Ok(request)
    }
}

impl tower::Service<Request<ProxyBody>> for MeshTunnel {
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        Box::pin(self.clone().forward(request))
    }
}

impl Opening {
    fn of(first: &[u8]) -> Opening {
        match first.first() {
            Some(&TLS_HANDSHAKE_RECORD) => Opening::Tls,
            Some(byte) if byte.is_ascii_uppercase() => Opening::Http,
            _ => Opening::Other,
        }
    }
}

/// Reads what the client sent first (empty if it closed the tunnel).
async fn first_bytes<I: AsyncRead + Unpin>(io: &mut I) -> std::io::Result<Vec<u8>> {
    let mut buffer = vec![0; PEEK_LEN];
    let read = tokio::time::timeout(FIRST_BYTES_TIMEOUT, io.read(&mut buffer))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client sent nothing within {FIRST_BYTES_TIMEOUT:?}"),
            )
        })??;
    buffer.truncate(read);
    Ok(buffer)
}

/// The tunnel connection with the already-read bytes put back in front.
fn replay<I>(first: Vec<u8>, io: I) -> impl AsyncRead + AsyncWrite + Send + Unpin + 'static
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read, write) = tokio::io::split(io);
    tokio::io::join(Cursor::new(first).chain(read), write)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_and_the_h2_preface_are_http() {
        assert_eq!(Opening::of(b"POST /charges HTTP/1.1\r\n"), Opening::Http);
        assert_eq!(Opening::of(b"PRI * HTTP/2.0\r\n"), Opening::Http);
    }

    #[test]
    fn tls_and_other_bytes_are_not() {
        assert_eq!(Opening::of(&[0x16, 0x03, 0x01, 0x00]), Opening::Tls);
        assert_eq!(Opening::of(&[0x00, 0x01]), Opening::Other);
    }

    #[tokio::test]
    async fn replay_puts_the_first_bytes_back() {
        let (client, server) = tokio::io::duplex(64);
        let mut replayed = replay(b"GET".to_vec(), server);
        let mut client = client;
        tokio::io::AsyncWriteExt::write_all(&mut client, b" / HTTP/1.1")
            .await
            .unwrap();
        drop(client);
        let mut all = String::new();
        replayed.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1");
    }
}
