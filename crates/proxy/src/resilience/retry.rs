//! [`RetryLayer`]: sends a request again when its try failed in a way that allows it
//! (GEP-1731), within the service's [`RetryBudget`].
//!
//! A try is retried when
//! - it provably never reached the peer — connect failure, no endpoint, the HTTP client
//!   handed it back unsent, the endpoint's circuit was open — whatever the method: sending
//!   it again sends it once;
//! - or the request may be sent twice ([`is_retryable_request`]: idempotent, or carrying
//!   `Idempotency-Key`) and the connection closed or reset before the response head, the
//!   per-try timeout fired, the status is one of the rule's `codes`, or the `grpc-status`
//!   of a trailers-only response is one of its gRPC codes.
//!
//! Never after the response head was handed on: the decision is taken on the head, and a
//! response that goes to the caller is not retried (its body streams from then on).
//! Requests whose body outgrew the replay limit ([`super::replay`]) are sent once.
//!
//! At most `attempts` retries. A failure that proves the request unsent is replayed once
//! even with `attempts: 0`: that costs the peer nothing. (Without a retry rule no retry layer
//! is built; the balancer still moves an unsent request to another endpoint.) Before each retry the budget is asked; a
//! refusal is counted and the last failure goes to the caller. Then an exponential backoff with full jitter (a uniform wait
//! in `[0, min(cap, base·2ⁿ)]`, [`api::contract::client::Backoff`]) spreads the retries of many
//! callers, inside the route's request timeout (the layer outside this one).
//!
//! Not tower's `retry::Retry`: its `Policy` can only clone a request it is shown by
//! reference, so the body could not be wrapped for recording, and the budget refusal could
//! not be told apart from "not retryable" for the metric. The retry is by design not told
//! to the application (`x-meshwork-*` names are stripped at the receiving sidecar).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use api::contract::client::Backoff;
use api::contract::traffic::RetryRule;
use futures_util::future::BoxFuture;
use http::{HeaderName, Request, Response};
use opentelemetry::KeyValue;
use tower::retry::budget::Budget;
use tower::{Service, ServiceExt};

use super::budget::RetryBudget;
use super::replay::{MAX_REPLAY_BYTES, Replayable, is_retryable_request};
use crate::body::ProxyBody;
use crate::forward_error::{ForwardError, TimeoutKind};
use crate::label::Label;
use crate::metrics::{ProxyMetrics, RetryReason};
use crate::retry::closed_before_response;
use crate::span_notes;

static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// One route's retry rule, compiled (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryPolicy {
    /// Retries for failures that need a request that may be sent twice.
    attempts: u32,
    codes: Vec<u16>,
    grpc_codes: Vec<u32>,
    /// Base and cap of the backoff; `None`: retry at once.
    backoff: Option<(Duration, Duration)>,
}

impl RetryPolicy {
    /// The policy of a route's `retry`; `None` (no rule): only replays of what was
    /// provably never sent.
    pub(crate) fn new(rule: Option<&RetryRule>) -> Self {
        let Some(rule) = rule else {
            return RetryPolicy::default();
        };
        let base = Duration::from_millis(rule.backoff_ms);
        let cap = Duration::from_millis(rule.max_backoff_ms).max(base);
        RetryPolicy {
            attempts: rule.attempts,
            codes: rule.codes.clone(),
            grpc_codes: rule.grpc_codes.clone(),
            backoff: (!base.is_zero()).then_some((base, cap)),
        }
    }

    /// Why the try that ended in `result` may be sent again, if it may: `retryable` says
    /// whether the request may be sent twice ([`is_retryable_request`]).
    pub(crate) fn reason(
        &self,
        result: &Result<Response<ProxyBody>, ForwardError>,
        retryable: bool,
    ) -> Option<RetryReason> {
        let reason = match result {
            Ok(response) => self.answer_reason(response)?,
            Err(error) => failure_reason(error)?,
        };
        (reason.never_sent() || retryable).then_some(reason)
    }

    /// How many retries `reason` may lead to in all.
    fn limit(&self, reason: RetryReason) -> u32 {
        if reason.never_sent() {
            self.attempts.max(1)
        } else {
            self.attempts
        }
    }

    fn answer_reason(&self, response: &Response<ProxyBody>) -> Option<RetryReason> {
        if self.codes.contains(&response.status().as_u16()) {
            return Some(RetryReason::Status);
        }
        // Only a trailers-only response carries `grpc-status` in its head.
        let grpc_status = response.headers().get(&GRPC_STATUS)?;
        let code: u32 = grpc_status.to_str().ok()?.trim().parse().ok()?;
        self.grpc_codes
            .contains(&code)
            .then_some(RetryReason::GrpcStatus)
    }
}

/// The retry reason a failure gives, before asking whether the request may be sent twice.
fn failure_reason(error: &ForwardError) -> Option<RetryReason> {
    match error {
        ForwardError::PeerConnect { .. }
        | ForwardError::PeerUnavailable { .. }
        | ForwardError::EgressUnreachable { .. } => Some(RetryReason::Connect),
        ForwardError::Overloaded { .. } => Some(RetryReason::Overloaded),
        ForwardError::PeerRequest {
            retryable: true, ..
        }
        | ForwardError::EgressRequest {
            retryable: true, ..
        } => Some(RetryReason::Unsent),
        ForwardError::PeerRequest { source, .. } if closed_before_response(source) => {
            Some(RetryReason::Reset)
        }
        ForwardError::EgressRequest { source, .. } if closed_before_response(source.as_ref()) => {
            Some(RetryReason::Reset)
        }
        ForwardError::Timeout {
            which: TimeoutKind::Try,
            ..
        } => Some(RetryReason::Timeout),
        _ => None,
    }
}

/// Builds [`Retry`] services for one route of one service.
#[derive(Clone)]
pub(crate) struct RetryLayer {
    shared: Arc<Shared>,
}

struct Shared {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
    service: Label,
    metrics: Arc<dyn ProxyMetrics>,
    /// The backoff's jitter fraction in `[0, 1]`: random, fixed in tests.
    jitter: fn() -> f64,
}

impl RetryLayer {
    /// Retries by `policy` within `budget` (shared by every route of `service`), counting
    /// retries and refusals in `metrics`.
    pub(crate) fn new(
        policy: RetryPolicy,
        budget: Arc<RetryBudget>,
        service: Label,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        let jitter = || rand::random_range(0.0..=1.0);
        RetryLayer::with_jitter(policy, budget, service, metrics, jitter)
    }

    /// [`RetryLayer::new`] with the backoff's jitter from `jitter` (tests fix it).
    fn with_jitter(
        policy: RetryPolicy,
        budget: Arc<RetryBudget>,
        service: Label,
        metrics: Arc<dyn ProxyMetrics>,
        jitter: fn() -> f64,
    ) -> Self {
        let shared = Shared {
            policy,
            budget,
            service,
            metrics,
            jitter,
        };
        RetryLayer {
            shared: Arc::new(shared),
        }
    }
}

impl<S> tower::Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub(crate) struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<ProxyBody>> for Retry<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        // The ready service goes with the request; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(send_with_retries(inner, Arc::clone(&self.shared), request))
    }
}

/// The tries of one request: the first on the ready `inner`, then as the policy, the
/// replay and the budget allow.
async fn send_with_retries<S>(
    mut inner: S,
    shared: Arc<Shared>,
    request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ForwardError>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Send + 'static,
{
    shared.budget.deposit();
    let retryable = is_retryable_request(&request);
    let notes = span_notes::notes(&request).cloned();
    let (first, replay) = Replayable::new(request, MAX_REPLAY_BYTES);
    let mut result = send(&mut inner, first).await;
    let Some(replay) = replay else {
        return result;
    };
    let policy = &shared.policy;
    let mut backoff = policy.backoff.map(|(base, cap)| Backoff::new(base, cap));
    let mut retries = 0;
    loop {
        let Some(reason) = policy.reason(&result, retryable) else {
            return result;
        };
        if retries >= policy.limit(reason) {
            return result;
        }
        let Ok(again) = replay.again() else {
            return result;
        };
        if !shared.budget.withdraw() {
            shared.metrics.retry_budget_exhausted(shared.service);
            if let Some(notes) = &notes {
                notes.event("retry_budget_exhausted", Vec::new());
            }
            return result;
        }
        retries += 1;
        shared.metrics.retry(shared.service, reason);
        if let Some(notes) = &notes {
            let attempt = KeyValue::new("meshwork.retry.attempt", i64::from(retries));
            let reason = KeyValue::new("meshwork.retry.reason", reason.as_str());
            notes.event("retry", vec![attempt, reason]);
        }
        // The failed answer goes first, so its connection is free for the next try.
        drop(result);
        if let Some(backoff) = backoff.as_mut() {
            tokio::time::sleep(backoff.next_delay_with((shared.jitter)())).await;
        }
        result = match inner.ready().await {
            Ok(ready) => send(ready, again).await,
            Err(error) => Err(error),
        };
    }
}

/// One try, its future boxed here so that the loop above holds no `S::Future` across an
/// `.await` (rustc cannot prove such a future `Send` for every lifetime of `ProxyBody`'s
/// boxed error).
fn send<S>(
    inner: &mut S,
    request: Request<ProxyBody>,
) -> BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Send + 'static,
{
    Box::pin(inner.call(request))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
