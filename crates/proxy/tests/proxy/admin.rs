//! The admin listener (issue 3 item 8, issue 4 item 6): a sidecar fed by the FAKE control
//! plane serves `/metrics` and `/snapshot` read live from its SVID store and route table,
//! so a newly published snapshot shows on the next request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use api::contract::Snapshot;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use proxy::{AdminSnapshot, ControlSource, Proxy, ProxyConfig};
use testkit::TestCa;
use tokio_util::sync::CancellationToken;

use crate::HANG_GUARD;
use crate::fake_control::FakeControl;
use crate::mesh::{BILLING, closed_port, route};

async fn get(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let request = http::Request::get(path)
        .header(http::header::HOST, admin.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let send = testkit::harness::send_http1(admin, request);
    let response = tokio::time::timeout(HANG_GUARD, send)
        .await
        .unwrap()
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A snapshot routing `billing` with one egress policy allowing `port`.
fn snapshot(version: u64, ca: &TestCa, inbound: SocketAddr, port: u16) -> Snapshot {
    let policies: policy::PolicySet = serde_json::from_value(serde_json::json!({
        "egress": {"default/e": {"to": [{"host": "example.com", "ports": [port]}]}}
    }))
    .unwrap();
    Snapshot {
        version,
        services: [route("billing", inbound, ca.id(BILLING).unwrap())].into(),
        policy_hash: policies.hash().to_string(),
        policies,
    }
}

/// The value of the one sample of `metric` (a line `metric{…} value` or `metric value`).
fn sample(metrics: &str, metric: &str) -> i64 {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .unwrap_or_else(|| panic!("no {metric} in\n{metrics}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

fn not_after(der: &[u8]) -> i64 {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.validity().not_after.timestamp()
}

#[tokio::test]
async fn metrics_and_snapshot_read_the_live_svid_and_table() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
    let inbound = closed_port().await;
    let identities = HashMap::from([("billing".to_owned(), ca.id(BILLING).unwrap())]);
    let first = snapshot(1, &ca, inbound, 443);
    let control = FakeControl::start(Arc::clone(&ca), identities, first.clone());
    let app = closed_port().await;
    let mut config = ProxyConfig::new(
        "billing",
        ControlSource::Socket(control.socket.clone()),
        app,
    );
    config.admin_listen = Some(([127, 0, 0, 1], 0).into());
    let proxy = Proxy::start(config).await.unwrap();
    let app_readiness = proxy.app_readiness();
    let admin = proxy
        .ready_info()
        .admin
        .expect("admin address in the ready info");
    assert_ne!(admin.port(), 0, "the bound port, not the requested one");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(proxy.serve(shutdown.clone().cancelled_owned()));

    // Not ready until the app opens its port; then ready.
    let (status, body) = get(admin, "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(&app.to_string()), "{body}");
    let _app = tokio::net::TcpListener::bind(app).await.unwrap();
    app_readiness.listening().await;
    assert_eq!(get(admin, "/ready").await.0, StatusCode::OK);
    let (status, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    let leaf = control.issued("billing").pop().expect("an SVID was signed");
    let svid_expiry = sample(
        &metrics,
        "meshwork_svid_expiry_timestamp_seconds{spiffe_id=\"spiffe://meshwork.local/ns/default/sa/billing\"}",
    );
    assert!(
        (svid_expiry - not_after(&leaf)).abs() <= 1,
        "{svid_expiry} vs the signed SVID's notAfter {}",
        not_after(&leaf)
    );
    let remaining = sample(&metrics, "meshwork_svid_expiry_remaining_seconds");
    assert!(remaining > 0 && remaining <= svid_expiry, "{metrics}");
    let root = ca.bundle().roots()[0].clone();
    assert_eq!(
        sample(&metrics, "meshwork_ca_expiry_timestamp_seconds"),
        not_after(&root)
    );
    assert_eq!(sample(&metrics, "meshwork_snapshot_version"), 1);
    let info = format!(
        "meshwork_policy_info{{policy_hash=\"{}\"}} 1",
        first.policy_hash
    );
    assert!(metrics.contains(&info), "{info} missing from\n{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "OpenMetrics text: {metrics}");

    let (status, body) = get(admin, "/snapshot").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: AdminSnapshot = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen,
        AdminSnapshot {
            version: 1,
            policy_hash: first.policy_hash.clone(),
            services: vec!["billing".to_owned()],
            spiffe_id: ca.id(BILLING).unwrap(),
        }
    );

    // A new snapshot with other policies: the next answers show it (nothing cached).
    let second = snapshot(2, &ca, inbound, 8443);
    assert_ne!(second.policy_hash, first.policy_hash);
    control.publish(second.clone());
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    loop {
        let seen: AdminSnapshot = serde_json::from_str(&get(admin, "/snapshot").await.1).unwrap();
        if seen.version == 2 {
            assert_eq!(seen.policy_hash, second.policy_hash);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "snapshot 2 never applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = get(admin, "/metrics").await.1;
    assert_eq!(sample(&metrics, "meshwork_snapshot_version"), 2);
    assert!(metrics.contains(&second.policy_hash), "{metrics}");
    assert_eq!(get(admin, "/nope").await.0, StatusCode::NOT_FOUND);

    shutdown.cancel();
    served.await.unwrap();
}
