#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;

use redb::TableDefinition;

use super::format::{META, SNAPSHOT_VERSION, definition};
use super::*;
use crate::store::{Backend, Store};

#[tokio::test]
async fn records_survive_reopen_and_revisions_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let store = Store::Redb(RedbStore::open(dir.path()).unwrap());
        let value = serde_json::json!({"x": 1});
        store.put(Table::Entries, "a", &value).await.unwrap()
    };
    let store = Store::Redb(RedbStore::open(dir.path()).unwrap());
    let all: Vec<(String, serde_json::Value)> = store.read_all(Table::Entries).await.unwrap();
    assert_eq!(all, vec![("a".to_owned(), serde_json::json!({"x": 1}))]);
    assert_eq!(store.revision().await.unwrap(), first);
    let gone = store.delete(Table::Entries, "a").await.unwrap();
    assert!(gone.is_some_and(|r| r > first));
    assert_eq!(store.delete(Table::Entries, "a").await.unwrap(), None);
}

#[test]
fn the_file_is_owner_only_and_loose_modes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    let path = dir.path().join(STATE_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, StateError::Permissions { mode: 0o644, .. }),
        "{err}"
    );
}

#[test]
fn a_corrupt_file_is_reported_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    let garbage = vec![0x5a_u8; 8192];
    std::fs::write(&path, &garbage).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = RedbStore::open(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("control.redb") && text.contains("refusing to replace"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        garbage,
        "the file was modified"
    );
}

#[tokio::test]
async fn an_undecodable_record_names_table_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let txn = store.db.begin_write().unwrap();
    txn.open_table(definition(Table::Tokens))
        .unwrap()
        .insert("k1", format::join(1, b"not json").as_slice())
        .unwrap();
    txn.open_table(definition(Table::Agents))
        .unwrap()
        .insert("k2", b"short".as_slice())
        .unwrap();
    txn.commit().unwrap();
    let store = Store::Redb(store);
    let err = store
        .read_all::<serde_json::Value>(Table::Tokens)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("join_tokens/k1"), "{err}");
    let err = store.get(Table::Agents, "k2").await;
    let text = err.unwrap_err().to_string();
    assert!(
        text.contains("agents/k2") && text.contains("shorter"),
        "{text}"
    );
}

/// A file as meshwork wrote it before the storage interface: bare JSON values, a
/// snapshot version, no revision and no format marker.
fn write_format_1(dir: &std::path::Path, snapshot_version: u64) {
    let path = dir.join(STATE_FILE);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    let db = redb::Database::create(&path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let entries: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
        let mut t = txn.open_table(entries).unwrap();
        t.insert("store", br#"{"x":1}"#.as_slice()).unwrap();
        t.insert("billing", br#"{"x":2}"#.as_slice()).unwrap();
        let mut meta = txn.open_table(META).unwrap();
        meta.insert(SNAPSHOT_VERSION, snapshot_version).unwrap();
    }
    txn.commit().unwrap();
}

#[tokio::test]
async fn a_format_1_file_is_upgraded_once_and_revisions_keep_growing() {
    let dir = tempfile::tempdir().unwrap();
    write_format_1(dir.path(), 41);
    {
        let store = RedbStore::open(dir.path()).unwrap();
        let (records, revision) = store.list(Table::Entries).await.unwrap();
        assert_eq!(revision, 41);
        let seen: Vec<_> = records
            .iter()
            .map(|r| (r.key.as_str(), &r.value[..], r.mod_revision))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("billing", &br#"{"x":2}"#[..], 41),
                ("store", &br#"{"x":1}"#[..], 41)
            ]
        );
        let store = Store::Redb(store);
        let value = serde_json::json!(3);
        assert_eq!(store.put(Table::Entries, "new", &value).await.unwrap(), 42);
    }
    // A second open does not upgrade again (it would prefix the prefixed values).
    let store = Store::Redb(RedbStore::open(dir.path()).unwrap());
    let all: Vec<(String, serde_json::Value)> = store.read_all(Table::Entries).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(store.revision().await.unwrap(), 42);
}

#[test]
fn a_newer_format_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(RedbStore::open(dir.path()).unwrap());
    {
        let db = redb::Database::create(dir.path().join(STATE_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert("format", 9).unwrap();
        txn.commit().unwrap();
    }
    let err = RedbStore::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("format 9 is newer"), "{err}");
}
