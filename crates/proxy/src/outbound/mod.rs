//! The outbound listener: a plain-HTTP forward proxy on loopback for the local app
//! (used through `HTTP_PROXY`), routing mesh service names over mTLS.
//!
//! The request stack, one named layer per file, in the order a request meets them:
//!
//! ```text
//! classify ─▶ telemetry ─▶ trace ─▶ hop_by_hop ─▶ steer ─┬─ mesh: split ─▶ route_policy
//!                                                        │   (request timeout ─▶ retry ─▶
//!  (target, service,          (client span,              │   try timeout) ─▶ balance ─▶
//!   path, route, rule:         tracing on only)          │   endpoint ─▶ pool
//!   once, as `Classified`)                               ├─ tunnel: CONNECT SERVICE:port →
//!                                                        │   200, HTTP inside re-enters
//!                                                        │   this same stack
//!                                                        └─ egress: EgressPolicy, then
//!                                                            resolve + dial
//! ```
//!
//! Only the local application should reach this port; binding it to loopback is
//! what keeps other hosts out (the address comes from [`crate::ProxyConfig`]).

pub mod balance;
pub mod claim_binding;
pub mod classify;
pub mod connect;
pub mod egress;
pub mod endpoint;
pub mod labels;
mod mesh_tunnel;
mod mesh_upgrade;
pub mod opaque;
pub mod resolve;
pub mod route_policy;
pub mod span_attributes;
pub mod split;
pub mod steer;
pub mod target;
mod unknown_service;

use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;

use crate::hop_by_hop::HopByHopLayer;
use crate::metrics::{Direction, ProxyMetrics};
use crate::routes::Routes;
use crate::server::{self, DRAIN_TIMEOUT, Stack};
use crate::tap::TapHub;
use crate::telemetry::TelemetryLayer;
use crate::trace::{TraceLayer, Tracer};
use balance::Balance;
use classify::ClassifyLayer;
use connect::PeerPool;
use egress::Egress;
use endpoint::Endpoint;
use labels::ClassifiedLabels;
use route_policy::{RoutePolicy, RoutePolicyLayer};
use span_attributes::OutboundSpan;
use split::{Split, SplitLayer};
use steer::Steer;

/// The mesh path below [`Steer`]: split, the route rule's timeouts and retries, then
/// balance (which sends through the pool). Split comes first so that a request's backend
/// is drawn once: its retries stay with it (as Envoy's and Linkerd's do), and a failing
/// canary is not hidden by retries that land on the stable backend.
pub type MeshStack = Split<RoutePolicy<Balance>>;

/// What the outbound stack is built from (cheap to clone: shared handles). Tunnels build
/// the same stack again from these.
#[derive(Clone)]
pub struct StackParts {
    /// The current route table.
    pub routes: Routes,
    /// Connections to peer sidecars.
    pub pool: PeerPool,
    /// Destinations outside the mesh.
    pub egress: Egress,
    /// Where request metrics go.
    pub metrics: Arc<dyn ProxyMetrics>,
    /// The mesh tunnels being served (drained with the listener).
    pub tunnels: Tunnels,
    /// Client spans, when tracing is on.
    pub tracer: Option<Tracer>,
    /// Where finished requests go while someone taps.
    pub tap: Arc<TapHub>,
}

/// Builds the outbound request stack (see the [module docs](self)).
pub fn stack(parts: StackParts) -> Stack {
    let mesh = ServiceBuilder::new()
        .layer(SplitLayer)
        .layer(RoutePolicyLayer::new(Arc::clone(&parts.metrics)))
        .service(Balance::new(
            Endpoint::new(parts.pool.clone()),
            Arc::clone(&parts.metrics),
        ));
    let classify = ClassifyLayer::new(parts.routes.clone());
    // Refusals by the layers below are counted too.
    let telemetry = TelemetryLayer::new(ClassifiedLabels, Arc::clone(&parts.metrics))
        .tapped(Arc::clone(&parts.tap));
    let trace = parts
        .tracer
        .clone()
        .map(|t| TraceLayer::new(t, OutboundSpan, Arc::clone(&parts.metrics)));
    let below = ServiceBuilder::new()
        .layer(HopByHopLayer)
        .service(Steer::new(mesh, parts));
    // Outermost: everything below reads the classification. Two stacks, not an
    // `option_layer`: with tracing off no `Either` wraps the request path.
    match trace {
        // The client span: below telemetry, whose labels it reads.
        Some(trace) => server::box_stack(
            ServiceBuilder::new()
                .layer(classify)
                .layer(telemetry.publishing(true))
                .layer(trace)
                .service(below),
        ),
        None => server::box_stack(
            ServiceBuilder::new()
                .layer(classify)
                .layer(telemetry)
                .service(below),
        ),
    }
}

/// The CONNECT tunnels to mesh services a listener serves: tracked, so shutdown drains
/// them like any connection.
#[derive(Clone, Default)]
pub struct Tunnels {
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Tunnels {
    /// Runs a tunnel's task.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Cancelled when the listener drains: tunnels finish their requests and close.
    fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Asks every tunnel to finish and waits for them (up to [`DRAIN_TIMEOUT`]).
    async fn drain(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tracker.len(),
                "mesh tunnels still open after the drain timeout"
            );
        }
    }
}

/// The outbound listener, ready to serve.
pub struct Outbound {
    /// The bound listener.
    pub listener: TcpListener,
    /// The request stack every connection shares.
    pub stack: Stack,
    /// Where connection and request events go.
    pub metrics: Arc<dyn ProxyMetrics>,
    /// The stack's tunnels, drained after the listener's connections.
    pub tunnels: Tunnels,
}

impl Outbound {
    /// Serves until `shutdown` is cancelled, then drains (tunnels included).
    pub async fn serve(self, shutdown: CancellationToken) {
        let Outbound {
            listener,
            stack,
            metrics,
            tunnels,
        } = self;
        let drain_tunnels = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                tunnels.drain().await;
            }
        };
        let connections = server::accept_loop(listener, shutdown, move |stream, watcher| {
            let service =
                server::hyper_service(stack.clone(), (), Direction::Outbound, Arc::clone(&metrics));
            server::serve_connection(TokioIo::new(stream), service, watcher)
        });
        tokio::join!(connections, drain_tunnels);
    }
}
