//! `ServiceClaim`s as Secrets against the fake API server (`testkit::kube_fake`, no real
//! cluster on these machines): a real `meshwork broker` on the machine's PostgreSQL and a real
//! `meshwork control --kubernetes --broker-url …` process; see `claims_cluster.rs`. Each test
//! waits on conditions with deadlines.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::DeleteParams;
use serde_json::json;
use testkit::kube_fake::{FakeResource, FakeVerb, meshwork_resources};

use crate::claims_cluster::{CLAIM, DEADLINE, Setup, condition};
use crate::deploy::CONTROL_PLANE_RBAC;
/// Connects with the Secret's `uri` and runs a query: the credentials work.
fn connect_with(secret: &Secret) -> Result<(), tokio_postgres::Error> {
    let data = secret.data.as_ref().unwrap();
    let uri = String::from_utf8(data["uri"].0.clone()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (db, conn) = tokio_postgres::connect(&uri, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        db.batch_execute("CREATE TABLE IF NOT EXISTS charges (id int)")
            .await
    })
}

pub(crate) fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().unwrap();
    String::from_utf8(data[key].0.clone()).unwrap()
}

/// Asserts the claim is `Ready=True` with its Secret in the servicebinding.io layout, owned by
/// the claim, with working credentials for the instance's one database.
pub(crate) fn assert_ready(setup: &Setup) -> Secret {
    let claim = setup.wait_condition("Ready", "True", Some("Ready"));
    assert_eq!(claim["status"]["binding"]["name"], CLAIM, "{claim:#}");
    let ready = condition(&claim, "Ready").unwrap();
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("environment dev") && message.contains("provider postgres-shared"),
        "the environment decision chain: {message}"
    );
    assert!(
        message.contains("bound to billing: Secret charges-db"),
        "{message}"
    );
    for type_ in ["Provisioned", "Bound"] {
        assert_eq!(
            condition(&claim, type_).unwrap()["status"],
            "True",
            "{claim:#}"
        );
    }
    assert_eq!(ready["observedGeneration"], claim["metadata"]["generation"]);
    let secret = setup.secret().expect("the Secret exists");
    assert_eq!(
        secret.type_.as_deref(),
        Some("servicebinding.io/postgresql")
    );
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "type", "provider", "host", "port", "database", "username", "password", "uri",
    ] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(text(&secret, "type"), "postgresql");
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ServiceClaim", CLAIM)
    );
    assert_eq!(
        Some(&owner.uid),
        claim["metadata"]["uid"]
            .as_str()
            .map(str::to_owned)
            .as_ref()
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let instance = setup.instance_id();
    assert_eq!(
        text(&secret, "database"),
        broker::names::instance_resource(&instance)
    );
    assert_eq!(
        setup.pg_state(),
        (1, 1, 1),
        "one database, one binding user"
    );
    connect_with(&secret).expect("the Secret's credentials connect");
    secret
}

/// Deletes the claim and waits until it is gone; then nothing is left of it.
pub(crate) fn assert_delete_leaves_nothing(setup: &Setup) {
    setup.delete_claim();
    assert_gone_with_everything(setup);
}

/// Waits until the deleted claim is gone; then neither its database, its users nor its Secret
/// are left.
pub(crate) fn assert_gone_with_everything(setup: &Setup) {
    let deadline = Instant::now() + DEADLINE;
    while setup.claim().is_some() {
        assert!(Instant::now() < deadline, "the claim was never finalized");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(setup.pg_state(), (0, 0, 0), "database or users left");
    let deadline = Instant::now() + DEADLINE;
    while setup.secret().is_some() {
        assert!(Instant::now() < deadline, "the Secret outlived its claim");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn claim_becomes_a_database_and_a_secret_and_deleting_it_drops_both() {
    let setup = Setup::new("ka1");
    let _broker = setup.broker();
    setup.create_example();
    let controller = setup.controller(None);
    // One process: the control plane serves the example's mesh while claims become Secrets.
    controller.lines_until("starting the control plane", DEADLINE);
    setup.create_claim();
    let secret = assert_ready(&setup);
    let claim = setup.claim().unwrap();
    assert_eq!(
        claim["metadata"]["finalizers"],
        json!(["meshwork.dev/deprovision"])
    );

    // Level-based, no rotation: later reconciles (every second here) keep the same Secret.
    let ready_since = condition(&claim, "Ready").unwrap()["lastTransitionTime"].clone();
    let window = setup.wait_rechecks(3);
    assert_no_writes(&window);
    let again = setup.secret().unwrap();
    assert_eq!(again.data, secret.data, "credentials were rotated");
    let claim = setup.claim().unwrap();
    assert_eq!(
        condition(&claim, "Ready").unwrap()["lastTransitionTime"],
        ready_since
    );

    assert_delete_leaves_nothing(&setup);
    assert_within_rbac(&setup);
}

/// Asserts the controller wrote nothing to claims or Secrets in `window` (a settled claim's
/// recheck only reads; a write would wake the controller again: a self-triggering loop).
pub(crate) fn assert_no_writes(window: &[testkit::kube_fake::FakeRequest]) {
    let writes: Vec<_> = window
        .iter()
        .filter(|r| {
            !matches!(r.verb, FakeVerb::Get | FakeVerb::List | FakeVerb::Watch)
                && (r.resource == "secrets" || r.resource == "serviceclaims")
        })
        .collect();
    assert!(writes.is_empty(), "writes while settled: {writes:#?}");
}

/// Every request the control plane made (the test's own left out: creating the example and
/// the claim, deleting the claim) is one deploy/install/rbac.yaml grants it, and the claims
/// controller used its part: finalizer and status patches, the Secret's writes.
fn assert_within_rbac(setup: &Setup) {
    let granted: BTreeSet<(&str, &str, &str)> = CONTROL_PLANE_RBAC
        .iter()
        .flat_map(|(_, group, resource, verbs)| verbs.iter().map(|v| (*group, *resource, *v)))
        .collect();
    let mut used = BTreeSet::new();
    for r in setup.cluster.fake.requests() {
        let by_test = (r.verb == FakeVerb::Create && r.resource != "secrets")
            || (r.verb == FakeVerb::Delete && r.resource == "serviceclaims");
        if by_test {
            continue;
        }
        let resource = match &r.subresource {
            Some(sub) => format!("{}/{sub}", r.resource),
            None => r.resource.clone(),
        };
        let key = (r.group.clone(), resource, r.verb.as_str());
        assert!(
            granted.contains(&(key.0.as_str(), key.1.as_str(), key.2)),
            "not granted by rbac.yaml: {r:?}"
        );
        used.insert(key);
    }
    for (group, resource, verb) in [
        ("meshwork.dev", "serviceclaims", "patch"),
        ("meshwork.dev", "serviceclaims/status", "patch"),
        ("", "secrets", "create"),
        ("", "secrets", "delete"),
        ("", "secrets", "watch"),
    ] {
        let key = (group.to_owned(), resource.to_owned(), verb);
        assert!(used.contains(&key), "the controller never used {key:?}");
    }
}

#[test]
fn broker_outage_shows_in_ready_and_heals_on_its_own() {
    let setup = Setup::new("ka2");
    let broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    let secret = assert_ready(&setup);

    drop(broker); // SIGKILL and reap: a crash, nothing cleaned up
    let claim = setup.wait_condition("Ready", "False", Some("BrokerUnreachable"));
    let ready = condition(&claim, "Ready").unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("broker"),
        "{ready:#}"
    );
    // The credentials themselves still work: the database did not go anywhere.
    assert_eq!(setup.secret().unwrap().data, secret.data);

    let _broker = setup.broker();
    assert_ready(&setup);
    assert_eq!(setup.secret().unwrap().data, secret.data, "no rotation");
    assert_delete_leaves_nothing(&setup);
}

/// The controller dies after the broker bound (credentials only in its memory) and before the
/// Secret was written; a restarted controller ends Ready with one binding, and deleting the
/// claim leaves nothing.
#[test]
fn controller_killed_mid_provisioning_loses_and_leaks_nothing() {
    let setup = Setup::new("ka3");
    let _broker = setup.broker();
    let held = setup.controller(Some("bound"));
    setup.create_claim();
    held.lines_until(
        "test seam: holding claim charges-db at step Bound",
        DEADLINE,
    );
    drop(held); // SIGKILL and reap: a crash, nothing cleaned up
    assert!(setup.secret().is_none(), "the Secret was not written yet");
    assert_eq!(setup.pg_state(), (1, 1, 1), "bound before the crash");

    let _controller = setup.controller(None);
    assert_ready(&setup);
    assert_delete_leaves_nothing(&setup);
}

/// The controller dies once the instance exists, before anything is bound, and the claim is
/// deleted while no controller runs: the finalizer holds the claim, and a restarted controller
/// deprovisions it.
#[test]
fn claim_deleted_while_the_controller_is_down_is_deprovisioned_on_restart() {
    let setup = Setup::new("ka6");
    let _broker = setup.broker();
    let held = setup.controller(Some("provisioned"));
    setup.create_claim();
    held.lines_until(
        "test seam: holding claim charges-db at step Provisioned",
        DEADLINE,
    );
    drop(held); // SIGKILL and reap: a crash, nothing cleaned up
    assert_eq!(setup.pg_state(), (1, 1, 0), "provisioned, nothing bound");
    setup.delete_claim();
    let claim = setup.claim().expect("the finalizer holds the claim");
    assert!(
        claim["metadata"]["deletionTimestamp"].is_string(),
        "{claim:#}"
    );

    let _controller = setup.controller(None);
    assert_gone_with_everything(&setup);
}

/// With an asynchronous policy the controller polls the broker's operation; it is killed while
/// polling (the broker holds the operation after creating the database), then the broker is
/// killed too and both restart: the broker resumes its operation, the controller its polling,
/// and the claim ends Ready with one database and one binding.
#[test]
fn controller_killed_while_polling_an_asynchronous_provision() {
    let setup = Setup::asynchronous("ka7");
    let held_broker = setup.broker_held(Some(broker::provider::STEP_INSTANCE_CREATED));
    let controller = setup.controller(None);
    setup.create_claim();
    let claim = setup.wait_condition("Ready", "False", Some("Provisioning"));
    assert_eq!(
        condition(&claim, "Provisioned").unwrap()["status"],
        "Unknown"
    );
    setup.wait_database_created();
    drop(controller); // SIGKILL and reap: a crash, nothing cleaned up
    drop(held_broker); // SIGKILL and reap: a crash, nothing cleaned up

    let _broker = setup.broker();
    let _controller = setup.controller(None);
    assert_ready(&setup);
    assert_delete_leaves_nothing(&setup);
}

/// Level-based: a Secret someone edited is corrected from the broker's binding (same
/// credentials, no rotation); a deleted Secret comes back with a fresh password (a new
/// binding).
#[test]
fn secret_is_corrected_in_place_and_rotated_by_deleting_it() {
    let setup = Setup::new("ka4");
    let _broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    let original = assert_ready(&setup);

    let tampered = json!({"data": {"password": "dGFtcGVyZWQ=", "extra": "eA=="}});
    setup
        .cluster
        .rt
        .block_on(setup.secrets().patch(
            CLAIM,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&tampered),
        ))
        .unwrap();
    wait_secret(&setup, "the tampered Secret corrected", |s| {
        s.data == original.data
    });

    setup
        .cluster
        .rt
        .block_on(setup.secrets().delete(CLAIM, &DeleteParams::default()))
        .unwrap();
    wait_secret(&setup, "a new Secret with a new password", |s| {
        text(s, "password") != text(&original, "password")
    });
    let rotated = assert_ready(&setup);
    assert_eq!(text(&rotated, "username"), text(&original, "username"));
    // (That the old password stops working is the broker's unbind, tested there; the
    // machine's PostgreSQL trusts loopback connections, so it cannot be seen here.)
    assert_delete_leaves_nothing(&setup);
}

/// A claim meshwork cannot read. The CRD's schema refuses every spec meshwork cannot parse
/// (crds.rs checks that they agree), so on a cluster such a claim is one stored before its CRD's
/// schema was tightened: an API server validates objects on write only. The fake serves
/// ServiceClaims with such an older schema here (`size` any string). The claim is provisioned,
/// then edited to `size: huge`: `Ready=False`/`InvalidSpec`; deleting it still drops its
/// database (the spec is not needed to find the instance).
#[test]
fn unreadable_claim_says_why_and_deletes_cleanly() {
    let resources: Vec<FakeResource> = meshwork_resources()
        .into_iter()
        .map(|mut r| {
            if r.plural == "serviceclaims"
                && let Some(schema) = &mut r.schema
            {
                let size = &mut schema["properties"]["spec"]["properties"]["size"];
                *size = json!({"type": "string"});
            }
            r
        })
        .collect();
    let setup = Setup::serving("ka5", &resources);
    let _broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    assert_ready(&setup);
    setup.patch_claim(&json!({"spec": {"size": "huge"}}));
    let claim = setup.wait_condition("Ready", "False", Some("InvalidSpec"));
    let ready = condition(&claim, "Ready").unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("huge"),
        "{ready:#}"
    );
    assert_eq!(setup.pg_state(), (1, 1, 1), "nothing was dropped");
    assert_delete_leaves_nothing(&setup);
}

fn wait_secret(setup: &Setup, what: &str, done: impl Fn(&Secret) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !setup.secret().is_some_and(|s| done(&s)) {
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
