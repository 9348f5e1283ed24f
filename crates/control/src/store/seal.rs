//! Keys at rest in a shared store: envelope encryption of private keys with a
//! key-encryption key (KEK) that never enters the store.
//!
//! The CA's and the JWT issuer's private keys must not sit in etcd in the clear: etcd's
//! data directory, its snapshots and its backups are read by more people and programs
//! than a 0600 file on the control host. Each replica reads the same 32-byte KEK from a
//! file (mode 0600; `meshwork control --kek-file`, made by `meshwork ca kek create`) and
//! seals a private key as AES-256-GCM with a fresh 96-bit nonce per record (whenever the
//! store is etcd). The additional authenticated data is `<scope>/<table>/<key>`, the scope
//! being the store's key prefix (one per trust domain), so a sealed key cannot be copied
//! into another record, or another mesh sharing the KEK, and still open.
//!
//! Why envelope encryption rather than per-replica intermediate CAs (SPIRE's
//! UpstreamAuthority): each replica would still need the root key to sign its
//! intermediate, so the root key would sit on every replica host anyway, the same
//! exposure as the KEK file; `meshwork ca rotate` keeps working through the store; and
//! no certificate changes shape. See docs/design/scale-out.md §3.
//!
//! The redb backend does not seal: its file is already the 0600 boundary.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Table;

/// Bytes of a KEK.
const KEK_BYTES: usize = 32;

/// Why a KEK or a sealed record cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// Reading or creating the KEK file failed.
    #[error("key-encryption key file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The KEK file may be read by others.
    #[error("key-encryption key file {} has mode {mode:o}; it must be owner-only (chmod 600)", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The KEK file does not hold 64 hex digits.
    #[error("key-encryption key file {}: {reason} (expected 64 hex digits: 32 bytes)", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The record was sealed under another KEK.
    #[error(
        "record {table}/{key} was sealed with key-encryption key {sealed_with}, but this \
         replica has {have}: every replica needs the same --kek-file"
    )]
    OtherKek {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// The id of the KEK that sealed it.
        sealed_with: String,
        /// This replica's KEK id.
        have: String,
    },
    /// The record does not open: tampered with, moved from another record, or corrupt.
    #[error(
        "record {table}/{key} does not open under key-encryption key {kek}: {reason}; refusing to use it"
    )]
    Broken {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// This replica's KEK id.
        kek: String,
        /// What failed.
        reason: &'static str,
    },
}

/// A secret as stored: which KEK sealed it, the nonce, and ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The KEK's id ([`Kek::id`]).
    pub kek: String,
    /// The nonce, base64.
    pub nonce: String,
    /// Ciphertext and tag, base64.
    pub ct: String,
}

/// The key-encryption key.
pub struct Kek {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// Writes a new random KEK to `path` (mode 0600; refuses to replace a file).
    pub fn create(path: &Path) -> Result<Kek, SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        let mut secret = [0u8; KEK_BYTES];
        rand::Rng::fill(&mut rand::rng(), &mut secret);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        writeln!(file, "{}", hex(&secret)).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Kek::from_bytes(&secret))
    }

    /// Reads the KEK from `path`, refusing a file others may read.
    pub fn load(path: &Path) -> Result<Kek, SealError> {
        let io = |source| SealError::Io {
            path: path.to_owned(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(SealError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let format = |reason: &str| SealError::Format {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let digits = text.trim();
        if digits.len() != 2 * KEK_BYTES {
            return Err(format(&format!("{} characters", digits.len())));
        }
        let mut secret = [0u8; KEK_BYTES];
        for (i, byte) in secret.iter_mut().enumerate() {
            let pair = digits
                .get(2 * i..2 * i + 2)
                .ok_or_else(|| format("not ASCII"))?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| format("not hex"))?;
        }
        Ok(Kek::from_bytes(&secret))
    }

    fn from_bytes(secret: &[u8; KEK_BYTES]) -> Kek {
        // invariant: AES-256-GCM takes exactly 32 bytes, which `secret` is.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&AES_256_GCM, secret).expect("a 32-byte AES-256 key");
        let id = hex(&Sha256::digest(secret)[..8]);
        Kek {
            key: LessSafeKey::new(key),
            id,
        }
    }

    /// The KEK's public id: the first 8 bytes of its SHA-256, hex. Records name it, so
    /// a replica with the wrong file says so instead of failing obscurely.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret` for record `table/key` of the store scoped `scope`.
    pub fn seal(&self, scope: &str, table: Table, key: &str, secret: &[u8]) -> Sealed {
        let mut nonce = [0u8; NONCE_LEN];
        rand::Rng::fill(&mut rand::rng(), &mut nonce);
        let mut data = secret.to_vec();
        let aad = Aad::from(aad(scope, table, key));
        // invariant: sealing fails only for inputs beyond AES-GCM's 64 GiB limit;
        // private keys are a few hundred bytes.
        #[allow(clippy::expect_used)]
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut data)
            .expect("a private key is far below AES-GCM's length limit");
        Sealed {
            kek: self.id.clone(),
            nonce: B64.encode(nonce),
            ct: B64.encode(data),
        }
    }

    /// Opens what [`seal`](Self::seal) sealed for the same record.
    pub fn open(
        &self,
        scope: &str,
        table: Table,
        key: &str,
        sealed: &Sealed,
    ) -> Result<Vec<u8>, SealError> {
        if sealed.kek != self.id {
            return Err(SealError::OtherKek {
                table: table.name(),
                key: key.to_owned(),
                sealed_with: sealed.kek.clone(),
                have: self.id.clone(),
            });
        }
        let broken = |reason| SealError::Broken {
            table: table.name(),
            key: key.to_owned(),
            kek: self.id.clone(),
            reason,
        };
        let nonce = B64
            .decode(&sealed.nonce)
            .map_err(|_| broken("nonce is not base64"))?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| broken("nonce length"))?;
        let mut data = B64
            .decode(&sealed.ct)
            .map_err(|_| broken("ciphertext is not base64"))?;
        let aad = Aad::from(aad(scope, table, key));
        let plain = self
            .key
            .open_in_place(Nonce::assume_unique_for_key(nonce), aad, &mut data)
            .map_err(|_| broken("authentication failed"))?;
        Ok(plain.to_vec())
    }
}

fn aad(scope: &str, table: Table, key: &str) -> Vec<u8> {
    format!("{scope}/{}/{key}", table.name()).into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kek(dir: &Path, name: &str) -> Kek {
        Kek::create(&dir.join(name)).unwrap()
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_record_under_its_kek() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (kek(dir.path(), "a"), kek(dir.path(), "b"));
        let td = "/meshwork/a.example";
        let sealed = a.seal(td, Table::Authorities, "01", b"-----BEGIN PRIVATE KEY-----");
        assert!(!sealed.ct.contains("BEGIN"), "not in the clear");
        let plain = a.open(td, Table::Authorities, "01", &sealed).unwrap();
        assert_eq!(plain, b"-----BEGIN PRIVATE KEY-----");
        let moved = a.open(td, Table::Authorities, "02", &sealed).unwrap_err();
        assert!(matches!(moved, SealError::Broken { .. }), "{moved}");
        let other_mesh = a.open("/meshwork/b.example", Table::Authorities, "01", &sealed);
        assert!(matches!(other_mesh, Err(SealError::Broken { .. })));
        let other = b
            .open(td, Table::Authorities, "01", &sealed)
            .unwrap_err()
            .to_string();
        assert!(other.contains(a.id()) && other.contains(b.id()), "{other}");
        let mut tampered = sealed.clone();
        tampered.ct.replace_range(0..4, "AAAA");
        assert!(a.open(td, Table::Authorities, "01", &tampered).is_err());
        let seal_x = |k: &Kek| k.seal(td, Table::JwtKeys, "k", b"x");
        assert_ne!(seal_x(&a), seal_x(&a), "a fresh nonce each time");
    }

    #[test]
    fn the_file_round_trips_is_owner_only_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let created = Kek::create(&path).unwrap();
        assert_eq!(Kek::load(&path).unwrap().id(), created.id());
        assert!(Kek::create(&path).is_err(), "never replaces a KEK");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let loose = Kek::load(&path).unwrap_err();
        assert!(
            matches!(loose, SealError::Permissions { mode: 0o640, .. }),
            "{loose}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "zz".repeat(32)).unwrap();
        let text = Kek::load(&path).unwrap_err().to_string();
        assert!(
            text.contains("not hex") && text.contains(&path.display().to_string()),
            "{text}"
        );
        std::fs::write(&path, "ab").unwrap();
        assert!(
            Kek::load(&path)
                .unwrap_err()
                .to_string()
                .contains("2 characters")
        );
    }
}
