//! Private keys as records hold them: in the clear in the redb file (its 0600 mode is
//! the boundary, as it always was), sealed under the key-encryption key when the store is
//! shared ([`crate::store::seal`]: etcd never holds a usable CA or JWT key).

use serde::{Deserialize, Serialize};

use crate::store::Table;
use crate::store::seal::{Kek, SealError, Sealed};

/// How this replica stores and opens private keys.
#[derive(Debug)]
pub struct KeyStorage {
    kek: Option<Kek>,
    scope: String,
}

/// A private key as a record holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredKey {
    /// Sealed under a KEK (shared stores).
    Sealed {
        /// The envelope.
        sealed: Sealed,
    },
    /// In the clear (the redb file), in the record's historical encoding (PEM or base64).
    Clear(String),
}

/// Why a stored key cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The record is sealed and this replica was started without a KEK.
    #[error(
        "record {table}/{key} holds a sealed private key, and this replica has no \
         key-encryption key (start it with --kek-file, the same file as the other replicas)"
    )]
    NoKek {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
    },
    /// The KEK does not open it (another KEK, or the record was tampered with).
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A shared store holds this private key in the clear, which this control plane never
    /// writes there.
    #[error(
        "record {table}/{key} holds a private key in the clear in a shared store, where \
         meshwork only writes sealed keys; refusing to use it (was it planted?)"
    )]
    Unsealed {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
    },
    /// The opened key is not text.
    #[error("record {table}/{key}: the opened private key is not UTF-8")]
    NotText {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
    },
}

impl KeyStorage {
    /// Keys in the clear (the redb file).
    pub fn clear() -> KeyStorage {
        KeyStorage {
            kek: None,
            scope: String::new(),
        }
    }

    /// Keys sealed under `kek`, for the store scoped `scope` (its key prefix).
    pub fn sealed(kek: Kek, scope: &str) -> KeyStorage {
        KeyStorage {
            kek: Some(kek),
            scope: scope.to_owned(),
        }
    }

    /// `secret` (text: PEM or base64) as record `table/key` stores it.
    pub fn store(&self, table: Table, key: &str, secret: &str) -> StoredKey {
        match &self.kek {
            Some(kek) => StoredKey::Sealed {
                sealed: kek.seal(&self.scope, table, key, secret.as_bytes()),
            },
            None => StoredKey::Clear(secret.to_owned()),
        }
    }

    /// The secret record `table/key` stores.
    pub fn open(&self, table: Table, key: &str, stored: &StoredKey) -> Result<String, KeyError> {
        match stored {
            // With a KEK every key is sealed: a clear one was planted by whoever can write
            // to the store, and would sign for the mesh.
            StoredKey::Clear(_) if self.kek.is_some() => Err(KeyError::Unsealed {
                table: table.name(),
                key: key.to_owned(),
            }),
            StoredKey::Clear(text) => Ok(text.clone()),
            StoredKey::Sealed { sealed } => {
                let Some(kek) = &self.kek else {
                    return Err(KeyError::NoKek {
                        table: table.name(),
                        key: key.to_owned(),
                    });
                };
                let plain = kek.open(&self.scope, table, key, sealed)?;
                String::from_utf8(plain).map_err(|_| KeyError::NotText {
                    table: table.name(),
                    key: key.to_owned(),
                })
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn kek(dir: &std::path::Path, name: &str) -> Kek {
        Kek::create(&dir.join(name)).unwrap()
    }

    #[test]
    fn clear_keys_read_as_they_always_did_and_sealed_ones_need_the_kek() {
        let dir = tempfile::tempdir().unwrap();
        let clear = KeyStorage::clear();
        let stored = clear.store(Table::Authorities, "1", "PEM");
        assert_eq!(serde_json::to_string(&stored).unwrap(), "\"PEM\"");
        assert_eq!(clear.open(Table::Authorities, "1", &stored).unwrap(), "PEM");

        let sealed = KeyStorage::sealed(kek(dir.path(), "a"), "/m/td");
        let stored = sealed.store(Table::Authorities, "1", "PEM");
        let json = serde_json::to_string(&stored).unwrap();
        assert!(!json.contains("PEM"), "{json}");
        let back: StoredKey = serde_json::from_str(&json).unwrap();
        assert_eq!(sealed.open(Table::Authorities, "1", &back).unwrap(), "PEM");
        // Moved to another record, opened without or with another KEK: refused.
        assert!(sealed.open(Table::Authorities, "2", &back).is_err());
        let error = clear.open(Table::Authorities, "1", &back).unwrap_err();
        assert!(error.to_string().contains("--kek-file"), "{error}");
        let other = KeyStorage::sealed(kek(dir.path(), "b"), "/m/td");
        assert!(other.open(Table::Authorities, "1", &back).is_err());
        // A clear key in a sealed store is refused, not used.
        let planted = StoredKey::Clear("PEM".to_owned());
        let error = sealed.open(Table::Authorities, "1", &planted).unwrap_err();
        assert!(error.to_string().contains("in the clear"), "{error}");
    }
}
