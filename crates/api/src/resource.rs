//! The Kubernetes-style envelope every meshwork resource shares.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::labels::{Annotations, Labels};

/// The API group/version of meshwork's own kinds (the Gateway API routes have theirs:
/// [`crate::route::GATEWAY_API_VERSION`]).
pub const API_VERSION: &str = "meshwork.dev/v1alpha1";

/// `apiVersion/kind/metadata/spec`: maps 1:1 onto a CRD object on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S> {
    /// [`API_VERSION`], or the Gateway API's for routes; checked by the loader before the spec
    /// is read.
    pub api_version: String,
    /// The resource kind, e.g. `Workload`.
    pub kind: String,
    /// Name, namespace and labels.
    pub metadata: ObjectMeta,
    /// The kind-specific desired state.
    pub spec: S,
}

/// Object metadata, a subset of Kubernetes' `ObjectMeta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// A DNS-1123 label: lowercase alphanumerics and `-`, at most 63 bytes.
    pub name: Name,
    /// Namespace; `default` when omitted.
    #[serde(default = "default_namespace")]
    pub namespace: Name,
    /// Labels that selectors match against (Kubernetes' key and value rules, see
    /// [`crate::labels`]).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// Free-text notes for people and tools; at most 256 KiB in total. meshwork reads none.
    #[serde(default, skip_serializing_if = "Annotations::is_empty")]
    pub annotations: Annotations,
}

fn default_namespace() -> Name {
    Name(String::from("default"))
}

/// A DNS-1123 label, the name of a resource or namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty names are not allowed.
    #[error("name is empty")]
    Empty,
    /// Longer than a DNS label may be.
    #[error("name is {0} bytes long; at most 63 are allowed")]
    TooLong(usize),
    /// A character outside `[a-z0-9-]`.
    #[error("name has {ch:?} at byte {at}; only lowercase letters, digits and '-' are allowed")]
    BadChar {
        /// The offending character.
        ch: char,
        /// Its byte offset.
        at: usize,
    },
    /// Names start and end with an alphanumeric.
    #[error("name must start and end with a lowercase letter or digit")]
    BadEdge,
}

impl Name {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 63 {
            return Err(NameError::TooLong(s.len()));
        }
        if let Some((at, ch)) = s
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar { ch, at });
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::BadEdge);
        }
        Ok(Name(s))
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Name::try_from(s.to_owned())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl fmt::Display for Name {
    /// Honours width and alignment (`{:<12}`), for tables.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_1123_labels() {
        assert!("billing".parse::<Name>().is_ok());
        assert!("a-1".parse::<Name>().is_ok());
        assert_eq!("".parse::<Name>(), Err(NameError::Empty));
        assert_eq!(
            "Billing".parse::<Name>(),
            Err(NameError::BadChar { ch: 'B', at: 0 })
        );
        assert_eq!("-a".parse::<Name>(), Err(NameError::BadEdge));
        assert_eq!("a".repeat(64).parse::<Name>(), Err(NameError::TooLong(64)));
    }
}
