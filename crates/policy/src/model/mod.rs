//! The policy resources' `spec` types (what users write in YAML) and their validation.
//!
//! The spec types are plain serde data (camelCase, unknown fields refused) so that the `api`
//! crate can embed them as the `spec` of `AuthorizationPolicy` and `EgressPolicy` resources.
//! Their `validate()` methods parse every field into the matcher types of this crate and
//! report *all* problems, each naming its field path (`rules[0].from[1].spiffeIdGlob: ...`).
//! [`crate::Engine::compile`] runs the same validation, so an invalid spec can never reach
//! a decision.

mod authz;
mod caller;
mod egress;
mod request;
pub mod schema;

use std::fmt;

use thiserror::Error;

pub use authz::{Action, AuthorizationPolicySpec, AuthorizationRuleSpec, Mode};
pub use caller::IdentityMatcherSpec;
pub use egress::{EgressDestinationSpec, EgressPolicySpec};
pub use request::{HeaderMatcherSpec, PathMatcherSpec, RequestMatcherSpec};

pub(crate) use authz::AuthzPolicy;
pub(crate) use caller::IdentityMatcher;
pub(crate) use egress::{Destination, EgressDestination, EgressPolicy};
pub(crate) use request::{PathMatcher, RequestMatcher};

use crate::cidr::CidrError;
use crate::dns::DnsError;
use crate::path::PathError;
use crate::route::RouteTemplateError;

/// What is wrong with one field. The message is written to follow `<field path>: `.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Problem {
    /// Not a valid SPIFFE ID (or trust domain).
    #[error(transparent)]
    SpiffeId(::identity::SpiffeIdError),
    /// `*` inside the trust domain of a glob.
    #[error("'*' is not allowed in the trust domain: a glob is confined to one trust domain")]
    WildcardInTrustDomain,
    /// `*` that is not a whole path segment of a glob.
    #[error("'*' must be a whole path segment (it matches exactly one segment)")]
    PartialWildcard,
    /// `*` in an exact ID or prefix.
    #[error("'*' is only allowed in spiffeIdGlob")]
    WildcardOutsideGlob,
    /// Not a valid path.
    #[error(transparent)]
    Path(PathError),
    /// A path with a query or fragment.
    #[error("paths are matched without query or fragment; remove the '?'/'#' part")]
    PathWithQuery,
    /// Not a valid route template.
    #[error(transparent)]
    RouteTemplate(RouteTemplateError),
    /// Not a valid DNS name or pattern.
    #[error(transparent)]
    Dns(DnsError),
    /// Not a valid CIDR.
    #[error(transparent)]
    Cidr(CidrError),
    /// A CIDR rule in a policy without `allowCidr: true`.
    #[error("CIDR destinations need an explicit 'allowCidr: true' on the policy")]
    CidrNotAllowed,
    /// Not an HTTP method token, or not upper-case.
    #[error(
        "{0:?} is not an upper-case HTTP method token (methods are case-sensitive: write e.g. POST)"
    )]
    Method(String),
    /// Not an HTTP header field name.
    #[error("{0:?} is not a valid HTTP header name")]
    HeaderName(String),
    /// Exactly one of several fields must be set.
    #[error("set exactly one of {0}")]
    ExactlyOne(&'static str),
    /// The field must not be empty.
    #[error("must not be empty")]
    Empty,
    /// A `targetService` that is empty or has spaces or control characters.
    #[error("{0:?} is not a service name (non-empty, no spaces or control characters)")]
    ServiceName(String),
    /// Port 0.
    #[error("port 0 is not a destination port")]
    PortZero,
    /// A `to` entry with both `ports` and `methods`/`paths`/`headers`.
    #[error(
        "an entry is either HTTP (methods, paths, headers) or TCP (ports): split it into two entries"
    )]
    HttpAndTcp,
}

/// One invalid field: its path inside the spec and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// Path of the field inside the spec, e.g. `rules[0].from[1].spiffeIdGlob`.
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// Every invalid field of one spec (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    /// The individual field errors, in field order.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects field errors while a spec is parsed into matchers.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    /// Records `problem` at `field.sub`, or at `field` itself when `sub` is empty.
    pub(crate) fn push_at(&mut self, field: &str, sub: &str, problem: Problem) {
        if sub.is_empty() {
            self.push(field, problem);
        } else {
            self.push(format!("{field}.{sub}"), problem);
        }
    }

    /// Records `problem` at `field`.
    pub(crate) fn push(&mut self, field: impl Into<String>, problem: Problem) {
        self.0.push(FieldError {
            field: field.into(),
            problem,
        });
    }

    /// `Ok(value)` when nothing was recorded.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(ValidationErrors(self.0))
        }
    }
}

/// Parses each element of a list, recording failures; keeps the successes.
pub(crate) fn parse_list<S, T>(
    items: &[S],
    field: &str,
    errors: &mut Errors,
    mut parse: impl FnMut(&S, &str, &mut Errors) -> Option<T>,
) -> Vec<T> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, item)| parse(item, &format!("{field}[{i}]"), errors))
        .collect()
}
