//! A WebSocket echo and tonic gRPC (unary and server-streaming) from one pod to another,
//! as root (skipped with the reason printed otherwise). Two test pods (`TestPod`, the pod
//! ruleset inside), each fronted by a sidecar in pod mode: store's "app" is the test,
//! connecting from inside store's pod to the virtual address store's resolver gives
//! `billing`, port 80; the capture hands the connection to store's sidecar, which detects
//! HTTP (an HTTP/1.1 upgrade, h2 prior knowledge) and sends it over mTLS to billing's
//! sidecar at `<billing-pod-ip>:4143`, which stamps the verified caller identity and
//! forwards to the server listening on `127.0.0.1:8080` inside billing's pod.
//!
//! A connection that bypassed the capture would reach nothing at the virtual address, and
//! only billing's sidecar sets `x-meshwork-client-id`, which each server reports back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use api::workload::{JwtsvidRequest, X509svidRequest};
use futures_util::{SinkExt, StreamExt};
use identity::SpiffeId;
use proxy::pod::{INBOUND_PORT, PodNetns, PodRules};
use proxy::{
    AppProtocol, Direction, Label, OpaqueOutcome, PodConfig, Protocol, ProxyMetrics, RequestRecord,
};
use testkit::TestCa;
use testkit::netns::TestPod;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::HANG_GUARD;
use super::mesh::{BILLING, STORE, route};
use super::opaque::sidecar_with;
use super::pod::resolve;

/// Where billing's server listens inside its pod.
const APP_PORT: u16 = 8080;

/// What one sidecar counted: requests, and its mTLS connections with their peers.
#[derive(Default)]
struct Events {
    requests: Mutex<Vec<RequestRecord>>,
    inbound: Mutex<Vec<(SpiffeId, Protocol)>>,
    outbound: Mutex<Vec<(SpiffeId, SocketAddr)>>,
    opaque: Mutex<Vec<(Direction, &'static str, OpaqueOutcome)>>,
}

impl ProxyMetrics for Events {
    fn request(&self, record: &RequestRecord) {
        self.requests.lock().unwrap().push(*record);
    }

    fn inbound_connection(&self, peer: &SpiffeId, protocol: Protocol) {
        self.inbound.lock().unwrap().push((peer.clone(), protocol));
    }

    fn outbound_connection(&self, peer: &SpiffeId, addr: SocketAddr, _protocol: Protocol) {
        self.outbound.lock().unwrap().push((peer.clone(), addr));
    }

    fn opaque_connection(&self, direction: Direction, service: Label, outcome: OpaqueOutcome) {
        let event = (direction, service.as_str(), outcome);
        self.opaque.lock().unwrap().push(event);
    }
}

impl Events {
    /// The (method, peer) of the outbound requests to `billing`: served by the sidecar as
    /// HTTP, not spliced as opaque TCP.
    fn outbound_to_billing(&self) -> Vec<(&'static str, &'static str)> {
        let records = self.requests.lock().unwrap();
        records
            .iter()
            .filter(|r| r.direction == Direction::Outbound && r.service.as_str() == "billing")
            .map(|r| (r.method.as_str(), r.peer.as_str()))
            .collect()
    }
}

struct TwoPods {
    _stop: tokio_util::sync::DropGuard,
    ca: Arc<TestCa>,
    /// The test's handle on store's pod: its "app" connects from there.
    store_netns: PodNetns,
    store: Arc<Events>,
    billing: Arc<Events>,
    billing_inbound: SocketAddr,
    /// Last: removed after the sidecars stopped.
    _pods: [TestPod; 2],
}

/// Two pods with their sidecars; `serve` gets the listener made on `127.0.0.1:8080` in
/// billing's pod (and the token ending the test). `None` (with the reason printed) where
/// pods cannot be made.
async fn start(
    app_protocol: AppProtocol,
    serve: impl FnOnce(TcpListener, CancellationToken),
) -> Option<TwoPods> {
    start_with(app_protocol, policy::PolicySet::default(), serve).await
}

/// As [`start`], both sidecars with `policies`.
async fn start_with(
    app_protocol: AppProtocol,
    policies: policy::PolicySet,
    serve: impl FnOnce(TcpListener, CancellationToken),
) -> Option<TwoPods> {
    if let Some(reason) = testkit::netns::unavailable() {
        eprintln!("SKIPPED: pod mode needs root, `ip` and `nft`: {reason}");
        return None;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ruleset = PodRules::default().ruleset();
    let store_pod = TestPod::create(&ruleset).unwrap();
    let billing_pod = TestPod::create(&ruleset).unwrap();
    let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
    let stop = CancellationToken::new();
    let app = SocketAddr::from(([127, 0, 0, 1], APP_PORT));
    let listener = PodNetns::open(billing_pod.path())
        .unwrap()
        .tcp_listener(app)
        .await
        .unwrap();
    serve(listener, stop.clone());

    let billing_inbound = SocketAddr::from((billing_pod.pod_ip(), INBOUND_PORT));
    let billing_route = || vec![route("billing", billing_inbound, ca.id(BILLING).unwrap())];
    let billing = Arc::new(Events::default());
    let pod = PodConfig::new(billing_pod.path(), billing_pod.pod_ip());
    let info = sidecar_with(
        &ca,
        BILLING,
        billing_route(),
        (app, &policies),
        &billing,
        &stop,
        |c| {
            c.app_protocol = app_protocol;
            c.pod = Some(pod);
        },
    )
    .await;
    assert_eq!(info.inbound, billing_inbound);
    let store = Arc::new(Events::default());
    let pod = PodConfig::new(store_pod.path(), store_pod.pod_ip());
    let routes = billing_route();
    sidecar_with(&ca, STORE, routes, (app, &policies), &store, &stop, |c| {
        c.pod = Some(pod);
    })
    .await;
    Some(TwoPods {
        _stop: stop.drop_guard(),
        ca,
        store_netns: PodNetns::open(store_pod.path()).unwrap(),
        store,
        billing,
        billing_inbound,
        _pods: [store_pod, billing_pod],
    })
}

impl TwoPods {
    /// `billing:80` as an app in store's pod reaches it: the virtual address store's
    /// resolver answers for `billing`.
    async fn billing_from_store(&self) -> SocketAddr {
        let addr = resolve(&self.store_netns, "billing").await;
        assert_eq!(addr.octets()[..2], [198, 19], "not a virtual address");
        SocketAddr::from((addr, 80))
    }

    fn id(&self, path: &str) -> SpiffeId {
        self.ca.id(path).unwrap()
    }

    /// Store's sidecar served the captured connection as HTTP (`methods`, in order) and
    /// sent it over mTLS to billing's sidecar, which verified store's identity.
    fn assert_went_over_mtls(&self, methods: &[&str]) {
        let billing = self.id(BILLING);
        let expected: Vec<_> = methods.iter().map(|m| (*m, billing.as_str())).collect();
        assert_eq!(self.store.outbound_to_billing(), expected);
        // Pooled connections are counted (an upgrade's own connection is not).
        let outbound = self.store.outbound.lock().unwrap().clone();
        for (peer, addr) in outbound {
            assert_eq!((peer, addr), (billing.clone(), self.billing_inbound));
        }
        let inbound = self.billing.inbound.lock().unwrap().clone();
        assert!(
            !inbound.is_empty(),
            "billing's sidecar saw no mTLS connection"
        );
        assert!(inbound.iter().all(|(peer, _)| *peer == self.id(STORE)));
    }
}

#[tokio::test]
async fn a_websocket_echo_goes_from_pod_to_pod_as_store() {
    use super::websocket::{Seen, serve_echo_app};
    let seen = Seen::default();
    let app_seen = Arc::clone(&seen);
    let serve = move |listener, _| serve_echo_app(listener, app_seen);
    let Some(mesh) = start(AppProtocol::Http1, serve).await else {
        return;
    };
    let billing = mesh.billing_from_store().await;
    let stream = tokio::time::timeout(HANG_GUARD, mesh.store_netns.connect(billing))
        .await
        .expect("the capture never accepted the connection")
        .unwrap();
    let handshake = tokio_tungstenite::client_async("ws://billing/echo", stream);
    let (mut ws, response) = tokio::time::timeout(HANG_GUARD, handshake)
        .await
        .expect("no upgrade response")
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    let frames = [
        Message::text("hello"),
        Message::text("from pod to pod"),
        Message::binary(vec![0u8, 1, 2, 255]),
    ];
    for frame in frames {
        ws.send(frame.clone()).await.unwrap();
        let echoed = tokio::time::timeout(HANG_GUARD, ws.next()).await.unwrap();
        assert_eq!(echoed.unwrap().unwrap(), frame);
    }
    ws.close(None).await.unwrap();
    let store_id = mesh.id(STORE).as_str().to_owned();
    assert_eq!(*seen.lock().unwrap(), [vec![store_id]]);
    mesh.assert_went_over_mtls(&["GET"]);
}

#[tokio::test]
async fn tonic_unary_and_streaming_calls_go_from_pod_to_pod_as_store() {
    use super::grpc::serve_grpc_app;
    let Some(mesh) = start(AppProtocol::Http2, serve_grpc_app).await else {
        return;
    };
    let billing = mesh.billing_from_store().await;
    let netns = mesh.store_netns.clone();
    // h2 prior knowledge on a connection made in store's pod, `:authority billing`.
    let connect = tower::service_fn(move |_: http::Uri| {
        let netns = netns.clone();
        async move {
            let tcp = netns
                .connect(billing)
                .await
                .map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tcp))
        }
    });
    let endpoint = tonic::transport::Endpoint::from_static("http://billing");
    let channel = endpoint.connect_with_connector(connect);
    let channel = tokio::time::timeout(HANG_GUARD, channel)
        .await
        .unwrap()
        .unwrap();
    let mut client = SpiffeWorkloadApiClient::new(channel);
    let store_id = mesh.id(STORE).as_str().to_owned();

    let unary = client.fetch_jwtsvid(JwtsvidRequest {
        audience: vec!["ledger".to_owned()],
        spiffe_id: String::new(),
    });
    let unary = tokio::time::timeout(HANG_GUARD, unary)
        .await
        .unwrap()
        .unwrap();
    let svid = &unary.get_ref().svids[0];
    assert_eq!(
        (svid.spiffe_id.as_str(), svid.svid.as_str()),
        (store_id.as_str(), "ledger")
    );

    let stream = client.fetch_x509svid(X509svidRequest {});
    let mut stream = tokio::time::timeout(HANG_GUARD, stream)
        .await
        .unwrap()
        .unwrap()
        .into_inner();
    let mut received = Vec::new();
    while let Some(message) = tokio::time::timeout(HANG_GUARD, stream.next())
        .await
        .unwrap()
    {
        received.push(message.unwrap().svids[0].spiffe_id.clone());
    }
    let expected: Vec<String> = (0..3).map(|i| format!("{store_id}#{i}")).collect();
    assert_eq!(received, expected);
    mesh.assert_went_over_mtls(&["POST", "POST"]);
    // gRPC between the sidecars is h2 as well.
    let inbound = mesh.billing.inbound.lock().unwrap().clone();
    assert!(
        inbound.iter().all(|(_, p)| *p == Protocol::Http2),
        "{inbound:?}"
    );
}

/// Where billing's "database" listens inside its pod (no default opaque port: detection
/// sees bytes that are not HTTP and carries them as opaque TCP).
const DB_PORT: u16 = 5433;

#[tokio::test]
async fn opaque_tcp_goes_from_pod_to_pod_over_mtls_where_a_tcp_rule_allows() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let policies: policy::PolicySet = serde_json::from_value(serde_json::json!({
        "authorization": {"default/store-db": {
            "targetService": "billing", "action": "ALLOW",
            "rules": [{"from": [{"spiffeId": "spiffe://meshwork.local/ns/default/sa/store"}],
                       "to": [{"ports": [DB_PORT]}]}]}}}))
    .unwrap();
    let Some(mesh) = start_with(AppProtocol::Http1, policies, |_, _| {}).await else {
        return;
    };
    let db = PodNetns::open(mesh._pods[1].path())
        .unwrap()
        .tcp_listener(SocketAddr::from(([127, 0, 0, 1], DB_PORT)))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = db.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let billing = resolve(&mesh.store_netns, "billing").await;
    let mut stream = mesh
        .store_netns
        .connect(SocketAddr::from((billing, DB_PORT)))
        .await
        .unwrap();
    let message = b"\x00\x00\x00\x08\x04\xd2\x16\x2f not http";
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0; message.len()];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut echoed))
        .await
        .expect("no echo through the mesh")
        .unwrap();
    assert_eq!(echoed, message);
    // Billing's sidecar spliced it as opaque TCP from store (authorized by store's verified
    // id and the port); store's sidecar served no HTTP (it counts the connection as one
    // CONNECT to billing).
    let spliced = (Direction::Inbound, "billing", OpaqueOutcome::Spliced);
    assert_eq!(*mesh.billing.opaque.lock().unwrap(), [spliced]);
    let methods: Vec<_> = mesh.store.outbound_to_billing();
    assert!(methods.iter().all(|(m, _)| *m == "CONNECT"), "{methods:?}");

    // A port no rule names: closed, nothing echoed.
    let mut other = mesh
        .store_netns
        .connect(SocketAddr::from((billing, DB_PORT + 1)))
        .await
        .unwrap();
    let _ = other.write_all(message).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, other.read_to_end(&mut got)).await;
    assert!(read.is_ok() && got.is_empty(), "{got:?}");
    let denied = (Direction::Inbound, "billing", OpaqueOutcome::Denied);
    assert_eq!(mesh.billing.opaque.lock().unwrap().last(), Some(&denied));
}
