//! The control plane's error type and its JSON rendering.

use std::path::PathBuf;

use api::contract::ErrorBody;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Anything that stops the control plane or fails a request.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The control socket could not be created or served.
    #[error("control socket {}: {source}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The CA could not be loaded or created, or the state file failed.
    #[error(transparent)]
    Authority(#[from] crate::authority::AuthorityError),
    /// The state file failed.
    #[error(transparent)]
    State(#[from] crate::store::StateError),
    /// The store failed (for etcd: unavailable, no quorum: retry later).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The key-encryption key cannot be read.
    #[error(transparent)]
    Kek(crate::store::seal::SealError),
    /// A task of the control plane still held the state file after shutdown (a bug: `serve`
    /// awaits every task it starts).
    #[error("the state file is still held by a task after the control plane stopped")]
    StateStillOpen,
    /// The resources have no `Mesh` (the loader normally prevents this).
    #[error("the resources define no Mesh; cannot pick a trust domain")]
    NoMesh,
    /// A request named a workload the registry does not know.
    #[error("unknown workload {0:?}")]
    UnknownWorkload(String),
    /// The CSR could not be signed (malformed, bad signature, unsupported key).
    #[error("cannot sign CSR for {workload:?}: {source}")]
    Csr {
        /// Whose CSR it was.
        workload: String,
        /// Why the CA refused it.
        #[source]
        source: identity::CaError,
    },
    /// A request was malformed or named something that does not exist.
    #[error("{message}")]
    Request {
        /// HTTP status to answer with.
        status: StatusCode,
        /// Stable machine-readable code.
        code: &'static str,
        /// For humans.
        message: String,
    },
}

impl ControlError {
    /// A request-level error with its status and code.
    pub fn request(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ControlError {
        ControlError::Request {
            status,
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ControlError::UnknownWorkload(_) => (StatusCode::NOT_FOUND, "unknown_workload"),
            ControlError::Csr { .. } => (StatusCode::BAD_REQUEST, "bad_csr"),
            ControlError::Request { status, code, .. } => (*status, code),
            ControlError::Authority(crate::AuthorityError::RotationInProgress { .. }) => {
                (StatusCode::CONFLICT, "rotation_in_progress")
            }
            ControlError::Store(e) | ControlError::Authority(crate::AuthorityError::Store(e))
                if e.is_transient() =>
            {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody {
            error: code.to_owned(),
            description: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}
