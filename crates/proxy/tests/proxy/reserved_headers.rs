//! A caller cannot forge `x-meshwork-*` fields in any position: request headers, a
//! `Trailer` declaration, or the chunked/h2 trailer section, whatever the peer protocol,
//! the app protocol or the tunnel. The echo app records everything it received
//! (trailers included); only the verified caller ID may arrive, and it arrives once.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use identity::SvidStore;
use proxy::{AppProtocol, PeerProtocol};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::HANG_GUARD;
use super::mesh::{BILLING, Mesh, STORE};

const FORGED: &str = "spiffe://meshwork.local/ns/default/sa/admin";

/// A chunked `POST` whose head and trailer section both carry forged reserved fields,
/// next to an ordinary trailer (`x-checksum`) that must survive: proof that trailers
/// reach the app at all, so the absence of the forged ones means something.
fn forged_request(target: &str) -> Vec<u8> {
    format!(
        "POST {target} HTTP/1.1\r\n\
         Host: billing\r\n\
         X-Meshwork-Client-Id: {FORGED}\r\n\
         X-Meshwork-Decision-Id: forged\r\n\
         Trailer: X-Meshwork-Client-Id, x-checksum, x-meshwork-other\r\n\
         Transfer-Encoding: chunked\r\n\
         Connection: close\r\n\
         \r\n\
         5\r\nhello\r\n\
         0\r\n\
         x-meshwork-client-id: {FORGED}\r\n\
         X-Meshwork-Other: forged\r\n\
         x-checksum: abc\r\n\
         \r\n"
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response until the server closes: its status and body
/// (de-chunked if it came chunked).
async fn read_response(stream: &mut TcpStream) -> (u16, Bytes) {
    let mut raw = Vec::new();
    tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut raw))
        .await
        .expect("the response never ended")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("no response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, Bytes::from(body))
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return body;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

/// What every position must show: the verified ID, once, in the headers; no reserved
/// field (or declaration of one) anywhere else; the honest trailer delivered.
fn assert_only_the_verified_id(echo: &Value, caller: &str) {
    assert_eq!(
        echo["headers"]["x-meshwork-client-id"],
        json!([caller]),
        "{echo}"
    );
    let reserved = |section: &Value| -> Vec<String> {
        section
            .as_object()
            .unwrap()
            .keys()
            .filter(|name| name.starts_with("x-meshwork-") && *name != "x-meshwork-client-id")
            .cloned()
            .collect()
    };
    assert!(reserved(&echo["headers"]).is_empty(), "{echo}");
    assert_eq!(echo["trailers"]["x-checksum"], json!(["abc"]), "{echo}");
    let trailers = echo["trailers"].as_object().unwrap();
    assert!(
        trailers.keys().all(|name| !name.starts_with("x-meshwork-")),
        "{echo}"
    );
    if let Some(declared) = echo["headers"].get("trailer") {
        assert!(
            !declared
                .to_string()
                .to_ascii_lowercase()
                .contains("x-meshwork-"),
            "{echo}"
        );
    }
    assert!(!echo.to_string().contains("forged"), "{echo}");
    assert!(!echo.to_string().contains(FORGED), "{echo}");
    assert_eq!(echo["body_bytes"], 5, "{echo}");
}

/// The forged chunked request through store's outbound listener (absolute form).
async fn through_the_outbound(mesh: &Mesh) -> Value {
    let mut stream = TcpStream::connect(mesh.store.outbound).await.unwrap();
    stream
        .write_all(&forged_request("http://billing/charges"))
        .await
        .unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body:?}");
    super::json(&body)
}

#[tokio::test]
async fn forged_fields_over_h1_to_an_h2_peer_never_reach_the_app() {
    let mesh = Mesh::start().await;
    let echo = through_the_outbound(&mesh).await;
    assert_only_the_verified_id(&echo, mesh.id(STORE).as_str());
}

#[tokio::test]
async fn forged_fields_over_h1_to_an_http1_peer_never_reach_the_app() {
    let mesh = Mesh::start_configured(AppProtocol::Http1, PeerProtocol::Http1).await;
    let echo = through_the_outbound(&mesh).await;
    assert_only_the_verified_id(&echo, mesh.id(STORE).as_str());
}

#[tokio::test]
async fn forged_fields_never_reach_an_h2c_app() {
    let mesh = Mesh::start_with(AppProtocol::Http2).await;
    let echo = through_the_outbound(&mesh).await;
    assert_eq!(echo["version"], "HTTP/2.0", "{echo}");
    assert_only_the_verified_id(&echo, mesh.id(STORE).as_str());
}

#[tokio::test]
async fn forged_fields_inside_a_connect_tunnel_never_reach_the_app() {
    let mesh = Mesh::start().await;
    let mut stream = TcpStream::connect(mesh.store.outbound).await.unwrap();
    stream
        .write_all(b"CONNECT billing:80 HTTP/1.1\r\nHost: billing:80\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(HANG_GUARD, stream.read_u8())
            .await
            .expect("no CONNECT response")
            .unwrap();
        head.push(byte);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    stream.write_all(&forged_request("/charges")).await.unwrap();
    let (status, body) = read_response(&mut stream).await;
    assert_eq!(status, 200, "{body:?}");
    assert_only_the_verified_id(&super::json(&body), mesh.id(STORE).as_str());
}

/// A peer that skips the outbound listener altogether: any SVID holder can dial the
/// inbound with h2 and send reserved fields in headers and in the trailer section.
#[tokio::test]
async fn forged_fields_from_an_h2_peer_on_the_inbound_never_reach_the_app() {
    let mesh = Mesh::start().await;
    let caller = "/ns/default/sa/mallory";
    let client = Arc::new(SvidStore::new(
        mesh.ca.svid(caller).unwrap(),
        mesh.ca.bundle(),
    ));
    let config = identity::client_config(
        &client,
        identity::PeerPolicy::Exactly(mesh.id(BILLING)),
        identity::Protocols::default(),
    );
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls_pki_types::ServerName::try_from("billing").unwrap(),
            TcpStream::connect(mesh.billing.inbound).await.unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);

    let echo = tokio::time::timeout(
        HANG_GUARD,
        h2_forged_post(&mut sender, mesh.billing.inbound),
    )
    .await
    .unwrap();
    assert_only_the_verified_id(&echo, mesh.id(caller).as_str());
}

/// A request body of data and trailer frames, already in memory.
type FramesBody =
    StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, hyper::Error>>>>;

async fn h2_forged_post(
    sender: &mut hyper::client::conn::http2::SendRequest<FramesBody>,
    inbound: SocketAddr,
) -> Value {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-meshwork-client-id", HeaderValue::from_static(FORGED));
    trailers.insert("x-meshwork-other", HeaderValue::from_static("forged"));
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let frames = vec![
        Ok(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let request = Request::post(format!("https://{inbound}/charges"))
        .header("x-meshwork-client-id", FORGED)
        .header("x-meshwork-decision-id", "forged")
        .header("trailer", "x-meshwork-client-id, x-checksum")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    super::json(&body)
}
