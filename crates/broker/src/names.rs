//! Provider-side names derived from OSB ids.
//!
//! OSB ids are arbitrary strings chosen by the platform, so they never reach SQL or ACL rules
//! directly. A name is `mw_`, up to 12 sanitised characters of the id (for humans reading
//! `pg_database` or `ACL LIST`), `_`, and 16 hex digits of a UUIDv5 hash of the full id(s) (for
//! uniqueness). The result is at most 32 characters of `[a-z0-9_]`: valid unquoted in
//! PostgreSQL and MySQL, within MySQL's 32-character user-name limit, and free of the glob
//! characters Redis key patterns interpret.

use uuid::Uuid;

const INSTANCE_NS: Uuid = Uuid::from_u128(0x3b0f_9a52_1d7e_4f60_8c21_55e0_c4a7_1e93);
const BINDING_NS: Uuid = Uuid::from_u128(0x9e44_07d3_6b1a_4a2f_b8c5_0f7d_2a69_e3b1);

/// Every name this module produces starts with this.
pub const PREFIX: &str = "mw_";

fn derive(ns: &Uuid, readable: &str, hashed: &str) -> String {
    let hash = Uuid::new_v5(ns, hashed.as_bytes()).simple().to_string();
    let readable: String = readable
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(12)
        .collect();
    format!("{PREFIX}{readable}_{}", &hash[..16])
}

/// The provider resource name of an instance: database name, PostgreSQL group role,
/// Redis key prefix (`<name>:`).
pub fn instance_resource(instance_id: &str) -> String {
    derive(&INSTANCE_NS, instance_id, instance_id)
}

/// The provider user name of a binding.
pub fn binding_user(instance_id: &str, binding_id: &str) -> String {
    // The length prefix keeps ("a/b", "c") and ("a", "b/c") apart.
    let key = format!("{}:{instance_id}/{binding_id}", instance_id.len());
    derive(&BINDING_NS, binding_id, &key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_bounded_and_distinct() {
        let weird = "Ünïcødé'; DROP TABLE x; --*?[]";
        for name in [
            instance_resource(weird),
            binding_user(weird, weird),
            instance_resource(&"x".repeat(500)),
            instance_resource(""),
        ] {
            assert!(name.starts_with(PREFIX), "{name}");
            assert!(name.len() <= 32, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
        }
        assert_ne!(instance_resource("A"), instance_resource("a"));
        assert_ne!(binding_user("a/b", "c"), binding_user("a", "b/c"));
        assert_ne!(instance_resource("x"), binding_user("x", "x"));
        assert_eq!(instance_resource("abc"), instance_resource("abc"));
    }
}
