//! Hitless rotation (issue 3): both sidecars get short-lived SVIDs from the FAKE
//! control plane and renew them on their own while a request streams through the
//! pooled h2 connection between them; a new snapshot is published meanwhile. The
//! stream must finish intact on the same connection, and new handshakes must present
//! the renewed certificate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::contract::Snapshot;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use identity::SvidStore;
use proxy::{ControlSource, Proxy, ProxyConfig, ProxyMetrics, ReadyInfo};
use testkit::harness::via_proxy;
use testkit::{EchoServer, TestCa};
use tokio_util::sync::CancellationToken;

use crate::fake_control::FakeControl;
use crate::mesh::{BILLING, Probe, STORE, closed_port, route};
use crate::{HANG_GUARD, channel_body, drain};

/// Short enough that both sidecars renew (at about half-life) several times during
/// the test; long enough that a renewal is never late on a busy machine.
const SVID_TTL: time::Duration = time::Duration::seconds(3);

/// Polls `check` until it holds (bounded by the hang guard; not a timing assertion).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_sidecar(
    workload: &str,
    control: &FakeControl,
    app: SocketAddr,
    probe: &Arc<Probe>,
    shutdown: &CancellationToken,
) -> ReadyInfo {
    let source = ControlSource::Socket(control.socket.clone());
    let config = ProxyConfig::new(workload, source, app);
    let metrics = Arc::clone(probe) as Arc<dyn ProxyMetrics>;
    let proxy = Proxy::start_with_metrics(config, metrics).await.unwrap();
    let info = proxy.ready_info().clone();
    tokio::spawn(proxy.serve(shutdown.clone().cancelled_owned()));
    info
}

fn snapshot(version: u64, billing: &ReadyInfo, ca: &TestCa, services: &[&str]) -> Snapshot {
    let id = ca.id(BILLING).unwrap();
    Snapshot {
        version,
        services: services
            .iter()
            .map(|name| route(name, billing.inbound, id.clone()))
            .collect(),
        ..Snapshot::default()
    }
}

/// `POST http://billing/echo-body` through `outbound`; returns once the echo of the
/// first chunk came back (the request is then in flight on every hop).
async fn start_echo_stream(
    outbound: SocketAddr,
    chunk: &Bytes,
) -> (
    tokio::sync::mpsc::Sender<Bytes>,
    hyper::body::Incoming,
    usize,
) {
    let (tx, body) = channel_body();
    let request = http::Request::post("http://billing/echo-body")
        .header("host", "billing")
        .body(body)
        .unwrap();
    tx.send(chunk.clone()).await.unwrap();
    let send = testkit::harness::send_http1(outbound, request);
    let response = tokio::time::timeout(HANG_GUARD, send)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = tokio::time::timeout(HANG_GUARD, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (tx, body, first.data_ref().map_or(0, Bytes::len))
}

/// The leaf certificate billing's inbound presents to a fresh mTLS handshake.
async fn presented_leaf(
    ca: &TestCa,
    inbound: SocketAddr,
) -> rustls_pki_types::CertificateDer<'static> {
    let client = Arc::new(SvidStore::new(ca.svid(STORE).unwrap(), ca.bundle()));
    let config = identity::client_config(
        &client,
        identity::PeerPolicy::Exactly(ca.id(BILLING).unwrap()),
        identity::Protocols::default(),
    );
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("billing").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn svid_rotation_and_a_new_snapshot_keep_the_stream_and_the_connection() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
    let app = EchoServer::start().await.unwrap();
    let identities = HashMap::from([
        ("billing".to_owned(), ca.id(BILLING).unwrap()),
        ("store".to_owned(), ca.id(STORE).unwrap()),
    ]);
    let control = FakeControl::start(Arc::clone(&ca), identities, Snapshot::default());
    control.set_svid_ttl(SVID_TTL);
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let (billing_probe, store_probe) = (Arc::new(Probe::default()), Arc::new(Probe::default()));
    let billing = start_sidecar("billing", &control, app.addr(), &billing_probe, &shutdown).await;
    control.publish(snapshot(1, &billing, &ca, &["billing"]));
    let store = start_sidecar(
        "store",
        &control,
        closed_port().await,
        &store_probe,
        &shutdown,
    )
    .await;

    let chunk = Bytes::from(vec![b'r'; 4 * 1024]);
    let (tx, body, first) = start_echo_stream(store.outbound, &chunk).await;
    // Read the echo as it comes, so backpressure never stalls the sender.
    let echoed = tokio::spawn(drain(body));
    let mut sent = 1;

    // Each sidecar asks for its next SVID only after rotating in the previous one,
    // so a third signature means the second is in use on both sides.
    eventually("both sidecars rotated their SVIDs", async || {
        tx.send(chunk.clone()).await.unwrap();
        sent += 1;
        control.issued("billing").len() >= 3 && control.issued("store").len() >= 3
    })
    .await;
    control.publish(snapshot(2, &billing, &ca, &["billing", "billing-v2"]));
    // `billing-v2` exists only in snapshot 2: this new request proves it was adopted.
    eventually("store adopted snapshot 2", async || {
        let reply = via_proxy(store.outbound, "GET", "http://billing-v2/x", &[], "");
        reply.await.unwrap().0 == StatusCode::OK
    })
    .await;

    for _ in 0..3 {
        tx.send(chunk.clone()).await.unwrap();
        sent += 1;
    }
    drop(tx);
    assert_eq!(
        first + echoed.await.unwrap(),
        sent * chunk.len(),
        "the stream lost data"
    );
    let (status, _) = via_proxy(store.outbound, "POST", "http://billing/charges", &[], "{}")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "a new request after the rotation");

    let outbound = store_probe.outbound.lock().unwrap().clone();
    assert_eq!(
        outbound.len(),
        1,
        "the pooled h2 connection was replaced: {outbound:?}"
    );
    assert_eq!(billing_probe.inbound.lock().unwrap().len(), 1);

    let leaf = presented_leaf(&ca, billing.inbound).await;
    let issued = control.issued("billing");
    assert!(
        issued.contains(&leaf),
        "billing presents a certificate control never signed"
    );
    assert_ne!(
        leaf, issued[0],
        "a new handshake still presents the first SVID"
    );
}
