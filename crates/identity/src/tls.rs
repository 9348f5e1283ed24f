//! Every rustls configuration meshwork uses on its own connections: sidecar mTLS
//! (inbound and outbound), the control plane's node API and the agent's calls to
//! it. Other crates never assemble a rustls config themselves.
//!
//! All configs share the same ground rules:
//! - the ring provider; TLS 1.3 preferred and 1.2 accepted
//!   ([`TlsVersions::Tls13And12`]), unless the caller asks for 1.3 only;
//! - peers are verified as X.509-SVIDs against the trust bundle and checked
//!   against a [`PeerPolicy`]; the TLS server name plays no part;
//! - certificates come from the [`SvidStore`] at handshake time through
//!   [`SvidResolver`], and bundles are read at handshake time too, so rotation
//!   is hitless and a config is built once and kept;
//! - no session resumption on either side: a resumed session skips certificate
//!   verification, so it would outlive SVID expiry, rotation and bundle swaps.
//!
//! Nothing here weakens TLS except what is named `danger_*` / `Danger*`.

use std::sync::Arc;

use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ServerConfig, SupportedProtocolVersion};

use crate::{
    ClientAuth, PeerPolicy, SpiffeClientCertVerifier, SpiffeServerCertVerifier, SvidResolver,
    SvidStore, TrustBundle,
};

/// The application protocols offered (client) or accepted (server) over ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Alpn {
    /// `h2` preferred, `http/1.1` accepted: sidecars and the node API server.
    #[default]
    H2AndHttp1,
    /// `http/1.1` only: a peer that must not be spoken to in HTTP/2, and the
    /// agent's HTTP/1.1 node API client.
    Http1,
    /// [`OPAQUE_ALPN`] only: a sidecar opening an opaque TCP connection to a peer sidecar.
    Opaque,
    /// `h2`, `http/1.1` and [`OPAQUE_ALPN`]: the sidecar's inbound listener, which serves
    /// HTTP and opaque TCP on one port. A client offering no ALPN gets HTTP, as before.
    MeshInbound,
}

/// The ALPN protocol of opaque TCP between sidecars: after the handshake the client sends
/// an 8-byte preamble naming the destination port, then the bytes are spliced.
pub const OPAQUE_ALPN: &[u8] = b"meshwork.opaque";

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::Http1 => vec![b"http/1.1".to_vec()],
            Alpn::Opaque => vec![OPAQUE_ALPN.to_vec()],
            Alpn::MeshInbound => vec![b"h2".to_vec(), b"http/1.1".to_vec(), OPAQUE_ALPN.to_vec()],
        }
    }
}

/// The TLS versions a config will negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsVersions {
    /// TLS 1.3 preferred, TLS 1.2 accepted (rustls' safe defaults).
    #[default]
    Tls13And12,
    /// TLS 1.3 only.
    Tls13Only,
}

/// In preference order (rustls' `DEFAULT_VERSIONS`).
static TLS13_AND_12: &[&SupportedProtocolVersion] = &[&TLS13, &TLS12];
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&TLS13];

impl TlsVersions {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            TlsVersions::Tls13And12 => TLS13_AND_12,
            TlsVersions::Tls13Only => TLS13_ONLY,
        }
    }
}

/// The protocol choices of one config; `Protocols::default()` is what the mesh uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Protocols {
    /// ALPN protocols.
    pub alpn: Alpn,
    /// TLS versions.
    pub versions: TlsVersions,
}

impl Protocols {
    /// The default versions with ALPN `http/1.1` only.
    pub const HTTP1: Protocols = Protocols {
        alpn: Alpn::Http1,
        versions: TlsVersions::Tls13And12,
    };

    /// The default versions with ALPN [`OPAQUE_ALPN`] only (opaque TCP client).
    pub const OPAQUE: Protocols = Protocols {
        alpn: Alpn::Opaque,
        versions: TlsVersions::Tls13And12,
    };

    /// The default versions with ALPN `h2`, `http/1.1` and [`OPAQUE_ALPN`] (the sidecar's
    /// inbound server).
    pub const MESH_INBOUND: Protocols = Protocols {
        alpn: Alpn::MeshInbound,
        versions: TlsVersions::Tls13And12,
    };
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config presenting the store's SVID and verifying clients as `clients`
/// says. Read a client's identity after the handshake with
/// [`peer_spiffe_id`](crate::peer_spiffe_id) on `peer_certificates()`.
pub fn server_config(
    store: &Arc<SvidStore>,
    clients: ClientAuth,
    protocols: Protocols,
) -> Arc<ServerConfig> {
    let verifier = SpiffeClientCertVerifier::new(Arc::clone(store), clients);
    // invariant: the ring provider supports TLS 1.3 and 1.2, every `TlsVersions` choice.
    #[allow(clippy::expect_used)]
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(protocols.versions.versions())
        .expect("ring supports TLS 1.3 and 1.2")
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(SvidResolver::new(Arc::clone(store))));
    config.alpn_protocols = protocols.alpn.protocols();
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A client config presenting the store's SVID and accepting only a server the
/// `server` policy allows, verified against the store's current bundle. The
/// `ServerName` passed to `connect` is not used for verification (it is still sent
/// as SNI when it is a DNS name). Build one config per policy and reuse it.
pub fn client_config(
    store: &Arc<SvidStore>,
    server: PeerPolicy,
    protocols: Protocols,
) -> Arc<ClientConfig> {
    let verifier = SpiffeServerCertVerifier::new(Arc::clone(store), server);
    let config = client_builder(verifier, protocols)
        .with_client_cert_resolver(Arc::new(SvidResolver::new(Arc::clone(store))));
    finish_client(config, protocols)
}

/// A client config for a client that has no SVID yet (an agent joining the mesh):
/// presents no certificate, and accepts only a server the `server` policy allows,
/// verified against the fixed `bundle` (the client's bootstrap trust).
pub fn anonymous_client_config(
    bundle: TrustBundle,
    server: PeerPolicy,
    protocols: Protocols,
) -> Arc<ClientConfig> {
    let verifier = SpiffeServerCertVerifier::pinned(bundle, server);
    let config = client_builder(verifier, protocols).with_no_client_auth();
    finish_client(config, protocols)
}

fn client_builder(
    verifier: SpiffeServerCertVerifier,
    protocols: Protocols,
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    // invariant: as in `server_config`.
    #[allow(clippy::expect_used)]
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(protocols.versions.versions())
        .expect("ring supports TLS 1.3 and 1.2")
        .dangerous() // not weakening: replaces WebPKI name checks with SPIFFE ID checks
        .with_custom_certificate_verifier(Arc::new(verifier))
}

fn finish_client(mut config: ClientConfig, protocols: Protocols) -> Arc<ClientConfig> {
    config.alpn_protocols = protocols.alpn.protocols();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

#[cfg(test)]
mod tests;
