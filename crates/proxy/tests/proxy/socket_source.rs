//! `ControlSource::Socket` against the FAKE control plane: startup exchange, ready
//! file, snapshot updates through the long poll, and static stability when control
//! goes away.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use api::contract::Snapshot;
use http::StatusCode;
use proxy::{ControlSource, ProxyConfig, ReadyInfo};
use testkit::harness::via_proxy;

use crate::fake_control::FakeControl;
use crate::mesh::{BILLING, Mesh, STORE, closed_port, route};

const HANG_GUARD: Duration = Duration::from_secs(30);

/// Re-evaluates `check` until it returns true (bounded by a hang guard; no timing
/// assertion: how long the long poll takes to deliver does not matter).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn snapshot(mesh: &Mesh, version: u64, with_billing: bool) -> Snapshot {
    let services = with_billing
        .then(|| route("billing", mesh.billing.inbound, mesh.id(BILLING)))
        .into_iter()
        .collect();
    Snapshot {
        version,
        services,
        ..Snapshot::default()
    }
}

async fn status_of_billing(outbound: SocketAddr) -> StatusCode {
    via_proxy(outbound, "GET", "http://billing/x", &[], "")
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn socket_source_bootstraps_follows_snapshots_and_survives_control_loss() {
    let mesh = Mesh::start().await;
    let identities = HashMap::from([("store".to_owned(), mesh.id(STORE))]);
    let control = FakeControl::start(mesh.ca.clone(), identities, snapshot(&mesh, 1, true));
    let dir = tempfile::tempdir().unwrap();
    let ready_file = dir.path().join("store.ready.json");
    let mut config = ProxyConfig::new(
        "store",
        ControlSource::Socket(control.socket.clone()),
        closed_port().await,
    );
    config.ready_file = Some(ready_file.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(proxy::run(config, async {
        let _ = stopped.await;
    }));

    eventually("ready file written", || async { ready_file.exists() }).await;
    let ready: ReadyInfo = serde_json::from_slice(&std::fs::read(&ready_file).unwrap()).unwrap();
    assert_eq!(ready.spiffe_id, mesh.id(STORE));
    let registered = control.registrations();
    assert_eq!(registered[0].workload, "store");
    assert_eq!(registered[0].inbound, ready.inbound);
    assert_eq!(status_of_billing(ready.outbound).await, StatusCode::OK);

    follow_updates_and_outlive_control(&mesh, &control, ready.outbound).await;
    restart_control(&mesh, &control, &ready).await;
    stop.send(()).unwrap();
    tokio::time::timeout(HANG_GUARD, running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// Snapshot changes arrive through the long poll; once control is gone the last
/// snapshot and SVID keep serving (static stability).
async fn follow_updates_and_outlive_control(
    mesh: &Mesh,
    control: &FakeControl,
    outbound: SocketAddr,
) {
    control.publish(snapshot(mesh, 2, false));
    eventually("billing removed", || async {
        // No longer a mesh service: an unknown one (404), not egress.
        status_of_billing(outbound).await == StatusCode::NOT_FOUND
    })
    .await;
    control.publish(snapshot(mesh, 3, true));
    eventually("billing back", || async {
        status_of_billing(outbound).await == StatusCode::OK
    })
    .await;
    control.stop();
    for _ in 0..3 {
        assert_eq!(status_of_billing(outbound).await, StatusCode::OK);
    }
}

/// Control comes back without its state (versions restart at 1, billing unknown):
/// the proxy re-registers and resyncs instead of waiting for "newer" versions.
async fn restart_control(mesh: &Mesh, control: &FakeControl, ready: &ReadyInfo) {
    let identities = HashMap::from([("store".to_owned(), mesh.id(STORE))]);
    let restarted = FakeControl::start_at(
        control.socket.clone(),
        mesh.ca.clone(),
        identities,
        snapshot(mesh, 1, false),
    );
    eventually("resync after control restart", || async {
        status_of_billing(ready.outbound).await == StatusCode::NOT_FOUND
    })
    .await;
    assert_eq!(restarted.registrations()[0].inbound, ready.inbound);
}

#[tokio::test]
async fn unknown_workload_fails_startup_with_the_control_error() {
    let mesh = Mesh::start().await;
    let control = FakeControl::start(mesh.ca.clone(), HashMap::new(), Snapshot::default());
    let config = ProxyConfig::new(
        "nobody",
        ControlSource::Socket(control.socket.clone()),
        closed_port().await,
    );
    let error = proxy::run(config, std::future::pending())
        .await
        .unwrap_err();
    let text = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(text.contains("unknown_workload"), "{text}");
}
