//! Resource loading never panics, whatever the bytes: every input is loaded or refused with an
//! error that renders. Two shapes of input, picked by the first byte:
//!
//! - high bit clear: the bytes are one resource file, as is;
//! - high bit set: a structured input. The first byte picks a field of a valid mesh (every
//!   kind, every duration and size), and the rest of the input replaces that field's value, so
//!   the fuzzer spends its time in the range, label and cross-reference checks rather than in
//!   rediscovering YAML.
//!
//! A loaded set must also survive what its users do with it: validation, SPIFFE IDs, the
//! policy set, compiled routes and their matcher, and durations that print and parse back to
//! themselves.
#![no_main]

use std::path::Path;

use api::ResourceSet;
use libfuzzer_sys::fuzz_target;

const MESH: &str = "apiVersion: meshwork.dev/v1alpha1
kind: Mesh
metadata: {name: m, labels: {tier: core}, annotations: {note: x}}
spec:
  trustDomain: meshwork.local
  svidTtl: 1h
  dns: {workload: billing}
---
apiVersion: meshwork.dev/v1alpha1
kind: Workload
metadata:
  name: billing
  labels: {app: billing, meshwork.dev/team: pay}
spec:
  command: [meshwork, demo, billing]
  port: 8080
  env: {A: b}
---
apiVersion: meshwork.dev/v1alpha1
kind: Service
metadata: {name: billing}
spec:
  selector: {app: billing}
  routes: [/charges, '/charges/{id}']
  traffic: {connectTimeout: 250ms, outlierDetection: {consecutiveFailures: 3, baseEjectionTime: 1s}}
---
apiVersion: meshwork.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: charges}
spec:
  targetService: billing
  action: ALLOW
  rules: [{from: [{spiffeIdPrefix: 'spiffe://meshwork.local/ns/'}], to: [{methods: [POST], paths: [{exact: /charges}]}]}]
---
apiVersion: meshwork.dev/v1alpha1
kind: EgressPolicy
metadata: {name: stripe}
spec:
  to: [{host: api.stripe.com, ports: [443]}]
---
apiVersion: meshwork.dev/v1alpha1
kind: ServiceClass
metadata: {name: postgresql}
spec:
  kind: postgresql
  sizes: {small: {maxConnections: 20, storageMb: 1024}}
---
apiVersion: meshwork.dev/v1alpha1
kind: ServiceClass
metadata: {name: redis}
spec:
  kind: redis
  sizes: {small: {maxConnections: 20, memoryMb: 64}}
---
apiVersion: meshwork.dev/v1alpha1
kind: Environment
metadata: {name: dev}
spec:
  match: [{platform: meshwork, clusterId: dev}]
---
apiVersion: meshwork.dev/v1alpha1
kind: ServicePolicy
metadata: {name: p}
spec:
  rules:
    - name: dev-postgresql
      class: postgresql
      environment: dev
      provider: postgres-private
      sizes: [small]
      defaultSize: small
      quota: {instancesPerTeam: 3, teamFrom: context.namespace}
      credentialTtlSeconds: 3600
---
apiVersion: meshwork.dev/v1alpha1
kind: ServiceClaim
metadata: {name: db}
spec: {class: postgresql, size: small, bindTo: billing}
---
apiVersion: meshwork.dev/v1alpha1
kind: RegistrationEntry
metadata: {name: e}
spec:
  spiffeId: spiffe://meshwork.local/ns/default/sa/billing
  selectors: ['unix:uid:1000']
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: billing}
spec:
  parentRefs: [{group: '', kind: Service, name: billing}]
  rules:
    - matches: [{path: {type: RegularExpression, value: '/charges/[0-9]+'}, method: GET, headers: [{name: x-tier, value: gold}]}]
      backendRefs: [{name: billing, weight: 90}]
      timeouts: {request: 2s, backendRequest: 500ms}
      retry: {codes: [503], attempts: 2, backoff: 25ms}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc}
spec:
  parentRefs: [{group: meshwork.dev, kind: Service, name: billing}]
  rules: [{matches: [{method: {service: billing.v1.Charges, method: Create}}], retry: {codes: [UNAVAILABLE]}}]
";

/// Text in [`MESH`] the structured inputs replace (the first occurrence of each).
const FIELDS: &[&str] = &[
    "1h",
    "8080",
    "billing, meshwork.dev/team: pay",
    "meshwork.dev/team",
    "note: x",
    "20, storageMb: 1024",
    "1024",
    "64",
    "3, teamFrom",
    "3600",
    "{workload: billing}",
    "bindTo: billing",
    "small, bindTo",
    "[443]",
    "/charges, '/charges/{id}'",
    "'unix:uid:1000'",
    "meshwork.local",
    "m, labels",
    "spec:\n  kind: redis",
    "---\napiVersion: meshwork.dev/v1alpha1\nkind: ServiceClaim",
    "250ms",
    "3, baseEjectionTime: 1s",
    "'/charges/[0-9]+'",
    "x-tier, value: gold",
    "weight: 90",
    "2s, backendRequest: 500ms",
    "[503], attempts: 2, backoff: 25ms",
    "{service: billing.v1.Charges, method: Create}",
    "[UNAVAILABLE]",
    "group: '', kind: Service",
];

fn input(data: &[u8]) -> Vec<u8> {
    match data.split_first() {
        Some((&first, value)) if first & 0x80 != 0 => {
            let field = FIELDS[usize::from(first & 0x7f) % FIELDS.len()];
            // invariant: every FIELDS entry occurs in MESH.
            let at = MESH.find(field).unwrap_or_default();
            let mut bytes = MESH.as_bytes()[..at].to_vec();
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(&MESH.as_bytes()[at + field.len()..]);
            bytes
        }
        _ => data.to_vec(),
    }
}

fn exercise(set: &ResourceSet) {
    if let Err(e) = set.validate() {
        assert!(!e.to_string().is_empty());
        return;
    }
    let td = &set
        .mesh()
        .expect("a validated set has a Mesh")
        .spec
        .trust_domain;
    for w in &set.workloads {
        let _ = w.resource.spiffe_id(td);
    }
    let _ = set.policy_set();
    // What the control plane publishes, and what every proxy then compiles and matches with.
    for traffic in set.traffic().values() {
        let matcher = api::contract::traffic::Matcher::compile(traffic)
            .expect("the routes of a validated set compile");
        let _ = matcher.select("GET", "/charges/1", |_| Some(&b"gold"[..]));
    }
    if let Some(ttl) = set.mesh().and_then(|m| m.spec.svid_ttl) {
        assert_eq!(ttl.to_string().parse().ok(), Some(ttl));
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = input(data);
    let mut set = ResourceSet::default();
    match api::load_bytes(Path::new("fuzz.yaml"), &bytes, &mut set) {
        Ok(()) => exercise(&set),
        Err(e) => assert!(e.to_string().starts_with("fuzz.yaml")),
    }
});
