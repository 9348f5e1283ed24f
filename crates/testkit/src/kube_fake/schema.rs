//! A custom resource's `openAPIV3Schema`, applied to every write as the real server applies
//! a CRD's structural schema, in its order: **prune** (fields the schema does not name, and
//! `null`s of fields not `nullable`, are dropped, unless `x-kubernetes-preserve-unknown-fields`),
//! **default** (`default` of each missing property), **validate**.
//!
//! Validation is the `jsonschema` crate's (draft 4, the JSON Schema OpenAPI v3.0 builds on:
//! types, `required`, `enum`, `pattern`, `minimum`/`maximum`, `maxLength`, `maxItems`,
//! `oneOf`/`anyOf`, …), with its errors worded as the real server's causes. Pruning and
//! defaulting are Kubernetes' own semantics, which no JSON Schema validator implements (JSON
//! Schema never changes the instance), so they are written here; both walk only
//! `properties`, `additionalProperties` and `items`, as a structural schema allows nothing
//! else to describe fields.
//!
//! Not modelled: CEL `x-kubernetes-validations` rules (not evaluated at all), `format`
//! checks, `x-kubernetes-list-type`/`-map-keys` uniqueness, `x-kubernetes-embedded-resource`,
//! and the real server's ratcheting of unchanged invalid fields on update. `metadata`,
//! `apiVersion` and `kind` at the root are never pruned (the server handles them itself).

use serde_json::{Map, Value, json};

use super::status::Cause;

/// A compiled schema.
pub(crate) struct Schema {
    source: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles `source` (an `openAPIV3Schema`); the error is the validator's message.
    pub(crate) fn compile(source: &Value) -> Result<Schema, String> {
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(false)
            .build(source)
            .map_err(|e| e.to_string())?;
        Ok(Schema {
            source: source.clone(),
            validator,
        })
    }

    /// Prunes and defaults `object` in place, then validates it.
    pub(crate) fn admit(&self, object: &mut Value) -> Result<(), Vec<Cause>> {
        prune_root(object, &self.source);
        default(object, &self.source);
        let causes: Vec<Cause> = self
            .validator
            .iter_errors(object)
            .map(|error| cause(object, &error))
            .collect();
        if causes.is_empty() {
            Ok(())
        } else {
            Err(causes)
        }
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"] == json!(true)
}

fn prune_root(object: &mut Value, schema: &Value) {
    let Value::Object(fields) = object else {
        return;
    };
    let kept: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
        .iter()
        .filter_map(|k| fields.remove(*k).map(|v| ((*k).to_owned(), v)))
        .collect();
    prune(object, schema);
    if let Value::Object(fields) = object {
        fields.extend(kept);
    }
}

/// Structural pruning: drops what `schema` does not describe.
fn prune(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(fields) => prune_object(fields, schema),
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                items.iter_mut().for_each(|i| prune(i, item));
            }
        }
        _ => {}
    }
}

fn prune_object(fields: &mut Map<String, Value>, schema: &Value) {
    let preserve = preserves_unknown(schema);
    if let Some(Value::Object(properties)) = schema.get("properties") {
        fields.retain(|name, value| match properties.get(name) {
            Some(property) => !(value.is_null() && property["nullable"] != json!(true)),
            None => preserve,
        });
        for (name, value) in fields.iter_mut() {
            if let Some(property) = properties.get(name) {
                prune(value, property);
            }
        }
    } else if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        fields.values_mut().for_each(|v| prune(v, additional));
    } else if !preserve && schema.get("type") == Some(&json!("object")) {
        fields.clear();
    }
}

/// Applies `default`s of missing (or pruned `null`) properties, outside in.
fn default(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(fields) => {
            if let Some(Value::Object(properties)) = schema.get("properties") {
                for (name, property) in properties {
                    if let Some(default) = property.get("default")
                        && !fields.contains_key(name)
                    {
                        fields.insert(name.clone(), default.clone());
                    }
                    if let Some(field) = fields.get_mut(name) {
                        self::default(field, property);
                    }
                }
            } else if let Some(additional) = schema.get("additionalProperties") {
                fields
                    .values_mut()
                    .for_each(|v| self::default(v, additional));
            }
        }
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                items.iter_mut().for_each(|i| self::default(i, item));
            }
        }
        _ => {}
    }
}

/// `/spec/ports/0/port` in `object` → `spec.ports[0].port`.
fn field_path(object: &Value, pointer: &str) -> String {
    let mut path = String::new();
    let mut node = Some(object);
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                path.push_str(&format!("[{segment}]"));
                node = segment.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&segment);
                node = node.and_then(|n| n.get(&segment));
            }
        }
    }
    path
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// One validator error as the real server's cause (`k8s.io/kube-openapi` validation errors
/// converted by apiextensions-apiserver).
fn cause(object: &Value, error: &jsonschema::ValidationError<'_>) -> Cause {
    use jsonschema::error::{TypeKind, ValidationErrorKind as Kind};
    let field = field_path(object, error.instance_path().as_str());
    let instance = error.instance();
    let at = if field.is_empty() { "body" } else { &field };
    let (reason, message) = match error.kind() {
        Kind::Required { property } => {
            let property = property.as_str().unwrap_or_default();
            let path = if field.is_empty() {
                property.to_owned()
            } else {
                format!("{field}.{property}")
            };
            return Cause::new("FieldValueRequired", &path, "Required value");
        }
        Kind::Type { kind } => {
            let actual = type_name(instance);
            let wanted = match kind {
                TypeKind::Single(one) => one.to_string(),
                TypeKind::Multiple(set) => format!("{set:?}"),
            };
            let message = format!(
                "Invalid value: \"{actual}\": {at} in body must be of type {wanted}: \"{actual}\""
            );
            ("FieldValueTypeInvalid", message)
        }
        Kind::Enum { options } => {
            let supported: Vec<String> = options
                .as_array()
                .map(|o| o.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            let supported = supported.join(", ");
            let message = format!("Unsupported value: {instance}: supported values: {supported}");
            ("FieldValueNotSupported", message)
        }
        Kind::MaxLength { limit } => (
            "FieldValueTooLong",
            format!("Too long: may not be more than {limit} bytes"),
        ),
        Kind::MaxItems { limit } => {
            let count = instance.as_array().map_or(0, Vec::len);
            let message = format!("Too many: {count}: must have at most {limit} items");
            ("FieldValueTooMany", message)
        }
        other => {
            let why = invalid_why(other).unwrap_or_else(|| error.to_string());
            let message = format!("Invalid value: {instance}: {at} in body {why}");
            ("FieldValueInvalid", message)
        }
    };
    Cause::new(reason, &field, message)
}

/// The real server's wording of the limits it reports as `FieldValueInvalid`.
fn invalid_why(kind: &jsonschema::error::ValidationErrorKind) -> Option<String> {
    use jsonschema::error::ValidationErrorKind as Kind;
    Some(match kind {
        Kind::Pattern { pattern } => format!("should match '{pattern}'"),
        Kind::Minimum { limit } => format!("should be greater than or equal to {limit}"),
        Kind::Maximum { limit } => format!("should be less than or equal to {limit}"),
        Kind::MinLength { limit } => format!("should be at least {limit} chars long"),
        Kind::MinItems { limit } => format!("should have at least {limit} items"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::compile(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["port"],
                    "properties": {
                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                        "name": {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"},
                        "tags": {"type": "array", "items": {"type": "object",
                                 "properties": {"k": {"type": "string"}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "map": {"type": "object", "additionalProperties": {"type": "string"}}
                    }
                }
            }
        }))
        .unwrap()
    }

    #[test]
    fn unknown_fields_and_non_nullable_nulls_are_pruned_and_defaults_applied() {
        let mut object = json!({"metadata":{"name":"x","odd":1},"kind":"K","junk":1,
            "spec":{"port":80,"extra":true,"name":null,"tags":[{"k":"v","z":1}],
                    "free":{"anything":1},"map":{"a":"b"}}});
        schema().admit(&mut object).unwrap();
        assert_eq!(
            object,
            json!({"metadata":{"name":"x","odd":1},"kind":"K",
                "spec":{"port":80,"mode":"a","tags":[{"k":"v"}],"free":{"anything":1},"map":{"a":"b"}}})
        );
    }

    #[test]
    fn violations_are_causes_with_field_paths() {
        let mut object = json!({"spec":{"port":70000,"mode":"c","name":"ABCD","tags":[{"k":1}]}});
        let causes = schema().admit(&mut object).unwrap_err();
        let by_field = |f: &str| {
            causes
                .iter()
                .filter(|c| c.field == f)
                .map(|c| c.reason)
                .collect::<Vec<_>>()
        };
        assert_eq!(by_field("spec.port"), ["FieldValueInvalid"], "{causes:?}");
        assert_eq!(by_field("spec.mode"), ["FieldValueNotSupported"]);
        assert_eq!(by_field("spec.tags[0].k"), ["FieldValueTypeInvalid"]);
        let mut name = by_field("spec.name");
        name.sort_unstable();
        assert_eq!(name, ["FieldValueInvalid", "FieldValueTooLong"]);
        let mut missing = json!({"spec":{}});
        let causes = schema().admit(&mut missing).unwrap_err();
        assert_eq!(
            causes,
            [Cause {
                reason: "FieldValueRequired",
                message: "Required value".into(),
                field: "spec.port".into()
            }]
        );
        assert_eq!(
            crate::kube_fake::status::summary(&causes),
            "spec.port: Required value"
        );
    }
}
