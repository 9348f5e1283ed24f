//! The control plane over its real unix socket; the agent and its Workload API
//! against real SPIFFE clients (the `spiffe` crate).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "control/failover.rs"]
mod failover;
#[path = "control/grpc_core.rs"]
mod grpc_core;
#[path = "control/replicas.rs"]
mod replicas;
#[path = "control/shutdown.rs"]
mod shutdown;
#[path = "control/workload_api.rs"]
mod workload_api;

use std::path::{Path, PathBuf};
use std::time::Duration;

use api::contract::{EndpointRegistration, Snapshot, SvidRequest, SvidResponse};
use bytes::Bytes;
use control::{ControlConfig, ControlError};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use identity::{Svid, SvidCertificate, SvidKey, TrustBundle};
use tokio::net::UnixStream;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/store-billing")
}

struct Running {
    socket: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ControlError>>,
}

async fn start(state: &Path) -> Running {
    start_with(state, &example(), None).await
}

/// Starts control on `state` with the resources of `dir`, and the node API if asked.
async fn start_with(state: &Path, dir: &Path, node_api: Option<std::net::SocketAddr>) -> Running {
    let socket = state.join("control.sock");
    let config = ControlConfig {
        socket: socket.clone(),
        state_dir: state.to_owned(),
        resources: api::load_dir(dir).expect("resources"),
        node_api,
        store: control::StoreConfig::Redb,
    };
    let (stop, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(control::serve(config, async {
        let _ = rx.await;
    }));
    for _ in 0..1000 {
        if UnixStream::connect(&socket).await.is_ok() {
            return Running { socket, stop, task };
        }
        if task.is_finished() {
            panic!("control stopped before listening: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("control socket never came up in 10 s");
}

impl Running {
    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.expect("join").expect("serve");
    }
}

async fn call(socket: &Path, method: &str, uri: &str, body: Option<String>) -> (u16, Bytes) {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "control")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .expect("request");
    let resp = tx.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    (
        status,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

async fn sign(socket: &Path, workload: &str, key: &SvidKey) -> (u16, Bytes) {
    let any_id = "spiffe://evil.example/admin".parse().expect("id");
    let req = SvidRequest {
        workload: workload.into(),
        csr_pem: key.csr_pem(&any_id).expect("csr"),
    };
    call(
        socket,
        "POST",
        "/v1/svid",
        Some(serde_json::to_string(&req).expect("json")),
    )
    .await
}

#[tokio::test]
async fn signs_csr_with_the_registry_identity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = start(dir.path()).await;
    let key = SvidKey::generate().expect("key");
    let (status, body) = sign(&ctl.socket, "billing", &key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let resp: SvidResponse = serde_json::from_slice(&body).expect("json");
    // The CSR asked for spiffe://evil.example/admin; the registry decides.
    assert_eq!(
        resp.spiffe_id.as_str(),
        "spiffe://meshwork.local/ns/default/sa/billing"
    );
    let cert = SvidCertificate::from_pem(&resp.cert_chain_pem).expect("chain");
    let svid = Svid::new(key, cert).expect("key matches leaf");
    assert_eq!(svid.id(), &resp.spiffe_id);
    let bundle = TrustBundle::from_pem(resp.spiffe_id.trust_domain().clone(), &resp.bundle_pem)
        .expect("bundle");
    let now = rustls_pki_types::UnixTime::now();
    let verified =
        identity::verify_svid(&bundle, svid.cert_chain(), now, identity::PeerRole::Client)
            .expect("verifies");
    assert_eq!(verified, resp.spiffe_id);
    ctl.shutdown().await;
}

#[tokio::test]
async fn unknown_workload_and_bad_csr_get_json_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = start(dir.path()).await;
    let key = SvidKey::generate().expect("key");
    let (status, body) = sign(&ctl.socket, "nosuch", &key).await;
    assert_eq!(status, 404);
    let err: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(err["error"], "unknown_workload");
    let bad = serde_json::json!({"workload": "billing", "csr_pem": "not a csr"}).to_string();
    let (status, body) = call(&ctl.socket, "POST", "/v1/svid", Some(bad)).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    ctl.shutdown().await;
}

#[tokio::test]
async fn snapshot_long_poll_wakes_on_registration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctl = start(dir.path()).await;
    let (_, body) = call(&ctl.socket, "GET", "/v1/snapshot", None).await;
    let first: Snapshot = serde_json::from_slice(&body).expect("snapshot");
    assert!(first.services["billing"].endpoints.is_empty());

    let socket = ctl.socket.clone();
    let since = first.version;
    let poll = tokio::spawn(async move {
        call(&socket, "GET", &format!("/v1/snapshot?since={since}"), None).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !poll.is_finished(),
        "long poll answered before anything changed"
    );
    let reg = EndpointRegistration {
        workload: "billing".into(),
        inbound: "127.0.0.1:4143".parse().expect("addr"),
        replica: 0,
    };
    let (status, _) = call(
        &ctl.socket,
        "POST",
        "/v1/endpoints",
        Some(serde_json::to_string(&reg).expect("json")),
    )
    .await;
    assert_eq!(status, 204);
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("woke")
        .expect("join");
    let next: Snapshot = serde_json::from_slice(&body).expect("snapshot");
    assert!(next.version > first.version);
    let ep = &next.services["billing"].endpoints[0];
    assert_eq!(ep.addr, reg.inbound);
    assert_eq!(
        ep.identity.as_str(),
        "spiffe://meshwork.local/ns/default/sa/billing"
    );
    ctl.shutdown().await;
}

#[tokio::test]
async fn ca_survives_restart_and_corrupt_state_is_never_silently_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = |body: &Bytes| {
        serde_json::from_slice::<SvidResponse>(body)
            .expect("json")
            .bundle_pem
    };
    let ctl = start(dir.path()).await;
    let (_, body) = sign(&ctl.socket, "billing", &SvidKey::generate().expect("key")).await;
    let first = bundle(&body);
    ctl.shutdown().await;
    let state = dir.path().join(control::STATE_FILE);
    let mode = std::fs::metadata(&state)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the state file holds the CA key: owner-only"
    );

    let ctl = start(dir.path()).await;
    let (_, body) = sign(&ctl.socket, "billing", &SvidKey::generate().expect("key")).await;
    assert_eq!(bundle(&body), first, "CA changed across restart");
    ctl.shutdown().await;

    let garbage = vec![0xa5_u8; 4096];
    std::fs::write(&state, &garbage).expect("corrupt");
    let config = ControlConfig {
        socket: dir.path().join("control.sock"),
        state_dir: dir.path().to_owned(),
        resources: api::load_dir(&example()).expect("example"),
        node_api: None,
        store: control::StoreConfig::Redb,
    };
    let err = control::serve(config, async {})
        .await
        .expect_err("corrupt state must fail");
    let text = err.to_string();
    assert!(
        text.contains("refusing to replace") && text.contains("control.redb"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&state).expect("state"),
        garbage,
        "data was lost"
    );
}
