//! Route templates such as `/customers/{id}/charges`, matched against [`NormalizedPath`]s.
//!
//! Syntax (one segment at a time, separated by `/`, starting with `/`):
//! - a **literal** segment, normalised with exactly the rules of [`crate::path`]
//!   (`%63harges` ≡ `charges`);
//! - `{name}`: a **parameter** matching exactly one (non-empty) segment;
//! - `{name...}`: a **rest parameter**, only as the last segment, matching zero or more
//!   remaining segments (`/files/{path...}` matches `/files`, `/files/a` and `/files/a/b`).
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*` and unique within a template. Parameters must be whole
//! segments (`/v{n}` is refused); empty segments (`//`), `.` and `..` are refused because a
//! normalised path never contains them, so such a template could never match. A trailing `/`
//! is ignored, as in path normalisation. Captured values are in normal form (escapes other
//! than unreserved characters stay encoded); a rest capture joins its segments with `/`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::path::{NormalizedPath, PathError, push_normalized_segment};

/// Why a route template was refused; offsets are byte offsets into the template.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteTemplateError {
    /// The template does not start with `/`.
    #[error("route template must start with '/'")]
    NotAbsolute,
    /// `//` in the template.
    #[error("empty segment at byte {offset}: normalised paths never contain '//'")]
    EmptySegment {
        /// Where the empty segment is.
        offset: usize,
    },
    /// A `.` or `..` segment.
    #[error("dot segment at byte {offset}: normalised paths never contain '.' or '..' segments")]
    DotSegment {
        /// Where the segment starts.
        offset: usize,
    },
    /// `{` or `}` that does not form a whole-segment parameter.
    #[error(
        "parameter at byte {offset} must be a whole segment written '{{name}}' or '{{name...}}'"
    )]
    PartialParameter {
        /// Where the segment starts.
        offset: usize,
    },
    /// A parameter name that is not an identifier.
    #[error(
        "invalid parameter name {name:?} at byte {offset}: use letters, digits and '_', not starting with a digit"
    )]
    InvalidParameterName {
        /// Where the segment starts.
        offset: usize,
        /// The name found.
        name: String,
    },
    /// The same name twice.
    #[error("duplicate parameter name {name:?} at byte {offset}")]
    DuplicateParameter {
        /// Where the second occurrence starts.
        offset: usize,
        /// The name.
        name: String,
    },
    /// `{rest...}` not in last position.
    #[error("rest parameter at byte {offset} must be the last segment")]
    RestNotLast {
        /// Where the rest parameter starts.
        offset: usize,
    },
    /// A literal segment the path normaliser refuses.
    #[error("invalid literal segment")]
    Literal(#[source] PathError),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Segment {
    Literal(String),
    Param(String),
    Rest(String),
}

/// A parsed route template (see the [module docs](self)). Built only through [`FromStr`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteTemplate {
    source: String,
    segments: Vec<Segment>,
}

/// One element of a template, as exposed to indexes (the engine's path trie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateSegment<'a> {
    /// Must equal this normalised segment.
    Literal(&'a str),
    /// Any one segment.
    Param(&'a str),
    /// Zero or more remaining segments (always last).
    Rest(&'a str),
}

/// Values captured by [`RouteTemplate::captures`]: `(name, value)` in template order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captures<'t, 'p> {
    values: Vec<(&'t str, &'p str)>,
}

impl<'t, 'p> Captures<'t, 'p> {
    /// The value captured for `name`.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, v)| v)
    }

    /// All `(name, value)` pairs in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&'t str, &'p str)> + '_ {
        self.values.iter().copied()
    }
}

impl RouteTemplate {
    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed segments, for building indexes.
    pub fn segments(&self) -> impl Iterator<Item = TemplateSegment<'_>> + '_ {
        self.segments.iter().map(|s| match s {
            Segment::Literal(l) => TemplateSegment::Literal(l),
            Segment::Param(p) => TemplateSegment::Param(p),
            Segment::Rest(r) => TemplateSegment::Rest(r),
        })
    }

    /// Whether `path` matches the template.
    pub fn matches(&self, path: &NormalizedPath) -> bool {
        self.walk(path, |_, _| {})
    }

    /// The parameter values if `path` matches.
    pub fn captures<'t, 'p>(&'t self, path: &'p NormalizedPath) -> Option<Captures<'t, 'p>> {
        let mut values = Vec::new();
        self.walk(path, |name, value| values.push((name, value)))
            .then_some(Captures { values })
    }

    /// Matches segment by segment, reporting each captured parameter to `capture`.
    fn walk<'t, 'p>(
        &'t self,
        path: &'p NormalizedPath,
        mut capture: impl FnMut(&'t str, &'p str),
    ) -> bool {
        let s = path.as_str();
        let mut rest = if path.is_root() { "" } else { &s[1..] };
        for segment in &self.segments {
            if let Segment::Rest(name) = segment {
                capture(name, rest);
                return true;
            }
            if rest.is_empty() {
                return false;
            }
            let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
            match segment {
                Segment::Literal(l) if l != head => return false,
                Segment::Param(name) => capture(name, head),
                _ => {}
            }
            rest = tail;
        }
        rest.is_empty()
    }
}

impl FromStr for RouteTemplate {
    type Err = RouteTemplateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let body = s.strip_prefix('/').ok_or(RouteTemplateError::NotAbsolute)?;
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let mut offset = 1;
        let mut previous_offset = 0;
        if !body.is_empty() {
            for raw in body.split('/') {
                if matches!(segments.last(), Some(Segment::Rest(_))) {
                    return Err(RouteTemplateError::RestNotLast {
                        offset: previous_offset,
                    });
                }
                let segment = parse_segment(raw, offset)?;
                if let Segment::Param(name) | Segment::Rest(name) = &segment
                    && segments
                        .iter()
                        .any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == name))
                {
                    return Err(RouteTemplateError::DuplicateParameter {
                        offset,
                        name: name.clone(),
                    });
                }
                segments.push(segment);
                previous_offset = offset;
                offset += raw.len() + 1;
            }
        }
        Ok(RouteTemplate {
            source: s.to_owned(),
            segments,
        })
    }
}

fn parse_segment(raw: &str, offset: usize) -> Result<Segment, RouteTemplateError> {
    match raw {
        "" => return Err(RouteTemplateError::EmptySegment { offset }),
        "." | ".." => return Err(RouteTemplateError::DotSegment { offset }),
        _ => {}
    }
    if let Some(inner) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        let (name, rest) = match inner.strip_suffix("...") {
            Some(name) => (name, true),
            None => (inner, false),
        };
        if !is_identifier(name) {
            return Err(RouteTemplateError::InvalidParameterName {
                offset,
                name: name.to_owned(),
            });
        }
        let name = name.to_owned();
        return Ok(if rest {
            Segment::Rest(name)
        } else {
            Segment::Param(name)
        });
    }
    if raw.contains(['{', '}']) {
        return Err(RouteTemplateError::PartialParameter { offset });
    }
    let mut literal = String::with_capacity(raw.len());
    push_normalized_segment(raw, offset, &mut literal).map_err(RouteTemplateError::Literal)?;
    if literal == "." || literal == ".." {
        return Err(RouteTemplateError::DotSegment { offset });
    }
    Ok(Segment::Literal(literal))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl fmt::Display for RouteTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl Serialize for RouteTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for RouteTemplate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for RouteTemplate {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RouteTemplate".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // Only "absolute" is expressible; segment and parameter rules stay with `FromStr`.
        schemars::json_schema!({"type": "string", "pattern": crate::model::schema::ABSOLUTE_PATH_PATTERN})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(s: &str) -> RouteTemplate {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn path(s: &str) -> NormalizedPath {
        NormalizedPath::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn params_match_one_whole_segment() {
        let t = template("/customers/{id}/charges");
        assert!(t.matches(&path("/customers/42/charges")));
        assert!(t.matches(&path("/customers/42/charges/")));
        assert!(t.matches(&path("/customers/42/x/../charges")));
        assert!(!t.matches(&path("/customers/charges")));
        assert!(!t.matches(&path("/customers/4/2/charges")));
        assert!(!t.matches(&path("/customers/42/charges/1")));
        assert!(!t.matches(&path("/customers/42")));
        let p = path("/customers/a%20b/charges");
        let caps = t.captures(&p);
        assert_eq!(caps.as_ref().and_then(|c| c.get("id")), Some("a%20b"));
        assert_eq!(caps.map(|c| c.iter().count()), Some(1));
    }

    #[test]
    fn literals_are_normalised_like_paths() {
        let t = template("/%63harges/");
        assert_eq!(
            t.segments().collect::<Vec<_>>(),
            [TemplateSegment::Literal("charges")]
        );
        assert!(t.matches(&path("/charges")));
        assert!(template("/a%3fb").matches(&path("/a%3Fb")));
    }

    #[test]
    fn root_and_rest() {
        let root = template("/");
        assert!(root.matches(&path("/")));
        assert!(!root.matches(&path("/a")));
        let t = template("/files/{path...}");
        assert_eq!(
            t.captures(&path("/files")).and_then(|c| c.get("path")),
            Some("")
        );
        assert_eq!(
            t.captures(&path("/files/a/b")).and_then(|c| c.get("path")),
            Some("a/b")
        );
        assert!(!t.matches(&path("/filesX/a")));
        assert!(!t.matches(&path("/")));
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("customers", RouteTemplateError::NotAbsolute),
            ("/a//b", RouteTemplateError::EmptySegment { offset: 3 }),
            ("/a/../b", RouteTemplateError::DotSegment { offset: 3 }),
            ("/a/%2e", RouteTemplateError::DotSegment { offset: 3 }),
            ("/v{n}", RouteTemplateError::PartialParameter { offset: 1 }),
            ("/a/{id", RouteTemplateError::PartialParameter { offset: 3 }),
            (
                "/a/{1x}",
                RouteTemplateError::InvalidParameterName {
                    offset: 3,
                    name: "1x".into(),
                },
            ),
            (
                "/a/{}",
                RouteTemplateError::InvalidParameterName {
                    offset: 3,
                    name: String::new(),
                },
            ),
            (
                "/{id}/{id}",
                RouteTemplateError::DuplicateParameter {
                    offset: 6,
                    name: "id".into(),
                },
            ),
            ("/{r...}/x", RouteTemplateError::RestNotLast { offset: 1 }),
            (
                "/a%2Fb",
                RouteTemplateError::Literal(PathError::EncodedSlash { offset: 2 }),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(raw.parse::<RouteTemplate>(), Err(want), "{raw:?}");
        }
    }
}
