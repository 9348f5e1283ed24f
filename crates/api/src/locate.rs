//! Finding a field inside a YAML document, so errors found after parsing (a policy's
//! `spec.rules[0].from[1].spiffeIdGlob`, say) point at the field's own line rather than at
//! the document's first line.

use serde_saphyr::granit_parser::{Event, Parser};

/// What the walker knows about one open collection.
struct Frame {
    /// Dotted path of the collection, e.g. `spec.rules[0]` (`""` for the root).
    path: String,
    kind: FrameKind,
}

enum FrameKind {
    /// A mapping; `key` is the key whose value comes next (`None`: a key comes next).
    Map { key: Option<String> },
    /// A sequence; `index` of the next element.
    Seq { index: usize },
}

/// 1-based `(line, column)` of the field at `path` (written like `spec.rules[0].from`) in
/// `doc`: a mapping entry's key, or a sequence element's first character. When `path` does not
/// exist (e.g. a required field is missing), the position of its longest existing prefix;
/// `None` when not even its first segment exists. Nodes after a syntax error are not seen.
pub(crate) fn field_position(doc: &str, path: &str) -> Option<(usize, usize)> {
    let positions = positions(doc);
    let mut wanted = path;
    loop {
        if let Some((_, pos)) = positions.iter().find(|(p, _)| p == wanted) {
            return Some(*pos);
        }
        let cut = wanted.rfind(['.', '['])?;
        wanted = &wanted[..cut];
    }
}

/// Fills in the `?`s serde leaves in a path where it cannot name a map key (`spec.sizes.?.x`,
/// `metadata.labels.?`): the last node of `doc` that starts at or before 1-based `at` (where
/// the parser stopped) and whose path fits `pattern`, a `?` standing for any one key.
pub(crate) fn resolve_unnamed(doc: &str, pattern: &str, at: (usize, usize)) -> Option<String> {
    positions(doc)
        .into_iter()
        .rev()
        .find(|(path, pos)| *pos <= at && fits(path, pattern))
        .map(|(path, _)| path)
}

/// Whether `path` is `pattern` with each `?` replaced by a non-empty key.
fn fits(path: &str, pattern: &str) -> bool {
    let mut parts = pattern.split('?');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = path.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        // The key is non-empty and ends where the next literal part starts.
        match rest.get(1..).and_then(|r| r.find(part)) {
            Some(at) => rest = &rest[1 + at + part.len()..],
            None => return false,
        }
    }
    rest.len() > last.len() && rest.ends_with(last)
}

/// Every position `path` occurs at, in document order (a duplicated key occurs twice).
pub(crate) fn occurrences(doc: &str, path: &str) -> Vec<(usize, usize)> {
    positions(doc)
        .into_iter()
        .filter(|(p, _)| p == path)
        .map(|(_, pos)| pos)
        .collect()
}

/// Every node's path with its 1-based position, in document order.
fn positions(doc: &str) -> Vec<(String, (usize, usize))> {
    let mut found = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for event in Parser::new_from_str(doc) {
        let Ok((event, span)) = event else { break };
        let at = (span.start.line(), span.start.col() + 1);
        match event {
            Event::Scalar(value, ..) => {
                if let Some(Frame {
                    path,
                    kind: FrameKind::Map { key: key @ None },
                }) = stack.last_mut()
                {
                    found.push((join(path, &value), at));
                    *key = Some(value.into_owned());
                } else {
                    enter_value(&mut stack, at, &mut found);
                }
            }
            Event::Alias(_) => {
                enter_value(&mut stack, at, &mut found);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let path = enter_value(&mut stack, at, &mut found);
                let kind = match event {
                    Event::MappingStart(..) => FrameKind::Map { key: None },
                    _ => FrameKind::Seq { index: 0 },
                };
                stack.push(Frame { path, kind });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    found
}

/// A value node starts: returns its path and moves its parent on to the next key/element.
/// A collection used as a mapping key gets the unmatchable path `?`.
fn enter_value(
    stack: &mut [Frame],
    at: (usize, usize),
    found: &mut Vec<(String, (usize, usize))>,
) -> String {
    let Some(parent) = stack.last_mut() else {
        return String::new();
    };
    match &mut parent.kind {
        FrameKind::Map { key } => match key.take() {
            Some(k) => join(&parent.path, &k),
            None => String::from("?"),
        },
        FrameKind::Seq { index } => {
            let path = format!("{}[{index}]", parent.path);
            *index += 1;
            found.push((path.clone(), at));
            path
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
kind: AuthorizationPolicy
spec:
  targetService: billing
  rules:
    - from: [{spiffeId: a}, {spiffeIdGlob: b}]
      to:
        - methods: [POST]
          paths:
            - exact: /charges
";

    #[test]
    fn keys_and_elements_are_found_in_block_and_flow_style() {
        assert_eq!(field_position(DOC, "spec"), Some((2, 1)));
        assert_eq!(field_position(DOC, "spec.targetService"), Some((3, 3)));
        assert_eq!(field_position(DOC, "spec.rules[0]"), Some((5, 7)));
        assert_eq!(
            field_position(DOC, "spec.rules[0].from[1].spiffeIdGlob"),
            Some((5, 30))
        );
        assert_eq!(
            field_position(DOC, "spec.rules[0].to[0].paths[0].exact"),
            Some((9, 15))
        );
    }

    #[test]
    fn missing_fields_fall_back_to_the_longest_existing_prefix() {
        assert_eq!(
            field_position(DOC, "spec.rules[0].to[0].headers[0].name"),
            Some((7, 11))
        );
        assert_eq!(field_position(DOC, "spec.rules[3]"), Some((4, 3)));
        assert_eq!(field_position(DOC, "metadata.name"), None);
        assert_eq!(field_position("a: [", "b"), None);
    }

    #[test]
    fn unnamed_keys_are_found_by_position() {
        let doc = "spec:\n  sizes:\n    small: {max: 0}\n    large:\n      max: 0\nmetadata:\n  labels:\n    a.io/app: a\n    app: b\n    app: c\n";
        let resolve = |pattern, at| resolve_unnamed(doc, pattern, at);
        assert_eq!(
            resolve("spec.sizes.?.max", (3, 18)).as_deref(),
            Some("spec.sizes.small.max")
        );
        assert_eq!(
            resolve("spec.sizes.?.max", (5, 12)).as_deref(),
            Some("spec.sizes.large.max")
        );
        assert_eq!(
            resolve("metadata.labels.?", (8, 5)).as_deref(),
            Some("metadata.labels.a.io/app")
        );
        assert_eq!(
            resolve("metadata.labels.?", (10, 5)).as_deref(),
            Some("metadata.labels.app")
        );
        assert_eq!(resolve("metadata.?", (1, 1)), None);
        assert_eq!(occurrences(doc, "metadata.labels.app"), [(9, 5), (10, 5)]);
        assert!(!fits("spec.sizes.max", "spec.sizes.?.max"));
        assert!(fits("a.b.c.d", "a.?.d"));
    }
}
