//! A string that must never reach a log: passwords, admin URLs, generated credentials.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// A secret string. `Debug` prints `Secret(***)`; there is deliberately no `Display`,
/// so the only way to the value is [`Secret::expose`], which is easy to audit.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// A fresh random password: 32 alphanumerics (~190 bits). Alphanumerics only, so the value
    /// can be embedded in DDL literals and URLs without escaping.
    pub fn random_password() -> Self {
        let value: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        Secret(value)
    }

    /// The secret value. Call sites are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn random_passwords_are_alphanumeric_and_distinct() {
        let a = Secret::random_password();
        let b = Secret::random_password();
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
