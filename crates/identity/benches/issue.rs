//! SVID issuance throughput: a PEM CSR in, a signed X.509-SVID out (what the
//! control plane does per workload renewal), against the baseline of building
//! and signing the same leaf for an already-parsed key (no CSR handling).
//!
//! Run: `cargo bench -p meshwork-identity --bench issue`. Criterion reports
//! elements/s, i.e. SVIDs per second on one core.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use identity::{Ca, DEFAULT_SVID_TTL, SpiffeId, SvidKey, TrustDomain};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

fn issuance(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let td: TrustDomain = "example.org".parse().unwrap();
    let ca = Ca::generate(td.clone(), now).unwrap();
    let id = SpiffeId::new(td, "/ns/default/sa/billing").unwrap();
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_pem(&id).unwrap();

    let mut group = c.benchmark_group("issue");
    group.throughput(Throughput::Elements(1));
    group.bench_function("csr_to_svid", |b| {
        b.iter(|| ca.sign_csr(&csr, &id, DEFAULT_SVID_TTL, now).unwrap());
    });

    // Baseline: the same leaf profile signed by the same CA key, for a key that
    // needs no CSR decoding or CSR signature check.
    let pem = ca.to_pem();
    let issuer =
        Issuer::from_ca_cert_pem(&pem.cert_pem, KeyPair::from_pem(&pem.key_pem).unwrap()).unwrap();
    let subject_key = KeyPair::generate().unwrap();
    group.bench_function("sign_only", |b| {
        b.iter(|| {
            let mut params = CertificateParams::default();
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::OrganizationName, "meshwork");
            params.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.not_before = now;
            params.not_after = now + DEFAULT_SVID_TTL;
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&subject_key, &issuer).unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, issuance);
criterion_main!(benches);
