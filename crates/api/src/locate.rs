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
}
