//! The request form each HTTP version takes on a pooled connection.

use http::Request;

use crate::body::ProxyBody;

/// HTTP/2 carries the host as `:authority` (from an absolute URI), not as `Host`.
/// (A request coming back unsent from an HTTP/1.1 attempt is origin-form again; its
/// `Host` is moved back into the URI.)
pub(super) fn http2(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    *request.version_mut() = http::Version::HTTP_2;
    let host = request.headers_mut().remove(http::header::HOST);
    if request.uri().authority().is_none() {
        let authority = host.and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTP);
        parts.authority = authority;
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// HTTP/1.1 uses origin-form; the host travels in `Host`.
pub(crate) fn http1(mut request: Request<ProxyBody>) -> Request<ProxyBody> {
    *request.version_mut() = http::Version::HTTP_11;
    if let Some(authority) = request.uri().authority().cloned()
        && !request.headers().contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    if let Some(path) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = http::Uri::from(path);
    }
    request
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::body::empty;

    #[test]
    fn http1_form_is_origin_form_with_host() {
        let request = Request::builder()
            .uri("http://billing:80/charges?x=1")
            .body(empty())
            .unwrap();
        let request = http1(request);
        assert_eq!(request.uri(), "/charges?x=1");
        assert_eq!(request.headers()[http::header::HOST], "billing:80");
    }

    #[test]
    fn http2_form_is_absolute_without_host_even_after_an_http1_attempt() {
        let request = Request::builder()
            .uri("http://billing/charges")
            .header(http::header::HOST, "billing")
            .body(empty())
            .unwrap();
        let request = http2(http1(request));
        assert_eq!(request.uri(), "http://billing/charges");
        assert!(request.headers().get(http::header::HOST).is_none());
        assert_eq!(request.version(), http::Version::HTTP_2);
    }
}
