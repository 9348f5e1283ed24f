//! X.509-SVIDs: the workload's key pair ([`SvidKey`], made where it is used;
//! only its CSR travels), the certificate the CA returns ([`SvidCertificate`]),
//! and the two together ([`Svid`]) ready to present in TLS.

use std::fmt;
use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use crate::SpiffeId;
use crate::bundle::{certs_to_pem, pem_config};
use crate::verifier::{VerifyError, read_leaf};

/// Why an SVID, its key or its CSR could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    /// Key generation or CSR signing failed in rcgen/ring.
    #[error("generating the SVID key or CSR failed")]
    Crypto(#[source] rcgen::Error),
    /// The PEM text could not be read.
    #[error("SVID {what} PEM is malformed")]
    Pem {
        /// `"certificate chain"` or `"private key"`.
        what: &'static str,
        /// What the PEM reader reported.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate chain is empty.
    #[error("SVID certificate chain is empty")]
    EmptyChain,
    /// The leaf is not a well-formed X.509-SVID.
    #[error("SVID leaf certificate is not a valid X.509-SVID")]
    InvalidLeaf(#[source] VerifyError),
    /// The private key cannot be used by rustls (unsupported or malformed).
    #[error("SVID private key cannot be loaded")]
    BadKey(#[source] rustls::Error),
    /// The private key does not belong to the leaf certificate.
    #[error("SVID private key does not match the leaf certificate's public key")]
    KeyMismatch,
}

/// A workload's freshly generated ECDSA P-256 key pair. It never leaves the
/// process that made it; [`SvidKey::csr_pem`] is what goes to the CA.
pub struct SvidKey {
    key: KeyPair,
}

impl SvidKey {
    /// Generates a new ECDSA P-256 key pair.
    pub fn generate() -> Result<SvidKey, SvidError> {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(SvidError::Crypto)?;
        Ok(SvidKey { key })
    }

    /// A PEM PKCS#10 CSR for `id`, signed with this key. The CA decides the
    /// identity itself; the URI SAN here is informational only.
    pub fn csr_pem(&self, id: &SpiffeId) -> Result<String, SvidError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = id.as_str().try_into().map_err(SvidError::Crypto)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params
            .serialize_request(&self.key)
            .map_err(SvidError::Crypto)?;
        csr.pem().map_err(SvidError::Crypto)
    }

    /// The private key as PKCS#8 DER.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

impl fmt::Debug for SvidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidKey { .. }")
    }
}

/// A CA-issued X.509-SVID certificate chain (leaf first), without the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SvidCertificate {
    id: SpiffeId,
    cert_chain: Vec<CertificateDer<'static>>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl SvidCertificate {
    /// Reads a chain (leaf first); the leaf must carry exactly one SPIFFE ID
    /// URI SAN and must not be a CA. Does not verify the chain.
    pub fn from_der(cert_chain: Vec<CertificateDer<'static>>) -> Result<Self, SvidError> {
        let leaf = cert_chain.first().ok_or(SvidError::EmptyChain)?;
        let leaf = read_leaf(leaf).map_err(SvidError::InvalidLeaf)?;
        if leaf.is_ca {
            return Err(SvidError::InvalidLeaf(VerifyError::LeafIsCa));
        }
        Ok(SvidCertificate {
            id: leaf.id,
            cert_chain,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        })
    }

    /// For certificates this crate just issued: no need to re-read the leaf.
    pub(crate) fn from_parts(
        id: SpiffeId,
        cert_chain: Vec<CertificateDer<'static>>,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Self {
        SvidCertificate {
            id,
            cert_chain,
            not_before,
            not_after,
        }
    }

    /// Reads concatenated PEM `CERTIFICATE` blocks, leaf first.
    pub fn from_pem(cert_chain_pem: &str) -> Result<Self, SvidError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| SvidError::Pem {
                what: "certificate chain",
                source,
            })?;
        Self::from_der(chain)
    }

    /// The chain as concatenated PEM `CERTIFICATE` blocks, leaf first.
    pub fn to_pem(&self) -> String {
        certs_to_pem(&self.cert_chain)
    }

    /// The SPIFFE ID in the leaf's URI SAN.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Leaf first, then any intermediates (never the root).
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// The leaf's notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// The leaf's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

impl fmt::Debug for SvidCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidCertificate")
            .field("id", &self.id)
            .field("chain_len", &self.cert_chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// An X.509-SVID with its private key: what a workload presents in TLS.
pub struct Svid {
    cert: SvidCertificate,
    key: PrivateKeyDer<'static>,
    /// Built once here so handshakes only clone an `Arc`.
    certified: Arc<CertifiedKey>,
}

impl Svid {
    /// Pairs a CA-issued certificate with the key whose CSR it answered.
    pub fn new(key: SvidKey, cert: SvidCertificate) -> Result<Svid, SvidError> {
        Self::assemble(cert, key.private_key_der())
    }

    /// Reads a chain (leaf first) and its private key (PKCS#8, SEC1 or PKCS#1) from PEM.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Svid, SvidError> {
        let cert = SvidCertificate::from_pem(cert_chain_pem)?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| SvidError::Pem {
                what: "private key",
                source,
            })?;
        Self::assemble(cert, key)
    }

    /// From a DER chain (leaf first) and private key.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Svid, SvidError> {
        Self::assemble(SvidCertificate::from_der(cert_chain)?, key)
    }

    fn assemble(cert: SvidCertificate, key: PrivateKeyDer<'static>) -> Result<Svid, SvidError> {
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(cert.cert_chain.clone(), key.clone_key(), &provider)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => SvidError::KeyMismatch,
                other => SvidError::BadKey(other),
            })?;
        Ok(Svid {
            cert,
            key,
            certified: Arc::new(certified),
        })
    }

    /// The SPIFFE ID this SVID proves.
    pub fn id(&self) -> &SpiffeId {
        &self.cert.id
    }

    /// Leaf first, then any intermediates.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert.cert_chain
    }

    /// The certificate part alone.
    pub fn certificate(&self) -> &SvidCertificate {
        &self.cert
    }

    /// The private key (DER).
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The private key as PEM (PKCS#8 for keys made by [`SvidKey`]).
    pub fn key_pem(&self) -> String {
        let tag = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem::encode_config(&pem::Pem::new(tag, self.key.secret_der()), pem_config())
    }

    /// The leaf's notBefore.
    pub fn not_before(&self) -> OffsetDateTime {
        self.cert.not_before
    }

    /// The leaf's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.cert.not_after
    }

    /// What the rustls resolvers hand out.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }
}

impl Clone for Svid {
    fn clone(&self) -> Self {
        Svid {
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            certified: Arc::clone(&self.certified),
        }
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.cert.id)
            .field("not_before", &self.cert.not_before)
            .field("not_after", &self.cert.not_after)
            .finish_non_exhaustive()
    }
}
