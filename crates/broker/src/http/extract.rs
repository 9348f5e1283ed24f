//! Extractors whose rejections are OSB errors (axum's own would answer 422 or plain text).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::parameters::{self, Action};

use crate::BrokerError;
use crate::ops::Broker;
use crate::originating::OriginatingIdentity;
use crate::taxonomy::{ResolveError, Taxonomy};

/// OSB ids are opaque, but a bound keeps records and error messages sane.
const MAX_ID_LEN: usize = 512;

/// Query parameters, checked against the endpoint's known names: unknown or repeated names
/// and bad values are 400.
#[derive(Debug, Default)]
pub(crate) struct OsbQuery(BTreeMap<String, String>);

fn decode(part: &str) -> Result<String, BrokerError> {
    let spaced = part.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            BrokerError::BadRequest(format!("query parameter {part:?} is not valid UTF-8"))
        })
}

impl OsbQuery {
    /// Parses a raw query string, allowing only `allowed` names.
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, BrokerError> {
        let mut out = BTreeMap::new();
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (decode(k)?, decode(v)?);
            if !allowed.contains(&k.as_str()) {
                return Err(BrokerError::BadRequest(format!(
                    "unknown query parameter {k:?}; this endpoint accepts: {}",
                    if allowed.is_empty() {
                        "none".to_owned()
                    } else {
                        allowed.join(", ")
                    }
                )));
            }
            if out.insert(k.clone(), v).is_some() {
                return Err(BrokerError::BadRequest(format!(
                    "query parameter {k:?} is repeated"
                )));
            }
        }
        Ok(OsbQuery(out))
    }

    /// `accepts_incomplete`: absent is false; anything but `true`/`false` is 400.
    pub(crate) fn accepts_incomplete(&self) -> Result<bool, BrokerError> {
        match self.0.get("accepts_incomplete").map(String::as_str) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(BrokerError::BadRequest(format!(
                "query parameter accepts_incomplete must be true or false, not {other:?}"
            ))),
        }
    }

    /// A parameter the spec makes mandatory (e.g. `service_id` on DELETE).
    pub(crate) fn required(&self, name: &str) -> Result<&str, BrokerError> {
        match self.0.get(name).map(String::as_str) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(BrokerError::BadRequest(format!(
                "query parameter {name} is required"
            ))),
        }
    }
}

fn check_id(what: &str, id: &str) -> Result<(), BrokerError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(BrokerError::BadRequest(format!(
            "{what} must be 1 to {MAX_ID_LEN} bytes long"
        )));
    }
    Ok(())
}

/// `{instance_id}` from the path.
pub(crate) struct InstanceId(pub String);

/// `{instance_id}` and `{binding_id}` from the path.
pub(crate) struct BindingIds(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for InstanceId {
    type Rejection = BrokerError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BrokerError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| BrokerError::BadRequest(format!("path: {}", e.body_text())))?;
        check_id("instance_id", &id)?;
        Ok(InstanceId(id))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BindingIds {
    type Rejection = BrokerError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, BrokerError> {
        let Path((i, b)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| BrokerError::BadRequest(format!("path: {}", e.body_text())))?;
        check_id("instance_id", &i)?;
        check_id("binding_id", &b)?;
        Ok(BindingIds(i, b))
    }
}

/// The decoded `X-Broker-API-Originating-Identity` (400 if malformed).
#[derive(Debug, Clone)]
pub(crate) struct Identity(pub Option<OriginatingIdentity>);

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = BrokerError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, BrokerError> {
        super::gate::identity(&parts.headers)
    }
}

/// A request body type: which action it is, for its `parameters` schema.
pub(crate) trait OsbBody: DeserializeOwned {
    /// The action the body belongs to.
    const ACTION: Action;
}

/// A JSON object body. A non-JSON `Content-Type`, malformed JSON, non-objects and type errors
/// are 400 with the field path; unknown fields are ignored (as the spec requires).
///
/// The order of checks makes the reported problem the real one: `service_id` and `plan_id`
/// are checked against the catalog first (an unknown service is not "missing field
/// organization_guid"), then `parameters` against the plan's schema, then the rest.
pub(crate) struct OsbJson<T>(pub T);

/// The spec (2.14+, "Content Type"): bodies SHOULD be `application/json`; a broker MAY still
/// process a body sent without a `Content-Type`, and SHOULD reject a mismatched one with 400.
fn check_content_type(headers: &axum::http::HeaderMap) -> Result<(), BrokerError> {
    let Some(value) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("(not visible ASCII)");
    match super::gate::is_json_type(text) {
        true => Ok(()),
        false => Err(BrokerError::BadRequest(format!(
            "Content-Type {text:?} is not JSON; OSB request bodies are application/json"
        ))),
    }
}

/// `service_id` and `plan_id`, when present as strings, must be in the catalog and belong
/// together; absent or mistyped ones are left for the typed decoding to name.
fn check_catalog_ids(taxonomy: &Taxonomy, body: &Map<String, Value>) -> Result<(), BrokerError> {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (text("service_id"), text("plan_id")) {
        (Some(service), Some(plan)) => taxonomy.class_and_plan(service, plan).map(|_| ())?,
        (Some(service), None) if taxonomy.service(service).is_none() => {
            return Err(ResolveError::UnknownService(service.to_owned()).into());
        }
        (None, Some(plan)) if taxonomy.plan(plan).is_none() => {
            return Err(ResolveError::UnknownPlan(plan.to_owned()).into());
        }
        _ => {}
    }
    Ok(())
}

impl<T: OsbBody> FromRequest<Arc<Broker>> for OsbJson<T> {
    type Rejection = BrokerError;
    async fn from_request(req: Request, state: &Arc<Broker>) -> Result<Self, BrokerError> {
        check_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            match e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                true => BrokerError::PayloadTooLarge(e.body_text()),
                false => {
                    BrokerError::BadRequest(format!("cannot read request body: {}", e.body_text()))
                }
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(BrokerError::BadRequest(
                "a JSON object request body is required".to_owned(),
            ));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::BadRequest(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(body) = value else {
            return Err(BrokerError::BadRequest(
                "request body must be a JSON object".to_owned(),
            ));
        };
        check_catalog_ids(&state.taxonomy, &body)?;
        if let Some(Value::Object(parameters)) = body.get("parameters") {
            parameters::check(T::ACTION, parameters)?;
        }
        serde_path_to_error::deserialize(Value::Object(body))
            .map(OsbJson)
            .map_err(|e| {
                BrokerError::BadRequest(format!("request body field {}: {}", e.path(), e.inner()))
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn query_is_strict() {
        let q = OsbQuery::parse(Some("accepts_incomplete=true"), &["accepts_incomplete"]).unwrap();
        assert!(q.accepts_incomplete().unwrap());
        assert!(OsbQuery::parse(Some("x=1"), &["accepts_incomplete"]).is_err());
        assert!(OsbQuery::parse(Some("a=1&a=2"), &["a"]).is_err());
        let q = OsbQuery::parse(Some("accepts_incomplete=yes"), &["accepts_incomplete"]).unwrap();
        assert!(q.accepts_incomplete().is_err());
        let q = OsbQuery::parse(Some("service_id=a%20b"), &["service_id"]).unwrap();
        assert_eq!(q.required("service_id").unwrap(), "a b");
        assert!(q.required("plan_id").is_err());
        assert!(OsbQuery::parse(None, &[]).unwrap().0.is_empty());
    }
}
