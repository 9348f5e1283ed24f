//! Selecting a request's rule: the [`ServiceTraffic`] matches compiled once (regular
//! expressions built and anchored), then tried in their precedence order. Shared by the proxy
//! (every request to a service with routes) and `meshwork policy explain`, so both pick the
//! same rule.

use regex::RegexBuilder;

use super::{HeaderMatch, HeaderMatchKind, PathMatch, RouteRule, RuleMatch, ServiceTraffic};

/// The most bytes a compiled route expression may take (the `regex` crate's `size_limit`,
/// also applied to its lazy DFA cache): a route's pattern is written by people, but the proxy
/// compiles it from a snapshot, so one expression must not be able to take megabytes.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// The longest route expression accepted, in bytes (the Gateway API's `value` limit).
pub const REGEX_MAX_LEN: usize = 1024;

/// A route's traffic snapshot that cannot be matched against.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    /// A regular expression does not compile (or is too large).
    #[error("matches[{index}]: {what} expression {pattern:?} does not compile")]
    Regex {
        /// Index in [`ServiceTraffic::matches`].
        index: usize,
        /// `path` or `header NAME`.
        what: String,
        /// The expression as given.
        pattern: String,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// A match refers to a rule that is not there.
    #[error("matches[{index}] refers to rule {rule}, but there are {rules} rules")]
    NoSuchRule {
        /// Index in [`ServiceTraffic::matches`].
        index: usize,
        /// The rule it names.
        rule: usize,
        /// How many rules there are.
        rules: usize,
    },
}

/// Compiles a path expression (and checks any route expression) the way every one is compiled: anchored at both
/// ends (the Gateway API matches the whole path or value), with [`REGEX_SIZE_LIMIT`].
pub fn anchored_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(regex::Error::CompiledTooBig(REGEX_MAX_LEN));
    }
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// [`anchored_regex`] over bytes, for header values: those need not be UTF-8, so Unicode
/// mode is off (`.` is any byte but `\n`, classes are ASCII).
pub fn anchored_header_regex(pattern: &str) -> Result<regex::bytes::Regex, regex::Error> {
    if pattern.len() > REGEX_MAX_LEN {
        return Err(regex::Error::CompiledTooBig(REGEX_MAX_LEN));
    }
    regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .unicode(false)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}

/// A service's matches, compiled: [`Matcher::select`] finds a request's rule.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    rules: Vec<RouteRule>,
    matches: Vec<Compiled>,
}

#[derive(Debug, Clone)]
struct Compiled {
    rule: usize,
    path: Path,
    method: Option<String>,
    headers: Vec<Header>,
}

#[derive(Debug, Clone)]
enum Path {
    Any,
    Exact(String),
    /// Without its trailing `/`; empty for the root (which every path starts with).
    Prefix(String),
    Regex(regex::Regex),
}

#[derive(Debug, Clone)]
struct Header {
    name: String,
    value: Value,
}

#[derive(Debug, Clone)]
enum Value {
    Exact(Vec<u8>),
    Regex(regex::bytes::Regex),
}

impl Matcher {
    /// Compiles every match of `traffic` (its order is kept: it is the precedence order).
    pub fn compile(traffic: &ServiceTraffic) -> Result<Matcher, MatcherError> {
        let matches = traffic
            .matches
            .iter()
            .enumerate()
            .map(|(index, m)| compile_match(index, m, traffic.rules.len()))
            .collect::<Result<_, _>>()?;
        Ok(Matcher {
            rules: traffic.rules.clone(),
            matches,
        })
    }

    /// Whether no route is attached: every request takes the default route.
    pub fn is_empty(&self) -> bool {
        self.matches.is_empty()
    }

    /// The rules, indexed as [`Matcher::select`] returns them.
    pub fn rules(&self) -> &[RouteRule] {
        &self.rules
    }

    /// The rule of the first match (in precedence order) that `method` (e.g. `GET`), the
    /// normalised `path` and the request's headers satisfy, with its index; `None`: the
    /// default route. `header` returns the first value of a header, given its lower-case name.
    pub fn select<'h>(
        &self,
        method: &str,
        path: &str,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Option<(usize, &RouteRule)> {
        let hit = self.matches.iter().find(|m| {
            m.method.as_deref().is_none_or(|want| want == method)
                && m.path.matches(path)
                && m.headers.iter().all(|h| h.matches(&header))
        })?;
        Some((hit.rule, self.rules.get(hit.rule)?))
    }
}

fn compile_match(index: usize, m: &RuleMatch, rules: usize) -> Result<Compiled, MatcherError> {
    if m.rule >= rules {
        return Err(MatcherError::NoSuchRule {
            index,
            rule: m.rule,
            rules,
        });
    }
    let regex_error = |what: String, pattern: &str| {
        let pattern = pattern.to_owned();
        move |source| MatcherError::Regex {
            index,
            what,
            pattern,
            source,
        }
    };
    let path = match &m.path {
        None => Path::Any,
        Some(PathMatch::Exact(p)) => Path::Exact(p.clone()),
        Some(PathMatch::PathPrefix(p)) => Path::Prefix(p.trim_end_matches('/').to_owned()),
        Some(PathMatch::RegularExpression(re)) => {
            Path::Regex(anchored_regex(re).map_err(regex_error("path".into(), re))?)
        }
    };
    let headers = m
        .headers
        .iter()
        .map(|h: &HeaderMatch| {
            let value = match h.kind {
                HeaderMatchKind::Exact => Value::Exact(h.value.as_bytes().to_vec()),
                HeaderMatchKind::RegularExpression => Value::Regex(
                    anchored_header_regex(&h.value)
                        .map_err(regex_error(format!("header {}", h.name), &h.value))?,
                ),
            };
            let name = h.name.to_ascii_lowercase();
            Ok(Header { name, value })
        })
        .collect::<Result<_, MatcherError>>()?;
    Ok(Compiled {
        rule: m.rule,
        path,
        method: m.method.clone(),
        headers,
    })
}

impl Path {
    fn matches(&self, path: &str) -> bool {
        match self {
            Path::Any => true,
            Path::Exact(want) => path == want,
            // Element-wise: `/a` is a prefix of `/a` and `/a/b`, not of `/ab`.
            Path::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/'),
                None => false,
            },
            Path::Regex(re) => re.is_match(path),
        }
    }
}

impl Header {
    fn matches<'h>(&self, header: &impl Fn(&str) -> Option<&'h [u8]>) -> bool {
        match (header(&self.name), &self.value) {
            (None, _) => false,
            (Some(got), Value::Exact(want)) => got == want.as_slice(),
            (Some(got), Value::Regex(re)) => re.is_match(got),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
