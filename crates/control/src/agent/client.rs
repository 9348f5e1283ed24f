//! How the agent reaches the node API ([`crate::node_api`]): TLS on loopback TCP, as a
//! [`Connect`] for the contract's one client ([`api::contract::client::Client`], which
//! owns the HTTP exchange, timeouts and errors; the routes are [`api::contract::node`]).
//!
//! Before joining, the agent has no SVID: it verifies the control plane against
//! the bootstrap bundle and presents no certificate
//! ([`identity::anonymous_client_config`]). After
//! joining, every call is mTLS with the node SVID, and the control plane must prove
//! `spiffe://<td>/meshwork/control`.
//!
//! With several control replicas, a connection goes to the current one and, when that
//! fails (TCP or TLS), to the next ones in turn ([`Replicas`]); the call fails only when
//! none answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::contract::client::{Client, Connect, ConnectError};
use api::contract::exchange::Exchange;
use identity::{PeerPolicy, Protocols, SpiffeId, SvidStore, TrustBundle};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::replicas::Replicas;

/// The agent's client of the node API.
pub type NodeClient = Client<TlsConnect>;

/// How long one replica has to accept the connection and finish the TLS handshake before
/// the next one is tried. A host that is down drops packets rather than refusing them, and
/// a hung process accepts and never answers: without this bound the call's own timeout
/// would expire on the dead replica and the agent would never move on.
const REPLICA_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Requests to the node API (the TLS name is the IP; `Host` is informative), answers
/// capped at 16 MiB.
const EXCHANGE: Exchange = Exchange::new("control");

/// Dials the node API of the current replica (failing over to the others) and completes
/// the TLS handshake.
#[derive(Clone)]
pub struct TlsConnect {
    replicas: Arc<Replicas>,
    connector: TlsConnector,
}

impl std::fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnect")
            .field("replicas", &self.replicas.all())
            .finish_non_exhaustive()
    }
}

impl TlsConnect {
    /// Pre-join: verifies control against `bundle`, presents no certificate.
    pub fn bootstrap(
        replicas: Arc<Replicas>,
        bundle: TrustBundle,
        control: SpiffeId,
    ) -> NodeClient {
        let config = identity::anonymous_client_config(
            bundle,
            PeerPolicy::Exactly(control),
            Protocols::HTTP1,
        );
        TlsConnect::client(replicas, TlsConnector::from(config))
    }

    /// Post-join: mTLS with the node SVID in `store`.
    pub fn attested(
        replicas: Arc<Replicas>,
        store: &Arc<SvidStore>,
        control: SpiffeId,
    ) -> NodeClient {
        let config = identity::client_config(store, PeerPolicy::Exactly(control), Protocols::HTTP1);
        TlsConnect::client(replicas, TlsConnector::from(config))
    }

    fn client(replicas: Arc<Replicas>, connector: TlsConnector) -> NodeClient {
        Client::with_exchange(
            TlsConnect {
                replicas,
                connector,
            },
            EXCHANGE,
        )
    }

    async fn connect_to(&self, addr: SocketAddr) -> Result<TlsStream<TcpStream>, ConnectError> {
        let attempt = async {
            let tcp = TcpStream::connect(addr)
                .await
                .map_err(ConnectError::Connect)?;
            let name = ServerName::IpAddress(addr.ip().into());
            self.connector
                .connect(name, tcp)
                .await
                .map_err(ConnectError::Handshake)
        };
        tokio::time::timeout(REPLICA_CONNECT_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection and TLS handshake within {REPLICA_CONNECT_TIMEOUT:?}"),
                )))
            })
    }
}

/// One replica's error as it is; several as one that names each replica and its cause.
fn every_replica_failed(mut failures: Vec<(SocketAddr, ConnectError)>) -> ConnectError {
    if failures.len() == 1
        && let Some((_, only)) = failures.pop()
    {
        return only;
    }
    if failures.is_empty() {
        return ConnectError::Connect(std::io::Error::other("no control replica configured"));
    }
    let causes: Vec<String> = failures
        .iter()
        .map(|(addr, e)| {
            let cause = std::error::Error::source(e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            format!("{addr}: {e}{cause}")
        })
        .collect();
    ConnectError::Connect(std::io::Error::other(format!(
        "no control replica answered ({})",
        causes.join("; ")
    )))
}

impl Connect for TlsConnect {
    type Stream = TlsStream<TcpStream>;

    async fn connect(&self) -> Result<Self::Stream, ConnectError> {
        let mut failures = Vec::new();
        for _ in 0..self.replicas.all().len() {
            let Some((i, addr)) = self.replicas.current() else {
                break;
            };
            match self.connect_to(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    self.replicas.failed(i);
                    failures.push((addr, e));
                }
            }
        }
        Err(every_replica_failed(failures))
    }

    fn describe(&self) -> String {
        match self.replicas.current() {
            Some((_, addr)) if self.replicas.all().len() == 1 => format!("control plane at {addr}"),
            Some((i, addr)) => format!(
                "control plane at {addr} (replica {} of {})",
                i + 1,
                self.replicas.all().len()
            ),
            None => "no control replica".to_owned(),
        }
    }
}
