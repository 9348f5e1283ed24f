//! An HTTP/1.1 upgrade request (WebSocket) to a mesh service: sent to an endpoint of the
//! service on an unpooled mTLS connection offering only `http/1.1`, and spliced on `101`
//! ([`crate::upgrade`] says why not HTTP/2 extended CONNECT).
//!
//! The request has passed classification, telemetry and hop-by-hop handling (which keeps
//! `Upgrade` for it) like any other; it skips the route rule's timeouts and retries (a
//! handshake whose connection then lives for minutes is not a request to time out or
//! replay) and the traffic split (it goes to the service it named). The peer sidecar
//! authorizes it and stamps the caller's identity like any request.

use http::{Request, Response};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use identity::Protocols;

use super::StackParts;
use super::classify::Classified;
use super::opaque::dial_any;
use crate::body::ProxyBody;
use crate::forward_error::ForwardError;

/// Forwards the upgrade `request` (see the [module docs](self)).
pub(super) async fn forward(
    parts: StackParts,
    mut request: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, ForwardError> {
    let client = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| ForwardError::BadRequest {
            reason: "an upgrade request on a connection that cannot be upgraded".to_owned(),
        })?;
    let (table, backend) = match request.extensions().get::<Classified>() {
        Some(c) => (std::sync::Arc::clone(&c.table), c.backend),
        None => {
            return Err(ForwardError::BadRequest {
                reason: "request was not classified".to_owned(),
            });
        }
    };
    let Some(mesh) = backend.and_then(|i| table.service_at(i)) else {
        return Err(ForwardError::BadRequest {
            reason: "request was not classified".to_owned(),
        });
    };
    let unavailable = |reason: String| ForwardError::PeerUnavailable {
        service: mesh.name().to_owned(),
        reason,
    };
    let tls = match dial_any(parts.pool.dialer(), mesh, Protocols::HTTP1).await {
        Ok(tls) => tls,
        Err(Some(error)) => return Err(unavailable(error.to_string())),
        Err(None) => return Err(unavailable("no endpoints".to_owned())),
    };
    crate::upgrade::exchange(TokioIo::new(tls), request, client)
        .await
        .map_err(|source| ForwardError::PeerRequest {
            service: mesh.name().to_owned(),
            retryable: false,
            source,
        })
}
