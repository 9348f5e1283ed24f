//! The identity state a replica serves from, rebuilt from its cache's records: the CA
//! roots, the JWT key and the registration entries.

use std::collections::BTreeMap;

use api::entry::RegistrationEntrySpec;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use identity::{JwtAuthority, JwtError, JwtKeyMaterial, TrustDomain};
use serde::{Deserialize, Serialize};

use crate::authority::{Authorities, AuthorityError};
use crate::keys::{KeyStorage, StoredKey};
use crate::store::cache::StateCache;
use crate::store::typed::encode;
use crate::store::{Expect, Op, Record, StoreError, Table};

/// What the issuer signs and publishes with.
#[derive(Debug)]
pub(super) struct IdentityState {
    pub(super) authorities: Authorities,
    pub(super) jwt: JwtAuthority,
    pub(super) entries: BTreeMap<String, RegistrationEntrySpec>,
}

/// The stored form of the JWT signing key: its id and its PKCS#8 DER, base64 (standard
/// alphabet) in the clear as in every redb state file so far, or sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JwtKeyRecord {
    kid: String,
    pkcs8: StoredKey,
}

impl IdentityState {
    /// The state `cache` holds; `store` names the store in errors.
    pub(super) fn load(
        cache: &StateCache,
        keys: &KeyStorage,
        td: &TrustDomain,
        store: &str,
    ) -> Result<IdentityState, AuthorityError> {
        let authorities =
            Authorities::from_records(&cache.all(Table::Authorities), keys, td, store)?;
        let jwt = load_jwt(&cache.all(Table::JwtKeys), keys, store)?;
        let entries = cache
            .all(Table::Entries)
            .into_iter()
            .map(|rec| Ok((rec.key.clone(), decode(&rec, Table::Entries, store)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok(IdentityState {
            authorities,
            jwt,
            entries,
        })
    }
}

/// A new JWT signing key's record, created only if that key id is new.
pub(super) fn new_jwt_key(keys: &KeyStorage, store: &str) -> Result<Op, AuthorityError> {
    let (_, material) = JwtAuthority::generate().map_err(|e| invalid_jwt(store, "", &e))?;
    let pkcs8 = keys.store(Table::JwtKeys, &material.kid, &B64.encode(&material.pkcs8));
    let record = JwtKeyRecord {
        kid: material.kid.clone(),
        pkcs8,
    };
    Ok(Op::Put {
        table: Table::JwtKeys,
        key: material.kid,
        value: encode(&record),
        expect: Expect::Absent,
    })
}

/// The signing key: the first record in key order (one exists after bootstrap).
fn load_jwt(
    records: &[Record],
    keys: &KeyStorage,
    store: &str,
) -> Result<JwtAuthority, AuthorityError> {
    let Some(rec) = records.first() else {
        return Err(invalid_jwt(
            store,
            "",
            &JwtError::Crypto("no JWT key is stored"),
        ));
    };
    let stored: JwtKeyRecord = decode(rec, Table::JwtKeys, store)?;
    let text = keys
        .open(Table::JwtKeys, &rec.key, &stored.pkcs8)
        .map_err(|source| AuthorityError::Key {
            store: store.to_owned(),
            source,
        })?;
    let pkcs8 = B64.decode(text.trim()).map_err(|_| {
        invalid_jwt(
            store,
            &rec.key,
            &JwtError::Crypto("decoding the stored JWT key"),
        )
    })?;
    let material = JwtKeyMaterial {
        kid: stored.kid,
        pkcs8,
    };
    JwtAuthority::from_material(&material).map_err(|e| invalid_jwt(store, &rec.key, &e))
}

fn invalid_jwt(store: &str, key: &str, e: &JwtError) -> AuthorityError {
    AuthorityError::Store(StoreError::Record {
        store: store.to_owned(),
        table: Table::JwtKeys.name(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

/// `rec` decoded as what `table` holds.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    rec: &Record,
    table: Table,
    store: &str,
) -> Result<T, StoreError> {
    decode_bytes(&rec.value, table, &rec.key, store)
}

fn decode_bytes<T: serde::de::DeserializeOwned>(
    bytes: &Bytes,
    table: Table,
    key: &str,
    store: &str,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Record {
        store: store.to_owned(),
        table: table.name(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
