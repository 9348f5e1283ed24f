//! A peer that only speaks HTTP/1.1 over mTLS (ALPN `http/1.1` only): the outbound pool
//! must fall back to HTTP/1.1 and keep the connection alive between requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use api::contract::Snapshot;
use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{Method, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::rt::TokioIo;
use identity::SvidStore;
use proxy::{ControlSource, Protocol, Proxy, ProxyConfig, ProxyMetrics};
use testkit::harness::{send_http1, via_proxy};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::mesh::{Mesh, Probe, STORE, closed_port, route};

const LEGACY: &str = "/ns/default/sa/legacy";

/// The TLS side of an mTLS server that is `identity` (a path under the mesh's CA) and
/// offers only `http/1.1`.
pub fn h1_only_acceptor(mesh: &Mesh, identity: &str) -> TlsAcceptor {
    let store = Arc::new(SvidStore::new(
        mesh.ca.svid(identity).unwrap(),
        mesh.ca.bundle(),
    ));
    let clients = identity::ClientAuth::Required(identity::PeerPolicy::AnyInTrustDomain);
    TlsAcceptor::from(identity::server_config(
        &store,
        clients,
        identity::Protocols::HTTP1,
    ))
}

/// An mTLS server offering only `http/1.1`, answering every request with 200.
async fn h1_only_peer(mesh: &Mesh) -> std::net::SocketAddr {
    let acceptor = h1_only_acceptor(mesh, LEGACY);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let service = hyper::service::service_fn(|_request| async {
                    let body = http_body_util::Full::new(bytes::Bytes::from_static(b"legacy"));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Starts a `store` sidecar whose only mesh service is `name`, served at `peer` by
/// `identity` (a path under the mesh's CA); returns its outbound address and probe.
pub async fn store_routing(
    mesh: &Mesh,
    name: &str,
    peer: std::net::SocketAddr,
    identity: &str,
) -> (std::net::SocketAddr, Arc<Probe>) {
    let snapshot = Snapshot {
        version: 1,
        services: [route(name, peer, mesh.id(identity))].into_iter().collect(),
        ..Snapshot::default()
    };
    let source = ControlSource::Static {
        svid: mesh.ca.svid(STORE).unwrap(),
        bundle: mesh.ca.bundle(),
        snapshot,
    };
    let probe = Arc::new(Probe::default());
    let config = ProxyConfig::new("store", source, closed_port().await);
    let proxy = Proxy::start_with_metrics(config, Arc::clone(&probe) as Arc<dyn ProxyMetrics>)
        .await
        .unwrap();
    let outbound = proxy.ready_info().outbound;
    tokio::spawn(proxy.serve(mesh.shutdown.clone().cancelled_owned()));
    (outbound, probe)
}

#[tokio::test]
async fn h1_only_peer_gets_a_kept_alive_http1_connection() {
    let mesh = Mesh::start().await;
    let peer = h1_only_peer(&mesh).await;
    let (outbound, probe) = store_routing(&mesh, "legacy", peer, LEGACY).await;
    for _ in 0..5 {
        let (status, body) = via_proxy(outbound, "GET", "http://legacy/", &[], "")
            .await
            .unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"legacy"[..]));
    }
    let connections = probe.outbound.lock().unwrap().clone();
    assert_eq!(
        connections.len(),
        1,
        "expected keep-alive reuse: {connections:?}"
    );
    assert_eq!(connections[0].2, Protocol::Http1);
}

/// What [`scripted_h1_peer`] saw: connections accepted, and those that have ended.
#[derive(Default)]
struct PeerConnections {
    accepted: AtomicUsize,
    ended: AtomicUsize,
}

type PeerResponse = hyper::Response<BoxBody<Bytes, Infallible>>;

/// The answer of [`scripted_h1_peer`] to `method path`.
fn scripted_response(method: &Method, path: &str) -> PeerResponse {
    let chunks = |chunks: &[&'static str]| {
        let frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        stream::iter(frames)
    };
    let body = match path {
        // No length: chunked, in three chunks, so the proxy reads it to its end.
        "/stream" => BodyExt::boxed(StreamBody::new(chunks(&["a", "b", "c"]))),
        // One chunk, then nothing: the body never ends.
        "/stall" => BodyExt::boxed(StreamBody::new(chunks(&["first"]).chain(stream::pending()))),
        _ => Full::new(Bytes::from_static(b"legacy")).boxed(),
    };
    let mut response = hyper::Response::new(body);
    if path == "/empty" && method != Method::HEAD {
        *response.status_mut() = StatusCode::NO_CONTENT;
        *response.body_mut() = Empty::new().boxed();
    }
    response
}

/// An mTLS server offering only `http/1.1` that answers by path ([`scripted_response`]).
async fn scripted_h1_peer(mesh: &Mesh) -> (SocketAddr, Arc<PeerConnections>) {
    let acceptor = h1_only_acceptor(mesh, LEGACY);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(PeerConnections::default());
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counts.accepted.fetch_add(1, Ordering::SeqCst);
            let (acceptor, counts) = (acceptor.clone(), Arc::clone(&counts));
            tokio::spawn(async move {
                let tls = acceptor.accept(tcp).await.unwrap();
                let service = hyper::service::service_fn(|request: hyper::Request<_>| {
                    let response = scripted_response(request.method(), request.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
                counts.ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

/// The outbound connections `probe` saw, after checking they all went to the h1 peer.
fn h1_connections(probe: &Probe) -> usize {
    let connections = probe.outbound.lock().unwrap().clone();
    assert!(
        connections.iter().all(|c| c.2 == Protocol::Http1),
        "{connections:?}"
    );
    connections.len()
}

#[tokio::test]
async fn h1_connection_is_reused_after_a_streamed_body_ends() {
    let mesh = Mesh::start().await;
    let (peer, _) = scripted_h1_peer(&mesh).await;
    let (outbound, probe) = store_routing(&mesh, "legacy", peer, LEGACY).await;
    for _ in 0..3 {
        let (status, body) = via_proxy(outbound, "GET", "http://legacy/stream", &[], "")
            .await
            .unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"abc"[..]));
    }
    assert_eq!(h1_connections(&probe), 1, "expected keep-alive reuse");
}

#[tokio::test]
async fn h1_connection_is_reused_after_responses_without_a_body() {
    let mesh = Mesh::start().await;
    let (peer, _) = scripted_h1_peer(&mesh).await;
    let (outbound, probe) = store_routing(&mesh, "legacy", peer, LEGACY).await;
    for (method, expected) in [
        ("GET", StatusCode::NO_CONTENT),
        ("HEAD", StatusCode::OK),
        ("GET", StatusCode::NO_CONTENT),
        ("HEAD", StatusCode::OK),
    ] {
        let (status, body) = via_proxy(outbound, method, "http://legacy/empty", &[], "")
            .await
            .unwrap();
        assert_eq!((status, body.len()), (expected, 0), "{method}");
    }
    assert_eq!(h1_connections(&probe), 1, "expected keep-alive reuse");
}

#[tokio::test]
async fn h1_connection_whose_body_is_dropped_mid_way_is_closed_not_reused() {
    let mesh = Mesh::start().await;
    let (peer, seen) = scripted_h1_peer(&mesh).await;
    let (outbound, probe) = store_routing(&mesh, "legacy", peer, LEGACY).await;
    let request = hyper::Request::get("http://legacy/stall")
        .header("host", "legacy")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send_http1(outbound, request).await.unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first");
    // The client goes away mid-body: the proxy drops the peer's body, and with it the
    // connection (the peer sees it end).
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.ended.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "peer connection still open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next requests get a fresh connection, which is then kept alive.
    for _ in 0..2 {
        let (status, body) = via_proxy(outbound, "GET", "http://legacy/", &[], "")
            .await
            .unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"legacy"[..]));
    }
    assert_eq!(h1_connections(&probe), 2);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}
