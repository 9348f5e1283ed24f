//! The JSON-schema side of the policy spec types: patterns and "exactly one of" rules that the
//! `JsonSchema` derives attach, so that the CRDs `meshwork crds` generates refuse what
//! `validate()` refuses wherever a schema can say so. What a schema cannot say (a path's
//! `..` segments, a CIDR's prefix length, a DNS pattern's wildcard placement) stays with
//! `validate()` alone.

use serde_json::{Value, json};

/// A SPIFFE ID, as in the SPIFFE ID specification (no `*`).
pub const SPIFFE_ID_PATTERN: &str = "^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$";
/// A SPIFFE ID path prefix: a SPIFFE ID, optionally ending in `/` (`spiffe://td/` is the whole
/// trust domain).
pub const SPIFFE_ID_PREFIX_PATTERN: &str = "^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*/?$";
/// A SPIFFE ID glob: whole path segments may be `*`.
pub const SPIFFE_ID_GLOB_PATTERN: &str = "^spiffe://[a-z0-9._-]+(/([A-Za-z0-9._-]+|\\*))*$";
/// An absolute request path (also a route template).
pub const ABSOLUTE_PATH_PATTERN: &str = "^/";
/// An HTTP method: an RFC 9110 token without lowercase letters.
pub const METHOD_PATTERN: &str = "^[-!#$%&'*+.^_`|~0-9A-Z]+$";
/// An HTTP field name: an RFC 9110 token.
pub const TOKEN_PATTERN: &str = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+$";
/// `targetService`: a non-empty run of visible ASCII.
pub const SERVICE_NAME_PATTERN: &str = "^[!-~]+$";

/// A `oneOf` requiring exactly one of `fields`: the structural form (each branch only
/// `required`) that both Kubernetes and plain JSON Schema validators enforce.
pub fn exactly_one(fields: &[&str]) -> Value {
    fields.iter().map(|f| json!({"required": [f]})).collect()
}
