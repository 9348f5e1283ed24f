//! The sidecar's trace-context parsers (W3C `traceparent`/`tracestate`, B3 single and
//! multi) never panic on any header values; `extract` keeps `tracestate` within W3C's
//! bounds; and whatever it finds, `inject` writes headers that `extract` reads back as the
//! same trace, one hop further.
//! Input: header fields separated by `\n`; each field's first byte picks its name (one of
//! the trace headers, or another), the rest is its value.
//! The same body runs as a unit test: `check_arbitrary_headers` and `fuzz_input` in
//! crates/proxy/src/trace_context/proptests.rs (keep them in step).
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use proxy::trace_context::{
    B3, Formats, Sampler, SpanId, TraceState, Traceparent, extract, inject,
};

const NAMES: [&str; 9] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-other",
];

fuzz_target!(|data: &[u8]| {
    let values: Vec<(HeaderName, Vec<u8>)> = data
        .split(|&byte| byte == b'\n')
        .filter_map(|field| field.split_first())
        .map(|(&pick, value)| {
            let name = NAMES[usize::from(pick) % NAMES.len()];
            (HeaderName::from_static(name), value.to_vec())
        })
        .collect();
    let mut headers = HeaderMap::new();
    for (name, bytes) in &values {
        let _ = Traceparent::parse_bytes(bytes);
        let _ = B3::parse_single(bytes);
        let _ = TraceState::parse_values([bytes.as_slice()]);
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            headers.append(name.clone(), value);
        }
    }
    let extracted = extract(&headers);
    if let Some(context) = &extracted.context {
        assert!(context.tracestate.as_str().len() <= 512);
        assert!(context.tracestate.members().count() <= 32);
    }
    let context = extracted.continue_or_start(&Sampler::always());
    let span = SpanId::random();
    let formats = Formats::W3C | Formats::B3_SINGLE | Formats::B3_MULTI;
    inject(&context, span, formats, &mut headers);
    let again = extract(&headers).context.unwrap();
    assert_eq!(again.trace_id, context.trace_id);
    assert_eq!(again.parent_span_id, Some(span));
    assert_eq!(again.tracestate, context.tracestate);
});
