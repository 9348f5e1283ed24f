//! Property tests: every parser round-trips what its formatter writes, and no input makes
//! any of them (or `extract`) panic. `check_arbitrary_headers` and `fuzz_input` are the body
//! of the fuzz target `fuzz/fuzz_targets/trace_context.rs` (keep them in step).

#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

use super::*;

fn trace_id() -> impl Strategy<Value = TraceId> {
    prop_oneof![
        any::<[u8; 16]>().prop_filter_map("all zeros", TraceId::from_bytes),
        // 64-bit B3 ids, written in 16 digits.
        any::<[u8; 8]>().prop_filter_map("all zeros", |low| {
            let mut bytes = [0; 16];
            bytes[8..].copy_from_slice(&low);
            TraceId::from_bytes(bytes)
        }),
    ]
}

fn span_id() -> impl Strategy<Value = SpanId> {
    any::<[u8; 8]>().prop_filter_map("all zeros", SpanId::from_bytes)
}

fn sampling() -> impl Strategy<Value = Sampling> {
    prop_oneof![
        Just(Sampling::Defer),
        Just(Sampling::Deny),
        Just(Sampling::Accept),
        Just(Sampling::Debug),
    ]
}

/// A B3 value the single header can carry (a parent only after a sampling state; a
/// sampling state alone only when it is a decision).
fn b3() -> impl Strategy<Value = B3> {
    let with_ids = (
        trace_id(),
        span_id(),
        proptest::option::of(span_id()),
        sampling(),
    )
        .prop_map(|(trace_id, span_id, parent, sampling)| B3 {
            ids: Some(B3Ids {
                trace_id,
                span_id,
                parent_span_id: parent.filter(|_| sampling != Sampling::Defer),
            }),
            sampling,
        });
    let decision = sampling()
        .prop_filter("a decision", |s| *s != Sampling::Defer)
        .prop_map(|sampling| B3 {
            ids: None,
            sampling,
        });
    prop_oneof![4 => with_ids, 1 => decision]
}

fn tracestate_member() -> impl Strategy<Value = String> {
    (
        "[a-z0-9][a-z0-9_*/@-]{0,20}",
        "[ -+\\--<>-~]{0,20}[!-+\\--<>-~]",
    )
        .prop_map(|(key, value)| format!("{key}={value}"))
}

/// The header names `extract` reads, and one it does not.
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

fn trace_header_name() -> impl Strategy<Value = HeaderName> {
    proptest::sample::select(&NAMES[..]).prop_map(HeaderName::from_static)
}

/// The fuzz target's input decoding: header fields separated by `\n`, each field's first
/// byte picking its name from [`NAMES`], the rest its value.
fn fuzz_input(data: &[u8]) -> Vec<(HeaderName, Vec<u8>)> {
    data.split(|&byte| byte == b'\n')
        .filter_map(|field| field.split_first())
        .map(|(&pick, value)| {
            let name = NAMES[usize::from(pick) % NAMES.len()];
            (HeaderName::from_static(name), value.to_vec())
        })
        .collect()
}

/// The fuzz target's body: any bytes as header values on any trace header, through
/// `extract`, `continue_or_start` and `inject`, and every parser on its own.
fn check_arbitrary_headers(values: &[(HeaderName, Vec<u8>)]) {
    let mut headers = HeaderMap::new();
    for (name, bytes) in values {
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
    // What was written reads back as the same trace.
    let again = extract(&headers).context.unwrap();
    assert_eq!(again.trace_id, context.trace_id);
    assert_eq!(again.parent_span_id, Some(span));
    assert_eq!(again.tracestate, context.tracestate);
}

proptest! {
    #[test]
    fn traceparent_round_trips(
        trace_id in trace_id(),
        parent_id in span_id(),
        bits in any::<u8>(),
    ) {
        let traceparent = Traceparent { trace_id, parent_id, flags: TraceFlags::from_bits_known(bits) };
        let text = traceparent.to_string();
        prop_assert_eq!(text.len(), 55);
        prop_assert_eq!(text.parse::<Traceparent>().unwrap(), traceparent);
    }

    #[test]
    fn b3_single_round_trips(b3 in b3()) {
        prop_assert_eq!(b3.to_string().parse::<B3>().unwrap(), b3);
    }

    #[test]
    fn b3_multi_round_trips(b3 in b3()) {
        let mut headers = HeaderMap::new();
        b3.write_multi(&mut headers);
        prop_assert_eq!(B3::from_multi(&headers).unwrap(), Some(b3));
    }

    #[test]
    fn tracestate_round_trips_and_stays_bounded(
        members in proptest::collection::vec(tracestate_member(), 0..=32),
    ) {
        let state: TraceState = members.join(" , ").parse().unwrap();
        prop_assert!(state.as_str().len() <= 512);
        prop_assert_eq!(state.to_string().parse::<TraceState>().unwrap(), state.clone());
        // Nothing but whole members is dropped, and none when the list fits.
        if members.join(",").len() <= 512 && members.iter().all(|m| {
            let key = m.split('=').next().unwrap();
            members.iter().filter(|n| n.split('=').next().unwrap() == key).count() == 1
        }) {
            prop_assert_eq!(state.as_str(), members.join(","));
        }
        for (key, value) in state.members() {
            let member = format!("{key}={value}");
            prop_assert!(members.contains(&member));
        }
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Traceparent::parse_bytes(&bytes);
        let _ = B3::parse_single(&bytes);
        let _ = TraceState::parse_values([bytes.as_slice()]);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = text.parse::<TraceId>();
            let _ = text.parse::<SpanId>();
        }
    }

    #[test]
    fn parsers_never_panic_on_near_valid_text(
        text in "[0-9a-fA-F\\-. \t,=@]{0,80}",
    ) {
        let _ = text.parse::<Traceparent>();
        let _ = text.parse::<B3>();
        let _ = text.parse::<TraceState>();
    }

    #[test]
    fn fuzz_target_body_holds_for_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_arbitrary_headers(&fuzz_input(&data));
    }

    #[test]
    fn arbitrary_headers_never_panic(
        values in proptest::collection::vec(
            (trace_header_name(), prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..80),
                "[0-9a-f\\-]{0,70}".prop_map(String::into_bytes),
            ]),
            0..8,
        ),
    ) {
        check_arbitrary_headers(&values);
    }
}
