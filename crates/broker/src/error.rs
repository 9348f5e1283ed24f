//! [`BrokerError`]: the one error type of the broker's HTTP surface. It renders the OSB error
//! body `{"error": "<CamelCaseCode>", "description": "..."}` with the status the spec mandates.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::provider::ProviderError;
use crate::store::StoreError;
use crate::taxonomy::{ResolveError, TaxonomyError};

/// Everything that can go wrong serving or running the broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The request is malformed: body, query parameter, header or ids (400).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong basic-auth credentials (401).
    #[error("valid basic-auth credentials are required")]
    Unauthorized,
    /// `X-Broker-API-Version` missing or outside 2.13–2.17 (412).
    #[error("{0}")]
    UnsupportedVersion(String),
    /// The resource (or endpoint) does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource is gone: deleting or polling something already deleted (410).
    #[error("{0}")]
    Gone(String),
    /// Same id, different attributes (409).
    #[error("{0}")]
    Conflict(String),
    /// The request body exceeds the limit (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The plan only supports asynchronous operations (422 `AsyncRequired`).
    #[error("{0}")]
    AsyncRequired(String),
    /// Another operation on the same resource is in progress (422 `ConcurrencyError`).
    #[error("{0}")]
    Concurrency(String),
    /// `maintenance_info.version` differs from the catalog's (422 `MaintenanceInfoConflict`).
    #[error("{0}")]
    MaintenanceInfoConflict(String),
    /// The taxonomy's policy refuses the request (422 `PolicyRefused`).
    #[error("refused by {rule}: {reason}")]
    PolicyRefused {
        /// The refusing rule.
        rule: String,
        /// Why.
        reason: String,
    },
    /// Deprovisioning an instance that still has bindings, without cascade (422).
    #[error("{0}")]
    BindingsExist(String),
    /// Deprovisioning a protected instance (422).
    #[error("{0}")]
    DeletionProtected(String),
    /// Binding to an instance whose provisioning failed (422).
    #[error("{0}")]
    InstanceNotUsable(String),
    /// A provider (database server) failed; the upstream side (502).
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The embedded store failed (500).
    #[error(transparent)]
    Store(StoreError),
    /// The taxonomy or provider configuration is invalid (startup).
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    /// The broker configuration is invalid (startup).
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// Binding the listen address failed (startup).
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The broker is shutting down; the operation continues after restart (503).
    #[error("the broker is shutting down; the operation resumes when it restarts")]
    ShuttingDown,
    /// A bug: an invariant did not hold (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ResolveError> for BrokerError {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::Refused { rule, reason } => BrokerError::PolicyRefused { rule, reason },
            other => BrokerError::BadRequest(other.to_string()),
        }
    }
}

impl BrokerError {
    /// The HTTP status the OSB spec prescribes for this error.
    pub fn status(&self) -> StatusCode {
        use BrokerError::*;
        match self {
            BadRequest(_) => StatusCode::BAD_REQUEST,
            Unauthorized => StatusCode::UNAUTHORIZED,
            UnsupportedVersion(_) => StatusCode::PRECONDITION_FAILED,
            NotFound(_) => StatusCode::NOT_FOUND,
            Gone(_) => StatusCode::GONE,
            Conflict(_) => StatusCode::CONFLICT,
            PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AsyncRequired(_) | Concurrency(_) | MaintenanceInfoConflict(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            PolicyRefused { .. } | BindingsExist(_) | DeletionProtected(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            InstanceNotUsable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Provider(_) => StatusCode::BAD_GATEWAY,
            ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Store(_) | Taxonomy(_) | Config(_) | Listen { .. } | Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// The OSB `error` code: the spec's codes where it defines one, otherwise a CamelCase word.
    pub fn code(&self) -> &'static str {
        use BrokerError::*;
        match self {
            BadRequest(_) => "BadRequest",
            Unauthorized => "Unauthorized",
            UnsupportedVersion(_) => "UnsupportedAPIVersion",
            NotFound(_) => "NotFound",
            Gone(_) => "Gone",
            Conflict(_) => "Conflict",
            PayloadTooLarge(_) => "PayloadTooLarge",
            AsyncRequired(_) => "AsyncRequired",
            Concurrency(_) => "ConcurrencyError",
            MaintenanceInfoConflict(_) => "MaintenanceInfoConflict",
            PolicyRefused { .. } => "PolicyRefused",
            BindingsExist(_) => "BindingsExist",
            DeletionProtected(_) => "DeletionProtected",
            InstanceNotUsable(_) => "InstanceNotUsable",
            Provider(_) => "ProviderFailed",
            Store(_) => "StoreFailed",
            ShuttingDown => "ShuttingDown",
            Taxonomy(_) | Config(_) | Listen { .. } | Internal(_) => "InternalError",
        }
    }
}

/// Renders an OSB error body for any status (used for axum's own rejections too).
pub(crate) fn error_body(status: StatusCode, code: &str, description: &str) -> Response {
    let body = serde_json::json!({"error": code, "description": description});
    (status, Json(body)).into_response()
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let mut response = error_body(status, self.code(), &self.to_string());
        if matches!(self, BrokerError::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"meshwork broker\""),
            );
        }
        response
    }
}

impl From<StoreError> for BrokerError {
    /// A store task that did not finish is the broker's own failure (`InternalError`), as it
    /// was before the store stopped naming `BrokerError`; every other store error is `Store`.
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Task(msg) => BrokerError::Internal(format!("state store task: {msg}")),
            other => BrokerError::Store(other),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_422_and_malformed_ids_400() {
        let refused: BrokerError = ResolveError::Refused {
            rule: "ServicePolicy rule a/b".into(),
            reason: "no".into(),
        }
        .into();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(refused.code(), "PolicyRefused");
        let bad: BrokerError = ResolveError::UnknownPlan("x".into()).into();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unauthorized_carries_challenge() {
        let r = BrokerError::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
    }
}
