//! Reads the spans out of what `rotel-agent --debug-log traces --debug-log-verbosity detailed`
//! prints (the OpenTelemetry Collector's "detailed" debug-exporter text):
//!
//! ```text
//! ResourceSpans #0
//! Resource attributes:
//!      -> service.name: Str(billing)
//! ScopeSpans #0
//! Span #0
//!     Trace ID       : 5b8efff798038103d269b633813fc60c
//!     Parent ID      : eee19b7ec3c1b173
//!     ID             : eee19b7ec3c1b174
//!     Name           : GET /x
//!     Kind           : SPAN_KIND_SERVER
//!     Status code    : STATUS_CODE_ERROR
//! Attributes:
//!      -> http.response.status_code: Int(403)
//! Events:
//! SpanEvent #0
//!      -> Name: retry
//!      -> Attributes::
//!           -> attempt: Int(2)
//! ```
//!
//! Lines it does not need (time stamps, schema URLs, links, dropped counts) are skipped by
//! their known prefixes; rotel's own log lines (JSON, `{"v":0,…`) are skipped wherever they
//! come. A string value with a line break continues on the next lines, which are joined back.
//! Anything else is an error naming the line.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::{AttrValue, Attributes, ParseError, ReceivedSpan, SpanEvent, SpanKind, StatusCode};

/// Where the parser is: which list an `-> key: value` line belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Resource,
    Span,
    SpanAttributes,
    Event,
    EventAttributes,
    Links,
    Other,
}

/// Where the last attribute went, for a string value continued on the next line.
#[derive(Clone, Copy)]
enum LastAttr {
    Resource,
    Span,
    Event,
}

struct Parser {
    spans: Vec<ReceivedSpan>,
    resource: Attributes,
    scope: String,
    section: Section,
    last: Option<(LastAttr, String)>,
}

/// Every span in `text` (rotel's whole output so far), in the order printed.
pub fn parse_spans(text: &str) -> Result<Vec<ReceivedSpan>, ParseError> {
    let mut p = Parser {
        spans: Vec::new(),
        resource: Attributes::new(),
        scope: String::new(),
        section: Section::Other,
        last: None,
    };
    for (i, line) in text.lines().enumerate() {
        p.line(line).map_err(|reason| ParseError {
            line: i + 1,
            text: line.to_owned(),
            reason,
        })?;
    }
    Ok(p.spans)
}

/// The `ab` of `"ab"`-prefixed `line`, trimmed at the start.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(name)?;
    let rest = rest.trim_start_matches(' ').strip_prefix(':')?;
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// Lines carrying nothing the tests look at.
const SKIPPED: [&str; 10] = [
    "Resource SchemaURL:",
    "ScopeSpans SchemaURL:",
    "Start time:",
    "End time:",
    "Links:",
    "-> Timestamp:",
    "-> DroppedAttributesCount:",
    "-> TraceState:",
    "Trace state",
    "Flags",
];

impl Parser {
    fn span(&mut self) -> Result<&mut ReceivedSpan, String> {
        self.spans
            .last_mut()
            .ok_or_else(|| "a span field before any `Span #`".to_owned())
    }

    fn line(&mut self, line: &str) -> Result<(), String> {
        let trimmed = line.trim();
        if line.starts_with("{\"v\":") || trimmed.is_empty() {
            return Ok(());
        }
        if self.header(trimmed)? {
            self.last = None;
            return Ok(());
        }
        if let Some(rest) = trimmed.strip_prefix("-> ") {
            return self.arrow(rest);
        }
        if self.section == Section::Span && self.span_field(trimmed)? {
            return Ok(());
        }
        if SKIPPED.iter().any(|p| trimmed.starts_with(p)) {
            return Ok(());
        }
        self.continuation(line)
    }

    /// Section headers; whether `line` was one.
    fn header(&mut self, line: &str) -> Result<bool, String> {
        let section = if line.starts_with("ResourceSpans #") {
            self.resource = Attributes::new();
            Section::Other
        } else if line == "Resource attributes:" {
            Section::Resource
        } else if line.starts_with("ScopeSpans #") {
            self.scope.clear();
            Section::Other
        } else if let Some(scope) = line.strip_prefix("InstrumentationScope") {
            self.scope = scope.split_whitespace().next().unwrap_or("").to_owned();
            Section::Other
        } else if line.starts_with("Span #") {
            self.spans
                .push(ReceivedSpan::new(&self.resource, &self.scope));
            Section::Span
        } else if line == "Attributes:" {
            self.span()?;
            Section::SpanAttributes
        } else if line == "Events:" {
            self.span()?;
            Section::Other
        } else if line.starts_with("SpanEvent #") {
            self.span()?.events.push(SpanEvent::default());
            Section::Event
        } else if line.starts_with("SpanLink #") || line == "Links:" {
            Section::Links
        } else {
            return Ok(false);
        };
        self.section = section;
        Ok(true)
    }

    /// `Trace ID : …` and the other fields of a span; whether `line` was one.
    fn span_field(&mut self, line: &str) -> Result<bool, String> {
        let span = self.span()?;
        if let Some(v) = field(line, "Trace ID") {
            span.trace_id = v.to_owned();
        } else if let Some(v) = field(line, "Parent ID") {
            span.parent_span_id = Some(v.to_owned()).filter(|v| !v.is_empty());
        } else if let Some(v) = field(line, "ID") {
            span.span_id = v.to_owned();
        } else if let Some(v) = field(line, "Name") {
            span.name = v.to_owned();
        } else if let Some(v) = field(line, "Kind") {
            span.kind = SpanKind::from_str(v)?;
        } else if let Some(v) = field(line, "Status code") {
            span.status_code = StatusCode::from_str(v)?;
        } else if let Some(v) = field(line, "Status message") {
            span.status_message = Some(v.to_owned()).filter(|v| !v.is_empty());
        } else if let Some(v) = field(line, "TraceState") {
            span.trace_state = Some(v.to_owned()).filter(|v| !v.is_empty());
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// `-> key: Value(…)` lines (and an event's `-> Name:` / `-> Attributes::`).
    fn arrow(&mut self, rest: &str) -> Result<(), String> {
        if SKIPPED
            .iter()
            .any(|p| p.strip_prefix("-> ").is_some_and(|p| rest.starts_with(p)))
        {
            return Ok(());
        }
        match self.section {
            Section::Links => return Ok(()),
            Section::Event if rest == "Attributes::" => {
                self.section = Section::EventAttributes;
                return Ok(());
            }
            Section::Event => {
                if let Some(name) = rest.strip_prefix("Name: ") {
                    self.event()?.name = name.to_owned();
                    return Ok(());
                }
            }
            _ => {}
        }
        let (key, value) = rest
            .split_once(": ")
            .ok_or_else(|| "an attribute without `key: value`".to_owned())?;
        let (target, last) = match self.section {
            Section::Resource => (&mut self.resource, LastAttr::Resource),
            Section::SpanAttributes => (&mut self.span()?.attributes, LastAttr::Span),
            Section::EventAttributes => (&mut self.event()?.attributes, LastAttr::Event),
            _ => return Err(format!("attribute {key:?} outside any attribute list")),
        };
        target.insert(key.to_owned(), AttrValue::parse(value));
        self.last = Some((last, key.to_owned()));
        Ok(())
    }

    fn event(&mut self) -> Result<&mut SpanEvent, String> {
        self.span()?
            .events
            .last_mut()
            .ok_or_else(|| "an event field before any `SpanEvent #`".to_owned())
    }

    /// A line of a string value broken over lines: joins it to the last attribute's value.
    fn continuation(&mut self, line: &str) -> Result<(), String> {
        let Some((last, key)) = self.last.clone() else {
            return Err("not a line of rotel's span output".to_owned());
        };
        let attributes = match last {
            LastAttr::Resource => &mut self.resource,
            LastAttr::Span => &mut self.span()?.attributes,
            LastAttr::Event => &mut self.event()?.attributes,
        };
        let Some(value) = attributes.get_mut(&key) else {
            return Err("not a line of rotel's span output".to_owned());
        };
        *value = value.continued(line);
        Ok(())
    }
}

impl ReceivedSpan {
    fn new(resource: &Attributes, scope: &str) -> ReceivedSpan {
        ReceivedSpan {
            resource: resource.clone(),
            scope: scope.to_owned(),
            trace_id: String::new(),
            span_id: String::new(),
            parent_span_id: None,
            name: String::new(),
            kind: SpanKind::Unspecified,
            status_code: StatusCode::Unset,
            status_message: None,
            trace_state: None,
            attributes: BTreeMap::new(),
            events: Vec::new(),
        }
    }
}

impl AttrValue {
    /// `Str(x)`, `Int(3)`, `Bool(true)`, `Double(0.5)`; anything else (`Slice(…)`, `Map(…)`,
    /// `Bytes(…)`, or a string still missing its continuation lines) as printed.
    pub(super) fn parse(text: &str) -> AttrValue {
        let inner = |prefix: &str| text.strip_prefix(prefix)?.strip_suffix(')');
        if let Some(s) = inner("Str(") {
            return AttrValue::Str(s.to_owned());
        }
        let parsed = if let Some(i) = inner("Int(") {
            i.parse().ok().map(AttrValue::Int)
        } else if let Some(b) = inner("Bool(") {
            b.parse().ok().map(AttrValue::Bool)
        } else if let Some(d) = inner("Double(") {
            d.parse().ok().map(AttrValue::Double)
        } else {
            None
        };
        parsed.unwrap_or_else(|| AttrValue::Other(text.to_owned()))
    }

    /// This value with one more line of its text (a string with line breaks).
    fn continued(&self, line: &str) -> AttrValue {
        let printed = match self {
            AttrValue::Str(s) => format!("Str({s})"),
            AttrValue::Other(o) => o.clone(),
            other => format!("{other:?}"),
        };
        AttrValue::parse(&format!("{printed}\n{line}"))
    }
}

impl FromStr for SpanKind {
    type Err = String;
    fn from_str(s: &str) -> Result<SpanKind, String> {
        Ok(match s {
            "SPAN_KIND_UNSPECIFIED" => SpanKind::Unspecified,
            "SPAN_KIND_INTERNAL" => SpanKind::Internal,
            "SPAN_KIND_SERVER" => SpanKind::Server,
            "SPAN_KIND_CLIENT" => SpanKind::Client,
            "SPAN_KIND_PRODUCER" => SpanKind::Producer,
            "SPAN_KIND_CONSUMER" => SpanKind::Consumer,
            other => return Err(format!("unknown span kind {other:?}")),
        })
    }
}

impl FromStr for StatusCode {
    type Err = String;
    fn from_str(s: &str) -> Result<StatusCode, String> {
        Ok(match s {
            "STATUS_CODE_UNSET" => StatusCode::Unset,
            "STATUS_CODE_OK" => StatusCode::Ok,
            "STATUS_CODE_ERROR" => StatusCode::Error,
            other => return Err(format!("unknown status code {other:?}")),
        })
    }
}
