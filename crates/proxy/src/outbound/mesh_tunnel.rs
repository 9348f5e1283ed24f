//! `CONNECT <mesh-service>:<port>` on the outbound listener: a tunnel that carries
//! HTTP to one mesh service, as Linkerd and Envoy treat HTTP inside a tunnel to an
//! in-mesh destination.
//!
//! Why the proxy terminates the tunnel instead of splicing bytes to a peer: a raw
//! splice would bypass what the mesh is for — mTLS as this workload, the
//! `x-meshwork-client-id` the peer stamps from it, and the peer's L7 authorization.
//! So the CONNECT is answered `200`, and HTTP/1.1 (or h2 with prior knowledge) is
//! served on the upgraded connection by the outbound stack itself: every request inside is
//! classified for the service named in the CONNECT ([`super::classify::TunnelTo`]) and
//! goes the normal mesh path (telemetry, hop-by-hop stripping, timeouts, retries,
//! balancing, the peer pool, mTLS). The `Host`/`:authority` inside the tunnel never
//! changes the destination. Tunnels are drained with the listener on shutdown.
//!
//! Bytes that are not HTTP (e.g. a TLS ClientHello, for `https://` through the
//! tunnel) close the tunnel: the mesh carries only HTTP to mesh services.

use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::StackParts;
use super::classify::TunnelTo;
use crate::body::{ProxyBody, full};
use crate::metrics::Direction;
use crate::server;

/// A client that opens a tunnel and says nothing for this long is disconnected
/// (the same bound hyper puts on reading a request head).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of the tunnel's first bytes is looked at to tell HTTP from anything else.
const PEEK_LEN: usize = 16;

/// The TLS record type of a handshake (a ClientHello starts with it).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A CONNECT tunnel pinned to one mesh service.
pub(super) struct MeshTunnel {
    to: TunnelTo,
    parts: StackParts,
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
    /// A tunnel to mesh `service` (as `CONNECT service:port` named it), serving requests
    /// with the outbound stack built from `parts`.
    pub(super) fn new(service: String, port: u16, parts: StackParts) -> Self {
        MeshTunnel {
            to: TunnelTo(Arc::new((service, port))),
            parts,
        }
    }

    fn service(&self) -> &str {
        &self.to.0.0
    }

    /// Answers the CONNECT with `200` and serves HTTP on the upgraded connection, as a
    /// task the outbound listener drains on shutdown.
    pub(super) fn accept(self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let upgrade = hyper::upgrade::on(request);
        let tunnels = self.parts.tunnels.clone();
        tunnels.spawn(async move {
            match upgrade.await {
                Ok(upgraded) => self.serve(upgraded).await,
                Err(error) => {
                    tracing::debug!(service = %self.service(), %error, "CONNECT was not upgraded")
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
                tracing::debug!(service = %self.service(), %error, "mesh tunnel closed before any request");
                return;
            }
        };
        let opening = Opening::of(&first);
        if opening != Opening::Http {
            tracing::warn!(service = %self.service(), port = self.to.0.1, ?opening,
                "closing CONNECT tunnel: the mesh only carries HTTP to mesh services \
                 (send plain http://SERVICE/...; the sidecars add mTLS)");
            return;
        }
        let metrics = Arc::clone(&self.parts.metrics);
        let shutdown = self.parts.tunnels.shutdown();
        // The same outbound stack as the listener's: classified (for the tunnel's service),
        // counted, timed out, retried, balanced.
        let stack = super::stack(self.parts.clone());
        let service = server::hyper_service(stack, self.to.clone(), Direction::Outbound, metrics);
        let io = TokioIo::new(replay(first, io));
        let builder = server::http_builder();
        let connection = builder.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = result {
            tracing::debug!(service = %self.service(), %error, "mesh tunnel ended with an error");
        }
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
