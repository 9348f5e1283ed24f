//! A bare HTTPS client for the fake: status code and JSON body, or a watch's lines.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;

use crate::kube_fake::FakeApiServer;

async fn send(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
    token: &str,
) -> hyper::Response<Incoming> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let name = ServerName::IpAddress(server.addr().ip().into());
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", server.addr().to_string())
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(Full::new(bytes))
        .unwrap();
    sender.send_request(request).await.unwrap()
}

/// `method path` with a JSON `body`; the status and the JSON answer.
pub(crate) async fn call(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    call_as(server, method, path, "application/json", body).await
}

/// The same with a content type (for patches).
pub(crate) async fn call_as(
    server: &FakeApiServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let response = send(server, method, path, content_type, body, server.token()).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// `GET path` with a wrong token.
pub(crate) async fn call_with_token(
    server: &FakeApiServer,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let response = send(server, "GET", path, "application/json", None, token).await;
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// An open watch: its HTTP status and its events as they come.
pub(crate) struct Watch {
    pub status: u16,
    body: Incoming,
    pending: Vec<u8>,
}

impl Watch {
    pub(crate) async fn open(server: &FakeApiServer, path: &str) -> Watch {
        let response = send(
            server,
            "GET",
            path,
            "application/json",
            None,
            server.token(),
        )
        .await;
        Watch {
            status: response.status().as_u16(),
            body: response.into_body(),
            pending: Vec::new(),
        }
    }

    /// The next event, `None` when the server ends the watch (panics after 10 s: a guard
    /// against hanging, not a timing assertion).
    pub(crate) async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .expect("a watch event within 10 s");
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next event's `type` and object name (or resourceVersion for bookmarks/errors).
    pub(crate) async fn next_brief(&mut self) -> Option<(String, String)> {
        let event = self.next().await?;
        let kind = event["type"].as_str().unwrap().to_owned();
        let object = &event["object"];
        let what = object["metadata"]["name"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            });
        Some((kind, what))
    }
}
