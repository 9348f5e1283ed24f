//! `X-Broker-API-Originating-Identity`: `<platform> <base64(JSON object)>`.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The decoded originating identity of a request, recorded with what it created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginatingIdentity {
    /// The platform name, e.g. `kubernetes` or `cloudfoundry`.
    pub platform: String,
    /// The decoded JSON object, e.g. `{"username": "alice", "uid": "...", "groups": [...]}`.
    pub value: serde_json::Value,
}

/// Why the header could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginatingIdentityError {
    /// Not `<platform> <value>`.
    #[error("expected \"<platform> <base64-encoded JSON>\"")]
    Shape,
    /// The value is not standard base64.
    #[error("the value is not valid base64")]
    Base64,
    /// The decoded value is not a JSON object.
    #[error("the decoded value is not a JSON object")]
    NotObject,
}

impl std::str::FromStr for OriginatingIdentity {
    type Err = OriginatingIdentityError;
    fn from_str(header: &str) -> Result<Self, OriginatingIdentityError> {
        let (platform, encoded) = header
            .trim()
            .split_once(' ')
            .ok_or(OriginatingIdentityError::Shape)?;
        let encoded = encoded.trim();
        if platform.is_empty() || encoded.is_empty() || encoded.contains(' ') {
            return Err(OriginatingIdentityError::Shape);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| OriginatingIdentityError::Base64)?;
        let value: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|_| OriginatingIdentityError::NotObject)?;
        if !value.is_object() {
            return Err(OriginatingIdentityError::NotObject);
        }
        Ok(OriginatingIdentity {
            platform: platform.to_owned(),
            value,
        })
    }
}

impl OriginatingIdentity {
    /// A string field of the identity value (e.g. `username`).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.value.get(name).and_then(|v| v.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_kubernetes_identity() {
        // {"username":"alice","groups":["dev"]}
        let id: OriginatingIdentity =
            "kubernetes eyJ1c2VybmFtZSI6ImFsaWNlIiwiZ3JvdXBzIjpbImRldiJdfQ=="
                .parse()
                .unwrap();
        assert_eq!(id.platform, "kubernetes");
        assert_eq!(id.field("username"), Some("alice"));
    }

    #[test]
    fn rejects_malformed() {
        use OriginatingIdentityError::*;
        assert_eq!("kubernetes".parse::<OriginatingIdentity>(), Err(Shape));
        assert_eq!("k8s !!!".parse::<OriginatingIdentity>(), Err(Base64));
        // "[1]" is JSON but not an object
        assert_eq!("k8s WzFd".parse::<OriginatingIdentity>(), Err(NotObject));
    }
}
