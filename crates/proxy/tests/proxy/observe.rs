//! The admin's observation endpoints (issue 13) on a real `store` → `billing` pair (mTLS,
//! h2), both with an admin listener; `billing` declares `/charges/{id}` and lets only
//! store `GET /charges/{id}` in, so a `POST` and an unmatched path are denied (and a
//! `DELETE` by name).
//!
//! `/stats` against `/metrics`, `/decisions` by route template, `/tap` read line by line
//! by a real HTTP client (filters, the denial's decision id, header values only when
//! listed), and a tapper that never reads while thousands of requests go through (pinning
//! only capped header values). Forged denials and refusals: `observe_guards`.

use std::net::SocketAddr;
use std::sync::Arc;

use api::contract::observe::{Decision, DecisionRecord, Direction, Stats, TapEvent};
use api::contract::{ServiceRoute, Snapshot};
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use identity::SpiffeId;
use proxy::trace_context::Sampler;
use proxy::{
    ControlSource, OtlpExport, OtlpProtocol, Propagation, Proxy, ProxyConfig, ReadyInfo,
    TracingConfig,
};
use serde_json::{Value, json};
use testkit::harness::{send_http1, via_proxy};
use testkit::{EchoServer, TestCa};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use crate::HANG_GUARD;
use crate::mesh::{BILLING, STORE, closed_port};

const TD: &str = "spiffe://meshwork.local";

/// `billing` at `addr`, with its template, a policy letting only store `GET` it and one
/// refusing `DELETE` by name (rule 1).
fn snapshot(addr: SocketAddr, identity: SpiffeId) -> Snapshot {
    let policies: policy::PolicySet = serde_json::from_value(json!({
        "authorization": {"default/billing-charges": {
            "targetService": "billing", "action": "ALLOW",
            "rules": [{"from": [{"spiffeId": format!("{TD}{STORE}")}],
                       "to": [{"methods": ["GET"], "paths": [{"template": "/charges/{id}"}]}]}]},
        "default/billing-no-delete": {
            "targetService": "billing", "action": "DENY",
            "rules": [{"to": [{"methods": ["PUT"]}]}, {"to": [{"methods": ["DELETE"]}]}]}}
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

pub(crate) struct Pair {
    pub(crate) store: ReadyInfo,
    pub(crate) billing: ReadyInfo,
    shutdown: CancellationToken,
    served: Vec<tokio::task::JoinHandle<()>>,
    _app: crate::observe_guards::App,
}

impl Pair {
    pub(crate) async fn start() -> Pair {
        Pair::start_traced(false).await
    }

    /// With `traced`, both sidecars trace every request (exporting to a closed port: the
    /// export fails and is counted; the trace ids are what matters here).
    async fn start_traced(traced: bool) -> Pair {
        let echo = EchoServer::start().await.unwrap();
        Pair::start_with(traced, echo.addr(), crate::observe_guards::App::Echo(echo)).await
    }

    pub(crate) async fn start_with(
        traced: bool,
        app_addr: SocketAddr,
        app: crate::observe_guards::App,
    ) -> Pair {
        let collector = format!("http://{}/v1/traces", closed_port().await);
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
        let billing_id = ca.id(BILLING).unwrap();
        let start = |sa: &str, workload: &str, app: SocketAddr, snapshot: Snapshot| {
            let control = ControlSource::Static {
                svid: ca.svid(sa).unwrap(),
                bundle: ca.bundle(),
                snapshot,
            };
            let mut config = ProxyConfig::new(workload, control, app);
            config.admin_listen = Some(([127, 0, 0, 1], 0).into());
            config.tracing = traced.then(|| TracingConfig {
                sampler: Sampler::always(),
                propagation: Propagation::AsReceived,
                otlp: OtlpExport::new(collector.clone(), OtlpProtocol::HttpProtobuf, workload),
            });
            Proxy::start(config)
        };
        let billing_snapshot = snapshot(closed_port().await, billing_id.clone());
        let billing = start(BILLING, "billing", app_addr, billing_snapshot)
            .await
            .unwrap();
        let store_snapshot = snapshot(billing.ready_info().inbound, billing_id);
        let store = start(STORE, "store", closed_port().await, store_snapshot)
            .await
            .unwrap();
        let (store_info, billing_info) = (store.ready_info().clone(), billing.ready_info().clone());
        let shutdown = CancellationToken::new();
        let served = vec![
            tokio::spawn(billing.serve(shutdown.clone().cancelled_owned())),
            tokio::spawn(store.serve(shutdown.clone().cancelled_owned())),
        ];
        Pair {
            store: store_info,
            billing: billing_info,
            shutdown,
            served,
            _app: app,
        }
    }

    /// `method http://billing{path}` from store's app: the whole response head.
    pub(crate) async fn call_head(&self, method: &str, path: &str) -> hyper::Response<Incoming> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("http://billing{path}"))
            .header(http::header::HOST, "billing")
            .body(Empty::<Bytes>::new())
            .unwrap();
        tokio::time::timeout(HANG_GUARD, send_http1(self.store.outbound, request))
            .await
            .unwrap()
            .unwrap()
    }

    /// `method http://billing{path}` from store's app: the status and the body's JSON.
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let url = format!("http://billing{path}");
        let (status, body) = via_proxy(self.store.outbound, method, &url, headers, "")
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        for task in self.served {
            tokio::time::timeout(HANG_GUARD, task)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

/// `GET path` on the admin listener of `info`: the response, head only.
pub(crate) async fn admin(info: &ReadyInfo, path: &str) -> hyper::Response<Incoming> {
    let addr = info.admin.expect("admin listener");
    admin_as(info, path, &addr.to_string()).await
}

/// `GET path` on the admin listener of `info` with `Host: host`.
pub(crate) async fn admin_as(
    info: &ReadyInfo,
    path: &str,
    host: &str,
) -> hyper::Response<Incoming> {
    let addr = info.admin.expect("admin listener");
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    tokio::time::timeout(HANG_GUARD, send_http1(addr, request))
        .await
        .unwrap()
        .unwrap()
}

pub(crate) async fn admin_text(info: &ReadyInfo, path: &str) -> String {
    let response = admin(info, path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the sample line `series` (name and labels exactly).
pub(crate) fn value(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A `/tap` stream read line by line.
pub(crate) struct Tap {
    body: Incoming,
    buffer: BytesMut,
}

impl Tap {
    pub(crate) async fn open(info: &ReadyInfo, query: &str) -> Tap {
        let response = admin(info, &format!("/tap?{query}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/x-ndjson");
        Tap {
            body: response.into_body(),
            buffer: BytesMut::new(),
        }
    }

    /// The next line; `None` when the stream ended.
    pub(crate) async fn next(&mut self) -> Option<TapEvent> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                return Some(serde_json::from_slice(&line[..end]).unwrap());
            }
            let frame = tokio::time::timeout(HANG_GUARD, self.body.frame())
                .await
                .expect("a tap line");
            match frame {
                Some(frame) => {
                    if let Ok(data) = frame.unwrap().into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                None => return None,
            }
        }
    }
}

#[tokio::test]
async fn stats_agree_with_metrics_and_decisions_count_by_route_template() {
    let pair = Pair::start().await;
    for path in ["/charges/7", "/charges/8", "/charges/9"] {
        assert_eq!(pair.call("GET", path, &[]).await.0, StatusCode::OK);
    }
    assert_eq!(
        pair.call("POST", "/charges/7", &[]).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        pair.call("GET", "/nope/1", &[]).await.0,
        StatusCode::FORBIDDEN
    );

    for (info, direction) in [(&pair.billing, "inbound"), (&pair.store, "outbound")] {
        let stats: Stats =
            serde_json::from_str(&admin_text(info, "/stats?window=600").await).unwrap();
        let metrics = admin_text(info, "/metrics").await;
        assert!(
            stats.window_secs > 0.0 && stats.window_secs <= 600.0,
            "{stats:?}"
        );
        assert_eq!(stats.bucket_bounds_secs.len(), 14);
        let mut total = 0;
        for row in &stats.rows {
            let series = format!(
                "meshwork_requests_total{{direction=\"{direction}\",service=\"{}\",route=\"{}\",method=\"{}\",status_code=\"{}\",peer=\"{}\"}}",
                row.service, row.route, row.method, row.status_code, row.peer
            );
            assert_eq!(
                value(&metrics, &series),
                Some(row.requests),
                "{series}\n{metrics}"
            );
            assert_eq!(row.buckets.len(), 15);
            assert_eq!(row.buckets.iter().sum::<u64>(), row.requests);
            total += row.requests;
        }
        let exposed = metrics
            .lines()
            .filter(|l| l.starts_with("meshwork_requests_total{"))
            .count();
        assert_eq!(stats.rows.len(), exposed, "every series a row:\n{metrics}");
        assert_eq!(total, 5, "{stats:?}");
    }

    let decisions: DecisionRecord =
        serde_json::from_str(&admin_text(&pair.billing, "/decisions?window=600").await).unwrap();
    assert_eq!(decisions.workload, "billing");
    let rows: Vec<_> = decisions
        .rows
        .iter()
        .map(|r| (r.method.as_str(), r.route.as_str(), r.decision, r.count))
        .collect();
    assert_eq!(
        rows,
        [
            ("GET", "/charges/{id}", Decision::Allow, 3),
            ("GET", "[unmatched]", Decision::Deny, 1),
            ("POST", "/charges/{id}", Decision::Deny, 1),
        ]
    );
    let caller = format!("{TD}{STORE}");
    assert!(
        decisions
            .rows
            .iter()
            .all(|r| r.caller == caller && r.service == "billing")
    );
    let store_side: DecisionRecord =
        serde_json::from_str(&admin_text(&pair.store, "/decisions").await).unwrap();
    assert!(
        store_side.rows.is_empty(),
        "inbound decisions only: {store_side:?}"
    );

    let bad = admin(&pair.billing, "/stats?window=ten").await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    pair.stop().await;
}

#[tokio::test]
async fn tap_streams_finished_requests_and_denied_only_shows_denials() {
    let pair = Pair::start().await;
    let mut denials = Tap::open(&pair.billing, "denied=true&header=x-request-id").await;
    let mut everything = Tap::open(&pair.store, "direction=outbound&limit=2").await;

    let (status, _) = pair
        .call("GET", "/charges/7", &[("x-request-id", "r-1")])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = pair
        .call("POST", "/charges/7", &[("x-request-id", "r-2")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let decision_id = body["decision_id"].as_str().unwrap();

    let denial = denials.next().await.unwrap();
    assert_eq!(denial.direction, Direction::Inbound);
    assert_eq!(denial.decision, Decision::Deny);
    assert_eq!(denial.decision_id.as_deref(), Some(decision_id));
    assert_eq!(
        (denial.method.as_str(), denial.route.as_str()),
        ("POST", "/charges/{id}")
    );
    assert_eq!(denial.status_code, 403);
    assert_eq!(denial.caller, format!("{TD}{STORE}"));
    assert_eq!(denial.callee, Some(format!("{TD}{BILLING}")));
    assert_eq!(
        denial.headers,
        [("x-request-id".to_owned(), "r-2".to_owned())]
    );
    assert_eq!(denial.trace_id, None, "tracing is off");

    let allowed = everything.next().await.unwrap();
    assert_eq!(
        (allowed.direction, allowed.status_code),
        (Direction::Outbound, 200)
    );
    assert_eq!(allowed.decision, Decision::Allow);
    assert_eq!(allowed.route, "/charges/{id}");
    assert_eq!(allowed.caller, format!("{TD}{STORE}"));
    assert_eq!(allowed.callee, Some(format!("{TD}{BILLING}")));
    assert!(allowed.headers.is_empty(), "no header listed: {allowed:?}");
    assert!(allowed.latency_ms > 0.0);
    let refused = everything.next().await.unwrap();
    assert_eq!(
        refused.decision_id.as_deref(),
        Some(decision_id),
        "the peer's denial"
    );
    assert!(everything.next().await.is_none(), "limit=2 ends the stream");

    pair.stop().await;
}

#[tokio::test]
async fn with_tracing_on_tap_events_carry_the_trace_id() {
    let pair = Pair::start_traced(true).await;
    let mut inbound = Tap::open(&pair.billing, "limit=1").await;
    let mut outbound = Tap::open(&pair.store, "limit=1").await;
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traceparent = format!("00-{trace_id}-b7ad6b7169203331-01");
    let (status, _) = pair
        .call("GET", "/charges/7", &[("traceparent", &traceparent)])
        .await;
    assert_eq!(status, StatusCode::OK);
    for tap in [&mut outbound, &mut inbound] {
        let event = tap.next().await.unwrap();
        assert_eq!(event.trace_id.as_deref(), Some(trace_id), "{event:?}");
    }
    pair.stop().await;
}

#[tokio::test]
async fn a_tapper_that_never_reads_fails_no_request_and_pins_only_capped_header_values() {
    const REQUESTS: usize = 5_000;
    const CONNECTIONS: usize = 4;
    // 16 values of 512 bytes: an event keeps all 16 (the most it keeps), each cut to 259.
    const PADS: usize = 16;
    let pad = http::HeaderValue::from_str(&"0123456789abcdef".repeat(32)).unwrap();
    let pair = Pair::start().await;
    let admin_addr = pair.store.admin.unwrap();
    // A client that asks for the tap and never reads, listing a header every request
    // carries 16 times: 20 MB of lines (4 KB each, as cut), far beyond what the socket buffers (at most 4 MB here) and
    // hyper's write buffer can absorb, so the stream stops being polled and falls behind.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(admin_addr).await.unwrap();
    stalled
        .write_all(b"GET /tap?header=x-pad HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The tap is open once /metrics counts it (a hang guard bounds the wait).
    tokio::time::timeout(HANG_GUARD, async {
        while value(&admin_text(&pair.store, "/metrics").await, "meshwork_taps") != Some(1) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();

    let outbound = pair.store.outbound;
    let senders = (0..CONNECTIONS).map(|c| {
        let pad = pad.clone();
        tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(outbound).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let mut ok = 0;
            for i in 0..REQUESTS / CONNECTIONS {
                let mut request = http::Request::get(format!("http://billing/charges/{c}-{i}"))
                    .header(http::header::HOST, "billing")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                for _ in 0..PADS {
                    request.headers_mut().append("x-pad", pad.clone());
                }
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                response.into_body().collect().await.unwrap();
                ok += usize::from(status == StatusCode::OK);
            }
            ok
        })
    });
    let mut ok = 0;
    for sender in senders.collect::<Vec<_>>() {
        ok += tokio::time::timeout(HANG_GUARD * 4, sender)
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        ok, REQUESTS,
        "every request succeeded with a stalled tapper attached"
    );

    let metrics = admin_text(&pair.store, "/metrics").await;
    let published = value(&metrics, "meshwork_tap_events_total").unwrap();
    let lost = value(&metrics, "meshwork_tap_events_lost_total").unwrap();
    let queued = value(&metrics, "meshwork_tap_queued_events").unwrap();
    let held = value(&metrics, "meshwork_tap_queued_header_bytes").unwrap();
    assert!(published >= REQUESTS as u64, "{metrics}");
    assert!(lost > 0, "the stalled tapper lost events: {metrics}");
    // What the stalled tapper pins: every queued event holds the 16 pads, each cut to 256
    // bytes and a 3-byte `…` (proxy::tap's caps; uncut, they would hold twice as much).
    let cut: u64 = 256 + 3;
    assert!(queued > 0 && held > 0, "{metrics}");
    assert!(held <= queued * PADS as u64 * cut, "{metrics}");
    assert_eq!(
        value(&metrics, "meshwork_taps"),
        Some(1),
        "still attached: {metrics}"
    );
    drop(stalled);
    pair.stop().await;
}
