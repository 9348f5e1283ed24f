//! `ServiceClaim`s whose instance must be found without the catalog or the controller's own
//! state: a claim whose class left the taxonomy, a controller with another platform id (a lost
//! state volume, a second replica), and the `Orphan` deletion policy. Same setup as
//! `kubernetes_claims.rs` (`claims_cluster.rs`): fake API server, real broker and controller.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::json;

use crate::claims_cluster::{DEADLINE, Setup, condition};
use crate::kubernetes_claims::{assert_delete_leaves_nothing, assert_no_writes, assert_ready};

/// A provisioned claim edited to a class the broker's catalog does not have (the schema
/// accepts any name) fails to reconcile, and deleting it still drops its database: the
/// instance's service and plan are read back from the broker, not from the catalog.
#[test]
fn deleting_a_claim_whose_class_left_the_catalog_drops_its_database() {
    let setup = Setup::new("ka8");
    let _broker = setup.broker();
    let _controller = setup.controller(None);
    setup.create_claim();
    assert_ready(&setup);
    setup.patch_claim(&json!({"spec": {"class": "no-such-class"}}));
    let claim = setup.wait_condition("Ready", "False", Some("ProvisionFailed"));
    let ready = condition(&claim, "Ready").unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("no-such-class"),
        "{ready:#}"
    );
    assert_delete_leaves_nothing(&setup);
}

/// The instance id is recorded on the claim before the broker is first asked, and used as
/// recorded: a second controller with another platform id (another state directory: a lost
/// volume, or a second replica) provisions no second database and writes nothing while both
/// run, and once it is the only one it keeps the claim Ready and deprovisions it on deletion.
#[test]
fn a_controller_with_another_platform_id_keeps_the_recorded_instance() {
    let setup = Setup::new("ka9");
    let _broker = setup.broker();
    let first = setup.controller(None);
    setup.create_claim();
    let secret = assert_ready(&setup);
    let claim = setup.claim().unwrap();
    assert_eq!(
        claim["metadata"]["annotations"]["meshwork.dev/instance-id"],
        setup.instance_id().as_str(),
        "{claim:#}"
    );
    let ready_since = condition(&claim, "Ready").unwrap()["lastTransitionTime"].clone();

    let _second = setup.controller_in("state-b", None);
    let both = setup.wait_rechecks(6);
    assert_no_writes(&both);
    drop(first); // SIGKILL and reap
    let alone = setup.wait_rechecks(3);
    assert_no_writes(&alone);
    let other = std::fs::read_to_string(setup.path("state-b/platform-id")).unwrap();
    assert!(
        !setup.instance_id().ends_with(other.trim()),
        "the second controller has its own platform id"
    );
    assert_eq!(setup.pg_state(), (1, 1, 1), "no second database");
    assert_eq!(setup.secret().unwrap().data, secret.data, "no rotation");
    let claim = setup.claim().unwrap();
    let ready = condition(&claim, "Ready").unwrap();
    assert_eq!(
        (&ready["status"], &ready["lastTransitionTime"]),
        (&json!("True"), &ready_since)
    );
    assert_delete_leaves_nothing(&setup);
}

/// `meshwork.dev/deletion-policy: Orphan` lets a claim go when its broker is gone for good:
/// no deprovisioning, the finalizer is removed, the controller says what was left, and the
/// database stays (the leak the policy accepts; the test's cleanup drops it).
#[test]
fn orphan_deletion_policy_lets_the_claim_go_and_leaves_the_instance() {
    let setup = Setup::new("kb1");
    let broker = setup.broker();
    let controller = setup.controller(None);
    setup.create_claim();
    assert_ready(&setup);
    setup.patch_claim(&json!({"metadata": {"annotations": {
        "meshwork.dev/deletion-policy": "Orphan"
    }}}));
    drop(broker); // gone for good
    setup.wait_condition("Ready", "False", Some("BrokerUnreachable"));
    setup.delete_claim();
    controller.lines_until("deletion policy Orphan", DEADLINE);
    let deadline = Instant::now() + DEADLINE;
    while setup.claim().is_some() || setup.secret().is_some() {
        assert!(Instant::now() < deadline, "the claim or its Secret stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        setup.pg_state(),
        (1, 1, 1),
        "the instance is left as it was"
    );
}

/// An instance id annotation copied from another claim's manifest is refused, before the broker
/// is asked and on deletion (two claims would share one database, and deleting either would
/// drop it): `InstanceIdMismatch`, the finalizer stays; `Orphan` lets the claim go.
#[test]
fn an_instance_id_copied_from_another_claim_is_refused() {
    let setup = Setup::new("kb2");
    let _broker = setup.broker();
    setup.create_claim();
    setup.patch_claim(&json!({"metadata": {"annotations": {
        "meshwork.dev/instance-id": format!("other-db.{}.0123abcd", setup.namespace)
    }}}));
    let _controller = setup.controller(None);
    let claim = setup.wait_condition("Ready", "False", Some("InstanceIdMismatch"));
    let ready = condition(&claim, "Ready").unwrap();
    assert!(
        ready["message"].as_str().unwrap().contains("other-db"),
        "{ready:#}"
    );
    assert_eq!(setup.pg_state(), (0, 0, 0), "the broker was not asked");

    setup.delete_claim();
    let claim = setup.wait_condition("Ready", "False", Some("InstanceIdMismatch"));
    assert!(claim["metadata"]["deletionTimestamp"].is_string());
    setup.wait_rechecks(2); // retried, and still held
    assert!(setup.claim().is_some(), "the finalizer holds the claim");
    setup.patch_claim(&json!({"metadata": {"annotations": {
        "meshwork.dev/deletion-policy": "Orphan"
    }}}));
    let deadline = Instant::now() + DEADLINE;
    while setup.claim().is_some() {
        assert!(Instant::now() < deadline, "the claim stayed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A claim from before instance ids were recorded (no annotation) whose controller lost its
/// state directory: the id is taken from the claim's Secret, not made up from the new platform
/// id, so no second database is provisioned.
#[test]
fn a_claim_without_a_record_takes_the_instance_id_its_secret_names() {
    let setup = Setup::new("kb3");
    let _broker = setup.broker();
    let first = setup.controller(None);
    setup.create_claim();
    let secret = assert_ready(&setup);
    drop(first); // SIGKILL and reap
    setup.patch_claim(&json!({"metadata": {"annotations": {
        "meshwork.dev/instance-id": null
    }}}));
    let claim = setup.claim().unwrap();
    assert!(claim["metadata"]["annotations"]["meshwork.dev/instance-id"].is_null());

    let _second = setup.controller_in("state-b", None);
    let deadline = Instant::now() + DEADLINE;
    let recorded = loop {
        let claim = setup.claim().unwrap();
        let id = &claim["metadata"]["annotations"]["meshwork.dev/instance-id"];
        if let Some(id) = id.as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "never recorded: {claim:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(recorded, setup.instance_id(), "the Secret's instance id");
    assert_no_writes(&setup.wait_rechecks(3));
    assert_eq!(setup.pg_state(), (1, 1, 1), "no second database");
    assert_eq!(setup.secret().unwrap().data, secret.data, "no rotation");
    assert_delete_leaves_nothing(&setup);
}

/// A claim deleted while its asynchronous provision is still running keeps its finalizer
/// (the broker answers 404 for the unfinished instance; its `last_operation` says it is in
/// progress), and is deprovisioned once the provision has finished: nothing the provision
/// creates afterwards is leaked. (A controller that is itself polling the provision notices a
/// deletion only when its poll ends; here it is restarted, so the deletion is reconciled
/// against the running provision at once.)
#[test]
fn a_claim_deleted_during_an_asynchronous_provision_is_deprovisioned_once_it_finishes() {
    let setup = Setup::asynchronous("kc1");
    let held_broker = setup.broker_held(Some(broker::provider::STEP_INSTANCE_CREATED));
    let controller = setup.controller(None);
    setup.create_claim();
    setup.wait_condition("Ready", "False", Some("Provisioning"));
    setup.wait_database_created();
    drop(controller); // SIGKILL: its poll of the provision ends with it
    setup.delete_claim();
    let _controller = setup.controller(None);
    let held = setup.wait_condition("Ready", "False", Some("DeprovisionFailed"));
    let message = condition(&held, "Ready").unwrap()["message"].to_string();
    assert!(message.contains("still being provisioned"), "{message}");
    assert_eq!(
        setup.pg_state(),
        (1, 1, 0),
        "the database is kept meanwhile"
    );

    drop(held_broker);
    let _broker = setup.broker(); // resumes the provision, which finishes; then it is deleted
    crate::kubernetes_claims::assert_gone_with_everything(&setup);
}
