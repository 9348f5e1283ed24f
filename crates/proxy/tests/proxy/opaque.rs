//! Opaque TCP between real sidecars: `CONNECT billing:PORT` on a caller's outbound listener
//! (any port but 80/443) becomes an mTLS connection offering only ALPN `meshwork.opaque`,
//! whose preamble names the port; billing's sidecar authorizes caller × port with the
//! `AuthorizationPolicy` TCP rules and splices to its app's port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use api::contract::Snapshot;
use identity::{ClientAuth, OPAQUE_ALPN, PeerPolicy, Protocols, SvidStore};
use proxy::{ControlSource, Direction, Label, OpaqueOutcome, Protocol, ProxyMetrics};
use rustls_pki_types::ServerName;
use testkit::{EchoServer, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::HANG_GUARD;
use super::mesh::{BILLING, STORE, closed_port, route};
use super::mesh_tunnel::connect;

const REPORTING: &str = "/ns/default/sa/reporting";

/// Opaque and inbound connection events of one sidecar.
#[derive(Default)]
struct Events {
    opaque: Mutex<Vec<(Direction, &'static str, OpaqueOutcome)>>,
    inbound: Mutex<Vec<Protocol>>,
}

impl ProxyMetrics for Events {
    fn opaque_connection(&self, direction: Direction, service: Label, outcome: OpaqueOutcome) {
        let event = (direction, service.as_str(), outcome);
        self.opaque.lock().unwrap().push(event);
    }

    fn inbound_connection(&self, _peer: &identity::SpiffeId, protocol: Protocol) {
        self.inbound.lock().unwrap().push(protocol);
    }
}

impl Events {
    fn opaque(&self) -> Vec<(Direction, &'static str, OpaqueOutcome)> {
        self.opaque.lock().unwrap().clone()
    }
}

/// A TCP echo app on its own port (the "database").
async fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

struct Fixture {
    ca: Arc<TestCa>,
    billing_inbound: SocketAddr,
    store_outbound: SocketAddr,
    reporting_outbound: SocketAddr,
    billing: Arc<Events>,
    /// billing's opaque port (a TCP echo) and its HTTP app's port.
    db: SocketAddr,
    http: SocketAddr,
    _http_app: EchoServer,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// billing may be reached by store on its database port and its HTTP port (which is
/// never spliced anyway); reporting on nothing.
fn policies(db: u16, http: u16) -> policy::PolicySet {
    serde_json::from_value(serde_json::json!({"authorization": {"default/store-db": {
        "targetService": "billing", "action": "ALLOW",
        "rules": [{"from": [{"spiffeId": "spiffe://meshwork.local/ns/default/sa/store"}],
                   "to": [{"ports": [db, http]}]}]}}}))
    .unwrap()
}

/// Starts the sidecar of workload `path` (its name is the last segment) in front of `app`,
/// with a snapshot of `services` and `policies`, serving until `shutdown`.
pub async fn sidecar(
    ca: &TestCa,
    path: &str,
    services: Vec<(String, api::contract::ServiceRoute)>,
    (app, policies): (SocketAddr, &policy::PolicySet),
    events: &Arc<impl ProxyMetrics>,
    shutdown: &CancellationToken,
) -> proxy::ReadyInfo {
    sidecar_with(
        ca,
        path,
        services,
        (app, policies),
        events,
        shutdown,
        |_| {},
    )
    .await
}

/// As [`sidecar`], with the config changed by `configure`.
pub async fn sidecar_with(
    ca: &TestCa,
    path: &str,
    services: Vec<(String, api::contract::ServiceRoute)>,
    (app, policies): (SocketAddr, &policy::PolicySet),
    events: &Arc<impl ProxyMetrics>,
    shutdown: &CancellationToken,
    configure: impl FnOnce(&mut proxy::ProxyConfig),
) -> proxy::ReadyInfo {
    let source = ControlSource::Static {
        svid: ca.svid(path).unwrap(),
        bundle: ca.bundle(),
        snapshot: Snapshot {
            version: 1,
            services: services.into_iter().collect(),
            policy_hash: policies.hash().to_string(),
            policies: policies.clone(),
        },
    };
    let name = path.rsplit('/').next().unwrap();
    let mut config = proxy::ProxyConfig::new(name, source, app);
    configure(&mut config);
    let metrics = Arc::clone(events) as Arc<dyn ProxyMetrics>;
    let proxy = proxy::Proxy::start_with_metrics(config, metrics)
        .await
        .unwrap();
    let info = proxy.ready_info().clone();
    tokio::spawn(proxy.serve(shutdown.clone().cancelled_owned()));
    info
}

impl Fixture {
    async fn start() -> Fixture {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
        let shutdown = CancellationToken::new();
        let (db, http_app) = (tcp_echo().await, EchoServer::start().await.unwrap());
        let http = http_app.addr();
        let policies = policies(db.port(), http.port());
        let billing = Arc::new(Events::default());
        // billing's own snapshot names billing (so its policies target it); the address is
        // only what callers dial.
        let own = vec![route(
            "billing",
            closed_port().await,
            ca.id(BILLING).unwrap(),
        )];
        let info = sidecar(&ca, BILLING, own, (http, &policies), &billing, &shutdown).await;
        let callers = || vec![route("billing", info.inbound, ca.id(BILLING).unwrap())];
        let ignored = Arc::new(Events::default());
        let unused_app = (closed_port().await, &policies);
        let store = sidecar(&ca, STORE, callers(), unused_app, &ignored, &shutdown).await;
        let reporting = sidecar(&ca, REPORTING, callers(), unused_app, &ignored, &shutdown).await;
        Fixture {
            ca,
            billing_inbound: info.inbound,
            store_outbound: store.outbound,
            reporting_outbound: reporting.outbound,
            billing,
            db,
            http,
            _http_app: http_app,
            shutdown,
        }
    }

    /// Waits (bounded) until billing has counted `n` opaque events.
    async fn billing_events(&self, n: usize) -> Vec<(Direction, &'static str, OpaqueOutcome)> {
        let wait = async {
            loop {
                let events = self.billing.opaque();
                if events.len() >= n {
                    return events;
                }
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(HANG_GUARD, wait)
            .await
            .expect("billing never counted the connection")
    }
}

/// Reads until the connection closes; what arrived.
async fn until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> Vec<u8> {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("the connection stayed open");
    // Closed: cleanly, or cut (a reset, or a TLS stream ended without close_notify).
    let cut = [
        std::io::ErrorKind::ConnectionReset,
        std::io::ErrorKind::UnexpectedEof,
    ];
    assert!(read.is_ok() || read.is_err_and(|e| cut.contains(&e.kind())));
    rest
}

#[tokio::test]
async fn an_allowed_caller_and_port_passes_bytes_both_ways() {
    let f = Fixture::start().await;
    let target = format!("billing:{}", f.db.port());
    let (mut stream, head) = connect(f.store_outbound, &target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for message in [&b"SELECT 1;"[..], b"\x00\x01binary\xff"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0; message.len()];
        tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    let events = f.billing_events(1).await;
    assert_eq!(
        events,
        [(Direction::Inbound, "billing", OpaqueOutcome::Spliced)]
    );
    // Not counted as an HTTP connection.
    assert!(f.billing.inbound.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_caller_without_a_tcp_rule_is_closed_and_the_denial_counted() {
    let f = Fixture::start().await;
    let target = format!("billing:{}", f.db.port());
    let (mut stream, head) = connect(f.reporting_outbound, &target).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Whatever the client sends, nothing comes back and the connection closes.
    let _ = stream.write_all(b"SELECT 1;").await;
    assert!(until_closed(&mut stream).await.is_empty());
    assert_eq!(
        f.billing_events(1).await,
        [(Direction::Inbound, "billing", OpaqueOutcome::Denied)]
    );
    // store on a port its rule does not list: default deny.
    let other = closed_port().await.port();
    let (mut stream, _) = connect(f.store_outbound, &format!("billing:{other}")).await;
    assert!(until_closed(&mut stream).await.is_empty());
    assert_eq!(f.billing_events(2).await[1].2, OpaqueOutcome::Denied);
}

#[tokio::test]
async fn the_apps_http_port_is_never_spliced() {
    let f = Fixture::start().await;
    // The policy lists the HTTP port, but raw bytes to it would skip client-id stamping.
    let (mut stream, head) = connect(f.store_outbound, &format!("billing:{}", f.http.port())).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let forged = "GET / HTTP/1.1\r\nhost: billing\r\nx-meshwork-client-id: spiffe://meshwork.local/ns/default/sa/admin\r\n\r\n";
    let _ = stream.write_all(forged.as_bytes()).await;
    assert!(until_closed(&mut stream).await.is_empty());
    assert_eq!(
        f.billing_events(1).await,
        [(Direction::Inbound, "billing", OpaqueOutcome::Refused)]
    );
}

/// An opaque mTLS client to billing's inbound, presenting store's SVID.
async fn opaque_client(f: &Fixture) -> tokio_rustls::client::TlsStream<TcpStream> {
    let store = Arc::new(SvidStore::new(f.ca.svid(STORE).unwrap(), f.ca.bundle()));
    let expected = PeerPolicy::Exactly(f.ca.id(BILLING).unwrap());
    let config = identity::client_config(&store, expected, Protocols::OPAQUE);
    let tcp = TcpStream::connect(f.billing_inbound).await.unwrap();
    let name = ServerName::IpAddress(f.billing_inbound.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(OPAQUE_ALPN));
    tls
}

#[tokio::test]
async fn a_bad_or_missing_preamble_closes_without_harm() {
    let f = Fixture::start().await;
    let mut garbage = opaque_client(&f).await;
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(until_closed(&mut garbage).await.is_empty());
    // A silent client is closed at the preamble deadline.
    let mut silent = opaque_client(&f).await;
    assert!(until_closed(&mut silent).await.is_empty());
    let refused = (Direction::Inbound, "billing", OpaqueOutcome::Refused);
    assert_eq!(f.billing_events(2).await, [refused, refused]);
    // The sidecar still serves: a well-formed preamble is spliced.
    let mut good = opaque_client(&f).await;
    let mut preamble = b"MWO1".to_vec();
    preamble.extend_from_slice(&f.db.port().to_be_bytes());
    preamble.extend_from_slice(&[0, 0]);
    preamble.extend_from_slice(b"ping");
    good.write_all(&preamble).await.unwrap();
    let mut pong = [0; 4];
    tokio::time::timeout(HANG_GUARD, good.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"ping");
}

#[tokio::test]
async fn on_the_wire_the_client_offers_only_meshwork_opaque_and_sends_the_preamble() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
    let shutdown = CancellationToken::new();
    // A hand-made peer: reads the ClientHello, then completes the handshake as billing.
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = peer.local_addr().unwrap();
    let policies = policy::PolicySet::default();
    let services = vec![route("billing", addr, ca.id(BILLING).unwrap())];
    let events = Arc::new(Events::default());
    let app = (closed_port().await, &policies);
    let store = sidecar(&ca, STORE, services, app, &events, &shutdown).await;
    // store dials the peer before it answers the CONNECT: the peer's side runs meanwhile.
    let outbound = store.outbound;
    let connecting = tokio::spawn(async move { connect(outbound, "billing:5432").await });
    let (tcp, _) = tokio::time::timeout(HANG_GUARD, peer.accept())
        .await
        .unwrap()
        .unwrap();
    let acceptor = rustls::server::Acceptor::default();
    let start = tokio_rustls::LazyConfigAcceptor::new(acceptor, tcp)
        .await
        .unwrap();
    let offered: Vec<Vec<u8>> = start
        .client_hello()
        .alpn()
        .map(|protocols| protocols.map(<[u8]>::to_vec).collect())
        .unwrap_or_default();
    assert_eq!(offered, [OPAQUE_ALPN.to_vec()]);
    let billing = Arc::new(SvidStore::new(ca.svid(BILLING).unwrap(), ca.bundle()));
    let config = identity::server_config(
        &billing,
        ClientAuth::Required(PeerPolicy::AnyInTrustDomain),
        Protocols::MESH_INBOUND,
    );
    let mut tls = start.into_stream(config).await.unwrap();
    let mut preamble = [0; 8];
    tls.read_exact(&mut preamble).await.unwrap();
    assert_eq!(&preamble, b"MWO1\x15\x38\0\0");
    let (mut client, head) = connecting.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The splice carries the app's bytes as they are.
    client.write_all(b"hello").await.unwrap();
    let mut hello = [0; 5];
    tls.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
    assert_eq!(
        events.opaque(),
        [(Direction::Outbound, "billing", OpaqueOutcome::Spliced)]
    );
    shutdown.cancel();
}
