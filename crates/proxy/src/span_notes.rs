//! What the trace layer (`crate::trace`) leaves on a request for the layers below it: the id of the trace
//! the request is in (for their log lines, sampled or not) and, when the span is recorded,
//! a place to add to it ([`SpanNotes`]: the authorization decision, retries, timeouts).
//!
//! A layer that has something to say looks the extension up and says it; without tracing,
//! or for a request whose trace is not sampled, there is no notes handle and nothing is
//! kept. Below every layer that writes notes (resilience, authorization, egress), so
//! they need not know the trace layer.

mod decision;

pub use decision::note_decision;

/// meshwork's span attribute names.
pub mod attr {
    /// The caller's verified SPIFFE ID (inbound), or this workload's (outbound).
    pub const CALLER: &str = "meshwork.caller.spiffe_id";
    /// The callee's SPIFFE ID: this workload's (inbound), or the peer's (outbound).
    pub const CALLEE: &str = "meshwork.callee.spiffe_id";
    /// The mesh service the request is for.
    pub const SERVICE: &str = "meshwork.service";
    /// The host of an egress request (outside the mesh).
    pub const EGRESS_HOST: &str = "meshwork.egress.host";
    /// `allow` or `deny`: the authorization decision (inbound policy or egress policy).
    pub const DECISION: &str = "meshwork.authz.decision";
    /// The decision id quoted in the 403 body and the log.
    pub const DECISION_ID: &str = "meshwork.authz.decision_id";
    /// The policy that decided (`namespace/name`), when one did.
    pub const POLICY: &str = "meshwork.authz.policy";
    /// The rule of that policy, from 0.
    pub const RULE: &str = "meshwork.authz.rule";
}

use std::borrow::Cow;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use http::Request;
use opentelemetry::KeyValue;
use opentelemetry::trace::Event;

use crate::trace_context::{TraceId, TraceIdField};

/// Request extension: the span this request is in at this sidecar.
#[derive(Debug, Clone)]
pub struct ActiveSpan {
    /// The trace's id.
    pub trace_id: TraceId,
    /// `Some` only when the span is recorded (sampled).
    pub notes: Option<SpanNotes>,
}

/// Additions to a recorded span from the layers below the trace layer. Shared by the
/// request's replays (a replay clones the extensions), so every try's events land on the one
/// span.
#[derive(Debug, Clone, Default)]
pub struct SpanNotes(Arc<Mutex<Notes>>);

/// What [`SpanNotes`] collected.
#[derive(Debug, Default)]
pub(super) struct Notes {
    pub(super) attributes: Vec<KeyValue>,
    pub(super) events: Vec<Event>,
    /// Set by a layer that knows the request failed in a way the status alone does not say
    /// (a policy denial): the span's error description.
    pub(super) error: Option<Cow<'static, str>>,
}

impl SpanNotes {
    /// Adds an attribute.
    pub fn attribute(&self, attribute: KeyValue) {
        self.lock(|notes| notes.attributes.push(attribute));
    }

    /// Adds an event happening now.
    pub fn event(&self, name: &'static str, attributes: Vec<KeyValue>) {
        let event = Event::new(name, SystemTime::now(), attributes, 0);
        self.lock(|notes| notes.events.push(event));
    }

    /// Marks the span as an error with `description`.
    pub fn error(&self, description: impl Into<Cow<'static, str>>) {
        let description = description.into();
        self.lock(|notes| notes.error = Some(description));
    }

    /// Takes what was collected.
    pub(super) fn take(&self) -> Notes {
        self.lock(std::mem::take)
    }

    fn lock<T>(&self, f: impl FnOnce(&mut Notes) -> T) -> T {
        // A panic while holding this lock loses at most one span's notes.
        let mut notes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut notes)
    }
}

/// The longest attribute value taken from a request (a path, a host), in bytes: OpenTelemetry's
/// attribute-length limit, so that a peer or app cannot make each queued span carry 64 KiB.
pub const MAX_VALUE_LEN: usize = 1024;

/// `text` as an attribute value, cut to [`MAX_VALUE_LEN`] bytes (at a character boundary).
pub fn bounded_value(text: &str) -> String {
    if text.len() <= MAX_VALUE_LEN {
        return text.to_owned();
    }
    let mut end = MAX_VALUE_LEN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The notes handle of `request`'s span, when it is recorded.
pub fn notes<B>(request: &Request<B>) -> Option<&SpanNotes> {
    request.extensions().get::<ActiveSpan>()?.notes.as_ref()
}

/// The request's trace id as a log field (`-` without tracing).
pub fn trace_id<B>(request: &Request<B>) -> TraceIdField {
    TraceIdField(request.extensions().get::<ActiveSpan>().map(|a| a.trace_id))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_shared_by_clones_and_taken_once() {
        let notes = SpanNotes::default();
        let replay = notes.clone();
        replay.event("retry", vec![KeyValue::new("attempt", 1)]);
        notes.attribute(KeyValue::new("k", "v"));
        notes.error("denied");
        let taken = notes.take();
        assert_eq!(taken.events.len(), 1);
        assert_eq!(taken.attributes, vec![KeyValue::new("k", "v")]);
        assert_eq!(taken.error.as_deref(), Some("denied"));
        assert!(replay.take().events.is_empty());
    }

    #[test]
    fn values_from_requests_are_bounded_at_a_character_boundary() {
        assert_eq!(bounded_value("/charges"), "/charges");
        let long = "é".repeat(MAX_VALUE_LEN);
        let cut = bounded_value(&long);
        assert!(cut.len() <= MAX_VALUE_LEN && cut.len() >= MAX_VALUE_LEN - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn trace_id_field_prints_a_dash_without_a_span() {
        let request = Request::new(());
        assert_eq!(trace_id(&request).to_string(), "-");
        assert!(notes(&request).is_none());
        let mut request = Request::new(());
        let id = TraceId::random();
        request.extensions_mut().insert(ActiveSpan {
            trace_id: id,
            notes: Some(SpanNotes::default()),
        });
        assert_eq!(trace_id(&request).to_string(), id.to_string());
        assert!(notes(&request).is_some());
    }
}
