//! The versions agents and sidecars see, made from the store's revisions so that every
//! replica serves the same version for the same state.
//!
//! Every commit that changes what a view is made of ends with a put of the view's marker
//! record (`versions/identity`, `versions/snapshot`); the view's version is the revision
//! of that marker. A replica that lists the store after a delete sees the same version as
//! one that watched it happen (a version made from the records' own revisions would
//! not: a delete leaves no record), and writes that change neither view (join tokens,
//! agents) leave both versions alone, so no sidecar wakes for them. The marker is the
//! commit's last operation, and a commit's changes reach a cache in order, so a replica
//! that sees a marker's new revision already holds everything the commit changed.

use bytes::Bytes;

use crate::store::cache::StateCache;
use crate::store::{Expect, Op, Revision, Table};

/// A view with its own version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// What agents see ([`api::contract::node::NodeView`]): CA roots, JWT keys, entries.
    Identity,
    /// What sidecars see ([`api::contract::Snapshot`]): endpoints and live resources.
    Snapshot,
}

impl View {
    fn key(self) -> &'static str {
        match self {
            View::Identity => "identity",
            View::Snapshot => "snapshot",
        }
    }

    /// The operation that ends every commit changing this view.
    pub(crate) fn mark(self) -> Op {
        Op::Put {
            table: Table::Versions,
            key: self.key().to_owned(),
            value: Bytes::from_static(b"{}"),
            expect: Expect::Any,
        }
    }

    /// The marker's put, only if the view is still at `version` (what the writer's plan
    /// was made from): a replica whose cache lags cannot commit a plan made from old state.
    pub(crate) fn mark_if_at(self, version: Revision) -> Op {
        Op::Put {
            table: Table::Versions,
            key: self.key().to_owned(),
            value: Bytes::from_static(b"{}"),
            expect: match version {
                0 => Expect::Absent,
                v => Expect::At(v),
            },
        }
    }

    /// The operation that sets the marker only if it does not exist yet (a store written
    /// before markers existed, or a new one).
    pub(crate) fn mark_first(self) -> Op {
        Op::Put {
            table: Table::Versions,
            key: self.key().to_owned(),
            value: Bytes::from_static(b"{}"),
            expect: Expect::Absent,
        }
    }

    /// The view's version in `cache` (0 before the first marked commit).
    pub(crate) fn version(self, cache: &StateCache) -> Revision {
        cache
            .get(Table::Versions, self.key())
            .map_or(0, |r| r.mod_revision)
    }
}
