//! Why a sidecar could not start (or stopped abnormally): one error for every startup step,
//! so the steps (`discovery`, `workload_api`) and the `proxy` that sequences them all name it
//! without depending on one another.

use std::net::SocketAddr;

use identity::{BundleError, SvidError};

use crate::control_client::ControlError;
use crate::ready::ReadyFileError;

/// Why the proxy could not start (or stopped abnormally).
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error("cannot bind the {listener} listener on {addr}")]
    Bind {
        /// `inbound`, `outbound` or `admin`.
        listener: &'static str,
        /// The requested address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The configuration names no control socket.
    #[error("no control socket is configured (--control-socket)")]
    NoControlSocket,
    /// The control plane refused a startup step (retrying would not help).
    #[error("control plane: {step} failed")]
    Control {
        /// What the proxy was doing.
        step: &'static str,
        /// The cause.
        #[source]
        source: ControlError,
    },
    /// Key generation, the CSR or the returned SVID was unusable.
    #[error("cannot make a key/CSR or use the SVID control returned")]
    Svid(#[source] SvidError),
    /// The returned trust bundle was unusable.
    #[error("the trust bundle control returned is unusable")]
    Bundle(#[source] BundleError),
    /// Control said one identity, the certificate proves another.
    #[error("control announced SVID {announced} but the certificate is for {certified}")]
    SvidMismatch {
        /// What the SVID response claimed.
        announced: identity::SpiffeId,
        /// What the certificate's URI SAN says.
        certified: identity::SpiffeId,
    },
    /// The application address cannot be used as a URI authority.
    #[error("application address {addr} is unusable")]
    App {
        /// The configured address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: http::Error,
    },
    /// The ready file could not be written.
    #[error(transparent)]
    ReadyFile(#[from] ReadyFileError),
    /// Pod mode: the pod's sockets could not be made in its network namespace.
    #[error("pod mode: cannot set up the sidecar's sockets in the pod")]
    Pod(#[source] crate::body::BoxError),
    /// The egress resolver could not be set up.
    #[error("cannot set up the egress DNS resolver")]
    Resolver(#[source] crate::body::BoxError),
    /// The OTLP trace exporter could not be built from the tracing configuration.
    #[error("cannot set up trace export to {endpoint} over OTLP {protocol}")]
    Tracing {
        /// The configured collector endpoint.
        endpoint: String,
        /// The configured OTLP protocol (`grpc`, `http/protobuf`).
        protocol: &'static str,
        /// What `opentelemetry-otlp` said.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}
