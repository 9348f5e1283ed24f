//! rustls configurations for SPIFFE mTLS with hitless rotation.
//!
//! [`SvidStore`] holds the current [`Svid`] and [`TrustBundle`] behind
//! `arc-swap`. The cert resolver and the verifiers read the store on every
//! handshake, so [`SvidStore::rotate`] / [`SvidStore::set_bundle`] take effect
//! for the next handshake without rebuilding configs or failing any handshake
//! in between.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::{SpiffeClientCertVerifier, SpiffeId, SpiffeServerCertVerifier, Svid, TrustBundle};

/// ALPN protocols offered by both sides, most preferred first.
pub const ALPN_PROTOCOLS: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The current SVID and trust bundle of one workload, swappable at any time.
pub struct SvidStore {
    svid: ArcSwap<Svid>,
    bundle: ArcSwap<TrustBundle>,
}

impl SvidStore {
    /// A store holding `svid` and `bundle`.
    pub fn new(svid: Svid, bundle: TrustBundle) -> SvidStore {
        SvidStore {
            svid: ArcSwap::from_pointee(svid),
            bundle: ArcSwap::from_pointee(bundle),
        }
    }

    /// Replaces the SVID presented from the next handshake on.
    /// Connections already established keep the SVID they were made with.
    pub fn rotate(&self, svid: Svid) {
        self.svid.store(Arc::new(svid));
    }

    /// Replaces the trust bundle used to verify peers from the next handshake on.
    /// To roll a CA, first set a bundle holding both roots, then rotate SVIDs,
    /// then drop the old root.
    pub fn set_bundle(&self, bundle: TrustBundle) {
        self.bundle.store(Arc::new(bundle));
    }

    /// The SVID currently presented.
    pub fn svid(&self) -> Arc<Svid> {
        self.svid.load_full()
    }

    /// The trust bundle currently used to verify peers.
    pub fn bundle(&self) -> Arc<TrustBundle> {
        self.bundle.load_full()
    }
}

impl fmt::Debug for SvidStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidStore")
            .field("svid", &*self.svid.load())
            .field("bundle", &*self.bundle.load())
            .finish()
    }
}

/// Hands rustls whichever SVID the store holds at handshake time, on both sides.
#[derive(Debug)]
pub struct SvidResolver {
    store: Arc<SvidStore>,
}

impl SvidResolver {
    /// A resolver reading `store`.
    pub fn new(store: Arc<SvidStore>) -> SvidResolver {
        SvidResolver { store }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.store.svid.load().certified_key()
    }
}

impl ResolvesServerCert for SvidResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for SvidResolver {
    /// Always our SVID: root hints would only name our own trust domain's CA.
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn alpn() -> Vec<Vec<u8>> {
    ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect()
}

/// A server config presenting the store's SVID and requiring a client SVID of
/// the store's trust domain. TLS 1.3 and 1.2, ALPN `h2`, `http/1.1`, no session
/// resumption (every handshake verifies the client's current SVID).
/// Read the client's identity after the handshake with
/// [`peer_spiffe_id`](crate::peer_spiffe_id) on `peer_certificates()`.
pub fn server_config(store: &Arc<SvidStore>) -> Arc<ServerConfig> {
    // invariant: the ring provider supports both default protocol versions,
    // so `with_safe_default_protocol_versions` cannot fail.
    #[allow(clippy::expect_used)]
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.3 and 1.2");
    let mut config = builder
        .with_client_cert_verifier(Arc::new(SpiffeClientCertVerifier::new(Arc::clone(store))))
        .with_cert_resolver(Arc::new(SvidResolver::new(Arc::clone(store))));
    config.alpn_protocols = alpn();
    // No resumption: a resumed session skips certificate verification, so it
    // would outlive SVID expiry, rotation and bundle swaps.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

/// A client config presenting the store's SVID and accepting only a server
/// whose SVID is `expected`. The `ServerName` passed to `connect` is not used
/// for verification (it is still sent as SNI when it is a DNS name).
///
/// Session resumption is disabled on both sides. Build one config per
/// expected identity and reuse it.
pub fn client_config(store: &Arc<SvidStore>, expected: SpiffeId) -> Arc<ClientConfig> {
    // invariant: as in `server_config`.
    #[allow(clippy::expect_used)]
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.3 and 1.2");
    let verifier = SpiffeServerCertVerifier::new(Arc::clone(store), expected);
    let mut config = builder
        .dangerous() // not weakening: replaces WebPKI name checks with SPIFFE ID checks
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(Arc::clone(store))));
    config.alpn_protocols = alpn();
    // As on the server: every connection verifies the current peer SVID.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}
