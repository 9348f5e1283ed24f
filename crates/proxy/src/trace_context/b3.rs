//! Zipkin's B3 propagation (openzipkin/b3-propagation): the single header
//! `b3: {TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}` (the last two optional, or the
//! sampling state alone, like the deny `b3: 0`) and the multi headers `X-B3-TraceId`,
//! `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`, `X-B3-Flags`.
//!
//! Trace ids are 16 or 32 lower-case hex digits, span ids 16; none may be all zeros. Of a
//! repeated multi header the first value wins (the B3 spec); an empty or nonsense value is
//! malformed, and so is the whole context. `X-B3-Sampled` also takes the legacy
//! `true`/`false` the spec lets lenient readers accept; `X-B3-Flags: 1` is debug, any other
//! value is ignored.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ids::{IdRule, SpanId, TraceId};
use super::traceparent::trim_ows;
use super::{Sampling, TraceContextError};

/// The single header.
pub const B3_HEADER: HeaderName = HeaderName::from_static("b3");
/// `X-B3-TraceId` (names are lower case in `http`).
pub const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `X-B3-SpanId`.
pub const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `X-B3-ParentSpanId`.
pub const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `X-B3-Sampled`.
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `X-B3-Flags` (`1` is debug).
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// Every multi header.
pub const X_B3_HEADERS: [HeaderName; 5] = [
    X_B3_TRACE_ID,
    X_B3_SPAN_ID,
    X_B3_PARENT_SPAN_ID,
    X_B3_SAMPLED,
    X_B3_FLAGS,
];

const SINGLE: &str = "b3";

/// The ids a B3 context carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct B3Ids {
    /// 64- or 128-bit (a 64-bit id is a [`TraceId`] whose upper half is zero).
    pub trace_id: TraceId,
    /// The sender's span.
    pub span_id: SpanId,
    /// The sender's parent span; absent on a trace's root span.
    pub parent_span_id: Option<SpanId>,
}

/// A B3 context: ids with a sampling state, or a sampling state alone (a predefined
/// decision such as deny). `ids: None` with [`Sampling::Defer`] means nothing and is
/// never produced by the parsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct B3 {
    /// The trace and span ids, absent when only a decision is sent.
    pub ids: Option<B3Ids>,
    /// The sampling state (`Defer` when none was sent).
    pub sampling: Sampling,
}

impl B3 {
    /// Parses one `b3` header value's bytes (optional whitespace around it is ignored).
    pub fn parse_single(value: &[u8]) -> Result<Self, TraceContextError> {
        let value = trim_ows(value);
        let mut fields = value.split(|&byte| byte == b'-');
        let first = fields.next().unwrap_or_default();
        let Some(span) = fields.next() else {
            let sampling = single_sampling(first)?;
            return Ok(Self {
                ids: None,
                sampling,
            });
        };
        let sampling = match fields.next() {
            Some(field) => single_sampling(field)?,
            None => Sampling::Defer,
        };
        let parent = fields.next();
        if fields.next().is_some() {
            return Err(TraceContextError::Shape {
                header: SINGLE,
                rule: "has at most 4 fields separated by '-'",
            });
        }
        let ids = ids(
            (SINGLE, "TraceId", first),
            (SINGLE, "SpanId", span),
            parent.map(|parent| (SINGLE, "ParentSpanId", parent)),
        )?;
        Ok(Self {
            ids: Some(ids),
            sampling,
        })
    }

    /// Reads the multi headers: `Ok(None)` when none carries anything.
    pub fn from_multi(headers: &HeaderMap) -> Result<Option<Self>, TraceContextError> {
        let first = |name: &HeaderName| headers.get(name).map(|v| trim_ows(v.as_bytes()));
        let trace = first(&X_B3_TRACE_ID);
        let span = first(&X_B3_SPAN_ID);
        let parent = first(&X_B3_PARENT_SPAN_ID);
        let sampling = multi_sampling(first(&X_B3_SAMPLED), first(&X_B3_FLAGS))?;
        let ids = match (trace, span) {
            (Some(trace), Some(span)) => ids(
                ("x-b3-traceid", "value", trace),
                ("x-b3-spanid", "value", span),
                parent.map(|parent| ("x-b3-parentspanid", "value", parent)),
            )?,
            (None, None) if parent.is_some() => {
                return Err(TraceContextError::Shape {
                    header: "x-b3-parentspanid",
                    rule: "sent without x-b3-traceid and x-b3-spanid",
                });
            }
            (None, None) if sampling == Sampling::Defer => return Ok(None),
            (None, None) => {
                return Ok(Some(Self {
                    ids: None,
                    sampling,
                }));
            }
            (None, Some(_)) | (Some(_), None) => {
                return Err(TraceContextError::Shape {
                    header: "x-b3-traceid",
                    rule: "x-b3-traceid and x-b3-spanid must be sent together",
                });
            }
        };
        Ok(Some(Self {
            ids: Some(ids),
            sampling,
        }))
    }

    /// Writes the multi headers (replacing any of the same names; removing the parent and
    /// sampling headers this context does not carry).
    pub fn write_multi(&self, headers: &mut HeaderMap) {
        for name in X_B3_HEADERS {
            headers.remove(name);
        }
        if let Some(ids) = self.ids {
            headers.insert(X_B3_TRACE_ID, hex_value(&TraceHex(ids.trace_id)));
            headers.insert(X_B3_SPAN_ID, hex_value(&ids.span_id));
            if let Some(parent) = ids.parent_span_id {
                headers.insert(X_B3_PARENT_SPAN_ID, hex_value(&parent));
            }
        }
        match self.sampling {
            Sampling::Defer => {}
            Sampling::Deny => {
                headers.insert(X_B3_SAMPLED, HeaderValue::from_static("0"));
            }
            Sampling::Accept => {
                headers.insert(X_B3_SAMPLED, HeaderValue::from_static("1"));
            }
            // The spec: debug implies accept, so `X-B3-Sampled` is not sent with it.
            Sampling::Debug => {
                headers.insert(X_B3_FLAGS, HeaderValue::from_static("1"));
            }
        }
    }

    /// The single header's value.
    pub fn to_header_value(&self) -> HeaderValue {
        hex_value(self)
    }
}

/// Builds the ids, naming `(header, field)` in errors. A parent of all zeros is refused
/// like any zero id.
fn ids(
    trace: (&'static str, &'static str, &[u8]),
    span: (&'static str, &'static str, &[u8]),
    parent: Option<(&'static str, &'static str, &[u8])>,
) -> Result<B3Ids, TraceContextError> {
    let trace_id = TraceId::parse_b3_hex(trace.2)
        .map_err(|rule| rule.at(trace.0, trace.1, "must be 16 or 32 lower-case hex digits"))?;
    let span_id = parse_span(span)?;
    let parent_span_id = parent.map(parse_span).transpose()?;
    Ok(B3Ids {
        trace_id,
        span_id,
        parent_span_id,
    })
}

fn parse_span(
    (header, field, hex): (&'static str, &'static str, &[u8]),
) -> Result<SpanId, TraceContextError> {
    SpanId::parse_hex16(hex)
        .map_err(|rule: IdRule| rule.at(header, field, "must be 16 lower-case hex digits"))
}

fn single_sampling(field: &[u8]) -> Result<Sampling, TraceContextError> {
    match field {
        b"0" => Ok(Sampling::Deny),
        b"1" => Ok(Sampling::Accept),
        b"d" => Ok(Sampling::Debug),
        _ => Err(TraceContextError::Field {
            header: SINGLE,
            field: "SamplingState",
            rule: "must be 0, 1 or d",
        }),
    }
}

fn multi_sampling(
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Result<Sampling, TraceContextError> {
    if flags == Some(b"1") {
        return Ok(Sampling::Debug);
    }
    match sampled {
        None => Ok(Sampling::Defer),
        Some(b"1" | b"true") => Ok(Sampling::Accept),
        Some(b"0" | b"false") => Ok(Sampling::Deny),
        Some(_) => Err(TraceContextError::Field {
            header: "x-b3-sampled",
            field: "value",
            rule: "must be 1 or 0",
        }),
    }
}

/// A trace id as B3 writes it: 16 digits for a 64-bit id, else 32.
struct TraceHex(TraceId);

impl fmt::Display for TraceHex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_64_bit() {
            write!(f, "{:016x}", self.0.to_u128())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// A header value from text this module formats (hex digits, `-`, `0`/`1`/`d`).
fn hex_value(text: &dyn fmt::Display) -> HeaderValue {
    let text = text.to_string();
    // invariant: the Display impls here write only ASCII hex digits, '-' and 'd'.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl FromStr for B3 {
    type Err = TraceContextError;

    /// The single-header form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_single(s.as_bytes())
    }
}

impl TryFrom<&HeaderValue> for B3 {
    type Error = TraceContextError;

    /// The single-header form.
    fn try_from(value: &HeaderValue) -> Result<Self, Self::Error> {
        Self::parse_single(value.as_bytes())
    }
}

impl fmt::Display for B3 {
    /// The single-header form. A deferred decision has no sampling field, so the parent,
    /// which must follow one, is left out too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sampling = match self.sampling {
            Sampling::Defer => None,
            Sampling::Deny => Some('0'),
            Sampling::Accept => Some('1'),
            Sampling::Debug => Some('d'),
        };
        let Some(ids) = self.ids else {
            return sampling.map_or(Ok(()), |sampling| write!(f, "{sampling}"));
        };
        write!(f, "{}-{}", TraceHex(ids.trace_id), ids.span_id)?;
        if let Some(sampling) = sampling {
            write!(f, "-{sampling}")?;
            if let Some(parent) = ids.parent_span_id {
                write!(f, "-{parent}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "b3_tests.rs"]
mod tests;
