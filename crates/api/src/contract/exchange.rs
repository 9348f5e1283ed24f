//! One JSON request and its answer over HTTP/1.1, on a stream the caller already
//! connected: the transport every client of the contract shares.
//!
//! Callers own the connection (unix socket, TLS over TCP), the timeout (wrap the
//! future in `tokio::time::timeout`; dropping it drops the connection, because the
//! connection is driven inside this future rather than in a spawned task) and the
//! typed routes. This module owns the request shape, the answer size cap and the
//! reading of the contract's [`ErrorBody`] on non-2xx answers.

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ErrorBody;

/// Longest answer accepted by default; snapshots of a few thousand endpoints fit easily.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How much of a non-contract error body is kept for the error message.
const EXCERPT_CHARS: usize = 200;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The HTTP handshake, request or answer failed on the wire (peer closed, bad HTTP).
    #[error("HTTP exchange failed")]
    Transport(#[source] hyper::Error),
    /// The answer body exceeded the cap.
    #[error("the answer exceeds {limit} bytes")]
    TooLarge {
        /// The cap that was passed.
        limit: usize,
    },
    /// The peer answered with a non-2xx status.
    #[error("answered {status}: {}", refusal_text(.body.as_ref(), .excerpt))]
    Status {
        /// The status code.
        status: StatusCode,
        /// The contract's error body, when the answer carried one.
        body: Option<ErrorBody>,
        /// The start of the raw answer (at most 200 characters), for answers without one.
        excerpt: String,
    },
}

fn refusal_text(body: Option<&ErrorBody>, excerpt: &str) -> String {
    match body {
        Some(body) => format!("{}: {}", body.error, body.description),
        None => excerpt.to_owned(),
    }
}

/// How a client shapes its requests: the `Host` it sends and the answer size cap.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    host: &'static str,
    max_answer_bytes: usize,
}

impl Exchange {
    /// Requests carrying `Host: host` (on a unix socket the authority is meaningless;
    /// `localhost` is what every HTTP server accepts), answers capped at [`MAX_ANSWER_BYTES`].
    pub const fn new(host: &'static str) -> Exchange {
        Exchange {
            host,
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }

    /// The same with another answer cap.
    pub const fn with_max_answer_bytes(self, max_answer_bytes: usize) -> Exchange {
        Exchange {
            max_answer_bytes,
            ..self
        }
    }

    /// Sends `method route` with `body` (JSON, see [`json_body`]) on `stream` and returns
    /// the 2xx answer's body.
    pub async fn send<S>(
        &self,
        stream: S,
        method: Method,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, ExchangeError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(ExchangeError::Transport)?;
        let request = self.request(method, route, body);
        let limit = self.max_answer_bytes;
        let answer = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(ExchangeError::Transport)?;
            let status = response.status();
            let bytes = read_capped(response.into_body(), limit).await?;
            check_status(status, bytes)
        };
        tokio::pin!(answer, connection);
        tokio::select! {
            result = &mut answer => result,
            // The connection may end (cleanly or not) while the answer's last bytes are
            // still buffered for `answer`: finish reading them; a truncated answer fails there.
            _closed = &mut connection => answer.await,
        }
    }

    fn request(&self, method: Method, route: &str, body: Option<Bytes>) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(route)
            .header(header::HOST, self.host)
            .header(header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        // invariant: the method, a route starting with `/` and these headers are valid;
        // a route that is not a URI path sends `GET /` which the peer answers 404.
        builder
            .body(Full::new(body.unwrap_or_default()))
            .unwrap_or_else(|_| Request::new(Full::default()))
    }
}

/// `value` as a JSON body.
pub fn json_body<T: Serialize + ?Sized>(value: &T) -> Bytes {
    // invariant: contract types are `derive(Serialize)` structs without maps keyed by
    // non-strings, which always serialise.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

async fn read_capped(body: hyper::body::Incoming, limit: usize) -> Result<Bytes, ExchangeError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(source) => match source.downcast::<hyper::Error>() {
            Ok(source) => Err(ExchangeError::Transport(*source)),
            Err(other) => {
                debug_assert!(other.is::<LengthLimitError>());
                Err(ExchangeError::TooLarge { limit })
            }
        },
    }
}

fn check_status(status: StatusCode, bytes: Bytes) -> Result<Bytes, ExchangeError> {
    if status.is_success() {
        return Ok(bytes);
    }
    Err(ExchangeError::Status {
        status,
        body: serde_json::from_slice::<ErrorBody>(&bytes).ok(),
        excerpt: String::from_utf8_lossy(&bytes)
            .chars()
            .take(EXCERPT_CHARS)
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::convert::Infallible;
    use std::path::{Path, PathBuf};

    use http::Response;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use tokio::net::{UnixListener, UnixStream};

    use super::*;

    /// A real hyper server on a unix socket: `/echo` answers the request body and its
    /// `Host`, `/refuse` a contract error, `/plain` a non-contract error, `/big` 2 KiB,
    /// `/drop` closes the connection without answering.
    async fn serve(dir: &Path) -> PathBuf {
        let path = dir.join("exchange.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        path
    }

    async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let (status, body) = match request.uri().path() {
            "/echo" => {
                let host = request.headers()[header::HOST].to_str().unwrap().to_owned();
                let body = request.into_body().collect().await.unwrap().to_bytes();
                let text = format!("{host} {}", String::from_utf8_lossy(&body));
                (StatusCode::OK, Bytes::from(text))
            }
            "/refuse" => (
                StatusCode::NOT_FOUND,
                json_body(&ErrorBody {
                    error: "unknown_workload".into(),
                    description: "no workload named x".into(),
                }),
            ),
            "/plain" => (StatusCode::BAD_GATEWAY, Bytes::from("upstream down")),
            "/big" => (StatusCode::OK, Bytes::from(vec![b'x'; 2048])),
            _ => panic!("the test server drops this connection"),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        Ok(response)
    }

    async fn send(route: &str, exchange: Exchange) -> Result<Bytes, ExchangeError> {
        let dir = tempfile::tempdir().unwrap();
        let stream = UnixStream::connect(serve(dir.path()).await).await.unwrap();
        let body = Some(json_body(&["a"]));
        exchange.send(stream, Method::POST, route, body).await
    }

    #[tokio::test]
    async fn a_2xx_answer_returns_its_body() {
        let bytes = send("/echo", Exchange::new("control")).await.unwrap();
        assert_eq!(&bytes[..], br#"control ["a"]"#);
    }

    #[tokio::test]
    async fn a_refusal_carries_the_contract_error_body() {
        let err = send("/refuse", Exchange::new("localhost"))
            .await
            .unwrap_err();
        let ExchangeError::Status { status, body, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*status, StatusCode::NOT_FOUND);
        assert_eq!(body.as_ref().unwrap().error, "unknown_workload");
        assert_eq!(
            err.to_string(),
            "answered 404 Not Found: unknown_workload: no workload named x"
        );
    }

    #[tokio::test]
    async fn a_refusal_without_the_error_body_keeps_an_excerpt() {
        let err = send("/plain", Exchange::new("localhost"))
            .await
            .unwrap_err();
        let ExchangeError::Status { body, excerpt, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(body.is_none());
        assert_eq!(excerpt, "upstream down");
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_refused() {
        let capped = Exchange::new("localhost").with_max_answer_bytes(1024);
        let err = send("/big", capped).await.unwrap_err();
        assert!(
            matches!(err, ExchangeError::TooLarge { limit: 1024 }),
            "{err:?}"
        );
        let exact = Exchange::new("localhost").with_max_answer_bytes(2048);
        assert_eq!(send("/big", exact).await.unwrap().len(), 2048);
    }

    #[test]
    fn the_default_cap_is_16_mib() {
        assert_eq!(Exchange::new("localhost").max_answer_bytes, 16 << 20);
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_is_a_transport_error() {
        let err = send("/drop", Exchange::new("localhost")).await.unwrap_err();
        assert!(matches!(err, ExchangeError::Transport(_)), "{err:?}");
    }
}
