//! Handing a binding's credentials to its workload: files in the servicebinding.io layout
//! (`$SERVICE_BINDING_ROOT/<claim>/<key>`, files 0600 in 0700 directories) and environment
//! variables (`DATABASE_URL`, `REDIS_URL`, `<CLAIM>_URL`). Nothing here prints a value.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// `<state>/bindings/<workload>`: the workload's `SERVICE_BINDING_ROOT`.
pub fn binding_root(state: &Path, workload: &str) -> PathBuf {
    state.join("bindings").join(workload)
}

/// Creates `dir` (and missing parents) with mode 0700, and tightens it if it existed.
fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("protecting {}", dir.display()))
}

/// servicebinding.io entry names are lowercase with `-`: `keyPrefix` becomes `key-prefix`.
pub fn entry_name(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    for c in key.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A binding's servicebinding.io entries: OSB `credentials` (an object) as (entry name, text)
/// pairs. Strings, numbers and booleans become entries; nested values have no entry. The same
/// entries are files under `$SERVICE_BINDING_ROOT/<claim>/` (`up`) and keys of a Secret
/// (controller mode).
pub fn entries(credentials: &Value) -> anyhow::Result<Vec<(String, String)>> {
    let entries = credentials
        .as_object()
        .context("credentials are not an object")?;
    Ok(entries
        .iter()
        .filter_map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((entry_name(key), text))
        })
        .collect())
}

fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(value.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes one binding's entries under `<root>/<claim>/` (replacing a previous set: the new
/// set is written beside it and renamed into place). Returns the binding's directory.
pub fn write_binding(root: &Path, claim: &str, credentials: &Value) -> anyhow::Result<PathBuf> {
    private_dir(root)?;
    if let Some(bindings) = root.parent() {
        private_dir(bindings)?;
    }
    let dir = root.join(claim);
    let staging = root.join(format!(".{claim}.new"));
    let _ = std::fs::remove_dir_all(&staging);
    private_dir(&staging)?;
    for (name, text) in entries(credentials)? {
        write_private(&staging.join(name), &text)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(&staging, &dir).with_context(|| format!("installing {}", dir.display()))?;
    Ok(dir)
}

/// Removes a claim's binding files from every workload's binding root.
pub fn remove_binding(state: &Path, claim: &str) {
    let Ok(workloads) = std::fs::read_dir(state.join("bindings")) else {
        return;
    };
    for w in workloads.flatten() {
        let _ = std::fs::remove_dir_all(w.path().join(claim));
    }
}

/// One delivered binding, as far as environment variables are concerned.
#[derive(Clone)]
pub struct Delivered {
    /// The claim's name.
    pub claim: String,
    /// `postgresql`, `mysql` or `redis`.
    pub kind: String,
    /// The connection URI (holds the password: never print it).
    pub uri: String,
}

/// The environment of a workload with these bindings: `SERVICE_BINDING_ROOT`, `<CLAIM>_URL` for
/// each, and `DATABASE_URL`/`REDIS_URL` when exactly one binding is of that family (with two
/// databases, which one `DATABASE_URL` means would be a guess).
pub fn environment(root: &Path, bindings: &[Delivered]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert(
        "SERVICE_BINDING_ROOT".to_owned(),
        root.to_string_lossy().into_owned(),
    );
    for b in bindings {
        let var = format!("{}_URL", b.claim.to_ascii_uppercase().replace('-', "_"));
        env.insert(var, b.uri.clone());
    }
    let only = |kinds: &[&str]| {
        let mut of = bindings.iter().filter(|b| kinds.contains(&b.kind.as_str()));
        match (of.next(), of.next()) {
            (Some(one), None) => Some(one.uri.clone()),
            _ => None,
        }
    };
    if let Some(uri) = only(&["postgresql", "mysql"]) {
        env.insert("DATABASE_URL".to_owned(), uri);
    }
    if let Some(uri) = only(&["redis"]) {
        env.insert("REDIS_URL".to_owned(), uri);
    }
    env
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let state = tempfile::tempdir().unwrap();
        let root = binding_root(state.path(), "billing");
        let creds = serde_json::json!({
            "type": "postgresql", "port": 5432, "password": "pw", "keyPrefix": "p:", "x": {}
        });
        let dir = write_binding(&root, "db", &creds).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("port")).unwrap(), "5432");
        assert_eq!(
            dir.join("password").metadata().unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(dir.metadata().unwrap().mode() & 0o777, 0o700);
        assert_eq!(root.metadata().unwrap().mode() & 0o777, 0o700);
        assert!(dir.join("key-prefix").exists() && !dir.join("x").exists());
        let again = serde_json::json!({"type": "postgresql"});
        write_binding(&root, "db", &again).unwrap();
        assert!(!dir.join("password").exists(), "old entries are gone");
        remove_binding(state.path(), "db");
        assert!(!dir.exists());
    }

    #[test]
    fn database_url_only_when_unambiguous() {
        let b = |claim: &str, kind: &str| Delivered {
            claim: claim.into(),
            kind: kind.into(),
            uri: format!("{kind}://{claim}"),
        };
        let root = Path::new("/s/bindings/billing");
        let env = environment(root, &[b("charges-db", "postgresql"), b("cache", "redis")]);
        assert_eq!(env["DATABASE_URL"], "postgresql://charges-db");
        assert_eq!(env["CHARGES_DB_URL"], "postgresql://charges-db");
        assert_eq!(env["REDIS_URL"], "redis://cache");
        assert_eq!(env["SERVICE_BINDING_ROOT"], "/s/bindings/billing");
        let env = environment(root, &[b("a", "postgresql"), b("b", "mysql")]);
        assert!(!env.contains_key("DATABASE_URL"));
        assert!(env.contains_key("A_URL") && env.contains_key("B_URL"));
    }
}
