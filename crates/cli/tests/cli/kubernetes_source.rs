//! Controller mode's source of resources, end to end against the **fake** API server
//! (`testkit::kube_fake`; no real one runs here): a real `meshwork control --kubernetes`
//! reads the store-billing example from the cluster's objects, real sidecars (`meshwork
//! proxy`: billing's SVID from a node agent joined to it, store's by CSR on the control
//! socket) and billing's demo app serve, and edits made
//! through the Kubernetes API reach the running sidecars: a policy as a CRD edit, an invalid
//! edit that changes nothing, a watch that expires (410) and recovers, an `HTTPRoute` created;
//! and an API server that is unreachable at start and again later (connections refused).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::kube_fake::{FakeVerb, meshwork_resources};

use crate::deploy::CONTROL_PLANE_RBAC;
use crate::harness::{eventually, meshwork};
use crate::kube_cluster::{
    Cluster, Spawned, agent, charge, forward, free_port, objects_of, policy_hash, sidecar,
    sidecar_via_agent, snapshot,
};

#[test]
fn an_unreachable_api_server_is_waited_for_and_recovered_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let cluster = Cluster::start(&dir.path().join("direct"));
    let mut objects = Vec::new();
    for file in [
        "mesh.yaml",
        "services.yaml",
        "workloads.yaml",
        "policies.yaml",
    ] {
        objects.extend(objects_of(file));
    }
    for object in &objects {
        cluster.create(object);
    }
    // The control plane reaches the API server through a port nothing listens on yet.
    let port = free_port();
    let kubeconfig = dir.path().join("kubeconfig");
    let text = cluster
        .fake
        .kubeconfig()
        .replace(&cluster.fake.url(), &format!("https://127.0.0.1:{port}"));
    assert!(text.contains(&format!(":{port}")), "{text}");
    std::fs::write(&kubeconfig, text).expect("kubeconfig");
    let control = Spawned::start(
        "control",
        meshwork()
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--state-dir")
            .arg(&state),
    );
    let before = control.lines_until("watching the cluster failed", Duration::from_secs(30));
    assert!(
        !before
            .iter()
            .any(|l| l.contains("starting the control plane")),
        "started without the cluster: {before:?}"
    );
    assert!(!state.join("control.sock").exists());

    // The API server appears: the watchers' backoff brings them back, and it starts.
    let forwarder = forward(&cluster.rt, port, cluster.fake.addr());
    control.lines_until("starting the control plane", Duration::from_secs(60));
    eventually("the first snapshot", Duration::from_secs(10), || {
        policy_hash(&state).is_some()
    });
    let first = policy_hash(&state);

    // It goes away (every connection closed) and a policy changes meanwhile.
    forwarder.abort();
    control.lines_until("watching the cluster failed", Duration::from_secs(30));
    let policy = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("billing-charges");
    let healthz_only = json!({"rules": [policy["spec"]["rules"][1].clone()]});
    cluster.patch_spec(policy, healthz_only);
    assert_eq!(policy_hash(&state), first, "the control plane kept serving");

    // Back: the change arrives.
    let _forwarder = forward(&cluster.rt, port, cluster.fake.addr());
    eventually(
        "the edit made during the outage",
        Duration::from_secs(60),
        || policy_hash(&state) != first,
    );
    control.lines_until("policies reloaded and published", Duration::from_secs(10));
}

#[test]
fn cluster_edits_reach_running_sidecars() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("workloads")).expect("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = Cluster::start(&kubeconfig);

    // Every resource of the example but its route, which comes later.
    let objects = create_files(
        &cluster,
        &[
            "mesh.yaml",
            "services.yaml",
            "workloads.yaml",
            "policies.yaml",
            "taxonomy.yaml",
            "claims.yaml",
        ],
    );
    let policy = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("billing-charges")
        .clone();

    let control = Spawned::start(
        "control",
        meshwork()
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--state-dir")
            .arg(&state),
    );
    control.lines_until("starting the control plane", Duration::from_secs(30));
    eventually("the control socket", Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(state.join("control.sock")).is_ok()
    });

    // billing's sidecar gets its SVID as `up`'s do, from a node agent joined to this control
    // plane (node API, join token, registration entry); store's by CSR on the control socket.
    let (_agent, workload_api) = agent(&state);
    let billing_port = free_port();
    let (_billing_proxy, billing) =
        sidecar_via_agent(&state, &workload_api, "billing", billing_port);
    let _billing_app = Spawned::start(
        "billing/app",
        meshwork()
            .args(["demo", "billing"])
            .env("PORT", billing_port.to_string())
            .env("MESHWORK_WORKLOAD", "billing")
            .env(
                "HTTP_PROXY",
                format!("http://{}", billing["outbound"].as_str().expect("outbound")),
            ),
    );
    let (_store_proxy, store) = sidecar(&state, "store", free_port());
    let outbound = store["outbound"].as_str().expect("outbound").to_owned();
    eventually(
        "store to charge through billing",
        Duration::from_secs(30),
        || charge(&outbound) == 201,
    );

    // A policy edited as a custom resource reaches the running sidecar.
    let healthz_only = json!({"rules": [policy["spec"]["rules"][1].clone()]});
    cluster.patch_spec(&policy, healthz_only.clone());
    eventually(
        "store to be refused after the edit",
        Duration::from_secs(10),
        || charge(&outbound) == 403,
    );
    control.lines_until("policies reloaded and published", Duration::from_secs(10));

    // An invalid edit (store's rule back, on a Service that does not exist: the schema
    // cannot tell, the API server takes it) changes nothing.
    let version = snapshot(&state)["version"].as_u64().expect("version");
    let mut invalid = policy["spec"].clone();
    invalid["targetService"] = json!("biling");
    cluster.patch_spec(&policy, invalid);
    let logged = control
        .lines_until(
            "AuthorizationPolicy default/billing-charges field `spec.targetService`",
            Duration::from_secs(10),
        )
        .join("\n");
    assert!(
        logged.contains("resources not reloaded, the previous policies keep serving"),
        "{logged}"
    );
    assert!(
        !logged.contains(".yaml:"),
        "a cluster object is not a file: {logged}"
    );
    assert_eq!(charge(&outbound), 403, "the previous policies keep serving");
    assert_eq!(
        snapshot(&state)["version"].as_u64(),
        Some(version),
        "nothing was published"
    );

    // Every watch expires (410 Gone): the watchers list again, and the revert still arrives.
    cluster.fake.expire_watches();
    cluster.patch_spec(&policy, policy["spec"].clone());
    eventually(
        "store to be allowed again after the revert",
        Duration::from_secs(15),
        || charge(&outbound) == 201,
    );

    // A route created in the cluster reaches the control plane's snapshot.
    let route_timeout =
        |s: &Value| s["services"]["billing"]["traffic"]["rules"][0]["requestTimeoutMs"].as_u64();
    assert_eq!(route_timeout(&snapshot(&state)), None);
    let route = objects_of("routes.yaml").remove(0);
    cluster.create(&route);
    eventually(
        "the HTTPRoute in the snapshot",
        Duration::from_secs(10),
        || route_timeout(&snapshot(&state)) == Some(3000),
    );

    // The control plane only read (the test's client made the creates and patches), and
    // exactly what deploy/install/rbac.yaml grants it: every kind listed and watched.
    let mut read = BTreeSet::new();
    for request in cluster.fake.requests() {
        if [FakeVerb::Create, FakeVerb::Patch].contains(&request.verb) {
            continue;
        }
        assert!(
            request.subresource.is_none() && request.namespace.is_none(),
            "not a cluster-wide read of a kind: {request:?}"
        );
        read.insert((request.group, request.resource, request.verb.as_str()));
    }
    let granted: BTreeSet<(String, String, &str)> = CONTROL_PLANE_RBAC
        .iter()
        .filter(|(role, ..)| *role == "meshwork-control")
        .flat_map(|(_, group, resource, verbs)| {
            verbs
                .iter()
                .filter(|verb| **verb != "get")
                .map(|verb| ((*group).to_owned(), (*resource).to_owned(), *verb))
        })
        .collect();
    assert_eq!(
        read, granted,
        "what the control plane read is what its ClusterRole grants (but get)"
    );
}

#[test]
fn a_namespaced_control_plane_reads_its_namespace_and_starts_once_it_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = Cluster::start(&kubeconfig);
    let mut objects = Vec::new();
    for file in [
        "mesh.yaml",
        "services.yaml",
        "workloads.yaml",
        "policies.yaml",
    ] {
        objects.extend(objects_of(file));
    }
    for object in &mut objects {
        object["metadata"]["namespace"] = json!("shop");
    }
    // A policy is invalid in shop (it names no Service: the schema cannot tell, the fake
    // takes it)…
    let policy = objects
        .iter_mut()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("billing-charges");
    let valid_spec = policy["spec"].clone();
    policy["spec"]["targetService"] = json!("nothing");
    let policy = policy.clone();
    for object in &objects {
        cluster.create(object);
    }
    // …and another namespace has a second Mesh, which would make shop's invalid if read.
    let mut other = objects_of("mesh.yaml").remove(0);
    other["metadata"]["namespace"] = json!("elsewhere");
    cluster.create(&other);

    let control = Spawned::start(
        "control",
        meshwork()
            .args([
                "control",
                "--kubernetes",
                "--namespace",
                "shop",
                "--kubeconfig",
            ])
            .arg(&kubeconfig)
            .arg("--state-dir")
            .arg(&state),
    );
    let waiting = control
        .lines_until("waiting for a change to start", Duration::from_secs(30))
        .join("\n");
    let logged = control.lines_until(
        "AuthorizationPolicy shop/billing-charges field `spec.targetService`",
        Duration::from_secs(5),
    );
    assert!(!waiting.contains("starting the control plane"), "{waiting}");
    assert!(
        !logged.iter().any(|l| l.contains("only one Mesh")),
        "{logged:?}"
    );
    cluster.patch_spec(&policy, valid_spec);
    control.lines_until("starting the control plane", Duration::from_secs(30));
    eventually("the first snapshot", Duration::from_secs(10), || {
        snapshot(&state)["policies"]["egress"]["shop/billing-to-stripe"].is_object()
    });
    let namespaces: BTreeSet<Option<String>> = cluster
        .fake
        .requests()
        .into_iter()
        .filter(|r| [FakeVerb::List, FakeVerb::Watch].contains(&r.verb))
        .map(|r| r.namespace)
        .collect();
    assert_eq!(namespaces, BTreeSet::from([Some("shop".to_owned())]));
}

#[test]
fn a_cluster_without_the_gateway_api_crds_runs_without_routes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let without_routes: Vec<_> = meshwork_resources()
        .into_iter()
        .filter(|r| r.group != "gateway.networking.k8s.io")
        .collect();
    let cluster = Cluster::serving(&kubeconfig, &without_routes);
    for file in [
        "mesh.yaml",
        "services.yaml",
        "workloads.yaml",
        "policies.yaml",
    ] {
        for object in objects_of(file) {
            cluster.create(&object);
        }
    }
    let control = Spawned::start(
        "control",
        meshwork()
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--state-dir")
            .arg(&state),
    );
    let lines = control.lines_until("starting the control plane", Duration::from_secs(30));
    for kind in ["HTTPRoute", "GRPCRoute"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("the cluster does not serve this kind") && l.contains(kind)),
            "{kind}: {lines:?}"
        );
    }
    eventually("the first snapshot", Duration::from_secs(10), || {
        policy_hash(&state).is_some()
    });
}

/// The store-billing example's mesh, services, workloads and policies, created in `cluster`.
fn create_example(cluster: &Cluster) -> Vec<Value> {
    create_files(
        cluster,
        &[
            "mesh.yaml",
            "services.yaml",
            "workloads.yaml",
            "policies.yaml",
        ],
    )
}

/// The resources of these files of the store-billing example, created in `cluster`.
fn create_files(cluster: &Cluster, files: &[&str]) -> Vec<Value> {
    let objects: Vec<Value> = files.iter().flat_map(|f| objects_of(f)).collect();
    for object in &objects {
        cluster.create(object);
    }
    objects
}

fn control_on(kubeconfig: &std::path::Path, state: &std::path::Path) -> Spawned {
    Spawned::start(
        "control",
        meshwork()
            .args(["control", "--kubernetes", "--kubeconfig"])
            .arg(kubeconfig)
            .arg("--state-dir")
            .arg(state),
    )
}

#[test]
fn a_claim_bound_to_no_workload_does_not_block_a_policy_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = Cluster::start(&kubeconfig);
    let objects = create_example(&cluster);
    let control = control_on(&kubeconfig, &state);
    control.lines_until("starting the control plane", Duration::from_secs(30));
    eventually("the first snapshot", Duration::from_secs(10), || {
        policy_hash(&state).is_some()
    });
    let first = policy_hash(&state);

    // A claim in another namespace, bound to a workload that does not exist (yet).
    let mut claim = objects_of("claims.yaml").remove(0);
    claim["metadata"]["namespace"] = json!("orders");
    claim["spec"]["bindTo"] = json!("orders");
    cluster.create(&claim);
    let left_out = control
        .lines_until("left out of the mesh's resources", Duration::from_secs(10))
        .join("\n");
    assert!(
        left_out.contains("ServiceClaim orders/charges-db")
            && left_out.contains("\"orders\" names no Workload"),
        "{left_out}"
    );

    // A policy edit still applies.
    let policy = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("billing-charges");
    let healthz_only = json!({"rules": [policy["spec"]["rules"][1].clone()]});
    cluster.patch_spec(policy, healthz_only);
    control.lines_until("policies reloaded and published", Duration::from_secs(10));
    assert_ne!(policy_hash(&state), first);
}

#[test]
fn a_restart_with_an_invalid_policy_in_the_cluster_serves_the_saved_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("workloads")).expect("state");
    let kubeconfig = dir.path().join("kubeconfig");
    let cluster = Cluster::start(&kubeconfig);
    let objects = create_example(&cluster);
    let saved = state.join("cluster-resources.json");
    let first = {
        let control = control_on(&kubeconfig, &state);
        control.lines_until("starting the control plane", Duration::from_secs(30));
        eventually("the saved set", Duration::from_secs(10), || saved.exists());
        eventually("the first snapshot", Duration::from_secs(10), || {
            policy_hash(&state).is_some()
        });
        policy_hash(&state)
    };

    // While the control plane is down, a policy comes to name no Service.
    let policy = objects
        .iter()
        .find(|o| o["metadata"]["name"] == "billing-charges")
        .expect("billing-charges");
    let mut invalid = policy["spec"].clone();
    invalid["targetService"] = json!("nothing");
    cluster.patch_spec(policy, invalid);

    let control = control_on(&kubeconfig, &state);
    let started = control
        .lines_until("starting the control plane", Duration::from_secs(30))
        .join("\n");
    assert!(
        started.contains("starting from the last set that applied")
            && started
                .contains("AuthorizationPolicy default/billing-charges field `spec.targetService`"),
        "{started}"
    );
    eventually("the saved policies served", Duration::from_secs(10), || {
        policy_hash(&state).is_some()
    });
    assert_eq!(policy_hash(&state), first, "the saved set's policies");
    // The node API serves: an agent joins and a sidecar gets its SVID through it.
    let (_agent, workload_api) = agent(&state);
    let (_billing_proxy, billing) =
        sidecar_via_agent(&state, &workload_api, "billing", free_port());
    assert!(billing["outbound"].is_string(), "{billing}");
}

#[test]
fn control_takes_exactly_one_source() {
    let run = |args: &[&str]| {
        let out = meshwork().arg("control").args(args).output().expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--resources", "x", "--kubernetes"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--resources <RESOURCES>|--kubernetes"),
        "{err}"
    );
    for flag in ["--kubeconfig", "--namespace"] {
        let (code, err) = run(&["--resources", "x", flag, "k"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(&format!("'{flag} ")), "{err}");
    }
}
