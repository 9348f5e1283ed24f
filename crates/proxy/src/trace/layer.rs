//! The trace layer: continues (or starts) the request's trace, records this hop's span and
//! hands the next hop its context.
//!
//! Per request: [`extract`] the caller's context (never failing the request: a malformed
//! header starts a new trace), decide sampling (the caller's decision, else the ratio),
//! draw this hop's span id, and rewrite the trace headers ([`inject`]) in the formats the
//! propagation setting asks for, so the next hop sees this span as its parent. Inbound, the
//! next hop is the local app (whose outgoing calls, if it copies the headers, become children
//! of the server span); outbound, the peer sidecar or egress destination.
//!
//! Below the telemetry layer, whose labels it reads ([`Labelled`]): the request is
//! labelled once. Failures of the layers below are rendered here ([`server::render_error`]),
//! so their log line carries the trace id and the span its error type. The layers below add
//! to the span through the request's [`ActiveSpan`] notes (decision, retries, timeouts).

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use opentelemetry::trace::SpanKind;
use opentelemetry::{KeyValue, StringValue};
use tower::{Layer, Service};

use super::Tracer;
use super::span::OpenSpan;
use crate::body::ProxyBody;
use crate::forward_error::ForwardError;
use crate::label::{EGRESS, Label, MethodLabel, NONE, UNMATCHED};
use crate::metrics::{Direction, ProxyMetrics};
use crate::server;
use crate::span_notes::{ActiveSpan, SpanNotes, attr, bounded_value};
use crate::telemetry::{AnsweredBy, Labelled, TracedAs};
use crate::trace_context::{SpanId, TraceIdField, extract, inject};

/// Which side of the sidecar a trace layer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The inbound listener: server spans.
    Inbound,
    /// The outbound listener: client spans.
    Outbound,
}

impl Side {
    fn kind(self) -> SpanKind {
        match self {
            Side::Inbound => SpanKind::Server,
            Side::Outbound => SpanKind::Client,
        }
    }

    fn direction(self) -> Direction {
        match self {
            Side::Inbound => Direction::Inbound,
            Side::Outbound => Direction::Outbound,
        }
    }
}

/// What one stack knows about its requests for their spans, beyond the common method,
/// route and service: implemented by each listener (the outbound one reads its own
/// classification, which this module must not know).
pub trait SpanAttributes: Clone + Send + Sync + Unpin + 'static {
    /// The side whose spans these are.
    const SIDE: Side;

    /// Appends `request`'s side-specific attributes to `out`; `own` is this workload's
    /// SPIFFE ID, `labelled` what telemetry labelled the request with.
    fn attributes(
        &self,
        request: &Request<ProxyBody>,
        labelled: Option<&Labelled>,
        own: &StringValue,
        out: &mut Vec<KeyValue>,
    );
}

/// Tower layer tracing every request (see the [module docs](self)).
#[derive(Clone)]
pub struct TraceLayer<A> {
    tracer: Tracer,
    attributes: A,
    metrics: Arc<dyn ProxyMetrics>,
}

impl<A: SpanAttributes> TraceLayer<A> {
    /// Traces a stack's requests with `tracer`, described by `attributes`; failures are
    /// counted in `metrics`.
    pub fn new(tracer: Tracer, attributes: A, metrics: Arc<dyn ProxyMetrics>) -> Self {
        TraceLayer {
            tracer,
            attributes,
            metrics,
        }
    }
}

impl<S, A: Clone> Layer<S> for TraceLayer<A> {
    type Service = Trace<S, A>;

    fn layer(&self, inner: S) -> Trace<S, A> {
        Trace {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service produced by [`TraceLayer`].
#[derive(Clone)]
pub struct Trace<S, A> {
    inner: S,
    layer: TraceLayer<A>,
}

impl<S, A> Service<Request<ProxyBody>> for Trace<S, A>
where
    S: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
    S::Future: Unpin,
    A: SpanAttributes,
{
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = Traced<S::Future, A>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ForwardError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let tracer = &self.layer.tracer;
        let extracted = extract(request.headers());
        if let Some(rejected) = &extracted.rejected {
            tracing::debug!(error = %rejected, "trace header ignored");
        }
        let formats = tracer.propagation.formats(extracted.format);
        let context = extracted.continue_or_start(&tracer.sampler);
        let span_id = SpanId::random();
        inject(&context, span_id, formats, request.headers_mut());
        let notes = context.sampling.is_sampled().then(SpanNotes::default);
        let open = notes.clone().map(|notes| {
            let (name, attributes) = describe(&self.layer, &request);
            OpenSpan::start(&context, span_id, A::SIDE.kind(), name, attributes, notes)
        });
        request.extensions_mut().insert(ActiveSpan {
            trace_id: context.trace_id,
            notes,
        });
        Traced {
            inner: self.inner.call(request),
            open,
            trace_id: TraceIdField(Some(context.trace_id)),
            layer: self.layer.clone(),
        }
    }
}

/// The future of [`Trace`]: the inner one, then the span finished and queued.
pub struct Traced<F, A> {
    inner: F,
    open: Option<OpenSpan>,
    trace_id: TraceIdField,
    layer: TraceLayer<A>,
}

impl<F, A> Future for Traced<F, A>
where
    F: Future<Output = Result<Response<ProxyBody>, ForwardError>> + Unpin,
    A: SpanAttributes,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let result = ready!(Pin::new(&mut self.inner).poll(cx));
        let this = &mut *self;
        let (mut response, error_type) = match result {
            Ok(response) => (response, None),
            Err(error) => {
                let direction = A::SIDE.direction();
                let metrics = &*this.layer.metrics;
                let response = server::render_error(direction, &error, metrics, &this.trace_id);
                (response, Some(error.code()))
            }
        };
        if let Some(trace_id) = this.trace_id.0 {
            // For the tap, read by the telemetry layer above.
            response.extensions_mut().insert(TracedAs(trace_id));
        }
        if let Some(mut open) = this.open.take() {
            if let Some(AnsweredBy(peer)) = response.extensions().get::<AnsweredBy>() {
                open.attribute(KeyValue::new(attr::CALLEE, peer.as_str()));
            }
            let span = open.finish(response.status(), error_type);
            this.layer.tracer.queue.push(span);
        }
        Poll::Ready(Ok(response))
    }
}

impl<F, A> Drop for Traced<F, A> {
    /// A request whose future is dropped before the response head (the caller reset the
    /// stream or closed the connection, or the drain limit cut it off) still ends its span,
    /// as an error, so the downstream spans keep their parent.
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            self.layer.tracer.queue.push(open.cancelled());
        }
    }
}

/// The span's name (`METHOD route`, or the method alone when no route template matched) and
/// the attributes known before forwarding.
fn describe<A: SpanAttributes>(
    layer: &TraceLayer<A>,
    request: &Request<ProxyBody>,
) -> (Cow<'static, str>, Vec<KeyValue>) {
    // The conventions' `_OTHER` (span name `HTTP`) for extension methods: a caller cannot
    // choose span names.
    let method = match MethodLabel::of(request.method()) {
        MethodLabel::Other => None,
        known => Some(known.as_str()),
    };
    let labelled = request.extensions().get::<Labelled>();
    let route = labelled.map(|l| l.route).filter(|r| is_template(*r));
    let name = match (method, route) {
        (Some(method), Some(route)) => Cow::Owned(format!("{method} {}", route.as_str())),
        (Some(method), None) => Cow::Borrowed(method),
        (None, _) => Cow::Borrowed("HTTP"),
    };
    let mut attributes = Vec::with_capacity(14);
    attributes.push(KeyValue::new(
        "http.request.method",
        method.unwrap_or("_OTHER"),
    ));
    if method.is_none() {
        let original = bounded_value(request.method().as_str());
        attributes.push(KeyValue::new("http.request.method_original", original));
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new("http.route", route.as_str()));
    }
    if let Some(service) = labelled
        .map(|l| l.service)
        .filter(|s| *s != NONE && *s != EGRESS)
    {
        attributes.push(KeyValue::new(attr::SERVICE, service.as_str()));
    }
    let own = layer.tracer.own();
    layer
        .attributes
        .attributes(request, labelled, own, &mut attributes);
    (name, attributes)
}

fn is_template(route: Label) -> bool {
    route != UNMATCHED && route != NONE
}
