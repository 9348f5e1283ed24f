//! `CONNECT <mesh-service>:<port>` on store's outbound listener: HTTP inside the tunnel
//! reaches billing through the normal mesh path (mTLS, client-id stamping); anything
//! else closes the tunnel without reaching billing.

use std::net::SocketAddr;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::HANG_GUARD;
use super::mesh::{Mesh, STORE};

/// Sends `CONNECT target` on a fresh connection; returns the connection and the
/// response head (read byte by byte so nothing after the head is consumed).
pub async fn connect(outbound: SocketAddr, target: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(outbound).await.unwrap();
    let request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(HANG_GUARD, stream.read_u8())
            .await
            .expect("no CONNECT response")
            .unwrap();
        head.push(byte);
    }
    (stream, String::from_utf8(head).unwrap())
}

fn status_of(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or_default()
}

/// `POST path` with `Host: whatever` inside the tunnel; the status and the echo's JSON.
async fn post(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    path: &str,
) -> (StatusCode, Value) {
    let request = http::Request::post(path)
        .header("host", "whatever")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, super::json(&body))
}

#[tokio::test]
async fn http_inside_a_mesh_tunnel_reaches_billing_as_store() {
    let mesh = Mesh::start().await;
    let (stream, head) = connect(mesh.store.outbound, "billing:80").await;
    assert_eq!(status_of(&head), "200", "{head}");

    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for path in ["/charges", "/charges/again"] {
        let (status, echo) = tokio::time::timeout(HANG_GUARD, post(&mut sender, path))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{echo}");
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path"], path);
        assert_eq!(echo["body_bytes"], 2);
        assert_eq!(
            echo["headers"]["x-meshwork-client-id"],
            serde_json::json!([mesh.id(STORE).as_str()])
        );
    }
}

#[tokio::test]
async fn tls_inside_a_mesh_tunnel_is_closed_not_forwarded() {
    let mesh = Mesh::start().await;
    let (mut stream, head) = connect(mesh.store.outbound, "billing:443").await;
    assert_eq!(status_of(&head), "200", "{head}");
    // The start of a TLS ClientHello: handshake record, TLS 1.0 record version.
    stream
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
        ])
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("the tunnel stayed open");
    assert!(read.is_ok() || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset));
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        mesh.store_probe.outbound.lock().unwrap().is_empty(),
        "store dialled a peer for TLS bytes"
    );
    assert!(
        mesh.billing_probe.inbound.lock().unwrap().is_empty(),
        "billing was reached"
    );
}

#[tokio::test]
async fn connect_to_a_name_outside_the_mesh_is_still_egress_denied() {
    let mesh = Mesh::start().await;
    let (mut stream, head) = connect(mesh.store.outbound, "unknown.example:443").await;
    assert_eq!(status_of(&head), "403", "{head}");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("no content-length on the 403");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"], "egress_denied");
}
