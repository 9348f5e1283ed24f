//! Caller matchers: which SPIFFE IDs a rule's `from` entry selects.

use std::fmt;

use identity::{SpiffeId, TrustDomain};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Errors, Problem};

/// One `from` entry; set exactly one field.
///
/// - `spiffeId`: exactly this ID.
/// - `spiffeIdPrefix`: every ID of the trust domain whose path starts with these *segments*
///   (`spiffe://td/ns/x/` and `spiffe://td/ns/x` both match `spiffe://td/ns/x` and
///   `spiffe://td/ns/x/sa/y`, not `spiffe://td/ns/xy`); `spiffe://td/` matches the whole
///   trust domain.
/// - `spiffeIdGlob`: like an exact ID where a segment may be `*`, matching exactly one
///   segment (`spiffe://td/ns/*/sa/store`). The trust domain cannot contain `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(extend("oneOf" = super::schema::exactly_one(&["spiffeId", "spiffeIdPrefix", "spiffeIdGlob"])))]
pub struct IdentityMatcherSpec {
    /// An exact SPIFFE ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(super::schema::SPIFFE_ID_PATTERN))]
    pub spiffe_id: Option<String>,
    /// A SPIFFE ID path prefix (segment-wise), within one trust domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(super::schema::SPIFFE_ID_PREFIX_PATTERN))]
    pub spiffe_id_prefix: Option<String>,
    /// A SPIFFE ID whose path segments may be `*` (one segment each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(super::schema::SPIFFE_ID_GLOB_PATTERN))]
    pub spiffe_id_glob: Option<String>,
}

/// A parsed caller matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityMatcher {
    Exact(SpiffeId),
    /// Trust domain plus path segments the caller's path must start with.
    Prefix(TrustDomain, Vec<String>),
    /// Trust domain plus segments, `None` standing for `*`.
    Glob(TrustDomain, Vec<Option<String>>),
}

impl IdentityMatcher {
    /// Parses one spec entry, recording problems under `field`.
    pub(crate) fn parse(
        spec: &IdentityMatcherSpec,
        field: &str,
        errors: &mut Errors,
    ) -> Option<Self> {
        let parsed = match (
            &spec.spiffe_id,
            &spec.spiffe_id_prefix,
            &spec.spiffe_id_glob,
        ) {
            (Some(id), None, None) => parse_exact(id).map_err(|p| (p, "spiffeId")),
            (None, Some(prefix), None) => parse_prefix(prefix).map_err(|p| (p, "spiffeIdPrefix")),
            (None, None, Some(glob)) => parse_glob(glob).map_err(|p| (p, "spiffeIdGlob")),
            _ => Err((
                Problem::ExactlyOne("spiffeId, spiffeIdPrefix, spiffeIdGlob"),
                "",
            )),
        };
        parsed
            .map_err(|(problem, name)| errors.push_at(field, name, problem))
            .ok()
    }

    /// Whether `id` is selected.
    pub(crate) fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            IdentityMatcher::Exact(exact) => exact == id,
            IdentityMatcher::Prefix(td, segments) => {
                td == id.trust_domain() && {
                    let mut path = id_segments(id);
                    segments.iter().all(|s| path.next() == Some(s.as_str()))
                }
            }
            IdentityMatcher::Glob(td, segments) => {
                td == id.trust_domain() && {
                    let mut path = id_segments(id);
                    segments.iter().all(|s| {
                        path.next()
                            .is_some_and(|p| s.as_deref().is_none_or(|s| s == p))
                    }) && path.next().is_none()
                }
            }
        }
    }
}

/// The path segments of a SPIFFE ID (none for `spiffe://td`).
pub(crate) fn id_segments(id: &SpiffeId) -> impl Iterator<Item = &str> {
    id.path().split('/').skip(1)
}

fn parse_exact(s: &str) -> Result<IdentityMatcher, Problem> {
    if s.contains('*') {
        return Err(Problem::WildcardOutsideGlob);
    }
    s.parse()
        .map(IdentityMatcher::Exact)
        .map_err(Problem::SpiffeId)
}

fn parse_prefix(s: &str) -> Result<IdentityMatcher, Problem> {
    if s.contains('*') {
        return Err(Problem::WildcardOutsideGlob);
    }
    let id: SpiffeId = s
        .strip_suffix('/')
        .unwrap_or(s)
        .parse()
        .map_err(Problem::SpiffeId)?;
    let segments = id_segments(&id).map(str::to_owned).collect();
    Ok(IdentityMatcher::Prefix(id.trust_domain().clone(), segments))
}

/// Validates a glob by parsing it as a SPIFFE ID with each `*` segment replaced by a
/// placeholder, so the SPIFFE character rules apply to every literal segment unchanged.
fn parse_glob(s: &str) -> Result<IdentityMatcher, Problem> {
    let after_scheme = s.strip_prefix("spiffe://").unwrap_or(s);
    let td_end = after_scheme.find('/').unwrap_or(after_scheme.len());
    if after_scheme[..td_end].contains('*') {
        return Err(Problem::WildcardInTrustDomain);
    }
    let path = &after_scheme[td_end..];
    let segments: Vec<Option<String>> = path
        .split('/')
        .skip(1)
        .map(|seg| match seg {
            "*" => Ok(None),
            s if s.contains('*') => Err(Problem::PartialWildcard),
            s => Ok(Some(s.to_owned())),
        })
        .collect::<Result<_, _>>()?;
    let placeholder: String = segments
        .iter()
        .map(|s| format!("/{}", s.as_deref().unwrap_or("x")))
        .collect();
    let td_part = &s[..s.len() - path.len()];
    let id: SpiffeId = format!("{td_part}{placeholder}")
        .parse()
        .map_err(Problem::SpiffeId)?;
    Ok(IdentityMatcher::Glob(id.trust_domain().clone(), segments))
}

impl fmt::Display for IdentityMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityMatcher::Exact(id) => write!(f, "spiffeId {id}"),
            IdentityMatcher::Prefix(td, segments) => {
                write!(f, "spiffeIdPrefix spiffe://{td}/")?;
                segments.iter().try_for_each(|s| write!(f, "{s}/"))
            }
            IdentityMatcher::Glob(td, segments) => {
                write!(f, "spiffeIdGlob spiffe://{td}")?;
                segments
                    .iter()
                    .try_for_each(|s| write!(f, "/{}", s.as_deref().unwrap_or("*")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn matcher(
        spec: IdentityMatcherSpec,
    ) -> Result<IdentityMatcher, Vec<super::super::FieldError>> {
        let mut errors = Errors::default();
        let m = IdentityMatcher::parse(&spec, "from[0]", &mut errors);
        errors
            .finish(m)
            .map(|m| m.unwrap_or_else(|| panic!("no matcher and no error")))
            .map_err(|e| e.0)
    }

    fn prefix(s: &str) -> IdentityMatcher {
        matcher(IdentityMatcherSpec {
            spiffe_id_prefix: Some(s.into()),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn glob(s: &str) -> Result<IdentityMatcher, Vec<super::super::FieldError>> {
        matcher(IdentityMatcherSpec {
            spiffe_id_glob: Some(s.into()),
            ..Default::default()
        })
    }

    #[test]
    fn prefix_is_segment_wise_within_one_trust_domain() {
        for p in ["spiffe://td/ns/x/", "spiffe://td/ns/x"] {
            let m = prefix(p);
            assert_eq!(m.to_string(), "spiffeIdPrefix spiffe://td/ns/x/");
            assert!(m.matches(&id("spiffe://td/ns/x")));
            assert!(m.matches(&id("spiffe://td/ns/x/sa/y")));
            assert!(!m.matches(&id("spiffe://td/ns/xy")));
            assert!(!m.matches(&id("spiffe://other/ns/x/sa/y")));
            assert!(!m.matches(&id("spiffe://td/ns")));
        }
        let whole = prefix("spiffe://td/");
        assert!(whole.matches(&id("spiffe://td")));
        assert!(whole.matches(&id("spiffe://td/a")));
        assert!(!whole.matches(&id("spiffe://tdx/a")));
    }

    #[test]
    fn glob_star_is_exactly_one_segment() {
        let m = glob("spiffe://td/ns/*/sa/store").unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(m.to_string(), "spiffeIdGlob spiffe://td/ns/*/sa/store");
        assert!(m.matches(&id("spiffe://td/ns/default/sa/store")));
        assert!(!m.matches(&id("spiffe://td/ns/a/b/sa/store")));
        assert!(!m.matches(&id("spiffe://td/ns/default/sa/store/x")));
        assert!(!m.matches(&id("spiffe://td/ns/default/sa/billing")));
        assert!(!m.matches(&id("spiffe://other/ns/default/sa/store")));
    }

    #[test]
    fn errors_name_the_field() {
        let problem = |r: Result<IdentityMatcher, Vec<super::super::FieldError>>| {
            let e = r.err().unwrap_or_default();
            e.first().map(|e| (e.field.clone(), e.problem.clone()))
        };
        assert_eq!(
            problem(glob("spiffe://*.td/ns/x")),
            Some((
                "from[0].spiffeIdGlob".into(),
                Problem::WildcardInTrustDomain
            ))
        );
        assert_eq!(
            problem(glob("spiffe://td/ns-*/x")).map(|p| p.1),
            Some(Problem::PartialWildcard)
        );
        assert!(matches!(
            problem(glob("spiffe://td/ns/*/a b")).map(|p| p.1),
            Some(Problem::SpiffeId(_))
        ));
        assert!(matches!(
            problem(glob("http://td/ns/*")).map(|p| p.1),
            Some(Problem::SpiffeId(_))
        ));
        let both = IdentityMatcherSpec {
            spiffe_id: Some("spiffe://td/a".into()),
            spiffe_id_glob: Some("spiffe://td/*".into()),
            ..Default::default()
        };
        assert_eq!(problem(matcher(both)).map(|p| p.0), Some("from[0]".into()));
        let star_prefix = IdentityMatcherSpec {
            spiffe_id_prefix: Some("spiffe://td/*/".into()),
            ..Default::default()
        };
        assert_eq!(
            problem(matcher(star_prefix)),
            Some((
                "from[0].spiffeIdPrefix".into(),
                Problem::WildcardOutsideGlob
            ))
        );
    }
}
