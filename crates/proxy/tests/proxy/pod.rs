//! Pod mode end to end, as root (skipped with the reason printed otherwise): store's
//! sidecar fronts a test pod (`testkit::netns::TestPod`, with the pod ruleset applied inside),
//! billing's runs in the host's namespace. Clients run INSIDE the pod: `ip netns exec`
//! (curl, resolving through the pod's `resolv.conf` and so the sidecar's resolver) or
//! sockets made there with `PodNetns`. The sidecar resolves egress names with a test DNS
//! server that answers `127.0.0.1` for every name; egress policy lets store reach
//! `allowed.test` only.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::contract::Snapshot;
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use proxy::pod::{INBOUND_PORT, PodNetns, PodRules};
use proxy::{
    ControlSource, Direction, EgressDns, PodConfig, Proxy, ProxyConfig, ProxyMetrics, ReadyInfo,
    RequestRecord,
};
use serde_json::{Value, json};
use testkit::netns::TestPod;
use testkit::{EchoServer, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mesh::{BILLING, STORE, route};

/// Where store's app listens inside its pod.
const APP_PORT: u16 = 8080;

/// Every request record the sidecar counted.
#[derive(Default)]
struct Records(Mutex<Vec<RequestRecord>>);

impl ProxyMetrics for Records {
    fn request(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(*record);
    }
}

impl Records {
    /// Outbound egress refusals by policy, with `method`.
    fn egress_denials(&self, method: &str) -> usize {
        let records = self.0.lock().unwrap();
        records
            .iter()
            .filter(|r| r.direction == Direction::Outbound && r.denied)
            .filter(|r| r.service.as_str() == "[egress]" && r.method.as_str() == method)
            .count()
    }
}

struct PodMesh {
    _stop: tokio_util::sync::DropGuard,
    ca: Arc<TestCa>,
    store: ReadyInfo,
    /// The test's own handle on the pod: clients inside it.
    netns: PodNetns,
    records: Arc<Records>,
    billing_outbound: SocketAddr,
    /// Plain HTTP egress destination (the echo on the host's loopback).
    egress_port: u16,
    /// TLS egress destination: its first bytes of each connection arrive on `tls_seen`.
    tls_port: u16,
    tls_seen: mpsc::UnboundedReceiver<Vec<u8>>,
    _apps: Vec<EchoServer>,
    /// Last: removed after the sidecars stopped.
    pod: TestPod,
}

/// `None` (with the reason printed) where pods cannot be made.
async fn start() -> Option<PodMesh> {
    if let Some(reason) = testkit::netns::unavailable() {
        eprintln!("skipped: pod mode needs root, `ip` and `nft`: {reason}");
        return None;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pod = TestPod::create(&PodRules::default().ruleset()).unwrap();
    let netns = PodNetns::open(pod.path()).unwrap();
    let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
    let stop = CancellationToken::new();
    let store_inbound = SocketAddr::from((pod.pod_ip(), INBOUND_PORT));

    let billing_app = EchoServer::start().await.unwrap();
    let billing_source = ControlSource::Static {
        svid: ca.svid(BILLING).unwrap(),
        bundle: ca.bundle(),
        snapshot: Snapshot {
            version: 1,
            services: [route("store", store_inbound, ca.id(STORE).unwrap())].into(),
            ..Snapshot::default()
        },
    };
    let billing = Proxy::start(ProxyConfig::new(
        "billing",
        billing_source,
        billing_app.addr(),
    ))
    .await
    .unwrap();
    let billing_info = billing.ready_info().clone();
    tokio::spawn(billing.serve(stop.clone().cancelled_owned()));

    let egress = EchoServer::start().await.unwrap();
    let (tls_port, tls_seen) = first_bytes_sink(&stop).await;
    let policies: policy::PolicySet = serde_json::from_value(json!({"egress": {
        "default/store-to-allowed": {
            "from": [{"spiffeId": ca.id(STORE).unwrap().as_str()}],
            "to": [{"host": "allowed.test", "ports": [egress.addr().port(), tls_port]}]}
    }}))
    .unwrap();
    let store_source = ControlSource::Static {
        svid: ca.svid(STORE).unwrap(),
        bundle: ca.bundle(),
        snapshot: Snapshot {
            version: 1,
            services: [route(
                "billing",
                billing_info.inbound,
                ca.id(BILLING).unwrap(),
            )]
            .into(),
            policy_hash: policies.hash().to_string(),
            policies,
        },
    };
    let store_app = EchoServer::serve(
        netns
            .tcp_listener(SocketAddr::from(([0, 0, 0, 0], APP_PORT)))
            .await
            .unwrap(),
    )
    .unwrap();
    let mut config = ProxyConfig::new(
        "store",
        store_source,
        SocketAddr::from(([127, 0, 0, 1], APP_PORT)),
    );
    config.dns = EgressDns::Server(loopback_dns(&stop).await);
    config.pod = Some(PodConfig::new(pod.path(), pod.pod_ip()));
    let records = Arc::new(Records::default());
    let metrics = Arc::clone(&records) as Arc<dyn ProxyMetrics>;
    let store = Proxy::start_with_metrics(config, metrics).await.unwrap();
    let store_info = store.ready_info().clone();
    tokio::spawn(store.serve(stop.clone().cancelled_owned()));
    Some(PodMesh {
        _stop: stop.drop_guard(),
        ca,
        store: store_info,
        netns,
        records,
        billing_outbound: billing_info.outbound,
        egress_port: egress.addr().port(),
        tls_port,
        tls_seen,
        _apps: vec![billing_app, egress, store_app],
        pod,
    })
}

/// A DNS server on the host's loopback answering every A query with `127.0.0.1` (what the
/// sidecar resolves egress names with).
async fn loopback_dns(stop: &CancellationToken) -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let stop = stop.clone();
    tokio::spawn(async move {
        let mut buffer = [0; 1500];
        loop {
            let (len, peer) = tokio::select! {
                () = stop.cancelled() => return,
                received = udp.recv_from(&mut buffer) => received.unwrap(),
            };
            let query = Message::from_vec(&buffer[..len]).unwrap();
            let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
            reply.metadata.recursion_available = true;
            reply.queries.clone_from(&query.queries);
            if let [question] = query.queries.as_slice()
                && question.query_type() == RecordType::A
            {
                let a = RData::A(A(Ipv4Addr::LOCALHOST));
                reply
                    .answers
                    .push(Record::from_rdata(question.name().clone(), 5, a));
            }
            let _ = udp.send_to(&reply.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

/// A TCP server on the host's loopback that reports the first bytes of every connection.
async fn first_bytes_sink(stop: &CancellationToken) -> (u16, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, tls_seen) = mpsc::unbounded_channel();
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => accepted.unwrap(),
            };
            let mut buffer = vec![0; 16 * 1024];
            let read = stream.read(&mut buffer).await.unwrap_or(0);
            buffer.truncate(read);
            let _ = seen.send(buffer);
        }
    });
    (port, tls_seen)
}

/// A DNS query sent from inside the pod to `server`.
async fn ask(netns: &PodNetns, server: SocketAddr, name: &str, kind: RecordType) -> Message {
    let udp = netns
        .udp_socket(SocketAddr::from(([0, 0, 0, 0], 0)))
        .await
        .unwrap();
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query
        .queries
        .push(Query::query(Name::from_ascii(name).unwrap(), kind));
    udp.send_to(&query.to_vec().unwrap(), server).await.unwrap();
    let mut buffer = [0; 1500];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), udp.recv_from(&mut buffer))
        .await
        .expect("the pod's resolver answers")
        .unwrap();
    let reply = Message::from_vec(&buffer[..len]).unwrap();
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.metadata.id, query.metadata.id);
    reply
}

/// The A answer of the pod's resolver for `name`.
async fn resolve(netns: &PodNetns, name: &str) -> Ipv4Addr {
    let reply = ask(netns, "127.0.0.1:53".parse().unwrap(), name, RecordType::A).await;
    match reply.answers.as_slice() {
        [record] => match &record.data {
            RData::A(A(addr)) => *addr,
            other => panic!("not an A record: {other:?}"),
        },
        other => panic!("not one answer for {name}: {other:?}"),
    }
}

/// `curl --noproxy '*' ARGS` inside the pod: (HTTP status, body).
async fn curl_in_pod(pod: &TestPod, args: &[&str]) -> (u16, String) {
    let mut command = tokio::process::Command::from(pod.command("curl"));
    command.args(["-sS", "--noproxy", "*", "-m", "10", "-w", "\n%{http_code}"]);
    let output = command.args(args).output().await.unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = status.trim().parse().unwrap_or_else(|_| {
        panic!(
            "curl {args:?}: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (status, body.to_owned())
}

/// The bytes of a ClientHello for `sni`, as rustls writes it.
fn client_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut bytes = Vec::new();
    client.write_tls(&mut bytes).unwrap();
    bytes
}

/// Connects from inside the pod to `addr`, sends `bytes`, and reads until the other side
/// closes (bounded): what came back.
async fn exchange_in_pod(netns: &PodNetns, addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = netns.connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let _ = read.await.expect("the sidecar closes a refused connection");
    answer
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_pod_app_reaches_a_mesh_service_by_name_as_its_workload() {
    let Some(mesh) = start().await else { return };
    assert_eq!(
        mesh.store.inbound,
        SocketAddr::from((mesh.pod.pod_ip(), INBOUND_PORT))
    );
    assert_eq!(mesh.store.outbound, "127.0.0.1:4140".parse().unwrap());
    let (status, body) = curl_in_pod(&mesh.pod, &["http://billing/charges?x=1"]).await;
    assert_eq!(status, 200, "{body}");
    let echoed = json(&body);
    assert_eq!(echoed["path"], "/charges");
    let store_id = mesh.ca.id(STORE).unwrap();
    assert_eq!(
        echoed["headers"]["x-meshwork-client-id"],
        json!([store_id.as_str()])
    );
}

#[tokio::test]
async fn mesh_callers_reach_the_pod_app_only_through_the_sidecar_mtls() {
    let Some(mesh) = start().await else { return };
    // Through billing's sidecar: mTLS to <pod-ip>:4143, then the app inside the pod.
    let (status, body) =
        testkit::harness::via_proxy(mesh.billing_outbound, "GET", "http://store/hi", &[], "")
            .await
            .unwrap();
    assert_eq!(status, 200, "{body:?}");
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    let billing_id = mesh.ca.id(BILLING).unwrap();
    assert_eq!(
        echoed["headers"]["x-meshwork-client-id"],
        json!([billing_id.as_str()])
    );
    // From the host, the app's port and the capture port both land on the mTLS listener:
    // plain HTTP gets no HTTP answer.
    for port in [APP_PORT, proxy::pod::CAPTURE_PORT] {
        let addr = SocketAddr::from((mesh.pod.pod_ip(), port));
        let request = "GET http://billing/charges HTTP/1.1\r\nhost: billing\r\n\r\n";
        let answer =
            testkit::harness::raw_exchange(addr, request.as_bytes(), Duration::from_secs(15))
                .await
                .unwrap();
        assert!(
            !answer.starts_with(b"HTTP/"),
            "port {port} answered plain HTTP from the host: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[tokio::test]
async fn http_egress_from_the_pod_is_decided_by_the_resolved_name() {
    let Some(mesh) = start().await else { return };
    let allowed = format!("http://allowed.test:{}/ok", mesh.egress_port);
    let (status, body) = curl_in_pod(&mesh.pod, &[&allowed]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["path"], "/ok");
    let denied = format!("http://denied.test:{}/no", mesh.egress_port);
    let (status, body) = curl_in_pod(&mesh.pod, &[&denied]).await;
    assert_eq!(status, 403, "{body}");
    let refusal = json(&body);
    assert_eq!(refusal["error"], "egress_denied");
    assert!(refusal["decision_id"].as_str().is_some(), "{refusal}");
    assert_eq!(mesh.records.egress_denials("GET"), 1);
    // An allowed name's connection asking for another host is refused, never followed.
    let (status, body) = curl_in_pod(&mesh.pod, &["-H", "Host: denied.test", &allowed]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("never followed"), "{body}");
}

#[tokio::test]
async fn tls_egress_from_the_pod_needs_the_sni_of_the_resolved_name() {
    let Some(mut mesh) = start().await else {
        return;
    };
    let allowed = SocketAddr::from((resolve(&mesh.netns, "allowed.test").await, mesh.tls_port));
    let hello = client_hello("allowed.test");
    let mut stream = mesh.netns.connect(allowed).await.unwrap();
    stream.write_all(&hello).await.unwrap();
    assert_eq!(mesh.tls_seen.recv().await.unwrap(), hello);
    drop(stream);
    // Another SNI on the allowed name's address: closed, nothing reaches the destination.
    let answer = exchange_in_pod(&mesh.netns, allowed, &client_hello("evil.test")).await;
    assert!(answer.is_empty(), "{answer:?}");
    // A name the policy does not allow: closed, and counted as a denied egress CONNECT.
    let denied = SocketAddr::from((resolve(&mesh.netns, "denied.test").await, mesh.tls_port));
    let answer = exchange_in_pod(&mesh.netns, denied, &client_hello("denied.test")).await;
    assert!(answer.is_empty(), "{answer:?}");
    assert_eq!(mesh.records.egress_denials("CONNECT"), 1);
    // The next bytes the destination sees are the next allowed hello's: the refused
    // connections never reached it.
    let again = client_hello("allowed.test");
    let mut stream = mesh.netns.connect(allowed).await.unwrap();
    stream.write_all(&again).await.unwrap();
    assert_eq!(mesh.tls_seen.recv().await.unwrap(), again);
}

#[tokio::test]
async fn the_pod_resolver_answers_any_name_stably_and_aaaa_empty() {
    let Some(mesh) = start().await else { return };
    let first = resolve(&mesh.netns, "api.stripe.com").await;
    assert_eq!(first.octets()[..2], [198, 19]);
    assert_eq!(resolve(&mesh.netns, "API.Stripe.com.").await, first);
    assert_ne!(resolve(&mesh.netns, "billing").await, first);
    // DNS to any server is redirected to the sidecar's resolver.
    let elsewhere = "192.0.2.53:53".parse().unwrap();
    let reply = ask(&mesh.netns, elsewhere, "api.stripe.com.", RecordType::A).await;
    assert_eq!(reply.answers[0].data, RData::A(A(first)));
    let reply = ask(&mesh.netns, elsewhere, "api.stripe.com.", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
}
