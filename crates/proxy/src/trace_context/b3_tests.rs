//! B3 parsing and writing, with the examples of openzipkin/b3-propagation's README.

#![allow(clippy::unwrap_used)]

use super::*;

fn multi(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

fn span(hex: &str) -> SpanId {
    hex.parse().unwrap()
}

#[test]
fn b3_single_readme_examples() {
    let full: B3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
        .parse()
        .unwrap();
    let ids = full.ids.unwrap();
    assert_eq!(ids.trace_id.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(ids.span_id, span("e457b5a2e4d86bd1"));
    assert_eq!(ids.parent_span_id, Some(span("05e3ac9a4f6e3b90")));
    assert_eq!(full.sampling, Sampling::Accept);
    assert_eq!(
        full.to_string(),
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
    );

    let debug: B3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-d"
        .parse()
        .unwrap();
    assert_eq!(debug.sampling, Sampling::Debug);
    assert_eq!(debug.ids.unwrap().parent_span_id, None);

    let deferred: B3 = "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"
        .parse()
        .unwrap();
    assert_eq!(deferred.sampling, Sampling::Defer);

    let deny: B3 = "0".parse().unwrap();
    assert_eq!(
        deny,
        B3 {
            ids: None,
            sampling: Sampling::Deny
        }
    );
    assert_eq!(deny.to_string(), "0");
    assert_eq!("1".parse::<B3>().unwrap().sampling, Sampling::Accept);
    assert_eq!("d".parse::<B3>().unwrap().sampling, Sampling::Debug);
}

#[test]
fn b3_single_64_bit_trace_ids_stay_16_digits() {
    let short: B3 = "463ac35c9f6413ad-a2fb4a1d1a96d312-0".parse().unwrap();
    assert!(short.ids.unwrap().trace_id.is_64_bit());
    assert_eq!(short.to_string(), "463ac35c9f6413ad-a2fb4a1d1a96d312-0");
}

#[test]
fn b3_single_deferred_with_parent_is_written_without_the_parent() {
    let b3 = B3 {
        ids: Some(B3Ids {
            trace_id: "80f198ee56343ba864fe8b2a57d3eff7".parse().unwrap(),
            span_id: span("e457b5a2e4d86bd1"),
            parent_span_id: Some(span("05e3ac9a4f6e3b90")),
        }),
        sampling: Sampling::Defer,
    };
    assert_eq!(
        b3.to_string(),
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1"
    );
}

#[test]
fn b3_single_malformed_values_are_rejected() {
    for value in [
        "",
        "-",
        "2",
        "true",
        "D",
        "80f198ee56343ba864fe8b2a57d3eff7",
        "80f198ee56343ba864fe8b2a57d3eff7-",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-E457B5A2E4D86BD1-1",
        "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1",
        "80f198ee56343ba8-e457b5a2e4d86bd-1",
        "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-0000000000000000",
        // A parent must follow a sampling state: this is not `{trace}-{span}-{parent}`.
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-05e3ac9a4f6e3b90",
    ] {
        assert!(value.parse::<B3>().is_err(), "{value:?} was accepted");
    }
    assert_eq!(
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x"
            .parse::<B3>()
            .unwrap_err()
            .to_string(),
        "b3: SamplingState must be 0, 1 or d"
    );
}

#[test]
fn b3_multi_readme_example() {
    let headers = multi(&[
        ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
        ("X-B3-ParentSpanId", "05e3ac9a4f6e3b90"),
        ("X-B3-SpanId", "e457b5a2e4d86bd1"),
        ("X-B3-Sampled", "1"),
    ]);
    let b3 = B3::from_multi(&headers).unwrap().unwrap();
    assert_eq!(
        b3,
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"
            .parse()
            .unwrap()
    );
    let mut written = HeaderMap::new();
    b3.write_multi(&mut written);
    assert_eq!(written, headers);
}

#[test]
fn b3_multi_sampling_states() {
    let ids = [
        ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
        ("X-B3-SpanId", "a2fb4a1d1a96d312"),
    ];
    let with = |extra: &[(&str, &str)]| {
        let pairs: Vec<_> = ids.iter().chain(extra).copied().collect();
        B3::from_multi(&multi(&pairs))
    };
    assert_eq!(with(&[]).unwrap().unwrap().sampling, Sampling::Defer);
    assert_eq!(
        with(&[("X-B3-Sampled", "0")]).unwrap().unwrap().sampling,
        Sampling::Deny
    );
    assert_eq!(
        with(&[("X-B3-Sampled", "true")]).unwrap().unwrap().sampling,
        Sampling::Accept
    );
    assert_eq!(
        with(&[("X-B3-Sampled", "false")])
            .unwrap()
            .unwrap()
            .sampling,
        Sampling::Deny
    );
    assert_eq!(
        with(&[("X-B3-Flags", "1")]).unwrap().unwrap().sampling,
        Sampling::Debug
    );
    assert_eq!(
        with(&[("X-B3-Flags", "1"), ("X-B3-Sampled", "0")])
            .unwrap()
            .unwrap()
            .sampling,
        Sampling::Debug
    );
    // Any other flags value is ignored.
    assert_eq!(
        with(&[("X-B3-Flags", "2")]).unwrap().unwrap().sampling,
        Sampling::Defer
    );
    // The first value of a repeated header wins.
    assert_eq!(
        with(&[("X-B3-Sampled", "1"), ("X-B3-Sampled", "0")])
            .unwrap()
            .unwrap()
            .sampling,
        Sampling::Accept
    );
    // Empty or nonsense is malformed.
    assert!(with(&[("X-B3-Sampled", "")]).is_err());
    assert!(with(&[("X-B3-Sampled", "yes")]).is_err());
    assert!(with(&[("X-B3-ParentSpanId", "-")]).is_err());
    assert!(with(&[("X-B3-ParentSpanId", "")]).is_err());
}

#[test]
fn b3_multi_decision_alone_and_ids_that_must_come_together() {
    let deny = B3::from_multi(&multi(&[("X-B3-Sampled", "0")])).unwrap();
    assert_eq!(
        deny,
        Some(B3 {
            ids: None,
            sampling: Sampling::Deny
        })
    );
    assert_eq!(B3::from_multi(&HeaderMap::new()), Ok(None));
    assert_eq!(B3::from_multi(&multi(&[("X-B3-Flags", "0")])), Ok(None));
    for pairs in [
        &[("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124")][..],
        &[("X-B3-SpanId", "a2fb4a1d1a96d312")][..],
        &[("X-B3-ParentSpanId", "0020000000000001")][..],
    ] {
        assert!(B3::from_multi(&multi(pairs)).is_err(), "{pairs:?}");
    }
    let bad_id = multi(&[
        ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb612"),
        ("X-B3-SpanId", "a2fb4a1d1a96d312"),
    ]);
    assert_eq!(
        B3::from_multi(&bad_id).unwrap_err().to_string(),
        "x-b3-traceid: value must be 16 or 32 lower-case hex digits"
    );
}

#[test]
fn b3_multi_write_replaces_stale_headers() {
    let mut headers = multi(&[
        ("X-B3-TraceId", "463ac35c9f6413ad48485a3953bb6124"),
        ("X-B3-SpanId", "a2fb4a1d1a96d312"),
        ("X-B3-ParentSpanId", "0020000000000001"),
        ("X-B3-Sampled", "1"),
        ("X-B3-Sampled", "1"),
    ]);
    let debug_root = B3 {
        ids: Some(B3Ids {
            trace_id: TraceId::parse_b3_hex(b"463ac35c9f6413ad").unwrap(),
            span_id: span("e457b5a2e4d86bd1"),
            parent_span_id: None,
        }),
        sampling: Sampling::Debug,
    };
    debug_root.write_multi(&mut headers);
    assert_eq!(
        headers,
        multi(&[
            ("X-B3-TraceId", "463ac35c9f6413ad"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Flags", "1"),
        ])
    );
}
