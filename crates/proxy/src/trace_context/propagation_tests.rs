//! `extract` and `inject` over whole header maps, as the W3C test suite drives a service.

#![allow(clippy::unwrap_used)]

use super::*;

const TRACE: &str = "12345678901234567890123456789012";
const TRACEPARENT_01: &str = "00-12345678901234567890123456789012-1234567890123456-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn trace_id(extracted: &Extracted) -> Option<String> {
    extracted.context.as_ref().map(|c| c.trace_id.to_string())
}

#[test]
fn extract_nothing_from_a_request_without_trace_headers() {
    let extracted = extract(&headers(&[("trace-parent", TRACEPARENT_01)]));
    assert_eq!(extracted, Extracted::default());
    assert_eq!(extracted.format, Format::None);
}

#[test]
fn extract_w3c_with_its_tracestate() {
    let extracted = extract(&headers(&[
        (
            "TraceParent",
            "00-12345678901234567890123456789012-1234567890123456-00",
        ),
        ("tracestate", "foo=1,bar=2"),
        ("TRACESTATE", "baz=3"),
        ("trace-state", "ignored=1"),
    ]));
    assert_eq!(extracted.format, Format::W3c);
    assert_eq!(extracted.rejected, None);
    let context = extracted.context.unwrap();
    assert_eq!(context.trace_id.to_string(), TRACE);
    assert_eq!(
        context.parent_span_id.unwrap().to_string(),
        "1234567890123456"
    );
    assert_eq!(context.sampling, Sampling::Deny);
    assert_eq!(context.tracestate.as_str(), "foo=1,bar=2,baz=3");
}

#[test]
fn extract_repeated_traceparent_starts_a_new_trace() {
    let extracted = extract(&headers(&[
        (
            "traceparent",
            "00-12345678901234567890123456789011-1234567890123456-01",
        ),
        ("traceparent", TRACEPARENT_01),
    ]));
    assert_eq!(extracted.context, None);
    assert_eq!(extracted.format, Format::W3c);
    assert_eq!(
        extracted.rejected,
        Some(TraceContextError::Repeated {
            header: "traceparent"
        })
    );
}

#[test]
fn extract_malformed_traceparent_starts_a_new_trace_and_ignores_tracestate() {
    let extracted = extract(&headers(&[
        (
            "traceparent",
            "00-00000000000000000000000000000000-1234567890123456-01",
        ),
        ("tracestate", "foo=1"),
    ]));
    assert_eq!(extracted.context, None);
    assert_eq!(extracted.format, Format::W3c);
    assert_eq!(
        extracted.rejected.unwrap().to_string(),
        "traceparent: trace-id must not be all zeros"
    );
    let context =
        extract(&headers(&[("traceparent", "garbage")])).continue_or_start(&Sampler::always());
    assert_ne!(context.trace_id.to_string(), TRACE);
    assert_eq!(context.parent_span_id, None);
    assert_eq!(context.sampling, Sampling::Accept);
}

#[test]
fn extract_invalid_tracestate_keeps_the_traceparent() {
    let extracted = extract(&headers(&[
        ("traceparent", TRACEPARENT_01),
        ("tracestate", "foo=1"),
        ("tracestate", "FOO=1"),
    ]));
    let context = extracted.context.unwrap();
    assert_eq!(context.trace_id.to_string(), TRACE);
    assert!(context.tracestate.is_empty());
    assert_eq!(
        extracted.rejected,
        Some(TraceContextError::TraceStateMember {
            member: 2,
            rule: "key must start with a lower-case letter or a digit"
        })
    );
}

#[test]
fn extract_prefers_w3c_then_b3_single_then_multi() {
    let b3_single = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1";
    let multi = [
        ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ];
    let all: Vec<_> = [("traceparent", TRACEPARENT_01), ("b3", b3_single)]
        .into_iter()
        .chain(multi)
        .collect();
    let extracted = extract(&headers(&all));
    assert_eq!(
        (extracted.format, trace_id(&extracted).unwrap()),
        (Format::W3c, TRACE.to_owned())
    );
    let extracted = extract(&headers(&all[1..]));
    assert_eq!(extracted.format, Format::B3Single);
    assert_eq!(
        trace_id(&extracted).unwrap(),
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    let extracted = extract(&headers(&all[2..]));
    assert_eq!(extracted.format, Format::B3Multi);
    assert_eq!(
        trace_id(&extracted).unwrap(),
        "463ac35c9f6413ad48485a3953bb6124"
    );
    assert_eq!(extracted.context.unwrap().sampling, Sampling::Defer);
}

#[test]
fn extract_falls_through_a_broken_format_and_says_why() {
    let extracted = extract(&headers(&[
        (
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-0X",
        ),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ]));
    assert_eq!(extracted.format, Format::B3Single);
    assert_eq!(
        trace_id(&extracted).unwrap(),
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    assert_eq!(
        extracted.rejected.unwrap().to_string(),
        "traceparent: trace-flags must be 2 lower-case hex digits"
    );
    let extracted = extract(&headers(&[
        ("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312-yes"),
        ("x-b3-traceid", "463ac35c9f6413ad"),
        ("x-b3-spanid", "a2fb4a1d1a96d312"),
        ("x-b3-sampled", "1"),
    ]));
    assert_eq!(extracted.format, Format::B3Multi);
    assert_eq!(extracted.context.unwrap().sampling, Sampling::Accept);
    assert_eq!(
        extracted.rejected.unwrap().to_string(),
        "b3: SamplingState must be 0, 1 or d"
    );
    let only_broken = extract(&headers(&[("x-b3-traceid", "463ac35c9f6413ad")]));
    assert_eq!(
        (only_broken.format, only_broken.context),
        (Format::B3Multi, None)
    );
    assert!(only_broken.rejected.is_some());
}

#[test]
fn extract_b3_deny_alone_starts_an_unsampled_trace() {
    for pairs in [&[("b3", "0")][..], &[("X-B3-Sampled", "0")][..]] {
        let extracted = extract(&headers(pairs));
        assert_eq!(extracted.context, None);
        assert_eq!(extracted.decision, Some(Sampling::Deny));
        let context = extracted.continue_or_start(&Sampler::always());
        assert_eq!(context.sampling, Sampling::Deny);
        assert_eq!(context.parent_span_id, None);
    }
}

#[test]
fn continue_or_start_decides_a_deferred_b3_trace_by_its_id() {
    let deferred = extract(&headers(&[("b3", "463ac35c9f6413ad-a2fb4a1d1a96d312")]));
    let context = deferred.clone().continue_or_start(&Sampler::never());
    assert_eq!(context.sampling, Sampling::Deny);
    assert_eq!(
        context.trace_id.to_string(),
        "0000000000000000463ac35c9f6413ad"
    );
    let context = deferred.continue_or_start(&Sampler::always());
    assert_eq!(context.sampling, Sampling::Accept);
    // A caller's accept is kept even when this hop samples nothing new.
    let sampled = extract(&headers(&[("traceparent", TRACEPARENT_01)]));
    assert_eq!(
        sampled.continue_or_start(&Sampler::never()).sampling,
        Sampling::Accept
    );
}

#[test]
fn inject_writes_the_formats_asked_for_and_removes_stale_ones() {
    let context = extract(&headers(&[
        (
            "traceparent",
            "00-12345678901234567890123456789012-1234567890123456-03",
        ),
        ("tracestate", "foo=1"),
    ]))
    .context
    .unwrap();
    let span: SpanId = "e457b5a2e4d86bd1".parse().unwrap();
    let stale = [
        (
            "traceparent",
            "00-99999999999999999999999999999999-9999999999999999-00",
        ),
        ("tracestate", "stale=1"),
        ("b3", "0"),
        ("x-b3-sampled", "0"),
        ("x-b3-flags", "1"),
        ("x-request-id", "kept"),
    ];
    let mut out = headers(&stale);
    inject(
        &context,
        span,
        Formats::W3C | Formats::B3_SINGLE | Formats::B3_MULTI,
        &mut out,
    );
    assert_eq!(
        out,
        headers(&[
            ("x-request-id", "kept"),
            (
                "traceparent",
                "00-12345678901234567890123456789012-e457b5a2e4d86bd1-03"
            ),
            ("tracestate", "foo=1"),
            (
                "b3",
                "12345678901234567890123456789012-e457b5a2e4d86bd1-1-1234567890123456"
            ),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-parentspanid", "1234567890123456"),
            ("x-b3-sampled", "1"),
        ])
    );
    let mut out = headers(&stale);
    inject(&context, span, Formats::B3_SINGLE, &mut out);
    assert_eq!(
        out,
        headers(&[
            ("x-request-id", "kept"),
            (
                "b3",
                "12345678901234567890123456789012-e457b5a2e4d86bd1-1-1234567890123456"
            ),
        ])
    );
    let mut out = headers(&stale);
    inject(&context, span, Formats::NONE, &mut out);
    assert_eq!(out, headers(&[("x-request-id", "kept")]));
}

#[test]
fn inject_then_extract_continues_the_trace_in_every_format() {
    let context = TraceContext::start(Sampling::Debug);
    let span = SpanId::random();
    for format in [Format::W3c, Format::B3Single, Format::B3Multi] {
        let mut out = HeaderMap::new();
        inject(&context, span, format.into(), &mut out);
        let next = extract(&out);
        assert_eq!(next.format, format);
        let next = next.context.unwrap();
        assert_eq!(next.trace_id, context.trace_id);
        assert_eq!(next.parent_span_id, Some(span));
        // W3C has no debug state: it arrives as accept.
        assert!(next.sampling.is_sampled());
    }
}

#[test]
fn formats_are_a_set() {
    let both = Formats::W3C | Formats::B3_MULTI;
    assert!(both.contains(Formats::W3C) && both.contains(Formats::B3_MULTI));
    assert!(!both.contains(Formats::B3_SINGLE));
    assert!(Formats::from(Format::None).is_empty());
    assert_eq!(Formats::from(Format::B3Single), Formats::B3_SINGLE);
}

#[test]
fn inject_marks_the_values_new_with_every_hop_never_indexed() {
    let context = TraceContext::start(Sampling::Accept);
    let mut out = headers(&[("x-request-id", "kept")]);
    let formats = Formats::W3C | Formats::B3_SINGLE;
    inject(&context, SpanId::random(), formats, &mut out);
    // HPACK sends these as never-indexed literals: they would only evict what repeats.
    assert!(out[TRACEPARENT].is_sensitive());
    assert!(out[B3_HEADER].is_sensitive());
    assert!(!out["x-request-id"].is_sensitive());
}

#[test]
fn inject_removes_a_lone_stale_header_of_every_family() {
    let names = [TRACEPARENT, TRACESTATE, B3_HEADER].into_iter();
    for name in names.chain(X_B3_HEADERS) {
        let name = name.as_str();
        let mut out = headers(&[("x-request-id", "kept"), (name, "stale")]);
        let context = TraceContext::start(Sampling::Accept);
        inject(&context, SpanId::random(), Formats::NONE, &mut out);
        assert_eq!(out, headers(&[("x-request-id", "kept")]), "{name}");
    }
}
