//! JWT-SVIDs per the SPIFFE JWT-SVID spec: ES256 (ECDSA P-256, SHA-256), signed by
//! the control plane's JWT authority, published as a JWKS bundle, validated by agents.
//!
//! Built directly on ring (already the workspace's crypto provider) rather than a
//! general JWT library: one algorithm, and every check the spec asks for is explicit
//! here — `alg` pinned to ES256, `kid` must name a key in the bundle, `sub` a SPIFFE
//! ID of the bundle's trust domain, `exp` in the future, `aud` containing the
//! validator's audience.

use std::collections::BTreeMap;

use crate::{SpiffeId, TrustDomain};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::signature::{
    self, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

/// Default lifetime of a JWT-SVID (the spec's recommendation is "short").
pub const DEFAULT_JWT_TTL: time::Duration = time::Duration::minutes(5);

/// Why a JWT-SVID could not be minted or does not validate.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Key generation or signing failed in ring.
    #[error("JWT signing key operation failed: {0}")]
    Crypto(&'static str),
    /// The token is not three base64url segments of JSON.
    #[error("JWT-SVID is malformed: {0}")]
    Malformed(&'static str),
    /// `alg` is not ES256.
    #[error("JWT-SVID algorithm {0:?} is not allowed (ES256 only)")]
    Algorithm(String),
    /// `kid` is missing or names no key of the bundle.
    #[error("JWT-SVID key id {0:?} is not in the trust bundle")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("JWT-SVID signature does not verify")]
    Signature,
    /// `sub` is missing or not a SPIFFE ID of the bundle's trust domain.
    #[error("JWT-SVID subject is not a SPIFFE ID of trust domain {0}")]
    Subject(TrustDomain),
    /// `exp` is missing or has passed.
    #[error("JWT-SVID has expired (or has no exp)")]
    Expired,
    /// `aud` does not contain the validator's audience.
    #[error("JWT-SVID audience does not include {0:?}")]
    Audience(String),
    /// No audience was asked for (the spec requires one).
    #[error("at least one audience is required")]
    NoAudience,
}

/// A JWT signing key as material to store: its key id and its PKCS#8 DER (the storing
/// side decides the encoding, and whether to seal it).
#[derive(Clone)]
pub struct JwtKeyMaterial {
    /// Key id, published in the JWKS and each token's header.
    pub kid: String,
    /// The private key, PKCS#8 DER.
    pub pkcs8: Vec<u8>,
}

impl std::fmt::Debug for JwtKeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeyMaterial")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The control plane's JWT signing key.
pub struct JwtAuthority {
    kid: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for JwtAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthority")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl JwtAuthority {
    /// A new P-256 key and its material for storing.
    pub fn generate() -> Result<(JwtAuthority, JwtKeyMaterial), JwtError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| JwtError::Crypto("generating the JWT key"))?;
        let mut kid = [0u8; 12];
        ring::rand::SecureRandom::fill(&rng, &mut kid)
            .map_err(|_| JwtError::Crypto("drawing a key id"))?;
        let material = JwtKeyMaterial {
            kid: B64.encode(kid),
            pkcs8: pkcs8.as_ref().to_vec(),
        };
        Ok((Self::from_material(&material)?, material))
    }

    /// Loads a stored key.
    pub fn from_material(material: &JwtKeyMaterial) -> Result<JwtAuthority, JwtError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &material.pkcs8, &rng)
            .map_err(|_| JwtError::Crypto("reading the stored JWT key"))?;
        Ok(JwtAuthority {
            kid: material.kid.clone(),
            key,
            rng,
        })
    }

    /// The JWKS document (the JWT bundle) holding this key, for `td`.
    pub fn jwks(&self) -> String {
        let point = self.key.public_key().as_ref(); // 0x04 || x || y
        let (x, y) = point
            .get(1..)
            .unwrap_or_default()
            .split_at(point.len().saturating_sub(1) / 2);
        json!({
            "keys": [{
                "kty": "EC",
                "crv": "P-256",
                "x": B64.encode(x),
                "y": B64.encode(y),
                "kid": self.kid,
                "use": "jwt-svid",
            }],
        })
        .to_string()
    }

    /// Mints a JWT-SVID for `sub`, valid for `audience`, expiring at `now + ttl`.
    pub fn mint(
        &self,
        sub: &SpiffeId,
        audience: &[String],
        ttl: time::Duration,
        now: OffsetDateTime,
    ) -> Result<String, JwtError> {
        if audience.is_empty() {
            return Err(JwtError::NoAudience);
        }
        let header = json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"});
        let claims = json!({
            "sub": sub.as_str(),
            "aud": audience,
            "iat": now.unix_timestamp(),
            "exp": (now + ttl).unix_timestamp(),
        });
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| JwtError::Crypto("signing a JWT-SVID"))?;
        Ok(format!("{signing_input}.{}", B64.encode(sig.as_ref())))
    }
}

/// A trust domain's JWT bundle: verification keys by `kid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtBundle {
    trust_domain: TrustDomain,
    keys: BTreeMap<String, Vec<u8>>,
}

impl JwtBundle {
    /// A bundle with no keys (validates nothing).
    pub fn empty(trust_domain: TrustDomain) -> JwtBundle {
        JwtBundle {
            trust_domain,
            keys: BTreeMap::new(),
        }
    }

    /// Reads a JWKS document; only P-256 EC keys are kept.
    pub fn from_jwks(trust_domain: TrustDomain, jwks: &str) -> Result<JwtBundle, JwtError> {
        let doc: Value =
            serde_json::from_str(jwks).map_err(|_| JwtError::Malformed("JWKS is not JSON"))?;
        let mut keys = BTreeMap::new();
        for key in doc["keys"].as_array().into_iter().flatten() {
            let (Some(kid), Some(x), Some(y)) =
                (key["kid"].as_str(), key["x"].as_str(), key["y"].as_str())
            else {
                continue;
            };
            if key["kty"] != "EC" || key["crv"] != "P-256" {
                continue;
            }
            let (Ok(x), Ok(y)) = (B64.decode(x), B64.decode(y)) else {
                continue;
            };
            let mut point = vec![0x04];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            keys.insert(kid.to_owned(), point);
        }
        Ok(JwtBundle { trust_domain, keys })
    }

    /// Validates `token` for `audience` at `now`; the subject and all claims.
    pub fn validate(
        &self,
        token: &str,
        audience: &str,
        now: OffsetDateTime,
    ) -> Result<(SpiffeId, Map<String, Value>), JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("want three dot-separated segments"));
        };
        let header = segment_json(h)?;
        if header["alg"] != "ES256" {
            return Err(JwtError::Algorithm(
                header["alg"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        let kid = header["kid"].as_str().unwrap_or_default();
        let key = self
            .keys
            .get(kid)
            .ok_or_else(|| JwtError::UnknownKey(kid.to_owned()))?;
        let sig = B64
            .decode(s)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let signed = &token[..h.len() + 1 + c.len()];
        signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key)
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| JwtError::Signature)?;
        let Value::Object(claims) = segment_json(c)? else {
            return Err(JwtError::Malformed("claims are not a JSON object"));
        };
        self.check_claims(&claims, audience, now)
            .map(|id| (id, claims))
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        audience: &str,
        now: OffsetDateTime,
    ) -> Result<SpiffeId, JwtError> {
        let sub: SpiffeId = claims
            .get("sub")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .filter(|id: &SpiffeId| id.trust_domain() == &self.trust_domain)
            .ok_or_else(|| JwtError::Subject(self.trust_domain.clone()))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(JwtError::Expired)?;
        if exp <= now.unix_timestamp() {
            return Err(JwtError::Expired);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if audience.is_empty() || !aud_ok {
            return Err(JwtError::Audience(audience.to_owned()));
        }
        Ok(sub)
    }
}

fn segment_json(segment: &str) -> Result<Value, JwtError> {
    let bytes = B64
        .decode(segment)
        .map_err(|_| JwtError::Malformed("segment is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("segment is not JSON"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn setup() -> (JwtAuthority, JwtBundle, SpiffeId, OffsetDateTime) {
        let (auth, _) = JwtAuthority::generate().unwrap();
        let td: TrustDomain = "example.org".parse().unwrap();
        let bundle = JwtBundle::from_jwks(td, &auth.jwks()).unwrap();
        let id: SpiffeId = "spiffe://example.org/billing".parse().unwrap();
        (auth, bundle, id, OffsetDateTime::now_utc())
    }

    #[test]
    fn minted_tokens_validate_for_their_audience_only() {
        let (auth, bundle, id, now) = setup();
        let token = auth
            .mint(
                &id,
                &["store".into(), "ledger".into()],
                DEFAULT_JWT_TTL,
                now,
            )
            .unwrap();
        let (sub, claims) = bundle.validate(&token, "ledger", now).unwrap();
        assert_eq!(sub, id);
        assert_eq!(claims["aud"], json!(["store", "ledger"]));
        assert!(matches!(
            bundle.validate(&token, "other", now),
            Err(JwtError::Audience(_))
        ));
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let (auth, bundle, id, now) = setup();
        let token = auth.mint(&id, &["a".into()], DEFAULT_JWT_TTL, now).unwrap();
        let later = now + DEFAULT_JWT_TTL + time::Duration::seconds(1);
        assert!(matches!(
            bundle.validate(&token, "a", later),
            Err(JwtError::Expired)
        ));
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = B64.encode(
            json!({"sub": "spiffe://example.org/admin", "aud": "a", "exp": i64::MAX}).to_string(),
        );
        parts[1] = &forged;
        assert!(matches!(
            bundle.validate(&parts.join("."), "a", now),
            Err(JwtError::Signature)
        ));
        let (other, _) = JwtAuthority::generate().unwrap();
        let foreign = other
            .mint(&id, &["a".into()], DEFAULT_JWT_TTL, now)
            .unwrap();
        assert!(matches!(
            bundle.validate(&foreign, "a", now),
            Err(JwtError::UnknownKey(_))
        ));
    }

    #[test]
    fn alg_none_and_other_trust_domains_are_refused() {
        let (auth, bundle, _, now) = setup();
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(r#"{"sub":"spiffe://example.org/x"}"#)
        );
        assert!(matches!(
            bundle.validate(&none, "a", now),
            Err(JwtError::Algorithm(_))
        ));
        let foreign_id: SpiffeId = "spiffe://other.org/x".parse().unwrap();
        let token = auth
            .mint(&foreign_id, &["a".into()], DEFAULT_JWT_TTL, now)
            .unwrap();
        assert!(matches!(
            bundle.validate(&token, "a", now),
            Err(JwtError::Subject(_))
        ));
        assert!(matches!(
            auth.mint(&foreign_id, &[], DEFAULT_JWT_TTL, now),
            Err(JwtError::NoAudience)
        ));
    }

    #[test]
    fn a_stored_key_signs_tokens_the_old_bundle_accepts() {
        let (auth, material) = JwtAuthority::generate().unwrap();
        let again = JwtAuthority::from_material(&material).unwrap();
        let td: TrustDomain = "example.org".parse().unwrap();
        let bundle = JwtBundle::from_jwks(td, &auth.jwks()).unwrap();
        let id: SpiffeId = "spiffe://example.org/x".parse().unwrap();
        let now = OffsetDateTime::now_utc();
        let token = again
            .mint(&id, &["a".into()], DEFAULT_JWT_TTL, now)
            .unwrap();
        assert!(bundle.validate(&token, "a", now).is_ok());
    }
}
