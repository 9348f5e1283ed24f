//! SPIFFE identity for meshwork: SPIFFE IDs and trust domains, X.509-SVIDs,
//! the certificate authority that issues them, trust bundles, and the rustls
//! verifiers, cert resolvers and configurations that enforce SPIFFE mTLS with hitless rotation.
//!
//! This crate does no I/O: no files, no sockets, no clock reads. Everything
//! time-dependent takes `now` as an argument (inside rustls verifiers, the
//! handshake time rustls passes in). Randomness for keys and serials comes from
//! the OS via ring. It must not import any other meshwork crate; every other
//! crate may import it.
//!
//! Flow: the control plane holds a [`Ca`]; a workload makes an [`SvidKey`] and
//! sends [`SvidKey::csr_pem`]; the CA answers with an [`SvidCertificate`] for
//! the SPIFFE ID *it* decided; the workload pairs both into an [`Svid`], puts it
//! in an [`SvidStore`] with the [`TrustBundle`], and builds rustls configs with
//! [`server_config`] / [`client_config`] (or [`anonymous_client_config`] before it
//! has an SVID), naming the peers it accepts with a [`PeerPolicy`].
//!
//! This crate builds every rustls configuration meshwork uses on its own
//! connections ([`tls`]); other crates only pick the policy and protocols.

pub mod bundle;
pub mod ca;
pub mod jwt;
pub mod peer;
pub mod spiffe_id;
pub mod store;
pub mod svid;
pub mod tls;
pub mod verifier;

pub use bundle::{BundleError, TrustBundle};
pub use ca::{CLOCK_SKEW_ALLOWANCE, Ca, CaError, CaPem, DEFAULT_CA_TTL, DEFAULT_SVID_TTL};
pub use jwt::{DEFAULT_JWT_TTL, JwtAuthority, JwtBundle, JwtError, JwtKeyMaterial};
pub use peer::{ClientAuth, PeerPolicy, SpiffeClientCertVerifier, SpiffeServerCertVerifier};
pub use spiffe_id::{
    MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN, SpiffeId, SpiffeIdError, TrustDomain,
};
pub use store::{SvidResolver, SvidStore};
pub use svid::{Svid, SvidCertificate, SvidError, SvidKey};
pub use tls::{
    Alpn, OPAQUE_ALPN, Protocols, TlsVersions, anonymous_client_config, client_config,
    server_config,
};
pub use verifier::{PeerRole, VerifyError, peer_spiffe_id, verify_svid};

/// The path of the control plane's own SPIFFE ID: agents require exactly this peer.
pub const CONTROL_PATH: &str = "/meshwork/control";

/// The control plane's SPIFFE ID in `td`.
pub fn control_id(td: &TrustDomain) -> SpiffeId {
    // invariant: a constant, valid path.
    SpiffeId::new(td.clone(), CONTROL_PATH).unwrap_or_else(|_| td.spiffe_id())
}
