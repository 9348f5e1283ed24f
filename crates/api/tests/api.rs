//! Loading resources from files: the example loads, and every kind of bad
//! input is reported with file, line, resource and field.

use std::path::{Path, PathBuf};

use api::{LoadError, ResourceSet, load_dir, load_str};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing")
}

#[test]
fn store_billing_example_loads() {
    let set = load_dir(&example_dir()).expect("example is valid");
    let mesh = set.mesh().expect("mesh");
    assert_eq!(mesh.spec.trust_domain.as_str(), "meshwork.local");
    let billing = set.workload_id("billing").expect("billing");
    assert_eq!(
        billing.as_str(),
        "spiffe://meshwork.local/ns/default/sa/billing"
    );
    let svc = &set
        .services
        .iter()
        .find(|s| s.resource.metadata.name.as_str() == "billing")
        .expect("svc")
        .resource;
    let backends: Vec<_> = set
        .backends(&svc.spec)
        .map(|w| w.metadata.name.to_string())
        .collect();
    assert_eq!(backends, ["billing"]);
}

fn load_err(text: &str) -> String {
    let mut set = ResourceSet::default();
    match load_str(Path::new("bad.yaml"), text, &mut set).and_then(|()| set.validate()) {
        Ok(()) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const MESH: &str = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {trustDomain: meshwork.local}\n---\n";

#[test]
fn unknown_field_names_file_line_resource_and_field() {
    let text = format!(
        "{MESH}apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: billing\nspec:\n  command: [x]\n  comand: [y]\n"
    );
    let err = load_err(&text);
    assert!(err.starts_with("bad.yaml:12:"), "{err}");
    assert!(err.contains("Workload/billing"), "{err}");
    assert!(err.contains("comand"), "{err}");
}

#[test]
fn invalid_trust_domain_names_the_field_and_rule() {
    let err = load_err(
        "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec:\n  trustDomain: Meshwork.Local\n",
    );
    assert!(err.contains("bad.yaml:5:"), "{err}");
    assert!(err.contains("spec.trustDomain"), "{err}");
    assert!(err.contains("Mesh/m"), "{err}");
}

#[test]
fn wrong_api_version_and_unknown_kind_are_named() {
    let err =
        load_err("apiVersion: v1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n");
    assert!(
        err.contains("apiVersion") && err.contains("meshwork.dev/v1alpha1"),
        "{err}"
    );
    let err = load_err(
        "apiVersion: meshwork.dev/v1alpha1\nkind: Workloads\nmetadata: {name: a}\nspec: {}\n",
    );
    assert!(
        err.contains("unknown kind \"Workloads\"") && err.contains("Workload,"),
        "{err}"
    );
}

#[test]
fn bad_names_and_semantic_rules_are_reported() {
    let err = load_err(&format!(
        "{MESH}apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {{name: Billing}}\nspec: {{command: [x]}}\n"
    ));
    assert!(
        err.contains("metadata.name") && err.contains("lowercase"),
        "{err}"
    );
    let err = load_err(&format!(
        "{MESH}apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {{name: a}}\nspec: {{command: []}}\n"
    ));
    assert!(
        err.contains("spec.command") && err.contains("bad.yaml:9:8:"),
        "{err}"
    );
    let err = load_err(&format!(
        "{MESH}apiVersion: meshwork.dev/v1alpha1\nkind: Service\nmetadata: {{name: a}}\nspec: {{selector: {{}}}}\n"
    ));
    assert!(err.contains("spec.selector"), "{err}");
    let dup = "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n---\n";
    let err = load_err(&format!("{MESH}{dup}{dup}"));
    assert!(
        err.contains("already used") && err.contains("bad.yaml:13:12:"),
        "{err}"
    );
}

#[test]
fn missing_mesh_and_syntax_errors_do_not_panic() {
    let err = load_err(
        "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n",
    );
    assert!(err.starts_with("no `kind: Mesh`"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.yaml"),
        "apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata: {name: a}\nspec: {command: [x]}\n",
    )
    .unwrap();
    let err = api::load_dir(dir.path()).err().unwrap().to_string();
    assert_eq!(
        err,
        format!(
            "{}: no `kind: Mesh` resource; one is needed to set spec.trustDomain (see examples/store-billing/mesh.yaml)",
            dir.path().display()
        )
    );
    let err = load_err("apiVersion: [unclosed\n");
    assert!(err.starts_with("bad.yaml:"), "{err}");
}

#[test]
fn missing_directory_is_an_io_error_naming_it() {
    let err = load_dir(Path::new("/nonexistent/meshwork")).expect_err("missing dir");
    assert!(matches!(err, LoadError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/meshwork"));
}

#[test]
fn service_routes_are_route_templates_and_bad_ones_name_the_field() {
    let service = "apiVersion: meshwork.dev/v1alpha1\nkind: Service\nmetadata: {name: billing}\nspec:\n  selector: {app: billing}\n  routes:\n    - /charges\n";
    let mut set = ResourceSet::default();
    load_str(
        Path::new("ok.yaml"),
        &format!("{MESH}{service}    - /charges/{{id}}\n"),
        &mut set,
    )
    .expect("valid routes");
    let routes: Vec<_> = set.services[0]
        .resource
        .spec
        .routes
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(routes, ["/charges", "/charges/{id}"]);

    let err = load_err(&format!("{MESH}{service}    - /charges/v{{id}}\n"));
    assert!(err.starts_with("bad.yaml:13:"), "{err}");
    assert!(err.contains("Service/billing"), "{err}");
    assert!(err.contains("spec.routes[1]"), "{err}");
    assert!(err.contains("whole segment"), "{err}");
}
