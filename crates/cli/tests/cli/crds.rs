//! Issue 14: the CRDs. `deploy/crds/` is exactly what `meshwork crds` generates (this is how CI
//! fails on drift), and one table of invalid documents is refused both by `meshwork validate`
//! and by the JSON Schema extracted from the kind's CRD, checked with `check-jsonschema` (a
//! validator nobody here wrote). Rows whose rule no schema can state say so, and assert the
//! schema still accepts them, so the table stays an honest list of the gaps.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{example, meshwork};

fn deploy_crds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn committed_crds_are_what_the_code_generates() {
    let out = tempfile::tempdir().unwrap();
    let status = meshwork()
        .args(["crds", "--dir"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let fix = "run `meshwork crds --dir deploy/crds` (cargo run -p meshwork-cli -- crds --dir deploy/crds) and commit the result";
    let generated = file_names(out.path());
    assert_eq!(generated.len(), 10, "one CRD per kind: {generated:?}");
    assert_eq!(
        file_names(&deploy_crds()),
        generated,
        "deploy/crds/ does not hold one file per generated CRD; {fix}"
    );
    for name in generated {
        let want = std::fs::read_to_string(out.path().join(&name)).unwrap();
        let have = std::fs::read_to_string(deploy_crds().join(&name)).unwrap();
        assert!(
            have == want,
            "deploy/crds/{name} differs from what the code generates; {fix}"
        );
    }
}

#[test]
fn crds_prints_every_kind_as_one_multi_document_yaml() {
    let out = meshwork().arg("crds").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("kind: CustomResourceDefinition\n").count(), 10);
    assert_eq!(text.matches("\n---\n").count(), 9);
    // ServiceClaim is the kind with a status, hence a status subresource.
    let claim = text
        .split("\n---\n")
        .find(|d| d.contains("name: serviceclaims.meshwork.dev"))
        .unwrap();
    assert!(claim.contains("subresources:\n      status: {}"), "{claim}");
    assert!(claim.contains("shortNames:\n    - mwclaim"), "{claim}");
}

/// What the extracted schema does with a row's document.
#[derive(Debug)]
enum Schema {
    /// Refuses it, as `meshwork validate` does.
    Refuses,
    /// Accepts it: the rule is one no JSON Schema can state (why, in the text).
    CannotExpress(&'static str),
}
use Schema::{CannotExpress, Refuses};

/// (row, document added to a copy of examples/store-billing, what `validate` must say, schema)
/// A `kind: Mesh` document replaces the example's mesh.yaml.
const ROWS: &[(&str, &str, &str, Schema)] = &[
    (
        "svid ttl malformed",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, svidTtl: 1x}",
        "spec.svidTtl",
        Refuses,
    ),
    (
        "svid ttl out of range",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, svidTtl: 31d}",
        "out of range",
        CannotExpress(
            "a duration's range: a pattern cannot add up units, CEL's duration() has no `d`",
        ),
    ),
    (
        "trust domain upper case",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: Meshwork.Local}",
        "spec.trustDomain",
        Refuses,
    ),
    (
        "mesh dns both server and workload",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, dns: {server: '127.0.0.1:53', workload: stripe}}",
        "spec.dns",
        Refuses,
    ),
    (
        "mesh tracing ratio 1.5",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {sampling: {ratio: 1.5}}}",
        "spec.tracing.sampling.ratio",
        Refuses,
    ),
    (
        "mesh tracing ratio -0.1",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {sampling: {ratio: -0.1}}}",
        "spec.tracing.sampling.ratio",
        Refuses,
    ),
    (
        "mesh tracing protocol http/json",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {otlp: {endpoint: 'http://127.0.0.1:4318', protocol: http/json}}}",
        "spec.tracing.otlp.protocol",
        Refuses,
    ),
    (
        "mesh tracing endpoint without scheme",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {otlp: {endpoint: '127.0.0.1:4317'}}}",
        "spec.tracing.otlp.endpoint",
        Refuses,
    ),
    (
        "mesh tracing endpoint grpc scheme",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {otlp: {endpoint: 'grpc://127.0.0.1:4317'}}}",
        "spec.tracing.otlp.endpoint",
        Refuses,
    ),
    (
        "mesh tracing endpoint port 70000",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {otlp: {endpoint: 'http://127.0.0.1:70000'}}}",
        "spec.tracing.otlp.endpoint",
        CannotExpress("a URL's port range: a pattern could, unreadably; the loader does"),
    ),
    (
        "mesh tracing unknown field",
        "kind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local, tracing: {sampler: {ratio: 0.5}}}",
        "spec.tracing.sampler",
        Refuses,
    ),
    (
        "workload port 0",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x], port: 0}",
        "spec.port",
        Refuses,
    ),
    (
        "workload port 70000",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x], port: 70000}",
        "spec.port",
        Refuses,
    ),
    (
        "workload unknown field",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x], ports: [1]}",
        "ports",
        Refuses,
    ),
    (
        "workload without command",
        "kind: Workload\nmetadata: {name: w}\nspec: {port: 8080}",
        "command",
        Refuses,
    ),
    (
        "workload protocol http3",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x], protocol: http3}",
        "http3",
        Refuses,
    ),
    (
        "name upper case",
        "kind: Workload\nmetadata: {name: Billing2}\nspec: {command: [x]}",
        "metadata.name",
        Refuses,
    ),
    (
        "label value bad",
        "kind: Workload\nmetadata: {name: w, labels: {app: -x}}\nspec: {command: [x]}",
        "metadata.labels",
        Refuses,
    ),
    (
        "label key bad",
        "kind: Workload\nmetadata: {name: w, labels: {'a b': x}}\nspec: {command: [x]}",
        "metadata.labels",
        CannotExpress("map keys: a structural schema has no propertyNames"),
    ),
    (
        "status in a file",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x]}\nstatus: {}",
        "status",
        Refuses,
    ),
    (
        "workload replicas 17",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x], replicas: 17}",
        "spec.replicas",
        Refuses,
    ),
    (
        "workload replicas with a port",
        "kind: Workload\nmetadata: {name: w}\nspec: {command: [x], replicas: 2, port: 8080}",
        "spec.port",
        CannotExpress("a rule across two fields (replicas above 1 and a port)"),
    ),
    (
        "service traffic budget percent 101",
        "kind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}, traffic: {retryBudget: {percent: 101}}}",
        "spec.traffic.retryBudget.percent",
        Refuses,
    ),
    (
        "service traffic unknown knob",
        "kind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}, traffic: {retries: 3}}",
        "retries",
        Refuses,
    ),
    (
        "service traffic connect timeout malformed",
        "kind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}, traffic: {connectTimeout: 1.5s}}",
        "spec.traffic.connectTimeout",
        Refuses,
    ),
    (
        "service traffic ejection max under base",
        "kind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}, traffic: {outlierDetection: {baseEjectionTime: 10s, maxEjectionTime: 5s}}}",
        "spec.traffic.outlierDetection.maxEjectionTime",
        CannotExpress("a rule across two durations"),
    ),
    (
        "service route relative",
        "kind: Service\nmetadata: {name: s}\nspec: {selector: {app: billing}, routes: [charges]}",
        "spec.routes",
        Refuses,
    ),
    (
        "authz action PERMIT",
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetService: billing, action: PERMIT}",
        "PERMIT",
        Refuses,
    ),
    (
        "authz relative path",
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetService: billing, action: ALLOW, rules: [{to: [{paths: [{prefix: charges}]}]}]}",
        "spec.rules[0].to[0].paths[0].prefix",
        Refuses,
    ),
    (
        "authz two caller fields",
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetService: billing, action: ALLOW, rules: [{from: [{spiffeId: 'spiffe://meshwork.local/a', spiffeIdGlob: 'spiffe://meshwork.local/*'}]}]}",
        "spec.rules[0].from[0]",
        Refuses,
    ),
    (
        "authz lower-case method",
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetService: billing, action: ALLOW, rules: [{to: [{methods: [post]}]}]}",
        "spec.rules[0].to[0].methods",
        Refuses,
    ),
    (
        "authz unknown service",
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {targetService: biling, action: DENY}",
        "names no Service",
        CannotExpress("cross-resource reference"),
    ),
    (
        "egress port 0",
        "kind: EgressPolicy\nmetadata: {name: e}\nspec: {to: [{host: api.example.com, ports: [0]}]}",
        "spec.to[0].ports[0]",
        Refuses,
    ),
    (
        "egress no destination",
        "kind: EgressPolicy\nmetadata: {name: e}\nspec: {to: []}",
        "spec.to",
        Refuses,
    ),
    (
        "egress host and cidr",
        "kind: EgressPolicy\nmetadata: {name: e}\nspec: {allowCidr: true, to: [{host: api.example.com, cidr: 10.0.0.0/8, ports: [443]}]}",
        "spec.to[0]",
        Refuses,
    ),
    (
        "egress cidr prefix 33",
        "kind: EgressPolicy\nmetadata: {name: e}\nspec: {allowCidr: true, to: [{cidr: 10.0.0.0/33, ports: [443]}]}",
        "spec.to[0].cidr",
        CannotExpress("a CIDR's prefix length and address syntax"),
    ),
    (
        "class without sizes",
        "kind: ServiceClass\nmetadata: {name: c}\nspec: {kind: redis, sizes: {}}",
        "spec.sizes",
        Refuses,
    ),
    (
        "class size xl",
        "kind: ServiceClass\nmetadata: {name: c}\nspec: {kind: redis, sizes: {xl: {maxConnections: 1, memoryMb: 1}}}",
        "xl",
        Refuses,
    ),
    (
        "class 0 connections",
        "kind: ServiceClass\nmetadata: {name: c}\nspec: {kind: redis, sizes: {small: {maxConnections: 0, memoryMb: 1}}}",
        "maxConnections",
        Refuses,
    ),
    (
        "class redis with storage",
        "kind: ServiceClass\nmetadata: {name: c}\nspec: {kind: redis, sizes: {small: {maxConnections: 1, storageMb: 1}}}",
        "spec.sizes.small.memoryMb",
        CannotExpress("which quota a size needs depends on spec.kind"),
    ),
    (
        "class version not semver",
        "kind: ServiceClass\nmetadata: {name: c}\nspec: {kind: redis, sizes: {small: {maxConnections: 1, memoryMb: 1}}, maintenanceInfo: {version: one}}",
        "spec.maintenanceInfo.version",
        Refuses,
    ),
    (
        "environment without rules",
        "kind: Environment\nmetadata: {name: e}\nspec: {match: []}",
        "spec.match",
        Refuses,
    ),
    (
        "environment empty rule",
        "kind: Environment\nmetadata: {name: e}\nspec: {match: [{}]}",
        "spec.match[0]",
        Refuses,
    ),
    (
        "service policy rule name",
        "kind: ServicePolicy\nmetadata: {name: sp}\nspec: {rules: [{name: Bad_Name, class: postgresql, environment: dev, provider: postgres-private, sizes: [small], defaultSize: small}]}",
        "spec.rules[0].name",
        Refuses,
    ),
    (
        "service policy quota 0",
        "kind: ServicePolicy\nmetadata: {name: sp}\nspec: {rules: [{name: r, class: postgresql, environment: dev, provider: postgres-private, sizes: [small], defaultSize: small, quota: {instancesPerTeam: 0, teamFrom: context.namespace}}]}",
        "instancesPerTeam",
        Refuses,
    ),
    (
        "service policy bad team source",
        "kind: ServicePolicy\nmetadata: {name: sp}\nspec: {rules: [{name: r, class: postgresql, environment: dev, provider: postgres-private, sizes: [small], defaultSize: small, quota: {instancesPerTeam: 1, teamFrom: context.bogus}}]}",
        "context.bogus",
        Refuses,
    ),
    (
        "service policy ttl 59 s",
        "kind: ServicePolicy\nmetadata: {name: sp}\nspec: {rules: [{name: r, class: postgresql, environment: dev, provider: postgres-private, sizes: [small], defaultSize: small, credentialTtlSeconds: 59}]}",
        "credentialTtlSeconds",
        Refuses,
    ),
    (
        "service policy duplicate rule",
        "kind: ServicePolicy\nmetadata: {name: sp}\nspec: {rules: [{name: r, class: postgresql, environment: dev, provider: postgres-private, sizes: [small], defaultSize: small}, {name: r, class: postgresql, environment: prod, provider: postgres-private, sizes: [small], defaultSize: small}]}",
        "used twice",
        CannotExpress(
            "unique rule names: the API server enforces the list-map key `name`, JSON Schema cannot",
        ),
    ),
    (
        "claim size huge",
        "kind: ServiceClaim\nmetadata: {name: cl}\nspec: {class: postgresql, bindTo: billing, size: huge}",
        "huge",
        Refuses,
    ),
    (
        "claim binds nobody",
        "kind: ServiceClaim\nmetadata: {name: cl}\nspec: {class: postgresql, bindTo: nobody}",
        "spec.bindTo",
        CannotExpress("cross-resource reference"),
    ),
    (
        "entry without selectors",
        "kind: RegistrationEntry\nmetadata: {name: r}\nspec: {spiffeId: 'spiffe://meshwork.local/x', selectors: []}",
        "spec.selectors",
        Refuses,
    ),
    (
        "entry bad selector",
        "kind: RegistrationEntry\nmetadata: {name: r}\nspec: {spiffeId: 'spiffe://meshwork.local/x', selectors: ['unix:uid:x']}",
        "unix:uid:x",
        Refuses,
    ),
    (
        "entry foreign trust domain",
        "kind: RegistrationEntry\nmetadata: {name: r}\nspec: {spiffeId: 'spiffe://other.org/x', selectors: ['unix:uid:1']}",
        "spec.spiffeId",
        CannotExpress("cross-resource: the Mesh's trust domain"),
    ),
];

/// A copy of the example with `doc` added (or, for a Mesh, in place of mesh.yaml).
fn directory_with(doc: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(example("store-billing")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let file = match doc.starts_with("kind: Mesh\n") {
        true => "mesh.yaml",
        false => "row.yaml",
    };
    let text = format!("apiVersion: meshwork.dev/v1alpha1\n{doc}\n");
    std::fs::write(dir.path().join(file), text).unwrap();
    dir
}

/// `check-jsonschema`, or `None` (with a printed `SKIPPED:`) when it is not installed outside CI.
fn check_jsonschema() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("check-jsonschema"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "check-jsonschema is missing under CI (.ci/crds.sh installs it: pip install check-jsonschema)"
        );
        eprintln!("SKIPPED: check-jsonschema not installed (pip install check-jsonschema)");
    }
    found
}

/// A row's document as the JSON value a validator reads.
fn row_value(doc: &str) -> serde_json::Value {
    serde_saphyr::from_str(&format!("apiVersion: meshwork.dev/v1alpha1\n{doc}\n")).unwrap()
}

/// Whether `check-jsonschema` accepts `value` against the schema of its kind.
fn schema_accepts(tool: &Path, schemas: &Path, value: &serde_json::Value) -> bool {
    let kind = value["kind"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("doc.json");
    std::fs::write(&file, value.to_string()).unwrap();
    let out = Command::new(tool)
        .arg("--schemafile")
        .arg(schemas.join(format!("{kind}.json")))
        .arg(&file)
        .output()
        .unwrap();
    out.status.success()
}

#[test]
fn invalid_documents_are_refused_by_validate_and_by_the_crd_schema() {
    let schemas = tempfile::tempdir().unwrap();
    let status = meshwork()
        .args(["crds", "--json-schema"])
        .arg(schemas.path())
        .status()
        .unwrap();
    assert!(status.success());
    let tool = check_jsonschema();
    let mut failures = Vec::new();
    for (row, doc, refusal, schema) in ROWS {
        let dir = directory_with(doc);
        let out = meshwork().arg("validate").arg(dir.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || !stderr.contains(refusal) {
            failures.push(format!(
                "{row}: validate did not refuse with {refusal:?}: {stderr}"
            ));
        }
        let Some(tool) = &tool else { continue };
        match (schema, schema_accepts(tool, schemas.path(), &row_value(doc))) {
            (Refuses, true) => failures.push(format!("{row}: the CRD schema accepts it")),
            (CannotExpress(why), false) => failures.push(format!(
                "{row}: the schema now refuses it, though the table says it cannot ({why}): make it a Refuses row"
            )),
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_example_validates_against_the_crd_schemas() {
    // The valid side of the table: without it a schema refusing everything would pass.
    let Some(tool) = check_jsonschema() else {
        return;
    };
    let schemas = tempfile::tempdir().unwrap();
    let status = meshwork()
        .args(["crds", "--json-schema"])
        .arg(schemas.path())
        .status()
        .unwrap();
    assert!(status.success());
    let mut checked = 0;
    for entry in std::fs::read_dir(example("store-billing")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for doc in text.split("\n---\n") {
            let value: serde_json::Value = serde_saphyr::from_str(doc).unwrap();
            let version = value["apiVersion"].as_str().unwrap_or_default();
            if version.starts_with("gateway.networking.k8s.io/") {
                // HTTPRoute/GRPCRoute: upstream's CRDs, not generated here (docs/kubernetes.md).
                eprintln!(
                    "SKIPPED: {} is a Gateway API kind; its CRD is upstream's",
                    value["kind"]
                );
                continue;
            }
            if value.get("kind").is_some() {
                assert!(schema_accepts(&tool, schemas.path(), &value), "{doc}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} example documents found");
}
