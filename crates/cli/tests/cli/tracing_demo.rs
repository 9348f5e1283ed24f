//! The demo chain issue 12 traces, end to end in `examples/store-billing`: reporting's
//! `POST /reconcile` checks out through store (store → billing → api.stripe.com through a
//! `CONNECT` tunnel) and tries a call policy forbids; billing's Stripe call and its failure
//! modes. (The apps' copying of trace headers is unit-tested in `demo/trace_headers.rs`;
//! the spans themselves are the proxy's tests.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use super::curl_json;
use crate::harness::{Up, example};

const STORE_ID: &str = "spiffe://meshwork.local/ns/default/sa/store";

/// `curl -sS -X POST -w '\n%{http_code}' [-H header] url` as `workload`.
fn post(up: &Up, workload: &str, url: &str, header: Option<&str>) -> (u16, serde_json::Value) {
    let mut args = vec!["curl", "-sS", "-X", "POST", "-w", "\n%{http_code}"];
    if let Some(header) = header {
        args.extend(["-H", header]);
    }
    args.push(url);
    curl_json(&up.exec(workload, &args))
}

#[test]
fn reconcile_reaches_stripe_through_store_and_billing_and_is_denied_listing_charges() {
    let up = Up::start(&example("store-billing"));
    let (code, json) = post(&up, "reporting", "http://reporting/reconcile", None);
    assert_eq!(code, 200, "{json}");

    let store = &json["store"];
    assert_eq!(store["status"], 200, "{json}");
    let charge = &store["body"]["billing"];
    assert_eq!(charge["caller"], STORE_ID, "{json}");
    let stripe_id = charge["stripe"]["id"].as_str().unwrap_or_default();
    assert!(
        stripe_id.starts_with("ch_demo_"),
        "no Stripe charge: {json}"
    );

    let billing = &json["billing"];
    assert_eq!(billing["status"], 403, "{json}");
    assert_eq!(billing["body"]["error"], "forbidden", "{json}");
    let decision = billing["body"]["decision_id"].as_str().unwrap_or_default();
    assert!(!decision.is_empty(), "no decision id: {json}");
    // billing's sidecar logs the denial; store's still only logs reporting's checkout, as the
    // audit-mode policy on store says (before the denial: the checkout comes first).
    let lines = up.lines_until(decision, Duration::from_secs(10));
    let denial = lines.last().expect("the denial line");
    assert!(
        denial.contains("[billing") && denial.contains("denied by policy"),
        "{denial}"
    );
    let audit = "audit: policy in audit mode would decide otherwise";
    assert!(
        lines
            .iter()
            .any(|l| l.contains(audit) && l.contains("default/store-checkout-audit")),
        "no audit line before the denial: {lines:#?}"
    );

    assert_a_replay_does_not_charge_stripe_again(&up);
    assert_report_still_denied(&up);
}

/// The same `Idempotency-Key` twice: one billing charge, one Stripe charge, both answers
/// naming it.
fn assert_a_replay_does_not_charge_stripe_again(up: &Up) {
    let key = Some("Idempotency-Key: tracing-demo-once");
    let (code, first) = post(up, "store", "http://billing/charges", key);
    assert_eq!(code, 201, "{first}");
    let (code, again) = post(up, "store", "http://billing/charges", key);
    assert_eq!(code, 201, "{again}");
    assert_eq!(
        (first["replayed"].as_bool(), again["replayed"].as_bool()),
        (Some(false), Some(true))
    );
    let stripe_id = first["stripe"]["id"].as_str().unwrap_or_default();
    assert!(stripe_id.starts_with("ch_demo_"), "{first}");
    assert_eq!(again["stripe"]["id"], stripe_id, "{again}");
    assert_eq!(again["stripe"]["replayed"], true, "{again}");
}

/// `GET /report` answers as before: billing's 403 to reporting, as a 502.
fn assert_report_still_denied(up: &Up) {
    let out = up.exec(
        "reporting",
        &[
            "curl",
            "-sS",
            "-w",
            "\n%{http_code}",
            "http://reporting/report",
        ],
    );
    let (code, json) = curl_json(&out);
    assert_eq!(
        (code, json["billing_status"].as_u64()),
        (502, Some(403)),
        "{json}"
    );
}

#[test]
fn a_failed_stripe_call_is_reported_and_does_not_fail_the_charge() {
    // Port 8443 is not in billing's egress policy: the sidecar refuses the CONNECT.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example("store-billing")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = match name.as_str() {
            "claims.yaml" => continue, // charges in memory: no database needed here
            "workloads.yaml" => {
                let from = "https://api.stripe.com/v1/charges";
                assert!(text.contains(from), "{from} is no longer in the example");
                text.replace(from, "https://api.stripe.com:8443/v1/charges")
            }
            _ => text,
        };
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let up = Up::start(dir.path());
    let (code, json) = post(&up, "store", "http://billing/charges", None);
    assert_eq!(code, 201, "{json}");
    assert_eq!(json["stored_in"], "memory", "{json}");
    let error = json["stripe"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("CONNECT api.stripe.com:8443 refused with 403")
            && error.contains("egress_denied"),
        "{json}"
    );
    assert!(json["stripe"].get("id").is_none(), "{json}");
}
