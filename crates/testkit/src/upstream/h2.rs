//! h2c (HTTP/2 with prior knowledge) through hyper: the same script, where a reset or a
//! death mid-body is a reset of the one stream (`RST_STREAM`), the connection living on.
//! Whether the partial body of [`Behaviour::DieMidBody`] reaches the client before the
//! reset is up to the h2 send queue: tests may only rely on the response failing.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{
    ANNOUNCED_BODY, Arrived, Behaviour, PARTIAL_BODY, REQUEST_ID, Shared, UPSTREAM_HEADER,
};

/// Why the upstream ended a stream on purpose (hyper turns it into `RST_STREAM`).
#[derive(Debug)]
struct Fault(&'static str);

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Fault {}

type Body = UnsyncBoxBody<Bytes, Fault>;

pub(super) async fn serve(stream: TcpStream, connection: usize, shared: Arc<Shared>) {
    let service = hyper::service::service_fn(move |request| {
        respond(request, connection, Arc::clone(&shared))
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn respond(
    request: Request<Incoming>,
    connection: usize,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Fault> {
    let (head, mut body) = request.into_parts();
    let mut body_bytes = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Fault("the request body failed"))?;
        body_bytes += frame.data_ref().map_or(0, Bytes::len);
    }
    let arrived = Arrived {
        method: head.method.to_string(),
        path: head.uri.path().to_owned(),
        request_id: head
            .headers
            .get(REQUEST_ID)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        headers: head.headers.len(),
        body_bytes,
        connection,
    };
    let verdict = shared.arrive(&arrived);
    let (status, body) = match verdict.behaviour {
        Behaviour::Answer | Behaviour::Status(_) => {
            let status = match verdict.behaviour {
                Behaviour::Status(code) => code,
                _ => 200,
            };
            let json = shared.answer_body(&arrived, &verdict).to_string();
            let body = Full::new(Bytes::from(json))
                .map_err(|never| match never {})
                .boxed_unsync();
            (status, body)
        }
        Behaviour::Stall => {
            shared.hold().await;
            return Err(Fault("stall released"));
        }
        Behaviour::Reset => return Err(Fault("scripted reset")),
        Behaviour::StallBody => (200, partial(Some(shared.clone()))),
        Behaviour::DieMidBody => (200, partial(None)),
    };
    let mut response = Response::new(body);
    *response.status_mut() = hyper::StatusCode::from_u16(status)
        .map_err(|_| Fault("the scripted status is not an HTTP status"))?;
    let headers = response.headers_mut();
    if let Ok(name) = hyper::header::HeaderValue::from_str(&shared.name) {
        headers.insert(UPSTREAM_HEADER, name);
    }
    headers.insert("x-seen", verdict.seen.into());
    if matches!(
        verdict.behaviour,
        Behaviour::StallBody | Behaviour::DieMidBody
    ) {
        headers.insert(hyper::header::CONTENT_LENGTH, ANNOUNCED_BODY.into());
    }
    Ok(response)
}

/// [`PARTIAL_BODY`] bytes, then (after a stall held until released, with `hold`) an error.
fn partial(hold: Option<Arc<Shared>>) -> Body {
    let first =
        futures_util::stream::iter([Ok(Frame::data(Bytes::from_static(&[b'p'; PARTIAL_BODY])))]);
    let end = futures_util::stream::once(async move {
        if let Some(shared) = hold {
            shared.hold().await;
        }
        Err(Fault("scripted end mid-body"))
    });
    StreamBody::new(first.chain(end)).boxed_unsync()
}
