//! The fake API server's storage: objects by (resource, namespace, name), one global
//! `resourceVersion` counter, the history window and the open watches. Every write goes
//! through here under one lock, so watches see changes in commit order.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::FakeRequest;
use super::admission;
use super::meta::{self, field, finalizers, metadata_mut, normalize, spec_changed};
use super::patch::{FakePatch, PatchError};
use super::resource::FakeResource;
use super::schema::Schema;
use super::secret;
use super::status::{Cause, FakeStatus, Subject, deleted};
use super::watch::{Change, History, Recorded, Watcher};

/// (resource index, namespace — `""` when cluster-scoped —, name).
pub(crate) type Key = (usize, String, String);

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main endpoint: everything but `.status` when the kind has a status subresource.
    Main,
    /// The `/status` subresource: only `.status`.
    Status,
}

/// Everything the fake API server holds.
#[derive(Debug)]
pub(crate) struct Store {
    pub resources: Vec<FakeResource>,
    /// The compiled `FakeResource::schema` of each resource, by index.
    schemas: Vec<Option<Schema>>,
    pub objects: BTreeMap<Key, Value>,
    pub revision: u64,
    pub history: History,
    pub watchers: Vec<Watcher>,
    pub requests: Vec<FakeRequest>,
}

impl Store {
    /// An empty store serving `resources`, keeping `history` changes for watches to resume;
    /// the error names the kind whose schema does not compile, and why.
    pub(crate) fn new(
        resources: Vec<FakeResource>,
        history: usize,
    ) -> Result<Store, (String, String)> {
        let schemas = resources
            .iter()
            .map(|r| match &r.schema {
                Some(source) => Schema::compile(source)
                    .map(Some)
                    .map_err(|why| (r.kind.clone(), why)),
                None => Ok(None),
            })
            .collect::<Result<_, _>>()?;
        Ok(Store {
            resources,
            schemas,
            objects: BTreeMap::new(),
            revision: 1,
            history: History::new(history),
            watchers: Vec::new(),
            requests: Vec::new(),
        })
    }

    pub(crate) fn subject(&self, key: &Key) -> Subject {
        Subject {
            group: self.resources[key.0].group.clone(),
            plural: self.resources[key.0].plural.clone(),
            kind: self.resources[key.0].kind.clone(),
            name: key.2.clone(),
        }
    }

    /// The kind's own rules for storing `object` (replacing `old` on update): Secrets', then
    /// the CRD schema's (which prunes and defaults `object` first).
    fn admit(&self, key: &Key, object: &mut Value, old: Option<&Value>) -> Result<(), FakeStatus> {
        let info = &self.resources[key.0];
        if info.is_core_secrets() {
            secret::decodable(object)?;
            secret::defaults(object);
        }
        let mut causes = Vec::new();
        if let Some(schema) = &self.schemas[key.0]
            && let Err(refused) = schema.admit(object)
        {
            causes.extend(refused);
        }
        if info.is_core_secrets() {
            causes.extend(secret::causes(object, old));
        }
        if causes.is_empty() {
            return Ok(());
        }
        Err(FakeStatus::invalid(self.subject(key), &causes))
    }

    fn next_revision(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Records a committed change and pushes it to every open watch that sees it.
    fn commit(&mut self, change: Change, key: &Key, before: Option<Value>, object: &Value) {
        let recorded = Recorded {
            revision: self.revision,
            change,
            resource: key.0,
            namespace: key.1.clone(),
            before,
            object: object.clone(),
        };
        self.watchers
            .retain(|watcher| match watcher.event_for(&recorded) {
                Some(event) => watcher.send(event),
                None => !watcher.sender.is_closed(),
            });
        self.history.push(recorded);
    }

    /// Sends `event(resource)` to every open watch that asked for bookmarks.
    pub(crate) fn bookmark_all(&mut self) {
        let revision = self.revision;
        let resources = &self.resources;
        self.watchers.retain(|watcher| {
            if !watcher.bookmarks {
                return !watcher.sender.is_closed();
            }
            let event = super::watch::bookmark(&resources[watcher.resource], revision, None);
            watcher.send(event)
        });
    }

    /// Closes every open watch and forgets the history, as if the real server's watch cache
    /// had been compacted: a watch resuming from any `resourceVersion` seen so far gets 410.
    pub(crate) fn expire_watches(&mut self) {
        self.watchers.clear();
        let revision = self.next_revision();
        self.history.compact(revision);
    }

    pub(crate) fn get(&self, key: &Key) -> Result<Value, FakeStatus> {
        self.objects
            .get(key)
            .cloned()
            .ok_or_else(|| FakeStatus::NotFound(self.subject(key)))
    }

    /// `POST`: a new object named by `body` (or `generateName`) in `key.1`.
    pub(crate) fn create(
        &mut self,
        key_of: (usize, String),
        body: Value,
    ) -> Result<Value, FakeStatus> {
        let (resource, namespace) = key_of;
        let mut object = body;
        admission::decodable(&object, &self.resources[resource].kind)?;
        let name = match field(&object, "name") {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => match field(&object, "generateName") {
                Some(prefix) if !prefix.is_empty() => format!("{prefix}{}", suffix()),
                _ => return Err(self.invalid_name(resource)),
            },
        };
        self.check_namespace(&object, &namespace)?;
        let key = (resource, namespace.clone(), name.clone());
        if let Err(causes) = admission::creatable(&name) {
            return Err(FakeStatus::invalid(self.subject(&key), &causes));
        }
        let info = self.resources[resource].clone();
        object["apiVersion"] = json!(info.api_version());
        object["kind"] = json!(info.kind);
        if info.has_status_subresource
            && let Value::Object(fields) = &mut object
        {
            fields.remove("status");
        }
        // The real server's order: validation, then the storage layer's checks.
        self.admit(&key, &mut object, None)?;
        if admission::has_resource_version(&object) {
            return Err(FakeStatus::BadRequest(
                "resourceVersion should not be set on objects to be created".into(),
            ));
        }
        if self.objects.contains_key(&key) {
            return Err(FakeStatus::AlreadyExists(self.subject(&key)));
        }
        let revision = self.next_revision();
        meta::stamp_new(&mut object, &info, (&key.1, &key.2), revision);
        normalize(&mut object);
        self.objects.insert(key.clone(), object.clone());
        self.commit(Change::Added, &key, None, &object);
        self.sweep(vec![key]);
        Ok(object)
    }

    fn invalid_name(&self, resource: usize) -> FakeStatus {
        let subject = Subject {
            group: self.resources[resource].group.clone(),
            plural: self.resources[resource].plural.clone(),
            kind: self.resources[resource].kind.clone(),
            name: String::new(),
        };
        let cause = Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        );
        FakeStatus::invalid(subject, &[cause])
    }

    fn check_namespace(&self, object: &Value, namespace: &str) -> Result<(), FakeStatus> {
        match field(object, "namespace") {
            Some(theirs) if !theirs.is_empty() && theirs != namespace => {
                Err(FakeStatus::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// `PUT` (of the object or of its `/status`).
    pub(crate) fn replace(
        &mut self,
        key: &Key,
        body: Value,
        part: Part,
    ) -> Result<Value, FakeStatus> {
        let old = self.get(key)?;
        admission::decodable(&body, &self.resources[key.0].kind)?;
        if field(&body, "name").is_some_and(|n| n != key.2) {
            return Err(FakeStatus::BadRequest(
                "the name of the object does not match the name on the URL".into(),
            ));
        }
        self.check_namespace(&body, &key.1)?;
        if let Some(theirs) = field(&body, "uid")
            && field(&old, "uid") != Some(theirs)
        {
            let why = format!(
                "Precondition failed: UID in precondition: {theirs}, UID in object meta: {}",
                field(&old, "uid").unwrap_or("")
            );
            return Err(FakeStatus::Conflict(self.subject(key), why));
        }
        match field(&body, "resourceVersion") {
            Some(theirs) => self.precondition(key, &old, theirs)?,
            None if !self.resources[key.0].group.is_empty() => {
                let cause = Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0: must be specified for an update",
                );
                return Err(FakeStatus::invalid(self.subject(key), &[cause]));
            }
            None => {}
        }
        self.update(key, old, body, part)
    }

    /// `PATCH` (of the object or of its `/status`); server-side apply creates a missing object.
    pub(crate) fn patch(
        &mut self,
        key: &Key,
        patch: &FakePatch,
        part: Part,
    ) -> Result<Value, FakeStatus> {
        let old = match self.objects.get(key) {
            Some(old) => old.clone(),
            None if patch.is_apply() && part == Part::Main => {
                let body = patch
                    .apply_to(&json!({"metadata": {"name": key.2}}))
                    .map_err(rejected)?;
                return self.create((key.0, key.1.clone()), body);
            }
            None => return Err(FakeStatus::NotFound(self.subject(key))),
        };
        let patched = patch.apply_to(&old).map_err(rejected)?;
        admission::decodable(&patched, &self.resources[key.0].kind)?;
        if let Some(theirs) = field(&patched, "resourceVersion") {
            self.precondition(key, &old, theirs)?;
        }
        self.update(key, old, patched, part)
    }

    fn precondition(&self, key: &Key, old: &Value, theirs: &str) -> Result<(), FakeStatus> {
        if field(old, "resourceVersion") == Some(theirs) {
            return Ok(());
        }
        Err(FakeStatus::Conflict(
            self.subject(key),
            "the object has been modified; please apply your changes to the latest version and try again".into(),
        ))
    }

    /// The write both `PUT` and `PATCH` end in: keeps what the caller may not change, refuses
    /// new finalizers on an object being deleted, skips no-op writes (no new
    /// `resourceVersion`, no event, as the real server does), bumps `generation` on spec
    /// changes, and finishes a deletion whose last finalizer went.
    pub(super) fn update(
        &mut self,
        key: &Key,
        old: Value,
        new: Value,
        part: Part,
    ) -> Result<Value, FakeStatus> {
        let info = self.resources[key.0].clone();
        admission::decodable(&new, &info.kind)?;
        let mut next = match part {
            Part::Status => with_status_of(old.clone(), &new),
            Part::Main if info.has_status_subresource => with_status_of(new, &old),
            Part::Main => new,
        };
        meta::keep_server_fields(&mut next, &old);
        self.admit(key, &mut next, Some(&old))?;
        self.refuse_new_finalizers(key, &old, &next)?;
        if next == old {
            return Ok(old);
        }
        if !info.group.is_empty() && spec_changed(&old, &next) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
            let generation = generation.saturating_add(1);
            metadata_mut(&mut next).insert("generation".into(), json!(generation));
        }
        let revision = self.next_revision();
        metadata_mut(&mut next).insert("resourceVersion".into(), json!(revision.to_string()));
        if field(&next, "deletionTimestamp").is_some() && finalizers(&next).is_empty() {
            self.objects.remove(key);
            self.commit(Change::Deleted, key, Some(old), &next);
            self.owner_gone(key, &next);
            return Ok(next);
        }
        self.objects.insert(key.clone(), next.clone());
        self.commit(Change::Modified, key, Some(old), &next);
        self.sweep(vec![key.clone()]);
        Ok(next)
    }

    /// The real server's rule: an object being deleted takes no new finalizers.
    fn refuse_new_finalizers(
        &self,
        key: &Key,
        old: &Value,
        next: &Value,
    ) -> Result<(), FakeStatus> {
        if field(old, "deletionTimestamp").is_none() {
            return Ok(());
        }
        let before = finalizers(old);
        let added: Vec<String> = finalizers(next)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if added.is_empty() {
            return Ok(());
        }
        let why = format!(
            "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
        );
        let cause = Cause::new("FieldValueForbidden", "metadata.finalizers", why);
        Err(FakeStatus::invalid(self.subject(key), &[cause]))
    }

    /// `DELETE`: with finalizers, marks the object (`deletionTimestamp`, grace 0, generation
    /// bumped, `MODIFIED`) and answers with it; without, removes it (`DELETED`), answers with a
    /// `Success` status and deletes its dependents (see `gc.rs`).
    pub(crate) fn delete(&mut self, key: &Key, options: &Value) -> Result<Value, FakeStatus> {
        let old = self.get(key)?;
        let preconditions = &options["preconditions"];
        for (name, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(wanted) = preconditions[name].as_str()
                && field(&old, name) != Some(wanted)
            {
                let why = format!(
                    "Precondition failed: {label} in precondition: {wanted}, {label} in object meta: {}",
                    field(&old, name).unwrap_or("")
                );
                return Err(FakeStatus::Conflict(self.subject(key), why));
            }
        }
        if !finalizers(&old).is_empty() {
            if field(&old, "deletionTimestamp").is_some() {
                return Ok(old);
            }
            let mut next = old.clone();
            let revision = self.next_revision();
            let metadata = metadata_mut(&mut next);
            metadata.insert("deletionTimestamp".into(), json!(meta::now()));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
            metadata.insert("resourceVersion".into(), json!(revision.to_string()));
            if let Some(generation) = metadata.get("generation").and_then(Value::as_i64) {
                metadata.insert("generation".into(), json!(generation.saturating_add(1)));
            }
            self.objects.insert(key.clone(), next.clone());
            self.commit(Change::Modified, key, Some(old), &next);
            return Ok(next);
        }
        let mut gone = old.clone();
        let revision = self.next_revision();
        metadata_mut(&mut gone).insert("resourceVersion".into(), json!(revision.to_string()));
        self.objects.remove(key);
        self.commit(Change::Deleted, key, Some(old), &gone);
        self.owner_gone(key, &gone);
        Ok(deleted(
            &self.subject(key),
            field(&gone, "uid").unwrap_or(""),
        ))
    }

    /// The objects of `resource` in `namespace` (all namespaces if `None`) that `filter` keeps.
    pub(crate) fn select<'a>(
        &'a self,
        resource: usize,
        namespace: Option<&'a str>,
        filter: &'a super::selector::Filter,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |((r, ns, _), _)| *r == resource && namespace.is_none_or(|n| n == ns))
            .map(|(_, object)| object)
            .filter(move |object| filter.matches(object))
    }

    /// Registers a watch: queues `initial` then every later change it sees.
    pub(crate) fn watch(&mut self, watcher: Watcher, initial: Vec<Bytes>) {
        for event in initial {
            if !watcher.send(event) {
                return;
            }
        }
        self.watchers.push(watcher);
    }
}

fn with_status_of(mut object: Value, source: &Value) -> Value {
    if let Value::Object(fields) = &mut object {
        match source.get("status") {
            Some(status) => fields.insert("status".into(), status.clone()),
            None => fields.remove("status"),
        };
    }
    object
}

fn rejected(error: PatchError) -> FakeStatus {
    match error {
        PatchError::MediaType => FakeStatus::UnsupportedMediaType(error.to_string()),
        PatchError::Decode(_) => FakeStatus::BadRequest(error.to_string()),
        PatchError::Apply(source) => FakeStatus::Rejected(source.to_string()),
    }
}

/// Five characters for `generateName`, from the real server's alphabet (no vowels).
fn suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
