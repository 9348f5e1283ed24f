//! Label and field selectors on list and watch, as far as the fake API server goes:
//! equality-based label selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`) and field selectors on
//! `metadata.name` and `metadata.namespace`. Anything else is refused with a 400 rather than
//! silently ignored, so a test never believes a filter it did not get.

use serde_json::Value;

use super::status::FakeStatus;

#[derive(Debug, Clone)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn parse(term: &str) -> Option<Requirement> {
        let term = term.trim();
        if let Some((key, value)) = term.split_once("!=") {
            return Some(Requirement::NotEquals(
                key.trim().into(),
                value.trim().into(),
            ));
        }
        if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            return Some(Requirement::Equals(key.trim().into(), value.trim().into()));
        }
        if term.contains([' ', '(', ')']) || term.is_empty() {
            return None;
        }
        match term.strip_prefix('!') {
            Some(key) => Some(Requirement::NotExists(key.into())),
            None => Some(Requirement::Exists(term.into())),
        }
    }

    fn matches(&self, value_of: impl Fn(&str) -> Option<String>) -> bool {
        match self {
            Requirement::Equals(k, v) => value_of(k).as_deref() == Some(v.as_str()),
            Requirement::NotEquals(k, v) => value_of(k).as_deref() != Some(v.as_str()),
            Requirement::Exists(k) => value_of(k).is_some(),
            Requirement::NotExists(k) => value_of(k).is_none(),
        }
    }
}

/// A parsed `labelSelector` plus `fieldSelector`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Filter {
    /// Parses the two query parameters (absent means "everything").
    pub(crate) fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Filter, FakeStatus> {
        let mut filter = Filter::default();
        for term in labels
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.trim().is_empty())
        {
            let requirement = Requirement::parse(term).ok_or_else(|| {
                FakeStatus::BadRequest(format!(
                    "unable to parse requirement {term:?}: the fake API server supports only \
                     equality-based label selectors"
                ))
            })?;
            filter.labels.push(requirement);
        }
        for term in fields
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.trim().is_empty())
        {
            let requirement = Requirement::parse(term)
                .filter(|r| matches!(r, Requirement::Equals(..) | Requirement::NotEquals(..)))
                .filter(|r| {
                    let (Requirement::Equals(k, _) | Requirement::NotEquals(k, _)) = r else {
                        return false;
                    };
                    k == "metadata.name" || k == "metadata.namespace"
                });
            let requirement = requirement.ok_or_else(|| {
                FakeStatus::BadRequest(format!(
                    "field label not supported: {term:?} (the fake API server knows only \
                     metadata.name and metadata.namespace)"
                ))
            })?;
            filter.fields.push(requirement);
        }
        Ok(filter)
    }

    /// Whether `object` is selected.
    pub(crate) fn matches(&self, object: &Value) -> bool {
        let metadata = &object["metadata"];
        let label = |key: &str| metadata["labels"][key].as_str().map(str::to_owned);
        let field = |key: &str| {
            let name = key.strip_prefix("metadata.")?;
            Some(metadata[name].as_str().unwrap_or("").to_owned())
        };
        self.labels.iter().all(|r| r.matches(label)) && self.fields.iter().all(|r| r.matches(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equality_selectors_select() {
        let object = json!({"metadata":{"name":"a","namespace":"ns","labels":{"app":"x"}}});
        let yes = |l: &str, f: &str| Filter::parse(Some(l), Some(f)).unwrap().matches(&object);
        assert!(yes("app=x", ""));
        assert!(yes("app==x,!other", "metadata.name=a"));
        assert!(yes("app", "metadata.namespace!=other"));
        assert!(!yes("app!=x", ""));
        assert!(!yes("other", ""));
        assert!(!yes("", "metadata.name=b"));
    }

    #[test]
    fn set_based_and_unknown_fields_are_refused() {
        assert!(Filter::parse(Some("app in (x,y)"), None).is_err());
        assert!(Filter::parse(None, Some("status.phase=Running")).is_err());
    }
}
