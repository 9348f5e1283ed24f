//! The innermost step of the mesh path: one request to one endpoint, over the peer pool
//! (one connection per endpoint for HTTP/2, dialled once even under concurrent first
//! requests; kept-alive HTTP/1.1 connections otherwise), with the service's connect and
//! idle timeouts. It tells apart the outcomes the balancer acts on: an answer, a request that
//! provably never left (another endpoint may take it), and a failure after sending.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};

use api::contract::traffic::TrafficPolicy;

use super::connect::{PEER_IDLE_TIMEOUT, PeerPool};
use crate::body::{ProxyBody, boxed};
use crate::endpoint_slot::EndpointSlot;
use crate::endpoint_slot::open_requests::{Counted, OpenRequest};
use crate::forward_error::{ForwardError, error_chain};
use crate::pool::{SendError, Timeouts};

/// Sends requests to endpoints through the shared pool.
#[derive(Clone)]
pub struct Endpoint {
    pool: PeerPool,
}

/// How one send ended.
pub enum Sent {
    /// The response head arrived.
    Answered(Response<ProxyBody>),
    /// Nothing was sent: here is the request back. `connect`: the endpoint could not be
    /// reached (an outlier signal), rather than a pooled connection that was stale.
    Unsent {
        /// The unsent request.
        request: Request<ProxyBody>,
        /// What failed, for the final error.
        reason: String,
        /// Whether connecting failed.
        connect: bool,
    },
    /// The exchange failed after sending began.
    Failed(hyper::Error),
}

impl Endpoint {
    /// Sends through `pool`.
    pub fn new(pool: PeerPool) -> Self {
        Endpoint { pool }
    }

    /// Sends `request` to `slot`'s endpoint with the service's connect and idle timeouts.
    pub async fn send(
        &self,
        slot: &Arc<EndpointSlot>,
        request: Request<ProxyBody>,
        policy: &TrafficPolicy,
    ) -> Sent {
        // Open from here until the response body ends (`maxRequests`); closed at once when
        // nothing comes back.
        let open = OpenRequest::begin(slot);
        let key = slot.key();
        let idle = Duration::from_millis(policy.idle_timeout_ms);
        let timeouts = Timeouts {
            connect: Duration::from_millis(policy.connect_timeout_ms),
            idle: idle.min(PEER_IDLE_TIMEOUT),
            idle_http2: idle,
        };
        match self.pool.send(key, request, timeouts).await {
            Ok(response) => Sent::Answered(response.map(|body| boxed(Counted::new(body, open)))),
            Err(SendError::Connect { error, request }) => {
                let error = ForwardError::PeerConnect {
                    addr: key.addr,
                    identity: key.identity.clone(),
                    source: error,
                };
                Sent::Unsent {
                    request,
                    reason: error_chain(&error),
                    connect: true,
                }
            }
            Err(SendError::Exchange {
                error,
                request: Some(request),
            }) => Sent::Unsent {
                request,
                reason: format!("{} at {}: {error}", key.identity, key.addr),
                connect: false,
            },
            Err(SendError::Exchange {
                error,
                request: None,
            }) => Sent::Failed(error),
        }
    }
}
