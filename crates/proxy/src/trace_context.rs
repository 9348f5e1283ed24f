//! Distributed-trace context carried on HTTP requests (issue 12's foundation): the W3C
//! Trace Context headers (`traceparent`, `tracestate`, levels 1 and 2) and Zipkin's B3
//! (the single `b3` header and the multi `X-B3-*` headers).
//!
//! Parse, don't validate: a header becomes a [`Traceparent`], [`TraceState`] or [`B3`]
//! only through their `FromStr`/`TryFrom` parsers, and ids are [`TraceId`]/[`SpanId`],
//! which cannot be all zeros. [`extract`] reads whatever a request carries into one
//! [`TraceContext`] and never fails the request: malformed input means no context (a new
//! trace starts), with the rule that failed kept in [`Extracted::rejected`] for a debug
//! log. [`inject`] writes the context of the next hop in the formats asked for and removes
//! the stale ones. [`Sampler`] makes the parent-based, trace-id-ratio decision every hop
//! agrees on.
//!
//! Spans, their export and the layers that use this are `crate::trace`'s.

mod b3;
mod ids;
mod propagation;
mod sampler;
mod traceparent;
mod tracestate;

#[cfg(test)]
mod proptests;

pub use b3::{B3, B3Ids};
pub use ids::{SpanId, TraceId, TraceIdField};
pub use propagation::{Extracted, Format, Formats, extract, inject};
pub use sampler::{RatioError, Sampler};
pub use traceparent::{TraceFlags, Traceparent};
pub use tracestate::TraceState;

/// Why a trace header was not used: the header, the field and the rule it broke.
///
/// Never fails a request; [`extract`] keeps the first one in [`Extracted::rejected`] so
/// the caller can log it at debug level before starting a new trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceContextError {
    /// A header that must appear once appeared more than once (W3C `traceparent`).
    #[error("{header}: sent more than once")]
    Repeated {
        /// The header's name.
        header: &'static str,
    },
    /// The header's value as a whole has the wrong shape (length, delimiters, bytes).
    #[error("{header}: {rule}")]
    Shape {
        /// The header's name.
        header: &'static str,
        /// The rule broken.
        rule: &'static str,
    },
    /// One field of the header breaks its rule.
    #[error("{header}: {field} {rule}")]
    Field {
        /// The header's name.
        header: &'static str,
        /// The field's name, as its spec spells it.
        field: &'static str,
        /// The rule broken.
        rule: &'static str,
    },
    /// A `tracestate` list member breaks a rule.
    #[error("tracestate: list member {member}: {rule}")]
    TraceStateMember {
        /// The member's position, from 1, counting empty members and every header field.
        member: usize,
        /// The rule broken.
        rule: &'static str,
    },
    /// More `tracestate` list members than W3C's limit of 32.
    #[error("tracestate: more than 32 list members")]
    TraceStateMembers,
}

/// A sampling state as B3 defines it; W3C's `sampled` flag carries only accept or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sampling {
    /// No decision yet: the receiver decides (B3 sends no sampling field).
    Defer,
    /// Not recorded (B3 `0`, W3C `sampled` unset).
    Deny,
    /// Recorded (B3 `1`, W3C `sampled` set).
    Accept,
    /// Recorded and flagged for debugging (B3 `d` or `X-B3-Flags: 1`); implies accept.
    Debug,
}

impl Sampling {
    /// True when the trace is recorded (accept or debug).
    pub fn is_sampled(self) -> bool {
        matches!(self, Sampling::Accept | Sampling::Debug)
    }

    /// Accept or deny from a yes/no decision.
    pub fn from_sampled(sampled: bool) -> Self {
        if sampled {
            Sampling::Accept
        } else {
            Sampling::Deny
        }
    }
}

/// The trace a request belongs to, as this hop sees it.
///
/// Built by [`extract`] from a caller's headers, or by [`TraceContext::start`] when this
/// hop begins the trace. [`inject`] writes it to the next hop with a new span id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The whole trace's id, kept across every hop.
    pub trace_id: TraceId,
    /// The caller's span (W3C `parent-id`, B3 `SpanId`); `None` when this hop starts the
    /// trace.
    pub parent_span_id: Option<SpanId>,
    /// The sampling state received, or decided here.
    pub sampling: Sampling,
    /// W3C level 2's `random-trace-id` flag: at least the right-most 7 bytes of the trace id
    /// are random. Kept as received while the trace id is kept (the spec's MUST); B3 cannot
    /// say, so it is unset for a B3 caller.
    pub random_trace_id: bool,
    /// The W3C `tracestate` received (empty for B3 callers), passed on unchanged.
    pub tracestate: TraceState,
}

impl TraceContext {
    /// Starts a trace at this hop: a fresh random trace id (so the random flag is set), no
    /// parent, and the given sampling state (the [`Sampler`]'s decision, or a decision a
    /// caller sent without ids, like B3's `b3: 0`).
    pub fn start(sampling: Sampling) -> Self {
        Self::start_with(TraceId::random(), sampling)
    }

    /// [`TraceContext::start`] with a trace id already drawn (e.g. the one the sampler
    /// decided on). The id must come from [`TraceId::random`]: the random flag is set.
    pub fn start_with(trace_id: TraceId, sampling: Sampling) -> Self {
        Self {
            trace_id,
            parent_span_id: None,
            sampling,
            random_trace_id: true,
            tracestate: TraceState::default(),
        }
    }

    /// The W3C flags this context is sent with.
    pub fn flags(&self) -> TraceFlags {
        TraceFlags::default()
            .with_sampled(self.sampling.is_sampled())
            .with_random(self.random_trace_id)
    }

    /// The `traceparent` for a request this hop sends as span `span_id`.
    pub fn traceparent(&self, span_id: SpanId) -> Traceparent {
        Traceparent {
            trace_id: self.trace_id,
            parent_id: span_id,
            flags: self.flags(),
        }
    }

    /// The B3 context for a request this hop sends as span `span_id` (the caller's span
    /// becomes B3's `ParentSpanId`).
    pub fn b3(&self, span_id: SpanId) -> B3 {
        B3 {
            ids: Some(B3Ids {
                trace_id: self.trace_id,
                span_id,
                parent_span_id: self.parent_span_id,
            }),
            sampling: self.sampling,
        }
    }
}

impl From<Traceparent> for TraceContext {
    fn from(traceparent: Traceparent) -> Self {
        Self {
            trace_id: traceparent.trace_id,
            parent_span_id: Some(traceparent.parent_id),
            sampling: Sampling::from_sampled(traceparent.flags.sampled()),
            random_trace_id: traceparent.flags.random(),
            tracestate: TraceState::default(),
        }
    }
}

impl B3 {
    /// The context this B3 value continues, if it carries ids (a sampling state alone
    /// starts a new trace with that state).
    pub fn context(&self) -> Option<TraceContext> {
        let ids = self.ids?;
        Some(TraceContext {
            trace_id: ids.trace_id,
            parent_span_id: Some(ids.span_id),
            sampling: self.sampling,
            random_trace_id: false,
            tracestate: TraceState::default(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trace_context_from_traceparent_keeps_ids_and_flags() {
        let tp: Traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"
            .parse()
            .unwrap();
        let context = TraceContext::from(tp);
        assert_eq!(context.parent_span_id, Some(tp.parent_id));
        assert_eq!(context.sampling, Sampling::Accept);
        assert!(context.random_trace_id);
        let next: SpanId = "00f067aa0ba902b7".parse().unwrap();
        assert_eq!(
            context.traceparent(next).to_string(),
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-03"
        );
    }

    #[test]
    fn trace_started_here_has_no_parent_and_the_random_flag() {
        let context = TraceContext::start(Sampling::Deny);
        assert_eq!(context.parent_span_id, None);
        assert!(context.random_trace_id);
        assert_eq!(context.flags(), TraceFlags::default().with_random(true));
        let b3 = context.b3(SpanId::random());
        assert_eq!(b3.ids.unwrap().parent_span_id, None);
    }

    #[test]
    fn trace_context_from_b3_makes_its_span_our_parent() {
        let b3: B3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d-05e3ac9a4f6e3b90"
            .parse()
            .unwrap();
        let context = b3.context().unwrap();
        assert_eq!(
            context.parent_span_id,
            Some("e457b5a2e4d86bd1".parse().unwrap())
        );
        assert_eq!(context.sampling, Sampling::Debug);
        assert!(!context.random_trace_id);
        let decision_only: B3 = "0".parse().unwrap();
        assert_eq!(decision_only.context(), None);
    }
}
