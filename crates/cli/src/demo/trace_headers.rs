//! What an instrumented application does for distributed tracing, and all the demo apps
//! do: copy the trace-context headers of the request being served onto every request made
//! while serving it. The sidecars do the rest (they start traces, record spans and export
//! them); without this copy each hop would be an unrelated trace. docs/telemetry.md
//! ("What an app must do") points here.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};

/// The headers that carry trace context: W3C Trace Context and both B3 spellings (the
/// single `b3` header and the multi-header `X-B3-*` form). Lower case, as HTTP/2 sends them.
pub const TRACE_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// The trace-context headers of a request being served, to be copied onto the requests
/// made while serving it. Values are copied as they came, malformed or not: judging them is
/// the sidecar's job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceHeaders(Vec<(HeaderName, HeaderValue)>);

impl TraceHeaders {
    /// The trace-context headers among `headers` (every value of a repeated one, in order).
    pub fn copied_from(headers: &HeaderMap) -> TraceHeaders {
        let found = TRACE_HEADERS
            .iter()
            .flat_map(|name| {
                headers
                    .get_all(*name)
                    .iter()
                    .map(|value| (HeaderName::from_static(name), value.clone()))
            })
            .collect();
        TraceHeaders(found)
    }

    /// Puts these headers onto an outgoing request's `headers`, replacing any trace context
    /// already there (a request carries one context: the one of the request being served).
    pub fn copy_onto(&self, headers: &mut HeaderMap) {
        for name in TRACE_HEADERS {
            headers.remove(name);
        }
        for (name, value) in &self.0 {
            headers.append(name.clone(), value.clone());
        }
    }

    /// Whether the served request carried no trace context.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn pairs(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn copies_every_trace_header_and_nothing_else() {
        let served = headers(&[
            (
                "Traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("TraceState", "congo=t61rcWkgMzE"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
            ("X-B3-Sampled", "1"),
            ("X-B3-Flags", "0"),
            (
                "x-meshwork-client-id",
                "spiffe://meshwork.local/ns/default/sa/store",
            ),
            ("idempotency-key", "k1"),
            ("content-type", "application/json"),
        ]);
        let mut outgoing = headers(&[("content-type", "text/plain")]);
        TraceHeaders::copied_from(&served).copy_onto(&mut outgoing);
        let got = pairs(&outgoing);
        let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let mut want: Vec<&str> = TRACE_HEADERS
            .iter()
            .copied()
            .chain(["content-type"])
            .collect();
        want.sort_unstable();
        assert_eq!(names, want, "{got:?}");
        assert_eq!(
            outgoing["content-type"], "text/plain",
            "own headers are kept"
        );
        assert_eq!(outgoing["x-b3-parentspanid"], "05e3ac9a4f6e3b90");
        assert_eq!(
            outgoing["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
    }

    #[test]
    fn repeated_tracestate_values_are_kept_in_order() {
        let served = headers(&[("tracestate", "a=1"), ("tracestate", "b=2")]);
        let mut outgoing = HeaderMap::new();
        TraceHeaders::copied_from(&served).copy_onto(&mut outgoing);
        let values: Vec<&str> = outgoing
            .get_all("tracestate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(values, ["a=1", "b=2"]);
    }

    #[test]
    fn the_served_context_replaces_one_already_on_the_outgoing_request() {
        let served = headers(&[("b3", "1")]);
        let mut outgoing = headers(&[
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
            ("b3", "0"),
        ]);
        TraceHeaders::copied_from(&served).copy_onto(&mut outgoing);
        assert_eq!(pairs(&outgoing), [("b3".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn no_context_in_no_context_out() {
        let served = headers(&[("content-type", "application/json")]);
        let copied = TraceHeaders::copied_from(&served);
        assert!(copied.is_empty());
        let mut outgoing = headers(&[("accept", "*/*")]);
        copied.copy_onto(&mut outgoing);
        assert_eq!(pairs(&outgoing), [("accept".to_owned(), "*/*".to_owned())]);
    }

    #[test]
    fn malformed_values_are_copied_as_they_came() {
        let served = headers(&[("traceparent", "not-a-traceparent")]);
        let mut outgoing = HeaderMap::new();
        TraceHeaders::copied_from(&served).copy_onto(&mut outgoing);
        assert_eq!(outgoing["traceparent"], "not-a-traceparent");
    }
}
