//! SPIFFE X.509-SVID verification (the rustls verifiers built on it are in
//! [`crate::peer`]).
//!
//! A peer is accepted only if its leaf carries exactly one URI SAN that is a
//! valid [`SpiffeId`] in the bundle's trust domain, the leaf is not a CA, and
//! the chain verifies to the bundle's roots at the handshake time rustls
//! passes in. rustls' own WebPKI verifiers are not used because they insist on
//! matching DNS/IP names, which SVIDs do not carry; the chain is built with
//! webpki directly and the name check is ours.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::{CertificateError, OtherError};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{PeerPolicy, SpiffeId, SpiffeIdError, TrustBundle, TrustDomain};

/// Why a peer's X.509-SVID was rejected. Each variant is one distinct reason.
///
/// Inside rustls these surface as `rustls::Error::InvalidCertificate(..)`:
/// [`Expired`](Self::Expired), [`NotYetValid`](Self::NotYetValid),
/// [`UnknownIssuer`](Self::UnknownIssuer) and [`BadEncoding`](Self::BadEncoding)
/// as the standard `CertificateError` variants (so the peer gets the precise TLS
/// alert), everything else as `CertificateError::Other` wrapping this type.
/// [`VerifyError::from_tls_error`] recovers the reason from either form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The peer presented no certificate at all.
    #[error("peer presented no certificate")]
    NoCertificate,
    /// The leaf certificate is not valid DER / X.509.
    #[error("peer certificate is not valid X.509 DER")]
    BadEncoding,
    /// The leaf has no URI SAN, so it names no SPIFFE ID.
    #[error("peer certificate has no URI SAN (an X.509-SVID carries exactly one SPIFFE ID)")]
    NoUriSan,
    /// The leaf has more than one URI SAN (the X.509-SVID spec allows exactly one).
    #[error("peer certificate has {count} URI SANs; an X.509-SVID carries exactly one")]
    MultipleUriSans {
        /// How many URI SANs were present.
        count: usize,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("peer certificate URI SAN {uri:?} is not a valid SPIFFE ID")]
    MalformedSpiffeId {
        /// The URI SAN as presented.
        uri: String,
        /// Which SPIFFE ID rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// The leaf is a CA certificate (CA:true, or may sign certificates/CRLs).
    #[error("peer leaf certificate is a CA certificate (CA:true or keyCertSign/cRLSign)")]
    LeafIsCa,
    /// The peer's SPIFFE ID is in a trust domain we hold no bundle for.
    #[error("peer {found} is not in trust domain {expected}")]
    WrongTrustDomain {
        /// The trust domain of our bundle.
        expected: TrustDomain,
        /// The ID the peer presented.
        found: SpiffeId,
    },
    /// A certificate in the chain expired before the handshake time.
    #[error("peer certificate expired: not after unix {not_after}, handshake at unix {now}")]
    Expired {
        /// Handshake time, unix seconds.
        now: u64,
        /// The certificate's notAfter, unix seconds.
        not_after: u64,
    },
    /// A certificate in the chain is not valid yet at the handshake time.
    #[error(
        "peer certificate not valid yet: not before unix {not_before}, handshake at unix {now}"
    )]
    NotYetValid {
        /// Handshake time, unix seconds.
        now: u64,
        /// The certificate's notBefore, unix seconds.
        not_before: u64,
    },
    /// The chain does not lead to a root of the trust bundle: self-signed leaves,
    /// other CAs, and CAs with a bundle root's name but another key (tampered
    /// or from a rolled-over CA).
    #[error("peer certificate chain does not lead to a root in the trust bundle (unknown issuer)")]
    UnknownIssuer,
    /// The chain failed verification for another reason webpki names.
    #[error("peer certificate chain is invalid: {reason}")]
    InvalidChain {
        /// webpki's reason (its error type is not part of our public API).
        reason: String,
    },
    /// The server is a valid SVID of our trust domain, but not the one we meant to reach.
    #[error("server is {found}, but the client expected {expected}")]
    ServerIdentityMismatch {
        /// The SPIFFE ID the client meant to reach.
        expected: SpiffeId,
        /// The SPIFFE ID the server presented.
        found: SpiffeId,
    },
    /// The peer is a valid SVID of our trust domain, but the handshake's
    /// [`PeerPolicy`] does not allow it.
    #[error("{role} {found} is not allowed: expected {policy}")]
    PeerNotAllowed {
        /// Which side the rejected peer was.
        role: PeerRole,
        /// The SPIFFE ID the peer presented.
        found: SpiffeId,
        /// The policy it failed (boxed: a set can be large, errors should not be).
        policy: Box<PeerPolicy>,
    },
}

impl VerifyError {
    /// Recovers the rejection reason from a rustls error produced by this crate's
    /// verifiers (or rustls itself, for a missing client certificate).
    pub fn from_tls_error(err: &rustls::Error) -> Option<VerifyError> {
        match err {
            rustls::Error::NoCertificatesPresented => Some(VerifyError::NoCertificate),
            rustls::Error::InvalidCertificate(cert_err) => match cert_err {
                CertificateError::ExpiredContext { time, not_after } => {
                    Some(VerifyError::Expired {
                        now: time.as_secs(),
                        not_after: not_after.as_secs(),
                    })
                }
                CertificateError::NotValidYetContext { time, not_before } => {
                    Some(VerifyError::NotYetValid {
                        now: time.as_secs(),
                        not_before: not_before.as_secs(),
                    })
                }
                CertificateError::UnknownIssuer => Some(VerifyError::UnknownIssuer),
                CertificateError::BadEncoding => Some(VerifyError::BadEncoding),
                CertificateError::Other(other) => other.0.downcast_ref::<VerifyError>().cloned(),
                _ => None,
            },
            _ => None,
        }
    }
}

impl From<VerifyError> for rustls::Error {
    fn from(err: VerifyError) -> rustls::Error {
        let cert_err = match err {
            VerifyError::Expired { now, not_after } => CertificateError::ExpiredContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
                not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_after)),
            },
            VerifyError::NotYetValid { now, not_before } => CertificateError::NotValidYetContext {
                time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
                not_before: UnixTime::since_unix_epoch(std::time::Duration::from_secs(not_before)),
            },
            VerifyError::UnknownIssuer => CertificateError::UnknownIssuer,
            VerifyError::BadEncoding => CertificateError::BadEncoding,
            VerifyError::NoCertificate => return rustls::Error::NoCertificatesPresented,
            other => CertificateError::Other(OtherError(Arc::new(other))),
        };
        rustls::Error::InvalidCertificate(cert_err)
    }
}

/// What the X.509-SVID profile cares about in a leaf certificate.
pub(crate) struct Leaf {
    pub(crate) id: SpiffeId,
    pub(crate) is_ca: bool,
    pub(crate) not_before: time::OffsetDateTime,
    pub(crate) not_after: time::OffsetDateTime,
}

/// Reads the SPIFFE ID and CA-ness of a leaf. Does not verify anything cryptographic.
pub(crate) fn read_leaf(der: &[u8]) -> Result<Leaf, VerifyError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|_| VerifyError::BadEncoding)?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|_| VerifyError::BadEncoding)?;
    let mut uris = sans
        .iter()
        .flat_map(|san| &san.value.general_names)
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
    let uri = match (uris.next(), uris.next()) {
        (None, _) => return Err(VerifyError::NoUriSan),
        (Some(uri), None) => uri,
        (Some(_), Some(_)) => {
            return Err(VerifyError::MultipleUriSans {
                count: 2 + uris.count(),
            });
        }
    };
    let id = uri
        .parse()
        .map_err(|source| VerifyError::MalformedSpiffeId {
            uri: uri.to_owned(),
            source,
        })?;
    let ca_flag = cert
        .basic_constraints()
        .map_err(|_| VerifyError::BadEncoding)?
        .is_some_and(|bc| bc.value.ca);
    let can_sign = cert
        .key_usage()
        .map_err(|_| VerifyError::BadEncoding)?
        .is_some_and(|ku| ku.value.key_cert_sign() || ku.value.crl_sign());
    Ok(Leaf {
        id,
        is_ca: ca_flag || can_sign,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// The SPIFFE ID of a peer whose chain rustls has already verified, e.g.
/// `peer_spiffe_id(conn.peer_certificates().unwrap_or_default())`.
///
/// This only reads the leaf; it must not be used as a substitute for verification.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Result<SpiffeId, VerifyError> {
    let leaf = certs.first().ok_or(VerifyError::NoCertificate)?;
    read_leaf(leaf).map(|leaf| leaf.id)
}

/// Which side of the handshake the certificate being verified belongs to; picks
/// the extended key usage webpki requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    /// The peer is a TLS client (EKU clientAuth).
    Client,
    /// The peer is a TLS server (EKU serverAuth).
    Server,
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerRole::Client => "client",
            PeerRole::Server => "server",
        })
    }
}

/// Verifies an X.509-SVID chain (`chain[0]` is the leaf) against `bundle` at
/// `now` and returns the peer's SPIFFE ID.
///
/// Per the X.509-SVID spec the trust domain of the presented ID selects the
/// bundle, so a peer from another trust domain is reported as
/// [`VerifyError::WrongTrustDomain`] before its chain is examined.
pub fn verify_svid(
    bundle: &TrustBundle,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<SpiffeId, VerifyError> {
    let (end_entity, intermediates) = chain.split_first().ok_or(VerifyError::NoCertificate)?;
    verify_parts(bundle, end_entity, intermediates, now, role)
}

pub(crate) fn verify_parts(
    bundle: &TrustBundle,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    role: PeerRole,
) -> Result<SpiffeId, VerifyError> {
    let leaf = read_leaf(end_entity)?;
    if leaf.is_ca {
        return Err(VerifyError::LeafIsCa);
    }
    if leaf.id.trust_domain() != bundle.trust_domain() {
        return Err(VerifyError::WrongTrustDomain {
            expected: bundle.trust_domain().clone(),
            found: leaf.id,
        });
    }
    let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| VerifyError::BadEncoding)?;
    let usage = match role {
        PeerRole::Client => webpki::KeyUsage::client_auth(),
        PeerRole::Server => webpki::KeyUsage::server_auth(),
    };
    cert.verify_for_usage(
        signature_algorithms().all,
        bundle.anchors(),
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map_err(chain_error)?;
    Ok(leaf.id)
}

fn chain_error(err: webpki::Error) -> VerifyError {
    match err {
        webpki::Error::CertExpired { time, not_after } => VerifyError::Expired {
            now: time.as_secs(),
            not_after: not_after.as_secs(),
        },
        webpki::Error::CertNotValidYet { time, not_before } => VerifyError::NotYetValid {
            now: time.as_secs(),
            not_before: not_before.as_secs(),
        },
        // A root with the issuer's name whose key did not sign the chain is, for
        // the peer, just as unknown: typical right after a CA roll, since all our
        // roots share the subject "meshwork CA".
        webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => {
            VerifyError::UnknownIssuer
        }
        webpki::Error::BadDer | webpki::Error::BadDerTime => VerifyError::BadEncoding,
        webpki::Error::CaUsedAsEndEntity => VerifyError::LeafIsCa,
        other => VerifyError::InvalidChain {
            reason: other.to_string(),
        },
    }
}

/// The ring provider's algorithms: the workspace's one crypto provider.
pub(crate) fn signature_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

#[cfg(test)]
mod tests;
