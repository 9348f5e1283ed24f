use std::path::Path;

use api::contract::observe::{Decision as Recorded, DecisionRow};
use policy::DecisionKind;

use super::*;
use crate::policy_cmd::PolicyFiles;

const TD: &str = "spiffe://meshwork.local/ns/default/sa";
/// Rule 0's first `to` of billing-charges in examples/store-billing/policies.yaml.
const STORE_POST: &str =
    "        - methods: [POST]\n          paths:\n            - exact: /charges\n";

/// Rule 1 of billing-charges: any workload may GET /healthz.
const HEALTHZ_RULE: &str = "    - from:\n        - spiffeIdPrefix: spiffe://meshwork.local/ns/default/\n      to:\n        - methods: [GET]\n          paths:\n            - exact: /healthz\n";

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing")
}

/// The example's engine, with `edit` applied to policies.yaml first.
fn engine(edit: impl Fn(String) -> String) -> Engine {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let policies = dir.path().join("policies.yaml");
    let text = std::fs::read_to_string(&policies).unwrap();
    std::fs::write(&policies, edit(text)).unwrap();
    PolicyFiles::load(dir.path()).unwrap().engine
}

fn row(caller: &str, method: &str, route: &str, decision: Recorded, count: u64) -> DecisionRow {
    DecisionRow {
        service: "billing".to_owned(),
        caller: format!("{TD}/{caller}"),
        method: method.to_owned(),
        route: route.to_owned(),
        decision,
        count,
    }
}

/// What two billing replicas recorded.
fn records() -> Vec<DecisionRecord> {
    let record = |rows| DecisionRecord {
        workload: "billing".to_owned(),
        window_secs: 600.0,
        rows,
    };
    vec![
        record(vec![
            row("store", "POST", "/charges", Recorded::Allow, 3),
            row("reporting", "POST", "/charges", Recorded::Deny, 2),
            row("store", "GET", "/charges/{id}", Recorded::Allow, 1),
        ]),
        record(vec![
            row("store", "POST", "/charges", Recorded::Allow, 2),
            row("store", "GET", "[unmatched]", Recorded::Deny, 4),
        ]),
    ]
}

/// The example's policies, unchanged: the baseline.
fn baseline() -> Engine {
    engine(|text| text)
}

#[test]
fn the_unchanged_policies_change_nothing() {
    let replay = replay(&baseline(), &engine(|text| text), &records());
    assert!(replay.newly_denied.is_empty(), "{replay:#?}");
    assert!(replay.newly_allowed.is_empty(), "{replay:#?}");
    // The replicas' rows are merged: store's POSTs are one row of 5.
    assert_eq!((replay.unchanged_rows, replay.unchanged_requests), (3, 8));
    assert_eq!(replay.unknown.len(), 1);
    assert_eq!(
        (
            replay.unknown[0].row.route.as_str(),
            replay.unknown[0].count
        ),
        ("[unmatched]", 4)
    );
}

#[test]
fn removing_stores_post_rule_newly_denies_its_charges() {
    let candidate = engine(|text| {
        assert!(
            text.contains(STORE_POST),
            "the example changed: update STORE_POST"
        );
        text.replace(STORE_POST, "")
    });
    let replay = replay(&baseline(), &candidate, &records());
    assert_eq!(replay.newly_denied.len(), 1, "{replay:#?}");
    let change = &replay.newly_denied[0];
    assert_eq!(
        (
            change.row.caller.as_str(),
            change.row.method.as_str(),
            change.row.route.as_str()
        ),
        (format!("{TD}/store").as_str(), "POST", "/charges")
    );
    assert_eq!(change.count, 5);
    assert_eq!(change.baseline.kind, DecisionKind::ExplicitAllow);
    assert_eq!(change.candidate.kind, DecisionKind::DefaultDeny);
    // Reading one charge back still matches rule 0's template, decided on the placeholder.
    assert!(replay.newly_allowed.is_empty(), "{replay:#?}");
    assert_eq!(replay.unchanged_rows, 2);
}

#[test]
fn a_row_the_candidate_allows_names_the_allowing_rule() {
    // The baseline without billing-charges' rule 1 (reporting's GET /healthz).
    let without_rule_1 = engine(|text| {
        assert!(
            text.contains(HEALTHZ_RULE),
            "the example changed: update HEALTHZ_RULE"
        );
        text.replace(HEALTHZ_RULE, "")
    });
    let records = vec![DecisionRecord {
        workload: "billing".to_owned(),
        window_secs: 60.0,
        rows: vec![row("reporting", "GET", "/healthz", Recorded::Deny, 7)],
    }];
    let replay = replay(&without_rule_1, &baseline(), &records);
    assert_eq!(replay.newly_allowed.len(), 1, "{replay:#?}");
    let reason = &replay.newly_allowed[0].candidate;
    assert_eq!(
        (reason.policy.as_deref(), reason.rule, reason.kind),
        (
            Some("default/billing-charges"),
            Some(1),
            DecisionKind::ExplicitAllow
        )
    );
    assert_eq!(replay.newly_allowed[0].count, 7);
}

#[test]
fn what_was_decided_then_is_not_compared_with() {
    // Recorded as denied (a header or an exact id decided then), recorded as allowed (a
    // policy changed since): the unchanged candidate changes neither.
    let records = vec![DecisionRecord {
        workload: "billing".to_owned(),
        window_secs: 60.0,
        rows: vec![
            row("store", "POST", "/charges", Recorded::Deny, 2),
            row("reporting", "POST", "/charges", Recorded::Allow, 3),
        ],
    }];
    let replay = replay(&baseline(), &baseline(), &records);
    assert!(replay.newly_denied.is_empty(), "{replay:#?}");
    assert!(replay.newly_allowed.is_empty(), "{replay:#?}");
    assert_eq!((replay.unchanged_rows, replay.unchanged_requests), (2, 5));
}
