//! Opaque TCP from a pod's app to a mesh service: the one place that decides it.
//!
//! Not yet: the TCP-over-mTLS connector between sidecars (ALPN `meshwork.opaque`) is built
//! apart; until it is wired in here, such connections are refused, logged and counted.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use identity::SvidStore;
use tokio::net::TcpStream;

use super::dispatch::count_connection;
use crate::label::Label;
use crate::metrics::ProxyMetrics;
use crate::routes::Routes;

/// What opaque TCP to a mesh service may need: the route table (its endpoints and their
/// identities), this workload's SVID (to connect as it), and where to count.
#[derive(Clone)]
// `routes` and `store` are for the mTLS opaque connector, not wired in yet.
#[allow(dead_code)]
pub struct OpaqueContext {
    /// The current route table.
    pub routes: Routes,
    /// This workload's SVID and trust bundle.
    pub store: Arc<SvidStore>,
    /// Where connection outcomes are counted.
    pub metrics: Arc<dyn ProxyMetrics>,
}

/// Carries the app's connection `client` (whose first bytes, already read, are `first`) to
/// port `port` of mesh service `service`. For now: refused (closed), logged, counted.
pub async fn opaque_to_service(
    context: &OpaqueContext,
    service: &str,
    port: u16,
    client: TcpStream,
    first: Vec<u8>,
) {
    let start = Instant::now();
    drop((client, first));
    tracing::warn!(
        service,
        port,
        "opaque TCP to mesh services: not yet; closed (send HTTP, or wait for the mTLS \
         opaque transport)"
    );
    let label = Label::intern(service);
    count_connection(
        &*context.metrics,
        label,
        StatusCode::NOT_IMPLEMENTED,
        false,
        start,
    );
}
