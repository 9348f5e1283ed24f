//! The client side of the proxy⇄control contract ([`api::contract`]): HTTP/1.1 + JSON
//! over the control plane's unix socket.
//!
//! Isolated in this one file on purpose: a later issue moves agents to gRPC over mTLS,
//! and only this file should have to change. One connection per call keeps it simple
//! and robust (a long poll holds its own connection; control restarts need no
//! reconnect logic); calls are rare (startup, registration, one poll per ~25 s).

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::contract::{
    EndpointRegistration, ErrorBody, LONG_POLL_SECS, Snapshot, SvidRequest, SvidResponse,
};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Longest control answer we accept; snapshots of a few thousand endpoints fit easily.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Non-poll calls must answer quickly; a hung control plane must not hang startup forever.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A long poll is answered after [`LONG_POLL_SECS`]; allow generous slack on top.
const POLL_TIMEOUT: Duration = Duration::from_secs(LONG_POLL_SECS + 15);

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached (control not started yet, or gone).
    #[error("cannot connect to the control socket {path}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed mid-way.
    #[error("HTTP exchange with control on {route} failed")]
    Http {
        /// The route called.
        route: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The control plane did not answer in time.
    #[error("control did not answer {route} within {timeout:?}")]
    Timeout {
        /// The route called.
        route: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The control plane answered with an error status.
    #[error("control answered {route} with {status}: {error}: {description}")]
    Status {
        /// The route called.
        route: String,
        /// The status code.
        status: StatusCode,
        /// The machine-readable code from the error body (or `unknown`).
        error: String,
        /// The human sentence from the error body.
        description: String,
    },
    /// The answer was not the JSON the contract promises.
    #[error("control answered {route} with a body that is not valid JSON for the contract")]
    Decode {
        /// The route called.
        route: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The answer exceeded the size limit (16 MiB).
    #[error("control's answer to {route} exceeds {MAX_ANSWER_BYTES} bytes")]
    TooLarge {
        /// The route called.
        route: String,
    },
}

impl ControlError {
    /// Whether trying again later can help: transport trouble and 5xx can, a 4xx
    /// (e.g. an unknown workload) will not change by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            ControlError::Status { status, .. } => !status.is_client_error(),
            ControlError::Decode { .. } => false,
            _ => true,
        }
    }
}

/// A client of one control plane socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

impl ControlClient {
    /// A client for the control plane listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ControlClient {
            socket: socket.into(),
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `POST /v1/svid`: has the CA sign `request.csr_pem`.
    pub async fn request_svid(&self, request: &SvidRequest) -> Result<SvidResponse, ControlError> {
        let body = self.call(Method::POST, "/v1/svid", Some(request), CALL_TIMEOUT);
        decode("/v1/svid", &body.await?)
    }

    /// `POST /v1/endpoints`: announces this sidecar's inbound address.
    pub async fn register(&self, registration: &EndpointRegistration) -> Result<(), ControlError> {
        let route = "/v1/endpoints";
        self.call(Method::POST, route, Some(registration), CALL_TIMEOUT)
            .await
            .map(drop)
    }

    /// `GET /v1/snapshot?since=V`: long-polls until the version exceeds `since`
    /// (or control's poll period passes).
    pub async fn snapshot(&self, since: u64) -> Result<Snapshot, ControlError> {
        let route = format!("/v1/snapshot?since={since}");
        let body = self.call::<()>(Method::GET, &route, None, POLL_TIMEOUT);
        decode(&route, &body.await?)
    }

    async fn call<T: Serialize>(
        &self,
        method: Method,
        route: &str,
        body: Option<&T>,
        timeout: Duration,
    ) -> Result<Bytes, ControlError> {
        let exchange = self.exchange(method, route, body);
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ControlError::Timeout {
                route: route.to_owned(),
                timeout,
            }),
        }
    }

    async fn exchange<T: Serialize>(
        &self,
        method: Method,
        route: &str,
        body: Option<&T>,
    ) -> Result<Bytes, ControlError> {
        let http = |source| ControlError::Http {
            route: route.to_owned(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ControlError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection task ends when the exchange is over and `sender` is dropped.
        tokio::spawn(connection);
        let response = sender
            .send_request(build_request(method, route, body))
            .await
            .map_err(http)?;
        let status = response.status();
        let limited = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES);
        let bytes = match limited.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(source) => return Err(body_error(route, source)),
        };
        check_status(route, status, &bytes)?;
        Ok(bytes)
    }
}

fn build_request<T: Serialize>(
    method: Method,
    route: &str,
    body: Option<&T>,
) -> Request<Full<Bytes>> {
    // invariant: a `Value`-free derive(Serialize) contract struct always serialises.
    let json = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    let mut builder = Request::builder()
        .method(method)
        .uri(route)
        // The authority is meaningless on a unix socket; `localhost` is what every
        // HTTP server accepts (some reject socket paths as hosts).
        .header(header::HOST, "localhost")
        .header(header::ACCEPT, "application/json");
    if json.is_some() {
        builder = builder.header(header::CONTENT_TYPE, "application/json");
    }
    let bytes = json.map(Bytes::from).unwrap_or_default();
    // invariant: method, route and headers above are all valid.
    builder
        .body(Full::new(bytes))
        .unwrap_or_else(|_| Request::new(Full::default()))
}

fn body_error(route: &str, source: Box<dyn std::error::Error + Send + Sync>) -> ControlError {
    match source.downcast::<hyper::Error>() {
        Ok(source) => ControlError::Http {
            route: route.to_owned(),
            source: *source,
        },
        Err(_too_large) => ControlError::TooLarge {
            route: route.to_owned(),
        },
    }
}

fn check_status(route: &str, status: StatusCode, bytes: &[u8]) -> Result<(), ControlError> {
    if status.is_success() {
        return Ok(());
    }
    let (error, description) = match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => (body.error, body.description),
        Err(_) => (
            "unknown".to_owned(),
            String::from_utf8_lossy(bytes).chars().take(200).collect(),
        ),
    };
    Err(ControlError::Status {
        route: route.to_owned(),
        status,
        error,
        description,
    })
}

fn decode<T: DeserializeOwned>(route: &str, bytes: &[u8]) -> Result<T, ControlError> {
    serde_json::from_slice(bytes).map_err(|source| ControlError::Decode {
        route: route.to_owned(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn error_status_carries_the_contract_error_body() {
        let body = br#"{"error":"unknown_workload","description":"no workload named x"}"#;
        let err = check_status("/v1/svid", StatusCode::NOT_FOUND, body).unwrap_err();
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "control answered /v1/svid with 404 Not Found: unknown_workload: no workload named x"
        );
    }

    #[test]
    fn server_errors_are_transient() {
        let err = check_status("/v1/svid", StatusCode::SERVICE_UNAVAILABLE, b"busy").unwrap_err();
        assert!(err.is_transient());
    }

    #[tokio::test]
    async fn missing_socket_is_a_transient_connect_error() {
        let client = ControlClient::new("/nonexistent/meshwork/control.sock");
        let err = client.snapshot(0).await.unwrap_err();
        assert!(matches!(err, ControlError::Connect { .. }), "{err}");
        assert!(err.is_transient());
    }
}
