//! JSON schemas of the parse-don't-validate types, for the CRDs (`crate::crd`).
//!
//! Each schema states as much of the type's `FromStr` rule as a structural OpenAPI v3 schema
//! can: a pattern, a length, a range. Rules beyond that (a duration's range, a label key) are
//! enforced by the loader only and listed in `docs/kubernetes.md`. The cli's CRD table test
//! (`crates/cli/tests/cli/crds.rs`) feeds the same documents to the loader and to these
//! schemas, so the two cannot drift apart unnoticed.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::bounded::{BoundedU16, BoundedU32, BoundedU64};
use crate::duration::BoundedDuration;
use crate::entry::Selector;
use crate::labels::Labels;
use crate::resource::Name;
use crate::taxonomy::class::{Size, SizeLimits};
use crate::taxonomy::environment::Glob;
use crate::taxonomy::policy::TeamSource;

/// A DNS-1123 label ([`Name`]).
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A label value: empty, or alphanumeric ends around `[A-Za-z0-9._-]`.
pub const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";
/// A semantic version (`maintenanceInfo.version`): `MAJOR.MINOR.PATCH`, then `-` or `+` and anything.
pub const SEMVER_PATTERN: &str = "^[0-9]+\\.[0-9]+\\.[0-9]+([-+].*)?$";
/// A meshwork duration: `<number><unit>` sequences, units `ms`, `s`, `m`, `h`, `d`.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";
/// A SPIFFE ID (`spiffe://<trust domain>/<path>`), per the SPIFFE ID specification.
pub const SPIFFE_ID_PATTERN: &str = "^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$";
/// A SPIFFE trust domain name.
pub const TRUST_DOMAIN_PATTERN: &str = "^[a-z0-9._-]+$";
/// A workload selector (`unix:uid:N`, `unix:gid:N`, `unix:path:/abs`, `unix:process:PID:START`).
pub const SELECTOR_PATTERN: &str = "^unix:(uid:[0-9]+|gid:[0-9]+|path:/.*|process:[0-9]+:[0-9]+)$";
/// A `ServicePolicy` quota's team source.
pub const TEAM_SOURCE_PATTERN: &str = "^(context\\.(platform|namespace|clusterid|instance_name|organization_name|space_name)|identity\\..+)$";

impl JsonSchema for Name {
    fn schema_name() -> Cow<'static, str> {
        "Name".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "minLength": 1, "maxLength": 63, "pattern": NAME_PATTERN})
    }
}

impl JsonSchema for Labels {
    fn schema_name() -> Cow<'static, str> {
        "Labels".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // A structural schema cannot constrain map keys (no `propertyNames`), and a CEL rule
        // over an unbounded map would exceed the API server's cost budget: the key rule
        // (`crate::labels`) stays with the loader.
        json_schema!({
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN},
        })
    }
}

macro_rules! bounded_schema {
    ($name:ident, $int:ty) => {
        impl<const MIN: $int, const MAX: $int> JsonSchema for $name<MIN, MAX> {
            fn schema_name() -> Cow<'static, str> {
                format!("{}_{MIN}_{MAX}", stringify!($name)).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "integer", "minimum": MIN, "maximum": MAX})
            }
        }
    };
}
bounded_schema!(BoundedU16, u16);
bounded_schema!(BoundedU32, u32);
bounded_schema!(BoundedU64, u64);

impl<const MIN_MS: u64, const MAX_MS: u64> JsonSchema for BoundedDuration<MIN_MS, MAX_MS> {
    fn schema_name() -> Cow<'static, str> {
        format!("BoundedDuration_{MIN_MS}_{MAX_MS}").into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // The range is not expressible: a pattern cannot compare sums of units, and CEL's
        // duration() has no `d` unit. The loader checks it.
        let range = format!("between {} and {}", Self::MIN, Self::MAX);
        json_schema!({"type": "string", "pattern": DURATION_PATTERN, "maxLength": 64,
            "description": format!("A duration such as 90s or 1h30m (units ms, s, m, h, d), {range}.")})
    }
}

macro_rules! string_schema {
    ($ty:ty, $name:literal, $pattern:expr, $min:expr) => {
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                match $pattern {
                    Some(p) => json_schema!({"type": "string", "minLength": $min, "pattern": p}),
                    None => json_schema!({"type": "string", "minLength": $min}),
                }
            }
        }
    };
}
string_schema!(Selector, "Selector", Some(SELECTOR_PATTERN), 1);
string_schema!(TeamSource, "TeamSource", Some(TEAM_SOURCE_PATTERN), 1);
string_schema!(Glob, "Glob", None::<&str>, 1);

/// `schema_with` for a [`identity::SpiffeId`] field (a foreign type: no impl here).
pub fn spiffe_id(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "maxLength": 2048, "pattern": SPIFFE_ID_PATTERN})
}

/// `schema_with` for a [`identity::TrustDomain`] field.
pub fn trust_domain(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "minLength": 1, "maxLength": 255, "pattern": TRUST_DOMAIN_PATTERN})
}

/// `schema_with` for a [`Name`] held as a `String` (a `ServicePolicy` rule's `name`).
pub fn name(generator: &mut SchemaGenerator) -> Schema {
    Name::json_schema(generator)
}

/// `schema_with` for `ServiceClass` `spec.sizes`: a map keyed by [`Size`], so an object whose
/// properties are the sizes (at least one), each a [`SizeLimits`].
pub fn sizes(generator: &mut SchemaGenerator) -> Schema {
    let limits = generator.subschema_for::<SizeLimits>();
    let properties: serde_json::Map<String, serde_json::Value> = Size::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), limits.clone().to_value()))
        .collect();
    json_schema!({"type": "object", "minProperties": 1, "properties": properties})
}
