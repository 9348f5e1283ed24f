//! What a sidecar needs to know to start.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

mod pod;
mod traces;

use api::contract::Snapshot;
use identity::{Svid, TrustBundle};

pub use pod::{OpaquePorts, PodConfig, VirtualCidr, VirtualCidrError};
pub use traces::{OtlpExport, OtlpProtocol, Propagation, TracingConfig, UnknownOtlpProtocol};

/// The HTTP version the local application speaks (plain HTTP, on `app`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AppProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

/// Where the proxy resolves egress host names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EgressDns {
    /// The operating system's resolver (`getaddrinfo`: `/etc/hosts`, `/etc/resolv.conf`).
    #[default]
    System,
    /// This DNS server only (UDP, falling back to TCP), e.g. a loopback test server.
    Server(SocketAddr),
}

/// The HTTP version offered to peer sidecars over mTLS (by ALPN).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PeerProtocol {
    /// Offer `h2` then `http/1.1`: one multiplexed connection per peer (the default).
    #[default]
    Http2,
    /// Offer only `http/1.1`: a keep-alive pool per peer. For comparisons with
    /// HTTP/1.1-only proxies, and peers that mishandle h2.
    Http1,
}

/// Where the proxy gets its SVID and routing snapshots from.
// Built and moved once per process: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum ControlSource {
    /// The control plane's unix socket (`<state>/control.sock`): the proxy generates its
    /// key, gets an SVID by CSR, registers its inbound address and long-polls snapshots.
    /// This is what `meshwork proxy` uses; the lead's end-to-end tests cover it.
    Socket(PathBuf),
    /// SVIDs from the SPIFFE Workload API (the node agent's socket), like any other
    /// workload; routes from the control socket as for [`ControlSource::Socket`].
    WorkloadApi {
        /// The control plane's unix socket (registration and snapshots): with several
        /// control replicas, each one's, tried in turn when the current one stops answering.
        control: Vec<PathBuf>,
        /// The Workload API socket (`SPIFFE_ENDPOINT_SOCKET` without `unix:`).
        workload_api: PathBuf,
    },
    /// Fixed identity and routes, no control plane: what this crate's integration tests
    /// use (SVIDs from a testkit CA, a hand-written snapshot). Nothing is registered,
    /// nothing is rotated; the snapshot never changes.
    Static {
        /// This workload's SVID (with its private key).
        svid: Svid,
        /// The trust bundle peers are verified against.
        bundle: TrustBundle,
        /// The routing table.
        snapshot: Snapshot,
    },
}

impl fmt::Debug for ControlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlSource::Socket(path) => f.debug_tuple("Socket").field(path).finish(),
            ControlSource::WorkloadApi {
                control,
                workload_api,
            } => f
                .debug_struct("WorkloadApi")
                .field("control", control)
                .field("workload_api", workload_api)
                .finish(),
            ControlSource::Static { svid, snapshot, .. } => f
                .debug_struct("Static")
                .field("spiffe_id", &svid.id().as_str())
                .field("snapshot_version", &snapshot.version)
                .finish_non_exhaustive(),
        }
    }
}

/// Everything one sidecar needs.
#[derive(Debug)]
pub struct ProxyConfig {
    /// The workload this sidecar serves (its `metadata.name`).
    pub workload: String,
    /// Which replica of the workload this sidecar fronts (`Workload` `spec.replicas`), from
    /// 0: sent with the endpoint registration, so each replica is its own endpoint.
    pub replica: u16,
    /// Where identity and routes come from.
    pub control: ControlSource,
    /// The mTLS listener for other sidecars (port 0: any free port).
    pub inbound_listen: SocketAddr,
    /// The HTTP proxy listener for the local app; keep it on loopback.
    pub outbound_listen: SocketAddr,
    /// If set, the admin listener (plain HTTP: `/metrics`, `/snapshot`, `/ready`); keep it
    /// on loopback.
    pub admin_listen: Option<SocketAddr>,
    /// The local application's plain-HTTP address.
    pub app: SocketAddr,
    /// The HTTP version the application speaks.
    pub app_protocol: AppProtocol,
    /// The HTTP version offered to peer sidecars.
    pub peer_protocol: PeerProtocol,
    /// If set, `{"inbound":…,"outbound":…,"spiffe_id":…,"admin":…}` is written here once
    /// ready (`admin` only with an admin listener).
    pub ready_file: Option<PathBuf>,
    /// Where egress destinations are resolved (the proxy connects to what it resolved).
    pub dns: EgressDns,
    /// Distributed tracing; `None`: off (no trace layer on either stack, trace headers pass
    /// through untouched).
    pub tracing: Option<TracingConfig>,
    /// Pod mode: the app runs in this network namespace; the inbound listener, the capture
    /// listener (instead of `outbound_listen`), the pod's resolver and the connections to
    /// the app are made inside it (`inbound_listen` and `outbound_listen` are then unused).
    pub pod: Option<PodConfig>,
}

impl ProxyConfig {
    /// A config for replica 0 with both listeners on `127.0.0.1:0`, no admin listener, an
    /// HTTP/1.1 app, no ready file and the system resolver for egress.
    pub fn new(workload: impl Into<String>, control: ControlSource, app: SocketAddr) -> Self {
        let any_loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        ProxyConfig {
            workload: workload.into(),
            replica: 0,
            control,
            inbound_listen: any_loopback,
            outbound_listen: any_loopback,
            admin_listen: None,
            app,
            app_protocol: AppProtocol::default(),
            peer_protocol: PeerProtocol::default(),
            ready_file: None,
            dns: EgressDns::System,
            tracing: None,
            pod: None,
        }
    }
}
