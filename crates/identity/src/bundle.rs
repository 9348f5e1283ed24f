//! X.509 trust bundles: the root certificates that SVIDs of one trust domain
//! must chain to.

use std::fmt;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use crate::TrustDomain;

/// Why a trust bundle could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The PEM text could not be read.
    #[error("trust bundle for {trust_domain}: PEM is malformed")]
    Pem {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
        /// What the PEM reader reported.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The bundle holds no root certificate, so it could never verify anything.
    #[error("trust bundle for {trust_domain} has no root certificates")]
    Empty {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
    },
    /// A root certificate is not a parseable X.509 v3 certificate.
    #[error(
        "trust bundle for {trust_domain}: root certificate #{index} cannot be used as a trust anchor: {reason}"
    )]
    BadRoot {
        /// The bundle's trust domain.
        trust_domain: TrustDomain,
        /// Zero-based position of the root in the bundle.
        index: usize,
        /// webpki's reason (its error type is not part of our public API).
        reason: String,
    },
}

/// The roots of one trust domain. Only built through [`TrustBundle::new`] /
/// [`TrustBundle::from_pem`], which check every root is a usable trust anchor.
#[derive(Clone)]
pub struct TrustBundle {
    trust_domain: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    /// Parsed once here rather than on every handshake.
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// A bundle from DER root certificates; at least one is required.
    pub fn new(
        trust_domain: TrustDomain,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<TrustBundle, BundleError> {
        if roots.is_empty() {
            return Err(BundleError::Empty { trust_domain });
        }
        let mut anchors = Vec::with_capacity(roots.len());
        for (index, root) in roots.iter().enumerate() {
            match webpki::anchor_from_trusted_cert(root) {
                Ok(anchor) => anchors.push(anchor.to_owned()),
                Err(e) => {
                    return Err(BundleError::BadRoot {
                        trust_domain,
                        index,
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(TrustBundle {
            trust_domain,
            roots,
            anchors,
        })
    }

    /// A bundle from concatenated PEM `CERTIFICATE` blocks (other blocks are skipped).
    pub fn from_pem(trust_domain: TrustDomain, pem: &str) -> Result<TrustBundle, BundleError> {
        let roots = CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>();
        match roots {
            Ok(roots) => TrustBundle::new(trust_domain, roots),
            Err(source) => Err(BundleError::Pem {
                trust_domain,
                source,
            }),
        }
    }

    /// The roots as concatenated PEM `CERTIFICATE` blocks.
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.roots)
    }

    /// The trust domain whose SVIDs this bundle verifies.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificates (DER).
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The roots as webpki trust anchors.
    pub(crate) fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl PartialEq for TrustBundle {
    /// Anchors are derived from the roots, so comparing roots suffices.
    fn eq(&self, other: &Self) -> bool {
        self.trust_domain == other.trust_domain && self.roots == other.roots
    }
}

impl Eq for TrustBundle {}

/// Encodes DER certificates as concatenated PEM `CERTIFICATE` blocks.
pub(crate) fn certs_to_pem(certs: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref()))
        .collect();
    pem::encode_many_config(&blocks, pem_config())
}

/// LF line endings everywhere, so PEM we emit is byte-identical across platforms.
pub(crate) fn pem_config() -> pem::EncodeConfig {
    pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn self_signed_ca() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn pem_round_trip() {
        let td: TrustDomain = "example.org".parse().unwrap();
        let bundle =
            TrustBundle::new(td.clone(), vec![self_signed_ca(), self_signed_ca()]).unwrap();
        let pem = bundle.to_pem();
        assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
        let back = TrustBundle::from_pem(td, &pem).unwrap();
        assert_eq!(back, bundle);
        assert_eq!(back.anchors().len(), 2);
    }

    #[test]
    fn rejects_empty_and_garbage() {
        let td: TrustDomain = "example.org".parse().unwrap();
        assert!(matches!(
            TrustBundle::from_pem(td.clone(), ""),
            Err(BundleError::Empty { .. })
        ));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            TrustBundle::from_pem(td.clone(), garbage),
            Err(BundleError::BadRoot { index: 0, .. })
        ));
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            TrustBundle::from_pem(td, broken),
            Err(BundleError::Pem { .. })
        ));
    }
}
