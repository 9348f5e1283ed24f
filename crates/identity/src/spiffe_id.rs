//! SPIFFE IDs and trust domains, parsed exactly per the SPIFFE ID specification
//! (<https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md>).
//!
//! Both types are only constructible through parsing, so holding one is proof
//! that the string is a well-formed SPIFFE ID / trust domain name.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The only accepted scheme prefix (the spec requires the lowercase form).
const SCHEME: &str = "spiffe://";
/// Maximum length of a whole SPIFFE ID in bytes (spec §2.3: URIs up to 2048 bytes).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Maximum length of a trust domain name in bytes (spec §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain. Positions are byte
/// offsets into the string that was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input was the empty string.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input does not start with the lowercase `spiffe://` scheme.
    #[error("SPIFFE ID must start with the lowercase scheme \"spiffe://\"")]
    WrongScheme,
    /// A trust domain name given with a scheme (`spiffe://td` where `td` was expected).
    #[error("trust domain must be a bare name such as \"example.org\", without \"spiffe://\"")]
    SchemeInTrustDomain,
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// A trust domain character outside `[a-z0-9._-]`.
    #[error(
        "trust domain character {ch:?} at byte {position} is not allowed (only a-z, 0-9, '.', '-', '_')"
    )]
    BadTrustDomainChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the parsed string.
        position: usize,
    },
    /// A path character outside `[A-Za-z0-9._-]`.
    #[error(
        "path character {ch:?} at byte {position} is not allowed (only A-Z, a-z, 0-9, '.', '-', '_')"
    )]
    BadPathChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the parsed string.
        position: usize,
    },
    /// Two consecutive slashes in the path (`//`).
    #[error("path has an empty segment at byte {position} (\"//\")")]
    EmptySegment {
        /// Byte offset of the second slash.
        position: usize,
    },
    /// A `.` or `..` path segment.
    #[error("path has a '.' or '..' segment at byte {position}")]
    DotSegment {
        /// Byte offset of the segment's first character.
        position: usize,
    },
    /// The path ends with `/`.
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// A path given to [`SpiffeId::new`] that is neither empty nor starts with `/`.
    #[error("path must be empty or start with '/'")]
    RelativePath,
    /// The authority carries a port (`:port`).
    #[error("trust domain must not carry a port")]
    HasPort,
    /// The authority carries userinfo (`user@`).
    #[error("trust domain must not carry userinfo ('user@')")]
    HasUserinfo,
    /// A `?query` component.
    #[error("SPIFFE ID must not have a query ('?')")]
    HasQuery,
    /// A `#fragment` component.
    #[error("SPIFFE ID must not have a fragment ('#')")]
    HasFragment,
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`] bytes.
    #[error("SPIFFE ID is {len} bytes, longer than the maximum {MAX_SPIFFE_ID_LEN}")]
    TooLong {
        /// Length of the input in bytes.
        len: usize,
    },
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is {len} bytes, longer than the maximum {MAX_TRUST_DOMAIN_LEN}")]
    TrustDomainTooLong {
        /// Length of the trust domain in bytes.
        len: usize,
    },
}

/// A SPIFFE trust domain name such as `example.org` (no scheme).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// The trust domain name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID naming the trust domain itself, `spiffe://<td>`
    /// (customary as the URI SAN of a trust domain's root CA).
    pub fn spiffe_id(&self) -> SpiffeId {
        SpiffeId {
            full: format!("{SCHEME}{}", self.0),
            trust_domain: self.clone(),
        }
    }
}

/// Checks a trust domain name; `offset` is added to reported positions so that
/// errors point into the caller's whole string.
fn check_trust_domain(td: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    // Structural problems first: they name the rule better than "bad char".
    if td.contains('@') {
        return Err(SpiffeIdError::HasUserinfo);
    }
    if td.contains(':') {
        return Err(SpiffeIdError::HasPort);
    }
    if let Some(err) = query_or_fragment(td) {
        return Err(err);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong { len: td.len() });
    }
    match td.char_indices().find(|&(_, c)| !is_trust_domain_char(c)) {
        Some((i, ch)) => Err(SpiffeIdError::BadTrustDomainChar {
            ch,
            position: offset + i,
        }),
        None => Ok(()),
    }
}

/// Checks a trust domain given on its own (not inside an ID).
fn check_bare_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.contains("://") {
        return Err(SpiffeIdError::SchemeInTrustDomain);
    }
    check_trust_domain(td, 0)
}

/// Checks a path (`""` or `/seg/seg`); `offset` as in [`check_trust_domain`].
fn check_path(path: &str, offset: usize) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(SpiffeIdError::RelativePath);
    };
    if let Some(err) = query_or_fragment(path) {
        return Err(err);
    }
    // Byte offset of the current segment's first character.
    let mut start = offset + 1;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" if last => return Err(SpiffeIdError::TrailingSlash),
            "" => return Err(SpiffeIdError::EmptySegment { position: start }),
            "." | ".." => return Err(SpiffeIdError::DotSegment { position: start }),
            _ => {}
        }
        if let Some((i, ch)) = segment.char_indices().find(|&(_, c)| !is_path_char(c)) {
            return Err(SpiffeIdError::BadPathChar {
                ch,
                position: start + i,
            });
        }
        start += segment.len() + 1;
    }
    Ok(())
}

/// Whichever of `?` / `#` comes first names the URI component that is present.
fn query_or_fragment(s: &str) -> Option<SpiffeIdError> {
    s.chars().find_map(|c| match c {
        '?' => Some(SpiffeIdError::HasQuery),
        '#' => Some(SpiffeIdError::HasFragment),
        _ => None,
    })
}

fn is_trust_domain_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_')
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_bare_trust_domain(s)?;
        Ok(TrustDomain(s.to_owned()))
    }
}

impl TryFrom<&str> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        check_bare_trust_domain(&s)?;
        Ok(TrustDomain(s))
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({:?})", self.0)
    }
}

/// A SPIFFE ID such as `spiffe://example.org/ns/default/sa/billing`.
///
/// Equality, ordering and hashing are those of the ID string.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    /// The whole ID, `spiffe://<td><path>`.
    full: String,
    /// Kept alongside `full` so `trust_domain()` can hand out a reference.
    trust_domain: TrustDomain,
}

impl SpiffeId {
    /// Builds `spiffe://<td><path>`; `path` is `""` or like `/ns/default/sa/billing`.
    pub fn new(trust_domain: TrustDomain, path: &str) -> Result<SpiffeId, SpiffeIdError> {
        let len = SCHEME.len() + trust_domain.0.len() + path.len();
        if len > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len });
        }
        check_path(path, 0)?;
        Ok(SpiffeId {
            full: format!("{SCHEME}{}{path}", trust_domain.0),
            trust_domain,
        })
    }

    /// The trust domain part.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The path: `""` or `/a/b`.
    pub fn path(&self) -> &str {
        &self.full[SCHEME.len() + self.trust_domain.0.len()..]
    }

    /// The whole ID, e.g. `spiffe://td/a/b`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: s.len() });
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        check_trust_domain(td, SCHEME.len())?;
        check_path(path, SCHEME.len() + td.len())?;
        Ok(SpiffeId {
            full: s.to_owned(),
            trust_domain: TrustDomain(td.to_owned()),
        })
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.full
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", self.full)
    }
}

impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        self.full == other.full
    }
}

impl Eq for SpiffeId {}

impl PartialOrd for SpiffeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpiffeId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.full.cmp(&other.full)
    }
}

impl Hash for SpiffeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.full.hash(state);
    }
}

#[cfg(test)]
mod tests;
