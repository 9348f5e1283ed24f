//! The garbage collector, run synchronously where the real one runs later, in the
//! background: an object whose `ownerReferences` name no live owner is deleted (background
//! propagation, finalizers honoured); one with some live and some absent owners loses the
//! references to the absent ones. An owner is live for a dependent if an object with its uid
//! exists in the dependent's namespace, or is of a cluster-scoped kind (the real collector's
//! rule: a namespaced owner in another namespace is absent). Checked when an object is
//! created or updated (its own references) and when an object goes (its dependents).

use serde_json::Value;

use super::meta::{self, field};
use super::store::{Key, Part, Store};

impl Store {
    /// Whether an object with `uid` exists that a dependent in `namespace` may be owned by.
    fn owner_alive(&self, namespace: &str, uid: &str) -> bool {
        self.objects.iter().any(|((resource, ns, _), object)| {
            field(object, "uid") == Some(uid)
                && (ns == namespace || !self.resources[*resource].namespaced)
        })
    }

    /// Checks the owners of each of `keys` (see the module docs).
    pub(crate) fn sweep(&mut self, keys: Vec<Key>) {
        for key in keys {
            let Some(object) = self.objects.get(&key).cloned() else {
                continue;
            };
            let owners = meta::owner_uids(&object);
            if owners.is_empty() {
                continue;
            }
            let (alive, absent): (Vec<String>, Vec<String>) = owners
                .into_iter()
                .partition(|uid| self.owner_alive(&key.1, uid));
            // A failure here would be the fake's own bug; the real collector retries forever.
            let _ = if alive.is_empty() {
                self.delete(&key, &Value::Null).map(|_| ())
            } else if !absent.is_empty() {
                let mut next = object.clone();
                // invariant: stored objects are objects with an object `metadata`
                // (admission.rs), so indexing cannot panic.
                if let Some(refs) = next["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| {
                        r["uid"]
                            .as_str()
                            .is_none_or(|u| !absent.iter().any(|a| a == u))
                    });
                }
                self.update(&key, object, next, Part::Main).map(|_| ())
            } else {
                Ok(())
            };
        }
    }

    /// `owner` (stored at `key`) is gone: sweeps the objects that named it.
    pub(crate) fn owner_gone(&mut self, key: &Key, owner: &Value) {
        let Some(uid) = field(owner, "uid").map(str::to_owned) else {
            return;
        };
        let cluster_scoped = !self.resources[key.0].namespaced;
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|((_, ns, _), object)| {
                (cluster_scoped || *ns == key.1) && meta::owner_uids(object).contains(&uid)
            })
            .map(|(key, _)| key.clone())
            .collect();
        self.sweep(dependents);
    }
}
