#![allow(clippy::unwrap_used, clippy::expect_used)]

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::{CLOCK_SKEW_ALLOWANCE, Ca, SvidKey};

const NOW: OffsetDateTime = datetime!(2026-11-01 12:00:00 UTC);

fn at(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_secs(t.unix_timestamp() as u64))
}

fn issued(ca: &Ca, path: &str) -> Vec<CertificateDer<'static>> {
    let id = SpiffeId::new(ca.trust_domain().clone(), path).unwrap();
    let csr = SvidKey::generate().unwrap().csr_pem(&id).unwrap();
    let cert = ca.sign_csr(&csr, &id, Duration::hours(1), NOW).unwrap();
    cert.cert_chain().to_vec()
}

#[test]
fn validity_boundaries_are_inclusive() {
    let ca = Ca::generate("example.org".parse().unwrap(), NOW - Duration::days(1)).unwrap();
    let chain = issued(&ca, "/w");
    let bundle = ca.bundle();
    let verify = |t| verify_svid(&bundle, &chain, at(t), PeerRole::Client);
    let first = NOW - CLOCK_SKEW_ALLOWANCE;
    let last = NOW + Duration::hours(1);
    assert!(matches!(
        verify(first - Duration::seconds(1)),
        Err(VerifyError::NotYetValid { .. })
    ));
    assert_eq!(verify(first).unwrap().as_str(), "spiffe://example.org/w");
    assert_eq!(verify(last).unwrap().as_str(), "spiffe://example.org/w");
    assert_eq!(
        verify(last + Duration::seconds(1)),
        Err(VerifyError::Expired {
            now: (last + Duration::seconds(1)).unix_timestamp() as u64,
            not_after: last.unix_timestamp() as u64,
        })
    );
}

#[test]
fn both_roles_accept_an_issued_svid() {
    let ca = Ca::generate("example.org".parse().unwrap(), NOW - Duration::days(1)).unwrap();
    let chain = issued(&ca, "/w");
    for role in [PeerRole::Client, PeerRole::Server] {
        assert!(verify_svid(&ca.bundle(), &chain, at(NOW), role).is_ok());
    }
}

#[test]
fn garbage_and_empty_input_are_rejected_not_panicked_on() {
    let ca = Ca::generate("example.org".parse().unwrap(), NOW).unwrap();
    assert_eq!(
        verify_svid(&ca.bundle(), &[], at(NOW), PeerRole::Client),
        Err(VerifyError::NoCertificate)
    );
    assert_eq!(peer_spiffe_id(&[]), Err(VerifyError::NoCertificate));
    let junk = [CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01])];
    assert_eq!(
        verify_svid(&ca.bundle(), &junk, at(NOW), PeerRole::Client),
        Err(VerifyError::BadEncoding)
    );
    assert_eq!(peer_spiffe_id(&junk), Err(VerifyError::BadEncoding));
    // A CA certificate is not an SVID, even with a valid spiffe:// URI SAN.
    let root = [ca.certificate().clone()];
    assert_eq!(
        verify_svid(&ca.bundle(), &root, at(NOW), PeerRole::Server),
        Err(VerifyError::LeafIsCa)
    );
}

#[test]
fn every_reason_survives_the_trip_through_rustls() {
    let id: SpiffeId = "spiffe://example.org/a".parse().unwrap();
    let reasons = vec![
        VerifyError::NoCertificate,
        VerifyError::BadEncoding,
        VerifyError::NoUriSan,
        VerifyError::MultipleUriSans { count: 3 },
        VerifyError::MalformedSpiffeId {
            uri: "spiffe://x/".into(),
            source: SpiffeIdError::TrailingSlash,
        },
        VerifyError::LeafIsCa,
        VerifyError::WrongTrustDomain {
            expected: "example.org".parse().unwrap(),
            found: "spiffe://other.org/a".parse().unwrap(),
        },
        VerifyError::Expired {
            now: 20,
            not_after: 10,
        },
        VerifyError::NotYetValid {
            now: 10,
            not_before: 20,
        },
        VerifyError::UnknownIssuer,
        VerifyError::InvalidChain { reason: "x".into() },
        VerifyError::ServerIdentityMismatch {
            expected: id.clone(),
            found: "spiffe://example.org/b".parse().unwrap(),
        },
    ];
    for reason in reasons {
        let tls: rustls::Error = reason.clone().into();
        assert_eq!(VerifyError::from_tls_error(&tls), Some(reason));
    }
    // Standard variants stay standard, so peers get precise alerts.
    let tls: rustls::Error = VerifyError::UnknownIssuer.into();
    assert_eq!(
        tls,
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
    );
    assert_eq!(
        VerifyError::from_tls_error(&rustls::Error::DecryptError),
        None
    );
}
