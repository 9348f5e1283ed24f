//! Which peers a handshake accepts ([`PeerPolicy`], [`ClientAuth`]) and the rustls
//! verifiers that enforce it on top of [`verify_svid`](crate::verify_svid).
//!
//! Both verifiers first verify the peer's X.509-SVID against the trust bundle (read
//! at handshake time, so bundle swaps apply to the next handshake), then check the
//! proven SPIFFE ID against the policy. rustls' WebPKI verifiers are not used: they
//! match DNS/IP names, which SVIDs do not carry.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::verifier::{signature_algorithms, verify_parts};
use crate::{PeerRole, SpiffeId, SvidStore, TrustBundle, VerifyError};

/// The SPIFFE IDs a handshake accepts from its peer, once the peer's SVID has
/// verified against the trust bundle (so every accepted ID is in the bundle's
/// trust domain whatever the policy says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Any SPIFFE ID of the trust bundle's trust domain; authorization is left to
    /// the caller (read the ID with [`peer_spiffe_id`](crate::peer_spiffe_id)).
    AnyInTrustDomain,
    /// Exactly this SPIFFE ID.
    Exactly(SpiffeId),
    /// Any SPIFFE ID in this set. An empty set accepts no one.
    OneOf(BTreeSet<SpiffeId>),
}

impl PeerPolicy {
    /// Whether `id` (already proven by a verified SVID) is acceptable.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            PeerPolicy::AnyInTrustDomain => true,
            PeerPolicy::Exactly(expected) => expected == id,
            PeerPolicy::OneOf(allowed) => allowed.contains(id),
        }
    }

    /// The policy's verdict on a proven `found`, with the error the handshake reports.
    fn check(&self, role: PeerRole, found: SpiffeId) -> Result<(), VerifyError> {
        if self.allows(&found) {
            return Ok(());
        }
        Err(match (role, self) {
            // The long-standing error for "valid SVID, not the server we dialled".
            (PeerRole::Server, PeerPolicy::Exactly(expected)) => {
                VerifyError::ServerIdentityMismatch {
                    expected: expected.clone(),
                    found,
                }
            }
            _ => VerifyError::PeerNotAllowed {
                role,
                found,
                policy: Box::new(self.clone()),
            },
        })
    }
}

impl fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerPolicy::AnyInTrustDomain => f.write_str("any SPIFFE ID of the trust domain"),
            PeerPolicy::Exactly(id) => write!(f, "exactly {id}"),
            PeerPolicy::OneOf(ids) => {
                f.write_str("one of [")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{id}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// What a server demands of its clients' certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// mTLS: a client SVID accepted by the policy is required to finish the handshake.
    Required(PeerPolicy),
    /// A client certificate is requested but not required, so clients with no SVID
    /// yet (an agent that is joining) can connect. A certificate that *is* sent is
    /// verified in full and must satisfy the policy. Weaker than [`Required`](Self::Required):
    /// the caller must check [`peer_spiffe_id`](crate::peer_spiffe_id) on every request
    /// that needs an authenticated peer.
    DangerOptional(PeerPolicy),
}

/// Where a verifier reads its trust bundle.
#[derive(Debug, Clone)]
pub(crate) enum TrustSource {
    /// Whatever the store holds at handshake time (follows bundle swaps).
    Live(Arc<SvidStore>),
    /// A bundle fixed at construction (a joining agent's bootstrap trust).
    Pinned(Arc<TrustBundle>),
}

impl TrustSource {
    fn bundle(&self) -> Arc<TrustBundle> {
        match self {
            TrustSource::Live(store) => store.bundle(),
            TrustSource::Pinned(bundle) => Arc::clone(bundle),
        }
    }
}

/// Server-side verifier of client X.509-SVIDs, enforcing a [`ClientAuth`].
/// Reads the current trust bundle from the [`SvidStore`] on every handshake.
pub struct SpiffeClientCertVerifier {
    store: Arc<SvidStore>,
    auth: ClientAuth,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientCertVerifier {
    /// A verifier that trusts whatever bundle `store` holds at handshake time and
    /// applies `auth`.
    pub fn new(store: Arc<SvidStore>, auth: ClientAuth) -> SpiffeClientCertVerifier {
        SpiffeClientCertVerifier {
            store,
            auth,
            algorithms: signature_algorithms(),
        }
    }

    fn policy(&self) -> &PeerPolicy {
        match &self.auth {
            ClientAuth::Required(policy) | ClientAuth::DangerOptional(policy) => policy,
        }
    }
}

impl fmt::Debug for SpiffeClientCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientCertVerifier")
            .field("trust_domain", self.store.bundle().trust_domain())
            .field("auth", &self.auth)
            .finish()
    }
}

impl ClientCertVerifier for SpiffeClientCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        matches!(self.auth, ClientAuth::Required(_))
    }

    /// No CA hints: clients have exactly one SVID to offer, and the bundle can
    /// be swapped at any moment, so there is nothing stable to borrow here.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let bundle = self.store.bundle();
        let found = verify_parts(&bundle, end_entity, intermediates, now, PeerRole::Client)?;
        self.policy().check(PeerRole::Client, found)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Client-side verifier of server X.509-SVIDs: accepts only a server whose SPIFFE
/// ID the [`PeerPolicy`] allows. The TLS server name is ignored (SVIDs carry no
/// DNS names); identity is the SPIFFE ID.
pub struct SpiffeServerCertVerifier {
    trust: TrustSource,
    policy: PeerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerCertVerifier {
    /// A verifier that trusts whatever bundle `store` holds at handshake time and
    /// accepts the servers `policy` allows.
    pub fn new(store: Arc<SvidStore>, policy: PeerPolicy) -> SpiffeServerCertVerifier {
        SpiffeServerCertVerifier::from_source(TrustSource::Live(store), policy)
    }

    /// A verifier that trusts exactly `bundle`, for a client that has no
    /// [`SvidStore`] yet (it is about to obtain its first SVID).
    pub fn pinned(bundle: TrustBundle, policy: PeerPolicy) -> SpiffeServerCertVerifier {
        SpiffeServerCertVerifier::from_source(TrustSource::Pinned(Arc::new(bundle)), policy)
    }

    fn from_source(trust: TrustSource, policy: PeerPolicy) -> SpiffeServerCertVerifier {
        SpiffeServerCertVerifier {
            trust,
            policy,
            algorithms: signature_algorithms(),
        }
    }
}

impl fmt::Debug for SpiffeServerCertVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerCertVerifier")
            .field("trust_domain", self.trust.bundle().trust_domain())
            .field("policy", &self.policy)
            .finish()
    }
}

impl ServerCertVerifier for SpiffeServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let bundle = self.trust.bundle();
        let found = verify_parts(&bundle, end_entity, intermediates, now, PeerRole::Server)?;
        self.policy.check(PeerRole::Server, found)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
