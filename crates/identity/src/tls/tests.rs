//! Every config function over real handshakes, in memory (no sockets): protocols
//! as configured, the peer policy enforced on both sides, the anonymous client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, Connection, ProtocolVersion, ServerConnection};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::{Ca, PeerRole, SpiffeId, Svid, SvidKey, VerifyError, peer_spiffe_id};

const SERVER: &str = "/ns/default/sa/server";
const OTHER: &str = "/ns/default/sa/other";
const CLIENT: &str = "/ns/default/sa/client";

fn new_ca() -> Ca {
    // The handshake checks validity against rustls' clock, so issue around it.
    Ca::generate("example.org".parse().unwrap(), OffsetDateTime::now_utc()).unwrap()
}

fn id(ca: &Ca, path: &str) -> SpiffeId {
    SpiffeId::new(ca.trust_domain().clone(), path).unwrap()
}

fn store(ca: &Ca, path: &str) -> Arc<SvidStore> {
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_pem(&id(ca, path)).unwrap();
    let now = OffsetDateTime::now_utc();
    let cert = ca
        .sign_csr(&csr, &id(ca, path), Duration::hours(1), now)
        .unwrap();
    Arc::new(SvidStore::new(Svid::new(key, cert).unwrap(), ca.bundle()))
}

fn any() -> ClientAuth {
    ClientAuth::Required(PeerPolicy::AnyInTrustDomain)
}

/// Moves everything `from` wants to send into `to`.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).unwrap();
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// Runs a handshake to completion; the first error either side raised otherwise.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(Connection, Connection), rustls::Error> {
    let name = ServerName::try_from("server.invalid").unwrap();
    let mut c = Connection::from(ClientConnection::new(client, name).unwrap());
    let mut s = Connection::from(ServerConnection::new(server).unwrap());
    for _ in 0..10 {
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
        pump(&mut c, &mut s)?;
        pump(&mut s, &mut c)?;
    }
    panic!("handshake did not finish in 10 flights");
}

fn reason(result: Result<(Connection, Connection), rustls::Error>) -> VerifyError {
    let Err(err) = result else {
        panic!("handshake should fail")
    };
    VerifyError::from_tls_error(&err).unwrap_or_else(|| panic!("not a verifier error: {err:?}"))
}

fn peer(conn: &Connection) -> SpiffeId {
    peer_spiffe_id(conn.peer_certificates().unwrap()).unwrap()
}

#[test]
fn mesh_defaults_negotiate_tls13_and_h2_with_both_sides_proven() {
    let ca = new_ca();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let server = server_config(&s, any(), Protocols::default());
    let client = client_config(
        &c,
        PeerPolicy::Exactly(id(&ca, SERVER)),
        Protocols::default(),
    );
    assert_eq!(
        server.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(client.alpn_protocols, server.alpn_protocols);
    let (c, s) = handshake(client, server).unwrap();
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(peer(&c), id(&ca, SERVER));
    assert_eq!(peer(&s), id(&ca, CLIENT));
}

#[test]
fn http1_alpn_offers_and_selects_only_http1() {
    let ca = new_ca();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let server = server_config(&s, any(), Protocols::default());
    let client = client_config(&c, PeerPolicy::Exactly(id(&ca, SERVER)), Protocols::HTTP1);
    assert_eq!(client.alpn_protocols, [b"http/1.1".to_vec()]);
    let (c, _) = handshake(client, server).unwrap();
    assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn the_mesh_inbound_serves_opaque_and_http_by_what_the_client_offers() {
    let ca = new_ca();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let server = server_config(&s, any(), Protocols::MESH_INBOUND);
    let expected = PeerPolicy::Exactly(id(&ca, SERVER));
    let opaque = client_config(&c, expected.clone(), Protocols::OPAQUE);
    assert_eq!(opaque.alpn_protocols, [crate::OPAQUE_ALPN.to_vec()]);
    let (conn, _) = handshake(opaque, Arc::clone(&server)).unwrap();
    assert_eq!(conn.alpn_protocol(), Some(crate::OPAQUE_ALPN));
    let http = client_config(&c, expected, Protocols::default());
    let (conn, _) = handshake(http, server).unwrap();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
}

/// A client that speaks only TLS 1.2 (no meshwork config does; peers may).
fn tls12_client(c: &Arc<SvidStore>, expected: SpiffeId) -> Arc<ClientConfig> {
    let verifier = SpiffeServerCertVerifier::new(Arc::clone(c), PeerPolicy::Exactly(expected));
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(SvidResolver::new(Arc::clone(c))));
    Arc::new(config)
}

#[test]
fn tls12_is_accepted_by_default_and_refused_by_tls13_only() {
    let ca = new_ca();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let default = server_config(&s, any(), Protocols::default());
    let (conn, _) = handshake(tls12_client(&c, id(&ca, SERVER)), default).unwrap();
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_2));

    let strict = Protocols {
        versions: TlsVersions::Tls13Only,
        ..Protocols::default()
    };
    let server = server_config(&s, any(), strict);
    let err = handshake(tls12_client(&c, id(&ca, SERVER)), server).err();
    assert!(
        matches!(err, Some(rustls::Error::PeerIncompatible(_))),
        "{err:?}"
    );
    let client = client_config(&c, PeerPolicy::Exactly(id(&ca, SERVER)), strict);
    let server = server_config(&s, any(), strict);
    let (conn, _) = handshake(client, server).unwrap();
    assert_eq!(conn.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn client_exactly_rejects_another_server_of_the_trust_domain() {
    let ca = new_ca();
    let (s, c) = (store(&ca, OTHER), store(&ca, CLIENT));
    let client = client_config(
        &c,
        PeerPolicy::Exactly(id(&ca, SERVER)),
        Protocols::default(),
    );
    let out = handshake(client, server_config(&s, any(), Protocols::default()));
    assert_eq!(
        reason(out),
        VerifyError::ServerIdentityMismatch {
            expected: id(&ca, SERVER),
            found: id(&ca, OTHER),
        }
    );
}

#[test]
fn client_one_of_accepts_members_only_and_any_accepts_all() {
    let ca = new_ca();
    let c = store(&ca, CLIENT);
    let set = PeerPolicy::OneOf(BTreeSet::from([id(&ca, SERVER), id(&ca, CLIENT)]));
    let server = |path| server_config(&store(&ca, path), any(), Protocols::default());
    handshake(
        client_config(&c, set.clone(), Protocols::default()),
        server(SERVER),
    )
    .unwrap();
    let out = handshake(
        client_config(&c, set.clone(), Protocols::default()),
        server(OTHER),
    );
    assert_eq!(
        reason(out),
        VerifyError::PeerNotAllowed {
            role: PeerRole::Server,
            found: id(&ca, OTHER),
            policy: Box::new(set),
        }
    );
    let anyone = client_config(&c, PeerPolicy::AnyInTrustDomain, Protocols::default());
    handshake(anyone, server(OTHER)).unwrap();
}

#[test]
fn server_policy_rejects_a_client_outside_it() {
    let ca = new_ca();
    let s = store(&ca, SERVER);
    let only = PeerPolicy::Exactly(id(&ca, CLIENT));
    let server = server_config(&s, ClientAuth::Required(only.clone()), Protocols::default());
    let client = |path| {
        client_config(
            &store(&ca, path),
            PeerPolicy::Exactly(id(&ca, SERVER)),
            Protocols::default(),
        )
    };
    handshake(client(CLIENT), Arc::clone(&server)).unwrap();
    let out = handshake(client(OTHER), server);
    assert_eq!(
        reason(out),
        VerifyError::PeerNotAllowed {
            role: PeerRole::Client,
            found: id(&ca, OTHER),
            policy: Box::new(only),
        }
    );
}

#[test]
fn required_client_auth_refuses_an_anonymous_client_and_optional_admits_it() {
    let ca = new_ca();
    let s = store(&ca, SERVER);
    let anonymous = || {
        anonymous_client_config(
            ca.bundle(),
            PeerPolicy::Exactly(id(&ca, SERVER)),
            Protocols::default(),
        )
    };
    let required = server_config(&s, any(), Protocols::default());
    assert_eq!(
        reason(handshake(anonymous(), required)),
        VerifyError::NoCertificate
    );

    let optional = ClientAuth::DangerOptional(PeerPolicy::AnyInTrustDomain);
    let server = server_config(&s, optional, Protocols::default());
    let (c, s_conn) = handshake(anonymous(), server).unwrap();
    assert_eq!(peer(&c), id(&ca, SERVER));
    assert!(s_conn.peer_certificates().is_none());
}

#[test]
fn optional_client_auth_verifies_a_presented_certificate() {
    let ca = new_ca();
    let foreign = new_ca();
    let s = store(&ca, SERVER);
    let optional = ClientAuth::DangerOptional(PeerPolicy::AnyInTrustDomain);
    let server = server_config(&s, optional, Protocols::default());
    // Trusts our server, but presents an SVID of another CA.
    let intruder = store(&foreign, CLIENT);
    intruder.set_bundle(ca.bundle());
    let client = client_config(
        &intruder,
        PeerPolicy::Exactly(id(&ca, SERVER)),
        Protocols::default(),
    );
    assert_eq!(
        reason(handshake(client, server)),
        VerifyError::UnknownIssuer
    );
}

#[test]
fn anonymous_client_trusts_only_its_pinned_bundle() {
    let ca = new_ca();
    let rolled = new_ca();
    let s = store(&rolled, SERVER);
    let client = anonymous_client_config(
        ca.bundle(),
        PeerPolicy::Exactly(id(&ca, SERVER)),
        Protocols::HTTP1,
    );
    assert_eq!(client.alpn_protocols, [b"http/1.1".to_vec()]);
    let optional = ClientAuth::DangerOptional(PeerPolicy::AnyInTrustDomain);
    let out = handshake(client, server_config(&s, optional, Protocols::default()));
    assert_eq!(reason(out), VerifyError::UnknownIssuer);
}

#[test]
fn no_config_resumes_sessions() {
    let ca = new_ca();
    let (s, c) = (store(&ca, SERVER), store(&ca, CLIENT));
    let server = server_config(&s, any(), Protocols::default());
    assert_eq!(server.send_tls13_tickets, 0);
    assert!(!server.session_storage.can_cache());
    let client = client_config(
        &c,
        PeerPolicy::Exactly(id(&ca, SERVER)),
        Protocols::default(),
    );
    for _ in 0..2 {
        let (conn, _) = handshake(Arc::clone(&client), Arc::clone(&server)).unwrap();
        assert_eq!(conn.handshake_kind(), Some(rustls::HandshakeKind::Full));
    }
}
