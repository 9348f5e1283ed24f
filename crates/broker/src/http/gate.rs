//! The gate every request passes: basic auth (401), `X-Broker-API-Version` (412); on the
//! way out successful answers take the shape of that version ([`version`]), every error
//! becomes an OSB JSON body and `X-Broker-API-Request-Identity` is echoed.

use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::extract::Identity;
use super::version::{self, ApiVersion, Document};
use crate::BrokerError;
use crate::error::error_body;
use crate::secret::Secret;

const ORIGINATING_IDENTITY: HeaderName =
    HeaderName::from_static("x-broker-api-originating-identity");
const REQUEST_IDENTITY: HeaderName = HeaderName::from_static("x-broker-api-request-identity");

/// The platform's basic-auth credentials.
pub(crate) struct Auth {
    pub username: String,
    pub password: Secret,
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

fn check_auth(auth: &Auth, headers: &HeaderMap) -> Result<(), BrokerError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let encoded = value
        .and_then(|v| v.strip_prefix("Basic "))
        .ok_or(BrokerError::Unauthorized)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| BrokerError::Unauthorized)?;
    let expected = format!("{}:{}", auth.username, auth.password.expose());
    match constant_time_eq(&decoded, expected.as_bytes()) {
        true => Ok(()),
        false => Err(BrokerError::Unauthorized),
    }
}

/// Decodes `X-Broker-API-Originating-Identity`; an empty header counts as absent. Called by
/// the [`Identity`] extractor, so only endpoints that record it can fail on it (a malformed
/// header on `TRACE` still gets 405).
pub(crate) fn identity(headers: &HeaderMap) -> Result<Identity, BrokerError> {
    let Some(value) = headers.get(ORIGINATING_IDENTITY).filter(|v| !v.is_empty()) else {
        return Ok(Identity(None));
    };
    let text = value.to_str().map_err(|_| {
        BrokerError::BadRequest("X-Broker-API-Originating-Identity is not visible ASCII".to_owned())
    })?;
    text.parse()
        .map(|id| Identity(Some(id)))
        .map_err(|e| BrokerError::BadRequest(format!("X-Broker-API-Originating-Identity: {e}")))
}

fn admit(auth: &Auth, req: &Request) -> Result<ApiVersion, BrokerError> {
    check_auth(auth, req.headers())?;
    ApiVersion::from_headers(req.headers())
}

/// The middleware.
pub(crate) async fn gate(State(auth): State<Arc<Auth>>, req: Request, next: Next) -> Response {
    let request_identity = req.headers().get(REQUEST_IDENTITY).cloned();
    let method = req.method().clone();
    let document = Document::of(&method, req.uri().path());
    let response = match admit(&auth, &req) {
        Ok(version) => {
            let response = next.run(req).await;
            match document {
                Some(document) => in_shape_of(version, document, response).await,
                None => response,
            }
        }
        Err(e) => e.into_response(),
    };
    let mut response = as_osb_error(response, &method).await;
    if let Some(id) = request_identity {
        response.headers_mut().insert(REQUEST_IDENTITY, id);
    }
    response
}

/// Whether a `Content-Type` names JSON: `application/json` or a `+json` type, any parameters.
pub(crate) fn is_json_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && essence
                .get(essence.len() - 5..)
                .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_type)
}

/// A successful JSON answer reshaped for the platform's API version (see [`version`]).
async fn in_shape_of(v: ApiVersion, document: Document, response: Response) -> Response {
    if v == ApiVersion::NEWEST || !response.status().is_success() || !is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    version::shape_headers(document, v, &mut parts.headers);
    // Our own bodies are small JSON documents; anything else passes through untouched.
    let bytes = to_bytes(body, 1024 * 1024).await.unwrap_or_default();
    let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut value) => {
            version::shape(document, v, &mut value);
            parts.headers.remove(header::CONTENT_LENGTH);
            Body::from(value.to_string())
        }
        Err(_) => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

/// Rewrites error responses not produced by [`BrokerError`] (axum's 405, body-limit 413, ...)
/// into OSB error bodies, keeping their status and headers (notably `Allow`).
async fn as_osb_error(response: Response, method: &axum::http::Method) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    // axum adds `Allow` to 405s outside this middleware, so the header is not visible here.
    let description = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            format!("method {method} is not allowed on this endpoint; see the Allow header")
        }
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let code: String = status
        .canonical_reason()
        .unwrap_or("Error")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .collect();
    let fresh = error_body(status, &code, &description);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let (_, body) = fresh.into_parts();
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn versions() {
        let v = |pairs: &[(&str, &str)]| ApiVersion::from_headers(&headers(pairs));
        assert!(v(&[("x-broker-api-version", "2.17")]).is_ok());
        assert!(v(&[("x-broker-api-version", "2.13")]).is_ok());
        assert!(v(&[("x-broker-api-version", "2.12")]).is_err());
        assert!(v(&[("x-broker-api-version", "3.0")]).is_err());
        assert!(v(&[("x-broker-api-version", "2.17.1")]).is_err());
        assert!(v(&[]).is_err());
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.x+json",
        ] {
            assert!(is_json_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "+json",
            "application/jsonx",
        ] {
            assert!(!is_json_type(bad), "{bad}");
        }
    }

    #[test]
    fn basic_auth() {
        let auth = Auth {
            username: "u".into(),
            password: Secret::new("p"),
        };
        assert!(check_auth(&auth, &headers(&[("authorization", "Basic dTpw")])).is_ok());
        assert!(check_auth(&auth, &headers(&[("authorization", "Basic dTpx")])).is_err());
        assert!(check_auth(&auth, &headers(&[])).is_err());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
