//! Configuration `parameters`: what the broker accepts, published as each plan's `schemas`
//! (JSON Schema draft-04, OSB 2.13+) so a platform can validate before calling, and the
//! check that holds requests to the same declaration (400 naming the field).
//!
//! Today no operation takes a parameter: class and size come from the catalog plan, the
//! environment and the administrator's `ServicePolicy`, never from the request (a request
//! cannot pick a provider, a server or a limit). The schemas therefore say "an object with no
//! properties", and a request carrying any parameter is refused rather than silently ignored.
//! A parameter added later goes into [`accepted`] and both sides follow.

use serde_json::{Map, Value, json};

use crate::BrokerError;

/// The actions whose requests carry `parameters` (the spec's schema keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `PUT /v2/service_instances/:id`.
    Provision,
    /// `PATCH /v2/service_instances/:id`.
    Update,
    /// `PUT .../service_bindings/:id`.
    Bind,
}

impl Action {
    fn schema_path(self) -> &'static str {
        match self {
            Action::Provision => "service_instance.create",
            Action::Update => "service_instance.update",
            Action::Bind => "service_binding.create",
        }
    }
}

/// A parameter an action accepts: its name and JSON Schema type.
type Accepted = (&'static str, &'static str);

/// The parameters each action accepts (none yet; see the module documentation).
fn accepted(_op: Action) -> &'static [Accepted] {
    &[]
}

fn schema(op: Action) -> Value {
    let properties: Map<String, Value> = accepted(op)
        .iter()
        .map(|(name, ty)| ((*name).to_owned(), json!({ "type": ty })))
        .collect();
    json!({
        "parameters": {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": properties,
            "additionalProperties": false,
        }
    })
}

/// The plan `schemas` object.
pub(crate) fn plan_schemas() -> Value {
    json!({
        "service_instance": {
            "create": schema(Action::Provision),
            "update": schema(Action::Update),
        },
        "service_binding": {
            "create": schema(Action::Bind),
        },
    })
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        _ => false,
    }
}

/// Checks a request's `parameters` against the action's schema; the error names the field.
pub(crate) fn check(op: Action, parameters: &Map<String, Value>) -> Result<(), BrokerError> {
    let accepted = accepted(op);
    for (name, value) in parameters {
        match accepted.iter().find(|(n, _)| n == name) {
            Some((_, ty)) if type_matches(ty, value) => {}
            Some((_, ty)) => {
                return Err(BrokerError::BadRequest(format!(
                    "request body field parameters.{name} must be of type {ty} (see the plan's schemas.{}.parameters in the catalog)",
                    op.schema_path()
                )));
            }
            None => {
                return Err(BrokerError::BadRequest(format!(
                    "request body field parameters.{name} is not accepted: {} takes no parameters (size comes from the plan and the environment's ServicePolicy; see the plan's schemas.{}.parameters in the catalog)",
                    op.schema_path(),
                    op.schema_path()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn schemas_and_check_agree() {
        let s = plan_schemas();
        let create = &s["service_instance"]["create"]["parameters"];
        assert_eq!(create["type"], "object");
        assert_eq!(create["additionalProperties"], false);
        assert!(s["service_binding"]["create"]["parameters"].is_object());
        assert!(check(Action::Provision, &Map::new()).is_ok());
        let mut one = Map::new();
        one.insert("size".into(), json!("xl"));
        let err = check(Action::Bind, &one).unwrap_err().to_string();
        assert!(err.contains("parameters.size"), "{err}");
        assert!(err.contains("service_binding.create"), "{err}");
    }
}
