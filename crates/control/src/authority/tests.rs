#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const HOUR: time::Duration = time::Duration::hours(1);

/// Applies `ops` to `records` the way a store would (revision `rev`), checking their
/// expectations.
fn apply(records: &mut Vec<Record>, ops: Vec<Op>, rev: Revision) {
    for op in ops {
        let at = records.iter().position(|r| r.key == op.key());
        assert!(op.holds_for(at.map(|i| &records[i])), "{op:?}");
        match (op, at) {
            (Op::Put { key, value, .. }, Some(i)) => {
                records[i] = Record {
                    key,
                    value,
                    mod_revision: rev,
                }
            }
            (Op::Put { key, value, .. }, None) => records.push(Record {
                key,
                value,
                mod_revision: rev,
            }),
            (Op::Delete { .. }, Some(i)) => {
                records.remove(i);
            }
            (other, _) => panic!("{other:?}"),
        }
    }
    records.sort_by(|a, b| a.key.cmp(&b.key));
}

fn setup() -> (tempfile::TempDir, TrustDomain, OffsetDateTime, KeyStorage) {
    let dir = tempfile::tempdir().unwrap();
    (
        dir,
        "example.org".parse().unwrap(),
        OffsetDateTime::now_utc(),
        KeyStorage::clear(),
    )
}

#[test]
fn the_first_ca_is_checked_against_the_trust_domain() {
    let (dir, td, now, keys) = setup();
    let mut records = Vec::new();
    apply(
        &mut records,
        vec![Authorities::first(dir.path(), &td, now, &keys).unwrap()],
        1,
    );
    Authorities::from_records(&records, &keys, &td, "s").unwrap();
    let other: TrustDomain = "other.org".parse().unwrap();
    let err = Authorities::from_records(&records, &keys, &other, "s").unwrap_err();
    assert!(
        matches!(err, AuthorityError::WrongTrustDomain { .. }),
        "{err}"
    );
}

#[test]
fn rotation_publishes_first_then_signs_then_retires() {
    let (dir, td, now, keys) = setup();
    let mut records = Vec::new();
    apply(
        &mut records,
        vec![Authorities::first(dir.path(), &td, now, &keys).unwrap()],
        1,
    );
    let load = |r: &Vec<Record>| Authorities::from_records(r, &keys, &td, "s").unwrap();
    let auth = load(&records);
    let old = auth.active().certificate().clone();
    let (seq, _, op) = auth.plan_rotation(now, HOUR, &keys, "s").unwrap();
    assert_eq!(seq, 2);
    apply(&mut records, vec![op], 2);
    let auth = load(&records);
    assert!(matches!(
        auth.plan_rotation(now, HOUR, &keys, "s"),
        Err(AuthorityError::RotationInProgress { .. })
    ));
    let new = auth.all()[1].ca.certificate().clone();
    // Published before it signs.
    assert_eq!(auth.bundle().roots(), [old.clone(), new.clone()]);
    assert_eq!(auth.active().certificate(), &old);
    assert!(auth.plan_tick(now + HOUR / 2, HOUR).is_empty());
    // Signs after the overlap; the old root stays trusted.
    let ops = auth.plan_tick(now + HOUR, HOUR);
    assert_eq!(ops.len(), 2);
    apply(&mut records, ops.clone(), 3);
    // A plan made from records that changed since no longer applies.
    assert!(!ops[0].holds_for(records.iter().find(|r| r.key == ops[0].key())));
    let auth = load(&records);
    assert_eq!(auth.active().certificate(), &new);
    assert_eq!(auth.bundle().roots().len(), 2);
    // Gone once everything it signed has expired.
    apply(&mut records, auth.plan_tick(now + HOUR * 2, HOUR), 4);
    let auth = load(&records);
    assert_eq!(auth.bundle().roots(), [new]);
    assert_eq!(auth.next_transition(), None);
}

#[test]
fn legacy_pem_files_are_imported() {
    let (dir, td, now, keys) = setup();
    let ca = Ca::generate(td.clone(), now).unwrap();
    std::fs::create_dir(dir.path().join("ca")).unwrap();
    std::fs::write(dir.path().join("ca/cert.pem"), ca.to_pem().cert_pem).unwrap();
    std::fs::write(dir.path().join("ca/key.pem"), ca.to_pem().key_pem).unwrap();
    let mut records = Vec::new();
    apply(
        &mut records,
        vec![Authorities::first(dir.path(), &td, now, &keys).unwrap()],
        1,
    );
    let auth = Authorities::from_records(&records, &keys, &td, "s").unwrap();
    assert_eq!(auth.active().certificate(), ca.certificate());
}

#[test]
fn a_sealed_ca_opens_only_with_its_kek() {
    let (dir, td, now, _) = setup();
    let kek = crate::store::seal::Kek::create(&dir.path().join("kek")).unwrap();
    let keys = KeyStorage::sealed(kek, "/m");
    let mut records = Vec::new();
    apply(
        &mut records,
        vec![Authorities::first(dir.path(), &td, now, &keys).unwrap()],
        1,
    );
    let text = String::from_utf8(records[0].value.to_vec()).unwrap();
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    Authorities::from_records(&records, &keys, &td, "s").unwrap();
    let err = Authorities::from_records(&records, &KeyStorage::clear(), &td, "s").unwrap_err();
    assert!(err.to_string().contains("--kek-file"), "{err}");
}
