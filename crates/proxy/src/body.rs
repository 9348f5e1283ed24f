//! The one body type that flows through the proxy stacks, and JSON error responses.
//!
//! Bodies are boxed once at the edge so every layer sees the same concrete type; the
//! box is a streaming body (frames are passed through as they arrive, never collected).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};

/// Boxed error type carried by proxy bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming HTTP body, boxed so the stacks need not be generic over it.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Boxes any streaming body into a [`ProxyBody`] without buffering it.
pub fn boxed<B>(body: B) -> ProxyBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A complete, in-memory body (for responses the proxy writes itself).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    boxed(Full::new(bytes.into()))
}

/// An empty body.
pub fn empty() -> ProxyBody {
    full(Bytes::new())
}

/// A response with a JSON body the proxy generated itself.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<ProxyBody> {
    // invariant: serialising a `serde_json::Value` cannot fail (string keys only).
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
