//! The trust domain's certificate authority: an ECDSA P-256 root that signs
//! X.509-SVIDs from CSRs. The SPIFFE ID in an SVID is always the one the
//! caller of [`Ca::sign_csr`] decided; nothing in the CSR but its public key is used.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, SignatureAlgorithm,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::{Duration, OffsetDateTime};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::bundle::pem_config;
use crate::verifier::read_leaf;
use crate::{BundleError, SpiffeId, SvidCertificate, TrustBundle, TrustDomain};

/// Default lifetime of a generated root CA.
pub const DEFAULT_CA_TTL: Duration = Duration::days(365);
/// Default lifetime of an issued X.509-SVID.
pub const DEFAULT_SVID_TTL: Duration = Duration::hours(1);
/// How far notBefore is backdated, so peers whose clocks lag slightly behind
/// the CA's do not reject a certificate that was just issued.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::seconds(30);

/// Subject common name of generated roots.
const CA_COMMON_NAME: &str = "meshwork CA";

/// Why the CA could not be built or could not issue.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen/ring failed to generate a key or sign a certificate.
    #[error("CA crypto operation failed: {what}")]
    Crypto {
        /// What was being done.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// The CA certificate PEM holds no readable certificate.
    #[error("CA certificate PEM is malformed or holds no certificate")]
    CertPem(#[source] Option<rustls_pki_types::pem::Error>),
    /// The CA certificate is not valid X.509.
    #[error("CA certificate is not valid X.509 DER")]
    CertEncoding,
    /// The CA private key PEM could not be read (PKCS#8 expected).
    #[error("CA private key PEM is malformed or unsupported")]
    KeyPem(#[source] rcgen::Error),
    /// The certificate is not a CA (basicConstraints CA:true missing).
    #[error("certificate is not a CA certificate (basicConstraints CA:true missing)")]
    NotACa,
    /// The CA certificate names no trust domain (URI SAN `spiffe://<td>`).
    #[error("CA certificate has no URI SAN naming its trust domain (spiffe://<td>)")]
    NoTrustDomain,
    /// The private key does not belong to the CA certificate.
    #[error("CA private key does not match the CA certificate")]
    KeyMismatch,
    /// The CA's own certificate cannot be a trust anchor.
    #[error("CA certificate cannot be used as a trust anchor")]
    Bundle(#[source] BundleError),
    /// A TTL that is zero or negative.
    #[error("TTL must be positive, got {ttl}")]
    BadTtl {
        /// The TTL given.
        ttl: Duration,
    },
    /// A TTL so long that `now + ttl` is past the end of the calendar X.509 and `time` can
    /// represent (year 9999).
    #[error("TTL {ttl} is out of range: the certificate would expire after the year 9999")]
    TtlOutOfRange {
        /// The TTL given.
        ttl: Duration,
    },
    /// The CA certificate has expired (or is not yet valid) at `now`.
    #[error("CA certificate is not valid at {now} (valid {not_before} to {not_after})")]
    CaNotValid {
        /// The time issuance was requested at.
        now: OffsetDateTime,
        /// The CA's notBefore.
        not_before: OffsetDateTime,
        /// The CA's notAfter.
        not_after: OffsetDateTime,
    },
    /// The requested SPIFFE ID is in another trust domain than the CA's.
    #[error("CA of trust domain {ca} cannot issue {requested}")]
    ForeignTrustDomain {
        /// The CA's trust domain.
        ca: TrustDomain,
        /// The ID that was asked for.
        requested: SpiffeId,
    },
    /// The CSR is not valid PEM/DER PKCS#10.
    #[error("CSR is not a valid PEM/DER PKCS#10 certification request")]
    CsrEncoding,
    /// The CSR's self-signature does not verify (or uses an unknown algorithm).
    #[error("CSR signature does not verify")]
    CsrSignature,
    /// The CSR's public key is not ECDSA P-256, ECDSA P-384 or Ed25519.
    #[error("CSR public key algorithm {algorithm} is not allowed (ECDSA P-256/P-384 or Ed25519)")]
    UnsupportedKey {
        /// The key algorithm OID (and curve OID, for EC keys).
        algorithm: String,
    },
}

/// The PEM form of a CA, for storing it.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The CA certificate, one PEM `CERTIFICATE` block.
    pub cert_pem: String,
    /// The CA private key, PEM PKCS#8. Secret.
    pub key_pem: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A trust domain's root certificate authority.
pub struct Ca {
    trust_domain: TrustDomain,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    bundle: TrustBundle,
    rng: SystemRandom,
}

impl Ca {
    /// Generates a new P-256 root valid for [`DEFAULT_CA_TTL`] from `now`.
    pub fn generate(trust_domain: TrustDomain, now: OffsetDateTime) -> Result<Ca, CaError> {
        Self::generate_with_ttl(trust_domain, now, DEFAULT_CA_TTL)
    }

    /// Generates a new P-256 root valid from `now - CLOCK_SKEW_ALLOWANCE`
    /// (matching the SVIDs it issues) to `now + ttl`.
    pub fn generate_with_ttl(
        trust_domain: TrustDomain,
        now: OffsetDateTime,
        ttl: Duration,
    ) -> Result<Ca, CaError> {
        if !ttl.is_positive() {
            return Err(CaError::BadTtl { ttl });
        }
        let now = whole_seconds(now);
        let rng = SystemRandom::new();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(crypto("generating the CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.subject_alt_names = vec![uri_san(&trust_domain.spiffe_id())?];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        params.not_after = now.checked_add(ttl).ok_or(CaError::TtlOutOfRange { ttl })?;
        params.serial_number = Some(random_serial(&rng)?);
        let cert = params
            .self_signed(&key)
            .map_err(crypto("self-signing the CA certificate"))?;
        let cert = cert.der().clone();
        let bundle =
            TrustBundle::new(trust_domain.clone(), vec![cert.clone()]).map_err(CaError::Bundle)?;
        Ok(Ca {
            trust_domain,
            cert,
            not_before: params.not_before,
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
            bundle,
            rng,
        })
    }

    /// Loads a CA from its certificate (with a `spiffe://<td>` URI SAN) and PKCS#8 key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CaError> {
        let cert = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .next()
            .ok_or(CaError::CertPem(None))?
            .map_err(|e| CaError::CertPem(Some(e)))?;
        let key = KeyPair::from_pem(key_pem).map_err(CaError::KeyPem)?;
        let (_, parsed) = X509Certificate::from_der(&cert).map_err(|_| CaError::CertEncoding)?;
        if !parsed.is_ca() {
            return Err(CaError::NotACa);
        }
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::KeyMismatch);
        }
        // read_leaf is the SVID reader; a CA's URI SAN follows the same one-URI rule.
        let id = read_leaf(&cert).map_err(|_| CaError::NoTrustDomain)?.id;
        if !id.path().is_empty() {
            return Err(CaError::NoTrustDomain);
        }
        let trust_domain = id.trust_domain().clone();
        let not_before = parsed.validity().not_before.to_datetime();
        let not_after = parsed.validity().not_after.to_datetime();
        let issuer =
            Issuer::from_ca_cert_der(&cert, key).map_err(crypto("reading the CA certificate"))?;
        let bundle =
            TrustBundle::new(trust_domain.clone(), vec![cert.clone()]).map_err(CaError::Bundle)?;
        Ok(Ca {
            trust_domain,
            cert,
            issuer,
            not_before,
            not_after,
            bundle,
            rng: SystemRandom::new(),
        })
    }

    /// The certificate and private key as PEM.
    pub fn to_pem(&self) -> CaPem {
        let cert = pem::Pem::new("CERTIFICATE", self.cert.as_ref());
        CaPem {
            cert_pem: pem::encode_config(&cert, pem_config()),
            key_pem: self.issuer.key().serialize_pem(),
        }
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate's notAfter; issued SVIDs never outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The trust bundle peers need to verify SVIDs from this CA.
    pub fn bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// Issues an X.509-SVID for `id` to the key in the PEM CSR, valid from
    /// `now - CLOCK_SKEW_ALLOWANCE` to `now + ttl` (capped at the CA's notAfter).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SvidCertificate, CaError> {
        let csr = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|_| CaError::CsrEncoding)?;
        self.sign_csr_der(&csr, id, ttl, now)
    }

    /// As [`Ca::sign_csr`], for a DER CSR.
    pub fn sign_csr_der(
        &self,
        csr: &CertificateSigningRequestDer<'_>,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SvidCertificate, CaError> {
        let key = csr_public_key(csr)?;
        self.issue(&key, id, ttl, now)
    }

    /// Issues an SVID for an already-verified public key.
    fn issue(
        &self,
        key: &impl PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<SvidCertificate, CaError> {
        let params = self.svid_params(id, ttl, now)?;
        let leaf = params
            .signed_by(key, &self.issuer)
            .map_err(crypto("signing the SVID"))?;
        Ok(SvidCertificate::from_parts(
            id.clone(),
            vec![leaf.der().clone()],
            params.not_before,
            params.not_after,
        ))
    }

    /// The X.509-SVID profile: one URI SAN, CA:false explicitly, digitalSignature
    /// only, serverAuth+clientAuth, our own subject, random serial.
    fn svid_params(
        &self,
        id: &SpiffeId,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<CertificateParams, CaError> {
        if !ttl.is_positive() {
            return Err(CaError::BadTtl { ttl });
        }
        // X.509 times have whole seconds; truncate so the SvidCertificate we
        // return reports exactly what the certificate says.
        let now = whole_seconds(now);
        if id.trust_domain() != &self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                ca: self.trust_domain.clone(),
                requested: id.clone(),
            });
        }
        if now < self.not_before || now >= self.not_after {
            return Err(CaError::CaNotValid {
                now,
                not_before: self.not_before,
                not_after: self.not_after,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "meshwork");
        params.subject_alt_names = vec![uri_san(id)?];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = now - CLOCK_SKEW_ALLOWANCE;
        // A TTL past the end of the calendar is past the CA's notAfter too: capped like any
        // other TTL that outlives the CA, never an arithmetic overflow.
        params.not_after = now
            .checked_add(ttl)
            .map_or(self.not_after, |end| end.min(self.not_after));
        params.serial_number = Some(random_serial(&self.rng)?);
        // Lets verifiers pick the right root while two CAs overlap during rotation.
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// X.509 times have whole seconds; truncating up front means the times we
/// report are exactly those in the certificates.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t - Duration::nanoseconds(i64::from(t.nanosecond()))
}

fn crypto(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Crypto { what, source }
}

fn uri_san(id: &SpiffeId) -> Result<SanType, CaError> {
    // A SpiffeId is ASCII by construction, so this cannot fail; the error is
    // mapped rather than unwrapped so the signing path has no panic at all.
    let uri = id
        .as_str()
        .try_into()
        .map_err(crypto("encoding the URI SAN"))?;
    Ok(SanType::URI(uri))
}

/// 16 random bytes with the top bit clear: a positive INTEGER well under the
/// 20-octet limit of RFC 5280 §4.1.2.2.
fn random_serial(rng: &SystemRandom) -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes).map_err(|_| CaError::Crypto {
        what: "drawing a random serial",
        source: rcgen::Error::RingUnspecified,
    })?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

/// The public key of a CSR whose self-signature verifies and whose key is allowed.
struct CsrKey {
    /// The subjectPublicKey BIT STRING contents.
    raw: Vec<u8>,
    alg: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.alg
    }
}

/// Parses the CSR, checks its key type, verifies its signature. Deliberately
/// ignores everything else in it (subject, SANs, requested extensions).
fn csr_public_key(csr: &CertificateSigningRequestDer<'_>) -> Result<CsrKey, CaError> {
    let (rest, parsed) =
        X509CertificationRequest::from_der(csr.as_ref()).map_err(|_| CaError::CsrEncoding)?;
    if !rest.is_empty() {
        return Err(CaError::CsrEncoding);
    }
    let spki = &parsed.certification_request_info.subject_pki;
    let alg = allowed_key_algorithm(spki)?;
    parsed
        .verify_signature()
        .map_err(|_| CaError::CsrSignature)?;
    Ok(CsrKey {
        raw: spki.subject_public_key.data.to_vec(),
        alg,
    })
}

/// Maps the SPKI algorithm to the rcgen algorithm that writes the same SPKI
/// AlgorithmIdentifier; anything but P-256, P-384 and Ed25519 is refused.
fn allowed_key_algorithm(
    spki: &SubjectPublicKeyInfo<'_>,
) -> Result<&'static SignatureAlgorithm, CaError> {
    let oid = &spki.algorithm.algorithm;
    if *oid == OID_SIG_ED25519 {
        return Ok(&rcgen::PKCS_ED25519);
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        match curve {
            Some(c) if c == OID_EC_P256 => return Ok(&rcgen::PKCS_ECDSA_P256_SHA256),
            Some(c) if c == OID_NIST_EC_P384 => return Ok(&rcgen::PKCS_ECDSA_P384_SHA384),
            _ => {}
        }
    }
    Err(CaError::UnsupportedKey {
        algorithm: match curve {
            Some(c) => format!("{oid} ({c})"),
            None => oid.to_string(),
        },
    })
}

#[cfg(test)]
mod tests;
