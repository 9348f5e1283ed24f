//! Steers each classified outbound request one of three ways:
//!
//! - `http://SERVICE[:port]/path` for a mesh service → the mesh stack (route policy →
//!   split → balance → endpoint);
//! - `CONNECT SERVICE:80` (or `:443`) → `200`, then HTTP inside the tunnel re-enters the
//!   whole outbound stack pinned to SERVICE ([`super::mesh_tunnel`]); other bytes close it;
//! - `CONNECT SERVICE:PORT`, any other port → opaque TCP over mTLS to that port of the
//!   service's workload ([`super::opaque`]);
//! - an HTTP/1.1 upgrade (WebSocket) to a mesh service → its own HTTP/1.1 connection to
//!   an endpoint, spliced on `101` ([`super::mesh_upgrade`]);
//! - anything else is egress: decided by `EgressPolicy` and carried out by [`Egress`].
//!
//! Only the mesh path stays unboxed here (its own innermost layer boxes once); egress and
//! tunnels are boxed, refusals are ready futures.

use std::task::{Context, Poll};

use futures_util::future::{self, BoxFuture, Either, Ready};
use http::{Request, Response};
use tower::Service;

use super::classify::{Classified, TunnelTo};
use super::egress::Egress;
use super::mesh_tunnel::MeshTunnel;
use super::mesh_upgrade;
use super::opaque::{HTTP_CONNECT_PORTS, OpaqueTunnel};
use super::target::Target;
use super::{MeshStack, StackParts};
use crate::body::ProxyBody;
use crate::forward_error::ForwardError;
use crate::hop_by_hop::{requested_upgrade, strip_hop_by_hop};

type Answer = Result<Response<ProxyBody>, ForwardError>;

/// The steering service (see the [module docs](self)).
#[derive(Clone)]
pub struct Steer {
    mesh: MeshStack,
    egress: Egress,
    /// What a tunnel needs to build the outbound stack again.
    parts: StackParts,
}

impl Steer {
    /// Steers to `mesh`, to egress, or into tunnels served with a stack built from `parts`.
    pub fn new(mesh: MeshStack, parts: StackParts) -> Self {
        Steer {
            mesh,
            egress: parts.egress.clone(),
            parts,
        }
    }
}

impl Service<Request<ProxyBody>> for Steer {
    type Response = Response<ProxyBody>;
    type Error = ForwardError;
    type Future = Either<
        Either<<MeshStack as Service<Request<ProxyBody>>>::Future, Ready<Answer>>,
        BoxFuture<'static, Answer>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ProxyBody>) -> Self::Future {
        let refuse = |error| Either::Left(Either::Right(future::ready(Err(error))));
        let Some(classified) = request.extensions().get::<Classified>() else {
            // invariant: the classify layer is outermost on every outbound stack.
            return refuse(ForwardError::BadRequest {
                reason: "request was not classified".to_owned(),
            });
        };
        match (&classified.target, classified.service) {
            (Err(reason), _) => refuse(ForwardError::BadRequest {
                reason: reason.clone(),
            }),
            (Ok(Target::Connect { host, port }), Some(_)) if !HTTP_CONNECT_PORTS.contains(port) => {
                let tunnel = OpaqueTunnel::new(host.clone(), *port, self.parts.clone());
                Either::Right(Box::pin(async move { Ok(tunnel.accept(request).await) }))
            }
            (Ok(Target::Connect { host, port }), Some(_)) => {
                let tunnel = MeshTunnel::new(host.clone(), *port, self.parts.clone());
                Either::Left(Either::Right(future::ready(Ok(tunnel.accept(request)))))
            }
            (Ok(Target::Http { .. }), Some(_)) if requested_upgrade(&request).is_some() => {
                Either::Right(Box::pin(mesh_upgrade::forward(self.parts.clone(), request)))
            }
            (Ok(Target::Http { .. }), Some(_)) => {
                Either::Left(Either::Left(self.mesh.call(request)))
            }
            (Ok(target), None) if request.extensions().get::<TunnelTo>().is_some() => {
                refuse(ForwardError::NoRoute {
                    service: target.host().to_owned(),
                    reason: "it left the mesh while the tunnel was open".to_owned(),
                })
            }
            (Ok(_), None) => {
                if requested_upgrade(&request).is_some() {
                    // Upgrades are carried to mesh services only: egress goes over pooled
                    // connections, which cannot be upgraded, so the request leaves as a plain
                    // one (as before upgrades were kept at all).
                    strip_hop_by_hop(request.headers_mut());
                }
                let egress = self.egress.clone();
                // invariant: just read above; the layers below egress do not need it.
                let classified = request.extensions_mut().remove::<Classified>();
                Either::Right(Box::pin(async move {
                    match classified {
                        Some(classified) => egress.handle(classified, request).await,
                        None => Err(ForwardError::BadRequest {
                            reason: "request was not classified".to_owned(),
                        }),
                    }
                }))
            }
        }
    }
}
