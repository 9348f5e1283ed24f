//! An HTTP upstream for tests that tells the caller exactly what it received.
//!
//! - Any path: answers `200` with JSON `{"method","path","query","version","headers",
//!   "body_bytes","trailers"}` after draining the request body (counted, never stored);
//!   `headers` and `trailers` (the request's trailer section, `{}` if none) map each
//!   lower-case name to the list of its values in order.
//! - `/echo-body…`: streams the request body back as the response body, frame by frame
//!   as it arrives (for proving that a proxy streams instead of buffering).
//!
//! Serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one plain-TCP port.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type EchoBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A running echo upstream on `127.0.0.1`; stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> std::io::Result<EchoServer> {
        EchoServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Binds `addr` (e.g. a port a sidecar already points at) and starts serving.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<EchoServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener));
        Ok(EchoServer { addr, task })
    }

    /// Serves on `listener`, bound by the caller (e.g. inside a pod's network namespace).
    pub fn serve(listener: TcpListener) -> std::io::Result<EchoServer> {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener));
        Ok(EchoServer { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let service = hyper::service::service_fn(echo);
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo(request: Request<Incoming>) -> Result<Response<EchoBody>, Infallible> {
    if request.uri().path().starts_with("/echo-body") {
        let body = request.into_body().boxed_unsync();
        return Ok(Response::new(body));
    }
    let description = describe(&request);
    let mut body = request.into_body();
    let mut body_bytes = 0usize;
    let mut trailers = BTreeMap::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_trailers() {
                Ok(section) => trailers = fields(&section),
                Err(frame) => body_bytes += frame.data_ref().map_or(0, Bytes::len),
            },
            Err(_) => break,
        }
    }
    let mut description = description;
    description["body_bytes"] = json!(body_bytes);
    description["trailers"] = json!(trailers);
    let bytes = Bytes::from(description.to_string());
    let body = Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// Each name in `map` with its values, in order.
fn fields(map: &hyper::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        fields
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value);
    }
    fields
}

fn describe(request: &Request<Incoming>) -> serde_json::Value {
    let headers = fields(request.headers());
    json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "version": format!("{:?}", request.version()),
        "headers": headers,
    })
}
