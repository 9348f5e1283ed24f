//! Opaque TCP to a mesh service: the client side of ALPN `meshwork.opaque`.
//!
//! [`connect_opaque`] picks an endpoint of the service (the balancer's pick: two random
//! candidates, the less loaded wins, endpoints at a circuit-breaker cap skipped), dials it
//! with this sidecar's SVID, requiring the endpoint's expected SPIFFE ID, within the
//! service's `connectTimeout`, offering ALPN `meshwork.opaque` only, and writes the preamble
//! (`b"MWO1"`, port, 0: [`crate::opaque_preamble`]). An endpoint that cannot be reached
//! costs one connect and the next is tried, as for HTTP. The stream it returns carries the
//! caller's bytes; the peer decides (caller × port) after reading the preamble and closes a
//! denied connection.
//!
//! In proxy mode the app reaches it with `CONNECT SERVICE:PORT` to the outbound listener
//! for any port but 80 and 443 ([`OpaqueTunnel`]); those two keep carrying HTTP
//! ([`super::mesh_tunnel`]). In pod mode the capture path calls [`connect_opaque`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

use identity::{OPAQUE_ALPN, Protocols};

use super::StackParts;
use super::balance::pick;
use super::connect::PeerConnector;
use crate::body::{BoxError, ProxyBody, full, json_response};
use crate::label::Label;
use crate::metrics::{Direction, OpaqueOutcome};
use crate::opaque_preamble::Preamble;
use crate::routes::MeshService;

/// An opaque connection to a peer sidecar, preamble sent: splice the app's bytes into it.
pub type OpaqueStream = TlsStream<TcpStream>;

/// The `CONNECT` ports that carry HTTP to a mesh service (`http://billing/` is port 80;
/// 443 is HTTPS through the proxy, refused inside the tunnel); every other port is opaque.
pub const HTTP_CONNECT_PORTS: [u16; 2] = [80, 443];

/// Why no opaque connection was opened.
#[derive(Debug, Error)]
pub enum OpaqueError {
    /// The name is not a mesh service (in this snapshot).
    #[error("{0:?} is not a mesh service")]
    NoService(String),
    /// The service has no endpoints.
    #[error("mesh service {0:?} has no endpoints")]
    NoEndpoints(String),
    /// Every endpoint tried failed to connect; the last error.
    #[error("no endpoint of mesh service {service:?} could be reached")]
    Connect {
        /// The service.
        service: String,
        /// The last endpoint's failure.
        #[source]
        source: BoxError,
    },
    /// Writing the preamble failed.
    #[error("sending the opaque preamble to {service:?}")]
    Preamble {
        /// The service.
        service: String,
        /// The write error.
        #[source]
        source: std::io::Error,
    },
}

/// Opens an opaque TCP connection to port `port` of mesh service `service` (see the
/// [module docs](self)).
pub(crate) async fn connect_opaque(
    parts: &StackParts,
    service: &str,
    port: u16,
) -> Result<OpaqueStream, OpaqueError> {
    let table = parts.routes.load();
    let mesh = table
        .service_index(service)
        .and_then(|i| table.service_at(i))
        .ok_or_else(|| OpaqueError::NoService(service.to_owned()))?;
    let name = || mesh.name().to_owned();
    let mut tls = match dial_any(parts.pool.dialer(), mesh, Protocols::OPAQUE).await {
        Ok(tls) => tls,
        Err(Some(source)) => {
            return Err(OpaqueError::Connect {
                service: name(),
                source,
            });
        }
        Err(None) => return Err(OpaqueError::NoEndpoints(name())),
    };
    if tls.get_ref().1.alpn_protocol() != Some(OPAQUE_ALPN) {
        // rustls fails a handshake whose server picks a protocol not offered; one that
        // picks none does not speak opaque TCP (an older sidecar).
        let source = "the peer sidecar did not accept ALPN meshwork.opaque (too old?)".into();
        return Err(OpaqueError::Connect {
            service: name(),
            source,
        });
    }
    let preamble = Preamble { port }.encode();
    let sent = async {
        tls.write_all(&preamble).await?;
        tls.flush().await
    };
    match sent.await {
        Ok(()) => Ok(tls),
        Err(source) => Err(OpaqueError::Preamble {
            service: name(),
            source,
        }),
    }
}

/// An unpooled mTLS connection offering `protocols` to an endpoint of `mesh` (the balancer's
/// pick; the next one when a connect fails), within the service's `connectTimeout`. `Err`
/// carries the last endpoint's failure (`None`: no endpoint).
pub(super) async fn dial_any(
    connector: &PeerConnector,
    mesh: &MeshService,
    protocols: Protocols,
) -> Result<OpaqueStream, Option<BoxError>> {
    let policy = mesh.traffic().policy();
    let timeout = Duration::from_millis(policy.connect_timeout_ms);
    let cap = |max: u32| Some(max).filter(|&max| max > 0).unwrap_or(u32::MAX);
    let breaker = &policy.circuit_breaker;
    let caps = (cap(breaker.max_pending_requests), cap(breaker.max_requests));
    let endpoints = mesh.endpoints();
    let (mut tried, mut last) = (0u64, None);
    for _ in 0..endpoints.len() {
        let Some(index) = pick(endpoints, tried, (caps, None), Instant::now()) else {
            break;
        };
        if index < 64 {
            tried |= 1 << index;
        }
        let key = endpoints[index].key();
        match connector
            .connect_unpooled(key.addr, &key.identity, timeout, protocols)
            .await
        {
            Ok(tls) => return Ok(tls),
            Err(error) => {
                tracing::debug!(service = mesh.name(), addr = %key.addr, %error, "connect failed; trying the next endpoint");
                let error = format!("{} at {}: {error}", key.identity, key.addr);
                last = Some(error.into());
            }
        }
    }
    Err(last)
}

/// `CONNECT SERVICE:PORT` for an opaque port: connects to the peer first, then answers
/// `200` and splices the upgraded connection into the opaque stream (`502` with a JSON body
/// when no endpoint could be reached). The splice is a tunnel task, drained with the
/// listener.
pub(super) struct OpaqueTunnel {
    service: String,
    port: u16,
    parts: StackParts,
}

impl OpaqueTunnel {
    /// A tunnel to port `port` of mesh service `service`.
    pub(super) fn new(service: String, port: u16, parts: StackParts) -> Self {
        OpaqueTunnel {
            service,
            port,
            parts,
        }
    }

    /// Opens the opaque connection and answers the CONNECT.
    pub(super) async fn accept(self, request: Request<ProxyBody>) -> Response<ProxyBody> {
        let label = Label::intern(&self.service);
        let metrics = Arc::clone(&self.parts.metrics);
        let mut peer = match connect_opaque(&self.parts, &self.service, self.port).await {
            Ok(peer) => peer,
            Err(error) => {
                let description = crate::forward_error::error_chain(&error);
                tracing::warn!(service = %self.service, port = self.port, error = %description, "opaque CONNECT failed");
                metrics.opaque_connection(Direction::Outbound, label, OpaqueOutcome::Unreachable);
                let body = json!({"error": "upstream_unavailable", "side": "upstream",
                    "retryable": true, "description": description});
                return json_response(StatusCode::BAD_GATEWAY, &body);
            }
        };
        metrics.opaque_connection(Direction::Outbound, label, OpaqueOutcome::Spliced);
        let upgrade = hyper::upgrade::on(request);
        let (service, port) = (self.service, self.port);
        let shutdown = self.parts.tunnels.shutdown();
        self.parts.tunnels.spawn(async move {
            let upgraded = match upgrade.await {
                Ok(upgraded) => upgraded,
                Err(error) => {
                    return tracing::debug!(%service, %error, "CONNECT was not upgraded");
                }
            };
            let mut app = TokioIo::new(upgraded);
            tokio::select! {
                result = tokio::io::copy_bidirectional(&mut app, &mut peer) => {
                    tracing::debug!(%service, port, ?result, "opaque tunnel closed");
                }
                // TCP has no graceful end: a drained listener closes its splices.
                () = shutdown.cancelled() => {}
            }
        });
        Response::new(full(Bytes::new()))
    }
}
