//! Egress through the outbound listener: decided by `EgressPolicy` for this workload's
//! identity, then tunnelled (CONNECT) or forwarded (plain HTTP) to what the proxy resolved.
//! The destination is the testkit echo server on loopback, named `localhost` (resolved by
//! the system resolver) or by its IP literal.

use std::time::Duration;

use api::contract::Snapshot;
use http::StatusCode;
use proxy::{ControlSource, Proxy, ProxyConfig};
use serde_json::{Value, json};
use testkit::harness::via_proxy;
use testkit::{EchoServer, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::mesh::{STORE, closed_port};

struct Egress {
    outbound: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    echo: EchoServer,
    /// A server answering everything `403` with a forged `x-meshwork-decision-id`.
    forger: std::net::SocketAddr,
    _forger: crate::observe_guards::App,
    _stop: tokio_util::sync::DropGuard,
}

/// store's sidecar; store may reach `localhost:<echo>` and `localhost:<forger>` (any
/// method) and the echo's IP literal by CIDR for GET only.
async fn start() -> Egress {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("meshwork.local").unwrap();
    let echo = EchoServer::start().await.unwrap();
    let port = echo.addr().port();
    let (forger, forger_app) = crate::observe_guards::forger().await;
    let policies: policy::PolicySet = serde_json::from_value(json!({"egress": {
        "default/store-to-echo": {
            "from": [{"spiffeId": ca.id(STORE).unwrap().as_str()}],
            "to": [{"host": "localhost", "ports": [port, forger.port()]}]},
        "default/store-to-echo-ip": {
            "from": [{"spiffeId": ca.id(STORE).unwrap().as_str()}], "allowCidr": true,
            "to": [{"cidr": "127.0.0.1/32", "ports": [port], "methods": ["GET"]}]}
    }}))
    .unwrap();
    let snapshot = Snapshot {
        version: 1,
        policy_hash: policies.hash().to_string(),
        policies,
        ..Snapshot::default()
    };
    let source = ControlSource::Static {
        svid: ca.svid(STORE).unwrap(),
        bundle: ca.bundle(),
        snapshot,
    };
    let mut config = ProxyConfig::new("store", source, closed_port().await);
    config.admin_listen = Some(([127, 0, 0, 1], 0).into());
    let proxy = Proxy::start(config).await.unwrap();
    let outbound = proxy.ready_info().outbound;
    let admin = proxy.ready_info().admin.unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(proxy.serve(stop.clone().cancelled_owned()));
    Egress {
        outbound,
        admin,
        echo,
        forger,
        _forger: forger_app,
        _stop: stop.drop_guard(),
    }
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn plain_http_egress_is_forwarded_with_the_normalised_path() {
    let egress = start().await;
    let url = format!(
        "http://localhost:{}/a/../%62?x=1",
        egress.echo.addr().port()
    );
    let (status, body) = via_proxy(egress.outbound, "POST", &url, &[], "hi")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let echo = json(&body);
    assert_eq!(
        (
            echo["method"].as_str(),
            echo["path"].as_str(),
            echo["query"].as_str()
        ),
        (Some("POST"), Some("/b"), Some("x=1"))
    );
}

#[tokio::test]
async fn connect_tunnels_to_what_the_proxy_resolved() {
    let egress = start().await;
    let mut stream = TcpStream::connect(egress.outbound).await.unwrap();
    let port = egress.echo.addr().port();
    let connect = format!("CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n");
    stream.write_all(connect.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // Skip the rest of the CONNECT response head, then speak HTTP through the tunnel.
    let mut byte = [0u8; 1];
    let mut tail = Vec::new();
    while !tail.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        tail.push(byte[0]);
    }
    stream
        .write_all(b"GET /through-the-tunnel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("/through-the-tunnel"),
        "{text}"
    );
}

#[tokio::test]
async fn ip_literals_need_a_cidr_rule_and_refusals_name_the_decision() {
    let egress = start().await;
    let port = egress.echo.addr().port();
    let by_ip = format!("http://127.0.0.1:{port}/status");
    let (status, _) = via_proxy(egress.outbound, "GET", &by_ip, &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "the CIDR rule allows GET");
    let (status, body) = via_proxy(egress.outbound, "POST", &by_ip, &[], "")
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the CIDR rule allows only GET"
    );
    let refusal = json(&body);
    assert_eq!(refusal["error"], "egress_denied");
    assert_eq!(refusal["kind"], "default_deny");
    assert_eq!(refusal["host"], "127.0.0.1");
    let other = closed_port().await.port();
    let (status, body) = via_proxy(
        egress.outbound,
        "GET",
        &format!("http://localhost:{other}/"),
        &[],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "other ports are not allowed");
    assert_eq!(json(&body)["port"], other);
}

#[tokio::test]
async fn an_egress_servers_forged_denial_is_no_denial_and_never_reaches_the_app() {
    let egress = start().await;
    let url = format!("http://localhost:{}/x", egress.forger.port());
    let request = http::Request::get(&url)
        .header(
            http::header::HOST,
            format!("localhost:{}", egress.forger.port()),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = testkit::harness::send_http1(egress.outbound, request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let names: Vec<_> = response.headers().keys().map(|n| n.as_str()).collect();
    assert!(
        names.iter().all(|n| !n.starts_with("x-meshwork-")),
        "{names:?}"
    );
    // A real egress denial, counted as one.
    let by_ip = format!("http://127.0.0.1:{}/status", egress.echo.addr().port());
    let (status, _) = via_proxy(egress.outbound, "POST", &by_ip, &[], "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);

    let request = http::Request::get("/stats?window=600")
        .header(http::header::HOST, egress.admin.to_string())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = testkit::harness::send_http1(egress.admin, request)
        .await
        .unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let stats: api::contract::observe::Stats = serde_json::from_slice(&body).unwrap();
    let rows: Vec<_> = stats
        .rows
        .iter()
        .map(|r| {
            (
                r.service.as_str(),
                r.method.as_str(),
                r.status_code,
                r.denied,
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("[egress]", "GET", 403, 0), ("[egress]", "POST", 403, 1)],
        "{stats:?}"
    );
}

#[tokio::test]
async fn an_upgrade_request_to_egress_leaves_as_a_plain_request() {
    let egress = start().await;
    let url = format!("http://localhost:{}/ws", egress.echo.addr().port());
    let upgrade = [("connection", "Upgrade"), ("upgrade", "websocket")];
    let (status, body) = via_proxy(egress.outbound, "GET", &url, &upgrade, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let headers = &json(&body)["headers"];
    assert!(headers.get("upgrade").is_none(), "{headers}");
    assert!(headers.get("connection").is_none(), "{headers}");
}
