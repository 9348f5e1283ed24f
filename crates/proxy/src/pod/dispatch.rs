//! What a captured connection gets, by what its first bytes are ([`detect`]):
//!
//! - HTTP/1.x or h2 → served by the sidecar into the outbound stack, every request pinned to
//!   where the connection went ([`CapturedTo`]): a mesh service gets its routes, policy and
//!   balancing over mTLS; any other name goes to egress by that name; a `Host` naming
//!   another host is refused;
//! - a TLS ClientHello → its SNI must be the name (or absent); then as opaque TCP;
//! - anything else, or a port listed as opaque (no detection) → opaque TCP: to a mesh
//!   service, [`opaque_to_service`]; elsewhere egress policy by name (or by CIDR for an IP)
//!   and a splice to what this sidecar resolved.
//!
//! A refused connection is closed; refusals are logged with a decision id (by egress) and
//! counted as an egress refusal of a `CONNECT` is (`[egress]`, `403`, denied).

use std::sync::Arc;
use std::time::Instant;

use http::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use policy::Host;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::capture::Destination;
use super::detect::{Detected, detect, replayed};
use super::opaque_service::{OpaqueContext, opaque_to_service};
use crate::config::OpaquePorts;
use crate::label::{EGRESS, Label, MethodLabel, NONE, UNMATCHED};
use crate::metrics::{Direction, RequestRecord};
use crate::outbound::classify::{CapturedTarget, CapturedTo};
use crate::outbound::egress::TcpEgressError;
use crate::outbound::{self, StackParts};
use crate::server::{self, Stack};

/// Serves captured connections (cheap to clone: shared handles).
#[derive(Clone)]
pub struct Dispatch {
    parts: StackParts,
    stack: Stack,
    opaque_ports: Arc<OpaquePorts>,
    opaque: Arc<OpaqueContext>,
}

impl Dispatch {
    /// Serves HTTP with the outbound stack built from `parts`, egress with its `Egress`,
    /// and opaque TCP to mesh services with `opaque`.
    pub fn new(parts: StackParts, opaque_ports: OpaquePorts, opaque: OpaqueContext) -> Self {
        Dispatch {
            stack: outbound::stack(parts.clone()),
            parts,
            opaque_ports: Arc::new(opaque_ports),
            opaque: Arc::new(opaque),
        }
    }

    /// Serves one captured connection to `to`.
    pub async fn handle(self, mut client: TcpStream, to: Destination, watcher: Watcher) {
        let mut first = Vec::new();
        let detected = if self.opaque_ports.contains(to.port()) {
            Detected::Opaque
        } else {
            detect(&mut client, &mut first).await
        };
        tracing::debug!(%to, ?detected, "captured connection");
        match detected {
            Detected::Http => self.http(client, first, &to, watcher).await,
            Detected::Tls { sni } => match (&to, sni) {
                (Destination::Name { name, .. }, Some(sni))
                    if !sni.trim_end_matches('.').eq_ignore_ascii_case(name) =>
                {
                    tracing::warn!(%to, %sni, "captured TLS names another server (SNI) than \
                        the name the app resolved: closed");
                    self.count_refusal(EGRESS, StatusCode::FORBIDDEN, false);
                }
                _ => self.tcp(client, first, &to).await,
            },
            Detected::BadTls => {
                tracing::warn!(%to, "captured TLS without a ClientHello that parses: closed");
                self.count_refusal(EGRESS, StatusCode::BAD_REQUEST, false);
            }
            Detected::Opaque => self.tcp(client, first, &to).await,
        }
    }

    /// HTTP on the connection, into the outbound stack pinned to `to`.
    async fn http(&self, client: TcpStream, first: Vec<u8>, to: &Destination, watcher: Watcher) {
        let target = match to {
            Destination::Name { name, port } => CapturedTarget {
                host: name.to_string(),
                port: *port,
                by_name: true,
            },
            Destination::Ip(addr) => CapturedTarget {
                host: addr.ip().to_string(),
                port: addr.port(),
                by_name: false,
            },
        };
        let service = server::hyper_service(
            self.stack.clone(),
            CapturedTo(Arc::new(target)),
            Direction::Outbound,
            Arc::clone(&self.parts.metrics),
        );
        let io = TokioIo::new(replayed(first, client));
        server::serve_connection(io, service, watcher).await;
    }

    /// Opaque TCP (or TLS the app terminates itself) to `to`.
    async fn tcp(&self, client: TcpStream, first: Vec<u8>, to: &Destination) {
        let (host, port) = match to {
            Destination::Name { name, port } => {
                if self.parts.routes.load().service_index(name).is_some() {
                    opaque_to_service(&self.opaque, name, *port, client, first).await;
                    return;
                }
                match name.parse::<Host>() {
                    Ok(host) => (host, *port),
                    Err(error) => {
                        tracing::warn!(%to, %error, "captured connection to a name that is no \
                            host name: closed");
                        self.count_refusal(EGRESS, StatusCode::BAD_REQUEST, false);
                        return;
                    }
                }
            }
            Destination::Ip(addr) => (Host::Ip((*addr.ip()).into()), addr.port()),
        };
        let table = self.parts.routes.load();
        match self.parts.egress.connect(&table, &host, port).await {
            Ok(upstream) => splice(client, first, upstream, to).await,
            Err(TcpEgressError::Denied { .. }) => {
                self.count_refusal(EGRESS, StatusCode::FORBIDDEN, true)
            }
            Err(error) => {
                let status = match error {
                    TcpEgressError::PolicyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_GATEWAY,
                };
                let error = crate::forward_error::error_chain(&error);
                tracing::warn!(%to, %error, "captured connection: egress failed; closed");
                self.count_refusal(EGRESS, status, false);
            }
        }
    }

    /// Counts a captured connection closed by this sidecar as an outbound `CONNECT` to
    /// `service` answered `status` (as telemetry counts an HTTPS egress refusal).
    fn count_refusal(&self, service: Label, status: StatusCode, denied: bool) {
        count_connection(
            &*self.parts.metrics,
            service,
            status,
            denied,
            Instant::now(),
        );
    }
}

/// Records a captured connection's outcome the way the telemetry layer records a request.
pub(super) fn count_connection(
    metrics: &dyn crate::metrics::ProxyMetrics,
    service: Label,
    status: StatusCode,
    denied: bool,
    start: Instant,
) {
    metrics.request(&RequestRecord {
        direction: Direction::Outbound,
        service,
        route: UNMATCHED,
        method: MethodLabel::of(&Method::CONNECT),
        status,
        peer: NONE,
        elapsed: start.elapsed(),
        denied,
    });
    metrics.response(Direction::Outbound, status);
}

/// Sends the bytes already read, then copies both ways until either side closes.
async fn splice(mut client: TcpStream, first: Vec<u8>, mut upstream: TcpStream, to: &Destination) {
    if let Err(error) = upstream.write_all(&first).await {
        tracing::debug!(%to, %error, "captured connection: upstream closed at once");
        return;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => tracing::debug!(%to, sent, received, "captured connection closed"),
        Err(error) => tracing::debug!(%to, %error, "captured connection ended with an error"),
    }
}
