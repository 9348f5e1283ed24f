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
    /// The CA could not be loaded or created.
    #[error(transparent)]
    Ca(#[from] crate::ca_store::CaStoreError),
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
}

impl ControlError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ControlError::UnknownWorkload(_) => (StatusCode::NOT_FOUND, "unknown_workload"),
            ControlError::Csr { .. } => (StatusCode::BAD_REQUEST, "bad_csr"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = ErrorBody { error: code.to_owned(), description: self.to_string() };
        (status, Json(body)).into_response()
    }
}
