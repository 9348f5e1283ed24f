//! Distributed tracing through a real sidecar pair, checked against a real OTLP collector
//! (`rotel`, from PyPI; see `testkit::otlp`): `store`'s sidecar exports over OTLP/gRPC,
//! `billing`'s over OTLP/HTTP. Context arrives as W3C, as B3 (multi-header) or malformed;
//! the spans must share the caller's trace, link client → server, carry the route template
//! and both SPIFFE IDs, and a denial must be an error span with the 403's decision id.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::contract::{ServiceRoute, Snapshot};
use http::StatusCode;
use identity::SpiffeId;
use proxy::trace_context::Sampler;
use proxy::{
    ControlSource, OtlpExport, OtlpProtocol, Propagation, Proxy, ProxyConfig, ReadyInfo,
    TracingConfig,
};
use serde_json::{Value, json};
use testkit::otlp::{OtlpReceiver, ReceivedSpan, SpanKind, StatusCode as SpanStatus};
use testkit::{EchoServer, TestCa, harness::via_proxy};
use tokio_util::sync::CancellationToken;

use crate::mesh::{BILLING, STORE, closed_port};

const TD: &str = "spiffe://meshwork.local";
/// Long enough for a batch (1 s) and rotel's own batch (200 ms); the wait ends as soon as
/// the spans are there.
const EXPORTED: Duration = Duration::from_secs(20);

/// `billing` at `addr` with its templates, and a policy letting only store `GET /charges/…`.
fn snapshot(addr: SocketAddr, identity: SpiffeId) -> Snapshot {
    let policies: policy::PolicySet = serde_json::from_value(json!({
        "authorization": {"default/billing-charges": {
            "targetService": "billing", "action": "ALLOW",
            "rules": [{"from": [{"spiffeId": format!("{TD}{STORE}")}],
                       "to": [{"methods": ["GET"], "paths": [{"template": "/charges/{id}"}]}]}]}}
    }))
    .unwrap();
    let route = ServiceRoute {
        name: "billing".to_owned(),
        endpoints: vec![api::contract::Endpoint { addr, identity }],
        routes: vec!["/charges/{id}".parse().unwrap()],
        traffic: Default::default(),
    };
    Snapshot {
        version: 1,
        services: [("billing".to_owned(), route)].into(),
        policy_hash: policies.hash().to_string(),
        policies,
    }
}

fn tracing(endpoint: String, protocol: OtlpProtocol, workload: &str) -> TracingConfig {
    TracingConfig {
        sampler: Sampler::always(),
        propagation: Propagation::AsReceived,
        otlp: OtlpExport::new(endpoint, protocol, workload),
    }
}

struct Pair {
    store: ReadyInfo,
    shutdown: CancellationToken,
    served: Vec<tokio::task::JoinHandle<()>>,
    _app: EchoServer,
}

impl Pair {
    async fn start(receiver: &OtlpReceiver) -> Pair {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
        let app = EchoServer::start().await.unwrap();
        let billing_id = ca.id(BILLING).unwrap();
        let start = |sa: &str, workload: &str, app: SocketAddr, snapshot: Snapshot| {
            let control = ControlSource::Static {
                svid: ca.svid(sa).unwrap(),
                bundle: ca.bundle(),
                snapshot,
            };
            let mut config = ProxyConfig::new(workload, control, app);
            config.admin_listen = Some(([127, 0, 0, 1], 0).into());
            config
        };
        let mut billing = start(
            BILLING,
            "billing",
            app.addr(),
            snapshot(closed_port().await, billing_id.clone()),
        );
        billing.tracing = Some(tracing(
            receiver.http_endpoint(),
            OtlpProtocol::HttpProtobuf,
            "billing",
        ));
        let billing = Proxy::start(billing).await.unwrap();
        let mut store = start(
            STORE,
            "store",
            closed_port().await,
            snapshot(billing.ready_info().inbound, billing_id),
        );
        store.tracing = Some(tracing(
            receiver.grpc_endpoint(),
            OtlpProtocol::Grpc,
            "store",
        ));
        let store = Proxy::start(store).await.unwrap();
        let info = store.ready_info().clone();
        let shutdown = CancellationToken::new();
        let served = vec![
            tokio::spawn(billing.serve(shutdown.clone().cancelled_owned())),
            tokio::spawn(store.serve(shutdown.clone().cancelled_owned())),
        ];
        Pair {
            store: info,
            shutdown,
            served,
            _app: app,
        }
    }

    /// `GET url` from store's app with `headers`; the status and the echo's JSON (or the
    /// proxy's).
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let url = format!("http://billing{path}");
        let (status, body) = via_proxy(self.store.outbound, "GET", &url, headers, "")
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// Stops both sidecars (their last spans are flushed on the way out).
    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.served {
            task.await.unwrap();
        }
    }
}

/// The first value of request header `name` as the echo app received it.
fn received<'a>(echo: &'a Value, name: &str) -> &'a str {
    echo["headers"][name][0]
        .as_str()
        .unwrap_or_else(|| panic!("app got no {name}: {echo}"))
}

/// Waits until the receiver holds `count` spans of `trace_id`.
async fn trace(receiver: &Arc<OtlpReceiver>, trace_id: &str, count: usize) -> Vec<ReceivedSpan> {
    let (receiver, id) = (Arc::clone(receiver), trace_id.to_owned());
    let spans = tokio::task::spawn_blocking(move || {
        let of_trace = |spans: &[ReceivedSpan]| spans.iter().filter(|s| s.trace_id == id).count();
        receiver.wait_for_spans(|spans| of_trace(spans) >= count, EXPORTED)
    })
    .await
    .unwrap()
    .unwrap_or_else(|error| panic!("spans of trace {trace_id}: {error}"));
    spans
        .into_iter()
        .filter(|s| s.trace_id == trace_id)
        .collect()
}

fn kind(spans: &[ReceivedSpan], kind: SpanKind) -> &ReceivedSpan {
    let mut of_kind = spans.iter().filter(|s| s.kind == kind);
    let span = of_kind
        .next()
        .unwrap_or_else(|| panic!("no {kind:?} span: {spans:#?}"));
    assert!(of_kind.next().is_none(), "one {kind:?} span: {spans:#?}");
    span
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w3c_and_b3_callers_continue_their_trace_and_spans_link_client_to_server() {
    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    let receiver = Arc::new(receiver);
    let pair = Pair::start(&receiver).await;

    // W3C: the app's own span 00f067aa0ba902b7 is the client span's parent.
    let w3c_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{w3c_trace}-00f067aa0ba902b7-01");
    let (status, echo) = pair
        .get(
            "/charges/7",
            &[("traceparent", &traceparent), ("tracestate", "k=v")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    let seen = received(&echo, "traceparent");
    assert!(seen.starts_with(&format!("00-{w3c_trace}-")), "{seen}");
    assert_eq!(received(&echo, "tracestate"), "k=v");
    assert!(echo["headers"].get("x-b3-traceid").is_none(), "{echo}");

    let spans = trace(&receiver, w3c_trace, 2).await;
    let client = kind(&spans, SpanKind::Client);
    let server = kind(&spans, SpanKind::Server);
    assert_eq!(client.parent_span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(
        server.parent_span_id.as_deref(),
        Some(client.span_id.as_str())
    );
    // The app sees the server span as its parent: its own calls would hang below it.
    assert_eq!(seen, format!("00-{w3c_trace}-{}-01", server.span_id));
    for span in [client, server] {
        assert_eq!(span.name, "GET /charges/{id}", "{span:#?}");
        assert_eq!(span.attr_str("http.route"), Some("/charges/{id}"));
        assert_eq!(span.attr_i64("http.response.status_code"), Some(200));
        assert_eq!(
            span.attr_str("meshwork.caller.spiffe_id"),
            Some(&*format!("{TD}{STORE}"))
        );
        assert_eq!(
            span.attr_str("meshwork.callee.spiffe_id"),
            Some(&*format!("{TD}{BILLING}"))
        );
    }
    assert_eq!(client.service_name(), Some("store"));
    assert_eq!(server.service_name(), Some("billing"));
    assert_eq!(client.attr_str("server.address"), Some("billing"));
    assert_eq!(server.attr_str("network.peer.address"), Some("127.0.0.1"));
    assert_eq!(server.attr_str("meshwork.authz.decision"), Some("allow"));
    // The caller's tracestate goes on, on the wire and in the exported spans.
    assert_eq!(client.trace_state.as_deref(), Some("k=v"));
    assert_eq!(
        client.attr_str("url.full"),
        Some("http://billing:80/charges/7")
    );
    assert_eq!(server.attr_str("url.scheme"), Some("http"));

    // B3 multi-header in, B3 multi-header out (as received), same trace.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let (status, echo) = pair
        .get(
            "/charges/8",
            &[
                ("x-b3-traceid", b3_trace),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{echo}");
    assert_eq!(received(&echo, "x-b3-traceid"), b3_trace);
    assert!(echo["headers"].get("traceparent").is_none(), "{echo}");
    let spans = trace(&receiver, b3_trace, 2).await;
    let client = kind(&spans, SpanKind::Client);
    let server = kind(&spans, SpanKind::Server);
    assert_eq!(client.parent_span_id.as_deref(), Some("e457b5a2e4d86bd1"));
    assert_eq!(
        server.parent_span_id.as_deref(),
        Some(client.span_id.as_str())
    );
    assert_eq!(received(&echo, "x-b3-spanid"), server.span_id);
    assert_eq!(received(&echo, "x-b3-parentspanid"), client.span_id);

    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_traceparent_starts_a_new_trace_and_a_denial_is_an_error_span() {
    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    let receiver = Arc::new(receiver);
    let pair = Pair::start(&receiver).await;

    let bad = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
    let (status, echo) = pair.get("/charges/9", &[("traceparent", bad)]).await;
    assert_eq!(status, StatusCode::OK, "never fails the request: {echo}");
    let seen = received(&echo, "traceparent");
    assert!(!seen.contains("4bf92f3577b34da6a3ce929d0e0e4736"), "{seen}");
    let new_trace = &seen[3..35];
    let spans = trace(&receiver, new_trace, 2).await;
    assert_eq!(
        kind(&spans, SpanKind::Client).parent_span_id,
        None,
        "a root span"
    );

    // Not allowed: POST. The 403's decision id is on billing's server span.
    let url = "http://billing/charges/1";
    let headers = [(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )];
    let (status, body) = via_proxy(pair.store.outbound, "POST", url, &headers, "")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let decision_id = body["decision_id"].as_str().unwrap();
    let spans = trace(&receiver, "0af7651916cd43dd8448eb211c80319c", 2).await;
    let server = kind(&spans, SpanKind::Server);
    assert_eq!(server.status_code, SpanStatus::Error, "{server:#?}");
    assert_eq!(server.attr_str("meshwork.authz.decision"), Some("deny"));
    assert_eq!(
        server.attr_str("meshwork.authz.decision_id"),
        Some(decision_id)
    );
    // The span says what the 403 says: here the ALLOW policy's default deny (no policy, no rule).
    assert_eq!(
        server.attr_str("meshwork.authz.policy"),
        body["policy"].as_str(),
        "{body}"
    );
    let message = server.status_message.as_deref().unwrap_or_default();
    assert!(message.starts_with("denied"), "{server:#?}");
    let client = kind(&spans, SpanKind::Client);
    assert_eq!(
        client.status_code,
        SpanStatus::Error,
        "a 403 fails the client span"
    );
    assert_eq!(client.attr_i64("http.response.status_code"), Some(403));

    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_try_timeouts_are_events_on_the_client_span() {
    use crate::resilience::{Action, App, Replicas, every_request, retry};
    use api::contract::traffic::{RouteRule, TrafficPolicy};

    let Some(receiver) = OtlpReceiver::start_or_skip() else {
        return;
    };
    let receiver = Arc::new(receiver);
    // A 503, then a stall past the 300 ms per-try timeout, then the answer.
    let app = App::start([Action::Status(503), Action::Stall], Action::Status(200)).await;
    let rule = RouteRule {
        backend_request_timeout_ms: Some(300),
        retry: retry(2, &[503]),
        ..RouteRule::default()
    };
    let traffic = every_request(rule, TrafficPolicy::default());
    let tracing = tracing(receiver.grpc_endpoint(), OtlpProtocol::Grpc, "store");
    let mesh =
        Replicas::start_traced(vec![("billing", vec![app.addr], traffic)], Some(tracing)).await;
    let trace_id = "1bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let (status, body) = mesh
        .send("GET", "/charges", &[("traceparent", &traceparent)])
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let spans = trace(&receiver, trace_id, 1).await;
    let client = kind(&spans, SpanKind::Client);
    let events: Vec<(&str, Option<&str>)> = client
        .events
        .iter()
        .map(|e| {
            let detail = ["meshwork.retry.reason", "meshwork.timeout.kind"]
                .iter()
                .find_map(|key| e.attributes.get(*key).and_then(|v| v.as_str()));
            (e.name.as_str(), detail)
        })
        .collect();
    assert_eq!(
        events,
        [
            ("retry", Some("status")),
            ("timeout", Some("try")),
            ("retry", Some("timeout")),
        ],
        "{client:#?}"
    );
    assert_eq!(client.attr_i64("http.response.status_code"), Some(200));
    assert_eq!(client.status_code, SpanStatus::Unset);
}
