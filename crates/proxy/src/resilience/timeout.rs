//! [`TimeoutLayer`]: bounds an exchange until its response head (GEP-1742). The same layer
//! serves both of a route's timeouts: outside the retry layer as `timeouts.request` (the
//! whole exchange, backoff and retries included) and inside it as `timeouts.backendRequest`
//! (each try). Once the head is in, the body streams unbounded: a long download is not a
//! slow answer.
//!
//! Expiry is [`ForwardError::Timeout`], a `504` whose `retryable` says whether sending the
//! request again is safe: only after a per-try timeout, and only for a request that may be
//! sent twice ([`is_retryable_request`]) — the peer may have acted on it.
//!
//! When it fires, the layer says so to the exchange it abandons, before dropping it: the
//! request carries [`TimeoutFlags`], one flag per kind, set on expiry. The balancer reads
//! them when it sends a try, so that a try dropped unanswered counts against its endpoint
//! only when a mesh timeout gave up on it — not when the caller went away (an impatient
//! client must not eject healthy replicas). A route without timeouts has no flags: no
//! extension, no allocation.
//!
//! Not tower's `timeout::Timeout`: its error is a boxed `Elapsed`, which would have to be
//! downcast back into a [`ForwardError`] naming the service, the kind and the limit, and it
//! drops the exchange without a word.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use opentelemetry::KeyValue;

use super::replay::is_retryable_request;
use crate::body::ProxyBody;
use crate::forward_error::{ForwardError, TimeoutKind};
use crate::label::Label;
use crate::metrics::ProxyMetrics;
use crate::span_notes::{self, SpanNotes};

/// Request extension: the route timeouts bounding the exchange, each a flag set when it
/// fired. The request timeout's flag is the same for every try (the retry layer's replays
/// clone it); the per-try timeout puts a fresh flag on each try, so a replay never inherits
/// one that fired.
#[derive(Debug, Clone, Default)]
pub(crate) struct TimeoutFlags {
    request: Option<Arc<AtomicBool>>,
    each_try: Option<Arc<AtomicBool>>,
}

impl TimeoutFlags {
    /// Whether a timeout gave up on the exchange.
    pub(crate) fn fired(&self) -> bool {
        [&self.request, &self.each_try]
            .into_iter()
            .flatten()
            .any(|flag| flag.load(Ordering::Acquire))
    }

    /// A fresh flag for a `kind` timeout on `request`, in place of any earlier one.
    fn arm(request: &mut Request<ProxyBody>, kind: TimeoutKind) -> Arc<AtomicBool> {
        let flags = request
            .extensions_mut()
            .get_or_insert_default::<TimeoutFlags>();
        let flag = Arc::new(AtomicBool::new(false));
        let slot = match kind {
            TimeoutKind::Request => &mut flags.request,
            TimeoutKind::Try => &mut flags.each_try,
        };
        *slot = Some(Arc::clone(&flag));
        flag
    }
}

/// Builds [`Timeout`] services for one route's timeout of one kind.
#[derive(Clone)]
pub(crate) struct TimeoutLayer {
    config: Arc<Config>,
}

struct Config {
    after: Duration,
    kind: TimeoutKind,
    service: Label,
    metrics: Arc<dyn ProxyMetrics>,
}

impl TimeoutLayer {
    /// Answers [`ForwardError::Timeout`] for `service` when no response head arrived
    /// `after` the request entered the layer; counted as a `kind` timeout in `metrics`.
    pub(crate) fn new(
        after: Duration,
        kind: TimeoutKind,
        service: Label,
        metrics: Arc<dyn ProxyMetrics>,
    ) -> Self {
        let config = Config {
            after,
            kind,
            service,
            metrics,
        };
        TimeoutLayer {
            config: Arc::new(config),
        }
    }
}

impl<S> tower::Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// See the [module docs](self).
#[derive(Clone)]
pub(crate) struct Timeout<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> tower::Service<Request<ProxyBody>> for Timeout<S>
where
    S: tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = BoxFuture<'static, Result<Response<ProxyBody>, ForwardError>>;

    /// Readiness is not timed: a balancer waiting for an endpoint is the request timeout's
    /// business, which is why that one sits outside the retry layer.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let retryable = config.kind == TimeoutKind::Try && is_retryable_request(&request);
        let fired = TimeoutFlags::arm(&mut request, config.kind);
        let notes = span_notes::notes(&request).cloned();
        let exchange = self.inner.call(request);
        // Boxed, as every outbound future is: naming `tokio::time::Timeout<S::Future>` in a
        // hand-written future would need pin projection (unsafe or another dependency).
        Box::pin(bounded(exchange, config, retryable, fired, notes))
    }
}

/// The exchange, or the timeout error once `config.after` has passed without a head; then
/// `fired` is set before the exchange is dropped. (A function generic over the future
/// rather than an `async` block over `S::Future`, which rustc cannot prove `Send` for every
/// lifetime in `ProxyBody`'s boxed error.)
async fn bounded<F>(
    exchange: F,
    config: Arc<Config>,
    retryable: bool,
    fired: Arc<AtomicBool>,
    notes: Option<SpanNotes>,
) -> Result<Response<ProxyBody>, ForwardError>
where
    F: Future<Output = Result<Response<ProxyBody>, ForwardError>>,
{
    // Pinned here rather than moved into the timer, which would drop it on expiry before
    // the flag is set: it lives until this function returns.
    let mut exchange = std::pin::pin!(exchange);
    match tokio::time::timeout(config.after, exchange.as_mut()).await {
        Ok(answered) => answered,
        Err(_elapsed) => {
            fired.store(true, Ordering::Release);
            config.metrics.timeout(config.service, config.kind);
            if let Some(notes) = notes {
                let after = i64::try_from(config.after.as_millis()).unwrap_or(i64::MAX);
                notes.event(
                    "timeout",
                    vec![
                        KeyValue::new("meshwork.timeout.kind", config.kind.as_str()),
                        KeyValue::new("meshwork.timeout.after_ms", after),
                    ],
                );
            }
            Err(ForwardError::Timeout {
                service: config.service.as_str().to_owned(),
                which: config.kind,
                after: config.after,
                retryable,
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Mutex;

    use http::{Method, StatusCode};
    use tower::{Layer, ServiceExt};

    use super::*;
    use crate::body::{empty, full};
    use crate::resilience::test_support::{Scripted, Step};

    #[derive(Default)]
    struct Recorded(Mutex<Vec<(Label, TimeoutKind)>>);

    impl ProxyMetrics for Recorded {
        fn timeout(&self, service: Label, kind: TimeoutKind) {
            self.0.lock().unwrap().push((service, kind));
        }
    }

    fn layer(kind: TimeoutKind, metrics: &Arc<Recorded>) -> TimeoutLayer {
        let metrics: Arc<dyn ProxyMetrics> = Arc::clone(metrics) as _;
        TimeoutLayer::new(
            Duration::from_millis(250),
            kind,
            Label::intern("billing"),
            metrics,
        )
    }

    fn request(method: Method) -> Request<ProxyBody> {
        Request::builder()
            .method(method)
            .uri("http://billing/charges")
            .body(empty())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_exchange_times_out_as_a_504_naming_the_kind() {
        let metrics = Arc::new(Recorded::default());
        let upstream = Scripted::new([Step::Stall]);
        let service = layer(TimeoutKind::Request, &metrics).layer(upstream);
        let error = service.oneshot(request(Method::GET)).await.unwrap_err();
        let ForwardError::Timeout {
            service,
            which,
            after,
            retryable,
        } = &error
        else {
            panic!("not a timeout: {error:?}");
        };
        assert_eq!(service, "billing");
        assert_eq!(*which, TimeoutKind::Request);
        assert_eq!(*after, Duration::from_millis(250));
        assert!(!retryable, "the whole request's time is up");
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        let counted = metrics.0.lock().unwrap().clone();
        assert_eq!(counted, [(Label::intern("billing"), TimeoutKind::Request)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_per_try_timeout_is_retryable_only_for_requests_that_may_be_sent_twice() {
        let metrics = Arc::new(Recorded::default());
        let timed_out = |request| {
            let upstream = Scripted::new([Step::Stall]);
            let service = layer(TimeoutKind::Try, &metrics).layer(upstream);
            async move { service.oneshot(request).await.unwrap_err() }
        };
        assert!(timed_out(request(Method::GET)).await.retryable());
        assert!(!timed_out(request(Method::POST)).await.retryable());
        let mut keyed = request(Method::POST);
        keyed
            .headers_mut()
            .insert("idempotency-key", "7c1e".parse().unwrap());
        assert!(timed_out(keyed).await.retryable());
        assert_eq!(metrics.0.lock().unwrap().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through_with_its_body_unbounded() {
        let metrics = Arc::new(Recorded::default());
        let upstream = Scripted::new([Step::Respond(Box::new(|| {
            Response::new(full("slow to read, quick to head"))
        }))]);
        let service = layer(TimeoutKind::Try, &metrics).layer(upstream);
        let response = service.oneshot(request(Method::GET)).await.unwrap();
        // Well past the limit: the body is not under the timeout.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(body, "slow to read, quick to head");
        assert!(metrics.0.lock().unwrap().is_empty());
    }

    /// What the try layer below sees of the route's timeouts, one entry per try.
    type SeenFlags = Arc<Mutex<Vec<TimeoutFlags>>>;

    /// Request timeout → retry (timeouts) → try timeout → an upstream that stalls the first
    /// try and answers the second, recording the flags each try carried.
    fn retried_after_a_try_timeout() -> (
        SeenFlags,
        impl tower::Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    ) {
        let seen = SeenFlags::default();
        let record = Arc::clone(&seen);
        let upstream = tower::service_fn(move |request: Request<ProxyBody>| {
            let flags = request.extensions().get::<TimeoutFlags>().cloned();
            let mut seen = record.lock().unwrap();
            seen.push(flags.expect("the try carries its timeouts' flags"));
            let first = seen.len() == 1;
            async move {
                if first {
                    std::future::pending::<()>().await;
                }
                Ok::<_, ForwardError>(Response::new(empty()))
            }
        });
        let metrics = Arc::new(Recorded::default());
        let tries = layer(TimeoutKind::Try, &metrics).layer(upstream);
        let rule = api::contract::traffic::RetryRule {
            attempts: 1,
            codes: Vec::new(),
            grpc_codes: Vec::new(),
            backoff_ms: 0,
            max_backoff_ms: 0,
        };
        let budget = api::contract::traffic::RetryBudget::default();
        let retry = crate::resilience::retry::RetryLayer::new(
            crate::resilience::retry::RetryPolicy::new(Some(&rule)),
            Arc::new(crate::resilience::budget::RetryBudget::new(&budget)),
            Label::intern("billing"),
            Arc::new(crate::metrics::NoMetrics),
        );
        let request_timeout = TimeoutLayer::new(
            Duration::from_secs(10),
            TimeoutKind::Request,
            Label::intern("billing"),
            metrics,
        );
        (seen, request_timeout.layer(retry.layer(tries)))
    }

    #[tokio::test(start_paused = true)]
    async fn each_try_has_a_fresh_try_flag_and_all_share_the_request_flag() {
        let (seen, service) = retried_after_a_try_timeout();
        let response = service.oneshot(request(Method::GET)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let seen = seen.lock().unwrap().clone();
        let [first, second] = &seen[..] else {
            panic!("two tries expected: {seen:?}");
        };
        assert!(
            first.fired(),
            "the per-try timeout gave up on the first try"
        );
        assert!(!second.fired(), "the replay did not inherit the fired flag");
        let (Some(a), Some(b)) = (&first.request, &second.request) else {
            panic!("both tries carry the request timeout's flag");
        };
        assert!(Arc::ptr_eq(a, b), "one request timeout for every try");
    }

    #[tokio::test(start_paused = true)]
    async fn a_copy_of_a_timed_out_try_gets_a_fresh_try_flag() {
        let seen = SeenFlags::default();
        let record = Arc::clone(&seen);
        let upstream = tower::service_fn(move |request: Request<ProxyBody>| {
            let flags = request.extensions().get::<TimeoutFlags>().cloned();
            record.lock().unwrap().extend(flags);
            async { Ok::<_, ForwardError>(Response::new(empty())) }
        });
        // A copy made of a try whose timeout fired carries that fired flag.
        let mut copy = request(Method::GET);
        TimeoutFlags::arm(&mut copy, TimeoutKind::Try).store(true, Ordering::Release);
        let metrics = Arc::new(Recorded::default());
        let service = layer(TimeoutKind::Try, &metrics).layer(upstream);
        service.oneshot(copy).await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert!(
            matches!(&seen[..], [flags] if !flags.fired()),
            "the try timed itself: {seen:?}"
        );
    }
}
