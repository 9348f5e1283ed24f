//! Engine unit tests: the semantics of the crate docs, and the indexes checked against a
//! linear scan of every rule.

use identity::SpiffeId;
use proptest::prelude::*;

use super::*;
use crate::decision::{AuditOutcome, Decision, DecisionKind};
use crate::dns::Host;
use crate::model::{
    AuthorizationRuleSpec, EgressDestinationSpec, HeaderMatcherSpec, IdentityMatcherSpec,
    PathMatcherSpec, RequestMatcherSpec,
};
use crate::path::NormalizedPath;
use crate::request::{EgressRequest, Request};

fn set(yaml: &str) -> PolicySet {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn engine(yaml: &str) -> Engine {
    Engine::compile(&set(yaml)).unwrap_or_else(|e| panic!("{e}"))
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn ask(engine: &Engine, caller: Option<&str>, method: &str, path: &str) -> Decision {
    let caller = caller.map(id);
    let path = NormalizedPath::parse(path).unwrap_or_else(|e| panic!("{e}"));
    let headers: &[(&str, &str)] = &[];
    engine.authorize(&Request {
        target_service: "billing",
        caller: caller.as_ref(),
        method,
        path: &path,
        headers,
    })
}

const STORE: &str = "spiffe://td/ns/default/sa/store";
const REPORTING: &str = "spiffe://td/ns/default/sa/reporting";

const SEED: &str = r#"
authorization:
  store-may-charge:
    targetService: billing
    action: ALLOW
    rules:
      - from: [{spiffeId: "spiffe://td/ns/default/sa/store"}]
        to: [{methods: [POST], paths: [{exact: /charges}]}]
      - from: [{spiffeIdPrefix: "spiffe://td/ns/default/"}]
        to: [{methods: [GET], paths: [{template: "/customers/{id}/charges"}]}]
"#;

#[test]
fn unknown_service_is_allowed_with_no_policy() {
    let e = engine(SEED);
    let path = NormalizedPath::root();
    let d = e.authorize(&Request {
        target_service: "ledger",
        caller: None,
        method: "GET",
        path: &path,
        headers: &crate::NoHeaders,
    });
    assert!(d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::NoPolicy);
    assert_eq!(d.reason.policy, None);
}

#[test]
fn allow_policy_makes_the_service_default_deny() {
    let e = engine(SEED);
    let d = ask(&e, Some(STORE), "POST", "/charges");
    assert!(d.allowed);
    assert_eq!(
        (d.reason.policy.as_deref(), d.reason.rule),
        (Some("store-may-charge"), Some(0))
    );
    assert_eq!(d.reason.kind, DecisionKind::ExplicitAllow);
    assert_eq!(
        d.reason.matcher,
        format!("from[0] spiffeId {STORE}; to[0] methods POST, path exact /charges")
    );

    let d = ask(&e, Some(REPORTING), "POST", "/charges");
    assert!(!d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::DefaultDeny);
    assert!(ask(&e, None, "POST", "/charges").reason.kind == DecisionKind::DefaultDeny);

    let d = ask(&e, Some(REPORTING), "GET", "/customers/7/charges/");
    assert_eq!(d.reason.rule, Some(1));
    assert_eq!(
        d.reason.matcher,
        "from[0] spiffeIdPrefix spiffe://td/ns/default/; to[0] methods GET, path template /customers/{id}/charges"
    );
    assert!(d.allowed);
}

#[test]
fn allow_policy_without_rules_denies_everything() {
    let e = engine("authorization:\n  lockdown: {targetService: billing, action: ALLOW}\n");
    assert_eq!(
        ask(&e, Some(STORE), "GET", "/").reason.kind,
        DecisionKind::DefaultDeny
    );
}

#[test]
fn deny_beats_allow_whatever_the_names() {
    for deny_name in ["a-deny", "z-deny"] {
        let e = engine(&format!(
            "{SEED}  {deny_name}:\n    targetService: billing\n    action: DENY\n    rules: [{{to: [{{paths: [{{prefix: /charges}}]}}]}}]\n"
        ));
        let d = ask(&e, Some(STORE), "POST", "/charges/");
        assert!(!d.allowed);
        assert_eq!(d.reason.kind, DecisionKind::ExplicitDeny);
        assert_eq!(d.reason.policy.as_deref(), Some(deny_name));
        assert_eq!(d.reason.matcher, "any caller; to[0] path prefix /charges");
    }
}

#[test]
fn deny_only_service_allows_the_rest() {
    let e = engine(
        "authorization:\n  no-delete: {targetService: billing, action: DENY, rules: [{to: [{methods: [DELETE]}]}]}\n",
    );
    assert!(!ask(&e, Some(STORE), "DELETE", "/x").allowed);
    let d = ask(&e, Some(STORE), "GET", "/x");
    assert!(d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::NoPolicy);
}

#[test]
fn first_rule_in_canonical_order_decides() {
    let e = engine(
        "authorization:\n  b: {targetService: billing, action: ALLOW, rules: [{}]}\n  a: {targetService: billing, action: ALLOW, rules: [{to: [{methods: [PUT]}]}, {}]}\n",
    );
    let d = ask(&e, Some(STORE), "GET", "/");
    assert_eq!(
        (d.reason.policy.as_deref(), d.reason.rule),
        (Some("a"), Some(1))
    );
    assert_eq!(d.reason.matcher, "any caller; any request");
}

#[test]
fn audit_deny_lets_the_request_through_and_says_so() {
    let e = engine(&format!(
        "{SEED}  audit-no-store:\n    targetService: billing\n    action: DENY\n    mode: audit\n    rules: [{{from: [{{spiffeIdGlob: \"spiffe://td/ns/*/sa/store\"}}]}}]\n"
    ));
    let d = ask(&e, Some(STORE), "POST", "/charges");
    assert!(d.allowed);
    assert_eq!(d.reason.policy.as_deref(), Some("store-may-charge"));
    assert_eq!(d.audit.len(), 1);
    assert_eq!(d.audit[0].outcome, AuditOutcome::WouldDeny);
    assert_eq!(d.audit[0].reason.policy.as_deref(), Some("audit-no-store"));
    assert_eq!(d.audit[0].reason.kind, DecisionKind::ExplicitDeny);
    assert!(
        d.to_string()
            .contains("; audit: would deny (policy audit-no-store rule 0: "),
        "{d}"
    );
    // Already denied: nothing to note.
    assert!(
        ask(&e, Some(REPORTING), "POST", "/charges")
            .audit
            .is_empty()
    );
}

#[test]
fn audit_allow_policy_reports_would_deny_and_would_allow() {
    let e = engine(
        "authorization:\n  trial: {targetService: billing, action: ALLOW, mode: audit, rules: [{from: [{spiffeId: \"spiffe://td/ns/default/sa/store\"}]}]}\n",
    );
    let d = ask(&e, Some(REPORTING), "GET", "/");
    assert!(d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::NoPolicy);
    assert_eq!(d.audit[0].outcome, AuditOutcome::WouldDeny);
    assert_eq!(d.audit[0].reason.kind, DecisionKind::DefaultDeny);
    assert!(ask(&e, Some(STORE), "GET", "/").audit.is_empty());

    let e = engine(&format!(
        "{SEED}  trial: {{targetService: billing, action: ALLOW, mode: audit, rules: [{{from: [{{spiffeId: \"{REPORTING}\"}}]}}]}}\n"
    ));
    let d = ask(&e, Some(REPORTING), "POST", "/charges");
    assert!(!d.allowed);
    assert_eq!(d.audit[0].outcome, AuditOutcome::WouldAllow);
    assert_eq!(d.audit[0].reason.policy.as_deref(), Some("trial"));
}

#[test]
fn headers_take_part() {
    let e = engine(
        "authorization:\n  h: {targetService: billing, action: ALLOW, rules: [{to: [{headers: [{name: X-Tenant, exact: acme}]}]}]}\n",
    );
    let path = NormalizedPath::root();
    let decide = |headers: &[(&str, &str)]| {
        e.authorize(&Request {
            target_service: "billing",
            caller: None,
            method: "GET",
            path: &path,
            headers,
        })
        .allowed
    };
    assert!(decide(&[("x-tenant", "acme")]));
    assert!(!decide(&[("x-tenant", "acme"), ("X-Tenant", "evil")]));
    assert!(!decide(&[]));
}

const EGRESS: &str = r#"
egress:
  billing-to-stripe:
    from: [{spiffeId: "spiffe://td/ns/default/sa/billing"}]
    to:
      - {host: api.stripe.com, ports: [443]}
      - {host: "*.files.stripe.com", ports: [443]}
  status-probe:
    allowCidr: true
    to:
      - {cidr: 192.0.2.0/24, ports: [80], methods: [GET], paths: [{prefix: /status}]}
"#;

fn egress(e: &Engine, caller: &str, host: &str, port: u16, line: Option<(&str, &str)>) -> Decision {
    let caller = id(caller);
    let host: Host = host.parse().unwrap_or_else(|e| panic!("{e}"));
    let path = line.map(|(_, p)| NormalizedPath::parse(p).unwrap_or_else(|e| panic!("{e}")));
    e.egress(&EgressRequest {
        caller: &caller,
        host: &host,
        port,
        method: line.map(|(m, _)| m),
        path: path.as_ref(),
    })
}

#[test]
fn egress_is_default_deny_and_names_the_destination() {
    let e = engine(EGRESS);
    let billing = "spiffe://td/ns/default/sa/billing";
    let d = egress(&e, billing, "API.stripe.com.", 443, None);
    assert!(d.allowed);
    assert_eq!(
        (d.reason.policy.as_deref(), d.reason.rule),
        (Some("billing-to-stripe"), Some(0))
    );
    assert_eq!(
        d.reason.matcher,
        format!("from[0] spiffeId {billing}; to[0] host api.stripe.com ports 443")
    );
    assert!(egress(&e, billing, "eu.files.stripe.com", 443, None).allowed);
    assert!(!egress(&e, billing, "a.eu.files.stripe.com", 443, None).allowed);
    assert!(!egress(&e, billing, "api.stripe.com", 80, None).allowed);
    let d = egress(&e, STORE, "api.stripe.com", 443, None);
    assert!(!d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::DefaultDeny);
    assert_eq!(
        d.reason.matcher,
        format!("default deny: no EgressPolicy allows {STORE} to reach api.stripe.com:443")
    );
}

#[test]
fn egress_cidr_and_plain_http_narrowing() {
    let e = engine(EGRESS);
    assert!(egress(&e, STORE, "192.0.2.9", 80, Some(("GET", "/status/x"))).allowed);
    assert!(egress(&e, STORE, "::ffff:192.0.2.9", 80, Some(("GET", "/status"))).allowed);
    assert!(
        !egress(&e, STORE, "192.0.2.9", 80, None).allowed,
        "a tunnel cannot prove method/path"
    );
    assert!(!egress(&e, STORE, "192.0.2.9", 80, Some(("POST", "/status"))).allowed);
    assert!(!egress(&e, STORE, "192.0.3.9", 80, Some(("GET", "/status"))).allowed);
    assert!(
        !egress(
            &e,
            "spiffe://td/ns/default/sa/billing",
            "3.4.5.6",
            443,
            None
        )
        .allowed
    );
}

#[test]
fn compile_reports_every_invalid_policy() {
    let err = Engine::compile(&set(
        "authorization:\n  bad-a: {targetService: billing, action: ALLOW, rules: [{from: [{spiffeIdGlob: 'spiffe://*/x'}]}]}\negress:\n  bad-e: {to: [{cidr: 10.0.0.0/8, ports: [1]}]}\n",
    ))
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains(
            "AuthorizationPolicy \"bad-a\": rules[0].from[0].spiffeIdGlob: '*' is not allowed"
        ),
        "{err}"
    );
    assert!(
        err.contains("EgressPolicy \"bad-e\": to[0].cidr: CIDR destinations need"),
        "{err}"
    );
}

#[test]
fn hash_identifies_the_set() {
    let a = engine(SEED);
    assert_eq!(a.hash(), engine(SEED).hash());
    assert_ne!(a.hash(), engine(EGRESS).hash());
    assert_ne!(a.hash(), Engine::default().hash());
    assert_eq!(a.hash().to_string().len(), 32);
    assert_eq!(a.rule_count(), 2);
}

// ---- indexes against a linear scan ----

const IDS: &[&str] = &[
    "spiffe://td/ns/a/sa/x",
    "spiffe://td/ns/b/sa/y",
    "spiffe://td/ns/a/sa/y",
    "spiffe://other/ns/a/sa/x",
    "spiffe://td/ns/a",
    "spiffe://td",
];

fn identity_matcher() -> impl Strategy<Value = IdentityMatcherSpec> {
    prop_oneof![
        prop::sample::select(IDS).prop_map(|s| IdentityMatcherSpec {
            spiffe_id: Some(s.into()),
            ..Default::default()
        }),
        prop::sample::select(
            &[
                "spiffe://td/",
                "spiffe://td/ns/a/",
                "spiffe://td/ns/a/sa/x",
                "spiffe://other/ns"
            ][..]
        )
        .prop_map(|s| IdentityMatcherSpec {
            spiffe_id_prefix: Some(s.into()),
            ..Default::default()
        }),
        prop::sample::select(
            &[
                "spiffe://td/ns/*/sa/x",
                "spiffe://td/*/a/*/y",
                "spiffe://td/*",
                "spiffe://td/ns/*"
            ][..]
        )
        .prop_map(|s| IdentityMatcherSpec {
            spiffe_id_glob: Some(s.into()),
            ..Default::default()
        }),
    ]
}

fn path_matcher() -> impl Strategy<Value = PathMatcherSpec> {
    prop_oneof![
        prop::sample::select(&["/a", "/a/b", "/"][..]).prop_map(|s| PathMatcherSpec {
            exact: Some(s.into()),
            ..Default::default()
        }),
        prop::sample::select(&["/a", "/", "/c/b"][..]).prop_map(|s| PathMatcherSpec {
            prefix: Some(s.into()),
            ..Default::default()
        }),
        prop::sample::select(
            &[
                "/a/{x}",
                "/{x}/b",
                "/a/{r...}",
                "/{x}",
                "/{x}/{y}/c",
                "/{r...}"
            ][..]
        )
        .prop_map(|s| PathMatcherSpec {
            template: Some(s.into()),
            ..Default::default()
        }),
    ]
}

fn request_matcher() -> impl Strategy<Value = RequestMatcherSpec> {
    let methods = prop::collection::vec(
        prop::sample::select(&["GET", "POST"][..]).prop_map(String::from),
        0..2,
    );
    let header = HeaderMatcherSpec {
        name: "x-h".into(),
        exact: Some("1".into()),
        ..Default::default()
    };
    let headers = prop_oneof![3 => Just(vec![]), 1 => Just(vec![header])];
    (
        methods,
        prop::collection::vec(path_matcher(), 0..3),
        headers,
    )
        .prop_map(|(methods, paths, headers)| RequestMatcherSpec {
            methods,
            paths,
            headers,
            ports: vec![],
        })
}

fn authz_policy() -> impl Strategy<Value = AuthorizationPolicySpec> {
    let rule = (
        prop::collection::vec(identity_matcher(), 0..3),
        prop::collection::vec(request_matcher(), 0..3),
    )
        .prop_map(|(from, to)| AuthorizationRuleSpec { from, to });
    let action = prop_oneof![Just(Action::Allow), Just(Action::Deny)];
    let mode = prop_oneof![3 => Just(Mode::Enforce), 1 => Just(Mode::Audit)];
    (action, mode, prop::collection::vec(rule, 0..4)).prop_map(|(action, mode, rules)| {
        AuthorizationPolicySpec {
            target_service: "svc".into(),
            action,
            mode,
            rules,
        }
    })
}

fn egress_policy() -> impl Strategy<Value = EgressPolicySpec> {
    let dest = (
        prop::sample::select(
            &[
                "h:api.x.com",
                "h:*.x.com",
                "h:other.com",
                "c:10.0.0.0/8",
                "c:10.1.0.0/16",
                "c:::/0",
            ][..],
        ),
        prop::collection::vec(prop::sample::select(&[443u16, 80][..]), 1..3),
        prop::collection::vec(Just("GET".to_owned()), 0..2),
        prop::collection::vec(path_matcher(), 0..2),
    )
        .prop_map(|(d, ports, methods, paths)| {
            let (kind, value) = d.split_at(2);
            let (host, cidr) = if kind == "h:" {
                (Some(value.into()), None)
            } else {
                (None, Some(value.into()))
            };
            EgressDestinationSpec {
                host,
                cidr,
                ports,
                methods,
                paths,
            }
        });
    (
        prop::collection::vec(identity_matcher(), 0..3),
        prop::collection::vec(dest, 1..4),
    )
        .prop_map(|(from, to)| EgressPolicySpec {
            from,
            allow_cidr: true,
            to,
        })
}

fn policy_set() -> impl Strategy<Value = PolicySet> {
    let names = || prop::sample::select(&["p1", "p2", "p3", "p4", "p5"][..]).prop_map(String::from);
    (
        prop::collection::btree_map(names(), authz_policy(), 0..5),
        prop::collection::btree_map(names(), egress_policy(), 0..4),
    )
        .prop_map(|(authorization, egress)| PolicySet {
            authorization,
            egress,
        })
}

const PATHS: &[&str] = &["/", "/a", "/a/b", "/c/b", "/a/b/c", "/b", "/c/d/c"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn indexed_authorize_equals_linear_scan(
        set in policy_set(),
        caller in prop::option::of(prop::sample::select(IDS)),
        method in prop::sample::select(&["GET", "POST"][..]),
        path in prop::sample::select(PATHS),
        with_header in any::<bool>(),
    ) {
        let engine = Engine::compile(&set).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let caller = caller.map(id);
        let path = NormalizedPath::parse(path).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let headers: &[(&str, &str)] = if with_header { &[("x-h", "1")] } else { &[] };
        let req = Request { target_service: "svc", caller: caller.as_ref(), method, path: &path, headers };
        prop_assert_eq!(engine.authorize(&req), engine.authorize_linear(&req));
    }

    #[test]
    fn indexed_egress_equals_linear_scan(
        set in policy_set(),
        caller in prop::sample::select(IDS),
        host in prop::sample::select(&["api.x.com", "a.b.x.com", "x.com", "other.com", "10.1.2.3", "10.9.9.9", "::1"][..]),
        port in prop::sample::select(&[443u16, 80][..]),
        line in prop::option::of((Just("GET"), prop::sample::select(PATHS))),
    ) {
        let engine = Engine::compile(&set).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let caller = id(caller);
        let host: Host = host.parse().map_err(|e: crate::DnsError| TestCaseError::fail(e.to_string()))?;
        let path = line.map(|(_, p)| NormalizedPath::parse(p)).transpose().map_err(|e| TestCaseError::fail(e.to_string()))?;
        let req = EgressRequest { caller: &caller, host: &host, port, method: line.map(|(m, _)| m), path: path.as_ref() };
        prop_assert_eq!(engine.egress(&req), engine.egress_linear(&req));
    }
}

#[test]
fn engine_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Engine>();
}
