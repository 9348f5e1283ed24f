//! A real OTLP receiver for tests: the `rotel` collector (PyPI package `rotel`, a Rust
//! binary nobody here wrote; `.ci/run` installs it), run on free loopback ports with its
//! debug output captured, and the spans it received read back from that output.
//!
//! ```no_run
//! use std::time::Duration;
//! use testkit::otlp::OtlpReceiver;
//! let Some(receiver) = OtlpReceiver::start_or_skip() else { return };
//! // … point the exporter at receiver.http_endpoint() or receiver.grpc_endpoint() …
//! let spans = receiver
//!     .wait_for_spans(|spans| spans.iter().any(|s| s.name == "GET /x"), Duration::from_secs(10))
//!     .expect("the span arrives");
//! ```
//!
//! rotel prints each batch as it receives it; [`OtlpReceiver::spans`] parses everything
//! printed so far (`parse.rs` says how). rotel is found through `MESHWORK_ROTEL_AGENT` (a path) or
//! else the `rotel` Python package (`<package dir>/rotel-agent`). Dropping the receiver
//! kills rotel.

mod parse;
mod process;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;

pub use parse::parse_spans;
pub use process::OtlpReceiver;

/// Attributes by key.
pub type Attributes = BTreeMap<String, AttrValue>;

/// An attribute value as rotel printed it.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// `Str(…)`.
    Str(String),
    /// `Int(…)`.
    Int(i64),
    /// `Bool(…)`.
    Bool(bool),
    /// `Double(…)`.
    Double(f64),
    /// Anything else (`Slice(…)`, `Map(…)`, `Bytes(…)`), as printed.
    Other(String),
}

impl AttrValue {
    /// The string of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number of an `Int`.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) | AttrValue::Other(s) => f.write_str(s),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Double(d) => write!(f, "{d}"),
        }
    }
}

/// OTLP span kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum SpanKind {
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// OTLP status codes (a span rotel printed without one is `Unset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

/// A span event: its name and attributes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanEvent {
    /// The event's name.
    pub name: String,
    /// Its attributes.
    pub attributes: Attributes,
}

/// One span the receiver got.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The attributes of the resource that sent it (`service.name`, …).
    pub resource: Attributes,
    /// The instrumentation scope's name (empty if none).
    pub scope: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's span id; `None` for a root span.
    pub parent_span_id: Option<String>,
    /// The span's name.
    pub name: String,
    /// Its kind.
    pub kind: SpanKind,
    /// Its status code.
    pub status_code: StatusCode,
    /// Its status message, if not empty.
    pub status_message: Option<String>,
    /// Its W3C `tracestate`, if not empty.
    pub trace_state: Option<String>,
    /// Its attributes.
    pub attributes: Attributes,
    /// Its events, in order.
    pub events: Vec<SpanEvent>,
}

impl ReceivedSpan {
    /// The resource's `service.name`.
    pub fn service_name(&self) -> Option<&str> {
        self.resource
            .get("service.name")
            .and_then(AttrValue::as_str)
    }

    /// A string attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(AttrValue::as_str)
    }

    /// An integer attribute.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(AttrValue::as_i64)
    }
}

/// A line of rotel's output that is not what the parser expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rotel output line {line}: {reason}: {text:?}")]
pub struct ParseError {
    /// 1-based line number in rotel's standard output.
    pub line: usize,
    /// The line.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// What can go wrong with a receiver.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// rotel is not installed (neither `MESHWORK_ROTEL_AGENT` nor the `rotel` Python package).
    #[error("rotel not installed ({0}): .ci/run installs it (pip install --user rotel)")]
    NotInstalled(String),
    /// rotel could not be started, or exited, or did not listen.
    #[error("rotel did not start: {reason}; its output: {output}")]
    Start {
        /// Why.
        reason: String,
        /// What it printed.
        output: String,
    },
    /// Its output could not be read as spans.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// [`OtlpReceiver::wait_for_spans`] gave up; the spans received by then.
    #[error("no span set matching within {waited:?}; received {}: {}", spans.len(), summary(spans))]
    Timeout {
        /// How long it waited.
        waited: std::time::Duration,
        /// The spans received by then.
        spans: Vec<ReceivedSpan>,
    },
    /// Starting or talking to the process.
    #[error("rotel: {0}")]
    Io(#[source] std::io::Error),
}

/// `service/name (kind, status)` per span, for error messages.
fn summary(spans: &[ReceivedSpan]) -> String {
    let each: Vec<String> = spans
        .iter()
        .map(|s| {
            let service = s.service_name().unwrap_or("?");
            format!("{service}/{:?} {:?} {:?}", s.name, s.kind, s.status_code)
        })
        .collect();
    each.join("; ")
}
