//! What the real server does to every Secret it stores (`pkg/apis/core/validation`,
//! `ValidateSecret`/`ValidateSecretUpdate`, and the JSON decoding of `[]byte` values).
//!
//! - decoding: `data` values must be base64 strings and `stringData` values strings (else
//!   400, the body cannot be decoded);
//! - defaults: `stringData` is folded into `data` (base64, overriding the same keys) and a
//!   missing `type` becomes `Opaque`;
//! - validation (422): keys are `[-._a-zA-Z0-9]+` (at most 253 characters); on update `type`
//!   never changes, and once `immutable: true` neither `data` nor `immutable` may change.
//!
//! Not modelled: the per-type required keys (`kubernetes.io/tls` needs `tls.crt`, …) and the
//! 1 MiB size limit.

use base64::Engine;
use serde_json::{Value, json};

use super::status::{Cause, FakeStatus};

const KEY_MESSAGE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// 400 unless `data` holds base64 strings and `stringData` strings.
pub(crate) fn decodable(secret: &Value) -> Result<(), FakeStatus> {
    let refuse = |why: String| {
        Err(FakeStatus::BadRequest(format!(
            "Secret in version \"v1\" cannot be handled as a Secret: {why}"
        )))
    };
    for (name, base64) in [("data", true), ("stringData", false)] {
        let values = match secret.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::Object(values)) => values,
            Some(_) => return refuse(format!("{name} must be an object of strings")),
        };
        for (key, value) in values {
            let Some(text) = value.as_str() else {
                return refuse(format!(
                    "json: cannot unmarshal {value} into Go struct field Secret.{name} of type string (key {key:?})"
                ));
            };
            if base64
                && base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_err()
            {
                return refuse(format!("illegal base64 data in data[{key}]"));
            }
        }
    }
    Ok(())
}

/// Folds `stringData` into `data` and defaults `type` to `Opaque` (call after
/// [`decodable`]).
pub(crate) fn defaults(secret: &mut Value) {
    let Value::Object(fields) = secret else {
        return;
    };
    if let Some(Value::Object(strings)) = fields.remove("stringData") {
        let data = fields.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            data[key.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    fields.entry("type").or_insert_with(|| json!("Opaque"));
}

/// The 422 causes of storing `secret` (replacing `old`, on update).
pub(crate) fn causes(secret: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(data) = secret["data"].as_object() {
        for key in data.keys() {
            let valid = !key.is_empty()
                && key.len() <= 253
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                && key != "."
                && key != ".."
                && !key.starts_with("..");
            if !valid {
                let message = format!("Invalid value: {key:?}: {KEY_MESSAGE}");
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    &format!("data[{key}]"),
                    message,
                ));
            }
        }
    }
    let Some(old) = old else {
        return causes;
    };
    if secret["type"] != old["type"] {
        let message = format!("Invalid value: {}: field is immutable", secret["type"]);
        causes.push(Cause::new("FieldValueInvalid", "type", message));
    }
    if old["immutable"] == json!(true) {
        let forbidden = "Forbidden: field is immutable when `immutable` is set";
        if secret["data"] != old["data"] {
            causes.push(Cause::new("FieldValueForbidden", "data", forbidden));
        }
        if secret["immutable"] != old["immutable"] {
            causes.push(Cause::new("FieldValueForbidden", "immutable", forbidden));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_data_is_folded_and_a_type_defaulted() {
        let mut secret = json!({"data":{"a":"eA==","b":"eA=="},"stringData":{"b":"yz"}});
        defaults(&mut secret);
        assert_eq!(
            secret,
            json!({"data":{"a":"eA==","b":"eXo="},"type":"Opaque"})
        );
    }

    #[test]
    fn undecodable_values_are_400() {
        assert!(decodable(&json!({"data":{"a":"eA=="},"stringData":{"b":"x"}})).is_ok());
        for bad in [
            json!({"data":{"a":"not base64!"}}),
            json!({"data":{"a":1}}),
            json!({"stringData":{"a":1}}),
            json!({"stringData":{"a":{"b":"c"}}}),
            json!({"data":[]}),
        ] {
            assert_eq!(decodable(&bad).unwrap_err().code(), 400, "{bad}");
        }
    }

    #[test]
    fn keys_type_and_immutability_are_checked() {
        let fields = |c: Vec<Cause>| c.into_iter().map(|c| c.field).collect::<Vec<_>>();
        let ok = json!({"data":{"a-b_c.d":"eA=="},"type":"Opaque"});
        assert!(causes(&ok, None).is_empty());
        let bad = json!({"data":{"a b":"eA==","..x":"eA=="},"type":"Opaque"});
        assert_eq!(fields(causes(&bad, None)), ["data[..x]", "data[a b]"]);
        let retyped = json!({"data":{"a-b_c.d":"eA=="},"type":"kubernetes.io/tls"});
        assert_eq!(fields(causes(&retyped, Some(&ok))), ["type"]);
        let frozen = json!({"data":{"a":"eA=="},"type":"Opaque","immutable":true});
        let changed = json!({"data":{"a":"eQ=="},"type":"Opaque","immutable":false});
        assert_eq!(
            fields(causes(&changed, Some(&frozen))),
            ["data", "immutable"]
        );
        assert!(causes(&frozen, Some(&frozen)).is_empty());
    }
}
