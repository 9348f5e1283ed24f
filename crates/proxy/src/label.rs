//! Interned metric label values: the data path builds request-metric keys from [`Label`]s,
//! which are `Copy` and compare and hash as one pointer, so counting a request allocates
//! no label strings.
//!
//! Every distinct text is stored once for the life of the process (leaked on purpose), so
//! equal text ⇔ equal `Label`. What gets interned is bounded by the mesh itself: service
//! names and route templates from snapshots, and SPIFFE IDs that passed mTLS verification
//! against the trust bundle (or that the snapshot names). Raw request paths, hosts or
//! headers are never interned: that is what keeps metric cardinality bounded.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, PoisonError, RwLock};

use http::Method;

use policy::hasher::FxBuildHasher as FxBuild;

/// An interned label value (see the [module docs](self)).
#[derive(Clone, Copy)]
pub struct Label(&'static str);

/// The route of a request no template of its service matches (or whose path the
/// normaliser refuses): raw paths never become labels.
pub static UNMATCHED: Label = Label("[unmatched]");
/// No value: the service of an inbound request to a workload that backs no mesh service
/// (or of an outbound request without a usable host); the peer when none is known (egress,
/// or a failure before any peer answered).
pub static NONE: Label = Label("[none]");
/// The service of an outbound request to a destination outside the mesh (egress): hosts
/// outside the mesh are unbounded, so they never become labels.
pub static EGRESS: Label = Label("[egress]");

/// Seeded with the statics' own pointers, so interning their text yields them.
static INTERNED: LazyLock<RwLock<HashSet<&'static str, FxBuild>>> = LazyLock::new(|| {
    let seeds = [UNMATCHED.0, NONE.0, EGRESS.0];
    RwLock::new(seeds.into_iter().collect())
});

impl Label {
    /// The label for `text`: a read-locked lookup, and one leaked copy the first time.
    pub fn intern(text: &str) -> Label {
        let found = INTERNED
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(text)
            .copied();
        if let Some(interned) = found {
            return Label(interned);
        }
        let mut set = INTERNED.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(interned) = set.get(text) {
            return Label(interned);
        }
        let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
        set.insert(leaked);
        Label(leaked)
    }

    /// The text.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Label) -> bool {
        // Interned: one pointer per text.
        std::ptr::eq(self.0, other.0)
    }
}

impl Eq for Label {}

impl Hash for Label {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.0.as_ptr() as usize);
    }
}

impl std::fmt::Debug for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0, f)
    }
}

/// The `method` label: the standard methods (RFC 9110 and PATCH), anything else `OTHER`,
/// so a client inventing methods cannot grow the series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MethodLabel {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `DELETE`.
    Delete,
    /// `CONNECT`.
    Connect,
    /// `OPTIONS`.
    Options,
    /// `TRACE`.
    Trace,
    /// `PATCH`.
    Patch,
    /// Any extension method.
    Other,
}

impl MethodLabel {
    /// The label for `method`.
    pub fn of(method: &Method) -> MethodLabel {
        match *method {
            Method::GET => MethodLabel::Get,
            Method::HEAD => MethodLabel::Head,
            Method::POST => MethodLabel::Post,
            Method::PUT => MethodLabel::Put,
            Method::DELETE => MethodLabel::Delete,
            Method::CONNECT => MethodLabel::Connect,
            Method::OPTIONS => MethodLabel::Options,
            Method::TRACE => MethodLabel::Trace,
            Method::PATCH => MethodLabel::Patch,
            _ => MethodLabel::Other,
        }
    }

    /// The label text.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodLabel::Get => "GET",
            MethodLabel::Head => "HEAD",
            MethodLabel::Post => "POST",
            MethodLabel::Put => "PUT",
            MethodLabel::Delete => "DELETE",
            MethodLabel::Connect => "CONNECT",
            MethodLabel::Options => "OPTIONS",
            MethodLabel::Trace => "TRACE",
            MethodLabel::Patch => "PATCH",
            MethodLabel::Other => "OTHER",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_text_is_the_same_label() {
        let a = Label::intern("/charges/{id}");
        let b = Label::intern(&String::from("/charges/{id}"));
        assert_eq!(a, b);
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_ne!(a, Label::intern("/charges"));
        assert_eq!(Label::intern("[unmatched]"), UNMATCHED);
        assert_eq!(Label::intern("[egress]"), EGRESS);
        assert_eq!(Label::intern("[none]"), NONE);
    }

    #[test]
    fn extension_methods_are_other() {
        assert_eq!(MethodLabel::of(&Method::PATCH).as_str(), "PATCH");
        let invented = Method::from_bytes(b"BREW").unwrap_or(Method::GET);
        assert_eq!(MethodLabel::of(&invented), MethodLabel::Other);
        assert_eq!(MethodLabel::Other.as_str(), "OTHER");
    }
}
