//! How the agent reaches the node API ([`crate::node_api`]): TLS on loopback TCP, as a
//! [`Connect`] for the contract's one client ([`api::contract::client::Client`], which
//! owns the HTTP exchange, timeouts and errors; the routes are [`api::contract::node`]).
//!
//! Before joining, the agent has no SVID: it verifies the control plane against
//! the bootstrap bundle and presents no certificate
//! ([`identity::anonymous_client_config`]). After
//! joining, every call is mTLS with the node SVID, and the control plane must prove
//! `spiffe://<td>/meshwork/control`.

use std::net::SocketAddr;
use std::sync::Arc;

use api::contract::client::{Client, Connect, ConnectError};
use api::contract::exchange::Exchange;
use identity::{PeerPolicy, Protocols, SpiffeId, SvidStore, TrustBundle};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The agent's client of the node API.
pub type NodeClient = Client<TlsConnect>;

/// Requests to the node API (the TLS name is the IP; `Host` is informative), answers
/// capped at 16 MiB.
const EXCHANGE: Exchange = Exchange::new("control");

/// Dials the node API at one address and completes the TLS handshake.
#[derive(Clone)]
pub struct TlsConnect {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TlsConnect {
    /// Pre-join: verifies control against `bundle`, presents no certificate.
    pub fn bootstrap(addr: SocketAddr, bundle: TrustBundle, control: SpiffeId) -> NodeClient {
        let config = identity::anonymous_client_config(
            bundle,
            PeerPolicy::Exactly(control),
            Protocols::HTTP1,
        );
        TlsConnect::client(addr, TlsConnector::from(config))
    }

    /// Post-join: mTLS with the node SVID in `store`.
    pub fn attested(addr: SocketAddr, store: &Arc<SvidStore>, control: SpiffeId) -> NodeClient {
        let config = identity::client_config(store, PeerPolicy::Exactly(control), Protocols::HTTP1);
        TlsConnect::client(addr, TlsConnector::from(config))
    }

    fn client(addr: SocketAddr, connector: TlsConnector) -> NodeClient {
        Client::with_exchange(TlsConnect { addr, connector }, EXCHANGE)
    }
}

impl Connect for TlsConnect {
    type Stream = TlsStream<TcpStream>;

    async fn connect(&self) -> Result<Self::Stream, ConnectError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(ConnectError::Connect)?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        self.connector
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Handshake)
    }

    fn describe(&self) -> String {
        format!("control plane at {}", self.addr)
    }
}
