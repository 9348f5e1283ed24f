//! A peer that only speaks HTTP/1.1 over mTLS (ALPN `http/1.1` only): the outbound pool
//! must fall back to HTTP/1.1 and keep the connection alive between requests.

use std::sync::Arc;

use api::contract::Snapshot;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use identity::SvidStore;
use proxy::{ControlSource, Protocol, Proxy, ProxyConfig, ProxyMetrics};
use testkit::harness::via_proxy;
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
    let mut config = (*identity::server_config(&store)).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
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
