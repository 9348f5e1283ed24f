#![allow(clippy::unwrap_used, clippy::expect_used)]

use time::macros::datetime;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::{Svid, SvidKey};

/// A P-256 CSR made by openssl that asks for everything we must ignore:
/// CN=admin, URI SAN spiffe://evil.org/admin, DNS SAN, CA:TRUE, keyCertSign,
/// and an extension rcgen's own CSR parser would refuse (nsComment).
const HOSTILE_P256_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBTDCB9AIBADAfMQ4wDAYDVQQDDAVhZG1pbjENMAsGA1UECgwEZXZpbDBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABM6/jcxnsYNuN49sfNCBExWeZ/8skEyuLtrN
klHsTu1CEA7KIhVswY5jh462ovlP23V2xPrKdBHfpNzjtZ9ikWigczBxBgkqhkiG
9w0BCQ4xZDBiMCwGA1UdEQQlMCOGF3NwaWZmZTovL2V2aWwub3JnL2FkbWlugghl
dmlsLm9yZzAPBgNVHRMBAf8EBTADAQH/MAsGA1UdDwQEAwICBDAUBglghkgBhvhC
AQ0EBxYFaGVsbG8wCgYIKoZIzj0EAwIDRwAwRAIgQSSE+zqOXG2pv2qgco2LpwNP
wKmoi4b/lFd0BVF7RSkCIFeUwo0OFUF9mOix9RWDR17Pys/ymZnqx258AB0FUHK8
-----END CERTIFICATE REQUEST-----
";

/// A P-521 CSR made by openssl: a curve we do not accept.
const P521_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBTzCBsQIBADAMMQowCAYDVQQDDAF4MIGbMBAGByqGSM49AgEGBSuBBAAjA4GG
AAQAzoD0/Yrq04w6RIOBs8L9KlCI5bSGM9BsUBmhNd9rdKOjcSPWC+dJomcTg7O/
ai5Mvwn8SeapoqqCu//Aw5eGeJsBxHC8dYxrFBT5Y0NWuMUtdMVdAitWnkFhuwnx
qxJ0fqGJb3zJJwn0neCm3Xt1onw2Dm1Ff8moGJxyLmyMt4hKLpWgADAKBggqhkjO
PQQDAgOBjAAwgYgCQgFkdrvM4M0dt1D45NJlAMZ20kdSP9dPfa8YbMtmUo+grRWE
T2gh4/Ed65Gm1LKI2Zncp+z8bxKF6Jr28WJwbuOgfAJCAb11B2k14FJ642qc3ow9
qUuBR2/49lC0e0jv3iaouQvAQoOAbLNPSgVqS1nZGR0kphp/wGr4Soxf7J/Xltbb
reQI
-----END CERTIFICATE REQUEST-----
";

const NOW: OffsetDateTime = datetime!(2026-11-01 12:00:00.5 UTC);

fn td() -> TrustDomain {
    "example.org".parse().unwrap()
}

fn id(path: &str) -> SpiffeId {
    SpiffeId::new(td(), path).unwrap()
}

fn ca() -> Ca {
    Ca::generate(td(), NOW).unwrap()
}

fn issue(ca: &Ca, key: &SvidKey, id: &SpiffeId) -> SvidCertificate {
    let csr = key.csr_pem(id).unwrap();
    ca.sign_csr(&csr, id, DEFAULT_SVID_TTL, NOW).unwrap()
}

#[test]
fn generated_root_has_the_ca_profile() {
    let ca = ca();
    let (_, cert) = X509Certificate::from_der(ca.certificate()).unwrap();
    assert!(cert.is_ca());
    assert_eq!(cert.subject().to_string(), "CN=meshwork CA");
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans, &vec![GeneralName::URI("spiffe://example.org")]);
    let start = datetime!(2026-11-01 12:00:00 UTC);
    assert_eq!(
        cert.validity().not_before.to_datetime(),
        start - CLOCK_SKEW_ALLOWANCE
    );
    assert_eq!(
        cert.validity().not_after.to_datetime(),
        start + DEFAULT_CA_TTL
    );
    assert_eq!(ca.not_after(), start + DEFAULT_CA_TTL);
    assert_eq!(ca.bundle().roots(), std::slice::from_ref(ca.certificate()));
}

#[test]
fn pem_round_trip_keeps_issuing() {
    let ca = ca();
    let pem = ca.to_pem();
    let loaded = Ca::from_pem(&pem.cert_pem, &pem.key_pem).unwrap();
    assert_eq!(loaded.trust_domain(), ca.trust_domain());
    assert_eq!(loaded.certificate(), ca.certificate());
    assert_eq!(loaded.not_after(), ca.not_after());
    let key = SvidKey::generate().unwrap();
    let cert = issue(&loaded, &key, &id("/w"));
    let verified = crate::verify_svid(
        &ca.bundle(),
        cert.cert_chain(),
        unix(NOW),
        crate::PeerRole::Client,
    );
    assert_eq!(verified.unwrap(), id("/w"));
}

#[test]
fn from_pem_rejects_mismatched_or_non_ca_material() {
    let a = ca().to_pem();
    let b = ca().to_pem();
    assert!(matches!(
        Ca::from_pem(&a.cert_pem, &b.key_pem),
        Err(CaError::KeyMismatch)
    ));
    assert!(matches!(
        Ca::from_pem("", &a.key_pem),
        Err(CaError::CertPem(None))
    ));
    assert!(matches!(
        Ca::from_pem(&a.cert_pem, "nope"),
        Err(CaError::KeyPem(_))
    ));
    let ca = ca();
    let key = SvidKey::generate().unwrap();
    let leaf = issue(&ca, &key, &id("/w"));
    let key_pem = Svid::new(key, leaf.clone()).unwrap().key_pem();
    assert!(matches!(
        Ca::from_pem(&leaf.to_pem(), &key_pem),
        Err(CaError::NotACa)
    ));
}

#[test]
fn svid_has_the_x509_svid_profile() {
    let ca = ca();
    let key = SvidKey::generate().unwrap();
    let svid = issue(&ca, &key, &id("/ns/default/sa/billing"));
    assert_eq!(svid.id(), &id("/ns/default/sa/billing"));
    assert_eq!(svid.cert_chain().len(), 1);
    let (_, cert) = X509Certificate::from_der(&svid.cert_chain()[0]).unwrap();
    let bc = cert
        .basic_constraints()
        .unwrap()
        .expect("CA:false must be explicit");
    assert!(!bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert_eq!(ku.flags, 1, "digitalSignature only");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth && !eku.any && eku.other.is_empty());
    assert_eq!(cert.subject().to_string(), "O=meshwork");
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(
        sans,
        &vec![GeneralName::URI(
            "spiffe://example.org/ns/default/sa/billing"
        )]
    );
    let start = datetime!(2026-11-01 12:00:00 UTC);
    assert_eq!(svid.not_before(), start - CLOCK_SKEW_ALLOWANCE);
    assert_eq!(svid.not_after(), start + DEFAULT_SVID_TTL);
    assert_eq!(cert.validity().not_before.to_datetime(), svid.not_before());
    assert_eq!(cert.validity().not_after.to_datetime(), svid.not_after());
    assert!(cert.extensions().iter().any(|e| matches!(
        e.parsed_extension(),
        ParsedExtension::AuthorityKeyIdentifier(_)
    )));
}

#[test]
fn serials_are_random() {
    let ca = ca();
    let key = SvidKey::generate().unwrap();
    let a = issue(&ca, &key, &id("/w"));
    let b = issue(&ca, &key, &id("/w"));
    let serial = |c: &SvidCertificate| {
        X509Certificate::from_der(&c.cert_chain()[0])
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(serial(&a), serial(&b));
    assert!(serial(&a).len() <= 20);
}

#[test]
fn csr_content_is_ignored_except_the_key() {
    let ca = ca();
    let cert = ca
        .sign_csr(HOSTILE_P256_CSR, &id("/meek"), DEFAULT_SVID_TTL, NOW)
        .unwrap();
    let (_, parsed) = X509Certificate::from_der(&cert.cert_chain()[0]).unwrap();
    assert!(!parsed.is_ca());
    assert_eq!(parsed.subject().to_string(), "O=meshwork");
    let sans = &parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert_eq!(sans, &vec![GeneralName::URI("spiffe://example.org/meek")]);
    let ku = parsed.key_usage().unwrap().unwrap().value;
    assert!(!ku.key_cert_sign());
}

#[test]
fn accepts_p384_and_ed25519_keys() {
    let ca = ca();
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let key = KeyPair::generate_for(alg).unwrap();
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let cert = ca.sign_csr(&csr, &id("/w"), DEFAULT_SVID_TTL, NOW).unwrap();
        let (_, parsed) = X509Certificate::from_der(&cert.cert_chain()[0]).unwrap();
        assert_eq!(
            parsed.public_key().raw,
            key.subject_public_key_info().as_slice()
        );
    }
}

#[test]
fn rejects_bad_csrs() {
    let ca = ca();
    let err = ca
        .sign_csr(P521_CSR, &id("/w"), DEFAULT_SVID_TTL, NOW)
        .unwrap_err();
    assert!(
        matches!(&err, CaError::UnsupportedKey { algorithm } if algorithm.contains("1.3.132.0.35")),
        "{err:?}"
    );

    let csr = SvidKey::generate().unwrap().csr_pem(&id("/w")).unwrap();
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = ca
        .sign_csr_der(&der.into(), &id("/w"), DEFAULT_SVID_TTL, NOW)
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err:?}");

    assert!(matches!(
        ca.sign_csr("", &id("/w"), DEFAULT_SVID_TTL, NOW),
        Err(CaError::CsrEncoding)
    ));
    let junk = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    assert!(matches!(
        ca.sign_csr(junk, &id("/w"), DEFAULT_SVID_TTL, NOW),
        Err(CaError::CsrEncoding)
    ));
}

#[test]
fn rejects_bad_requests() {
    let ca = ca();
    let csr = SvidKey::generate().unwrap().csr_pem(&id("/w")).unwrap();
    let foreign: SpiffeId = "spiffe://other.org/w".parse().unwrap();
    assert!(matches!(
        ca.sign_csr(&csr, &foreign, DEFAULT_SVID_TTL, NOW),
        Err(CaError::ForeignTrustDomain { .. })
    ));
    assert!(matches!(
        ca.sign_csr(&csr, &id("/w"), Duration::ZERO, NOW),
        Err(CaError::BadTtl { .. })
    ));
    let late = NOW + DEFAULT_CA_TTL + Duration::seconds(1);
    assert!(matches!(
        ca.sign_csr(&csr, &id("/w"), DEFAULT_SVID_TTL, late),
        Err(CaError::CaNotValid { .. })
    ));
    let early = NOW - Duration::hours(1);
    assert!(matches!(
        ca.sign_csr(&csr, &id("/w"), DEFAULT_SVID_TTL, early),
        Err(CaError::CaNotValid { .. })
    ));
}

#[test]
fn svid_lifetime_is_capped_by_the_ca() {
    let ca = Ca::generate_with_ttl(td(), NOW, Duration::minutes(10)).unwrap();
    let csr = SvidKey::generate().unwrap().csr_pem(&id("/w")).unwrap();
    let cert = ca
        .sign_csr(&csr, &id("/w"), Duration::hours(5), NOW)
        .unwrap();
    assert_eq!(cert.not_after(), ca.not_after());
}

fn unix(t: OffsetDateTime) -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        t.unix_timestamp() as u64
    ))
}

#[test]
fn ttls_past_the_calendar_are_errors_or_capped_never_panics() {
    // `now + ttl` past year 9999 cannot be represented: generating a root says so...
    for ttl in [Duration::MAX, Duration::days(3_000_000)] {
        assert!(matches!(
            Ca::generate_with_ttl(td(), NOW, ttl),
            Err(CaError::TtlOutOfRange { .. })
        ));
    }
    // ...and an SVID is capped at the CA's notAfter, like any TTL that outlives the CA.
    let ca = ca();
    let csr = SvidKey::generate().unwrap().csr_pem(&id("/w")).unwrap();
    let cert = ca.sign_csr(&csr, &id("/w"), Duration::MAX, NOW).unwrap();
    assert_eq!(cert.not_after(), ca.not_after());
}
