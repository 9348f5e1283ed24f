//! Rewriting a `schemars` (OpenAPI 3 flavoured) schema into a Kubernetes *structural* schema.
//!
//! Kubernetes requires (apiextensions.k8s.io/v1, "Specifying a structural schema"): every
//! node has a `type`; no `$ref`; inside `oneOf`/`anyOf`/`allOf`/`not` nothing but value
//! validations (no `type`, `properties`, `description`, `default`, `nullable`); `properties`
//! and `additionalProperties` never together; only the formats it knows. `schemars` is asked
//! to inline every subschema, so only these rewrites remain:
//!
//! - an enum of documented unit variants (`oneOf` of `{enum: [x]}` branches) becomes one
//!   `{type: string, enum: [...]}`;
//! - an externally tagged enum (`oneOf` of single-property objects, `DnsSpec`) becomes one
//!   object holding every property, and a `oneOf` of `required` lists;
//! - `additionalProperties: false` is dropped (the API server prunes or, under strict field
//!   validation, refuses unknown fields itself), as are `title`, `nullable` and null defaults;
//! - integer formats other than `int32`/`int64` (`uint16`, …) are dropped, since the range is
//!   already `minimum`/`maximum`.

use serde_json::{Map, Value, json};

const JUNCTORS: [&str; 2] = ["oneOf", "anyOf"];

/// The structural form of `schema` (see the module docs).
pub fn rewrite(schema: Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(rewrite_node(map)),
        Value::Array(items) => Value::Array(items.into_iter().map(rewrite).collect()),
        other => other,
    }
}

fn rewrite_node(mut map: Map<String, Value>) -> Map<String, Value> {
    for key in ["$schema", "title", "nullable", "$defs", "definitions"] {
        map.remove(key);
    }
    if map.get("default") == Some(&Value::Null) {
        map.remove("default");
    }
    if map.get("additionalProperties") == Some(&Value::Bool(false)) {
        map.remove("additionalProperties");
    }
    if let Some(Value::String(f)) = map.get("format")
        && !["int32", "int64", "date-time", "double", "float", "byte"].contains(&f.as_str())
    {
        map.remove("format");
    }
    for junctor in JUNCTORS {
        if let Some(Value::Array(branches)) = map.remove(junctor) {
            merge_junctor(&mut map, junctor, branches);
        }
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    for prop in props.values_mut() {
                        *prop = rewrite(prop.take());
                    }
                }
            }
            "items" | "additionalProperties" => *value = rewrite(value.take()),
            _ => {}
        }
    }
    map
}

/// Folds a `oneOf`/`anyOf` into its parent in one of the two shapes `schemars` produces for
/// enums; any other junctor is kept with its branches reduced to value validations.
fn merge_junctor(map: &mut Map<String, Value>, junctor: &str, branches: Vec<Value>) {
    // `Option<T>` of a composite T comes as `anyOf: [T, {enum: [null]}]`: null is the field
    // left out, so only T remains, merged into the parent (whose description wins).
    let mut branches: Vec<Map<String, Value>> = branches
        .into_iter()
        .filter_map(|b| match rewrite(b) {
            Value::Object(m) if !is_null(&m) => Some(m),
            _ => None,
        })
        .collect();
    if branches.len() == 1 {
        for (key, value) in branches.remove(0) {
            map.entry(key).or_insert(value);
        }
        return;
    }
    let all_enums = branches.iter().all(|b| b.contains_key("enum"));
    let all_objects = branches.iter().all(|b| b.contains_key("properties"));
    if all_enums {
        let values: Vec<Value> = branches
            .iter()
            .filter_map(|b| b.get("enum").and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        map.insert("type".into(), json!("string"));
        map.insert("enum".into(), Value::Array(values));
    } else if all_objects {
        let mut properties = Map::new();
        let mut choices = Vec::new();
        for mut b in branches {
            if let Some(Value::Object(props)) = b.remove("properties") {
                properties.extend(props);
            }
            choices.push(json!({"required": b.remove("required").unwrap_or(json!([]))}));
        }
        map.insert("type".into(), json!("object"));
        map.insert("properties".into(), Value::Object(properties));
        map.insert(junctor.into(), Value::Array(choices));
    } else {
        let kept: Vec<Value> = branches.into_iter().map(Value::Object).collect();
        map.insert(junctor.into(), Value::Array(kept));
    }
}

fn is_null(branch: &Map<String, Value>) -> bool {
    branch.get("type") == Some(&json!("null")) || branch.get("enum") == Some(&json!([null]))
}

/// Adds `additionalProperties: false` to every object schema with `properties`, so that a
/// plain JSON Schema validator refuses unknown fields as the loader (`deny_unknown_fields`)
/// and the API server's strict field validation do.
pub fn refuse_unknown_fields(schema: &mut Value) {
    let Value::Object(map) = schema else { return };
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(props) = value {
                    props.values_mut().for_each(refuse_unknown_fields);
                }
            }
            "items" | "additionalProperties" => refuse_unknown_fields(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_optional_composite_is_the_composite() {
        let s = rewrite(json!({"description": "outer", "anyOf": [
            {"description": "inner", "type": "object", "properties": {"a": {"type": "string"}}},
            {"enum": [null]},
        ]}));
        assert_eq!(
            s,
            json!({"description": "outer", "type": "object", "properties": {"a": {"type": "string"}}})
        );
    }

    #[test]
    fn documented_unit_variants_become_one_string_enum() {
        let s = rewrite(json!({"oneOf": [
            {"type": "string", "enum": ["http1"], "description": "HTTP/1.1"},
            {"type": "string", "enum": ["http2"], "description": "h2c"},
        ], "default": "http1"}));
        assert_eq!(
            s,
            json!({"type": "string", "enum": ["http1", "http2"], "default": "http1"})
        );
    }

    #[test]
    fn tagged_variants_become_properties_and_required_choices() {
        let s = rewrite(json!({"oneOf": [
            {"type": "object", "properties": {"server": {"type": "string"}}, "required": ["server"], "additionalProperties": false},
            {"type": "object", "properties": {"workload": {"type": "string", "format": "uint16"}}, "required": ["workload"], "additionalProperties": false},
        ], "nullable": true}));
        assert_eq!(
            s,
            json!({
                "type": "object",
                "properties": {"server": {"type": "string"}, "workload": {"type": "string"}},
                "oneOf": [{"required": ["server"]}, {"required": ["workload"]}],
            })
        );
    }
}
