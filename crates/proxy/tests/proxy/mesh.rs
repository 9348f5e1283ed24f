//! The fixture: a test CA, an echo app behind `billing`'s sidecar, and `store`'s
//! sidecar routing the mesh service `billing` (plus `ghost`, whose only endpoint is a
//! closed port). Both proxies run in-process with `ControlSource::Static`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use api::contract::{Endpoint, ServiceRoute, Snapshot};
use identity::SpiffeId;
use proxy::{
    AppProtocol, AppReadiness, ControlSource, PeerProtocol, Protocol, Proxy, ProxyConfig,
    ProxyMetrics, ReadyInfo,
};
use testkit::{EchoServer, TestCa};
use tokio_util::sync::CancellationToken;

pub const BILLING: &str = "/ns/default/sa/billing";
pub const STORE: &str = "/ns/default/sa/store";

/// Records connection events (the metrics hook doubles as a test probe).
#[derive(Default)]
pub struct Probe {
    pub inbound: Mutex<Vec<(SpiffeId, Protocol)>>,
    pub outbound: Mutex<Vec<(SpiffeId, SocketAddr, Protocol)>>,
}

impl ProxyMetrics for Probe {
    fn inbound_connection(&self, peer: &SpiffeId, protocol: Protocol) {
        self.inbound.lock().unwrap().push((peer.clone(), protocol));
    }

    fn outbound_connection(&self, peer: &SpiffeId, addr: SocketAddr, protocol: Protocol) {
        self.outbound
            .lock()
            .unwrap()
            .push((peer.clone(), addr, protocol));
    }
}

pub struct Mesh {
    pub ca: Arc<TestCa>,
    /// The echo app, unless the test brought its own.
    pub _app: Option<EchoServer>,
    pub billing: ReadyInfo,
    pub store: ReadyInfo,
    pub billing_probe: Arc<Probe>,
    /// Whether billing's sidecar has seen its app listen.
    pub billing_app: Arc<AppReadiness>,
    pub store_probe: Arc<Probe>,
    pub shutdown: CancellationToken,
    pub served: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn route(name: &str, addr: SocketAddr, identity: SpiffeId) -> (String, ServiceRoute) {
    let endpoints = vec![Endpoint { addr, identity }];
    let route = ServiceRoute {
        name: name.to_owned(),
        endpoints,
        routes: Vec::new(),
        traffic: Default::default(),
    };
    (name.to_owned(), route)
}

/// A port nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

pub async fn start_speaking(
    workload: &str,
    control: ControlSource,
    app: SocketAddr,
    probe: &Arc<Probe>,
    configure: impl FnOnce(&mut ProxyConfig),
) -> Proxy {
    let mut config = ProxyConfig::new(workload, control, app);
    configure(&mut config);
    let metrics = Arc::clone(probe) as Arc<dyn ProxyMetrics>;
    Proxy::start_with_metrics(config, metrics).await.unwrap()
}

impl Mesh {
    pub async fn start() -> Mesh {
        Mesh::start_with(AppProtocol::Http1).await
    }

    /// billing's sidecar speaks `app_protocol` to the (h1 + h2c) echo app.
    pub async fn start_with(app_protocol: AppProtocol) -> Mesh {
        Mesh::start_configured(app_protocol, PeerProtocol::Http2).await
    }

    /// As [`Mesh::start_with`], with store's sidecar offering `peer` to billing's.
    pub async fn start_configured(app_protocol: AppProtocol, peer: PeerProtocol) -> Mesh {
        let app = EchoServer::start().await.unwrap();
        let addr = app.addr();
        Mesh::start_around(addr, Some(app), app_protocol, peer).await
    }

    /// billing's sidecar forwards to the test's own HTTP/1.1 app at `app`.
    pub async fn start_with_app(app: SocketAddr) -> Mesh {
        Mesh::start_around(app, None, AppProtocol::Http1, PeerProtocol::Http2).await
    }

    async fn start_around(
        app_addr: SocketAddr,
        app: Option<EchoServer>,
        app_protocol: AppProtocol,
        peer: PeerProtocol,
    ) -> Mesh {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = Arc::new(TestCa::new("meshwork.local").unwrap());
        let shutdown = CancellationToken::new();
        let (billing_probe, store_probe) = (Arc::new(Probe::default()), Arc::new(Probe::default()));

        let billing_source = ControlSource::Static {
            svid: ca.svid(BILLING).unwrap(),
            bundle: ca.bundle(),
            snapshot: Snapshot::default(),
        };
        let billing = start_speaking("billing", billing_source, app_addr, &billing_probe, |c| {
            c.app_protocol = app_protocol
        })
        .await;
        let billing_info = billing.ready_info().clone();
        let billing_app = billing.app_readiness();

        let services = [
            route("billing", billing_info.inbound, ca.id(BILLING).unwrap()),
            route(
                "ghost",
                closed_port().await,
                ca.id("/ns/default/sa/ghost").unwrap(),
            ),
        ];
        let store_source = ControlSource::Static {
            svid: ca.svid(STORE).unwrap(),
            bundle: ca.bundle(),
            snapshot: Snapshot {
                version: 1,
                services: services.into_iter().collect(),
                ..Snapshot::default()
            },
        };
        // store's own app is never called in these tests.
        let store = start_speaking(
            "store",
            store_source,
            closed_port().await,
            &store_probe,
            |c| c.peer_protocol = peer,
        )
        .await;
        let store_info = store.ready_info().clone();

        let served = vec![
            tokio::spawn(billing.serve(shutdown.clone().cancelled_owned())),
            tokio::spawn(store.serve(shutdown.clone().cancelled_owned())),
        ];
        Mesh {
            ca,
            _app: app,
            billing: billing_info,
            store: store_info,
            billing_probe,
            billing_app,
            store_probe,
            shutdown,
            served,
        }
    }

    pub fn id(&self, path: &str) -> SpiffeId {
        self.ca.id(path).unwrap()
    }
}
