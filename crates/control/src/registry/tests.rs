#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::store::redb::RedbStore;
use crate::store::{Store, Table};

const MESH: &str = "apiVersion: meshwork.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: m\n\
    spec:\n  trustDomain: meshwork.local\n---\n\
    apiVersion: meshwork.dev/v1alpha1\nkind: Service\nmetadata:\n  name: billing\n\
    spec:\n  selector:\n    app: billing\n---\n\
    apiVersion: meshwork.dev/v1alpha1\nkind: Workload\nmetadata:\n  name: billing\n  \
    labels:\n    app: billing\nspec:\n  command: [x]\n";

/// A registry over resources where billing runs `replicas` copies (`None`: unset).
fn resources(replicas: Option<u16>) -> ResourceSet {
    let dir = tempfile::tempdir().unwrap();
    let spec = replicas.map_or(String::new(), |n| format!("  replicas: {n}\n"));
    std::fs::write(dir.path().join("mesh.yaml"), format!("{MESH}{spec}")).unwrap();
    api::load_dir(dir.path()).unwrap()
}

async fn open_registry(state: &std::path::Path, replicas: Option<u16>) -> Local {
    Local::open_in(state, resources(replicas)).await.unwrap()
}

async fn register(local: &Local, replica: u16, port: u16) -> Result<(), ControlError> {
    let registration = EndpointRegistration {
        workload: "billing".into(),
        inbound: SocketAddr::from(([127, 0, 0, 1], port)),
        replica,
    };
    local.registry.register(registration).await
}

/// Writes endpoint records as an earlier control plane did.
async fn write_endpoints(state: &std::path::Path, keys: &[&str]) {
    let store = Store::Redb(RedbStore::open(state).unwrap());
    let addr = SocketAddr::from(([127, 0, 0, 1], 4001));
    for key in keys {
        store.put(Table::Endpoints, key, &addr).await.unwrap();
    }
}

#[test]
fn a_published_snapshot_is_served_as_its_json_encoded_once() {
    let snapshot = Snapshot {
        version: 7,
        policy_hash: "h".to_owned(),
        ..Snapshot::default()
    };
    let published = PublishedSnapshot::new(snapshot.clone());
    let served: Snapshot = serde_json::from_slice(&published.json()).unwrap();
    assert_eq!((served, published.version), (snapshot, 7));
    assert_eq!(
        published.json().as_ptr(),
        published.json().as_ptr(),
        "shared, not re-encoded"
    );
}

fn billing_ports(local: &Local) -> Vec<u16> {
    let snapshot = local.registry.subscribe().borrow().clone();
    let endpoints = &snapshot.services["billing"].endpoints;
    endpoints.iter().map(|e| e.addr.port()).collect()
}

#[tokio::test]
async fn each_replica_is_an_endpoint_and_a_restarted_one_replaces_its_own() {
    let state = tempfile::tempdir().unwrap();
    let registry = open_registry(state.path(), Some(2)).await;
    register(&registry, 1, 4002).await.unwrap();
    register(&registry, 0, 4001).await.unwrap();
    assert_eq!(billing_ports(&registry), [4001, 4002]);
    register(&registry, 1, 4003).await.unwrap();
    assert_eq!(billing_ports(&registry), [4001, 4003]);
    // Persisted by replica: a restarted control plane publishes both at once.
    registry.close().await;
    let registry = open_registry(state.path(), Some(2)).await;
    assert_eq!(billing_ports(&registry), [4001, 4003]);
}

#[tokio::test]
async fn a_replica_the_workload_does_not_have_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let registry = open_registry(state.path(), Some(2)).await;
    let error = register(&registry, 2, 4001).await.unwrap_err();
    assert!(error.to_string().contains("has 2 replica(s)"), "{error}");
    let single = tempfile::tempdir().unwrap();
    let registry = open_registry(single.path(), None).await;
    assert!(register(&registry, 1, 4001).await.is_err());
    register(&registry, 0, 4001).await.unwrap();
    assert_eq!(billing_ports(&registry), [4001]);
}

#[tokio::test]
async fn an_older_state_file_reads_as_replica_0_and_fewer_replicas_drop_the_rest() {
    let state = tempfile::tempdir().unwrap();
    // What a control plane from before replicas wrote: the bare workload name.
    write_endpoints(state.path(), &["billing", "billing.2"]).await;
    let registry = open_registry(state.path(), Some(2)).await;
    assert_eq!(
        billing_ports(&registry),
        [4001],
        "replica 2 is past spec.replicas"
    );
}

#[tokio::test]
async fn an_unreadable_endpoint_key_is_reported_not_dropped() {
    let state = tempfile::tempdir().unwrap();
    write_endpoints(state.path(), &["billing.x"]).await;
    let error = Local::open_in(state.path(), resources(None))
        .await
        .err()
        .expect("refused");
    let text = error.to_string();
    assert!(text.contains("endpoints/billing.x"), "{text}");
}
