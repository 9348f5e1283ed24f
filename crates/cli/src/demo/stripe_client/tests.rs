#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use http_body_util::Full;
use hyper::HeaderMap;
use hyper::service::service_fn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::*;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const URL: &str = "https://api.stripe.com/v1/charges";

#[test]
fn a_url_is_split_into_tunnel_authority_host_and_path() {
    let t = Target::parse("https://api.stripe.com/v1/charges").unwrap();
    assert_eq!(
        (t.host.as_str(), t.authority.as_str(), t.path.as_str()),
        ("api.stripe.com", "api.stripe.com:443", "/v1/charges")
    );
    let t = Target::parse("https://127.0.0.1:8443").unwrap();
    assert_eq!(
        (t.authority.as_str(), t.path.as_str()),
        ("127.0.0.1:8443", "/")
    );
}

#[test]
fn only_https_urls_are_accepted() {
    let err = Target::parse("http://api.stripe.com/v1/charges")
        .err()
        .unwrap();
    assert!(err.to_string().contains("not an https:// URL"), "{err}");
}

/// The stand-in's fresh CA (PEM) and server config.
fn demo_tls() -> anyhow::Result<(String, Arc<rustls::ServerConfig>)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    super::super::stripe::demo_tls()
}

/// A TLS server with the demo stand-in's certificate for api.stripe.com: sends each request's
/// headers to the returned channel and answers `status` with `body`. Also the CA file.
async fn stripe(
    status: u16,
    body: &'static str,
) -> (
    SocketAddr,
    tempfile::TempDir,
    mpsc::UnboundedReceiver<HeaderMap>,
) {
    let (ca, tls) = demo_tls().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let Ok(tls) = TlsAcceptor::from(tls).accept(stream).await else {
            return;
        };
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let _ = tx.send(req.headers().clone());
            let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(tls), service)
            .await;
    });
    (addr, dir, rx)
}

/// A forward proxy for one `CONNECT`: sends its head to the returned channel, then answers
/// `refusal` if given, else `200` and splices the connection to `upstream`.
async fn proxy(
    upstream: SocketAddr,
    refusal: Option<&'static str>,
) -> (String, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(client.read_u8().await.unwrap());
        }
        let _ = tx.send(String::from_utf8(head).unwrap());
        if let Some(refusal) = refusal {
            client.write_all(refusal.as_bytes()).await.unwrap();
            return;
        }
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        let mut server = TcpStream::connect(upstream).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    (format!("http://{addr}"), rx)
}

fn trace() -> TraceHeaders {
    let mut served = HeaderMap::new();
    served.insert("traceparent", TRACEPARENT.parse().unwrap());
    served.insert("x-meshwork-client-id", "spiffe://x/y".parse().unwrap());
    TraceHeaders::copied_from(&served)
}

#[tokio::test]
async fn the_connect_and_the_request_in_the_tunnel_carry_the_trace_context() {
    let (stripe_addr, ca, mut requests) = stripe(200, r#"{"id":"ch_test_1"}"#).await;
    let (proxy, mut heads) = proxy(stripe_addr, None).await;
    let egress = Egress {
        proxy: Some(proxy),
        ca_file: ca.path().join("ca.pem"),
    };
    let id = attempt(&egress, URL, 1234, Some("key-1"), &trace()).await;
    assert_eq!(id.unwrap(), "ch_test_1");

    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with("connect api.stripe.com:443 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\ntraceparent: {TRACEPARENT}\r\n")),
        "{head}"
    );
    assert!(!head.contains("x-meshwork-client-id"), "{head}");
    let inner = requests.recv().await.unwrap();
    assert_eq!(inner["traceparent"], TRACEPARENT);
    assert_eq!(inner["idempotency-key"], "key-1");
    assert_eq!(inner["host"], "api.stripe.com");
    assert!(!inner.contains_key("x-meshwork-client-id"));
}

#[tokio::test]
async fn a_refused_connect_is_an_error_quoting_the_refusal() {
    let refusal = "HTTP/1.1 403 Forbidden\r\ncontent-length: 37\r\n\r\n{\"error\":\"egress_denied\",\"rule\":null}";
    let (proxy, _heads) = proxy("127.0.0.1:9".parse().unwrap(), Some(refusal)).await;
    let ca = tempfile::tempdir().unwrap();
    let (pem, _) = demo_tls().unwrap();
    std::fs::write(ca.path().join("ca.pem"), pem).unwrap();
    let egress = Egress {
        proxy: Some(proxy),
        ca_file: ca.path().join("ca.pem"),
    };
    let err = attempt(&egress, URL, 1, None, &trace()).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("CONNECT api.stripe.com:443 refused with 403 Forbidden")
            && err.contains("egress_denied"),
        "{err}"
    );
}

#[tokio::test]
async fn a_server_the_ca_file_does_not_vouch_for_is_refused() {
    let (stripe_addr, _their_ca, _requests) = stripe(200, r#"{"id":"ch_x"}"#).await;
    let (proxy, _heads) = proxy(stripe_addr, None).await;
    let other = tempfile::tempdir().unwrap();
    let (pem, _) = demo_tls().unwrap();
    std::fs::write(other.path().join("ca.pem"), pem).unwrap();
    let egress = Egress {
        proxy: Some(proxy),
        ca_file: other.path().join("ca.pem"),
    };
    let err = attempt(&egress, URL, 1, None, &trace()).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("TLS with api.stripe.com:443"), "{err}");
}

#[tokio::test]
async fn a_stripe_error_answer_is_an_error_quoting_it() {
    let body = r#"{"error":{"type":"card_error","message":"declined"}}"#;
    let (stripe_addr, ca, _requests) = stripe(402, body).await;
    let (proxy, _heads) = proxy(stripe_addr, None).await;
    let egress = Egress {
        proxy: Some(proxy),
        ca_file: ca.path().join("ca.pem"),
    };
    let err = attempt(&egress, URL, 1, None, &trace()).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("answered 402") && err.contains("declined"),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_proxy_the_app_connects_by_itself_and_verifies_the_name() {
    // In a pod there is no HTTPS_PROXY: the app resolves and connects itself (its sidecar
    // captures the connection). Reaching the stand-in as `localhost` shows both that the app
    // connected directly (the handshake happened) and that it still verifies the name.
    let (stripe_addr, ca, mut requests) = stripe(200, r#"{"id":"ch_direct"}"#).await;
    let egress = Egress {
        proxy: None,
        ca_file: ca.path().join("ca.pem"),
    };
    let url = format!("https://localhost:{}/v1/charges", stripe_addr.port());
    let err = attempt(&egress, &url, 1, None, &trace()).await.unwrap_err();
    assert!(format!("{err:#}").contains("TLS with localhost"), "{err:#}");

    assert!(
        requests.try_recv().is_err(),
        "no request goes to an unverified server"
    );
}
