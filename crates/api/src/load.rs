//! Reading resources from YAML files, with errors that name file, line, resource and field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::resource::{API_VERSION, Resource};
use crate::set::ResourceSet;

/// Where a resource was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the document's first line.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A resource together with where it came from, for error messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<S> {
    /// The resource.
    pub resource: Resource<S>,
    /// Where it was read.
    pub origin: Origin,
}

/// A resource file could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file or directory could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// What we tried to read.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not fit the kind's schema.
    #[error("{file}:{line}:{column}: {resource}{field}: {message}",
        file = .file.display(),
        resource = .resource.as_deref().unwrap_or("resource"),
        field = .field.as_deref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    Invalid {
        /// File the resource is in.
        file: PathBuf,
        /// 1-based line of the problem (of the document when unknown).
        line: usize,
        /// 1-based column, 0 when unknown.
        column: usize,
        /// `Kind/name` when known.
        resource: Option<String>,
        /// Dotted field path, e.g. `spec.rules[0].from`.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A directory holds no resources at all.
    #[error("{}: no *.yaml or *.yml resource files found", .0.display())]
    Empty(PathBuf),
    /// Several problems found at once (e.g. every invalid field of a policy), one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<LoadError>),
}

impl LoadError {
    /// One error as itself, several as [`LoadError::Several`] (flattened).
    pub(crate) fn from_many(errors: Vec<LoadError>) -> LoadError {
        let mut flat: Vec<LoadError> = errors
            .into_iter()
            .flat_map(|e| match e {
                LoadError::Several(inner) => inner,
                other => vec![other],
            })
            .collect();
        if flat.len() == 1
            && let Some(one) = flat.pop()
        {
            return one;
        }
        LoadError::Several(flat)
    }
}

/// The kind-independent head of a document, read before its spec.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize)]
struct HeadMeta {
    name: Option<String>,
}

/// Reads every `*.yaml`/`*.yml` file in `dir` (sorted, not recursive) into a validated set.
pub fn load_dir(dir: &Path) -> Result<ResourceSet, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty(dir.to_owned()));
    }
    let mut set = ResourceSet::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        load_str(&file, &text, &mut set)?;
    }
    set.validate()?;
    Ok(set)
}

/// Adds the resources in one file's text to `set` (without cross-resource validation).
pub fn load_str(file: &Path, text: &str, set: &mut ResourceSet) -> Result<(), LoadError> {
    for (line, doc) in documents(text) {
        let origin = Origin {
            file: file.to_owned(),
            line,
        };
        let head: Head = parse(doc, &origin, None)?;
        if head.api_version.is_none() && head.kind.is_none() && head.metadata.is_none() {
            continue; // an empty document, e.g. a leading `---`
        }
        let kind = head
            .kind
            .ok_or_else(|| invalid(&origin, None, "kind", "is required"))?;
        let name = head.metadata.and_then(|m| m.name).unwrap_or_default();
        let resource = format!("{kind}/{name}");
        match head.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                let msg = format!("unsupported apiVersion {other:?}; expected {API_VERSION:?}");
                return Err(invalid(&origin, Some(&resource), "apiVersion", &msg));
            }
            None => {
                return Err(invalid(
                    &origin,
                    Some(&resource),
                    "apiVersion",
                    "is required",
                ));
            }
        }
        set.insert(&kind, doc, origin, &resource)?;
    }
    Ok(())
}

/// Parses one document as a `Resource<S>`, mapping failures to [`LoadError::Invalid`].
pub(crate) fn parse_resource<S: DeserializeOwned>(
    doc: &str,
    origin: Origin,
    resource: &str,
) -> Result<Loaded<S>, LoadError> {
    let parsed: Resource<S> = parse(doc, &origin, Some(resource))?;
    Ok(Loaded {
        resource: parsed,
        origin,
    })
}

fn parse<T: DeserializeOwned>(
    doc: &str,
    origin: &Origin,
    resource: Option<&str>,
) -> Result<T, LoadError> {
    let mut field = None;
    let result = serde_saphyr::with_deserializer_from_str(doc, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            if path != "." {
                field = Some(path);
            }
            e.into_inner()
        })
    });
    result.map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (origin.line + l.line() as usize - 1, l.column() as usize))
            .unwrap_or((origin.line, 0));
        LoadError::Invalid {
            file: origin.file.clone(),
            line,
            column,
            resource: resource.map(str::to_owned),
            field,
            message: first_line(&e.to_string()),
        }
    })
}

/// serde-saphyr renders `error: line L column C: ` before the message and a source
/// snippet after it; we report the location ourselves, so keep only the message.
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or(msg).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    match line.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((coords, rest)) if coords.contains(" column ") => rest.to_owned(),
        _ => line.to_owned(),
    }
}

/// An error about one resource found after parsing (a semantic rule, not syntax).
pub(crate) fn invalid(
    origin: &Origin,
    resource: Option<&str>,
    field: &str,
    message: &str,
) -> LoadError {
    LoadError::Invalid {
        file: origin.file.clone(),
        line: origin.line,
        column: 0,
        resource: resource.map(str::to_owned),
        field: Some(field.to_owned()),
        message: message.to_owned(),
    }
}

/// Splits a YAML stream at `---` lines, yielding each document with its 1-based first line.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs.retain(|(_, d)| !d.trim().is_empty());
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_split_with_line_numbers() {
        let docs = documents("a: 1\n---\nb: 2\nc: 3\n---\n\n---\nd: 4\n");
        assert_eq!(
            docs,
            vec![(1, "a: 1\n"), (3, "b: 2\nc: 3\n"), (8, "d: 4\n")]
        );
    }
}
