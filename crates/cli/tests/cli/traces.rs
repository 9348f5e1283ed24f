//! Issue 12 end to end: `meshwork up examples/store-billing` with `OTEL_EXPORTER_OTLP_ENDPOINT`
//! pointing at a real OTLP collector (`rotel`, see `testkit::otlp`). One `POST /reconcile`
//! on reporting, sent with a W3C `traceparent`, becomes one trace across every hop:
//! reporting → store → billing → api.stripe.com (a CONNECT tunnel), plus reporting's forbidden
//! `GET /charges` on billing, whose server span is an error carrying the 403's decision id.
//! Checked from what the collector printed, not from anything meshwork says about itself.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use testkit::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, StatusCode};

use super::curl_json;
use crate::harness::{Up, example};

const TD: &str = "spiffe://meshwork.local/ns/default/sa";
/// The trace the test's request belongs to, and the test's own span (the root's parent).
const TRACE: &str = "5b8efff798038103d269b633813fc60c";
const CALLER_SPAN: &str = "eee19b7ec3c1b174";
/// Client and server span of each hop: reporting → reporting (the test's call), → store,
/// → billing (denied); store → billing; and billing's CONNECT to Stripe.
const SPANS: usize = 9;

/// The one span of `kind` that `side` recorded towards `to`, with method `method`.
fn hop<'a>(
    spans: &'a [ReceivedSpan],
    kind: SpanKind,
    side: &str,
    to: &str,
    method: &str,
) -> &'a ReceivedSpan {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| {
            s.kind == kind
                && s.service_name() == Some(side)
                && s.attr_str("server.address") == Some(to)
                && s.attr_str("http.request.method") == Some(method)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{kind:?} {side} → {to} {method}: {spans:#?}"
    );
    found[0]
}

/// `child`'s parent is `parent`.
fn parent_of(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id.as_deref(),
        Some(parent.span_id.as_str()),
        "{} should be a child of {}",
        child.name,
        parent.name
    );
}

#[test]
fn one_trace_spans_reporting_store_billing_and_stripe_with_the_denial_in_it() {
    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    let endpoint = receiver.grpc_endpoint();
    let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let mut up = Up::spawn_with_env(&example("store-billing"), &[], &vars);
    up.wait_for_line("[up] ready", Duration::from_secs(60));

    let traceparent = format!("traceparent: 00-{TRACE}-{CALLER_SPAN}-01");
    let curl = [
        "curl",
        "-sS",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
        "-H",
        &traceparent,
        "http://reporting/reconcile",
    ];
    let (code, json) = curl_json(&up.exec("reporting", &curl));
    assert_eq!(code, 200, "{json}");
    assert!(
        json["store"]["body"]["billing"]["stripe"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("ch_demo_")),
        "the chain reached Stripe: {json}"
    );
    let decision_id = json["billing"]["body"]["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let decision_id = decision_id.as_str();

    receiver
        .wait_for_spans(
            |spans| spans.iter().filter(|s| s.trace_id == TRACE).count() >= SPANS,
            Duration::from_secs(30),
        )
        .unwrap();
    // The sidecar's log line for the denial carries the trace id.
    let line = up.wait_for_line(decision_id, Duration::from_secs(10));
    assert!(line.contains(&format!("trace_id={TRACE}")), "{line}");
    // Stopped, every sidecar has flushed: whatever else it would export is there now.
    let stopped = up.signal_and_wait("TERM", Duration::from_secs(60));
    assert!(stopped.success(), "{stopped}");
    let spans = receiver.spans().unwrap();
    let (ours, others): (Vec<_>, Vec<_>) = spans.into_iter().partition(|s| s.trace_id == TRACE);
    assert_eq!(ours.len(), SPANS, "{ours:#?}");
    // Nothing else was traced: no span of the exporter's own requests to the collector.
    assert!(
        others.is_empty(),
        "spans outside the test's trace: {others:#?}"
    );

    // The test's call, through reporting's own sidecar, into reporting's app.
    let entry = hop(&ours, SpanKind::Client, "reporting", "reporting", "POST");
    assert_eq!(entry.parent_span_id.as_deref(), Some(CALLER_SPAN));
    let reconcile = hop(&ours, SpanKind::Server, "reporting", "reporting", "POST");
    parent_of(reconcile, entry);
    assert_eq!(reconcile.name, "POST /reconcile");

    // reporting → store → billing → Stripe, each client span below the server span before it.
    let to_store = hop(&ours, SpanKind::Client, "reporting", "store", "POST");
    parent_of(to_store, reconcile);
    let checkout = hop(&ours, SpanKind::Server, "store", "store", "POST");
    parent_of(checkout, to_store);
    assert_eq!(checkout.attr_str("http.route"), Some("/checkout"));
    assert_eq!(
        checkout.attr_str("meshwork.caller.spiffe_id"),
        Some(&*format!("{TD}/reporting"))
    );
    assert_eq!(
        checkout.attr_str("meshwork.callee.spiffe_id"),
        Some(&*format!("{TD}/store"))
    );
    let to_billing = hop(&ours, SpanKind::Client, "store", "billing", "POST");
    parent_of(to_billing, checkout);
    let charge = hop(&ours, SpanKind::Server, "billing", "billing", "POST");
    parent_of(charge, to_billing);
    assert_eq!(charge.name, "POST /charges");
    assert_eq!(
        charge.attr_str("meshwork.caller.spiffe_id"),
        Some(&*format!("{TD}/store"))
    );
    assert_eq!(charge.attr_str("meshwork.authz.decision"), Some("allow"));
    let stripe = hop(
        &ours,
        SpanKind::Client,
        "billing",
        "api.stripe.com",
        "CONNECT",
    );
    parent_of(stripe, charge);
    assert_eq!(
        stripe.attr_str("meshwork.egress.host"),
        Some("api.stripe.com")
    );
    assert_eq!(stripe.attr_str("meshwork.authz.decision"), Some("allow"));
    assert_eq!(stripe.attr_i64("server.port"), Some(443));

    // reporting's forbidden read: an error span on billing with the 403's decision id.
    let read = hop(&ours, SpanKind::Client, "reporting", "billing", "GET");
    parent_of(read, reconcile);
    let denied = hop(&ours, SpanKind::Server, "billing", "billing", "GET");
    parent_of(denied, read);
    assert_eq!(denied.status_code, StatusCode::Error, "{denied:#?}");
    assert_eq!(denied.attr_str("meshwork.authz.decision"), Some("deny"));
    assert_eq!(
        denied.attr_str("meshwork.authz.decision_id"),
        Some(decision_id)
    );
    assert_eq!(denied.attr_i64("http.response.status_code"), Some(403));
    assert_eq!(read.status_code, StatusCode::Error, "{read:#?}");
}
