//! Just enough HTTP for the demo apps: a server loop and a client that goes
//! through `HTTP_PROXY` like curl would, forwarding the trace context of the request
//! being served (`trace_headers`).

use std::convert::Infallible;
use std::future::Future;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::trace_headers::TraceHeaders;

/// The parts of a request the demos look at.
pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string, if any (without `?`).
    pub query: Option<String>,
    /// `Idempotency-Key`, when the caller sent one.
    pub idempotency_key: Option<String>,
    /// `x-meshwork-client-id`, as stamped by the sidecar.
    pub client_id: Option<String>,
    /// The trace context, copied onto every request made while serving this one.
    pub trace: TraceHeaders,
    /// The request body (empty when it could not be read).
    pub body: Bytes,
}

/// A JSON answer.
pub struct Reply {
    status: u16,
    body: serde_json::Value,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply { status, body }
    }
}

/// Serves `handler` on 127.0.0.1:`port` until SIGTERM/SIGINT.
pub async fn serve<F, Fut>(port: u16, handler: F) -> anyhow::Result<()>
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    println!("listening on 127.0.0.1:{port}");
    let shutdown = crate::parent::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(handler(parts(req).await).await)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn parts(req: hyper::Request<Incoming>) -> Request {
    let (head, body) = req.into_parts();
    // Read whole (also drains it, so keep-alive works).
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Request {
        method: head.method.to_string(),
        path: head.uri.path().to_owned(),
        query: head.uri.query().map(str::to_owned),
        idempotency_key: head
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        client_id: head
            .headers
            .get("x-meshwork-client-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        trace: TraceHeaders::copied_from(&head.headers),
        body,
    }
}

/// The header naming the replica that answered (`MESHWORK_REPLICA`, which `up` sets),
/// so callers and tests can watch requests spread over a workload's replicas.
pub const REPLICA_HEADER: &str = "x-demo-replica";

/// This process's replica of its workload (`MESHWORK_REPLICA`; 0 outside `up`).
pub fn replica() -> u16 {
    std::env::var("MESHWORK_REPLICA")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn respond(reply: Reply) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::from(reply.body.to_string() + "\n")));
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    headers.insert(REPLICA_HEADER, replica().into());
    resp
}

/// Sends `method url` (an absolute `http://` URL) with `body` through the proxy in
/// `HTTP_PROXY`, carrying `trace` (the context of the request being served); the status
/// and the whole body of the answer.
pub async fn call_via_proxy(
    method: Method,
    url: &str,
    body: Bytes,
    trace: &TraceHeaders,
) -> anyhow::Result<(u16, Bytes)> {
    let proxy = std::env::var("HTTP_PROXY").context("HTTP_PROXY is not set; run under meshwork")?;
    let addr = proxy.trim_start_matches("http://").trim_end_matches('/');
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the sidecar at {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(body))?;
    trace.copy_onto(req.headers_mut());
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
