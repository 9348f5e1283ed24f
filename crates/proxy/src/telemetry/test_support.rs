//! What the telemetry tests of both stacks share: a recorder, a route table with services of
//! one and of two identities, and a way to send one request through a layer.

use std::sync::Mutex;

use api::contract::{Endpoint, ServiceRoute, Snapshot};
use http::{Request, Response, StatusCode};
use identity::SpiffeId;
use tower::{Layer, Service, ServiceExt};

use super::AnsweredBy;
use crate::body::{ProxyBody, empty};
use crate::forward_error::ForwardError;
use crate::label::Label;
use crate::metrics::{ProxyMetrics, RequestRecord};
use crate::routes::Routes;
use crate::server::{PeerIdentity, Stack};

pub(crate) const TD: &str = "spiffe://meshwork.local/ns/default/sa";

pub(crate) fn id(sa: &str) -> SpiffeId {
    format!("{TD}/{sa}").parse().unwrap()
}

/// Records what the layer reports.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Vec<RequestRecord>>);

impl ProxyMetrics for Recorder {
    fn request(&self, record: &RequestRecord) {
        self.0.lock().unwrap().push(*record);
    }
}

/// `billing` (routes, one identity), `store` (no routes) and `pay` (two identities).
pub(crate) fn routes() -> Routes {
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
pub(crate) async fn through<L>(layer: L, request: Request<ProxyBody>, status: u16)
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

pub(crate) fn request(
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
pub(crate) fn seen(
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
