//! Hop-by-hop header stripping (RFC 9110 §7.6.1), as a tower layer applied in both
//! directions at every proxy edge.
//!
//! A proxy must not forward headers that describe *its* connection to the next hop:
//! `Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE` (except the
//! `trailers` token, which gRPC needs end to end), `Transfer-Encoding` (hyper frames
//! bodies itself) and `Upgrade`.
//!
//! Except for a protocol upgrade (RFC 9110 §7.8, e.g. WebSocket): an HTTP/1.1 request whose
//! `Connection` lists `upgrade` keeps `Upgrade` and gets `Connection: upgrade` back after
//! stripping, and so does a `101 Switching Protocols` response; every other hop-by-hop
//! header still goes. Each hop then upgrades its own connection ([`crate::upgrade`]).

use std::task::{Context, Poll};

use futures_util::future::{MapOk, TryFutureExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use tower::{Layer, Service};

/// Headers that are hop-by-hop regardless of what `Connection` lists.
const ALWAYS: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// The `Upgrade` value of an HTTP/1.1 upgrade request (its `Connection` lists `upgrade`);
/// `None` for any other request (HTTP/2 has no `Upgrade`).
pub fn requested_upgrade<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != http::Version::HTTP_11 {
        return None;
    }
    let upgrade = request.headers().get(header::UPGRADE)?;
    let listed = request
        .headers()
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    listed.then(|| upgrade.clone())
}

/// Strips `headers`, keeping the upgrade `upgrade` (when there is one) as `Upgrade` and
/// `Connection: upgrade`.
fn strip_keeping_upgrade(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    strip_hop_by_hop(headers);
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Removes every hop-by-hop header from `headers`.
///
/// `TE` survives only as `te: trailers`, and only if the sender offered `trailers`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Fast path: most messages carry none of these, and one pass over the (few) names
    // present is much cheaper than the hashed removals below. Without a `Connection`
    // header no other name can be hop-by-hop, so this check is exact.
    if !headers.keys().any(needs_stripping) {
        return;
    }
    for name in connection_named(headers) {
        headers.remove(name);
    }
    for name in &ALWAYS {
        headers.remove(name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
    strip_te(headers);
}

/// True for a name [`strip_hop_by_hop`] may remove or rewrite: one of [`ALWAYS`]
/// (`Connection` included, which brings the names it lists), `TE`, or `Proxy-*`.
/// (Compared one by one rather than with `ALWAYS.contains`: standard names compare as
/// small integers, and the const array would be built on every call.)
fn needs_stripping(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || *name == header::TE
        || {
            let name = name.as_str();
            name == "keep-alive" || name.starts_with("proxy-")
        }
}

/// The header names listed in every `Connection` header (comma-separated tokens).
/// Tokens that are not valid header names are ignored: they cannot name a header.
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// Keeps `te: trailers` if any `TE` value offered the `trailers` token; drops the rest.
fn strip_te(headers: &mut HeaderMap) {
    let offers_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| {
            let coding = token.split(';').next().unwrap_or("").trim();
            coding.eq_ignore_ascii_case("trailers")
        });
    headers.remove(header::TE);
    if offers_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Tower layer that strips hop-by-hop headers from requests on the way in and from
/// responses on the way out.
#[derive(Debug, Clone, Copy, Default)]
pub struct HopByHopLayer;

impl<S> Layer<S> for HopByHopLayer {
    type Service = HopByHop<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HopByHop { inner }
    }
}

/// The service produced by [`HopByHopLayer`].
#[derive(Debug, Clone)]
pub struct HopByHop<S> {
    inner: S,
}

/// Strips the response's hop-by-hop headers (a `fn` item, so the layer's future is a
/// named type rather than a boxed one).
fn strip_response<B>(mut response: Response<B>) -> Response<B> {
    let upgrade = (response.status() == http::StatusCode::SWITCHING_PROTOCOLS)
        .then(|| response.headers().get(header::UPGRADE).cloned())
        .flatten();
    strip_keeping_upgrade(response.headers_mut(), upgrade);
    response
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for HopByHop<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = MapOk<S::Future, fn(Response<ResB>) -> Response<ResB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        let upgrade = requested_upgrade(&request);
        strip_keeping_upgrade(request.headers_mut(), upgrade);
        self.inner
            .call(request)
            .map_ok(strip_response::<ResB> as fn(Response<ResB>) -> Response<ResB>)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn strips_fixed_hop_by_hop_headers() {
        let mut map = headers(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(names(&map), ["content-type"]);
    }

    #[test]
    fn an_upgrade_request_and_its_101_keep_upgrade_and_nothing_else() {
        let mut request = Request::get("/ws").body(()).unwrap();
        *request.headers_mut() = headers(&[
            ("connection", "keep-alive, Upgrade, x-hop"),
            ("upgrade", "websocket"),
            ("x-hop", "1"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        let upgrade = requested_upgrade(&request);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        strip_keeping_upgrade(request.headers_mut(), upgrade);
        assert_eq!(
            names(request.headers()),
            ["connection", "sec-websocket-key", "upgrade"]
        );
        assert_eq!(request.headers()[header::CONNECTION], "upgrade");
        let mut h2 = Request::get("/ws").body(()).unwrap();
        *h2.version_mut() = http::Version::HTTP_2;
        *h2.headers_mut() = headers(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        assert_eq!(requested_upgrade(&h2), None);
        let mut switching = Response::new(());
        *switching.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        *switching.headers_mut() = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let switching = strip_response(switching);
        assert_eq!(names(switching.headers()), ["connection", "upgrade"]);
        let mut ok = Response::new(());
        *ok.headers_mut() = headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(strip_response(ok).headers().is_empty());
    }

    #[test]
    fn strips_headers_named_by_connection() {
        let mut map = headers(&[
            ("connection", "close, X-Secret-Hop"),
            ("connection", " x-other ,"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("x-end-to-end", "3"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(names(&map), ["x-end-to-end"]);
    }

    #[test]
    fn connection_tokens_that_are_not_header_names_are_ignored() {
        let mut map = headers(&[("connection", "bad token, x-a"), ("x-a", "1"), ("x-b", "2")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(names(&map), ["x-b"]);
    }

    #[test]
    fn te_keeps_only_trailers() {
        let mut map = headers(&[("te", "gzip, Trailers;q=1")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(map.get_all(header::TE).iter().count(), 1);
        assert_eq!(map[header::TE], "trailers");

        let mut map = headers(&[("te", "gzip, deflate")]);
        strip_hop_by_hop(&mut map);
        assert!(map.get(header::TE).is_none());
    }

    #[test]
    fn end_to_end_headers_are_left_exactly_as_they_were() {
        let original = headers(&[
            ("host", "billing"),
            ("accept", "*/*"),
            ("x-multi", "1"),
            ("x-multi", "2"),
            ("content-length", "0"),
            ("x-proxy-note", "not a proxy- header"),
        ]);
        let mut map = original.clone();
        strip_hop_by_hop(&mut map);
        let pairs = |map: &HeaderMap| -> Vec<(String, Vec<u8>)> {
            map.iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        assert_eq!(pairs(&map), pairs(&original));
    }

    #[test]
    fn each_hop_by_hop_name_alone_is_stripped() {
        for name in [
            "connection",
            "transfer-encoding",
            "upgrade",
            "keep-alive",
            "te",
            "proxy-authorization",
            "proxy-authenticate",
            "proxy-connection",
            "proxy-anything",
        ] {
            let mut map = headers(&[("x-keep", "1"), (name, "gzip")]);
            strip_hop_by_hop(&mut map);
            assert_eq!(names(&map), ["x-keep"], "{name}");
            assert!(ALWAYS.iter().all(needs_stripping));
        }
    }

    #[test]
    fn a_name_listed_in_connection_goes_with_it() {
        let mut map = headers(&[("x-a", "1"), ("connection", "X-A"), ("x-b", "2")]);
        strip_hop_by_hop(&mut map);
        assert_eq!(names(&map), ["x-b"]);
    }

    #[tokio::test]
    async fn layer_strips_both_directions() {
        let inner = tower::service_fn(|request: Request<()>| async move {
            assert!(request.headers().get("x-hop").is_none());
            assert_eq!(request.headers()["x-keep"], "1");
            let response = Response::builder()
                .header("connection", "x-resp-hop")
                .header("x-resp-hop", "1")
                .header("x-resp-keep", "1")
                .body(())
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        });
        let mut service = HopByHopLayer.layer(inner);
        let request = Request::builder()
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .header("x-keep", "1")
            .body(())
            .unwrap();
        let response = service.call(request).await.unwrap();
        assert_eq!(names(response.headers()), ["x-resp-keep"]);
    }
}
