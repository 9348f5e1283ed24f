//! [`CircuitLayer`]: per-endpoint caps (the `Service`'s `circuitBreaker`), so that a slow or
//! stalled endpoint sheds load with a retryable `503` ([`ForwardError::Overloaded`])
//! instead of queueing without bound.
//!
//! - `maxRequests` counts requests in flight on the endpoint: from the moment one is sent
//!   until its response *body* ends (or is dropped), since a streaming answer still occupies
//!   the endpoint.
//! - `maxPendingRequests` counts those still waiting for a response head — dialling,
//!   waiting for an h2 stream, or waiting on a slow upstream: the requests that pile up on a
//!   stalled endpoint.
//!
//! A refusal sent nothing, so the retry layer may send the request to another endpoint
//! whatever its method. The service stays ready while full: a refusal is an answer now,
//! not a wait; a balancer that wants to avoid full endpoints asks
//! [`EndpointCircuit::has_capacity`]. A cap of 0 means no cap (rather than refusing every
//! request).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use api::contract::traffic::CircuitBreaker;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{BoxError, ProxyBody, boxed};
use crate::forward_error::{ForwardError, OverloadLimit};
use crate::label::Label;
use crate::metrics::ProxyMetrics;

/// One endpoint's caps and what currently holds them.
pub(crate) struct EndpointCircuit {
    service: Label,
    endpoint: SocketAddr,
    pending: Option<Cap>,
    requests: Option<Cap>,
    metrics: Arc<dyn ProxyMetrics>,
}

struct Cap {
    permits: Arc<Semaphore>,
    max: u32,
}

impl Cap {
    fn new(max: u32) -> Option<Cap> {
        if max == 0 {
            return None;
        }
        let permits =
            usize::try_from(max).map_or(Semaphore::MAX_PERMITS, |n| n.min(Semaphore::MAX_PERMITS));
        Some(Cap {
            permits: Arc::new(Semaphore::new(permits)),
            max,
        })
    }
}

/// What an admitted request holds: `requests` until its body ends, `pending` until its
/// head arrives.
pub(crate) struct Admission {
    pending: Option<OwnedSemaphorePermit>,
    requests: Option<OwnedSemaphorePermit>,
}

impl EndpointCircuit {
    /// The caps of the endpoint at `endpoint` of `service`, counting refusals in `metrics`.
    pub(crate) fn new(
        service: Label,
        endpoint: SocketAddr,
        limits: &CircuitBreaker,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        EndpointCircuit {
            service,
            endpoint,
            pending: Cap::new(limits.max_pending_requests),
            requests: Cap::new(limits.max_requests),
            metrics,
        }
    }

    /// Whether a request would be admitted now.
    pub(crate) fn has_capacity(&self) -> bool {
        [&self.pending, &self.requests]
            .into_iter()
            .flatten()
            .all(|cap| cap.permits.available_permits() > 0)
    }

    /// Admits one request, or refuses it (counted) when a cap is reached.
    pub(crate) fn admit(&self) -> Result<Admission, ForwardError> {
        let requests = self.acquire(self.requests.as_ref(), OverloadLimit::Requests)?;
        let pending = self.acquire(self.pending.as_ref(), OverloadLimit::Pending)?;
        Ok(Admission { pending, requests })
    }

    fn acquire(
        &self,
        cap: Option<&Cap>,
        limit: OverloadLimit,
    ) -> Result<Option<OwnedSemaphorePermit>, ForwardError> {
        let Some(cap) = cap else {
            return Ok(None);
        };
        match Arc::clone(&cap.permits).try_acquire_owned() {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                self.metrics
                    .circuit_open(self.service, self.endpoint, limit);
                Err(ForwardError::Overloaded {
                    service: self.service.as_str().to_owned(),
                    endpoint: self.endpoint,
                    limit,
                    max: cap.max,
                })
            }
        }
    }
}

/// Wraps one endpoint's service in its [`EndpointCircuit`].
#[derive(Clone)]
pub(crate) struct CircuitLayer {
    circuit: Arc<EndpointCircuit>,
}

impl CircuitLayer {
    /// Admits requests through `circuit`.
    pub(crate) fn new(circuit: Arc<EndpointCircuit>) -> Self {
        CircuitLayer { circuit }
    }
}

impl<S> tower::Layer<S> for CircuitLayer {
    type Service = Circuit<S>;

    fn layer(&self, inner: S) -> Circuit<S> {
        Circuit {
            inner,
            circuit: Arc::clone(&self.circuit),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub(crate) struct Circuit<S> {
    inner: S,
    circuit: Arc<EndpointCircuit>,
}

impl<S> tower::Service<Request<ProxyBody>> for Circuit<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        match self.circuit.admit() {
            Ok(admission) => Box::pin(held(self.inner.call(request), admission)),
            Err(refused) => Box::pin(std::future::ready(Err(refused))),
        }
    }
}

/// The exchange, holding `admission`'s permits: `pending` to the head, `requests` to the
/// body's end.
async fn held<F>(exchange: F, admission: Admission) -> Result<Response<ProxyBody>, ForwardError>
where
    F: Future<Output = Result<Response<ProxyBody>, ForwardError>>,
{
    let Admission { pending, requests } = admission;
    let response = exchange.await?;
    drop(pending);
    if requests.is_none() || response.body().is_end_stream() {
        return Ok(response);
    }
    Ok(response.map(|body| {
        boxed(PermitBody {
            inner: body,
            permit: requests,
        })
    }))
}

/// A response body that gives its endpoint's in-flight permit back when it ends.
struct PermitBody {
    inner: ProxyBody,
    permit: Option<OwnedSemaphorePermit>,
}

impl Body for PermitBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if matches!(polled, None | Some(Err(_))) || self.inner.is_end_stream() {
            self.permit = None;
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
