//! The inbound listener: mTLS only, then HTTP (h1 or h2 by ALPN) forwarded to the
//! local application with the verified caller identity stamped on every request, or, for
//! ALPN `meshwork.opaque`, an authorized byte splice to one of the app's ports ([`opaque`]).
//!
//! A connection that does not complete an mTLS handshake with a valid SVID from our
//! trust bundle gets nothing but a closed connection (plus whatever TLS alert rustls
//! sends): no HTTP is ever spoken in plaintext here.

pub mod app;
mod app_connector;
pub mod app_readiness;
pub mod authorize;
pub mod client_id;
pub mod opaque;
pub mod span_attributes;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use identity::{ClientAuth, OPAQUE_ALPN, PeerPolicy, Protocols, SpiffeId, SvidStore};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;

use crate::hop_by_hop::HopByHopLayer;
use crate::metrics::{Direction, Protocol, ProxyMetrics};
use crate::reserved_headers;
use crate::routes::Routes;
use crate::server::{self, InboundPeer, PeerAddr, PeerIdentity, Stack};
use crate::tap::TapHub;
use crate::telemetry::TelemetryLayer;
use crate::trace::{TraceLayer, Tracer};
use app::AppService;
use authorize::AuthorizeLayer;
use client_id::ClientIdLayer;
use opaque::OpaqueInbound;
use span_attributes::InboundSpan;

/// A handshake that has not finished by then is dropped: it would otherwise hold a
/// task (and delay shutdown) for as long as a slow or malicious client likes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the inbound request stack: telemetry (request metrics into `metrics`), the server
/// span (with `tracer`, when tracing is on), hop-by-hop
/// stripping, client-id stamping, authorization (the policies in `routes`, for this
/// workload's identity `own`), then the app client. Finished requests go to `tap` while
/// someone taps.
pub fn stack(
    app: AppService,
    routes: Routes,
    own: SpiffeId,
    metrics: Arc<dyn ProxyMetrics>,
    tracer: Option<Tracer>,
    tap: Arc<TapHub>,
) -> Stack {
    // Refusals by the layers below are counted too.
    let telemetry =
        TelemetryLayer::inbound(routes.clone(), own.clone(), Arc::clone(&metrics)).tapped(tap);
    let below = ServiceBuilder::new()
        .layer(HopByHopLayer)
        .layer(ClientIdLayer)
        // Sees the verified caller as the `PeerIdentity` request extension.
        .layer(AuthorizeLayer::new(routes, own))
        .service(app);
    // Telemetry outermost. Two stacks, not an `option_layer`: with tracing off no `Either`
    // wraps the request path.
    match tracer {
        // The server span: below telemetry, whose labels it reads; above everything that
        // can refuse.
        Some(tracer) => server::box_stack(
            ServiceBuilder::new()
                .layer(telemetry.publishing(true))
                .layer(TraceLayer::new(tracer, InboundSpan, metrics))
                .service(below),
        ),
        None => server::box_stack(ServiceBuilder::new().layer(telemetry).service(below)),
    }
}

/// The inbound listener, ready to serve.
pub struct Inbound {
    /// The bound listener.
    pub listener: TcpListener,
    /// The request stack every connection shares.
    pub stack: Stack,
    /// This workload's SVID and trust bundle (read on every handshake: hitless rotation).
    pub store: Arc<SvidStore>,
    /// Where connection and request events go.
    pub metrics: Arc<dyn ProxyMetrics>,
    /// Put the caller's address on every request as [`PeerAddr`] (the server span's
    /// `network.peer.address`): only when tracing is on, since it is a second request
    /// extension, an allocation per request (~200 instructions, bench/results).
    pub peer_addr: bool,
    /// Serves connections that negotiated ALPN `meshwork.opaque`.
    pub opaque: OpaqueInbound,
}

impl Inbound {
    /// Serves until `shutdown` is cancelled, then drains.
    pub async fn serve(self, shutdown: CancellationToken) {
        let acceptor = TlsAcceptor::from(identity::server_config(
            &self.store,
            ClientAuth::Required(PeerPolicy::AnyInTrustDomain),
            Protocols::MESH_INBOUND,
        ));
        let Inbound {
            listener,
            stack,
            metrics,
            peer_addr,
            opaque,
            ..
        } = self;
        server::accept_loop(listener, shutdown, move |stream, watcher| {
            let connection = (acceptor.clone(), stack.clone(), Arc::clone(&metrics));
            handle(stream, watcher, connection, (peer_addr, opaque.clone()))
        })
        .await;
    }
}

async fn handle(
    stream: TcpStream,
    watcher: Watcher,
    (acceptor, stack, metrics): (TlsAcceptor, Stack, Arc<dyn ProxyMetrics>),
    (peer_addr, opaque): (bool, OpaqueInbound),
) {
    let remote = stream.peer_addr().ok();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(?remote, %error, "inbound mTLS handshake failed");
            return;
        }
        Err(_elapsed) => {
            tracing::info!(?remote, "inbound mTLS handshake timed out");
            return;
        }
    };
    let (_, session) = tls.get_ref();
    let certificates = session.peer_certificates().unwrap_or_default();
    let peer = match identity::peer_spiffe_id(certificates) {
        Ok(peer) => peer,
        Err(error) => {
            // The verifier only accepts SVIDs, so this is unreachable; fail closed anyway.
            tracing::warn!(?remote, %error, "verified peer has no SPIFFE ID; closing");
            return;
        }
    };
    if session.alpn_protocol() == Some(OPAQUE_ALPN) {
        // Not an HTTP connection: the graceful drain does not wait for it.
        drop(watcher);
        tracing::debug!(?remote, %peer, "inbound opaque connection");
        return opaque.serve(tls, peer).await;
    }
    metrics.inbound_connection(&peer, Protocol::from_alpn(session.alpn_protocol()));
    tracing::debug!(?remote, %peer, "inbound connection");
    let service = server::hyper_service_with(
        stack,
        InboundPeer {
            identity: PeerIdentity(peer),
            addr: remote.filter(|_| peer_addr).map(PeerAddr),
        },
        Direction::Inbound,
        metrics,
        reserved_headers::inbound_body::<hyper::body::Incoming>,
    );
    server::serve_connection(TokioIo::new(tls), service, watcher).await;
}
