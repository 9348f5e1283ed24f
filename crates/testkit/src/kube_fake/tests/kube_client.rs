//! The real kube-rs client and runtime against the fake: the kubeconfig over HTTPS with an
//! IP-address SAN, typed and dynamic APIs, server-side apply, the status subresource,
//! kube-runtime's `finalizer` helper (JSON Patch with `test` ops) and a `watcher` that
//! re-lists after `expire_watches()`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::json;

use super::server;
use crate::kube_fake::{FakeApiServer, FakeVerb};

pub(super) async fn client(server: &FakeApiServer) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    Client::try_from(config).unwrap()
}

fn claims(client: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("meshwork.dev", "v1alpha1", "ServiceClaim");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "serviceclaims");
    Api::namespaced_with(client, "default", &resource)
}

fn claim(name: &str) -> DynamicObject {
    let gvk = GroupVersionKind::gvk("meshwork.dev", "v1alpha1", "ServiceClaim");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "serviceclaims");
    DynamicObject::new(name, &resource).data(json!({"spec": {"class": "postgres"}}))
}

#[tokio::test]
async fn kube_client_reads_writes_and_applies_over_https() {
    let server = server().await;
    let secrets: Api<Secret> = Api::default_namespaced(client(&server).await);
    let mut secret = Secret::default();
    secret.metadata.name = Some("s".into());
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    let error = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("{error}")
    };
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    let applied =
        json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"s","labels":{"a":"b"}}});
    let params = PatchParams::apply("meshwork-test");
    let patched = secrets
        .patch("s", &params, &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(patched.labels().get("a").map(String::as_str), Some("b"));
    let listed = secrets.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let deleted = secrets.delete("s", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "an immediate delete answers a Status");
}

#[tokio::test]
async fn kube_status_subresource_and_the_finalizer_helper_work() {
    let server = server().await;
    let api = claims(client(&server).await);
    api.create(&PostParams::default(), &claim("a"))
        .await
        .unwrap();
    let status = json!({"status": {"phase": "Bound"}});
    let patched = api
        .patch_status("a", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["phase"], "Bound");

    let reconcile = |event: Finalizer<DynamicObject>| async move {
        let _ = event;
        Ok::<_, std::io::Error>(Action::await_change())
    };
    let object = Arc::new(api.get("a").await.unwrap());
    finalizer(&api, "meshwork.dev/cleanup", object, reconcile)
        .await
        .unwrap();
    let held = api.get("a").await.unwrap();
    assert_eq!(held.finalizers(), ["meshwork.dev/cleanup"]);
    let answer = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(answer.is_left(), "a held object is answered as itself");
    let deleting = Arc::new(api.get("a").await.unwrap());
    assert!(deleting.metadata.deletion_timestamp.is_some());
    finalizer(&api, "meshwork.dev/cleanup", deleting, reconcile)
        .await
        .unwrap();
    let error = api.get("a").await.unwrap_err();
    let kube::Error::Api(status) = error else {
        panic!("{error}")
    };
    assert_eq!(status.code, 404);
}

#[tokio::test]
async fn kube_watcher_relists_after_the_fake_expires_its_watches() {
    let server = server().await;
    let client = client(&server).await;
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let mut events = watcher(secrets.clone(), watcher::Config::default()).boxed();
    let mut next_ok = async move || loop {
        let item = tokio::time::timeout(Duration::from_secs(20), events.try_next())
            .await
            .expect("a watcher event within 20 s");
        match item {
            Ok(Some(event)) => return event,
            Ok(None) => panic!("the watcher ended"),
            Err(_) => continue,
        }
    };
    assert!(matches!(next_ok().await, watcher::Event::Init));
    assert!(matches!(next_ok().await, watcher::Event::InitDone));
    let mut secret = Secret::default();
    secret.metadata.name = Some("a".into());
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let watcher::Event::Apply(seen) = next_ok().await else {
        panic!("an Apply")
    };
    assert_eq!(seen.name_any(), "a");

    server.expire_watches();
    assert!(
        matches!(next_ok().await, watcher::Event::Init),
        "a re-list after the 410"
    );
    let watcher::Event::InitApply(relisted) = next_ok().await else {
        panic!("InitApply")
    };
    assert_eq!(relisted.name_any(), "a");
    assert!(matches!(next_ok().await, watcher::Event::InitDone));
    secret.metadata.name = Some("b".into());
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let watcher::Event::Apply(seen) = next_ok().await else {
        panic!("an Apply")
    };
    assert_eq!(seen.name_any(), "b");

    let verbs: Vec<FakeVerb> = server.requests().iter().map(|r| r.verb).collect();
    let lists = verbs.iter().filter(|v| **v == FakeVerb::List).count();
    let watches = verbs.iter().filter(|v| **v == FakeVerb::Watch).count();
    assert_eq!(lists, 2, "{verbs:?}");
    assert!(
        watches >= 3,
        "first watch, the resumed one that got 410, the new one: {verbs:?}"
    );
}

/// Run by [`config_infer_reads_the_kubeconfig_from_kubeconfig_env`] in a child process with
/// `KUBECONFIG` set (the environment cannot be changed in-process without `unsafe`).
#[tokio::test]
#[ignore = "run in a child process by config_infer_reads_the_kubeconfig_from_kubeconfig_env"]
async fn config_infer_child() {
    let config = Config::infer().await.unwrap();
    let expected = std::env::var("FAKE_API_SERVER_URL").unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        expected
    );
    let secrets: Api<Secret> = Api::default_namespaced(Client::try_from(config).unwrap());
    let names: Vec<String> = secrets
        .list(&Default::default())
        .await
        .unwrap()
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(names, ["from-parent"]);
}

#[tokio::test]
async fn config_infer_reads_the_kubeconfig_from_kubeconfig_env() {
    let server = server().await;
    let mut secret = Secret::default();
    secret.metadata.name = Some("from-parent".into());
    let secrets: Api<Secret> = Api::default_namespaced(client(&server).await);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kube_fake::tests::kube_client::config_infer_child",
            "--ignored",
        ])
        .env("KUBECONFIG", &path)
        .env("FAKE_API_SERVER_URL", server.url())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran the test: {stdout}"
    );
}
