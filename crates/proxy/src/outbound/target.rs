//! What an outbound proxy request asks for, parsed from its request target
//! (RFC 9112 §3.2): absolute-form `http://host[:port]/path` or authority-form
//! `CONNECT host:port`. Origin-form (`GET /path`) is routed by its `Host` header,
//! as Linkerd does for transparently redirected traffic: a client that talks to
//! the outbound port as if it were the service (`curl -H 'Host: billing'
//! http://127.0.0.1:PORT/charges`, load generators, h2 clients) reaches the service.

use http::uri::{PathAndQuery, Uri};
use http::{Method, Request};

use crate::forward_error::ForwardError;

/// A parsed outbound proxy request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `GET http://host[:port]/path?query`.
    Http {
        /// Lower-cased host (a mesh service name, if it is one).
        host: String,
        /// The explicit port, if any.
        port: Option<u16>,
        /// What to send as the origin-form target.
        path_and_query: PathAndQuery,
    },
    /// `CONNECT host:port`.
    Connect {
        /// Lower-cased host.
        host: String,
        /// The port (mandatory in authority-form).
        port: u16,
    },
}

impl Target {
    /// The host the client asked for.
    pub fn host(&self) -> &str {
        match self {
            Target::Http { host, .. } | Target::Connect { host, .. } => host,
        }
    }

    /// The port the client asked for, when it named one (always for CONNECT).
    pub fn port(&self) -> Option<u16> {
        match self {
            Target::Http { port, .. } => *port,
            Target::Connect { port, .. } => Some(*port),
        }
    }

    /// Parses the target of `request`; origin-form falls back to the `Host` header.
    pub fn of<B>(request: &Request<B>) -> Result<Target, ForwardError> {
        let uri = request.uri();
        if uri.authority().is_none()
            && request.method() != Method::CONNECT
            && let Some(host) = request.headers().get(http::header::HOST)
        {
            return parse_host_header(host, uri);
        }
        Target::parse(request.method(), uri)
    }

    /// Parses a request target given its method.
    pub fn parse(method: &Method, uri: &Uri) -> Result<Target, ForwardError> {
        if method == Method::CONNECT {
            return parse_connect(uri);
        }
        let Some(authority) = uri.authority() else {
            return Err(bad(
                "origin-form request sent to the outbound proxy; send absolute-form \
                 (http://SERVICE/path), e.g. by setting HTTP_PROXY",
            ));
        };
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "scheme {other:?} in absolute-form is not supported; use http:// \
                     (the mesh adds mTLS between sidecars)"
                )));
            }
            None => return Err(bad("absolute-form request without a scheme")),
        }
        if authority.as_str().contains('@') {
            return Err(bad("userinfo in the request target is not allowed"));
        }
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Target::Http {
            host: authority.host().to_ascii_lowercase(),
            port: authority.port_u16(),
            path_and_query,
        })
    }
}

/// Origin-form with `Host: service[:port]`.
fn parse_host_header(host: &http::HeaderValue, uri: &Uri) -> Result<Target, ForwardError> {
    let authority: http::uri::Authority = host
        .to_str()
        .ok()
        .and_then(|h| h.parse().ok())
        .filter(|a: &http::uri::Authority| !a.as_str().contains('@'))
        .ok_or_else(|| bad("the Host header is not a valid host[:port]"))?;
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Ok(Target::Http {
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16(),
        path_and_query,
    })
}

fn parse_connect(uri: &Uri) -> Result<Target, ForwardError> {
    let authority = uri
        .authority()
        .filter(|_| uri.scheme().is_none() && uri.path_and_query().is_none())
        .ok_or_else(|| bad("CONNECT needs an authority-form target (host:port)"))?;
    let port = authority
        .port_u16()
        .ok_or_else(|| bad("CONNECT target has no port"))?;
    Ok(Target::Connect {
        host: authority.host().to_ascii_lowercase(),
        port,
    })
}

fn bad(reason: &str) -> ForwardError {
    ForwardError::BadRequest {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn parse(method: &str, target: &str) -> Result<Target, ForwardError> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        Target::parse(&method, &target.parse().unwrap())
    }

    fn http(host: &str, port: Option<u16>, pq: &'static str) -> Target {
        Target::Http {
            host: host.to_owned(),
            port,
            path_and_query: PathAndQuery::from_static(pq),
        }
    }

    #[test]
    fn absolute_form_bare_service_name() {
        let target = parse("GET", "http://billing/charges").unwrap();
        assert_eq!(target, http("billing", None, "/charges"));
    }

    #[test]
    fn absolute_form_with_port_query_and_case() {
        let target = parse("POST", "http://Billing:8080/charges?id=1&x=y").unwrap();
        assert_eq!(target, http("billing", Some(8080), "/charges?id=1&x=y"));
    }

    #[test]
    fn absolute_form_without_path_gets_root() {
        assert_eq!(
            parse("GET", "http://billing").unwrap(),
            http("billing", None, "/")
        );
    }

    #[test]
    fn origin_form_uses_the_host_header() {
        let request = Request::get("/charges?x=1")
            .header("host", "Billing:80")
            .body(())
            .unwrap();
        assert_eq!(
            Target::of(&request).unwrap(),
            http("billing", Some(80), "/charges?x=1")
        );
        let bad = Request::get("/").header("host", "a b").body(()).unwrap();
        assert!(Target::of(&bad).is_err());
    }

    #[test]
    fn origin_form_without_host_is_refused() {
        let err = parse("GET", "/charges").unwrap_err();
        assert!(err.to_string().contains("origin-form"), "{err}");
    }

    #[test]
    fn other_schemes_and_userinfo_are_refused() {
        assert!(parse("GET", "https://billing/").is_err());
        assert!(parse("GET", "http://user:pw@billing/").is_err());
    }

    #[test]
    fn connect_authority_form() {
        let target = parse("CONNECT", "billing:443").unwrap();
        assert_eq!(
            target,
            Target::Connect {
                host: "billing".to_owned(),
                port: 443
            }
        );
        assert!(parse("CONNECT", "billing").is_err());
        assert!(parse("CONNECT", "http://billing:443/").is_err());
    }
}
