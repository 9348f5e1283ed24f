//! Issue 11 end to end at the proxy level: store's sidecar in front of one or more billing
//! replicas (each a real sidecar with mTLS in front of a scripted app), with a route rule
//! from the traffic contract. The scripted app answers from a script (statuses, stalls),
//! then with its fallback, and counts what reached it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::contract::traffic::{RetryRule, RouteRule, RuleMatch, ServiceTraffic, TrafficPolicy};
use api::contract::{Endpoint, ServiceRoute, Snapshot};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use proxy::{ControlSource, ProxyMetrics, ReadyInfo, RequestRecord, RetryReason, TimeoutKind};
use testkit::TestCa;
use testkit::harness::via_proxy;
use tokio_util::sync::CancellationToken;

use super::mesh::{BILLING, STORE, closed_port, start_speaking};

/// What the scripted app does with one request.
#[derive(Clone, Copy, Debug)]
pub enum Action {
    Status(u16),
    /// Answers with this status after this long (unless the request is cancelled first).
    Slow(u16, Duration),
    Stall,
}

/// A scripted HTTP/1.1 app on loopback.
#[derive(Clone)]
pub struct App {
    pub addr: SocketAddr,
    script: Arc<Mutex<VecDeque<Action>>>,
    fallback: Action,
    /// `METHOD /path` of every request that reached it.
    seen: Arc<Mutex<Vec<String>>>,
    /// Requests whose connection closed while a `Slow` answer was pending.
    cancelled: Arc<AtomicUsize>,
}

/// Counts a `Slow` answer dropped before it was given.
struct Pending(Option<Arc<AtomicUsize>>);

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(cancelled) = self.0.take() {
            cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl App {
    pub async fn start(script: impl IntoIterator<Item = Action>, fallback: Action) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = App {
            addr: listener.local_addr().unwrap(),
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            fallback,
            seen: Arc::default(),
            cancelled: Arc::default(),
        };
        let serving = app.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let app = serving.clone();
                let service = hyper::service::service_fn(move |r| app.clone().answer(r));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        app
    }

    async fn answer(
        self,
        request: Request<hyper::body::Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let line = format!("{} {}", request.method(), request.uri().path());
        let _ = request.into_body().collect().await;
        let n = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(line);
            seen.len()
        };
        let action = self.script.lock().unwrap().pop_front();
        let status = match action.unwrap_or(self.fallback) {
            Action::Status(status) => status,
            Action::Slow(status, after) => {
                let mut pending = Pending(Some(Arc::clone(&self.cancelled)));
                tokio::time::sleep(after).await;
                pending.0 = None;
                status
            }
            Action::Stall => std::future::pending().await,
        };
        let mut response = Response::new(Full::new(Bytes::from(format!("{{\"n\":{n}}}"))));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok(response)
    }

    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How many `Slow` answers were cancelled (their connection closed) before given.
    pub fn cancelled(&self) -> usize {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// Records what store's sidecar reports.
#[derive(Default)]
pub struct Recorder {
    pub requests: Mutex<Vec<RequestRecord>>,
    pub retries: Mutex<Vec<RetryReason>>,
    pub budget_exhausted: Mutex<u32>,
    pub timeouts: Mutex<Vec<TimeoutKind>>,
    pub ejections: Mutex<Vec<SocketAddr>>,
}

impl ProxyMetrics for Recorder {
    fn request(&self, record: &RequestRecord) {
        self.requests.lock().unwrap().push(*record);
    }
    fn retry(&self, _service: proxy::Label, reason: RetryReason) {
        self.retries.lock().unwrap().push(reason);
    }
    fn retry_budget_exhausted(&self, _service: proxy::Label) {
        *self.budget_exhausted.lock().unwrap() += 1;
    }
    fn timeout(&self, _service: proxy::Label, kind: TimeoutKind) {
        self.timeouts.lock().unwrap().push(kind);
    }
    fn ejection(&self, _service: proxy::Label, endpoint: SocketAddr) {
        self.ejections.lock().unwrap().push(endpoint);
    }
}

/// store's sidecar and one billing sidecar per app.
pub struct Replicas {
    pub store: ReadyInfo,
    pub billing: Vec<ReadyInfo>,
    pub metrics: Arc<Recorder>,
    shutdown: CancellationToken,
}

impl Drop for Replicas {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Replicas {
    pub async fn start(apps: &[SocketAddr], traffic: ServiceTraffic) -> Replicas {
        Replicas::start_services(vec![("billing", apps.to_vec(), traffic)]).await
    }

    /// Several services, each with one sidecar per app (all with billing's identity).
    pub async fn start_services(
        services: Vec<(&str, Vec<SocketAddr>, ServiceTraffic)>,
    ) -> Replicas {
        Replicas::start_traced(services, None).await
    }

    /// As [`Replicas::start_services`], store's sidecar tracing with `tracing`.
    pub async fn start_traced(
        services: Vec<(&str, Vec<SocketAddr>, ServiceTraffic)>,
        tracing: Option<proxy::TracingConfig>,
    ) -> Replicas {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
        let shutdown = CancellationToken::new();
        let mut billing = Vec::new();
        let mut routes = std::collections::BTreeMap::new();
        for (name, apps, traffic) in services {
            let mut endpoints = Vec::new();
            for app in apps {
                let source = ControlSource::Static {
                    svid: ca.svid(BILLING).unwrap(),
                    bundle: ca.bundle(),
                    snapshot: Snapshot::default(),
                };
                let probe = Arc::new(super::mesh::Probe::default());
                let sidecar = start_speaking("billing", source, app, &probe, |_| {}).await;
                let info = sidecar.ready_info().clone();
                endpoints.push(Endpoint {
                    addr: info.inbound,
                    identity: ca.id(BILLING).unwrap(),
                });
                billing.push(info);
                tokio::spawn(sidecar.serve(shutdown.clone().cancelled_owned()));
            }
            let route = ServiceRoute {
                name: name.to_owned(),
                endpoints,
                routes: Vec::new(),
                traffic,
            };
            routes.insert(name.to_owned(), route);
        }
        let source = ControlSource::Static {
            svid: ca.svid(STORE).unwrap(),
            bundle: ca.bundle(),
            snapshot: Snapshot {
                version: 1,
                services: routes,
                ..Snapshot::default()
            },
        };
        let metrics = Arc::new(Recorder::default());
        let mut config = proxy::ProxyConfig::new("store", source, closed_port().await);
        config.tracing = tracing;
        let as_metrics = Arc::clone(&metrics) as Arc<dyn ProxyMetrics>;
        let store = proxy::Proxy::start_with_metrics(config, as_metrics)
            .await
            .unwrap();
        let info = store.ready_info().clone();
        tokio::spawn(store.serve(shutdown.clone().cancelled_owned()));
        Replicas {
            store: info,
            billing,
            metrics,
            shutdown,
        }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let url = format!("http://billing{path}");
        let send = via_proxy(self.store.outbound, method, &url, headers, "{}");
        let (status, body) = tokio::time::timeout(super::HANG_GUARD, send)
            .await
            .expect("no answer")
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json)
    }
}

/// One rule for every request to billing.
pub fn every_request(rule: RouteRule, policy: TrafficPolicy) -> ServiceTraffic {
    ServiceTraffic {
        rules: vec![RouteRule {
            name: "HTTPRoute/default/billing rule 0".to_owned(),
            ..rule
        }],
        matches: vec![RuleMatch::default()],
        policy,
    }
}

#[allow(dead_code, reason = "used by the retry tests")]
pub fn retry(attempts: u32, codes: &[u16]) -> Option<RetryRule> {
    Some(RetryRule {
        attempts,
        codes: codes.to_vec(),
        grpc_codes: Vec::new(),
        backoff_ms: 1,
        max_backoff_ms: 10,
    })
}

#[tokio::test]
async fn a_request_timeout_is_a_504_with_the_usual_json_body() {
    let app = App::start([], Action::Stall).await;
    let rule = RouteRule {
        request_timeout_ms: Some(200),
        ..RouteRule::default()
    };
    let mesh = Replicas::start(&[app.addr], every_request(rule, TrafficPolicy::default())).await;
    let (status, body) = mesh.send("GET", "/slow", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error"], "upstream_timeout");
    assert_eq!(body["timeout"], "request");
    assert_eq!(body["service"], "billing");
    assert_eq!(body["side"], "peer");
    assert_eq!(body["retryable"], false);
    assert_eq!(
        *mesh.metrics.timeouts.lock().unwrap(),
        [TimeoutKind::Request]
    );
    assert_eq!(app.seen(), ["GET /slow"]);
}

#[tokio::test]
async fn without_a_route_a_stalled_app_is_not_timed_out_by_the_proxy() {
    let app = App::start([Action::Status(200)], Action::Stall).await;
    let mesh = Replicas::start(&[app.addr], ServiceTraffic::default()).await;
    assert_eq!(mesh.send("GET", "/fast", &[]).await.0, StatusCode::OK);
    let url = "http://billing/slow";
    let stalled = via_proxy(mesh.store.outbound, "GET", url, &[], "");
    let waited = tokio::time::timeout(std::time::Duration::from_millis(500), stalled).await;
    assert!(waited.is_err(), "no route: no timeout");
    assert!(mesh.metrics.timeouts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_stalled_endpoint_is_ejected_and_traffic_moves_to_the_other() {
    let stalled = App::start([], Action::Stall).await;
    let healthy = App::start([], Action::Status(200)).await;
    let rule = RouteRule {
        backend_request_timeout_ms: Some(200),
        ..RouteRule::default()
    };
    let mut policy = TrafficPolicy::default();
    policy.outlier_detection.consecutive_failures = 1;
    policy.outlier_detection.base_ejection_ms = 600_000;
    let mesh = Replicas::start(&[stalled.addr, healthy.addr], every_request(rule, policy)).await;
    // Until the stalled replica has been tried once (P2C picks it soon: its cost is lowest).
    for _ in 0..100 {
        if !stalled.seen().is_empty() {
            break;
        }
        mesh.send("GET", "/charges", &[]).await;
    }
    assert_eq!(
        stalled.seen().len(),
        1,
        "the stalled replica was never picked"
    );
    for _ in 0..20 {
        assert_eq!(mesh.send("GET", "/charges", &[]).await.0, StatusCode::OK);
    }
    assert_eq!(stalled.seen().len(), 1, "ejected: no more traffic");
    let ejected = mesh.metrics.ejections.lock().unwrap().clone();
    assert_eq!(ejected, [mesh.billing[0].inbound]);
}

/// Issue 11 review: a caller giving up says nothing about the endpoint. Callers that give
/// up, one after another, on a slow (not stalled) replica do not eject it; the route's
/// per-try timeout giving up on it is a failure that does.
#[tokio::test]
async fn callers_giving_up_on_a_slow_endpoint_do_not_eject_it_a_try_timeout_does() {
    let slow = App::start([], Action::Slow(200, Duration::from_secs(5))).await;
    let rule = RouteRule {
        backend_request_timeout_ms: Some(2_000),
        ..RouteRule::default()
    };
    let mut policy = TrafficPolicy::default();
    policy.outlier_detection.consecutive_failures = 1;
    policy.outlier_detection.base_ejection_ms = 600_000;
    // Two sidecars in front of the one slow app: two endpoints, so ejection may happen.
    let mesh = Replicas::start(&[slow.addr, slow.addr], every_request(rule, policy)).await;
    const CALLERS: usize = 5;
    for caller in 1..=CALLERS {
        let url = format!("http://billing/impatient/{caller}");
        let call = via_proxy(mesh.store.outbound, "GET", &url, &[], "");
        // The caller gives up once its request reached the app (dropping its connection).
        tokio::select! {
            answered = call => panic!("a slow answer came first: {answered:?}"),
            () = until(|| slow.seen().len() == caller) => {}
        }
        // Cancelled all the way to the app: store's sidecar has dropped its try by now.
        until(|| slow.cancelled() == caller).await;
    }
    assert!(
        mesh.metrics.ejections.lock().unwrap().is_empty(),
        "impatient callers ejected a healthy replica"
    );
    assert!(mesh.metrics.timeouts.lock().unwrap().is_empty());
    let (status, body) = mesh.send("GET", "/patient", &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["timeout"], "try");
    let ejected = mesh.metrics.ejections.lock().unwrap().clone();
    let endpoints: Vec<_> = mesh.billing.iter().map(|b| b.inbound).collect();
    assert!(
        ejected.len() == 1 && endpoints.contains(&ejected[0]),
        "the try timeout ejects: {ejected:?}"
    );
}

/// Waits (under the hang guard) until `done`.
async fn until(done: impl Fn() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(super::HANG_GUARD, wait)
        .await
        .expect("waited too long");
}

#[tokio::test]
async fn an_endpoint_at_its_request_cap_answers_a_retryable_503_until_one_ends() {
    let app = App::start([Action::Stall], Action::Status(200)).await;
    let mut policy = TrafficPolicy::default();
    policy.circuit_breaker.max_requests = 1;
    let mesh = Replicas::start(&[app.addr], every_request(RouteRule::default(), policy)).await;
    let outbound = mesh.store.outbound;
    let held =
        tokio::spawn(
            async move { via_proxy(outbound, "GET", "http://billing/held", &[], "").await },
        );
    while app.seen().is_empty() {
        tokio::task::yield_now().await;
    }
    let (status, body) = mesh.send("GET", "/charges", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "upstream_overloaded");
    assert_eq!(body["limit"], "requests");
    assert_eq!(body["retryable"], true);
    assert_eq!(
        app.seen(),
        ["GET /held"],
        "refused without reaching the app"
    );
    // The held caller goes away: its request closes, and the endpoint takes requests again.
    held.abort();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..200 {
        status = mesh.send("GET", "/charges", &[]).await.0;
        if status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "the closed request gave its place back"
    );
}

#[tokio::test]
async fn requests_inside_a_mesh_tunnel_are_counted_like_any_other() {
    let app = App::start([], Action::Status(200)).await;
    let mesh = Replicas::start(&[app.addr], ServiceTraffic::default()).await;
    let (stream, head) = super::mesh_tunnel::connect(mesh.store.outbound, "billing:80").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for path in ["/a", "/b"] {
        let request = Request::post(path)
            .header("host", "whatever")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let _ = response.into_body().collect().await;
    }
    let seen: Vec<_> = mesh
        .metrics
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.service.as_str(), r.method.as_str(), r.status.as_u16()))
        .collect();
    assert_eq!(
        seen,
        [
            ("billing", "CONNECT", 200),
            ("billing", "POST", 200),
            ("billing", "POST", 200)
        ]
    );
    assert_eq!(app.seen(), ["POST /a", "POST /b"]);
}

/// billing's one replica behind a rule retrying 503s up to three times.
async fn retrying(script: &[Action], fallback: Action) -> (App, Replicas) {
    let app = App::start(script.to_vec(), fallback).await;
    let rule = RouteRule {
        retry: retry(3, &[503]),
        ..RouteRule::default()
    };
    let mesh = Replicas::start(&[app.addr], every_request(rule, TrafficPolicy::default())).await;
    (app, mesh)
}

#[tokio::test]
async fn a_get_answered_503_is_retried_until_it_succeeds() {
    let (app, mesh) = retrying(
        &[Action::Status(503), Action::Status(503)],
        Action::Status(200),
    )
    .await;
    let (status, body) = mesh.send("GET", "/charges", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["n"], 3, "the third try answered");
    assert_eq!(app.seen().len(), 3);
    let retries = mesh.metrics.retries.lock().unwrap().clone();
    assert_eq!(retries, [RetryReason::Status, RetryReason::Status]);
}

#[tokio::test]
async fn a_post_without_idempotency_key_is_sent_once() {
    let (app, mesh) = retrying(&[Action::Status(503)], Action::Status(200)).await;
    let (status, _) = mesh.send("POST", "/charges", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.seen(), ["POST /charges"], "the app saw it once");
    assert!(mesh.metrics.retries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_post_with_idempotency_key_is_retried() {
    let (app, mesh) = retrying(&[Action::Status(503)], Action::Status(200)).await;
    let key = [("idempotency-key", "charge-7")];
    let (status, body) = mesh.send("POST", "/charges", &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.seen(), ["POST /charges", "POST /charges"]);
}

#[tokio::test]
async fn the_budget_caps_retries_under_a_total_failure() {
    let app = App::start([], Action::Status(503)).await;
    let rule = RouteRule {
        retry: retry(3, &[503]),
        ..RouteRule::default()
    };
    let mut policy = TrafficPolicy::default();
    policy.retry_budget.percent = 20;
    policy.retry_budget.interval_ms = 600_000;
    policy.retry_budget.min_retry_rate_count = 0;
    let mesh = Replicas::start(&[app.addr], every_request(rule, policy)).await;
    for _ in 0..50 {
        assert_eq!(
            mesh.send("GET", "/charges", &[]).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let retries = mesh.metrics.retries.lock().unwrap().len();
    // Unbudgeted, 50 requests × 3 retries = 150; the budget allows 20 % of 50.
    assert!(retries <= 10, "{retries} retries");
    assert_eq!(app.seen().len(), 50 + retries);
    let refused = *mesh.metrics.budget_exhausted.lock().unwrap();
    assert!(
        refused >= 40,
        "the metric shows the budget at work: {refused}"
    );
}

#[tokio::test]
async fn concurrent_first_requests_to_a_peer_dial_one_connection() {
    let mesh = super::mesh::Mesh::start().await;
    let outbound = mesh.store.outbound;
    let calls = (0..10).map(|i| async move {
        let url = format!("http://billing/first/{i}");
        via_proxy(outbound, "GET", &url, &[], "").await.unwrap().0
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let dialled = mesh.store_probe.outbound.lock().unwrap().len();
    assert_eq!(dialled, 1, "one dial for ten concurrent first requests");
}

/// Shutdown drains a tunnel like any connection: the request in flight inside it finishes,
/// then the tunnel closes (no further request is served on it).
#[tokio::test]
async fn shutdown_drains_a_mesh_tunnel_then_closes_it() {
    let mesh = super::mesh::Mesh::start().await;
    let (stream, head) = super::mesh_tunnel::connect(mesh.store.outbound, "billing:80").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let (tx, body) = super::channel_body();
    let request = Request::post("/echo-body").body(body).unwrap();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let response = tokio::time::timeout(super::HANG_GUARD, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    mesh.shutdown.cancel();
    tx.send(Bytes::from_static(b" last")).await.unwrap();
    drop(tx);
    let echoed = tokio::time::timeout(super::HANG_GUARD, response.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(echoed, "first last", "the request in flight finished");
    let closed = tokio::time::timeout(super::HANG_GUARD, connection).await;
    assert!(closed.is_ok(), "the drained tunnel was closed");
}
