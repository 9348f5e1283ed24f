//! Watches on the fake API server: the history window events are replayed from, the open
//! watches changes are pushed to (in commit order, under the store's lock), bookmarks and
//! the `ERROR` event a too-old `resourceVersion` gets.

use std::collections::VecDeque;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::resource::FakeResource;
use super::selector::Filter;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// `ADDED`.
    Added,
    /// `MODIFIED`.
    Modified,
    /// `DELETED`.
    Deleted,
}

impl Change {
    fn word(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

/// One committed change, kept in the history window.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub revision: u64,
    pub change: Change,
    pub resource: usize,
    pub namespace: String,
    /// The object before the change (`None` for a create), to tell a selector-scoped watch
    /// that an object entered or left its selection.
    pub before: Option<Value>,
    pub object: Value,
}

/// One open watch.
#[derive(Debug)]
pub(crate) struct Watcher {
    pub resource: usize,
    pub namespace: Option<String>,
    pub filter: Filter,
    pub bookmarks: bool,
    pub sender: mpsc::UnboundedSender<Bytes>,
}

impl Watcher {
    /// The event this watch sees for `recorded`, if any (encoded, newline-terminated).
    pub(crate) fn event_for(&self, recorded: &Recorded) -> Option<Bytes> {
        if recorded.resource != self.resource {
            return None;
        }
        if let Some(namespace) = &self.namespace
            && *namespace != recorded.namespace
        {
            return None;
        }
        let was = recorded
            .before
            .as_ref()
            .is_some_and(|b| self.filter.matches(b));
        let is = self.filter.matches(&recorded.object);
        let change = match (recorded.change, was, is) {
            (Change::Deleted, true, _) => Change::Deleted,
            (Change::Deleted, false, _) => return None,
            (_, false, true) => Change::Added,
            (_, true, true) => recorded.change,
            (_, true, false) => Change::Deleted,
            (_, false, false) => return None,
        };
        Some(encode(change.word(), &recorded.object))
    }

    /// Sends `event`; `false` once the watch's reader is gone.
    pub(crate) fn send(&self, event: Bytes) -> bool {
        self.sender.send(event).is_ok()
    }
}

/// `{"type":…,"object":…}` and a newline, as the real server frames watch events.
pub(crate) fn encode(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": kind, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// A `BOOKMARK` event: only `metadata.resourceVersion` (and, for the core group's typed
/// objects, the `creationTimestamp: null` the real server's zero object carries).
pub(crate) fn bookmark(
    resource: &FakeResource,
    revision: u64,
    annotations: Option<Value>,
) -> Bytes {
    let mut metadata = json!({ "resourceVersion": revision.to_string() });
    if resource.group.is_empty() {
        metadata["creationTimestamp"] = Value::Null;
    }
    if let Some(annotations) = annotations {
        metadata["annotations"] = annotations;
    }
    let object = json!({
        "kind": resource.kind,
        "apiVersion": resource.api_version(),
        "metadata": metadata,
    });
    encode("BOOKMARK", &object)
}

/// The history window: the last `limit` changes, and the oldest `resourceVersion` a watch
/// may still start from.
#[derive(Debug)]
pub(crate) struct History {
    changes: VecDeque<Recorded>,
    limit: usize,
    /// A watch from a `resourceVersion` below this gets 410.
    floor: u64,
}

impl History {
    /// An empty history keeping up to `limit` changes.
    pub(crate) fn new(limit: usize) -> History {
        History {
            changes: VecDeque::new(),
            limit: limit.max(1),
            floor: 0,
        }
    }

    /// Keeps `recorded`, dropping the oldest change past the limit.
    pub(crate) fn push(&mut self, recorded: Recorded) {
        if self.changes.len() == self.limit
            && let Some(dropped) = self.changes.pop_front()
        {
            self.floor = dropped.revision;
        }
        self.changes.push_back(recorded);
    }

    /// Forgets everything up to `revision`: a watch must now start at `revision` or later.
    pub(crate) fn compact(&mut self, revision: u64) {
        self.changes.retain(|c| c.revision > revision);
        self.floor = self.floor.max(revision);
    }

    /// The oldest `resourceVersion` a watch may start from.
    pub(crate) fn floor(&self) -> u64 {
        self.floor
    }

    /// Changes after `revision`, oldest first; `None` if `revision` is older than the window.
    pub(crate) fn since(&self, revision: u64) -> Option<impl Iterator<Item = &Recorded>> {
        if revision < self.floor {
            return None;
        }
        Some(self.changes.iter().filter(move |c| c.revision > revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(revision: u64) -> Recorded {
        Recorded {
            revision,
            change: Change::Added,
            resource: 0,
            namespace: "ns".into(),
            before: None,
            object: json!({"metadata":{"name": revision.to_string()}}),
        }
    }

    #[test]
    fn the_window_drops_the_oldest_and_raises_the_floor() {
        let mut history = History::new(2);
        for revision in 1..=3 {
            history.push(recorded(revision));
        }
        assert_eq!(history.floor(), 1);
        assert!(history.since(0).is_none());
        let after: Vec<u64> = history.since(1).unwrap().map(|c| c.revision).collect();
        assert_eq!(after, [2, 3]);
        history.compact(3);
        assert!(history.since(2).is_none());
        assert_eq!(history.since(3).unwrap().count(), 0);
    }

    #[test]
    fn a_selector_watch_sees_objects_enter_and_leave() {
        let (sender, _receiver) = mpsc::unbounded_channel();
        let watcher = Watcher {
            resource: 0,
            namespace: None,
            filter: Filter::parse(Some("app=x"), None).unwrap(),
            bookmarks: false,
            sender,
        };
        let with = json!({"metadata":{"name":"a","labels":{"app":"x"}}});
        let without = json!({"metadata":{"name":"a"}});
        let mut change = recorded(2);
        change.change = Change::Modified;
        change.before = Some(without.clone());
        change.object = with.clone();
        let added = watcher.event_for(&change).unwrap();
        assert!(String::from_utf8_lossy(&added).contains("\"ADDED\""));
        change.before = Some(with);
        change.object = without;
        let left = watcher.event_for(&change).unwrap();
        assert!(String::from_utf8_lossy(&left).contains("\"DELETED\""));
    }
}
