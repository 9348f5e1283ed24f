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
    call_through(&proxy, method, url, body, trace).await
}

/// [`call_via_proxy`] with the proxy given (`http://HOST:PORT` or `HOST:PORT`).
async fn call_through(
    proxy: &str,
    method: Method,
    url: &str,
    body: Bytes,
    trace: &TraceHeaders,
) -> anyhow::Result<(u16, Bytes)> {
    let addr = proxy.trim_start_matches("http://").trim_end_matches('/');
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the sidecar at {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body.clone()))?;
    if !body.is_empty() {
        let json = hyper::header::HeaderValue::from_static("application/json");
        req.headers_mut().insert(hyper::header::CONTENT_TYPE, json);
    }
    trace.copy_onto(req.headers_mut());
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// What the echo upstream says it received: header name → values.
    fn received_headers(body: &[u8]) -> serde_json::Map<String, serde_json::Value> {
        let echoed: serde_json::Value = serde_json::from_slice(body).unwrap();
        echoed["headers"].as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn a_call_carries_the_served_requests_trace_context_and_nothing_else_of_it() {
        let upstream = testkit::EchoServer::start().await.unwrap();
        let mut served = hyper::HeaderMap::new();
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        served.insert("traceparent", traceparent.parse().unwrap());
        served.insert("x-b3-sampled", "1".parse().unwrap());
        served.insert("x-meshwork-client-id", "spiffe://x/y".parse().unwrap());
        let trace = TraceHeaders::copied_from(&served);
        let proxy = format!("http://{}", upstream.addr());
        let url = "http://billing/charges";
        let (status, body) = call_through(&proxy, Method::GET, url, Bytes::new(), &trace)
            .await
            .unwrap();
        assert_eq!(status, 200);
        let headers = received_headers(&body);
        assert_eq!(headers["traceparent"], serde_json::json!([traceparent]));
        assert_eq!(headers["x-b3-sampled"], serde_json::json!(["1"]));
        assert!(!headers.contains_key("x-meshwork-client-id"), "{headers:?}");
        assert!(!headers.contains_key("content-type"), "no body, no type");
    }

    #[tokio::test]
    async fn a_call_without_trace_context_sends_none() {
        let upstream = testkit::EchoServer::start().await.unwrap();
        let proxy = upstream.addr().to_string();
        let body = Bytes::from_static(b"{}");
        let trace = TraceHeaders::default();
        let (_, body) = call_through(&proxy, Method::POST, "http://store/checkout", body, &trace)
            .await
            .unwrap();
        let headers = received_headers(&body);
        assert!(
            crate::demo::trace_headers::TRACE_HEADERS
                .iter()
                .all(|h| !headers.contains_key(*h)),
            "{headers:?}"
        );
        assert_eq!(
            headers["content-type"],
            serde_json::json!(["application/json"])
        );
    }
}
