//! What the real server checks on every write before it stores anything, in its order:
//! decoding (a body or patch result that is not an object, or whose `metadata` fields have
//! the wrong JSON types, is a 400, as Go's decoder refuses it), then — for creates — the
//! name and `resourceVersion` rules, then the kind's own rules: Secrets (`secret.rs`) and the
//! CRD schema (`schema.rs`), each a 422 `Invalid`.

use serde_json::Value;

use super::status::{Cause, FakeStatus};

/// The `metadata` fields the fake reads, with the JSON type Go's `ObjectMeta` decodes them as.
const METADATA_TYPES: &[(&str, Shape)] = &[
    ("name", Shape::String),
    ("generateName", Shape::String),
    ("namespace", Shape::String),
    ("uid", Shape::String),
    ("resourceVersion", Shape::String),
    ("labels", Shape::StringMap),
    ("annotations", Shape::StringMap),
    ("finalizers", Shape::StringList),
    ("ownerReferences", Shape::ObjectList),
];

#[derive(Debug, Clone, Copy)]
enum Shape {
    String,
    StringMap,
    StringList,
    ObjectList,
}

impl Shape {
    fn fits(self, value: &Value) -> bool {
        let reference = |r: &Value| {
            r.is_object()
                && ["uid", "name", "kind", "apiVersion"]
                    .iter()
                    .all(|f| r[*f].is_null() || r[*f].is_string())
        };
        match (self, value) {
            (_, Value::Null) | (Shape::String, Value::String(_)) => true,
            (Shape::StringMap, Value::Object(map)) => map.values().all(Value::is_string),
            (Shape::StringList, Value::Array(list)) => list.iter().all(Value::is_string),
            (Shape::ObjectList, Value::Array(list)) => list.iter().all(reference),
            _ => false,
        }
    }

    fn go_type(self) -> &'static str {
        match self {
            Shape::String => "string",
            Shape::StringMap => "map[string]string",
            Shape::StringList => "[]string",
            Shape::ObjectList => "[]v1.OwnerReference",
        }
    }
}

/// 400 unless `object` is a JSON object whose `metadata` (if any) is an object with the
/// field types of `ObjectMeta`: what the real server fails to decode.
pub(crate) fn decodable(object: &Value, kind: &str) -> Result<(), FakeStatus> {
    let refuse = |why: String| {
        Err(FakeStatus::BadRequest(format!(
            "the object provided is unrecognized (must be of type {kind}): {why}"
        )))
    };
    let Value::Object(fields) = object else {
        return refuse(format!("cannot decode {} as an object", json_type(object)));
    };
    let metadata = match fields.get("metadata") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Object(metadata)) => metadata,
        Some(other) => {
            return refuse(format!(
                "cannot decode {} into metadata of type v1.ObjectMeta",
                json_type(other)
            ));
        }
    };
    for (name, shape) in METADATA_TYPES {
        if let Some(value) = metadata.get(*name)
            && !shape.fits(value)
        {
            return refuse(format!(
                "cannot decode {} into metadata.{name} of type {}",
                json_type(value),
                shape.go_type()
            ));
        }
    }
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The real server's create-only name check: a DNS-1123 subdomain (422).
pub(crate) fn creatable(name: &str) -> Result<(), Vec<Cause>> {
    if !is_dns1123_subdomain(name) {
        return Err(vec![Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!(
                "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ),
        )]);
    }
    Ok(())
}

/// Whether `object` carries a `metadata.resourceVersion` (refused on create).
pub(crate) fn has_resource_version(object: &Value) -> bool {
    object["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
}

/// At most 253 characters of dot-separated DNS-1123 labels (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`).
pub(crate) fn is_dns1123_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_objects_with_object_metadata_of_the_right_types_decode() {
        assert!(decodable(&json!({"metadata":{"name":"a","labels":{"k":"v"}}}), "K").is_ok());
        assert!(decodable(&json!({}), "K").is_ok());
        for bad in [
            json!([]),
            json!("x"),
            json!(1),
            json!({"metadata": []}),
            json!({"metadata": "x"}),
            json!({"metadata": {"name": 1}}),
            json!({"metadata": {"labels": {"k": 1}}}),
            json!({"metadata": {"finalizers": "f"}}),
            json!({"metadata": {"ownerReferences": [{"uid": 1}]}}),
        ] {
            let status = decodable(&bad, "K").unwrap_err();
            assert_eq!(status.code(), 400, "{bad}");
        }
    }

    #[test]
    fn names_must_be_dns_subdomains() {
        for good in ["a", "a-b.c", "0x", &"a".repeat(253)] {
            assert!(is_dns1123_subdomain(good), "{good}");
        }
        for bad in ["", "A", "a_b", "-a", "a.", "a..b", &"a".repeat(254)] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }
}
