//! Metrics hook points. The proxy calls these at the moments worth counting; a later
//! issue plugs a Prometheus implementation in. Every method defaults to doing nothing,
//! so implementors override only what they record.

use std::net::SocketAddr;

use http::StatusCode;
use identity::SpiffeId;

use crate::forward_error::ForwardError;

/// Which listener a request or connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Calls from other sidecars into the local app.
    Inbound,
    /// Calls from the local app out to the mesh.
    Outbound,
}

/// The HTTP version negotiated on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
}

impl Protocol {
    /// The protocol ALPN selected (`h2` → HTTP/2; anything else or none → HTTP/1.1).
    pub fn from_alpn(alpn: Option<&[u8]>) -> Self {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }
}

/// Receives the proxy's measurement events. Must be cheap: called on the data path.
pub trait ProxyMetrics: Send + Sync + 'static {
    /// A sidecar completed an mTLS handshake on the inbound listener.
    fn inbound_connection(&self, _peer: &SpiffeId, _protocol: Protocol) {}

    /// This proxy opened a new mTLS connection to a peer sidecar.
    fn outbound_connection(&self, _peer: &SpiffeId, _addr: SocketAddr, _protocol: Protocol) {}

    /// A request was answered (by the upstream or by the proxy itself).
    fn response(&self, _direction: Direction, _status: StatusCode) {}

    /// A request failed in the proxy; [`ProxyMetrics::response`] is called as well.
    fn forward_error(&self, _direction: Direction, _error: &ForwardError) {}
}

/// The default: records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl ProxyMetrics for NoMetrics {}
