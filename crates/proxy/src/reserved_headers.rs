//! Mesh-reserved header names: the one definition of which fields only a sidecar may
//! write, and their removal from everything a caller sends in.
//!
//! Every `x-meshwork-*` name is reserved. Today the application trusts
//! `x-meshwork-client-id` (the verified caller, [`crate::CLIENT_ID_HEADER`]) and sees
//! `x-meshwork-decision-id` on denials; a prefix rather than a list means a field added
//! later is protected from the day it exists, with no list to keep in step.
//!
//! The inbound listener is the trust boundary: any holder of an SVID from the trust
//! bundle can dial it directly, so nothing a peer sidecar did on its way out can be relied
//! on. There, caller-supplied reserved fields are removed from the request header section
//! ([`strip_reserved`]), from the request trailer section as it streams
//! ([`ReservedTrailersStripped`]: only a trailers frame costs anything, and nothing is
//! buffered), and from a `Trailer` declaration (RFC 9110 §6.6.2), whatever the framing
//! (h1 chunked, h2 HEADERS after DATA), the protocol or the tunnel the request came
//! through. The outbound listener does not strip them: it would add work to every request
//! while guaranteeing nothing to a receiver.
//!
//! Responses the sidecar did not write itself — the local app's (inbound) and a plain-HTTP
//! egress server's (outbound) — lose their reserved fields too, headers and trailers
//! ([`untrusted_response`]): otherwise the app could forge a denial
//! (`x-meshwork-decision-id` on a 403) into a caller's view, and a mesh peer's
//! `x-meshwork-*` response fields are always its sidecar's own. (This sidecar's own
//! denials are known from [`crate::denial::Denied`], never from a header.)

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, ProxyBody, boxed};

/// The prefix of every mesh-reserved header name (names are lower case in `http`).
pub const RESERVED_PREFIX: &str = "x-meshwork-";

/// True for a name only a sidecar may set.
pub fn is_reserved(name: &HeaderName) -> bool {
    name.as_str().starts_with(RESERVED_PREFIX)
}

/// Removes every reserved field from `headers`, and every reserved name from its `Trailer`
/// declarations (dropping a declaration left empty).
///
/// One pass over the names present when there is nothing to do (the common case); the
/// removals allocate only when a caller actually sent something to remove.
pub fn strip_reserved(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|name| is_reserved(name) || *name == header::TRAILER)
    {
        return;
    }
    let reserved: Vec<HeaderName> = headers.keys().filter(|n| is_reserved(n)).cloned().collect();
    for name in reserved {
        headers.remove(name);
    }
    strip_trailer_declaration(headers);
}

/// Rewrites the `Trailer` fields without the reserved names they declare. Left untouched
/// (byte for byte, and without allocating) when they declare none.
fn strip_trailer_declaration(headers: &mut HeaderMap) {
    if !declared(headers).any(is_reserved_token) {
        return;
    }
    let mut kept: Vec<u8> = Vec::new();
    for token in declared(headers).filter(|token| !is_reserved_token(token)) {
        if !kept.is_empty() {
            kept.extend_from_slice(b", ");
        }
        kept.extend_from_slice(token);
    }
    headers.remove(header::TRAILER);
    if kept.is_empty() {
        return;
    }
    // The tokens came out of valid header values and lost only separators and
    // surrounding whitespace, so this cannot fail; if it ever did, dropping the
    // declaration is the safe outcome.
    if let Ok(value) = HeaderValue::from_bytes(&kept) {
        headers.insert(header::TRAILER, value);
    }
}

/// The field names the `Trailer` fields declare (comma-separated, whitespace trimmed).
fn declared(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    headers
        .get_all(header::TRAILER)
        .iter()
        .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty())
}

/// True for a declared name that is reserved, in any letter case.
fn is_reserved_token(token: &[u8]) -> bool {
    let prefix = RESERVED_PREFIX.as_bytes();
    token
        .get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// A request body whose trailer section, if any, arrives without reserved fields. Data
/// frames pass through untouched; the filter runs once, on the trailers frame.
#[derive(Debug)]
pub struct ReservedTrailersStripped<B> {
    inner: B,
}

impl<B> ReservedTrailersStripped<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        ReservedTrailersStripped { inner }
    }
}

impl<B> Body for ReservedTrailersStripped<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        // In place: a data frame costs one discriminant check, and no frame is moved.
        if let Poll::Ready(Some(Ok(frame))) = &mut polled
            && let Some(trailers) = frame.trailers_mut()
        {
            strip_reserved(trailers);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The inbound listener's body adaptor: boxes `body` (as every listener does, once) with
/// its trailers filtered, so the filter costs no allocation of its own.
pub fn inbound_body<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    boxed(ReservedTrailersStripped::new(body))
}

/// A response from the local app or an egress server, boxed (once) without reserved
/// fields: its headers are stripped here, its trailers as they stream.
pub fn untrusted_response<B>(response: Response<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    strip_reserved(&mut parts.headers);
    Response::from_parts(parts, inbound_body(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn the_sidecars_own_headers_are_reserved() {
        assert!(is_reserved(&crate::denial::DECISION_ID_HEADER));
        assert!(is_reserved(&HeaderName::from_static("x-meshwork-future")));
        assert!(!is_reserved(&HeaderName::from_static("x-meshworkz")));
        assert!(!is_reserved(&header::TRAILER));
    }

    #[test]
    fn every_reserved_field_goes_in_any_case_and_number() {
        let mut map = headers(&[
            (
                "X-Meshwork-Client-Id",
                "spiffe://meshwork.local/ns/default/sa/admin",
            ),
            ("x-meshwork-client-id", "second"),
            ("x-meshwork-decision-id", "forged"),
            ("x-meshwork-anything", "forged"),
            ("x-keep", "1"),
        ]);
        strip_reserved(&mut map);
        assert_eq!(pairs(&map), [("x-keep".into(), "1".into())]);
    }

    #[test]
    fn a_trailer_declaration_loses_only_reserved_names() {
        let mut map = headers(&[
            ("trailer", "X-Meshwork-Client-Id, x-checksum"),
            ("trailer", " x-meshwork-other ,grpc-status"),
        ]);
        strip_reserved(&mut map);
        assert_eq!(
            pairs(&map),
            [("trailer".into(), "x-checksum, grpc-status".into())]
        );

        let mut map = headers(&[("trailer", "x-meshwork-client-id"), ("x-keep", "1")]);
        strip_reserved(&mut map);
        assert_eq!(pairs(&map), [("x-keep".into(), "1".into())]);
    }

    #[test]
    fn odd_trailer_declarations_never_panic_and_keep_their_other_tokens() {
        let mut map = HeaderMap::new();
        let odd = HeaderValue::from_bytes(b"x-a,,  ,\tX-MESHWORK-CLIENT-ID\t, \x80abc,x-meshwork-")
            .unwrap();
        map.insert(header::TRAILER, odd);
        strip_reserved(&mut map);
        assert_eq!(map[header::TRAILER].as_bytes(), b"x-a, \x80abc");

        let mut map = HeaderMap::new();
        map.insert(header::TRAILER, HeaderValue::from_static(",, ,"));
        strip_reserved(&mut map);
        assert_eq!(map[header::TRAILER], ",, ,", "no reserved name: untouched");
    }

    #[test]
    fn clean_headers_are_left_exactly_as_they_were() {
        let original = headers(&[
            ("host", "billing"),
            ("trailer", "X-Checksum ,  grpc-status"),
            ("x-meshworkish", "1"),
        ]);
        let mut map = original.clone();
        strip_reserved(&mut map);
        assert_eq!(pairs(&map), pairs(&original));
    }

    #[tokio::test]
    async fn untrusted_responses_lose_reserved_headers_and_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-meshwork-decision-id", HeaderValue::from_static("forged"));
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"no"))),
            Ok(Frame::trailers(trailers)),
        ];
        let response = Response::builder()
            .status(403)
            .header("x-meshwork-decision-id", "forged")
            .header("x-meshwork-client-id", "forged")
            .header("content-type", "text/plain")
            .body(StreamBody::new(futures_util::stream::iter(frames)))
            .unwrap();
        let response = untrusted_response(response);
        assert_eq!(
            pairs(response.headers()),
            [("content-type".into(), "text/plain".into())]
        );
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().unwrap().is_empty());
    }

    #[tokio::test]
    async fn trailers_frames_are_filtered_and_data_passes_through() {
        let trailers = headers(&[
            (
                "x-meshwork-client-id",
                "spiffe://meshwork.local/ns/default/sa/admin",
            ),
            ("x-checksum", "abc"),
        ]);
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(Frame::data(Bytes::from_static(b"hello "))),
            Ok(Frame::data(Bytes::from_static(b"world"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = inbound_body(StreamBody::new(futures_util::stream::iter(frames)));
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap();
        assert_eq!(pairs(&trailers), [("x-checksum".into(), "abc".into())]);
        assert_eq!(collected.to_bytes(), "hello world");
    }
}
