//! Objects as an API server returns them: the example's resources with server metadata and a
//! status load like the files; ignored fields are ignored, unknown ones refused; every error
//! names the object and the field, never a file.

use std::path::Path;

use serde_json::{Value, json};

use super::*;

fn example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing")
}

/// What the API server adds to an object it stores.
fn as_served(mut object: Value, generation: u64) -> Value {
    let meta = object["metadata"].as_object_mut().expect("metadata");
    meta.entry("namespace").or_insert(json!("default"));
    meta.insert("uid".into(), json!("0b5c7a3e-1f00-4d3a-9a53-2d3f0a6c9e11"));
    meta.insert("resourceVersion".into(), json!("4711"));
    meta.insert("generation".into(), json!(generation));
    meta.insert("creationTimestamp".into(), json!("2026-12-05T21:00:00Z"));
    meta.insert(
        "managedFields".into(),
        json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "meshwork.dev/v1alpha1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]),
    );
    meta.insert(
        "ownerReferences".into(),
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "1"}]),
    );
    meta.insert("finalizers".into(), json!(["meshwork.dev/claim"]));
    object["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}]});
    object
}

/// Every resource of the example, as JSON objects (the `policy test` table skipped).
fn example_objects() -> Vec<Value> {
    let mut objects = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(example())
        .expect("example")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        for doc in text.split("\n---\n") {
            let value: Value = serde_saphyr::from_str(doc).expect("yaml");
            if value.get("kind").is_some() {
                objects.push(as_served(value, 1));
            }
        }
    }
    objects
}

fn load_one(object: Value) -> Result<ResourceSet, String> {
    let mut set = ResourceSet::default();
    load_object(&object, &mut set)
        .map(|()| set)
        .map_err(|e| e.to_string())
}

#[test]
fn the_example_as_served_objects_loads_like_its_files() {
    let files = crate::load_dir(&example()).expect("example loads");
    let objects = example_objects();
    let resources = files.meshes.len()
        + files.workloads.len()
        + files.services.len()
        + files.authorization_policies.len()
        + files.egress_policies.len()
        + files.service_classes.len()
        + files.environments.len()
        + files.service_policies.len()
        + files.service_claims.len()
        + files.http_routes.len();
    assert_eq!(objects.len(), resources, "every resource of the example");
    let loaded = load_objects(&objects).expect("objects load");
    assert!(loaded.quarantined.is_empty(), "{:?}", loaded.quarantined);
    let cluster = loaded.set;
    assert_eq!(cluster.policy_set(), files.policy_set());
    assert_eq!(cluster.traffic(), files.traffic());
    assert_eq!(cluster.workloads.len(), files.workloads.len());
    assert_eq!(cluster.service_claims.len(), 1);
    let route = &cluster.http_routes[0];
    assert_eq!(
        route.origin.cluster_object(),
        Some("HTTPRoute default/billing")
    );
    assert_eq!(route.origin.to_string(), "HTTPRoute default/billing");
}

#[test]
fn server_fields_are_ignored_and_labels_and_annotations_kept() {
    let object = as_served(
        json!({
            "apiVersion": "meshwork.dev/v1alpha1",
            "kind": "Workload",
            "metadata": {
                "name": "billing", "namespace": "shop",
                "labels": {"app": "billing"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "deletionGracePeriodSeconds": 0, "generateName": "billing-", "selfLink": "/x",
            },
            "spec": {"command": ["meshwork", "demo", "billing"]},
        }),
        3,
    );
    let set = load_one(object).expect("loads");
    let meta = &set.workloads[0].resource.metadata;
    assert_eq!(meta.namespace.as_str(), "shop");
    assert_eq!(meta.labels.get("app"), Some("billing"));
    assert_eq!(
        meta.annotations
            .get("kubectl.kubernetes.io/last-applied-configuration"),
        Some("{}")
    );
}

#[test]
fn unknown_fields_are_refused_naming_the_object_and_field() {
    let base = json!({
        "apiVersion": "meshwork.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "billing", "namespace": "shop"},
        "spec": {"command": ["x"]},
    });
    let mut meta = as_served(base.clone(), 1);
    meta["metadata"]["clusterName"] = json!("c");
    let error = load_one(meta).expect_err("unknown metadata field");
    assert!(
        error.starts_with(
            "Workload shop/billing field `metadata.clusterName`: unknown field `clusterName`"
        ),
        "{error}"
    );
    assert!(!error.contains(".yaml") && !error.contains(":0"), "{error}");

    let mut spec = as_served(base, 1);
    spec["spec"]["prot"] = json!("http1");
    let error = load_one(spec).expect_err("unknown spec field");
    assert!(
        error.starts_with("Workload shop/billing field `spec.prot`: unknown field `prot`"),
        "{error}"
    );
}

#[test]
fn invalid_specs_and_references_name_the_object_and_field() {
    let egress = json!({
        "apiVersion": "meshwork.dev/v1alpha1", "kind": "EgressPolicy",
        "metadata": {"name": "x", "namespace": "default"}, "spec": {"to": []},
    });
    let error = load_one(as_served(egress, 1)).expect_err("empty egress");
    assert!(
        error.starts_with("EgressPolicy default/x field `spec.to`: "),
        "{error}"
    );

    let route = json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "billing", "namespace": "default"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "billing"}],
                 "rules": [{"timeouts": {"request": "2d"}}]},
    });
    let error = load_one(as_served(route, 1)).expect_err("bad duration");
    assert!(
        error.starts_with("HTTPRoute default/billing field `spec.rules[0].timeouts.request`: "),
        "{error}"
    );

    // A cross-reference, found after every object is read.
    let mut objects = example_objects();
    let policy = objects
        .iter_mut()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("policy");
    policy["spec"]["targetService"] = json!("biling");
    let error = load_objects(&objects)
        .expect_err("unknown service")
        .to_string();
    assert!(
        error.starts_with(
            "AuthorizationPolicy default/billing-charges field `spec.targetService`: \"biling\" names no Service"
        ),
        "{error}"
    );
}

#[test]
fn every_invalid_object_is_reported() {
    let mut objects = example_objects();
    for object in &mut objects {
        if object["kind"] == "Workload" && object["metadata"]["name"] != "stripe" {
            object["spec"]["replicas"] = json!("two");
        }
    }
    let error = load_objects(&objects).expect_err("invalid").to_string();
    assert_eq!(error.lines().count(), 3, "{error}");
    for name in ["billing", "store", "reporting"] {
        assert!(
            error.contains(&format!("Workload default/{name} field `spec.replicas`")),
            "{error}"
        );
    }
}

#[test]
fn wrong_api_version_and_missing_kind_are_refused() {
    let object = json!({
        "apiVersion": "meshwork.dev/v1", "kind": "Mesh",
        "metadata": {"name": "m", "namespace": "default"}, "spec": {"trustDomain": "a.b"},
    });
    let error = load_one(object).expect_err("wrong version");
    assert!(
        error.starts_with("Mesh default/m field `apiVersion`: unsupported apiVersion"),
        "{error}"
    );
    let error = load_one(json!({"metadata": {"name": "m"}, "spec": {}})).expect_err("no kind");
    assert!(
        error.starts_with("? m field `kind`: is required"),
        "{error}"
    );
    let error = load_one(json!([1])).expect_err("not an object");
    assert_eq!(error, "? ?: is not a JSON object");
    let error = load_one(json!({"status": {}})).expect_err("not a resource");
    assert_eq!(
        error,
        "? ?: is not a resource: it has no apiVersion, kind, metadata or spec"
    );
}

#[test]
fn objects_being_deleted_count_as_gone() {
    let mut objects = example_objects();
    let policy = objects
        .iter_mut()
        .find(|o| o["metadata"]["name"] == "billing-reporting-read-only")
        .expect("policy");
    policy["metadata"]["deletionTimestamp"] = json!("2026-12-05T21:30:00Z");
    assert!(is_being_deleted(policy));
    let set = load_objects(&objects).expect("loads").set;
    let names: Vec<&str> = set
        .authorization_policies
        .iter()
        .map(|p| p.resource.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["billing-charges", "store-checkout-audit"]);
}

#[test]
fn desired_state_ignores_what_the_server_changes() {
    let object = example_objects().remove(0);
    let mut later = as_served(desired_state(&object), 7);
    later["metadata"]["resourceVersion"] = json!("9999");
    later["status"] = json!({"observedGeneration": 7});
    assert_eq!(desired_state(&later), desired_state(&object));
    assert!(desired_state(&object).get("status").is_none());
    let meta = desired_state(&object)["metadata"].clone();
    let keys: Vec<&String> = meta.as_object().expect("metadata").keys().collect();
    assert_eq!(keys, ["name", "namespace"]);
}

#[test]
fn taxonomy_objects_that_do_not_load_or_resolve_are_quarantined_one_by_one() {
    let mut objects = example_objects();
    let claim = objects
        .iter()
        .find(|o| o["kind"] == "ServiceClaim")
        .expect("the example's claim")
        .clone();
    // A claim bound to a workload that does not exist (yet), in another namespace.
    let mut dangling = claim.clone();
    dangling["metadata"]["name"] = json!("orders-db");
    dangling["metadata"]["namespace"] = json!("orders");
    dangling["spec"]["bindTo"] = json!("orders");
    // A class that does not load.
    let mut bad_class = objects
        .iter()
        .find(|o| o["kind"] == "ServiceClass")
        .expect("the example's class")
        .clone();
    bad_class["metadata"]["name"] = json!("broken");
    bad_class["spec"]["sizes"] = json!("none");
    objects.extend([dangling, bad_class]);
    let loaded = load_objects(&objects).expect("the rest loads");
    let left_out: Vec<(&str, String)> = loaded
        .quarantined
        .iter()
        .map(|q| (q.object.as_str(), q.reason.to_string()))
        .collect();
    assert_eq!(left_out.len(), 2, "{left_out:?}");
    // Objects that do not load come first, then claims whose references do not resolve.
    assert_eq!(left_out[0].0, "ServiceClass default/broken", "{left_out:?}");
    assert!(left_out[0].1.contains("`spec.sizes`"), "{left_out:?}");
    assert_eq!(
        left_out[1].0, "ServiceClaim orders/orders-db",
        "{left_out:?}"
    );
    assert!(
        left_out[1]
            .1
            .contains("`spec.bindTo`: \"orders\" names no Workload"),
        "{left_out:?}"
    );
    assert_eq!(loaded.set.service_claims.len(), 1);
    assert_eq!(
        loaded.set.policy_set(),
        crate::load_dir(&example()).expect("example").policy_set()
    );

    // A policy-shaping kind is not quarantined: the whole set is refused.
    let policy = objects
        .iter_mut()
        .find(|o| o["kind"] == "AuthorizationPolicy")
        .expect("policy");
    policy["spec"]["targetService"] = json!("nothing");
    let error = load_objects(&objects).expect_err("fail-closed").to_string();
    assert!(error.contains("names no Service"), "{error}");
}

#[test]
fn a_service_or_workload_name_repeated_in_another_namespace_is_refused_naming_both() {
    for kind in ["Service", "Workload"] {
        let mut objects = example_objects();
        let mut copy = objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == "billing")
            .expect("billing")
            .clone();
        copy["metadata"]["namespace"] = json!("finance");
        objects.push(copy);
        let error = load_objects(&objects).expect_err("collision").to_string();
        assert!(
            error.starts_with(&format!("{kind} finance/billing field `metadata.name`: ")),
            "{error}"
        );
        assert!(
            error.contains(&format!("{kind} default/billing")),
            "{error}"
        );
    }
}
