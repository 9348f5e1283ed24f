//! The one retry both HTTP/1.1 keep-alive hops make (sidecar → peer sidecar, inbound
//! sidecar → local app): a request written to a *reused* idle connection that the
//! server was closing at the same moment (Node.js closes idle connections after 5 s)
//! fails before any response head, and is sent once more on a fresh connection —
//! but only when sending it twice cannot matter:
//!
//! - the method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE),
//!   so even if the server did act on the first copy, acting again is harmless;
//! - the body is known to be empty, so nothing needs to be buffered for the replay;
//! - the failure says "the connection closed" (see [`closed_before_response`]), not
//!   e.g. a malformed response.
//!
//! POST and PATCH, and any request with a body, are never replayed: they get the 502
//! with `retryable: false`, as the caller cannot know whether the server acted.
//! Requests hyper hands back unsent (`TrySendError::take_message`) are another matter:
//! those were provably never written and are redialled whatever their method.

use std::error::Error as StdError;
use std::io;

use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body;

use crate::body::{ProxyBody, empty};

/// What it takes to send an idempotent, body-less request a second time.
///
/// Extensions are not kept: they are this process's own bookkeeping (caller identity,
/// upgrade handles), already acted on by the layers above; the HTTP clients that send
/// the replay read none of them.
#[derive(Debug)]
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// `Some` when `request` may be sent twice: idempotent method, known-empty body.
    /// Copies the head, so call it only where a replay is actually possible.
    pub(crate) fn of(request: &Request<ProxyBody>) -> Option<Replay> {
        if !is_idempotent(request.method()) || !is_known_empty(request.body()) {
            return None;
        }
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    /// The request again, with an empty body.
    pub(crate) fn into_request(self) -> Request<ProxyBody> {
        let mut request = Request::new(empty());
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// RFC 9110 §9.2.2. (CONNECT never reaches the hops that retry: it is answered by the
/// outbound listener itself.)
pub(crate) fn is_idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

/// True only if the body is known to carry no bytes: ended already, or an exact
/// length of zero. A streaming body of unknown length is not empty.
pub(crate) fn is_known_empty<B: Body>(body: &B) -> bool {
    body.is_end_stream() || body.size_hint().exact() == Some(0)
}

/// Whether a failed exchange failed because the connection went away before the
/// response head: hyper's "connection closed before message completed", a request
/// cancelled because the connection closed, a closed channel to the connection task,
/// or the socket-level forms of the same close (reset, broken pipe, and a TLS peer that
/// closed without `close_notify`, which rustls reports as an unexpected EOF).
///
/// Every error an HTTP client returns instead of a `Response` is, by construction,
/// from before the response head: once the head is in, failures surface in the body.
pub(crate) fn closed_before_response(error: &(dyn StdError + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>()
            && (hyper.is_incomplete_message() || hyper.is_canceled() || hyper.is_closed())
        {
            return true;
        }
        if let Some(io) = error.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        cause = error.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::body::{boxed, full};

    fn request(method: Method, body: ProxyBody) -> Request<ProxyBody> {
        Request::builder()
            .method(method)
            .uri("http://billing/charges")
            .header("x-trace", "1")
            .body(body)
            .unwrap()
    }

    #[test]
    fn idempotent_methods_are_those_of_rfc_9110() {
        let idempotent = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];
        for name in idempotent {
            assert!(is_idempotent(&Method::from_bytes(name.as_bytes()).unwrap()));
        }
        for name in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!is_idempotent(
                &Method::from_bytes(name.as_bytes()).unwrap()
            ));
        }
    }

    #[test]
    fn only_idempotent_requests_with_empty_bodies_can_be_replayed() {
        assert!(Replay::of(&request(Method::GET, empty())).is_some());
        assert!(Replay::of(&request(Method::DELETE, empty())).is_some());
        assert!(Replay::of(&request(Method::POST, empty())).is_none());
        assert!(Replay::of(&request(Method::PATCH, empty())).is_none());
        assert!(Replay::of(&request(Method::PUT, full("{}"))).is_none());
        // A streaming body of unknown length might carry bytes.
        let frames = futures_util::stream::pending::<
            Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
        >();
        let streaming = http_body_util::StreamBody::new(frames);
        assert!(Replay::of(&request(Method::GET, boxed(streaming))).is_none());
    }

    #[test]
    fn a_replay_is_the_same_head_with_an_empty_body() {
        let replay = Replay::of(&request(Method::PUT, empty())).unwrap();
        let again = replay.into_request();
        assert_eq!(again.method(), Method::PUT);
        assert_eq!(again.uri(), "http://billing/charges");
        assert_eq!(again.headers()["x-trace"], "1");
        assert!(again.body().is_end_stream());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] io::Error);

    #[test]
    fn socket_closes_anywhere_in_the_chain_count_as_closed() {
        let reset = Wrapped(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(closed_before_response(&reset));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(closed_before_response(&eof));
        let refused = Wrapped(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(!closed_before_response(&refused));
        let other = io::Error::other("bad response");
        assert!(!closed_before_response(&other));
    }
}
