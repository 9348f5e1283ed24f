use std::sync::Mutex;

use api::contract::{Endpoint, ServiceRoute, Snapshot};
use http::StatusCode;
use tower::ServiceExt;

use super::*;
use crate::body::empty;
use crate::outbound::classify::{Classify, ClassifyLayer};
use crate::server::Stack;

const TD: &str = "spiffe://meshwork.local/ns/default/sa";

fn id(sa: &str) -> SpiffeId {
    format!("{TD}/{sa}").parse().unwrap()
}

/// Records what the layer reports.
#[derive(Default)]
struct Recorder(Mutex<Vec<RequestRecord>>);

impl ProxyMetrics for Recorder {
    fn request(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(*record);
    }
}

/// `billing` (routes, one identity), `store` (no routes) and `pay` (two identities).
fn routes() -> Routes {
    let service = |name: &str, sas: &[&str], routes: &[&str]| {
        let endpoints = sas
            .iter()
            .enumerate()
            .map(|(i, sa)| Endpoint {
                addr: ([127, 0, 0, 1], 1000 + u16::try_from(i).unwrap()).into(),
                identity: id(sa),
            })
            .collect();
        let routes = routes.iter().map(|r| r.parse().unwrap()).collect();
        let route = ServiceRoute {
            name: name.to_owned(),
            endpoints,
            routes,
            traffic: Default::default(),
        };
        (name.to_owned(), route)
    };
    Routes::new(&Snapshot {
        version: 1,
        services: [
            service("billing", &["billing"], &["/charges", "/charges/{id}"]),
            service("store", &["store"], &[]),
            service("pay", &["pay-a", "pay-b"], &["/pay"]),
        ]
        .into(),
        ..Snapshot::default()
    })
}

/// Sends `request` through `layer` around an inner service answering `status` (and
/// naming `pay-b` as the answering peer, which only counts where the peer is not known
/// up front).
async fn through<L>(layer: L, request: Request<ProxyBody>, status: u16)
where
    L: Layer<Stack>,
    L::Service: Service<Request<ProxyBody>, Response = Response<ProxyBody>, Error = ForwardError>,
{
    let inner = tower::service_fn(move |_: Request<ProxyBody>| {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        let peer = AnsweredBy(Label::intern(id("pay-b").as_str()));
        response.extensions_mut().insert(peer);
        std::future::ready(Ok::<_, ForwardError>(response))
    });
    let response = layer
        .layer(crate::server::box_stack(inner))
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), status);
}

/// The outbound telemetry layer below the classify layer it reads.
fn outbound(
    metrics: Arc<dyn ProxyMetrics>,
) -> impl Layer<Stack, Service = Classify<Telemetry<Stack>>> + Clone {
    tower::layer::util::Stack::new(
        TelemetryLayer::outbound(metrics),
        ClassifyLayer::new(routes()),
    )
}

fn request(
    method: &str,
    uri: &str,
    host: Option<&str>,
    caller: Option<&str>,
) -> Request<ProxyBody> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(host) = host {
        builder = builder.header(http::header::HOST, host);
    }
    let mut request = builder.body(empty()).unwrap();
    if let Some(caller) = caller {
        request.extensions_mut().insert(PeerIdentity(id(caller)));
    }
    request
}

/// (direction, service, route, method, status, peer) of every record.
fn seen(
    recorder: &Recorder,
) -> Vec<(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u16,
    &'static str,
)> {
    let records = recorder.0.lock().unwrap();
    records
        .iter()
        .map(|r| {
            (
                r.direction.as_str(),
                r.service.as_str(),
                r.route.as_str(),
                r.method.as_str(),
                r.status.as_u16(),
                r.peer.as_str(),
            )
        })
        .collect()
}

#[tokio::test]
async fn inbound_requests_carry_service_template_and_verified_caller() {
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
    let layer = TelemetryLayer::inbound(routes(), id("billing"), metrics);
    let store = format!("{TD}/store");
    for (method, uri, host, status) in [
        ("GET", "/charges/7", Some("billing"), 200),
        ("POST", "/%63harges?x=1", Some("BILLING:80"), 201),
        ("GET", "/nope/1", Some("billing"), 404),
        // A host that names nothing this workload backs: its (only) service.
        ("BREW", "/charges/8", Some("elsewhere"), 403),
        ("GET", "http://billing/charges/9", None, 502),
    ] {
        through(
            layer.clone(),
            request(method, uri, host, Some("store")),
            status,
        )
        .await;
    }
    assert_eq!(
        seen(&recorder),
        [
            (
                "inbound",
                "billing",
                "/charges/{id}",
                "GET",
                200,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "/charges",
                "POST",
                201,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "[unmatched]",
                "GET",
                404,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "/charges/{id}",
                "OTHER",
                403,
                store.as_str()
            ),
            (
                "inbound",
                "billing",
                "/charges/{id}",
                "GET",
                502,
                store.as_str()
            ),
        ]
    );
}

#[tokio::test]
async fn inbound_to_a_workload_backing_nothing_is_service_none() {
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
    let layer = TelemetryLayer::inbound(routes(), id("reporting"), metrics);
    through(
        layer,
        request("GET", "/charges/7", Some("billing"), None),
        200,
    )
    .await;
    assert_eq!(
        seen(&recorder),
        [("inbound", "[none]", "[unmatched]", "GET", 200, "[none]")]
    );
}

#[tokio::test]
async fn outbound_requests_carry_the_target_identity_and_never_external_hosts() {
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
    let layer = outbound(metrics);
    for (method, uri, host, status) in [
        ("POST", "http://billing/charges", None, 201),
        ("GET", "/charges/3", Some("billing"), 200),
        ("POST", "http://pay/pay", None, 200),
        ("GET", "http://store/x", None, 200),
        ("GET", "http://example.com/charges/7", None, 403),
        ("CONNECT", "billing:443", None, 200),
        ("GET", "/no-host", None, 400),
    ] {
        through(layer.clone(), request(method, uri, host, None), status).await;
    }
    let (billing, pay_b, store) = (
        format!("{TD}/billing"),
        format!("{TD}/pay-b"),
        format!("{TD}/store"),
    );
    assert_eq!(
        seen(&recorder),
        [
            (
                "outbound",
                "billing",
                "/charges",
                "POST",
                201,
                billing.as_str()
            ),
            (
                "outbound",
                "billing",
                "/charges/{id}",
                "GET",
                200,
                billing.as_str()
            ),
            // Two identities behind `pay`: the one that answered.
            ("outbound", "pay", "/pay", "POST", 200, pay_b.as_str()),
            (
                "outbound",
                "store",
                "[unmatched]",
                "GET",
                200,
                store.as_str()
            ),
            ("outbound", "[egress]", "[unmatched]", "GET", 403, "[none]"),
            (
                "outbound",
                "billing",
                "[unmatched]",
                "CONNECT",
                200,
                billing.as_str()
            ),
            ("outbound", "[none]", "[unmatched]", "GET", 400, "[none]"),
        ]
    );
}

#[tokio::test]
async fn a_forwarding_error_counts_with_its_status() {
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::clone(&recorder) as Arc<dyn ProxyMetrics>;
    let layer = outbound(metrics);
    let failing = tower::service_fn(|_: Request<ProxyBody>| {
        std::future::ready(Err::<Response<ProxyBody>, _>(
            ForwardError::PeerUnavailable {
                service: "pay".to_owned(),
                reason: "no endpoint answered".to_owned(),
            },
        ))
    });
    let request = request("GET", "http://pay/pay", None, None);
    let failing = crate::server::box_stack(failing);
    assert!(layer.layer(failing).oneshot(request).await.is_err());
    assert_eq!(
        seen(&recorder),
        [("outbound", "pay", "/pay", "GET", 502, "[none]")]
    );
}

#[test]
fn hosts_lose_their_port() {
    assert_eq!(without_port("billing:80"), "billing");
    assert_eq!(without_port("billing"), "billing");
    assert_eq!(without_port("[::1]:8080"), "[::1]");
    assert_eq!(without_port("[::1"), "[::1");
}
