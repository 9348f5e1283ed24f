//! Per route rule, the resiliency of GEP-1742 and GEP-1731 around the mesh path, below the
//! split (a request's backend is drawn once, before its first try, and its retries stay
//! with it): `timeouts.request` (the whole exchange, retries and backoff included) → retry
//! (within the service's budget) → `timeouts.backendRequest` (each try) → balance.
//!
//! A request whose rule configures none of these — every request when no route is
//! configured — passes straight through: no box, no clock, no copy of the request. Only a
//! configured rule pays for the layers (made once per rule and snapshot,
//! [`RuleLayers`], and applied per request: a few `Arc` clones, no boxed service per layer;
//! the timeout and retry futures are boxed).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::classify::Classified;
use crate::body::ProxyBody;
use crate::forward_error::ForwardError;
use crate::metrics::ProxyMetrics;
use crate::resilience::rule_layers::RuleLayers;

/// The layers of the request's route rule, if it configures any (made on the rule's first
/// request, then shared: [`crate::routes::MeshService::rule_layers`]).
fn rule_layers<'c>(
    classified: &'c Classified,
    metrics: &Arc<dyn ProxyMetrics>,
) -> Option<&'c RuleLayers> {
    let index = classified.rule?;
    let service = classified.mesh_service()?;
    let make = || {
        let rule = classified.route_rule()?;
        let labels = classified
            .table
            .classifier()
            .labels_at(classified.service?)?;
        RuleLayers::of(rule, labels.service(), service.retry_budget(), metrics)
    };
    service.rule_layers(index, make)
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
        let classified = request.extensions().get::<Classified>();
        let inner = &self.inner;
        let tries = classified.and_then(|c| {
            let layers = rule_layers(c, &self.metrics)?;
            Some((layers.apply(inner.clone()), RuleRef::of(c)))
        });
        let Some((tries, rule)) = tries else {
            return Either::Left(self.inner.call(request));
        };
        // Boxed on its own first: an `async` block holding the `Oneshot` trips
        // rust-lang/rust#102211 (see `server::answer`).
        let tried: BoxFuture<'static, Answer> = Box::pin(tries.oneshot(request));
        Either::Right(Box::pin(async move {
            let answer = tried.await;
            if let Err(error) = &answer {
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
