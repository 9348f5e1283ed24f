//! Per route rule, the resiliency of GEP-1742 and GEP-1731 around the mesh path, below the
//! split (a request's backend is drawn once, before its first try, and its retries stay
//! with it): `timeouts.request` (the whole exchange, retries and backoff included) → retry
//! (within the service's budget) → `timeouts.backendRequest` (each try) → balance.
//!
//! A request whose rule configures none of these — every request when no route is
//! configured — passes straight through: no box, no clock, no copy of the request. Only a
//! configured rule pays for the layers (built per request from the rule: they are a few
//! `Arc`s, and the rule may change with every snapshot).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use super::classify::Classified;
use crate::body::ProxyBody;
use crate::forward_error::{ForwardError, TimeoutKind};
use crate::label::Label;
use crate::metrics::ProxyMetrics;
use crate::resilience::budget::RetryBudget;
use crate::resilience::retry::{RetryLayer, RetryPolicy};
use crate::resilience::timeout::TimeoutLayer;

/// What a rule asks for, read from the request's [`Classified`].
struct Plan {
    service: Label,
    request_timeout: Option<Duration>,
    try_timeout: Option<Duration>,
    /// The rule's retries and the service's budget.
    retry: Option<(RetryPolicy, Arc<RetryBudget>)>,
}

impl Plan {
    /// `None` when the request's rule (if any) configures nothing.
    fn of(classified: &Classified) -> Option<Plan> {
        let rule = classified.route_rule()?;
        let request_timeout = rule.request_timeout_ms.map(Duration::from_millis);
        let try_timeout = rule.backend_request_timeout_ms.map(Duration::from_millis);
        if request_timeout.is_none() && try_timeout.is_none() && rule.retry.is_none() {
            return None;
        }
        let labels = classified
            .table
            .classifier()
            .labels_at(classified.service?)?;
        let budget = classified.mesh_service()?.retry_budget();
        let retry = rule
            .retry
            .as_ref()
            .map(|retry| (RetryPolicy::new(Some(retry)), Arc::clone(budget)));
        Some(Plan {
            service: labels.service(),
            request_timeout,
            try_timeout,
            retry,
        })
    }
}

/// Tower layer applying each request's route rule (see the [module docs](self)).
#[derive(Clone)]
pub struct RoutePolicyLayer {
    metrics: Arc<dyn ProxyMetrics>,
}

impl RoutePolicyLayer {
    /// Counts timeouts and retries in `metrics`.
    pub fn new(metrics: Arc<dyn ProxyMetrics>) -> Self {
        RoutePolicyLayer { metrics }
    }
}

impl<S> Layer<S> for RoutePolicyLayer {
    type Service = RoutePolicy<S>;

    fn layer(&self, inner: S) -> RoutePolicy<S> {
        RoutePolicy {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service produced by [`RoutePolicyLayer`].
#[derive(Clone)]
pub struct RoutePolicy<S> {
    inner: S,
    metrics: Arc<dyn ProxyMetrics>,
}

type Answer = Result<Response<ProxyBody>, ForwardError>;
type Tries = BoxCloneSyncService<Request<ProxyBody>, Response<ProxyBody>, ForwardError>;

impl<S> Service<Request<ProxyBody>> for RoutePolicy<S>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = Either<S::Future, BoxFuture<'static, Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ProxyBody>) -> Self::Future {
        let plan = request.extensions().get::<Classified>().and_then(Plan::of);
        let Some(plan) = plan else {
            return Either::Left(self.inner.call(request));
        };
        let tries = plan.layers(Tries::new(self.inner.clone()), &self.metrics);
        let rule = request.extensions().get::<Classified>().map(RuleRef::of);
        // Boxed on its own first: an `async` block holding the `Oneshot` trips
        // rust-lang/rust#102211 (see `server::answer`).
        let tried: BoxFuture<'static, Answer> = Box::pin(tries.oneshot(request));
        Either::Right(Box::pin(async move {
            let answer = tried.await;
            if let (Err(error), Some(rule)) = (&answer, rule) {
                rule.log(error);
            }
            answer
        }))
    }
}

/// Names the rule a failed request took in the log, without copying its name per request
/// (the table is shared).
struct RuleRef {
    table: Arc<crate::routes::RouteTable>,
    service: Option<usize>,
    rule: Option<usize>,
}

impl RuleRef {
    fn of(classified: &Classified) -> RuleRef {
        RuleRef {
            table: Arc::clone(&classified.table),
            service: classified.service,
            rule: classified.rule,
        }
    }

    fn log(&self, error: &ForwardError) {
        let service = self.service.and_then(|i| self.table.service_at(i));
        let rule = service.and_then(|s| s.traffic().rule(self.rule?));
        if let (Some(service), Some(rule)) = (service, rule) {
            tracing::info!(service = service.name(), rule = %rule.name, %error,
                "request failed under its route rule's timeouts and retries");
        }
    }
}

impl Plan {
    /// The layers the rule asks for around `inner`, innermost first.
    fn layers(&self, inner: Tries, metrics: &Arc<dyn ProxyMetrics>) -> Tries {
        let timeout =
            |after, kind| TimeoutLayer::new(after, kind, self.service, Arc::clone(metrics));
        let mut tries = inner;
        if let Some(after) = self.try_timeout {
            tries = Tries::new(timeout(after, TimeoutKind::Try).layer(tries));
        }
        if let Some((policy, budget)) = &self.retry {
            let retry = RetryLayer::new(
                policy.clone(),
                Arc::clone(budget),
                self.service,
                Arc::clone(metrics),
            );
            tries = Tries::new(retry.layer(tries));
        }
        if let Some(after) = self.request_timeout {
            tries = Tries::new(timeout(after, TimeoutKind::Request).layer(tries));
        }
        tries
    }
}
