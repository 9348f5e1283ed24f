//! Reading the trace context off a request ([`extract`]) and writing it onto the next one
//! ([`inject`]).
//!
//! Precedence when a request carries several formats: W3C `traceparent`, then B3's single
//! `b3` header (which the B3 spec puts before the multi headers), then `X-B3-*`. A format
//! that fails to parse falls through to the next, so one broken header does not lose a
//! context another one carries. Tracing never fails a request.

use std::ops::BitOr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::b3::{B3_HEADER, X_B3_HEADERS};
use super::{B3, Sampler, Sampling, SpanId, TraceContext, TraceContextError, TraceId};
use super::{TraceState, Traceparent};

/// W3C `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The propagation format a request's trace context came in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// No trace headers at all.
    #[default]
    None,
    /// W3C `traceparent` (and `tracestate`).
    W3c,
    /// B3's single `b3` header.
    B3Single,
    /// B3's `X-B3-*` headers.
    B3Multi,
}

/// A set of formats to write ([`inject`]): `Formats::W3C | Formats::B3_MULTI`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Formats(u8);

impl Formats {
    /// No format: [`inject`] then only removes trace headers.
    pub const NONE: Self = Self(0);
    /// W3C `traceparent` and `tracestate`.
    pub const W3C: Self = Self(1);
    /// The single `b3` header.
    pub const B3_SINGLE: Self = Self(2);
    /// The `X-B3-*` headers.
    pub const B3_MULTI: Self = Self(4);

    /// True when every format of `other` is in this set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Formats {
    type Output = Self;

    fn bitor(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl From<Format> for Formats {
    /// The one format a request came in ([`Format::None`] is the empty set).
    fn from(format: Format) -> Self {
        match format {
            Format::None => Self::NONE,
            Format::W3c => Self::W3C,
            Format::B3Single => Self::B3_SINGLE,
            Format::B3Multi => Self::B3_MULTI,
        }
    }
}

/// What [`extract`] found on a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// The caller's trace, to continue; `None` starts a new one.
    pub context: Option<TraceContext>,
    /// The format the context came in; when none was usable, the first format whose headers
    /// were present (so the reply to a malformed W3C caller is still W3C); `None` when the
    /// request carried no trace headers.
    pub format: Format,
    /// A sampling decision sent without ids (B3's `b3: 0`, `X-B3-Sampled: 0`): the trace
    /// this hop starts takes it instead of asking the sampler.
    pub decision: Option<Sampling>,
    /// The first rule a trace header broke, for a debug log. Set also when a later format
    /// was used, or when the `traceparent` was used but its `tracestate` was dropped.
    pub rejected: Option<TraceContextError>,
}

impl Extracted {
    /// The context of this hop: the caller's (with the sampler deciding a deferred B3
    /// decision, by trace id as any hop would), or a new trace started here with the caller's
    /// id-less decision or else the sampler's.
    pub fn continue_or_start(self, sampler: &Sampler) -> TraceContext {
        match self.context {
            Some(mut context) => {
                if context.sampling == Sampling::Defer {
                    let sampled = sampler.decide(Some(&context), context.trace_id);
                    context.sampling = Sampling::from_sampled(sampled);
                }
                context
            }
            None => {
                let trace_id = TraceId::random();
                let sampling = self
                    .decision
                    .unwrap_or_else(|| Sampling::from_sampled(sampler.decide(None, trace_id)));
                TraceContext::start_with(trace_id, sampling)
            }
        }
    }

    fn with_b3(mut self, b3: B3, format: Format) -> Self {
        self.format = format;
        self.context = b3.context();
        if self.context.is_none() {
            self.decision = Some(b3.sampling);
        }
        self
    }

    fn reject(&mut self, format: Format, error: TraceContextError) {
        if self.format == Format::None {
            self.format = format;
        }
        self.rejected.get_or_insert(error);
    }
}

/// Reads the trace context off a request's headers. Never fails: anything malformed is
/// skipped (see [`Extracted::rejected`]).
pub fn extract(headers: &HeaderMap) -> Extracted {
    let mut extracted = Extracted::default();
    let present = Present::in_headers(headers);
    if present.is_empty() {
        return extracted;
    }
    let mut traceparents = headers.get_all(TRACEPARENT).iter();
    if let Some(first) = traceparents.next() {
        let parsed = match traceparents.next() {
            // The W3C test suite: two `traceparent` fields restart the trace.
            Some(_) => Err(TraceContextError::Repeated {
                header: "traceparent",
            }),
            None => Traceparent::try_from(first),
        };
        match parsed {
            Ok(traceparent) => {
                extracted.format = Format::W3c;
                extracted.context = Some(w3c_context(traceparent, headers, &mut extracted));
                return extracted;
            }
            Err(error) => extracted.reject(Format::W3c, error),
        }
    }
    // The first value wins, as for every B3 header.
    if let Some(value) = present.b3_single.then(|| headers.get(B3_HEADER)).flatten() {
        match B3::try_from(value) {
            Ok(b3) => return extracted.with_b3(b3, Format::B3Single),
            Err(error) => extracted.reject(Format::B3Single, error),
        }
    }
    if !present.b3_multi {
        return extracted;
    }
    match B3::from_multi(headers) {
        Ok(Some(b3)) => extracted.with_b3(b3, Format::B3Multi),
        Ok(None) => extracted,
        Err(error) => {
            extracted.reject(Format::B3Multi, error);
            extracted
        }
    }
}

/// The context of a valid `traceparent` with its `tracestate` (parsed only now: the spec
/// forbids parsing it when the `traceparent` failed; its own failure drops only itself).
fn w3c_context(
    traceparent: Traceparent,
    headers: &HeaderMap,
    extracted: &mut Extracted,
) -> TraceContext {
    let mut context = TraceContext::from(traceparent);
    let values = headers
        .get_all(TRACESTATE)
        .iter()
        .map(HeaderValue::as_bytes);
    match TraceState::parse_values(values) {
        Ok(tracestate) => context.tracestate = tracestate,
        Err(error) => extracted.reject(Format::W3c, error),
    }
    context
}

/// Writes `context` onto a request this hop sends as span `span_id`, in `formats`, after
/// removing every trace header already there (so no stale or conflicting context is
/// forwarded, including `tracestate` when W3C is not written).
pub fn inject(context: &TraceContext, span_id: SpanId, formats: Formats, headers: &mut HeaderMap) {
    let present = Present::in_headers(headers);
    if present.w3c {
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
    }
    if present.b3_single {
        headers.remove(B3_HEADER);
    }
    if present.b3_multi {
        for name in X_B3_HEADERS {
            headers.remove(name);
        }
    }
    if formats.contains(Formats::W3C) {
        headers.insert(
            TRACEPARENT,
            never_indexed(context.traceparent(span_id).to_header_value()),
        );
        if !context.tracestate.is_empty() {
            // A parsed `TraceState` holds only printable ASCII.
            if let Ok(value) = HeaderValue::from_str(context.tracestate.as_str()) {
                headers.insert(TRACESTATE, value);
            }
        }
    }
    let b3 = context.b3(span_id);
    if formats.contains(Formats::B3_SINGLE) {
        headers.insert(B3_HEADER, never_indexed(b3.to_header_value()));
    }
    if formats.contains(Formats::B3_MULTI) {
        b3.write_multi(headers);
    }
}

/// Which families of trace headers a request carries, found in one pass over its header
/// names. Most requests carry none (the caller does not trace): [`extract`] and [`inject`]
/// then make no lookup or removal by name, each of which hashes the name (issue 16: 8
/// removals and 7 lookups per request per sidecar before).
#[derive(Debug, Clone, Copy, Default)]
struct Present {
    /// `traceparent` or `tracestate`.
    w3c: bool,
    /// `b3`.
    b3_single: bool,
    /// Any `x-b3-*`.
    b3_multi: bool,
}

impl Present {
    fn in_headers(headers: &HeaderMap) -> Present {
        let mut present = Present::default();
        for name in headers.keys() {
            let name = name.as_str();
            if name == TRACEPARENT.as_str() || name == TRACESTATE.as_str() {
                present.w3c = true;
            } else if name == B3_HEADER.as_str() {
                present.b3_single = true;
            } else if name.starts_with("x-b3-") {
                present.b3_multi = true;
            }
        }
        present
    }

    fn is_empty(self) -> bool {
        !(self.w3c || self.b3_single || self.b3_multi)
    }
}

/// A value that is new with every hop (it carries this hop's span id), marked so that
/// HPACK sends it as a never-indexed literal: indexing it would only evict the entries
/// that do repeat (RFC 7541 §6.2.3; h2 then skips the dynamic table for it).
fn never_indexed(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

#[cfg(test)]
#[path = "propagation_tests.rs"]
mod tests;
