//! Matcher descriptions, rendered once at compile time so that a decision pays a single
//! allocation for its `matcher` text instead of formatting on the request path.

use crate::model::{EgressDestination, IdentityMatcher, RequestMatcher};

/// Descriptions of one rule's `from` entries and of each `to` entry per matching path matcher.
#[derive(Debug, Default)]
pub(super) struct MatcherTexts {
    from: Vec<String>,
    /// `to[i][p]`: entry `i` when path matcher `p` matched (index 0 when it has no paths).
    to: Vec<Vec<String>>,
}

fn from_texts(from: &[IdentityMatcher]) -> Vec<String> {
    from.iter()
        .enumerate()
        .map(|(i, m)| format!("from[{i}] {m}"))
        .collect()
}

impl MatcherTexts {
    pub(super) fn authz(from: &[IdentityMatcher], to: &[RequestMatcher]) -> Self {
        let to = to
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let paths: Vec<Option<usize>> = if t.paths.is_empty() {
                    vec![None]
                } else {
                    (0..t.paths.len()).map(Some).collect()
                };
                paths
                    .into_iter()
                    .map(|p| format!("to[{i}] {}", t.describe(p)))
                    .collect()
            })
            .collect();
        MatcherTexts {
            from: from_texts(from),
            to,
        }
    }

    /// Egress entries have one destination, stored at `to` position 0 and labelled with
    /// its index `rule` in the policy.
    pub(super) fn egress(
        from: &[IdentityMatcher],
        rule: usize,
        destination: &EgressDestination,
    ) -> Self {
        let paths: Vec<Option<usize>> = if destination.paths.is_empty() {
            vec![None]
        } else {
            (0..destination.paths.len()).map(Some).collect()
        };
        let to = paths
            .into_iter()
            .map(|p| format!("to[{rule}] {}", destination.describe(p)))
            .collect();
        MatcherTexts {
            from: from_texts(from),
            to: vec![to],
        }
    }

    /// `<from text>; <to text>`, with `any caller` / `any request` for empty lists.
    pub(super) fn render(
        &self,
        from: Option<usize>,
        to: Option<usize>,
        path: Option<usize>,
    ) -> String {
        let from = from
            .and_then(|i| self.from.get(i))
            .map_or("any caller", String::as_str);
        let to = to
            .and_then(|i| self.to.get(i))
            .and_then(|texts| texts.get(path.unwrap_or(0)))
            .map_or("any request", String::as_str);
        let mut s = String::with_capacity(from.len() + 2 + to.len());
        s.push_str(from);
        s.push_str("; ");
        s.push_str(to);
        s
    }
}
