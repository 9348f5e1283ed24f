//! The seed scenario of issue 4, end to end through the public API: YAML specs → PolicySet
//! → Engine → decisions and a policy test table.

use std::collections::BTreeMap;

use identity::SpiffeId;
use meshwork_policy::{
    AuditOutcome, AuthorizationPolicySpec, Decision, DecisionKind, EgressPolicySpec, EgressRequest,
    Engine, Host, NoHeaders, NormalizedPath, PolicySet, Request, TestTable,
};

const TD: &str = "spiffe://meshwork.local/ns/default/sa";

fn workload(name: &str) -> SpiffeId {
    format!("{TD}/{name}")
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The seed's policies, written as the `spec`s of resources would be.
fn seed() -> PolicySet {
    let store_may_charge: AuthorizationPolicySpec = yaml(
        r#"
targetService: billing
action: ALLOW
rules:
  - from: [{spiffeId: "spiffe://meshwork.local/ns/default/sa/store"}]
    to: [{methods: [POST], paths: [{exact: /charges}]}]
  - from: [{spiffeIdPrefix: "spiffe://meshwork.local/ns/default/"}]
    to: [{methods: [GET], paths: [{template: "/customers/{id}/charges"}]}]
"#,
    );
    let no_admin: AuthorizationPolicySpec = yaml(
        r#"
targetService: billing
action: DENY
rules:
  - to: [{paths: [{prefix: /admin}]}]
"#,
    );
    let billing_to_stripe: EgressPolicySpec = yaml(
        r#"
from: [{spiffeId: "spiffe://meshwork.local/ns/default/sa/billing"}]
to: [{host: api.stripe.com, ports: [443]}]
"#,
    );
    PolicySet {
        authorization: BTreeMap::from([
            ("store-may-charge".to_owned(), store_may_charge),
            ("no-admin".to_owned(), no_admin),
        ]),
        egress: BTreeMap::from([("billing-to-stripe".to_owned(), billing_to_stripe)]),
    }
}

fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_saphyr::from_str(s).unwrap_or_else(|e| panic!("{e}"))
}

fn compile(set: &PolicySet) -> Engine {
    Engine::compile(set).unwrap_or_else(|e| panic!("{e}"))
}

fn inbound(engine: &Engine, caller: &str, method: &str, raw_path: &str) -> Decision {
    let caller = workload(caller);
    let path = NormalizedPath::parse(raw_path).unwrap_or_else(|e| panic!("{raw_path}: {e}"));
    engine.authorize(&Request {
        target_service: "billing",
        caller: Some(&caller),
        method,
        path: &path,
        headers: &NoHeaders,
    })
}

fn outbound(engine: &Engine, caller: &str, host: &str, port: u16) -> Decision {
    let caller = workload(caller);
    let host: Host = host.parse().unwrap_or_else(|e| panic!("{host}: {e}"));
    engine.egress(&EgressRequest {
        caller: &caller,
        host: &host,
        port,
        method: None,
        path: None,
    })
}

#[test]
fn only_store_may_create_charges() {
    let engine = compile(&seed());
    let allowed = inbound(&engine, "store", "POST", "/charges");
    assert!(allowed.allowed, "{allowed}");
    assert_eq!(allowed.reason.kind, DecisionKind::ExplicitAllow);
    assert_eq!(
        (allowed.reason.policy.as_deref(), allowed.reason.rule),
        (Some("store-may-charge"), Some(0))
    );

    let denied = inbound(&engine, "reporting", "POST", "/charges");
    assert!(!denied.allowed);
    assert_eq!(denied.reason.kind, DecisionKind::DefaultDeny);
    assert!(!inbound(&engine, "store", "DELETE", "/charges").allowed);
}

#[test]
fn path_spelling_variants_get_the_same_decision() {
    let engine = compile(&seed());
    for caller in ["store", "reporting"] {
        let reference = inbound(&engine, caller, "POST", "/charges");
        for variant in [
            "/charges/",
            "//charges",
            "/%63harges",
            "/x/../charges",
            "/./charges",
            "/charges?x=1",
        ] {
            assert_eq!(
                inbound(&engine, caller, "POST", variant),
                reference,
                "{caller} {variant}"
            );
        }
    }
    // Spellings that could mean something else upstream are refused before any decision.
    for refused in ["/charges%2F", "/x/..;/charges", "/charges%00", "/ch\\arges"] {
        assert!(NormalizedPath::parse(refused).is_err(), "{refused}");
    }
}

#[test]
fn only_billing_may_reach_stripe() {
    let engine = compile(&seed());
    let d = outbound(&engine, "billing", "api.stripe.com", 443);
    assert!(d.allowed, "{d}");
    assert_eq!(
        (d.reason.policy.as_deref(), d.reason.rule),
        (Some("billing-to-stripe"), Some(0))
    );
    for (caller, host, port) in [
        ("store", "api.stripe.com", 443),
        ("billing", "api.stripe.com", 80),
        ("billing", "evil.example.com", 443),
        ("billing", "1.2.3.4", 443),
    ] {
        let d = outbound(&engine, caller, host, port);
        assert!(!d.allowed, "{caller} -> {host}:{port}");
        assert_eq!(d.reason.kind, DecisionKind::DefaultDeny);
        assert!(
            d.reason.matcher.contains(&format!("{host}:{port}")),
            "{}",
            d.reason.matcher
        );
    }
}

#[test]
fn deny_beats_allow() {
    let mut set = seed();
    set.authorization.insert(
        "everyone-may-admin".to_owned(),
        yaml(
            "targetService: billing\naction: ALLOW\nrules: [{to: [{paths: [{prefix: /admin}]}]}]\n",
        ),
    );
    let engine = compile(&set);
    let d = inbound(&engine, "store", "GET", "/admin/users");
    assert!(!d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::ExplicitDeny);
    assert_eq!(d.reason.policy.as_deref(), Some("no-admin"));
    assert_eq!(d.reason.matcher, "any caller; to[0] path prefix /admin");
}

#[test]
fn path_scoped_deny_holds_for_every_spelling_of_the_path() {
    // Everything is allowed, so only the DENY on /admin can refuse: a spelling that
    // slipped past normalisation would be let through by this ALLOW.
    let mut set = seed();
    set.authorization.insert(
        "everyone-may-do-anything".to_owned(),
        yaml("targetService: billing\naction: ALLOW\nrules: [{to: [{paths: [{prefix: /}]}]}]\n"),
    );
    let engine = compile(&set);
    let control = inbound(&engine, "reporting", "GET", "/reports");
    assert!(control.allowed, "{control}");
    for spelling in [
        "/admin",
        "//admin",
        "/%61dmin",
        "/x/../admin",
        "/admin/",
        "/./admin",
        "/admin/users",
    ] {
        let d = inbound(&engine, "reporting", "GET", spelling);
        assert!(!d.allowed, "{spelling}: {d}");
        assert_eq!(d.reason.kind, DecisionKind::ExplicitDeny, "{spelling}");
        assert_eq!(d.reason.policy.as_deref(), Some("no-admin"), "{spelling}");
    }
}

#[test]
fn audit_mode_lets_a_would_deny_through_and_records_it() {
    let mut set = seed();
    set.authorization.insert(
        "trial-no-store".to_owned(),
        yaml(&format!(
            "targetService: billing\naction: DENY\nmode: audit\nrules: [{{from: [{{spiffeId: \"{TD}/store\"}}]}}]\n"
        )),
    );
    let engine = compile(&set);
    let d = inbound(&engine, "store", "POST", "/charges");
    assert!(d.allowed, "audit mode must not change the outcome");
    assert_eq!(d.reason.policy.as_deref(), Some("store-may-charge"));
    let [note] = &d.audit[..] else {
        panic!("expected one audit note, got {:?}", d.audit)
    };
    assert_eq!(note.outcome, AuditOutcome::WouldDeny);
    assert_eq!(
        (note.reason.policy.as_deref(), note.reason.rule),
        (Some("trial-no-store"), Some(0))
    );
    assert_ne!(compile(&seed()).hash(), engine.hash());
}

#[test]
fn policy_test_table_passes_and_a_wrong_expectation_fails() {
    let engine = compile(&seed());
    let resolve = |name: &str| Some(workload(name));
    let table: TestTable = yaml(
        r#"
cases:
  - {name: store creates a charge, from: store, to: billing, method: POST, path: /charges, expect: allow}
  - {name: reporting is denied, from: reporting, to: billing, method: POST, path: //charges/, expect: deny}
  - {name: billing reaches stripe, egress: true, from: billing, host: api.stripe.com, port: 443, expect: allow}
  - {name: store cannot reach stripe, egress: true, from: store, host: api.stripe.com, port: 443, expect: deny}
"#,
    );
    let report = table.run(&engine, resolve);
    assert!(report.passed(), "{report}");

    let mut wrong = table.clone();
    wrong.cases[1].expect = meshwork_policy::Expect::Allow;
    let report = wrong.run(&engine, resolve);
    assert!(!report.passed());
    assert_eq!(report.failures(), 1);
    let text = report.to_string();
    assert!(
        text.contains("FAIL reporting is denied\n  - expected allow\n  + got deny (default deny"),
        "{text}"
    );
}
