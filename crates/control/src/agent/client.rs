//! The agent's client of the node API ([`crate::node_api`]): HTTP/1.1 + JSON over
//! TLS on loopback TCP, one connection per call (calls are rare; a long poll holds
//! its own connection, and a restarted control plane needs no reconnect logic).
//!
//! Before joining, the agent has no SVID: it verifies the control plane against
//! the bootstrap bundle and presents no certificate
//! ([`identity::anonymous_client_config`]). After
//! joining, every call is mTLS with the node SVID, and the control plane must prove
//! `spiffe://<td>/meshwork/control`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::contract::exchange::{Exchange, ExchangeError, json_body};
use api::contract::{ErrorBody, SvidResponse};
use bytes::Bytes;
use http::{Method, StatusCode};
use identity::{PeerPolicy, Protocols, SpiffeId, SvidStore, TrustBundle};
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_rustls::TlsConnector;

/// Ordinary calls must answer quickly.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Long polls answer after `LONG_POLL_SECS`; allow slack.
const POLL_TIMEOUT: Duration = Duration::from_secs(api::contract::LONG_POLL_SECS + 15);
/// Requests to the node API (the TLS name is the IP; `Host` is informative), answers
/// capped at 16 MiB.
const EXCHANGE: Exchange = Exchange::new("control");

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeClientError {
    /// TCP connect, TLS handshake or HTTP exchange failed: control is unreachable.
    #[error("control plane at {addr} unreachable ({step}): {message}")]
    Unreachable {
        /// The node API address.
        addr: SocketAddr,
        /// connect / handshake / exchange / timeout.
        step: &'static str,
        /// The cause.
        message: String,
    },
    /// Control answered with an error.
    #[error("control answered {route} with {status}: {error}: {description}")]
    Status {
        /// The route.
        route: String,
        /// The status.
        status: StatusCode,
        /// The machine-readable code.
        error: String,
        /// For humans.
        description: String,
    },
    /// The answer is not the expected JSON.
    #[error("control's answer to {route} is not valid JSON: {source}")]
    Decode {
        /// The route.
        route: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl NodeClientError {
    /// Whether retrying later can help (transport trouble, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            NodeClientError::Unreachable { .. } => true,
            NodeClientError::Status { status, .. } => status.is_server_error(),
            NodeClientError::Decode { .. } => false,
        }
    }
}

/// A client of one control plane's node API.
#[derive(Clone)]
pub struct NodeClient {
    addr: SocketAddr,
    connector: TlsConnector,
}

impl std::fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    /// Pre-join: verifies control against `bundle`, presents no certificate.
    pub fn bootstrap(addr: SocketAddr, bundle: TrustBundle, control: SpiffeId) -> NodeClient {
        let config = identity::anonymous_client_config(
            bundle,
            PeerPolicy::Exactly(control),
            Protocols::HTTP1,
        );
        NodeClient {
            addr,
            connector: TlsConnector::from(config),
        }
    }

    /// Post-join: mTLS with the node SVID in `store`.
    pub fn attested(addr: SocketAddr, store: &Arc<SvidStore>, control: SpiffeId) -> NodeClient {
        let config = identity::client_config(store, PeerPolicy::Exactly(control), Protocols::HTTP1);
        NodeClient {
            addr,
            connector: TlsConnector::from(config),
        }
    }

    /// POSTs `body` as JSON to `route` and decodes the answer.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<T, NodeClientError> {
        let bytes = self
            .call(Method::POST, route, Some(json_body(body)), CALL_TIMEOUT)
            .await?;
        decode(route, &bytes)
    }

    /// GETs `route` (a long poll) and decodes the answer.
    pub async fn poll<T: DeserializeOwned>(&self, route: &str) -> Result<T, NodeClientError> {
        let bytes = self.call(Method::GET, route, None, POLL_TIMEOUT).await?;
        decode(route, &bytes)
    }

    /// As [`NodeClient::post`] for SVID-returning routes.
    pub async fn svid<B: Serialize>(
        &self,
        route: &str,
        body: &B,
    ) -> Result<SvidResponse, NodeClientError> {
        self.post(route, body).await
    }

    async fn call(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, NodeClientError> {
        match tokio::time::timeout(timeout, self.exchange(method, route, body)).await {
            Ok(result) => result,
            Err(_) => Err(self.unreachable("timeout", format!("no answer within {timeout:?}"))),
        }
    }

    fn unreachable(&self, step: &'static str, message: String) -> NodeClientError {
        NodeClientError::Unreachable {
            addr: self.addr,
            step,
            message,
        }
    }

    async fn exchange(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, NodeClientError> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| self.unreachable("connect", e.to_string()))?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .map_err(|e| self.unreachable("handshake", e.to_string()))?;
        match EXCHANGE.send(tls, method, route, body).await {
            Ok(bytes) => Ok(bytes),
            Err(ExchangeError::Status {
                status,
                body,
                excerpt,
            }) => Err(status_error(route, status, body, excerpt)),
            // hyper's own message, as before the shared exchange.
            Err(ExchangeError::Transport(source)) => {
                Err(self.unreachable("exchange", source.to_string()))
            }
            Err(too_large @ ExchangeError::TooLarge { .. }) => {
                Err(self.unreachable("exchange", too_large.to_string()))
            }
        }
    }
}

/// A non-2xx answer, with the contract's error body when there is one.
fn status_error(
    route: &str,
    status: StatusCode,
    body: Option<ErrorBody>,
    excerpt: String,
) -> NodeClientError {
    let (error, description) = match body {
        Some(b) => (b.error, b.description),
        None => ("unknown".into(), excerpt),
    };
    NodeClientError::Status {
        route: route.to_owned(),
        status,
        error,
        description,
    }
}

fn decode<T: DeserializeOwned>(route: &str, bytes: &[u8]) -> Result<T, NodeClientError> {
    serde_json::from_slice(bytes).map_err(|source| NodeClientError::Decode {
        route: route.to_owned(),
        source,
    })
}
