//! Routes read from YAML, compiled, then matched: the precedence table of the Gateway API
//! (and meshwork's choices where it leaves one open), rule names, defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::contract::traffic::{Matcher, PathMatch, ServiceTraffic};
use crate::{ResourceSet, load_str};

const MESH: &str = "apiVersion: meshwork.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {trustDomain: meshwork.local}
---
apiVersion: meshwork.dev/v1alpha1
kind: Service
metadata: {name: billing}
spec: {selector: {app: billing}}
---
apiVersion: meshwork.dev/v1alpha1
kind: Service
metadata: {name: canary}
spec: {selector: {app: canary}}
";

/// `files` (name, text) loaded after the mesh and two services, validated.
fn load(files: &[(&str, &str)]) -> ResourceSet {
    let mut set = ResourceSet::default();
    load_str(Path::new("0-mesh.yaml"), MESH, &mut set).unwrap();
    for (name, text) in files {
        load_str(Path::new(name), text, &mut set).unwrap_or_else(|e| panic!("{e}"));
    }
    set.validate().unwrap_or_else(|e| panic!("{e}"));
    set
}

fn billing(set: &ResourceSet) -> ServiceTraffic {
    set.traffic().remove("billing").unwrap()
}

/// An HTTPRoute on billing named `name` with `rules` (YAML, indented under `rules:`).
fn http(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\nspec:\n  parentRefs: [{{group: '', kind: Service, name: billing}}]\n  rules:\n{rules}"
    )
}

/// The rule `select` picks, without the route's kind and namespace: `a rule 0`, or `-`.
fn pick(m: &Matcher, method: &str, path: &str, headers: &[(&str, &'static str)]) -> String {
    let lookup = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.as_bytes())
    };
    m.select(method, path, lookup).map_or_else(
        || "-".to_owned(),
        |(_, r)| r.name.trim_start_matches("HTTPRoute/default/").to_owned(),
    )
}

#[test]
fn gateway_api_precedence() {
    let a = http(
        "a",
        "    - matches: [{path: {type: PathPrefix, value: /}}]
    - matches: [{path: {type: PathPrefix, value: /charges}}]
    - matches: [{path: {type: Exact, value: /charges/special}}]
    - matches: [{path: {type: PathPrefix, value: /charges}, method: POST}]
    - matches: [{path: {type: PathPrefix, value: /charges}, method: POST, headers: [{name: X-Tier, value: gold}]}]
    - matches: [{path: {type: RegularExpression, value: '/charges/[0-9]+/refunds'}}]
    - matches: [{path: {type: PathPrefix, value: /charges/archive}}]
",
    );
    let set = load(&[("routes.yaml", &a)]);
    let m = Matcher::compile(&billing(&set)).unwrap();
    let gold = [("x-tier", "gold")];
    for (method, path, headers, want) in [
        // Exact beats every prefix and expression.
        ("GET", "/charges/special", &[][..], "a rule 2"),
        ("POST", "/charges/special", &gold[..], "a rule 2"),
        // The longest prefix wins, whatever the rule order.
        ("GET", "/charges/archive/2024", &[], "a rule 6"),
        ("GET", "/charges/1", &[], "a rule 1"),
        ("GET", "/healthz", &[], "a rule 0"),
        // Equal prefixes: a method condition, then more headers.
        ("POST", "/charges/1", &[], "a rule 3"),
        ("POST", "/charges/1", &gold, "a rule 4"),
        ("GET", "/charges/1", &gold, "a rule 1"),
        // An expression beats prefixes (meshwork's choice; upstream leaves it open).
        ("GET", "/charges/7/refunds", &[], "a rule 5"),
        ("GET", "/charges/x/refunds", &[], "a rule 1"),
    ] {
        assert_eq!(
            pick(&m, method, path, headers),
            want,
            "{method} {path} {headers:?}"
        );
    }
}

#[test]
fn ties_go_to_the_route_read_first_then_rule_order() {
    let first = http("zz-first", "    - matches: [{path: {value: /charges}}]\n");
    let second = http(
        "aa-second",
        "    - matches: [{path: {value: /charges}}]\n    - matches: [{path: {value: /charges}}]\n",
    );
    // Files are read in name order: a.yaml before b.yaml, whatever the route names.
    let set = load(&[("a.yaml", &first), ("b.yaml", &second)]);
    let m = Matcher::compile(&billing(&set)).unwrap();
    assert_eq!(pick(&m, "GET", "/charges", &[]), "zz-first rule 0");
    let names: Vec<String> = billing(&set).rules.iter().map(|r| r.name.clone()).collect();
    assert_eq!(
        names,
        [
            "HTTPRoute/default/zz-first rule 0",
            "HTTPRoute/default/aa-second rule 0",
            "HTTPRoute/default/aa-second rule 1"
        ]
    );
    // Within a route, rule order decides.
    let set = load(&[("b.yaml", &second)]);
    let m = Matcher::compile(&billing(&set)).unwrap();
    assert_eq!(pick(&m, "GET", "/charges", &[]), "aa-second rule 0");
}

#[test]
fn rules_compile_with_names_backends_timeouts_and_retries() {
    let route = http(
        "billing",
        "    - name: reads
      matches: [{path: {type: Exact, value: /charges/}, method: GET}]
      backendRefs: [{name: billing, weight: 90}, {name: canary, port: 8080, weight: 10}]
      timeouts: {request: 2s, backendRequest: 500ms}
      retry: {codes: [502, 503], attempts: 3, backoff: 50ms}
    - timeouts: {request: 0s}
      retry: {}
",
    );
    let set = load(&[("routes.yaml", &route)]);
    let t = billing(&set);
    let json = serde_json::to_value(&t).unwrap();
    assert_eq!(
        json["rules"][0],
        serde_json::json!({
            "name": "HTTPRoute/default/billing rule reads", "kind": "HTTPRoute",
            "backends": [{"service": "billing", "weight": 90}, {"service": "canary", "weight": 10}],
            "requestTimeoutMs": 2000, "backendRequestTimeoutMs": 500,
            "retry": {"attempts": 3, "codes": [502, 503], "backoffMs": 50, "maxBackoffMs": 500},
        })
    );
    // `0s` is no limit; an empty retry takes the defaults; no matches is one catch-all.
    assert_eq!(
        json["rules"][1],
        serde_json::json!({
            "name": "HTTPRoute/default/billing rule 1", "kind": "HTTPRoute",
            "retry": {"attempts": 1, "backoffMs": 25, "maxBackoffMs": 250},
        })
    );
    // A trailing slash is dropped: requests are matched normalised.
    assert_eq!(t.matches[0].path, Some(PathMatch::Exact("/charges".into())));
    assert_eq!(t.matches[1].path, None);
    assert_eq!(t.matches.len(), 2);
    // Routes attach only to their parents: canary has none.
    assert!(set.traffic()["canary"].is_default());
}

#[test]
fn grpc_methods_are_path_matches() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc}
spec:
  parentRefs: [{group: meshwork.dev, kind: Service, name: billing}]
  rules:
    - matches: [{method: {service: billing.v1.Charges, method: Create}}]
      retry: {codes: [UNAVAILABLE, 4], attempts: 2}
      timeouts: {request: 1s}
    - matches: [{method: {service: billing.v1.Charges}}]
    - matches: [{method: {method: Health}}]
    - matches: [{method: {type: RegularExpression, service: 'billing\\.v[0-9]+\\.Refunds', method: 'Get.*'}}]
";
    let set = load(&[("grpc.yaml", route)]);
    let t = billing(&set);
    assert_eq!(t.rules[0].retry.as_ref().unwrap().grpc_codes, [14, 4]);
    assert_eq!(t.rules[0].request_timeout_ms, Some(1000));
    let m = Matcher::compile(&t).unwrap();
    let rule = |path: &str| {
        m.select("POST", path, |_| None)
            .map_or_else(|| "-".to_owned(), |(_, r)| r.name.clone())
    };
    assert_eq!(
        rule("/billing.v1.Charges/Create"),
        "GRPCRoute/default/rpc rule 0"
    );
    assert_eq!(
        rule("/billing.v1.Charges/List"),
        "GRPCRoute/default/rpc rule 1"
    );
    assert_eq!(
        rule("/grpc.health.v1.Health/Health"),
        "GRPCRoute/default/rpc rule 2"
    );
    assert_eq!(
        rule("/billing.v2.Refunds/GetOne"),
        "GRPCRoute/default/rpc rule 3"
    );
    assert_eq!(rule("/billing.v2.Refunds/List"), "-");
    assert_eq!(rule("/billing.v1.ChargesX/Create"), "-");
}

#[test]
fn service_knobs_are_published_with_defaults() {
    let mut set = ResourceSet::default();
    let text = MESH.replace(
        "spec: {selector: {app: billing}}",
        "spec:\n  selector: {app: billing}\n  traffic:\n    outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 1s, maxEjectionTime: 10s}\n",
    );
    load_str(Path::new("m.yaml"), &text, &mut set).unwrap();
    set.validate().unwrap();
    let t = billing(&set);
    assert!(!t.has_routes());
    assert_eq!(t.policy.outlier_detection.consecutive_failures, 3);
    assert_eq!(t.policy.outlier_detection.base_ejection_ms, 1_000);
    assert_eq!(t.policy.retry_budget.percent, 20);
    assert!(!t.is_default());
}
