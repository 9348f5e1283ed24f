//! Invalid routes and traffic knobs, one row each: every error names the file, the line, the
//! resource and the field, and says what is wrong.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::{ResourceSet, load_str};

const SETUP: &str = "apiVersion: meshwork.dev/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {trustDomain: meshwork.local}
---
apiVersion: meshwork.dev/v1alpha1
kind: Service
metadata: {name: billing}
spec: {selector: {app: billing}}
";

const GW: &str = "apiVersion: gateway.networking.k8s.io/v1\n";
const PARENT: &str = "  parentRefs: [{group: '', kind: Service, name: billing}]\n";

/// An HTTPRoute `r` on billing with one rule: `rule` (indented for `rules:`).
fn http(rule: &str) -> String {
    format!("{GW}kind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n{PARENT}  rules:\n{rule}")
}

/// A GRPCRoute `g` on billing with one rule.
fn grpc(rule: &str) -> String {
    format!("{GW}kind: GRPCRoute\nmetadata: {{name: g}}\nspec:\n{PARENT}  rules:\n{rule}")
}

/// An HTTPRoute `r` whose spec is `spec` (indented for `spec:`).
fn http_spec(spec: &str) -> String {
    format!("{GW}kind: HTTPRoute\nmetadata: {{name: r}}\nspec:\n{spec}")
}

/// The billing Service with `traffic` (indented for `traffic:`), in r.yaml.
fn service(traffic: &str) -> String {
    format!(
        "apiVersion: meshwork.dev/v1alpha1\nkind: Service\nmetadata: {{name: ledger}}\nspec:\n  selector: {{app: ledger}}\n  traffic:\n{traffic}"
    )
}

/// Loads SETUP as 0.yaml and `doc` as r.yaml, then validates.
fn load(doc: &str) -> Result<ResourceSet, String> {
    let mut set = ResourceSet::default();
    load_str(Path::new("0.yaml"), SETUP, &mut set).unwrap();
    load_str(Path::new("r.yaml"), doc, &mut set)
        .and_then(|()| set.validate())
        .map(|()| set)
        .map_err(|e| e.to_string())
}

/// (row, document, line, resource and field as printed, what the message says)
fn rows() -> Vec<(&'static str, String, usize, &'static str, &'static str)> {
    vec![
        ("route under meshwork's version", http("    - {}\n").replace(GW, "apiVersion: meshwork.dev/v1alpha1\n"), 1, "HTTPRoute/r field `apiVersion`", "unsupported apiVersion \"meshwork.dev/v1alpha1\" for kind HTTPRoute; expected \"gateway.networking.k8s.io/v1\""),
        ("service under the gateway version", format!("{GW}kind: Service\nmetadata: {{name: s}}\nspec: {{selector: {{app: s}}}}\n"), 1, "Service/s field `apiVersion`", "expected \"meshwork.dev/v1alpha1\""),
        ("a Gateway", format!("{GW}kind: Gateway\nmetadata: {{name: gw}}\nspec: {{}}\n"), 2, "Gateway/gw field `kind`", "unknown kind \"Gateway\"; known kinds: Mesh, "),
        ("route without apiVersion", http("    - {}\n").replace(GW, ""), 1, "HTTPRoute/r field `apiVersion`", "is required: gateway.networking.k8s.io/v1"),
        ("filters", http("    - filters: [{type: RequestHeaderModifier}]\n"), 7, "HTTPRoute/r field `spec.rules[0].filters`", "meshwork does not implement"),
        ("queryParams", http("    - matches:\n        - queryParams: [{name: a, value: b}]\n"), 8, "field `spec.rules[0].matches[0].queryParams`", "does not implement"),
        ("sessionPersistence", http("    - sessionPersistence: {type: Cookie}\n"), 7, "field `spec.rules[0].sessionPersistence`", "does not implement"),
        ("backend filters", http("    - backendRefs: [{name: billing, filters: [{type: X}]}]\n"), 7, "field `spec.rules[0].backendRefs[0].filters`", "does not implement"),
        ("hostnames", http_spec(&format!("{PARENT}  hostnames: [billing.example]\n")), 6, "HTTPRoute/r field `spec.hostnames`", "must be empty"),
        ("no parents", http_spec("  rules: [{}]\n"), 4, "field `spec.parentRefs`", "must name at least one Service"),
        ("parent without group", http_spec("  parentRefs:\n    - {kind: Service, name: billing}\n"), 6, "field `spec.parentRefs[0].group`", "default is gateway.networking.k8s.io"),
        ("parent is a Gateway", http_spec("  parentRefs:\n    - {group: '', name: billing}\n"), 6, "field `spec.parentRefs[0].kind`", "write kind: Service"),
        ("parent section", http_spec("  parentRefs:\n    - {group: '', kind: Service, name: billing, sectionName: http}\n"), 6, "field `spec.parentRefs[0].sectionName`", "does not implement"),
        ("parent elsewhere", http_spec("  parentRefs:\n    - group: ''\n      kind: Service\n      name: billing\n      namespace: payments\n"), 9, "field `spec.parentRefs[0].namespace`", "ReferenceGrant"),
        ("parent unknown", http_spec("  parentRefs:\n    - {group: '', kind: Service, name: biling}\n"), 6, "field `spec.parentRefs[0].name`", "\"biling\" names no Service in namespace \"default\""),
        ("backend unknown", http("    - backendRefs:\n        - name: ledger\n"), 8, "field `spec.rules[0].backendRefs[0].name`", "names no Service"),
        ("backend kind", http("    - backendRefs:\n        - {kind: Pod, name: billing}\n"), 8, "field `spec.rules[0].backendRefs[0].kind`", "a backend is a Service"),
        ("weight too large", http("    - backendRefs:\n        - {name: billing, weight: 1000001}\n"), 8, "field `spec.rules[0].backendRefs[0].weight`", "must be between 0 and 1000000"),
        ("all weights 0", http("    - backendRefs:\n        - {name: billing, weight: 0}\n"), 7, "field `spec.rules[0].backendRefs`", "weight 0"),
        ("backendRequest over request", http("    - timeouts:\n        request: 1s\n        backendRequest: 2s\n"), 9, "field `spec.rules[0].timeouts.backendRequest`", "2s is longer than timeouts.request 1s"),
        ("timeout in days", http("    - timeouts: {request: 1d}\n"), 7, "field `spec.rules[0].timeouts.request`", "GEP-2257"),
        ("timeout over a day", http("    - timeouts: {request: 25h}\n"), 7, "field `spec.rules[0].timeouts.request`", "must be between 0s and 24h"),
        ("retry code 600", http("    - retry:\n        codes: [503, 600]\n"), 8, "field `spec.rules[0].retry.codes[1]`", "600 is out of range: must be between 400 and 599"),
        ("retry code 399", http("    - retry: {codes: [399]}\n"), 7, "field `spec.rules[0].retry.codes[0]`", "between 400 and 599"),
        ("retry attempts 11", http("    - retry: {attempts: 11}\n"), 7, "field `spec.rules[0].retry.attempts`", "between 0 and 10"),
        ("retry backoff 11s", http("    - retry: {backoff: 11s}\n"), 7, "field `spec.rules[0].retry.backoff`", "between 0s and 10s"),
        ("relative path", http("    - matches:\n        - path: {type: Exact, value: charges}\n"), 8, "field `spec.rules[0].matches[0].path.value`", "\"charges\" must start with '/'"),
        ("path not normal", http("    - matches:\n        - path:\n            value: /charges//1\n"), 9, "field `spec.rules[0].matches[0].path.value`", "write \"/charges/1\""),
        ("path encoded slash", http("    - matches:\n        - path:\n            value: /a%2Fb\n"), 9, "field `spec.rules[0].matches[0].path.value`", "not a path meshwork accepts"),
        ("path regex", http("    - matches:\n        - path:\n            type: RegularExpression\n            value: /charges/(\n"), 10, "field `spec.rules[0].matches[0].path.value`", "is not a regular expression meshwork accepts"),
        ("path regex too big", http("    - matches:\n        - path:\n            type: RegularExpression\n            value: 'a{1000}{1000}'\n"), 10, "field `spec.rules[0].matches[0].path.value`", "256 KiB compiled"),
        ("method lower case", http("    - matches:\n        - method: get\n"), 8, "field `spec.rules[0].matches[0].method`", "unknown variant"),
        ("header name", http("    - matches:\n        - headers:\n            - {name: 'x tier', value: gold}\n"), 9, "field `spec.rules[0].matches[0].headers[0].name`", "\"x tier\" is not a valid HTTP header name"),
        ("header twice", http("    - matches:\n        - headers:\n            - {name: X-Tier, value: gold}\n            - {name: x-tier, value: silver}\n"), 10, "field `spec.rules[0].matches[0].headers[1].name`", "\"x-tier\" is matched twice"),
        ("header regex", http("    - matches:\n        - headers:\n            - {type: RegularExpression, name: x, value: '[a-'}\n"), 9, "field `spec.rules[0].matches[0].headers[0].value`", "not a regular expression"),
        ("header regex too long", http(&format!("    - matches:\n        - headers:\n            - {{type: RegularExpression, name: x, value: '{}'}}\n", "a".repeat(1025))), 9, "field `spec.rules[0].matches[0].headers[0].value`", "is a 1025 byte expression; at most 1024"),
        ("rule names", http("    - name: a\n    - name: a\n"), 8, "field `spec.rules[1].name`", "\"a\" names another rule"),
        ("unknown rule field", http("    - retries: {attempts: 1}\n"), 7, "field `spec.rules[0].retries`", "unknown field `retries`"),
        ("grpc code OK", grpc("    - retry: {codes: [OK]}\n"), 7, "GRPCRoute/g field `spec.rules[0].retry.codes[0]`", "\"OK\" is not a gRPC status code"),
        ("grpc code 17", grpc("    - retry: {codes: [17]}\n"), 7, "GRPCRoute/g field `spec.rules[0].retry.codes[0]`", "17 is not a gRPC status code"),
        ("grpc empty method", grpc("    - matches:\n        - method: {type: Exact}\n"), 8, "GRPCRoute/g field `spec.rules[0].matches[0].method`", "must give service, method or both"),
        ("grpc service name", grpc("    - matches:\n        - method: {service: billing/v1}\n"), 8, "field `spec.rules[0].matches[0].method.service`", "not a gRPC service name"),
        ("grpc method regex", grpc("    - matches:\n        - method:\n            type: RegularExpression\n            method: 'Get('\n"), 10, "field `spec.rules[0].matches[0].method.method`", "not a regular expression"),
        ("grpc filters", grpc("    - filters: [{type: RequestMirror}]\n"), 7, "GRPCRoute/g field `spec.rules[0].filters`", "does not implement"),
        ("ejection max under base", service("    outlierDetection: {baseEjectionTime: 10s, maxEjectionTime: 5s}\n"), 7, "Service/ledger field `spec.traffic.outlierDetection.maxEjectionTime`", "shorter than baseEjectionTime"),
        ("budget percent", service("    retryBudget:\n      percent: 101\n"), 8, "field `spec.traffic.retryBudget.percent`", "between 0 and 100"),
        ("budget interval", service("    retryBudget:\n      minRetryRate: {interval: 500ms}\n"), 8, "field `spec.traffic.retryBudget.minRetryRate.interval`", "between 1s and 1h"),
        ("connect timeout", service("    connectTimeout: 2m\n"), 7, "field `spec.traffic.connectTimeout`", "between 10ms and 1m"),
        ("breaker 0", service("    circuitBreaker: {maxRequests: 0}\n"), 7, "field `spec.traffic.circuitBreaker.maxRequests`", "between 1 and 1000000"),
        ("replicas with a port", "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {name: w}\nspec:\n  command: [x]\n  replicas: 2\n  port: 8080\n".to_owned(), 7, "Workload/w field `spec.port`", "omit spec.port"),
    ]
}

#[test]
fn every_invalid_route_and_knob_is_located() {
    let mut failures = Vec::new();
    for (row, doc, line, field, says) in rows() {
        let err = match load(&doc) {
            Ok(_) => {
                failures.push(format!("{row}: loaded"));
                continue;
            }
            Err(e) => e,
        };
        let at = format!("r.yaml:{line}:");
        if !(err.starts_with(&at) && err.contains(field) && err.contains(says)) {
            failures.push(format!(
                "{row}: want {at} … {field} … {says:?}\n    got {err}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_problem_of_a_route_is_reported() {
    let doc = http("    - matches:\n        - path: {value: charges}\n          headers: [{name: 'a b', value: x}]\n      timeouts: {request: 1s, backendRequest: 2s}\n").replace("billing}]\n  rules", "billing}]\n  hostnames: [x]\n  rules");
    let err = load(&doc).unwrap_err();
    let lines: Vec<&str> = err.lines().collect();
    // The header name fails while parsing; fix it to see the rest together.
    assert_eq!(lines.len(), 1, "{err}");
    let doc = doc.replace("'a b'", "ab");
    let err = load(&doc).unwrap_err();
    for field in [
        "spec.hostnames",
        "matches[0].path.value",
        "timeouts.backendRequest",
    ] {
        assert!(err.contains(field), "{field}: {err}");
    }
    assert_eq!(err.lines().count(), 3, "{err}");
}

#[test]
fn valid_routes_load() {
    let ok = [
        http("    - {}\n"),
        http(
            "    - matches: [{path: {type: PathPrefix, value: /charges/}, method: GET}]\n      backendRefs: [{group: '', kind: Service, name: billing, port: 8080, weight: 0}, {name: billing}]\n      timeouts: {request: 0s, backendRequest: 1h}\n      retry: {codes: [500, 503], attempts: 0, backoff: 0s}\n      filters: []\n",
        ),
        http_spec(&format!("{PARENT}  hostnames: []\n")),
        http_spec(
            "  parentRefs: [{group: core, kind: Service, name: billing, namespace: default, port: 80}, {group: meshwork.dev, kind: Service, name: billing}]\n",
        ),
        grpc(
            "    - matches: [{method: {service: .billing.v1.Charges}}, {headers: [{name: x, type: RegularExpression, value: '[0-9]+'}]}]\n      retry: {codes: [UNAVAILABLE, 4, RESOURCE_EXHAUSTED]}\n",
        ),
    ];
    for doc in ok {
        load(&doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
    }
}
