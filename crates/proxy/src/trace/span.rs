//! One span while its request is in flight ([`OpenSpan`]), and the OpenTelemetry
//! [`SpanData`] it becomes when the response head is ready.
//!
//! Attribute names follow the OpenTelemetry semantic conventions for HTTP where one exists
//! (`http.request.method`, `http.route`, `http.response.status_code`, `server.address`,
//! `server.port`, `network.peer.address`, `url.path`, `error.type`); meshwork's own are under
//! `meshwork.` ([`crate::span_notes::attr`]). The span ends with the response head, as the request metrics do:
//! its duration is the time to first byte, not the body's.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::SystemTime;

use http::StatusCode;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, trace as otel};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

use crate::span_notes::SpanNotes;
use crate::trace_context::{SpanId, TraceContext, TraceId};

/// A span being recorded.
pub struct OpenSpan {
    trace_id: TraceId,
    span_id: SpanId,
    parent: Option<SpanId>,
    flags: TraceFlags,
    tracestate: TraceState,
    kind: SpanKind,
    name: Cow<'static, str>,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    notes: SpanNotes,
}

impl OpenSpan {
    /// Starts span `span_id` of `context` now.
    pub fn start(
        context: &TraceContext,
        span_id: SpanId,
        kind: SpanKind,
        name: Cow<'static, str>,
        attributes: Vec<KeyValue>,
        notes: SpanNotes,
    ) -> Self {
        OpenSpan {
            trace_id: context.trace_id,
            span_id,
            parent: context.parent_span_id,
            // The W3C flags as sent on (sampled, level 2's random-trace-id).
            flags: TraceFlags::new(context.flags().bits()),
            tracestate: if context.tracestate.is_empty() {
                TraceState::NONE
            } else {
                TraceState::from_str(context.tracestate.as_str()).unwrap_or_default()
            },
            kind,
            name,
            start: SystemTime::now(),
            attributes,
            notes,
        }
    }

    /// Adds an attribute known only at the end.
    pub fn attribute(&mut self, attribute: KeyValue) {
        self.attributes.push(attribute);
    }

    /// Ends the span now with the response's `status` and, when the proxy failed the request,
    /// the error's type (`error.type`).
    pub fn finish(self, status: StatusCode, error_type: Option<&'static str>) -> SpanData {
        let status_error = match self.kind {
            // Semantic conventions: 4xx is the client's fault, not the server span's.
            SpanKind::Server => status.is_server_error(),
            _ => status.is_client_error() || status.is_server_error(),
        };
        let status_attribute =
            KeyValue::new("http.response.status_code", i64::from(status.as_u16()));
        let error_type = match error_type {
            Some(error_type) => Some(Cow::Borrowed(error_type)),
            None => status_error.then(|| Cow::Owned(status.as_str().to_owned())),
        };
        self.end(Some(status_attribute), error_type)
    }

    /// Ends the span now for a request whose caller went away before the response head (its
    /// future was dropped): an error, `error.type` `cancelled`, no status code.
    pub fn cancelled(self) -> SpanData {
        self.end(None, Some(Cow::Borrowed("cancelled")))
    }

    fn end(self, status: Option<KeyValue>, error_type: Option<Cow<'static, str>>) -> SpanData {
        let notes = self.notes.take();
        let mut attributes = self.attributes;
        attributes.extend(status);
        attributes.extend(notes.attributes);
        let span_status = match (notes.error, &error_type) {
            (Some(description), _) => Status::Error { description },
            // A bare status code says it all (the semantic conventions leave the text empty).
            (None, Some(error_type)) if error_type.bytes().all(|b| b.is_ascii_digit()) => {
                Status::error("")
            }
            (None, Some(error_type)) => Status::error(error_type.clone()),
            (None, None) => Status::Unset,
        };
        if let Some(error_type) = error_type {
            attributes.push(KeyValue::new("error.type", error_type));
        }
        // Non-exhaustive, with public fields.
        let mut events = SpanEvents::default();
        events.events = notes.events;
        SpanData {
            span_context: otel::SpanContext::new(
                otel_trace_id(self.trace_id),
                otel_span_id(self.span_id),
                self.flags,
                false,
                self.tracestate,
            ),
            parent_span_id: self.parent.map_or(otel::SpanId::INVALID, otel_span_id),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: self.kind,
            name: self.name,
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: span_status,
            instrumentation_scope: scope(),
        }
    }
}

/// The instrumentation scope every sidecar span is reported under.
fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("meshwork-proxy")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn otel_trace_id(id: TraceId) -> otel::TraceId {
    otel::TraceId::from_bytes(id.to_bytes())
}

fn otel_span_id(id: SpanId) -> otel::SpanId {
    otel::SpanId::from_bytes(id.to_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::span_notes::attr;
    use crate::trace_context::Sampling;

    fn open(kind: SpanKind, notes: SpanNotes) -> (OpenSpan, TraceContext) {
        let mut context = TraceContext::start(Sampling::Accept);
        context.parent_span_id = Some(SpanId::random());
        let span = OpenSpan::start(
            &context,
            SpanId::random(),
            kind,
            "GET /charges/{id}".into(),
            vec![KeyValue::new("http.request.method", "GET")],
            notes,
        );
        (span, context)
    }

    #[test]
    fn ids_parent_and_status_code_carry_over() {
        let (span, context) = open(SpanKind::Client, SpanNotes::default());
        let data = span.finish(StatusCode::OK, None);
        assert_eq!(
            data.span_context.trace_id().to_bytes(),
            context.trace_id.to_bytes()
        );
        assert_eq!(
            data.parent_span_id.to_bytes(),
            context.parent_span_id.unwrap().to_bytes()
        );
        assert!(data.span_context.is_sampled());
        assert!(data.parent_span_is_remote);
        assert_eq!(data.status, Status::Unset);
        assert!(
            data.attributes
                .contains(&KeyValue::new("http.response.status_code", 200))
        );
    }

    #[test]
    fn a_4xx_is_an_error_for_the_client_span_only() {
        let (client, _) = open(SpanKind::Client, SpanNotes::default());
        assert!(matches!(
            client.finish(StatusCode::NOT_FOUND, None).status,
            Status::Error { .. }
        ));
        let (server, _) = open(SpanKind::Server, SpanNotes::default());
        assert_eq!(
            server.finish(StatusCode::NOT_FOUND, None).status,
            Status::Unset
        );
        let (server, _) = open(SpanKind::Server, SpanNotes::default());
        assert!(matches!(
            server
                .finish(StatusCode::BAD_GATEWAY, Some("peer_unavailable"))
                .status,
            Status::Error { .. }
        ));
    }

    #[test]
    fn a_cancelled_request_is_an_error_span_without_a_status_code() {
        let (span, _) = open(SpanKind::Client, SpanNotes::default());
        let data = span.cancelled();
        assert_eq!(data.status, Status::error("cancelled"));
        assert!(
            data.attributes
                .contains(&KeyValue::new("error.type", "cancelled"))
        );
        assert!(
            !data
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "http.response.status_code")
        );
    }

    #[test]
    fn notes_add_attributes_events_and_the_error_description() {
        let notes = SpanNotes::default();
        let (span, _) = open(SpanKind::Server, notes.clone());
        notes.attribute(KeyValue::new(attr::DECISION, "deny"));
        notes.event("retry", vec![KeyValue::new("attempt", 1)]);
        notes.error("denied by policy default/billing-charges");
        let data = span.finish(StatusCode::FORBIDDEN, None);
        assert!(
            data.attributes
                .contains(&KeyValue::new(attr::DECISION, "deny"))
        );
        assert_eq!(data.events.events.len(), 1);
        assert_eq!(
            data.status,
            Status::error("denied by policy default/billing-charges")
        );
    }
}
