//! Opaque TCP from a pod's app to a mesh service: the one place that decides it.
//!
//! The app's connection (not HTTP, or to one of the opaque ports) goes to an endpoint of the
//! service over mTLS with ALPN `meshwork.opaque` ([`crate::outbound::opaque`]): the peer
//! sidecar authorizes this workload's identity for the port and splices to its app. The
//! bytes detection already read are sent first.

use std::time::Instant;

use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::dispatch::count_connection;
use crate::label::Label;
use crate::outbound::StackParts;
use crate::outbound::opaque::connect_opaque;

/// What opaque TCP to a mesh service needs: the outbound stack's parts (the route table with
/// the service's endpoints and the identities they must present, the pool's connector with
/// this workload's SVID, where to count).
#[derive(Clone)]
pub struct OpaqueContext {
    /// The outbound stack's parts.
    pub parts: StackParts,
}

/// Carries the app's connection `client` (whose first bytes, already read, are `first`) to
/// port `port` of mesh service `service` over mTLS, until either side closes.
pub async fn opaque_to_service(
    context: &OpaqueContext,
    service: &str,
    port: u16,
    mut client: TcpStream,
    first: Vec<u8>,
) {
    let start = Instant::now();
    let label = Label::intern(service);
    let metrics = &*context.parts.metrics;
    let mut tls = match connect_opaque(&context.parts, service, port).await {
        Ok(tls) => tls,
        Err(error) => {
            tracing::warn!(service, port, error = %error, "opaque TCP to a mesh service: no connection (closed)");
            count_connection(metrics, label, StatusCode::BAD_GATEWAY, false, start);
            return;
        }
    };
    count_connection(metrics, label, StatusCode::OK, false, start);
    if let Err(error) = tls.write_all(&first).await {
        tracing::debug!(service, port, %error, "opaque TCP: the peer closed at once");
        return;
    }
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut tls).await {
        tracing::debug!(service, port, %error, "opaque TCP ended with an error");
    }
}
