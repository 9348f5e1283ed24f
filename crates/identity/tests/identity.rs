//! Real mTLS handshakes over loopback TCP between configs built by this crate,
//! and against hand-made bad certificates (built with rcgen here).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::sync::Arc;

use identity::{
    Ca, ClientAuth, PeerPolicy, Protocols, SpiffeClientCertVerifier, SpiffeId,
    SpiffeServerCertVerifier, Svid, SvidKey, SvidResolver, SvidStore, TrustDomain, VerifyError,
    peer_spiffe_id,
};
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, CommonState, HandshakeKind, ProtocolVersion, ServerConfig};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const SERVER: &str = "spiffe://example.org/ns/default/sa/server";
const CLIENT: &str = "spiffe://example.org/ns/default/sa/client";

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The sidecar's server config: mTLS, any client of the trust domain.
fn server_config(s: &Arc<SvidStore>) -> Arc<ServerConfig> {
    let clients = ClientAuth::Required(PeerPolicy::AnyInTrustDomain);
    identity::server_config(s, clients, Protocols::default())
}

/// The sidecar's client config: the server must be exactly `expected`.
fn client_config(c: &Arc<SvidStore>, expected: SpiffeId) -> Arc<ClientConfig> {
    identity::client_config(c, PeerPolicy::Exactly(expected), Protocols::default())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes a key where it is used, sends only the CSR, pairs the answer with the key.
fn svid(ca: &Ca, spiffe_id: &str) -> Svid {
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_pem(&id(spiffe_id)).unwrap();
    let cert = ca
        .sign_csr(&csr, &id(spiffe_id), Duration::hours(1), now())
        .unwrap();
    Svid::new(key, cert).unwrap()
}

fn store(ca: &Ca, spiffe_id: &str) -> Arc<SvidStore> {
    Arc::new(SvidStore::new(svid(ca, spiffe_id), ca.bundle()))
}

/// What one side of a completed handshake saw.
#[derive(Debug)]
struct Seen {
    peer: SpiffeId,
    alpn: Option<Vec<u8>>,
    version: ProtocolVersion,
    kind: HandshakeKind,
}

fn seen(conn: &CommonState) -> io::Result<Seen> {
    let peer =
        peer_spiffe_id(conn.peer_certificates().unwrap_or_default()).map_err(io::Error::other)?;
    Ok(Seen {
        peer,
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        version: conn.protocol_version().unwrap(),
        kind: conn.handshake_kind().unwrap(),
    })
}

/// What each side of one handshake saw, or its error.
struct Outcome {
    server: io::Result<Seen>,
    client: io::Result<Seen>,
}

impl Outcome {
    fn server_reason(&self) -> VerifyError {
        reason(
            self.server
                .as_ref()
                .expect_err("server should have rejected"),
        )
    }

    fn client_reason(&self) -> VerifyError {
        reason(
            self.client
                .as_ref()
                .expect_err("client should have rejected"),
        )
    }
}

/// The verifier's reason, recovered from the io::Error tokio-rustls returns.
fn reason(err: &io::Error) -> VerifyError {
    let tls = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("not a rustls error: {err:?}"));
    VerifyError::from_tls_error(tls).unwrap_or_else(|| panic!("not a verifier rejection: {tls:?}"))
}

/// One real handshake over loopback TCP. After it, the server sends "ok" so the
/// client also learns of a late (TLS 1.3 client-cert) rejection.
async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = TlsAcceptor::from(server).accept(tcp).await?;
        let seen = seen(tls.get_ref().1)?;
        tls.write_all(b"ok").await?;
        tls.shutdown().await?;
        Ok::<_, io::Error>(seen)
    });
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await?;
        // Not used for verification; only the SPIFFE ID is checked.
        let name = ServerName::try_from("workload.invalid").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let mut reply = Vec::new();
        tls.read_to_end(&mut reply).await?;
        assert_eq!(reply, b"ok");
        seen(tls.get_ref().1)
    };
    let client = client_side.await;
    let server = server_side.await.unwrap();
    Outcome { server, client }
}

#[tokio::test]
async fn happy_path_both_sides_learn_each_other() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let out = handshake(server_config(&s), client_config(&c, id(SERVER))).await;
    let server_saw = out.server.unwrap();
    assert_eq!(server_saw.peer, id(CLIENT));
    assert_eq!(server_saw.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(server_saw.version, ProtocolVersion::TLSv1_3);
    let client_saw = out.client.unwrap();
    assert_eq!(client_saw.peer, id(SERVER));
    assert_eq!(client_saw.alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn tls12_client_is_served_too() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let mut tls12 = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerCertVerifier::new(
            c.clone(),
            PeerPolicy::Exactly(id(SERVER)),
        )))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(c)));
    tls12.alpn_protocols = vec![b"http/1.1".to_vec()];
    let out = handshake(server_config(&s), Arc::new(tls12)).await;
    let server_saw = out.server.unwrap();
    assert_eq!(server_saw.peer, id(CLIENT));
    assert_eq!(server_saw.version, ProtocolVersion::TLSv1_2);
    assert_eq!(server_saw.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(out.client.unwrap().peer, id(SERVER));
}

/// How a bad leaf is built: everything an attacker or a broken CA could get wrong.
struct Leaf {
    uris: Vec<&'static str>,
    dns: Option<&'static str>,
    valid: (Duration, Duration),
    is_ca: bool,
    self_signed: bool,
}

impl Leaf {
    fn new(uris: &[&'static str]) -> Leaf {
        Leaf {
            uris: uris.to_vec(),
            dns: None,
            valid: (Duration::minutes(-5), Duration::hours(1)),
            is_ca: false,
            self_signed: false,
        }
    }

    fn build(&self, ca: &Ca) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = self
            .uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().unwrap()))
            .collect();
        if let Some(dns) = self.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.try_into().unwrap()));
        }
        params.is_ca = if self.is_ca {
            IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let t = now();
        (params.not_before, params.not_after) = (t + self.valid.0, t + self.valid.1);
        let cert = if self.self_signed {
            params.self_signed(&key).unwrap()
        } else {
            let pem = ca.to_pem();
            let issuer =
                Issuer::from_ca_cert_pem(&pem.cert_pem, KeyPair::from_pem(&pem.key_pem).unwrap())
                    .unwrap();
            params.signed_by(&key, &issuer).unwrap()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }
}

/// A client presenting `leaf` (and verifying the server properly).
fn bad_client(
    c: &Arc<SvidStore>,
    leaf: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerCertVerifier::new(
            c.clone(),
            PeerPolicy::Exactly(id(SERVER)),
        )))
        .with_client_auth_cert(leaf.0, leaf.1)
        .unwrap();
    Arc::new(config)
}

/// A server presenting `leaf` (and verifying the client properly).
fn bad_server(
    s: &Arc<SvidStore>,
    leaf: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(SpiffeClientCertVerifier::new(
            s.clone(),
            ClientAuth::Required(PeerPolicy::AnyInTrustDomain),
        )))
        .with_single_cert(leaf.0, leaf.1)
        .unwrap();
    Arc::new(config)
}

/// Presents `leaf` once as a client and once as a server; both verifiers must
/// reject it for `want`.
async fn rejected_both_ways(leaf: Leaf, want: impl Fn(&VerifyError) -> bool) {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));

    let out = handshake(server_config(&s), bad_client(&c, leaf.build(&ca))).await;
    let got = out.server_reason();
    assert!(want(&got), "server-side rejection of a bad client: {got:?}");
    assert!(
        out.client.is_err(),
        "client must not see a working connection"
    );

    let out = handshake(
        bad_server(&s, leaf.build(&ca)),
        client_config(&c, id(SERVER)),
    )
    .await;
    let got = out.client_reason();
    assert!(want(&got), "client-side rejection of a bad server: {got:?}");
    assert!(
        out.server.is_err(),
        "server must not see a working connection"
    );
}

#[tokio::test]
async fn rejects_wrong_trust_domain_signed_by_our_ca() {
    let leaf = Leaf::new(&["spiffe://other.org/ns/default/sa/server"]);
    rejected_both_ways(leaf, |e| {
        matches!(e, VerifyError::WrongTrustDomain { expected, found }
            if expected.as_str() == "example.org" && found.as_str() == "spiffe://other.org/ns/default/sa/server")
    })
    .await;
}

#[tokio::test]
async fn rejects_wrong_trust_domain_from_a_foreign_ca() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let foreign = Ca::generate(td("other.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let intruder = Arc::new(SvidStore::new(
        svid(&foreign, "spiffe://other.org/ns/default/sa/server"),
        ca.bundle(),
    ));
    let out = handshake(server_config(&intruder), client_config(&c, id(SERVER))).await;
    assert!(matches!(
        out.client_reason(),
        VerifyError::WrongTrustDomain { .. }
    ));
    let intruder = Arc::new(SvidStore::new(
        svid(&foreign, "spiffe://other.org/c"),
        ca.bundle(),
    ));
    let out = handshake(server_config(&s), client_config(&intruder, id(SERVER))).await;
    assert!(matches!(
        out.server_reason(),
        VerifyError::WrongTrustDomain { .. }
    ));
}

#[tokio::test]
async fn rejects_expired() {
    let mut leaf = Leaf::new(&[SERVER]);
    leaf.valid = (Duration::hours(-2), Duration::hours(-1));
    rejected_both_ways(
        leaf,
        |e| matches!(e, VerifyError::Expired { now, not_after } if not_after < now),
    )
    .await;
}

#[tokio::test]
async fn rejects_not_yet_valid() {
    let mut leaf = Leaf::new(&[SERVER]);
    leaf.valid = (Duration::hours(1), Duration::hours(2));
    rejected_both_ways(
        leaf,
        |e| matches!(e, VerifyError::NotYetValid { now, not_before } if not_before > now),
    )
    .await;
}

#[tokio::test]
async fn rejects_no_uri_san() {
    let mut leaf = Leaf::new(&[]);
    leaf.dns = Some("server.example.org");
    rejected_both_ways(leaf, |e| matches!(e, VerifyError::NoUriSan)).await;
}

#[tokio::test]
async fn rejects_two_uri_sans() {
    let leaf = Leaf::new(&[SERVER, CLIENT]);
    rejected_both_ways(leaf, |e| {
        matches!(e, VerifyError::MultipleUriSans { count: 2 })
    })
    .await;
}

#[tokio::test]
async fn rejects_malformed_spiffe_id() {
    let leaf = Leaf::new(&["spiffe://example.org/ns/../sa/server"]);
    rejected_both_ways(leaf, |e| {
        matches!(
            e,
            VerifyError::MalformedSpiffeId {
                source: identity::SpiffeIdError::DotSegment { .. },
                ..
            }
        )
    })
    .await;
}

#[tokio::test]
async fn rejects_self_signed_leaf() {
    let mut leaf = Leaf::new(&[SERVER]);
    leaf.self_signed = true;
    rejected_both_ways(leaf, |e| matches!(e, VerifyError::UnknownIssuer)).await;
}

#[tokio::test]
async fn rejects_ca_certificate_as_leaf() {
    let mut leaf = Leaf::new(&[SERVER]);
    leaf.is_ca = true;
    rejected_both_ways(leaf, |e| matches!(e, VerifyError::LeafIsCa)).await;
}

#[tokio::test]
async fn rejects_server_identity_mismatch() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (
        store(&ca, "spiffe://example.org/ns/default/sa/impostor"),
        store(&ca, CLIENT),
    );
    let out = handshake(server_config(&s), client_config(&c, id(SERVER))).await;
    match out.client_reason() {
        VerifyError::ServerIdentityMismatch { expected, found } => {
            assert_eq!(expected, id(SERVER));
            assert_eq!(
                found.as_str(),
                "spiffe://example.org/ns/default/sa/impostor"
            );
        }
        other => panic!("unexpected rejection {other:?}"),
    }
    assert!(out.server.is_err());
}

#[tokio::test]
async fn rejects_client_without_certificate() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let anonymous = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerCertVerifier::new(
            c,
            PeerPolicy::Exactly(id(SERVER)),
        )))
        .with_no_client_auth();
    let out = handshake(server_config(&s), Arc::new(anonymous)).await;
    assert_eq!(out.server_reason(), VerifyError::NoCertificate);
    assert!(out.client.is_err());
}

#[tokio::test]
async fn rotation_takes_effect_on_the_next_handshake() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let (server, client) = (server_config(&s), client_config(&c, id(SERVER)));
    let first = s.svid();
    assert!(
        handshake(server.clone(), client.clone())
            .await
            .client
            .is_ok()
    );

    let next = svid(&ca, SERVER);
    let next_leaf = next.cert_chain()[0].clone();
    assert_ne!(next_leaf, first.cert_chain()[0]);
    s.rotate(next);
    assert_eq!(s.svid().cert_chain()[0], next_leaf);
    // Same configs, no rebuild: the resolver reads the store per handshake.
    let out = handshake(server.clone(), client.clone()).await;
    let client_saw = out.client.unwrap();
    assert_eq!(client_saw.peer, id(SERVER));
    // Full handshakes only: a resumed session would skip verifying the new SVID.
    assert_eq!(client_saw.kind, HandshakeKind::Full);
    assert_eq!(out.server.unwrap().kind, HandshakeKind::Full);
}

#[tokio::test]
async fn bundle_swap_rolls_the_ca_without_new_configs() {
    let old = Ca::generate(td("example.org"), now()).unwrap();
    let new = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&old, SERVER), store(&old, CLIENT));
    let (server, client) = (server_config(&s), client_config(&c, id(SERVER)));

    // The server moves to the new CA alone: the old-CA client is now unknown.
    s.set_bundle(new.bundle());
    s.rotate(svid(&new, SERVER));
    let out = handshake(server.clone(), client.clone()).await;
    assert_eq!(out.client_reason(), VerifyError::UnknownIssuer);

    // Once the client follows, the very same configs work again.
    c.set_bundle(new.bundle());
    c.rotate(svid(&new, CLIENT));
    let out = handshake(server, client).await;
    assert_eq!(out.server.unwrap().peer, id(CLIENT));
    assert_eq!(out.client.unwrap().peer, id(SERVER));
}

#[tokio::test]
async fn handshakes_never_fail_while_rotating() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let (server, client) = (server_config(&s), client_config(&c, id(SERVER)));
    let fresh: Vec<(Svid, Svid)> = (0..10)
        .map(|_| (svid(&ca, SERVER), svid(&ca, CLIENT)))
        .collect();
    let rotator = tokio::spawn(async move {
        for (server_svid, client_svid) in fresh {
            s.rotate(server_svid);
            c.rotate(client_svid);
            tokio::task::yield_now().await;
        }
    });
    for _ in 0..20 {
        let out = handshake(server.clone(), client.clone()).await;
        assert_eq!(out.server.unwrap().peer, id(CLIENT));
        assert_eq!(out.client.unwrap().peer, id(SERVER));
    }
    rotator.await.unwrap();
}

#[test]
fn svid_pem_round_trip_presents_the_same_identity() {
    let ca = Ca::generate(td("example.org"), now()).unwrap();
    let original = svid(&ca, SERVER);
    let loaded = Svid::from_pem(&original.certificate().to_pem(), &original.key_pem()).unwrap();
    assert_eq!(loaded.id(), original.id());
    assert_eq!(loaded.cert_chain(), original.cert_chain());
    assert_eq!(loaded.not_after(), original.not_after());
    let other_key = SvidKey::generate().unwrap();
    assert!(matches!(
        Svid::new(other_key, original.certificate().clone()),
        Err(identity::SvidError::KeyMismatch)
    ));
}
