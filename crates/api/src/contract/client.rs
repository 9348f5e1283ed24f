//! The one client of the control plane's HTTP/1.1 + JSON contract: a typed [`Call`]
//! per route (next to its request and response types: [`super`], [`super::admin`],
//! [`super::node`]) sent by a [`Client`] over whatever a [`Connect`] dials — the control
//! socket ([`UnixConnect`]: sidecars, the cli) or the node API over mTLS (the agent's
//! TLS connector).
//!
//! One connection per call: calls are rare (startup, registration, one long poll per
//! ~25 s), a long poll holds its own connection, and a restarted control plane needs
//! no reconnect logic. Every call is bounded in time ([`CALL_TIMEOUT`], or
//! [`POLL_TIMEOUT`] for long polls), connecting included; answers are capped by the
//! [`Exchange`]. [`CallError::is_transient`] is the one retry decision, and [`Backoff`]
//! the one delay between retries.

mod backoff;
#[cfg(test)]
mod tests;
mod unix;

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

pub use backoff::Backoff;
pub use unix::{UnixConnect, UnixReplicas};

use super::LONG_POLL_SECS;
use super::exchange::{Exchange, ExchangeError, json_body};

/// Ordinary calls must answer quickly: a hung control plane must not hang a startup.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A long poll is answered after [`LONG_POLL_SECS`]; generous slack on top.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(LONG_POLL_SECS + 15);

/// Opens one connection to the control plane, ready for HTTP/1.1.
pub trait Connect: Clone + Send + Sync + 'static {
    /// The connected (and, where it applies, authenticated) stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Dials once.
    fn connect(&self) -> impl Future<Output = Result<Self::Stream, ConnectError>> + Send;

    /// What is dialled, for error messages: `control socket /x`, `control plane at 1.2.3.4:5`.
    fn describe(&self) -> String;
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be reached (nothing listening, refused, no route).
    #[error("connecting failed")]
    Connect(#[source] std::io::Error),
    /// Connected, but the TLS handshake failed (e.g. the peer did not prove the expected
    /// identity).
    #[error("the TLS handshake failed")]
    Handshake(#[source] std::io::Error),
}

/// One route of the contract: its method, path, and the JSON it sends and answers.
pub trait Call {
    /// The HTTP method.
    const METHOD: Method;
    /// Whether the control plane holds the answer until something changes (up to
    /// [`LONG_POLL_SECS`]): the call is then bounded by [`POLL_TIMEOUT`], not [`CALL_TIMEOUT`].
    const LONG_POLL: bool = false;
    /// The request body ([`NoBody`] for none).
    type Request: RequestBody;
    /// The answer's body ([`NoBody`] when it is ignored, e.g. a `204`).
    type Response: ResponseBody;

    /// The path, with its query if any.
    fn path(&self) -> Cow<'static, str>;
}

/// The request or answer of calls that carry no body: nothing is sent, and whatever the
/// answer holds is ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoBody;

/// A request body: JSON for every `Serialize` type, nothing for [`NoBody`].
pub trait RequestBody {
    /// The bytes to send, if any.
    fn encode(&self) -> Option<Bytes>;
}

impl<T: Serialize> RequestBody for T {
    fn encode(&self) -> Option<Bytes> {
        Some(json_body(self))
    }
}

impl RequestBody for NoBody {
    fn encode(&self) -> Option<Bytes> {
        None
    }
}

/// An answer body: JSON for every `DeserializeOwned` type, ignored for [`NoBody`].
pub trait ResponseBody: Sized {
    /// Reads the 2xx answer's body.
    fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error>;
}

impl<T: DeserializeOwned> ResponseBody for T {
    fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl ResponseBody for NoBody {
    fn decode(_bytes: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(NoBody)
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection (control not started yet, or gone; or it failed the TLS handshake).
    #[error("cannot connect to {target}")]
    Connect {
        /// What was dialled ([`Connect::describe`]).
        target: String,
        /// The cause.
        #[source]
        source: ConnectError,
    },
    /// The HTTP exchange failed mid-way (the peer closed, or spoke bad HTTP).
    #[error("HTTP exchange with {target} on {route} failed")]
    Transport {
        /// What was dialled.
        target: String,
        /// The route called.
        route: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// No answer in time.
    #[error("{target} did not answer {route} within {timeout:?}")]
    Timeout {
        /// What was dialled.
        target: String,
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
        /// The machine-readable code from the error body (`unknown` without one).
        error: String,
        /// The human sentence from the error body (the start of the raw answer without one).
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
    /// The answer exceeded the [`Exchange`]'s cap.
    #[error("control's answer to {route} exceeds {limit} bytes")]
    TooLarge {
        /// The route called.
        route: String,
        /// The cap.
        limit: usize,
    },
}

impl CallError {
    /// Whether trying again later can help: transport trouble, a timeout, an oversized
    /// answer (the next snapshot may be smaller) and 5xx can; a 4xx (e.g. an unknown
    /// workload, a used join token) or an unreadable answer will not change by itself.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Status { status, .. } => status.is_server_error(),
            CallError::Decode { .. } => false,
            CallError::Connect { .. }
            | CallError::Transport { .. }
            | CallError::Timeout { .. }
            | CallError::TooLarge { .. } => true,
        }
    }

    /// This error and every cause, `: `-separated, for one-line log messages (which
    /// show only the top error otherwise).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            text.push_str(": ");
            text.push_str(&error.to_string());
            cause = error.source();
        }
        text
    }
}

/// A client of one control plane endpoint.
#[derive(Debug, Clone)]
pub struct Client<C> {
    connect: C,
    exchange: Exchange,
}

impl<C: Connect> Client<C> {
    /// Calls over `connect` with `Host: localhost` (meaningless on a unix socket; what
    /// every HTTP server accepts), answers capped at [`super::exchange::MAX_ANSWER_BYTES`].
    pub fn new(connect: C) -> Client<C> {
        Client::with_exchange(connect, Exchange::new("localhost"))
    }

    /// Calls over `connect` shaped by `exchange` (its `Host`, its answer cap).
    pub fn with_exchange(connect: C, exchange: Exchange) -> Client<C> {
        Client { connect, exchange }
    }

    /// What this client dials.
    pub fn connector(&self) -> &C {
        &self.connect
    }

    /// Sends `request` to `call`'s route on a new connection and reads the answer.
    pub async fn call<K: Call>(
        &self,
        call: &K,
        request: &K::Request,
    ) -> Result<K::Response, CallError> {
        let route = call.path();
        let timeout = if K::LONG_POLL {
            POLL_TIMEOUT
        } else {
            CALL_TIMEOUT
        };
        let exchange = self.send(K::METHOD, &route, request.encode());
        let bytes = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_elapsed) => {
                return Err(CallError::Timeout {
                    target: self.connect.describe(),
                    route: route.into_owned(),
                    timeout,
                });
            }
        };
        K::Response::decode(&bytes).map_err(|source| CallError::Decode {
            route: route.into_owned(),
            source,
        })
    }

    async fn send(
        &self,
        method: Method,
        route: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, CallError> {
        let stream = self
            .connect
            .connect()
            .await
            .map_err(|source| CallError::Connect {
                target: self.connect.describe(),
                source,
            })?;
        self.exchange
            .send(stream, method, route, body)
            .await
            .map_err(|error| self.exchange_error(route, error))
    }

    fn exchange_error(&self, route: &str, error: ExchangeError) -> CallError {
        let route = route.to_owned();
        match error {
            ExchangeError::Transport(source) => CallError::Transport {
                target: self.connect.describe(),
                route,
                source,
            },
            ExchangeError::TooLarge { limit } => CallError::TooLarge { route, limit },
            ExchangeError::Status {
                status,
                body,
                excerpt,
            } => {
                let (error, description) = match body {
                    Some(body) => (body.error, body.description),
                    None => ("unknown".to_owned(), excerpt),
                };
                CallError::Status {
                    route,
                    status,
                    error,
                    description,
                }
            }
        }
    }
}
