//! A route rule's resiliency layers ([`RuleLayers`]): made once per rule and snapshot, on
//! the rule's first request (they hold the metrics, which the route table does not know),
//! kept on the service (`routes::MeshService::rule_layers`), and applied around the mesh
//! path per request with static types.
//!
//! Before issue 16 the stack built them per request from the rule: an `Arc` per layer, the
//! retry codes copied, and a boxed, cloned service per layer; that was ~20 allocations on
//! every request of a configured route. Applying them now is a few `Arc` clones (the timeout
//! and retry futures are still boxed, one each).

use std::sync::Arc;
use std::time::Duration;

use api::contract::traffic::RouteRule;
use tower::Layer;
use tower::util::Either;

use super::budget::RetryBudget;
use super::retry::{Retry, RetryLayer, RetryPolicy};
use super::timeout::{Timeout, TimeoutLayer};
use crate::forward_error::TimeoutKind;
use crate::label::Label;
use crate::metrics::ProxyMetrics;

/// The layers one route rule configures, outermost first: `timeouts.request` (the whole
/// exchange, retries and backoff included), the retry (within the service's budget), and
/// `timeouts.backendRequest` (each try).
#[derive(Clone)]
pub(crate) struct RuleLayers {
    request: Option<TimeoutLayer>,
    retry: Option<RetryLayer>,
    each_try: Option<TimeoutLayer>,
}

/// `inner` under each try's timeout, if any.
pub(crate) type Tried<S> = Either<Timeout<S>, S>;
/// Under the retry, if any.
pub(crate) type Retried<S> = Either<Retry<Tried<S>>, Tried<S>>;
/// Under the request timeout, if any: what [`RuleLayers::apply`] returns.
pub(crate) type Tries<S> = Either<Timeout<Retried<S>>, Retried<S>>;

impl RuleLayers {
    /// The layers `rule` of `service` asks for, its retries drawn from `budget` and
    /// everything counted in `metrics`; `None` when the rule configures none of them.
    pub(crate) fn of(
        rule: &RouteRule,
        service: Label,
        budget: &Arc<RetryBudget>,
        metrics: &Arc<dyn ProxyMetrics>,
    ) -> Option<Self> {
        let timeout = |millis: Option<u64>, kind| {
            millis.map(|ms| {
                TimeoutLayer::new(
                    Duration::from_millis(ms),
                    kind,
                    service,
                    Arc::clone(metrics),
                )
            })
        };
        let retry = rule.retry.as_ref().map(|retry| {
            let policy = RetryPolicy::new(Some(retry));
            RetryLayer::new(policy, Arc::clone(budget), service, Arc::clone(metrics))
        });
        let layers = RuleLayers {
            request: timeout(rule.request_timeout_ms, TimeoutKind::Request),
            retry,
            each_try: timeout(rule.backend_request_timeout_ms, TimeoutKind::Try),
        };
        let any = layers.request.is_some() || layers.retry.is_some() || layers.each_try.is_some();
        any.then_some(layers)
    }

    /// `inner` wrapped in the configured layers.
    pub(crate) fn apply<S>(&self, inner: S) -> Tries<S> {
        let tried = optional(self.each_try.as_ref(), inner);
        let retried = optional(self.retry.as_ref(), tried);
        optional(self.request.as_ref(), retried)
    }
}

/// `inner` under `layer` when there is one.
fn optional<L: Layer<S>, S>(layer: Option<&L>, inner: S) -> Either<L::Service, S> {
    match layer {
        Some(layer) => Either::Left(layer.layer(inner)),
        None => Either::Right(inner),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use api::contract::traffic::{self, RetryRule};
    use http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::body::{ProxyBody, empty};
    use crate::forward_error::ForwardError;
    use crate::resilience::test_support::{Scripted, Step};

    struct Uncounted;
    impl ProxyMetrics for Uncounted {}

    fn layers(rule: &RouteRule) -> Option<RuleLayers> {
        let metrics: Arc<dyn ProxyMetrics> = Arc::new(Uncounted);
        let budget = Arc::new(RetryBudget::new(&traffic::RetryBudget::default()));
        RuleLayers::of(rule, Label::intern("billing"), &budget, &metrics)
    }

    fn get() -> Request<ProxyBody> {
        let request = Request::builder()
            .method(Method::GET)
            .uri("http://billing/charges");
        request.body(empty()).unwrap()
    }

    fn retry(attempts: u32) -> Option<RetryRule> {
        Some(RetryRule {
            attempts,
            codes: vec![503],
            grpc_codes: Vec::new(),
            backoff_ms: 0,
            max_backoff_ms: 0,
        })
    }

    #[test]
    fn a_rule_without_timeouts_or_retry_has_no_layers() {
        assert!(layers(&RouteRule::default()).is_none());
        let rule = RouteRule {
            backend_request_timeout_ms: Some(5),
            ..RouteRule::default()
        };
        assert!(layers(&rule).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_run_inside_the_request_timeout() {
        let rule = RouteRule {
            request_timeout_ms: Some(1_000),
            retry: retry(2),
            ..RouteRule::default()
        };
        let answers = [503, 503].map(|code| Step::Status(StatusCode::from_u16(code).unwrap()));
        let upstream = Scripted::new(answers.into_iter().chain([Step::Stall]));
        let tries = layers(&rule).unwrap().apply(upstream.clone());
        let error = tries.oneshot(get()).await.unwrap_err();
        let ForwardError::Timeout { which, .. } = error else {
            panic!("expected the request timeout, got {error:?}");
        };
        assert_eq!(which, TimeoutKind::Request);
        assert_eq!(
            upstream.calls(),
            3,
            "two retries, then the whole exchange timed out"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_try_has_its_own_timeout_and_a_timed_out_try_is_retried() {
        let rule = RouteRule {
            backend_request_timeout_ms: Some(100),
            retry: retry(1),
            ..RouteRule::default()
        };
        let upstream = Scripted::new([Step::Stall, Step::Status(StatusCode::OK)]);
        let tries = layers(&rule).unwrap().apply(upstream.clone());
        let response = tries.oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(upstream.calls(), 2);
    }
}
