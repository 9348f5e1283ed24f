//! Opening a connection to a peer sidecar: TCP, mTLS as this workload (the server must
//! prove the endpoint's expected SPIFFE ID), then an HTTP handshake in whichever
//! version ALPN selected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use identity::{PeerPolicy, Protocols, SpiffeId, SvidStore};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::body::BoxError;
use crate::config::PeerProtocol;
use crate::metrics::{Protocol, ProxyMetrics};
use crate::pool::{Dial, Pool, Sender};
use crate::server::HTTP1_HEADER_READ_TIMEOUT;

/// The pool of connections to peer sidecars.
pub type PeerPool = Pool<PeerConnector>;

/// An idle HTTP/1.1 peer connection is reused for at most this long (less when the
/// service's `idleTimeout` says so). A meshwork inbound closes idle keep-alive connections
/// at its header-read timeout (30 s, [`HTTP1_HEADER_READ_TIMEOUT`]): reusing one near that
/// deadline races the close, so stop at half of it, a wide margin for scheduling delays.
/// The cost is a reconnect after 15 s of quiet: a full mTLS handshake (meshwork disables
/// TLS session resumption so every connection proves a current SVID, `identity::tls`), a
/// few milliseconds, rare next to the requests a kept-alive connection carries.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
const _: () = assert!(PEER_IDLE_TIMEOUT.as_secs() * 2 <= HTTP1_HEADER_READ_TIMEOUT.as_secs());

/// A peer connection's identity: where it goes and who must answer (the key the balancer's
/// outlier state uses too).
pub(crate) type PeerKey = crate::resilience::EndpointKey;

/// How often an HTTP/2 peer connection is PINGed, and how long a PING may go
/// unanswered before the connection is declared dead (and the pool redials).
const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the TCP connection under a peer connection is opened. By default from the sidecar's
/// own network namespace; a sidecar whose pod is on a simulated host (`meshwork up --hosts`)
/// opens it in the host's namespace instead, so that mesh traffic leaves from that host.
pub type PeerTcp =
    Arc<dyn Fn(SocketAddr) -> BoxFuture<'static, std::io::Result<TcpStream>> + Send + Sync>;

/// Client configs by expected identity and offered protocols.
type ConfigsByProtocols = HashMap<(SpiffeId, Protocols), Arc<ClientConfig>>;

/// Connects to peer sidecars as this workload.
#[derive(Clone)]
pub struct PeerConnector {
    store: Arc<SvidStore>,
    /// One client config per expected identity, built once (configs read the store at
    /// handshake time, so rotation needs no rebuild).
    configs: Arc<Mutex<HashMap<SpiffeId, Arc<ClientConfig>>>>,
    /// The same for the unpooled connections, per identity and protocols (opaque TCP:
    /// ALPN `meshwork.opaque` only; upgrades: `http/1.1` only).
    unpooled_configs: Arc<Mutex<ConfigsByProtocols>>,
    peer_protocol: PeerProtocol,
    metrics: Arc<dyn ProxyMetrics>,
    /// Where the TCP connections are opened (`None`: here).
    tcp: Option<PeerTcp>,
}

impl PeerConnector {
    /// A connector presenting the SVID in `store`.
    pub fn new(
        store: Arc<SvidStore>,
        peer_protocol: PeerProtocol,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        PeerConnector {
            store,
            configs: Arc::default(),
            unpooled_configs: Arc::default(),
            peer_protocol,
            metrics,
            tcp: None,
        }
    }

    /// The same connector, opening its TCP connections with `tcp`.
    pub fn with_tcp(self, tcp: Option<PeerTcp>) -> Self {
        PeerConnector { tcp, ..self }
    }

    fn client_config(&self, identity: &SpiffeId) -> Arc<ClientConfig> {
        // The map only ever gains complete entries: a poisoned lock is still consistent.
        let mut configs = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        let config = configs
            .entry(identity.clone())
            .or_insert_with(|| self.new_client_config(identity));
        Arc::clone(config)
    }

    fn unpooled_client_config(
        &self,
        identity: &SpiffeId,
        protocols: Protocols,
    ) -> Arc<ClientConfig> {
        // As `client_config`.
        let mut configs = self
            .unpooled_configs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let config = configs
            .entry((identity.clone(), protocols))
            .or_insert_with(|| {
                let server = PeerPolicy::Exactly(identity.clone());
                identity::client_config(&self.store, server, protocols)
            });
        Arc::clone(config)
    }

    fn new_client_config(&self, identity: &SpiffeId) -> Arc<ClientConfig> {
        let protocols = match self.peer_protocol {
            PeerProtocol::Http2 => Protocols::default(),
            PeerProtocol::Http1 => Protocols::HTTP1,
        };
        let server = PeerPolicy::Exactly(identity.clone());
        identity::client_config(&self.store, server, protocols)
    }

    /// An unpooled mTLS connection to `addr` offering `protocols`, requiring the server to
    /// be `identity`, within `timeout`: the caller speaks whatever ALPN selected.
    pub async fn connect_unpooled(
        &self,
        addr: SocketAddr,
        identity: &SpiffeId,
        timeout: Duration,
        protocols: Protocols,
    ) -> Result<TlsStream<TcpStream>, BoxError> {
        let connector = TlsConnector::from(self.unpooled_client_config(identity, protocols));
        let tls = tokio::time::timeout(timeout, handshake(&connector, addr, self.tcp.as_ref()))
            .await
            .map_err(|_| {
                format!("TCP connect and mTLS handshake took longer than {timeout:?}")
            })??;
        Ok(tls)
    }

    /// Connects to `addr`, requiring the server to be `identity`. TCP connect and TLS
    /// handshake must finish within `timeout` (the service's `connectTimeout`): a
    /// blackholed endpoint then costs one timeout and the next endpoint is tried.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        identity: &SpiffeId,
        timeout: Duration,
    ) -> Result<Sender, BoxError> {
        let connector = TlsConnector::from(self.client_config(identity));
        let tls = tokio::time::timeout(timeout, handshake(&connector, addr, self.tcp.as_ref()))
            .await
            .map_err(|_| {
                format!("TCP connect and mTLS handshake took longer than {timeout:?}")
            })??;
        let protocol = Protocol::from_alpn(tls.get_ref().1.alpn_protocol());
        self.metrics.outbound_connection(identity, addr, protocol);
        let io = TokioIo::new(tls);
        match protocol {
            Protocol::Http2 => {
                let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .adaptive_window(true)
                    // A peer that vanished without a FIN is noticed by PING, not by
                    // requests hanging until TCP gives up.
                    .keep_alive_interval(H2_KEEPALIVE_INTERVAL)
                    .keep_alive_timeout(H2_KEEPALIVE_TIMEOUT)
                    .handshake(io)
                    .await?;
                tokio::spawn(drive(connection, addr));
                Ok(Sender::Http2(sender))
            }
            Protocol::Http1 => {
                let (sender, connection) = http1::handshake(io).await?;
                tokio::spawn(drive(connection, addr));
                Ok(Sender::Http1(sender))
            }
        }
    }
}

/// TCP (no Nagle; with `tcp` when given), then the TLS handshake.
async fn handshake(
    connector: &TlsConnector,
    addr: SocketAddr,
    tcp: Option<&PeerTcp>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = match tcp {
        Some(open) => open(addr).await?,
        None => TcpStream::connect(addr).await?,
    };
    tcp.set_nodelay(true)?;
    // The SPIFFE verifier checks the URI SAN, not the name: an IP needs no DNS SAN.
    connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
}

impl Dial for PeerConnector {
    type Key = PeerKey;

    async fn dial(&self, key: &PeerKey, timeout: Duration) -> Result<Sender, BoxError> {
        self.connect(key.addr, &key.identity, timeout).await
    }
}

/// Runs a client connection to completion (it ends when every sender is dropped and
/// in-flight exchanges finish, or when the peer goes away).
async fn drive<C>(connection: C, addr: SocketAddr)
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(error) = connection.await {
        tracing::debug!(%addr, %error, "peer connection ended with an error");
    }
}
