//! A client of the operator routes on the control socket ([`crate::admin`]), for
//! `meshwork token`, `entry`, `ca` and `check` (and `up`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::contract::ErrorBody;
use api::entry::RegistrationEntrySpec;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::admin::{ControlStatus, TokenRequest};
use crate::issuer::{AuthorityStatus, Entry};
use crate::tokens::JoinToken;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket is missing or refused the connection: control is not running there.
    #[error("cannot reach the control plane at {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The exchange failed or timed out.
    #[error("control plane at {} did not answer {route}: {message}", path.display())]
    Exchange {
        /// The socket.
        path: PathBuf,
        /// The route.
        route: String,
        /// Why.
        message: String,
    },
    /// Control refused the request.
    #[error("{route}: {error}: {description}")]
    Refused {
        /// The route.
        route: String,
        /// Machine-readable code.
        error: String,
        /// For humans.
        description: String,
    },
}

/// A client of one control socket.
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    /// Talks to the control plane on `socket` (normally `<state>/control.sock`).
    pub fn new(socket: impl Into<PathBuf>) -> AdminClient {
        AdminClient {
            socket: socket.into(),
        }
    }

    /// A new join token valid for `ttl_secs` (10 minutes by default).
    pub async fn create_token(&self, ttl_secs: Option<u64>) -> Result<JoinToken, AdminError> {
        self.json(
            Method::POST,
            "/v1/admin/tokens",
            Some(&TokenRequest { ttl_secs }),
        )
        .await
    }

    /// Creates or replaces entry `id`.
    pub async fn put_entry(
        &self,
        id: &str,
        spec: &RegistrationEntrySpec,
    ) -> Result<(), AdminError> {
        self.call(Method::PUT, &format!("/v1/admin/entries/{id}"), Some(spec))
            .await
            .map(drop)
    }

    /// Deletes entry `id`.
    pub async fn delete_entry(&self, id: &str) -> Result<(), AdminError> {
        self.call::<()>(Method::DELETE, &format!("/v1/admin/entries/{id}"), None)
            .await
            .map(drop)
    }

    /// Every entry.
    pub async fn entries(&self) -> Result<Vec<Entry>, AdminError> {
        self.json::<(), _>(Method::GET, "/v1/admin/entries", None)
            .await
    }

    /// Starts a CA rotation.
    pub async fn rotate_ca(&self) -> Result<AuthorityStatus, AdminError> {
        self.json::<(), _>(Method::POST, "/v1/admin/ca/rotate", None)
            .await
    }

    /// The control plane's status.
    pub async fn status(&self) -> Result<ControlStatus, AdminError> {
        self.json::<(), _>(Method::GET, "/v1/admin/status", None)
            .await
    }

    async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let bytes = self.call(method, route, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| self.exchange_error(route, e.to_string()))
    }

    fn exchange_error(&self, route: &str, message: String) -> AdminError {
        AdminError::Exchange {
            path: self.socket.clone(),
            route: route.to_owned(),
            message,
        }
    }

    async fn call<B: Serialize>(
        &self,
        method: Method,
        route: &str,
        body: Option<&B>,
    ) -> Result<Bytes, AdminError> {
        match tokio::time::timeout(TIMEOUT, self.exchange(method, route, body)).await {
            Ok(r) => r,
            Err(_) => Err(self.exchange_error(route, format!("no answer within {TIMEOUT:?}"))),
        }
    }

    async fn exchange<B: Serialize>(
        &self,
        method: Method,
        route: &str,
        body: Option<&B>,
    ) -> Result<Bytes, AdminError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| AdminError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.exchange_error(route, e.to_string()))?;
        tokio::spawn(conn);
        let json = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        // invariant: method, route and headers are valid.
        let request = Request::builder()
            .method(method)
            .uri(route)
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| Request::new(Full::default()));
        let response = tx
            .send_request(request)
            .await
            .map_err(|e| self.exchange_error(route, e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.exchange_error(route, e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            error: status.to_string(),
            description: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
        });
        Err(AdminError::Refused {
            route: route.to_owned(),
            error: body.error,
            description: body.description,
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}
