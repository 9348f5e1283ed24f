//! Reading resources from YAML files, with errors that name file, line, resource and field.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::locate::{field_position, occurrences, resolve_unnamed};
use crate::resource::{API_VERSION, Resource};
use crate::route::GATEWAY_API_VERSION;
use crate::set::ResourceSet;

/// Where a resource was read from.
#[derive(Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub file: PathBuf,
    /// 1-based line of the document's first line.
    pub line: usize,
    /// The document's text, so that problems found after parsing (a cross-reference, say)
    /// can point at their field's own line.
    doc: Arc<str>,
    /// For a cluster object ([`crate::object`]): `Kind namespace/name`, which errors name
    /// instead of `file:line` (`file` is empty and `line` 0).
    object: Option<Arc<str>>,
}

impl Origin {
    /// The origin of a cluster object: `object` (`Kind namespace/name`) and the JSON text
    /// it was read from.
    pub(crate) fn object(object: &str, doc: &str) -> Origin {
        Origin {
            file: PathBuf::new(),
            line: 0,
            doc: Arc::from(doc),
            object: Some(Arc::from(object)),
        }
    }

    /// `Kind namespace/name` when the resource was read from a cluster object.
    pub fn cluster_object(&self) -> Option<&str> {
        self.object.as_deref()
    }

    /// An error about `field` of the resource read from here: at the field's line of a file,
    /// or naming the cluster object.
    pub(crate) fn error(&self, resource: Option<&str>, field: &str, message: String) -> LoadError {
        if let Some(object) = &self.object {
            return LoadError::InvalidObject {
                object: object.to_string(),
                field: Some(field.to_owned()),
                message,
            };
        }
        let (line, column) = self.field(field);
        LoadError::Invalid {
            file: self.file.clone(),
            line,
            column,
            resource: resource.map(str::to_owned),
            field: Some(field.to_owned()),
            message,
        }
    }

    /// Where field `path` (e.g. `spec.bindTo`) of this document is: `(line, column)`, both
    /// 1-based, in the file; the document's first line (column 0) when the field is absent.
    pub fn field(&self, path: &str) -> (usize, usize) {
        field_position(&self.doc, path)
            .map(|(line, column)| (self.line + line - 1, column))
            .unwrap_or((self.line, 0))
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Origin({self})")
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => write!(f, "{object}"),
            None => write!(f, "{}:{}", self.file.display(), self.line),
        }
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
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        /// What we tried to read.
        path: PathBuf,
        /// Why it failed. Part of the message and deliberately not a `source()`: printers
        /// that walk the chain (`{:#}`) would say it twice.
        error: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("{file}:{line}:{column}: not UTF-8: byte 0x{byte:02x} cannot start or continue a character; resource files must be UTF-8",
        file = .file.display())]
    Encoding {
        /// The file.
        file: PathBuf,
        /// 1-based line of the first invalid byte.
        line: usize,
        /// 1-based column (in characters) of the first invalid byte.
        column: usize,
        /// The byte.
        byte: u8,
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
    /// A cluster object ([`crate::object::load_object`]) is malformed or does not fit its
    /// kind's schema or rules.
    #[error("{object}{field}: {message}",
        field = .field.as_deref().map(|f| format!(" field `{f}`")).unwrap_or_default())]
    InvalidObject {
        /// `Kind namespace/name`.
        object: String,
        /// Dotted field path, e.g. `spec.rules[0].from`.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A directory holds no resources at all.
    #[error("{}: no *.yaml or *.yml resource files found", .0.display())]
    Empty(PathBuf),
    /// No resource is a `Mesh` (the directory, when known, is named).
    #[error(
        "{}no `kind: Mesh` resource; one is needed to set spec.trustDomain (see examples/store-billing/mesh.yaml)",
        .0.as_ref().map(|dir| format!("{}: ", dir.display())).unwrap_or_default()
    )]
    NoMesh(Option<PathBuf>),
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

/// The kind-independent head of a document, read before its spec. Each field is `None` when
/// the key is absent and `Some(None)` when it is there but null (`kind: ~`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default, deserialize_with = "present")]
    api_version: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<Option<HeadMeta>>,
    #[serde(default, deserialize_with = "present")]
    spec: Option<Option<serde::de::IgnoredAny>>,
}

/// A key that is there, with a value or null.
fn present<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

#[derive(Deserialize)]
struct HeadMeta {
    name: Option<String>,
}

impl Head {
    /// Whether the document is a resource at all: one with none of `apiVersion`, `kind`,
    /// `metadata` and `spec` is another tool's YAML (a `policy test` table, say) and skipped.
    fn is_resource(&self) -> bool {
        self.api_version.is_some()
            || self.kind.is_some()
            || self.metadata.is_some()
            || self.spec.is_some()
    }

    /// The document's kind and `Kind/name`, once apiVersion, kind and metadata are known
    /// to be there (`kind: ~` is as missing as no `kind` at all).
    fn identify(self, origin: &Origin) -> Result<(String, String), LoadError> {
        let kind = self.kind.flatten().ok_or_else(|| {
            let msg = "is required (a string such as Workload); the document has none";
            invalid(origin, None, "kind", msg)
        })?;
        let Some(meta) = self.metadata.flatten() else {
            let resource = format!("{kind}/?");
            let msg = "is required: a mapping with at least a name";
            return Err(invalid(origin, Some(&resource), "metadata", msg));
        };
        let resource = format!("{kind}/{}", meta.name.as_deref().unwrap_or("?"));
        let expected = crate::set::api_version(&kind);
        let known_kind = crate::set::KINDS.contains(&kind.as_str());
        match self.api_version.flatten().as_deref() {
            Some(v) if v == expected => Ok((kind, resource)),
            // An unknown kind under a version meshwork reads: the kind is what is wrong.
            Some(v) if !known_kind && [API_VERSION, GATEWAY_API_VERSION].contains(&v) => {
                Ok((kind, resource))
            }
            Some(other) => {
                let msg = format!(
                    "unsupported apiVersion {other:?} for kind {kind}; expected {expected:?}"
                );
                Err(invalid(origin, Some(&resource), "apiVersion", &msg))
            }
            None => {
                let msg = format!("is required: {expected}");
                Err(invalid(origin, Some(&resource), "apiVersion", &msg))
            }
        }
    }
}

/// The `*.yaml`/`*.yml` files of `dir`, sorted (not recursive).
pub(crate) fn resource_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let io = |error| LoadError::Io {
        path: dir.to_owned(),
        error,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    match files.is_empty() {
        true => Err(LoadError::Empty(dir.to_owned())),
        false => Ok(files),
    }
}

/// Reads one file's resources into `set` (without cross-resource validation).
pub(crate) fn load_file(file: &Path, set: &mut ResourceSet) -> Result<(), LoadError> {
    let bytes = std::fs::read(file).map_err(|error| LoadError::Io {
        path: file.to_owned(),
        error,
    })?;
    load_bytes(file, &bytes, set)
}

/// Reads every `*.yaml`/`*.yml` file in `dir` (sorted, not recursive) into a validated set.
pub fn load_dir(dir: &Path) -> Result<ResourceSet, LoadError> {
    let mut set = ResourceSet::default();
    for file in resource_files(dir)? {
        load_file(&file, &mut set)?;
    }
    match set.validate() {
        Err(LoadError::NoMesh(None)) => Err(LoadError::NoMesh(Some(dir.to_owned()))),
        other => other.map(|()| set),
    }
}

/// Adds the resources in one file's bytes to `set` (without cross-resource validation):
/// [`load_str`] once the bytes are known to be UTF-8.
pub fn load_bytes(file: &Path, bytes: &[u8], set: &mut ResourceSet) -> Result<(), LoadError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load_str(file, text, set),
        Err(e) => {
            let valid = bytes.get(..e.valid_up_to()).unwrap_or_default();
            // invariant: `valid_up_to` is the length of the valid UTF-8 prefix.
            let valid = std::str::from_utf8(valid).unwrap_or_default();
            let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
            Err(LoadError::Encoding {
                file: file.to_owned(),
                line: valid.matches('\n').count() + 1,
                column: valid[line_start..].chars().count() + 1,
                byte: bytes.get(e.valid_up_to()).copied().unwrap_or_default(),
            })
        }
    }
}

/// Adds the resources in one file's text to `set` (without cross-resource validation).
/// A document with none of `apiVersion`, `kind`, `metadata` and `spec` (nothing but comments,
/// or another tool's YAML) is skipped; any other must give all of the first three, non-null.
pub fn load_str(file: &Path, text: &str, set: &mut ResourceSet) -> Result<(), LoadError> {
    for (line, doc) in documents(text) {
        let origin = Origin {
            file: file.to_owned(),
            line,
            doc: Arc::from(doc),
            object: None,
        };
        load_document(doc, origin, set)?;
    }
    Ok(())
}

/// Adds the resource in one document to `set`; skips a document that is not a resource
/// (only comments, or e.g. a `policy test` table).
pub(crate) fn load_document(
    doc: &str,
    origin: Origin,
    set: &mut ResourceSet,
) -> Result<(), LoadError> {
    // Duplicate keys are left to the full parse below, which can name the resource.
    let lenient = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    };
    let head = parse_with::<Option<Head>>(doc, &origin, None, lenient)?;
    let Some(head) = head.filter(Head::is_resource) else {
        return Ok(());
    };
    let (kind, resource) = head.identify(&origin)?;
    set.insert(&kind, doc, origin, &resource)
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
    parse_with(doc, origin, resource, serde_saphyr::Options::default())
}

fn parse_with<T: DeserializeOwned>(
    doc: &str,
    origin: &Origin,
    resource: Option<&str>,
    options: serde_saphyr::Options,
) -> Result<T, LoadError> {
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(doc, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string());
            e.into_inner()
        })
    });
    result.map_err(|e| syntax_error(&e, doc, origin, resource, path))
}

/// A parser or schema error as a located [`LoadError::Invalid`]. The field is serde's path,
/// unless that has a `?` (serde cannot name map keys: a bad or duplicate label, say), in which
/// case it is the path of the node the parser stopped at.
fn syntax_error(
    e: &serde_saphyr::Error,
    doc: &str,
    origin: &Origin,
    resource: Option<&str>,
    path: Option<String>,
) -> LoadError {
    let at = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize))
        .filter(|(line, _)| *line > 0);
    let path = path.filter(|p| p != ".");
    let field = match (path, at) {
        (Some(p), Some(at)) if p.contains('?') => resolve_unnamed(doc, &p, at).or(Some(p)),
        (p, _) => p,
    };
    let message = match (e.without_snippet(), &field) {
        (serde_saphyr::Error::DuplicateMappingKey { .. }, Some(field)) => {
            let key = field.rsplit('.').next().unwrap_or(field);
            match occurrences(doc, field).first() {
                Some((line, _)) => format!(
                    "duplicate key {key:?}; it is first given at line {}",
                    origin.line + line - 1
                ),
                None => format!("duplicate key {key:?}"),
            }
        }
        (serde_saphyr::Error::DuplicateMappingKey { .. }, None) => "duplicate key".to_owned(),
        _ => first_line(&e.to_string()),
    };
    if let Some(object) = &origin.object {
        return LoadError::InvalidObject {
            object: object.to_string(),
            field,
            message,
        };
    }
    let (line, column) = at.map_or((origin.line, 0), |(l, c)| (origin.line + l - 1, c));
    LoadError::Invalid {
        file: origin.file.clone(),
        line,
        column,
        resource: resource.map(str::to_owned),
        field,
        message,
    }
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

/// An error about one resource found after parsing (a semantic rule, not syntax), at the
/// line of `field` in the resource's document.
pub(crate) fn invalid(
    origin: &Origin,
    resource: Option<&str>,
    field: &str,
    message: &str,
) -> LoadError {
    origin.error(resource, field, message.to_owned())
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
mod tests;
