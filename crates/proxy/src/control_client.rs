//! The client side of the proxy⇄control contract ([`api::contract`]): HTTP/1.1 + JSON
//! over the control plane's unix socket.
//!
//! Isolated in this one file on purpose: a later issue moves agents to gRPC over mTLS,
//! and only this file should have to change. One connection per call keeps it simple
//! and robust (a long poll holds its own connection; control restarts need no
//! reconnect logic); calls are rare (startup, registration, one poll per ~25 s).

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::contract::exchange::{Exchange, ExchangeError, MAX_ANSWER_BYTES, json_body};
use api::contract::{EndpointRegistration, LONG_POLL_SECS, Snapshot, SvidRequest, SvidResponse};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// Requests on the control socket: the authority is meaningless on a unix socket.
const EXCHANGE: Exchange = Exchange::new("localhost");

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
        let body = self.call(
            Method::POST,
            "/v1/svid",
            Some(json_body(request)),
            CALL_TIMEOUT,
        );
        decode("/v1/svid", &body.await?)
    }

    /// `POST /v1/endpoints`: announces this sidecar's inbound address.
    pub async fn register(&self, registration: &EndpointRegistration) -> Result<(), ControlError> {
        let route = "/v1/endpoints";
        self.call(
            Method::POST,
            route,
            Some(json_body(registration)),
            CALL_TIMEOUT,
        )
        .await
        .map(drop)
    }

    /// `GET /v1/snapshot?since=V`: long-polls until the version exceeds `since`
    /// (or control's poll period passes).
    pub async fn snapshot(&self, since: u64) -> Result<Snapshot, ControlError> {
        let route = format!("/v1/snapshot?since={since}");
        let body = self.call(Method::GET, &route, None, POLL_TIMEOUT);
        decode(&route, &body.await?)
    }

    async fn call(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
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

    async fn exchange(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, ControlError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ControlError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        EXCHANGE
            .send(stream, method, route, body)
            .await
            .map_err(|error| exchange_error(route, error))
    }
}

/// The shared exchange's error in this client's terms (messages and
/// [`ControlError::is_transient`] unchanged).
fn exchange_error(route: &str, error: ExchangeError) -> ControlError {
    let route = route.to_owned();
    match error {
        ExchangeError::Transport(source) => ControlError::Http { route, source },
        ExchangeError::TooLarge { .. } => ControlError::TooLarge { route },
        ExchangeError::Status {
            status,
            body,
            excerpt,
        } => {
            let (error, description) = match body {
                Some(body) => (body.error, body.description),
                None => ("unknown".to_owned(), excerpt),
            };
            ControlError::Status {
                route,
                status,
                error,
                description,
            }
        }
    }
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
    use api::contract::ErrorBody;

    use super::*;

    fn refusal(status: StatusCode, body: Option<ErrorBody>, excerpt: &str) -> ControlError {
        let excerpt = excerpt.to_owned();
        let error = ExchangeError::Status {
            status,
            body,
            excerpt,
        };
        exchange_error("/v1/svid", error)
    }

    #[test]
    fn error_status_carries_the_contract_error_body() {
        let body = ErrorBody {
            error: "unknown_workload".into(),
            description: "no workload named x".into(),
        };
        let err = refusal(StatusCode::NOT_FOUND, Some(body), "");
        assert!(!err.is_transient());
        assert_eq!(
            err.to_string(),
            "control answered /v1/svid with 404 Not Found: unknown_workload: no workload named x"
        );
    }

    #[test]
    fn server_errors_are_transient() {
        let err = refusal(StatusCode::SERVICE_UNAVAILABLE, None, "busy");
        assert!(err.is_transient());
        assert!(err.to_string().ends_with("unknown: busy"), "{err}");
    }

    #[tokio::test]
    async fn missing_socket_is_a_transient_connect_error() {
        let client = ControlClient::new("/nonexistent/meshwork/control.sock");
        let err = client.snapshot(0).await.unwrap_err();
        assert!(matches!(err, ControlError::Connect { .. }), "{err}");
        assert!(err.is_transient());
    }
}
