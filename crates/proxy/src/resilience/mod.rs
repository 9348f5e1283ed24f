//! The resiliency parts of the outbound stack (issue 11), each a self-contained tower layer
//! or piece of state built from the traffic contract ([`api::contract::traffic`]):
//!
//! ```text
//! timeout (request) → retry → timeout (try) → balance → endpoint
//!                      │                       │
//!                      ├ replay (64 KiB)       ├ outlier (ejection state)
//!                      └ budget (per service)  └ per-endpoint caps, 503 when full
//! ```
//!
//! - [`timeout`]: bounds an exchange until its response head: `504`, retry-safe per try;
//!   it marks the exchange it gives up on, which only then counts against the endpoint.
//! - [`replay`]: a request's copy for sending it again, its body recorded up to 64 KiB
//!   while the first try streams it.
//! - [`budget`]: how many retries a service's callers may add (GEP-3388).
//! - [`retry`]: sends a request again on failures that allow it (GEP-1731), with
//!   exponential backoff and full jitter, within the budget.
//! - [`outlier`]: which endpoints of a service are ejected, and until when.
//! - [`rule_layers`]: the timeouts and retry of one route rule, made once per snapshot.
//!
//! The balancer is `outbound::balance` (power of two choices over a peak-EWMA estimate
//! held per endpoint, `endpoint_slot::load`; why not tower's `p2c::Balance` is said there): it
//! consults the outlier state and enforces the circuit breaker's per-endpoint caps itself
//! (counters on the endpoint's slot: no permit and no extra box per request).
//!
//! Nothing here reads the snapshot or the request's classification: the stack builds the
//! layers of a route rule (timeouts, retry rule; [`rule_layers`], from the rule it is given,
//! once per snapshot) or of a service (budget, outlier state), and hands them what they need.

pub(crate) mod budget;
pub(crate) mod outlier;
pub(crate) mod replay;
pub(crate) mod retry;
pub(crate) mod rule_layers;
pub(crate) mod timeout;

use std::net::SocketAddr;

use identity::SpiffeId;

/// One endpoint of a service as the balancer knows it: where its sidecar listens and the
/// identity it must prove there. Two registrations at the same address with different
/// identities are different endpoints (a replaced workload), so neither inherits the
/// other's ejection history.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EndpointKey {
    /// The sidecar's inbound address.
    pub(crate) addr: SocketAddr,
    /// The SPIFFE ID it must prove.
    pub(crate) identity: SpiffeId,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod test_support {
    //! Small in-test upstreams for the layers' unit tests: tower services that answer from a
    //! script, so a test says "fail twice, then 200" and counts what reached them.

    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    use futures_util::future::BoxFuture;
    use http::{Request, Response, StatusCode};
    use http_body_util::BodyExt;

    use crate::body::{ProxyBody, empty};
    use crate::forward_error::ForwardError;

    /// What the scripted upstream does with one request.
    pub(crate) enum Step {
        /// Answers with this status (empty body).
        Status(StatusCode),
        /// Answers with this response.
        Respond(Box<dyn FnOnce() -> Response<ProxyBody> + Send>),
        /// Reads the request, then fails with this error (e.g. a reset before the head).
        Fail(Box<dyn FnOnce() -> ForwardError + Send>),
        /// Fails with this error without reading the request (e.g. a connect failure).
        Refuse(Box<dyn FnOnce() -> ForwardError + Send>),
        /// Never answers.
        Stall,
    }

    /// One request as the upstream saw it: method, headers and the whole body.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) method: http::Method,
        pub(crate) headers: http::HeaderMap,
        pub(crate) body: bytes::Bytes,
    }

    /// A tower service answering from a script (then `200`s), recording each request.
    #[derive(Clone)]
    pub(crate) struct Scripted {
        steps: Arc<Mutex<VecDeque<Step>>>,
        pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Scripted {
        pub(crate) fn new(steps: impl IntoIterator<Item = Step>) -> Self {
            Scripted {
                steps: Arc::new(Mutex::new(steps.into_iter().collect())),
                seen: Arc::default(),
            }
        }

        pub(crate) fn calls(&self) -> usize {
            self.seen.lock().unwrap().len()
        }

        pub(crate) fn seen(&self) -> Vec<Seen> {
            self.seen.lock().unwrap().clone()
        }
    }

    pub(crate) fn fail(error: impl FnOnce() -> ForwardError + Send + 'static) -> Step {
        Step::Fail(Box::new(error))
    }

    pub(crate) fn refuse(error: impl FnOnce() -> ForwardError + Send + 'static) -> Step {
        Step::Refuse(Box::new(error))
    }

    /// A real hyper error for "the connection closed before the response head": a client
    /// sends a request over an in-memory pipe whose server end reads it and hangs up.
    pub(crate) async fn closed_before_head() -> hyper::Error {
        use tokio::io::AsyncReadExt;
        let (client, mut server) = tokio::io::duplex(4096);
        let io = hyper_util::rt::TokioIo::new(client);
        let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, ProxyBody>(io)
            .await
            .unwrap();
        tokio::spawn(connection);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = server.read(&mut buf).await;
        });
        let request = Request::get("/").body(empty()).unwrap();
        sender.send_request(request).await.unwrap_err()
    }

    pub(crate) fn connect_refused() -> ForwardError {
        ForwardError::PeerConnect {
            addr: ([127, 0, 0, 1], 4001).into(),
            identity: "spiffe://meshwork.local/ns/default/sa/billing"
                .parse()
                .unwrap(),
            source: "connection refused".into(),
        }
    }

    impl tower::Service<Request<ProxyBody>> for Scripted {
        type Response = Response<ProxyBody>;
        type Error = ForwardError;
        type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), ForwardError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
            let step = self.steps.lock().unwrap().pop_front();
            let seen = Arc::clone(&self.seen);
            let read_body = !matches!(step, Some(Step::Refuse(_)));
            Box::pin(async move {
                let (parts, body) = request.into_parts();
                let body = if read_body {
                    body.collect().await.unwrap().to_bytes()
                } else {
                    bytes::Bytes::new()
                };
                seen.lock().unwrap().push(Seen {
                    method: parts.method,
                    headers: parts.headers,
                    body,
                });
                match step {
                    None => Ok(Response::new(empty())),
                    Some(Step::Status(status)) => {
                        let mut response = Response::new(empty());
                        *response.status_mut() = status;
                        Ok(response)
                    }
                    Some(Step::Respond(respond)) => Ok(respond()),
                    Some(Step::Fail(error) | Step::Refuse(error)) => Err(error()),
                    Some(Step::Stall) => std::future::pending().await,
                }
            })
        }
    }
}
