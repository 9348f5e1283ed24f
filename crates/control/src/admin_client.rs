//! A client of the operator routes on the control socket ([`crate::admin`]), for
//! `meshwork token`, `entry`, `ca` and `check` (and `up`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::contract::exchange::{Exchange, ExchangeError, json_body};
use api::entry::RegistrationEntrySpec;
use bytes::Bytes;
use http::Method;
use serde::de::DeserializeOwned;

use crate::admin::{ControlStatus, TokenRequest};
use crate::issuer::{AuthorityStatus, Entry};
use crate::tokens::JoinToken;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Requests on the control socket (authority meaningless there), answers capped at 16 MiB.
const EXCHANGE: Exchange = Exchange::new("localhost");

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
            Some(json_body(&TokenRequest { ttl_secs })),
        )
        .await
    }

    /// Creates or replaces entry `id`.
    pub async fn put_entry(
        &self,
        id: &str,
        spec: &RegistrationEntrySpec,
    ) -> Result<(), AdminError> {
        let route = format!("/v1/admin/entries/{id}");
        self.call(Method::PUT, &route, Some(json_body(spec)))
            .await
            .map(drop)
    }

    /// Deletes entry `id`.
    pub async fn delete_entry(&self, id: &str) -> Result<(), AdminError> {
        self.call(Method::DELETE, &format!("/v1/admin/entries/{id}"), None)
            .await
            .map(drop)
    }

    /// Every entry.
    pub async fn entries(&self) -> Result<Vec<Entry>, AdminError> {
        self.json(Method::GET, "/v1/admin/entries", None).await
    }

    /// Starts a CA rotation.
    pub async fn rotate_ca(&self) -> Result<AuthorityStatus, AdminError> {
        self.json(Method::POST, "/v1/admin/ca/rotate", None).await
    }

    /// The control plane's status.
    pub async fn status(&self) -> Result<ControlStatus, AdminError> {
        self.json(Method::GET, "/v1/admin/status", None).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
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

    async fn call(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, AdminError> {
        match tokio::time::timeout(TIMEOUT, self.exchange(method, route, body)).await {
            Ok(r) => r,
            Err(_) => Err(self.exchange_error(route, format!("no answer within {TIMEOUT:?}"))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, AdminError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| AdminError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        match EXCHANGE.send(stream, method, route, body).await {
            Ok(bytes) => Ok(bytes),
            Err(ExchangeError::Status {
                status,
                body,
                excerpt,
            }) => {
                let (error, description) = match body {
                    Some(body) => (body.error, body.description),
                    None => (status.to_string(), excerpt),
                };
                Err(AdminError::Refused {
                    route: route.to_owned(),
                    error,
                    description,
                })
            }
            // hyper's own message, as before the shared exchange.
            Err(ExchangeError::Transport(source)) => {
                Err(self.exchange_error(route, source.to_string()))
            }
            Err(too_large @ ExchangeError::TooLarge { .. }) => {
                Err(self.exchange_error(route, too_large.to_string()))
            }
        }
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::UnixListener;

    use super::*;

    #[tokio::test]
    async fn an_answer_over_16_mib_is_refused_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let huge = |_: Request<Incoming>| async {
                let body = Bytes::from(vec![b' '; 16 * 1024 * 1024 + 1]);
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(huge))
                .await;
        });
        let err = AdminClient::new(path).status().await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with("did not answer /v1/admin/status: the answer exceeds 16777216 bytes"),
            "{err}"
        );
    }
}
