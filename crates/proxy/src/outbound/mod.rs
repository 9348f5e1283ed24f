//! The outbound listener: a plain-HTTP forward proxy on loopback for the local app
//! (used through `HTTP_PROXY`), routing mesh service names over mTLS.
//!
//! `CONNECT SERVICE:port` to a mesh service opens a tunnel that carries HTTP to that
//! service along the same path ([`mesh_tunnel`]).
//!
//! Only the local application should reach this port; binding it to loopback is
//! what keeps other hosts out (the address comes from [`crate::ProxyConfig`]).

pub mod connect;
pub mod egress;
mod mesh_tunnel;
pub mod pool;
pub mod resolve;
pub mod router;
pub mod target;
mod unknown_service;

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::hop_by_hop::HopByHopLayer;
use crate::metrics::{Direction, ProxyMetrics};
use crate::routes::Routes;
use crate::server::{self, Stack};
use crate::telemetry::TelemetryLayer;
use egress::Egress;
use pool::PeerPool;
use router::Router;

/// Builds the outbound request stack: telemetry (request metrics into `metrics`), hop-by-hop
/// stripping, then the router (which hands destinations outside the mesh to `egress`: only
/// the router knows what is in the mesh).
pub fn stack(
    routes: Routes,
    pool: PeerPool,
    egress: Egress,
    metrics: Arc<dyn ProxyMetrics>,
) -> Stack {
    let service = ServiceBuilder::new()
        .layer(TelemetryLayer::outbound(
            routes.clone(),
            Arc::clone(&metrics),
        ))
        .layer(HopByHopLayer)
        .service(Router::new(routes, pool, egress, metrics));
    server::box_stack(service)
}

/// The outbound listener, ready to serve.
pub struct Outbound {
    /// The bound listener.
    pub listener: TcpListener,
    /// The request stack every connection shares.
    pub stack: Stack,
    /// Where connection and request events go.
    pub metrics: Arc<dyn ProxyMetrics>,
}

impl Outbound {
    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn serve(self, shutdown: CancellationToken) {
        let Outbound {
            listener,
            stack,
            metrics,
        } = self;
        server::accept_loop(listener, shutdown, move |stream, watcher| {
            let service =
                server::hyper_service(stack.clone(), (), Direction::Outbound, Arc::clone(&metrics));
            server::serve_connection(TokioIo::new(stream), service, watcher)
        })
        .await;
    }
}
