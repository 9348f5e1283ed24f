//! Pod mode: the sidecar of a workload that runs in its own network namespace.
//!
//! `meshwork up --isolation=pods` gives each workload replica a network namespace (a
//! "pod") with one address on a bridge `up` creates. The sidecar process stays in the
//! host's namespace and creates its pod-side sockets inside the pod's namespace
//! ([`PodNetns`]); the pod's nftables rules ([`rules`]) send every TCP connection the app
//! opens to the sidecar's capture listener and every TCP connection into the pod to its
//! mTLS listener. These ports and the ruleset are the one contract between the sidecar and
//! whoever builds the pod (`cli`'s `up`, or a test).
//!
//! ```text
//! app ──connect(name→virtual address)──▶ capture (SO_ORIGINAL_DST → name, once)
//!          │                               └ dispatch: detect ┬ HTTP → outbound stack, pinned
//!          └─ DNS ─▶ resolver (A → virtual address)           ├ TLS (SNI = name) ┐
//!                                                             └ opaque ──────────┴ egress splice
//!                                                                                  / opaque_to_service
//! ```

pub(crate) mod capture;
pub mod detect;
pub(crate) mod dispatch;
pub mod netns;
pub(crate) mod opaque_service;
pub mod resolver;
pub mod rules;
pub mod virtual_addresses;

use std::net::SocketAddr;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

pub(crate) use capture::Capture;
pub(crate) use dispatch::Dispatch;
pub use netns::{NetnsError, PodNetns};
pub(crate) use opaque_service::OpaqueContext;
pub use rules::{CAPTURE_PORT, DNS_PORT, INBOUND_PORT, PodRules};
pub use virtual_addresses::VirtualAddresses;

use crate::config::PodConfig;

/// The sockets a pod's sidecar makes inside the pod, bound before anything is served.
pub(crate) struct PodSockets {
    /// The pod's namespace (for connections to the app).
    pub netns: PodNetns,
    /// The capture listener on `127.0.0.1:CAPTURE_PORT`.
    pub capture: TcpListener,
    /// The resolver's UDP socket on `127.0.0.1:DNS_PORT`.
    pub dns_udp: UdpSocket,
    /// The resolver's TCP listener on `127.0.0.1:DNS_PORT`.
    pub dns_tcp: TcpListener,
}

impl PodSockets {
    /// Enters `pod`'s namespace and binds there: the mTLS listener on
    /// `<pod ip>:INBOUND_PORT`, and the rest.
    pub async fn bind(pod: &PodConfig) -> Result<(TcpListener, PodSockets), NetnsError> {
        let netns = PodNetns::open(&pod.netns)?;
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let inbound = netns
            .tcp_listener(SocketAddr::from((pod.ip, INBOUND_PORT)))
            .await?;
        let capture = netns.tcp_listener(loopback(CAPTURE_PORT)).await?;
        let dns_udp = netns.udp_socket(loopback(DNS_PORT)).await?;
        let dns_tcp = netns.tcp_listener(loopback(DNS_PORT)).await?;
        let sockets = PodSockets {
            netns,
            capture,
            dns_udp,
            dns_tcp,
        };
        Ok((inbound, sockets))
    }
}

/// The pod side of a started sidecar: the capture listener and the pod's resolver.
pub(crate) struct PodSide {
    /// The capture listener and what serves it.
    pub capture: Capture,
    /// The resolver's sockets.
    pub dns: (UdpSocket, TcpListener),
}

impl PodSide {
    /// Serves both until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) {
        let table = self.capture.table.clone();
        let (udp, tcp) = self.dns;
        tokio::join!(
            self.capture.serve(shutdown.clone()),
            resolver::serve(udp, tcp, table, shutdown),
        );
    }
}
