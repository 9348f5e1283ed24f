//! The source's rebuild rules, with reflector stores fed by hand (the watchers against a
//! server are in the cli's end-to-end test `kubernetes_source`): what counts as a change, what
//! counts as gone, and that a burst of events becomes one update.

use kube::api::ApiResource;
use kube::runtime::reflector::store::Writer;
use serde_json::json;

use super::*;

/// A source over hand-fed stores, one per watched kind, and the writers that feed them.
fn source() -> (
    ClusterSource,
    Vec<Writer<DynamicObject>>,
    watch::Sender<u64>,
) {
    let (bump, changes) = watch::channel(0u64);
    let mut watched = Vec::new();
    let mut writers = Vec::new();
    for kind in watched_kinds() {
        let mut writer = Writer::new(kind.resource.clone());
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        watched.push(Watched {
            store: writer.as_reader(),
            kind,
        });
        writers.push(writer);
    }
    let source = ClusterSource {
        watched,
        changes,
        watchers: Vec::new(),
        last: None,
        saved: None,
        optional_wait: OPTIONAL_LIST_WAIT,
    };
    (source, writers, bump)
}

fn kind_index(source: &ClusterSource, kind: &str) -> usize {
    source
        .watched
        .iter()
        .position(|w| w.kind.resource.kind == kind)
        .expect("watched")
}

fn resource(source: &ClusterSource, kind: &str) -> ApiResource {
    source.watched[kind_index(source, kind)]
        .kind
        .resource
        .clone()
}

/// The store-billing example's resources as served objects (list items: no apiVersion/kind).
fn example() -> Vec<(String, DynamicObject)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing");
    let mut objects = Vec::new();
    for file in ["mesh", "services", "workloads", "policies", "routes"] {
        let text = std::fs::read_to_string(dir.join(format!("{file}.yaml"))).expect("read");
        for doc in text.split("\n---\n") {
            let mut value: Value = serde_saphyr::from_str(doc).expect("yaml");
            let kind = value["kind"].as_str().expect("kind").to_owned();
            let fields = value.as_object_mut().expect("object");
            fields.remove("apiVersion");
            fields.remove("kind");
            value["metadata"]["namespace"] = json!("default");
            value["metadata"]["resourceVersion"] = json!("1");
            value["metadata"]["uid"] = json!(format!("uid-{kind}"));
            objects.push((kind, serde_json::from_value(value).expect("object")));
        }
    }
    objects
}

fn apply(
    source: &ClusterSource,
    writers: &mut [Writer<DynamicObject>],
    kind: &str,
    object: DynamicObject,
) {
    writers[kind_index(source, kind)].apply_watcher_event(&watcher::Event::Apply(object));
}

fn loaded(source: &mut ClusterSource) -> ResourceSet {
    match source.rebuild() {
        Some(Ok(set)) => set,
        Some(Err(error)) => panic!("does not load: {error}"),
        None => panic!("no rebuild"),
    }
}

#[test]
fn only_changes_to_what_meshwork_reads_rebuild_the_set() {
    let (mut source, mut writers, _bump) = source();
    for (kind, object) in example() {
        apply(&source, &mut writers, &kind, object);
    }
    let first = loaded(&mut source);
    assert_eq!(first.authorization_policies.len(), 3);
    assert_eq!(first.http_routes.len(), 1);
    assert!(source.rebuild().is_none(), "nothing changed");

    // A new resource version and a status: nothing meshwork reads.
    let (kind, mut policy) = example().remove(
        example()
            .iter()
            .position(|(k, _)| k == "AuthorizationPolicy")
            .expect("policy"),
    );
    policy.metadata.resource_version = Some("2".into());
    policy.data["status"] = json!({"observedGeneration": 2});
    apply(&source, &mut writers, &kind, policy.clone());
    assert!(source.rebuild().is_none(), "a status is not a change");

    // Being deleted (a finalizer holds it): gone.
    policy.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2026-12-05T21:30:00Z")).expect("time"));
    let name = policy.metadata.name.clone().expect("name");
    apply(&source, &mut writers, &kind, policy.clone());
    let set = loaded(&mut source);
    let names: Vec<&str> = set
        .authorization_policies
        .iter()
        .map(|p| p.resource.metadata.name.as_str())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(!names.contains(&name.as_str()), "{names:?}");

    // Deleted for good: still gone, no rebuild.
    writers[kind_index(&source, &kind)].apply_watcher_event(&watcher::Event::Delete(policy));
    assert!(source.rebuild().is_none());
}

#[test]
fn an_invalid_object_is_an_error_naming_it_and_a_fix_loads_again() {
    let (mut source, mut writers, _bump) = source();
    for (kind, object) in example() {
        apply(&source, &mut writers, &kind, object);
    }
    loaded(&mut source);
    let route = resource(&source, "HTTPRoute");
    let mut bad: DynamicObject = serde_json::from_value(json!({
        "metadata": {"name": "slow", "namespace": "default"},
        "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "billing"}],
                 "rules": [{"timeouts": {"request": "2d"}}]},
    }))
    .expect("object");
    apply(&source, &mut writers, &route.kind, bad.clone());
    let Some(Err(error)) = source.rebuild() else {
        panic!("an invalid route loaded")
    };
    assert!(
        error
            .to_string()
            .starts_with("HTTPRoute default/slow field `spec.rules[0].timeouts.request`"),
        "{error}"
    );
    assert!(
        source.rebuild().is_none(),
        "an invalid version is reported once"
    );
    bad.data["spec"]["rules"][0]["timeouts"]["request"] = json!("2s");
    apply(&source, &mut writers, &route.kind, bad);
    assert_eq!(loaded(&mut source).http_routes.len(), 2);
}

#[tokio::test]
async fn a_burst_of_events_is_one_update() {
    let (mut source, mut writers, bump) = source();
    for (kind, object) in example() {
        apply(&source, &mut writers, &kind, object);
    }
    let first = source.first_resources().await;
    let (sender, mut feed) = watch::channel(Arc::new(ResourceUpdate {
        source: SOURCE.to_owned(),
        resources: Ok(first),
    }));
    let kind = "AuthorizationPolicy".to_owned();
    let policies: Vec<DynamicObject> = example()
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, o)| o)
        .collect();
    let index = kind_index(&source, &kind);
    // Three deletions in a burst, each announced as the watcher would.
    for policy in &policies {
        writers[index].apply_watcher_event(&watcher::Event::Delete(policy.clone()));
        bump.send_modify(|n| *n += 1);
    }
    let feeding = tokio::spawn(source.feed(sender));
    feed.changed().await.expect("an update");
    let update = Arc::clone(&feed.borrow_and_update());
    let set = update.resources.as_ref().expect("loads");
    assert!(set.authorization_policies.is_empty());

    // The next update is the next change: the burst left nothing else behind.
    writers[index].apply_watcher_event(&watcher::Event::Apply(policies[0].clone()));
    bump.send_modify(|n| *n += 1);
    feed.changed().await.expect("an update");
    let update = Arc::clone(&feed.borrow_and_update());
    let set = update.resources.as_ref().expect("loads");
    assert_eq!(set.authorization_policies.len(), 1);

    drop(feed);
    feeding
        .await
        .expect("the feed ends when the control plane stops listening");
}

/// A claim bound to `workload`, in namespace `orders`.
fn claim(workload: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "metadata": {"name": "orders-db", "namespace": "orders"},
        "spec": {"class": "postgresql", "size": "small", "bindTo": workload},
    }))
    .expect("claim")
}

/// The example's `billing-charges` policy, targeting `service`.
fn policy_targeting(service: &str) -> DynamicObject {
    let (_, mut policy) = example()
        .into_iter()
        .find(|(k, o)| {
            k == "AuthorizationPolicy" && o.metadata.name.as_deref() == Some("billing-charges")
        })
        .expect("billing-charges");
    policy.data["spec"]["targetService"] = json!(service);
    policy
}

#[test]
fn a_claim_bound_to_no_workload_is_left_out_and_the_rest_loads() {
    let (mut source, mut writers, _bump) = source();
    for (kind, object) in example() {
        apply(&source, &mut writers, &kind, object);
    }
    apply(&source, &mut writers, "ServiceClaim", claim("orders"));
    let set = loaded(&mut source);
    assert!(
        set.service_claims.is_empty(),
        "the dangling claim is left out"
    );
    assert_eq!(set.authorization_policies.len(), 3);
    // Once its workload exists, the claim is in.
    apply(&source, &mut writers, "ServiceClaim", claim("billing"));
    assert_eq!(loaded(&mut source).service_claims.len(), 1);
}

#[tokio::test]
async fn a_start_with_objects_that_do_not_load_starts_from_the_saved_set() {
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().expect("state");
    let (mut before, mut writers, _bump) = source();
    before.save_in(state.path(), None);
    for (kind, object) in example() {
        apply(&before, &mut writers, &kind, object);
    }
    loaded(&mut before);
    let file = state.path().join(saved::FILE);
    let mode = std::fs::metadata(&file)
        .expect("saved")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A restart, with a policy that names no Service in the cluster.
    let (mut restarted, mut writers, _bump) = source();
    restarted.save_in(state.path(), None);
    for (kind, object) in example() {
        apply(&restarted, &mut writers, &kind, object);
    }
    apply(
        &restarted,
        &mut writers,
        "AuthorizationPolicy",
        policy_targeting("nothing"),
    );
    let first = tokio::time::timeout(Duration::from_secs(5), restarted.first_resources())
        .await
        .expect("starts from the saved set");
    let target = first
        .authorization_policies
        .iter()
        .find(|p| p.resource.metadata.name.as_str() == "billing-charges")
        .map(|p| p.resource.spec.target_service.clone());
    assert_eq!(target.as_deref(), Some("billing"), "the saved version");
}

#[tokio::test]
async fn without_a_saved_set_the_start_waits_for_objects_that_load() {
    let (mut source, mut writers, bump) = source();
    for (kind, object) in example() {
        apply(&source, &mut writers, &kind, object);
    }
    apply(
        &source,
        &mut writers,
        "AuthorizationPolicy",
        policy_targeting("nothing"),
    );
    let index = kind_index(&source, "AuthorizationPolicy");
    let mut writer = writers.remove(index);
    let fix = async move {
        // The start is waiting (nothing else wakes it), then the policy is fixed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.apply_watcher_event(&watcher::Event::Apply(policy_targeting("billing")));
        bump.send_modify(|n| *n += 1);
        bump
    };
    let (first, _bump) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(10), source.first_resources()),
        fix
    );
    let first = first.expect("starts once the policy is fixed");
    assert_eq!(first.authorization_policies.len(), 3);
}

#[tokio::test]
async fn an_optional_kind_never_listed_holds_the_start_up_for_a_bounded_time_only() {
    let unlisted = |source: &mut ClusterSource, kind: &str| {
        let index = kind_index(source, kind);
        let writer = Writer::new(source.watched[index].kind.resource.clone());
        source.watched[index].store = writer.as_reader();
        writer
    };
    let (mut without_routes, mut writers, _bump) = source();
    for (kind, object) in example() {
        apply(&without_routes, &mut writers, &kind, object);
    }
    without_routes.optional_wait = Duration::from_millis(200);
    let _routes = unlisted(&mut without_routes, "GRPCRoute");
    let first = tokio::time::timeout(Duration::from_secs(5), without_routes.first_resources())
        .await
        .expect("started without GRPCRoutes");
    assert_eq!(first.authorization_policies.len(), 3);

    // A required kind is waited for.
    let (mut without_meshes, mut writers, _bump) = source();
    for (kind, object) in example() {
        apply(&without_meshes, &mut writers, &kind, object);
    }
    without_meshes.optional_wait = Duration::from_millis(200);
    let _meshes = unlisted(&mut without_meshes, "Mesh");
    let waited =
        tokio::time::timeout(Duration::from_secs(1), without_meshes.first_resources()).await;
    assert!(waited.is_err(), "started without the Mesh kind listed");
}
