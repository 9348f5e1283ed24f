//! A WebSocket through two real sidecars: store's app sends an absolute-form
//! `GET http://billing/echo` with `Upgrade: websocket` to its outbound listener (as through
//! `HTTP_PROXY`); store's sidecar dials billing's over mTLS (HTTP/1.1 for the upgrade),
//! billing's authorizes it, stamps the caller's identity and upgrades to its app, a real
//! WebSocket echo server (tokio-tungstenite). Frames then flow both ways.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use proxy::NoMetrics;
use testkit::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use super::HANG_GUARD;
use super::mesh::{BILLING, STORE, closed_port, route};
use super::opaque::sidecar;

/// What the echo server saw of each handshake: the `x-meshwork-client-id` values.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// A WebSocket echo app recording the caller identity of each handshake.
// tungstenite's handshake callback returns its own (large) error response type.
#[allow(clippy::result_large_err)]
async fn echo_app(seen: Seen) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let record = |request: &Request, response: Response| {
                    let ids = request
                        .headers()
                        .get_all("x-meshwork-client-id")
                        .iter()
                        .map(|v| v.to_str().unwrap().to_owned())
                        .collect();
                    seen.lock().unwrap().push(ids);
                    Ok(response)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_close() || ws.send(message).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Billing (ALLOW store, GET /echo only) in front of the echo app, and store routing it.
async fn mesh(ca: &TestCa, app: SocketAddr, shutdown: &CancellationToken) -> SocketAddr {
    let policies: policy::PolicySet = serde_json::from_value(serde_json::json!({
        "authorization": {"default/store-echo": {"targetService": "billing", "action": "ALLOW",
            "rules": [{"from": [{"spiffeId": "spiffe://meshwork.local/ns/default/sa/store"}],
                       "to": [{"methods": ["GET"], "paths": [{"exact": "/echo"}]}]}]}}}))
    .unwrap();
    let metrics = Arc::new(NoMetrics);
    let own = vec![route(
        "billing",
        closed_port().await,
        ca.id(BILLING).unwrap(),
    )];
    let billing = sidecar(ca, BILLING, own, (app, &policies), &metrics, shutdown).await;
    let routes = vec![route("billing", billing.inbound, ca.id(BILLING).unwrap())];
    let unused = (closed_port().await, &policies);
    sidecar(ca, STORE, routes, unused, &metrics, shutdown)
        .await
        .outbound
}

/// Sends the upgrade request for `path` in absolute form; the response head and the
/// connection (nothing after the head consumed).
async fn upgrade(outbound: SocketAddr, path: &str) -> (String, TcpStream) {
    let mut stream = TcpStream::connect(outbound).await.unwrap();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let request = format!(
        "GET http://billing{path} HTTP/1.1\r\nHost: billing\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(HANG_GUARD, stream.read_u8())
            .await
            .expect("no upgrade response")
            .unwrap();
        head.push(byte);
    }
    (String::from_utf8(head).unwrap(), stream)
}

#[tokio::test]
async fn a_websocket_echo_goes_through_both_sidecars_as_store() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("meshwork.local").unwrap();
    let shutdown = CancellationToken::new();
    let seen = Seen::default();
    let outbound = mesh(&ca, echo_app(Arc::clone(&seen)).await, &shutdown).await;

    let (head, stream) = upgrade(outbound, "/echo").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let accept = derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains(&format!(
        "sec-websocket-accept: {}",
        accept.to_ascii_lowercase()
    )));
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Client, None).await;
    for text in ["hello", "through the mesh"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap();
        assert_eq!(echoed.unwrap().unwrap(), Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap();
    assert_eq!(
        echoed.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [vec![ca.id(STORE).unwrap().as_str().to_owned()]]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn authorization_applies_to_the_upgrade_request() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = TestCa::new("meshwork.local").unwrap();
    let shutdown = CancellationToken::new();
    let seen = Seen::default();
    let outbound = mesh(&ca, echo_app(Arc::clone(&seen)).await, &shutdown).await;
    let (head, _stream) = upgrade(outbound, "/admin").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-meshwork-decision-id"),
        "{head}"
    );
    assert!(seen.lock().unwrap().is_empty(), "the app saw a handshake");
    shutdown.cancel();
}
