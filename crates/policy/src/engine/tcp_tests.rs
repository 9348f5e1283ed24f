//! Opaque TCP decisions ([`Engine::authorize_tcp`]): ports, and how HTTP and TCP entries
//! meet each protocol (the crate docs).

use identity::SpiffeId;

use super::*;
use crate::decision::{Decision, DecisionKind};
use crate::path::NormalizedPath;
use crate::request::{Request, TcpRequest};

const STORE: &str = "spiffe://td/ns/default/sa/store";
const REPORTING: &str = "spiffe://td/ns/default/sa/reporting";

fn engine(yaml: &str) -> Engine {
    let set: PolicySet = serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    Engine::compile(&set).unwrap_or_else(|e| panic!("{e}"))
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn tcp(engine: &Engine, caller: &str, port: u16) -> Decision {
    let caller = id(caller);
    engine.authorize_tcp(&TcpRequest {
        target_service: "billing",
        caller: Some(&caller),
        port,
    })
}

fn http(engine: &Engine, caller: &str, method: &str, path: &str) -> Decision {
    let caller = id(caller);
    let path = NormalizedPath::parse(path).unwrap_or_else(|e| panic!("{e}"));
    engine.authorize(&Request {
        target_service: "billing",
        caller: Some(&caller),
        method,
        path: &path,
        headers: &crate::NoHeaders,
    })
}

const PORTS: &str = r#"
authorization:
  store-may-query:
    targetService: billing
    action: ALLOW
    rules:
      - from: [{spiffeId: "spiffe://td/ns/default/sa/store"}]
        to: [{ports: [5432, 6379]}]
      - from: [{spiffeId: "spiffe://td/ns/default/sa/reporting"}]
        to: [{methods: [GET]}]
"#;

#[test]
fn a_port_rule_allows_its_ports_only() {
    let e = engine(PORTS);
    let d = tcp(&e, STORE, 5432);
    assert!(d.allowed);
    assert_eq!(
        (d.reason.policy.as_deref(), d.reason.rule),
        (Some("store-may-query"), Some(0))
    );
    assert_eq!(
        d.reason.matcher,
        "from[0] spiffeId spiffe://td/ns/default/sa/store; to[0] tcp ports 5432|6379"
    );
    let other = tcp(&e, STORE, 3306);
    assert!(!other.allowed);
    assert_eq!(other.reason.kind, DecisionKind::DefaultDeny);
}

#[test]
fn an_http_allow_rule_never_matches_tcp_and_a_port_rule_never_matches_http() {
    let e = engine(PORTS);
    // reporting may GET over HTTP, but nothing over TCP.
    assert!(http(&e, REPORTING, "GET", "/x").allowed);
    assert_eq!(
        tcp(&e, REPORTING, 5432).reason.kind,
        DecisionKind::DefaultDeny
    );
    // store may reach 5432 over TCP, but its port rule allows no HTTP request.
    assert_eq!(
        http(&e, STORE, "GET", "/x").reason.kind,
        DecisionKind::DefaultDeny
    );
}

#[test]
fn an_http_deny_rule_denies_every_tcp_connection_of_its_callers() {
    let e = engine(
        r#"
authorization:
  a-allow-all:
    targetService: billing
    action: ALLOW
    rules: [{}]
  no-deletes:
    targetService: billing
    action: DENY
    rules:
      - from: [{spiffeId: "spiffe://td/ns/default/sa/store"}]
        to: [{methods: [DELETE]}]
"#,
    );
    assert!(http(&e, STORE, "GET", "/x").allowed);
    let d = tcp(&e, STORE, 5432);
    assert!(!d.allowed);
    assert_eq!(d.reason.kind, DecisionKind::ExplicitDeny);
    assert_eq!(d.reason.policy.as_deref(), Some("no-deletes"));
    assert!(tcp(&e, REPORTING, 5432).allowed);
}

#[test]
fn a_rule_without_to_matches_tcp_and_no_policy_allows() {
    let e = engine(
        r#"
authorization:
  store-anything:
    targetService: billing
    action: ALLOW
    rules: [{from: [{spiffeId: "spiffe://td/ns/default/sa/store"}]}]
"#,
    );
    assert!(tcp(&e, STORE, 1).allowed);
    assert!(!tcp(&e, REPORTING, 1).allowed);
    let none = Engine::default();
    assert_eq!(tcp(&none, STORE, 1).reason.kind, DecisionKind::NoPolicy);
}

#[test]
fn ports_and_http_fields_in_one_entry_are_refused_as_is_port_zero() {
    let set: PolicySet = serde_saphyr::from_str(
        r#"
authorization:
  mixed:
    targetService: billing
    action: ALLOW
    rules:
      - to: [{methods: [GET], ports: [80]}, {ports: [0]}]
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let error = Engine::compile(&set).err().map(|e| e.to_string());
    let error = error.unwrap_or_default();
    assert!(
        error.contains("rules[0].to[0]: an entry is either HTTP"),
        "{error}"
    );
    assert!(
        error.contains("rules[0].to[1].ports[0]: port 0 is not a destination port"),
        "{error}"
    );
}
