//! Labels and annotations, with Kubernetes' limits (so resources map 1:1 onto CRD objects).
//!
//! - A key is `[prefix/]name`: the optional prefix a DNS-1123 subdomain of at most 253 bytes,
//!   the name 1–63 bytes of `[A-Za-z0-9._-]` starting and ending alphanumeric.
//! - A label value is empty or 1–63 bytes of the same alphabet as a name.
//! - Annotation values are free text, but all of one resource's annotations (keys and values)
//!   add up to at most 256 KiB.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest key prefix (a DNS subdomain).
const MAX_PREFIX: usize = 253;
/// The longest key name and label value (a DNS label's length).
const MAX_NAME: usize = 63;
/// The largest total size of one resource's annotations, keys and values (Kubernetes').
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Why a label or annotation was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// The key's name part (after any `prefix/`) is empty.
    #[error("key {0:?} has an empty name; write [prefix/]name")]
    EmptyName(String),
    /// More than one `/`.
    #[error("key {0:?} has more than one '/'; write [prefix/]name")]
    Slashes(String),
    /// A prefix longer than a DNS name may be.
    #[error("key prefix is {0} bytes long; at most 253 are allowed")]
    PrefixTooLong(usize),
    /// A prefix that is not a DNS-1123 subdomain.
    #[error(
        "key prefix {0:?} is not a DNS subdomain (dot-separated lowercase letters, digits and '-', each part starting and ending alphanumeric)"
    )]
    BadPrefix(String),
    /// A name or value longer than 63 bytes.
    #[error("{what} is {len} bytes long; at most 63 are allowed")]
    TooLong {
        /// `key name` or `value`.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A name or value with a character outside `[A-Za-z0-9._-]`, or a non-alphanumeric end.
    #[error(
        "{what} {text:?} must be letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    BadChars {
        /// `key name` or `value`.
        what: &'static str,
        /// The text.
        text: String,
    },
    /// All annotations together are larger than [`MAX_ANNOTATIONS_BYTES`].
    #[error("annotations total {0} bytes; at most 262144 (256 KiB) are allowed")]
    AnnotationsTooLarge(usize),
}

/// A label or annotation key, `[prefix/]name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelKey(String);

impl LabelKey {
    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LabelKey {
    type Error = LabelError;
    fn try_from(s: String) -> Result<Self, LabelError> {
        let (prefix, name) = match s.split_once('/') {
            Some((_, name)) if name.contains('/') => return Err(LabelError::Slashes(s)),
            Some((prefix, name)) => (Some(prefix), name),
            None => (None, s.as_str()),
        };
        if let Some(prefix) = prefix {
            check_prefix(prefix)?;
        }
        if name.is_empty() {
            return Err(LabelError::EmptyName(s));
        }
        check_name("key name", name)?;
        Ok(LabelKey(s))
    }
}

fn check_prefix(prefix: &str) -> Result<(), LabelError> {
    if prefix.len() > MAX_PREFIX {
        return Err(LabelError::PrefixTooLong(prefix.len()));
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        !b.is_empty()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
    };
    match prefix.split('.').all(label_ok) {
        true => Ok(()),
        false => Err(LabelError::BadPrefix(prefix.to_owned())),
    }
}

/// A key name or non-empty label value: at most 63 bytes of `[A-Za-z0-9._-]`, alphanumeric ends.
fn check_name(what: &'static str, s: &str) -> Result<(), LabelError> {
    if s.len() > MAX_NAME {
        return Err(LabelError::TooLong { what, len: s.len() });
    }
    let b = s.as_bytes();
    let ok = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric);
    match ok {
        true => Ok(()),
        false => Err(LabelError::BadChars {
            what,
            text: s.to_owned(),
        }),
    }
}

impl Borrow<str> for LabelKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<LabelKey> for String {
    fn from(k: LabelKey) -> String {
        k.0
    }
}

impl fmt::Display for LabelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A label value: empty, or at most 63 bytes of `[A-Za-z0-9._-]` with alphanumeric ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelValue(String);

impl LabelValue {
    /// The value as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LabelValue {
    type Error = LabelError;
    fn try_from(s: String) -> Result<Self, LabelError> {
        if !s.is_empty() {
            check_name("value", &s)?;
        }
        Ok(LabelValue(s))
    }
}

impl From<LabelValue> for String {
    fn from(v: LabelValue) -> String {
        v.0
    }
}

impl fmt::Display for LabelValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of labels (a resource's `metadata.labels`, a `Service`'s `selector`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<LabelKey, LabelValue>);

impl Labels {
    /// The value of label `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(LabelValue::as_str)
    }

    /// Every label, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many labels there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether every label of `selector` is in this set with the same value.
    pub fn contains_all(&self, selector: &Labels) -> bool {
        selector.iter().all(|(k, v)| self.get(k) == Some(v))
    }
}

impl TryFrom<BTreeMap<String, String>> for Labels {
    type Error = LabelError;
    fn try_from(map: BTreeMap<String, String>) -> Result<Self, LabelError> {
        map.into_iter()
            .map(|(k, v)| Ok((LabelKey::try_from(k)?, LabelValue::try_from(v)?)))
            .collect::<Result<_, _>>()
            .map(Labels)
    }
}

/// A resource's `metadata.annotations`: free-text values under label-style keys, at most
/// [`MAX_ANNOTATIONS_BYTES`] in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    try_from = "BTreeMap<LabelKey, String>",
    into = "BTreeMap<LabelKey, String>"
)]
pub struct Annotations(BTreeMap<LabelKey, String>);

impl Annotations {
    /// The value of annotation `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Whether there are no annotations.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<BTreeMap<LabelKey, String>> for Annotations {
    type Error = LabelError;
    fn try_from(map: BTreeMap<LabelKey, String>) -> Result<Self, LabelError> {
        let size: usize = map.iter().map(|(k, v)| k.0.len() + v.len()).sum();
        match size > MAX_ANNOTATIONS_BYTES {
            true => Err(LabelError::AnnotationsTooLarge(size)),
            false => Ok(Annotations(map)),
        }
    }
}

impl From<Annotations> for BTreeMap<LabelKey, String> {
    fn from(a: Annotations) -> Self {
        a.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(s: &str) -> Result<LabelKey, LabelError> {
        LabelKey::try_from(s.to_owned())
    }

    fn value(s: &str) -> Result<LabelValue, LabelError> {
        LabelValue::try_from(s.to_owned())
    }

    #[test]
    fn keys_follow_kubernetes_qualified_names() {
        let long_prefix = format!("{}.example.com", "a".repeat(241)); // 253 bytes
        for ok in [
            "app",
            "App_1.x-y",
            "meshwork.dev/size",
            "a/b",
            &"n".repeat(63),
            &format!("{long_prefix}/n"),
        ] {
            assert!(key(ok).is_ok(), "{ok}");
        }
        let too_long_prefix = format!("a{long_prefix}/n");
        let cases: &[(&str, LabelError)] = &[
            ("", LabelError::EmptyName(String::new())),
            ("x.io/", LabelError::EmptyName("x.io/".into())),
            ("a/b/c", LabelError::Slashes("a/b/c".into())),
            (&too_long_prefix, LabelError::PrefixTooLong(254)),
            ("Example.com/a", LabelError::BadPrefix("Example.com".into())),
            ("-x.io/a", LabelError::BadPrefix("-x.io".into())),
            ("x..io/a", LabelError::BadPrefix("x..io".into())),
            ("/a", LabelError::BadPrefix(String::new())),
            (
                &"n".repeat(64),
                LabelError::TooLong {
                    what: "key name",
                    len: 64,
                },
            ),
            (
                "_app",
                LabelError::BadChars {
                    what: "key name",
                    text: "_app".into(),
                },
            ),
            (
                "app name",
                LabelError::BadChars {
                    what: "key name",
                    text: "app name".into(),
                },
            ),
        ];
        for (text, err) in cases {
            assert_eq!(key(text).as_ref(), Err(err), "{text:?}");
        }
    }

    #[test]
    fn values_are_short_names_or_empty() {
        for ok in ["", "billing", "v1.2_3-x", &"v".repeat(63)] {
            assert!(value(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            value(&"v".repeat(64)),
            Err(LabelError::TooLong {
                what: "value",
                len: 64
            })
        );
        for bad in ["-v", "v.", "ü", "a b", "a/b"] {
            assert!(
                matches!(value(bad), Err(LabelError::BadChars { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn annotations_are_capped_in_total() {
        let just = BTreeMap::from([(key("k").unwrap(), "x".repeat(MAX_ANNOTATIONS_BYTES - 1))]);
        assert!(Annotations::try_from(just).is_ok());
        let over = BTreeMap::from([
            (key("k").unwrap(), "x".repeat(MAX_ANNOTATIONS_BYTES - 1)),
            (key("l").unwrap(), String::new()),
        ]);
        assert_eq!(
            Annotations::try_from(over),
            Err(LabelError::AnnotationsTooLarge(MAX_ANNOTATIONS_BYTES + 1))
        );
    }

    #[test]
    fn selectors_match_subsets() {
        let labels = |pairs: &[(&str, &str)]| {
            Labels::try_from(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            )
            .unwrap()
        };
        let w = labels(&[("app", "billing"), ("tier", "")]);
        assert!(w.contains_all(&labels(&[("app", "billing")])));
        assert!(w.contains_all(&labels(&[("tier", "")])));
        assert!(!w.contains_all(&labels(&[("app", "store")])));
        assert!(!w.contains_all(&labels(&[("zone", "")])));
        assert_eq!(w.get("app"), Some("billing"));
        assert_eq!(w.len(), 2);
    }
}
