//! The one request-path normaliser of meshwork, shared by routing, policy and metrics.
//!
//! A request must not slip past a rule by spelling its path differently (cf. Consul
//! CVE-2024-10005, Envoy's `normalize_path`/`merge_slashes`). So every component that looks
//! at a path looks at a [`NormalizedPath`], which can only be built by [`NormalizedPath::parse`].
//! These are the semantics, written down once:
//!
//! 1. **Origin-form only.** The input must start with `/`. Absolute-form targets
//!    (`http://host/x`) and asterisk-form (`*`) are split by the caller (the proxy) first;
//!    they are rejected here with [`PathError::NotAbsolute`].
//! 2. **Query and fragment are cut off** at the first `?` or `#` and never take part in
//!    matching. [`NormalizedPath::parse_request_target`] hands the raw query back
//!    (unmodified) for callers that forward it; the fragment is discarded.
//! 3. **Percent-encoding:** `%XX` of an *unreserved* character (`A-Z a-z 0-9 - . _ ~`) is
//!    decoded (`/%63harges` → `/charges`, `/%2e%2e/` → `/../`); every other escape is kept
//!    with its hex digits upper-cased (`%3f` → `%3F`). Decoding happens once, before step 5,
//!    so encoded dots are resolved like literal ones and `%25` never decodes twice.
//! 4. **Rejected, not guessed** (each with its own [`PathError`] variant and byte offset):
//!    encoded `/` (`%2F`) and `\` (`%5C`) — upstreams disagree whether they separate
//!    segments; a raw `\` (some servers treat it as `/`); raw or encoded control characters
//!    including NUL; malformed escapes (`%`, `%4`, `%zz`); and a `.` or `..` segment carrying
//!    `;` parameters (`/..;/admin`, which Tomcat-style servers resolve as `..`).
//! 5. **Segments:** empty segments are dropped (`//a///b` → `/a/b`); `.` segments are
//!    removed and `..` removes the previous segment (RFC 3986 §5.2.4 `remove_dot_segments`);
//!    `..` above the root stays at the root (`/../a` → `/a`).
//! 6. **Trailing slash is dropped:** `/charges/` ≡ `/charges`. The root stays `/`.
//! 7. **Other characters** that RFC 3986 does not allow raw in a path (space, `"`, `<`, `>`,
//!    `[`, `]`, `^`, `` ` ``, `{`, `|`, `}` and non-ASCII bytes) are percent-encoded
//!    (upper-case hex), so `/a b` ≡ `/a%20b`.
//!
//! The result is idempotent: parsing `normalized.as_str()` again yields the same path.
//! Matching on a normalised path is case-sensitive (paths are case-sensitive in HTTP).

use std::fmt;

use thiserror::Error;

/// Why a raw request path was refused. Offsets are byte offsets into the raw input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    /// The input was empty.
    #[error("empty path: a request path must start with '/'")]
    Empty,
    /// The input did not start with `/` (absolute-form or asterisk-form targets are split by the caller).
    #[error(
        "path must start with '/' (absolute-form and '*' request targets are handled by the caller)"
    )]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("invalid percent-encoding at byte {offset}: '%' must be followed by two hex digits")]
    InvalidPercentEncoding {
        /// Offset of the `%`.
        offset: usize,
    },
    /// `%2F`: an encoded slash, which upstreams interpret inconsistently.
    #[error(
        "encoded '/' (%2F) at byte {offset} is refused: upstreams disagree on whether it separates segments"
    )]
    EncodedSlash {
        /// Offset of the `%`.
        offset: usize,
    },
    /// `%5C`: an encoded backslash.
    #[error("encoded '\\' (%5C) at byte {offset} is refused: some upstreams treat it as '/'")]
    EncodedBackslash {
        /// Offset of the `%`.
        offset: usize,
    },
    /// A raw `\`.
    #[error("'\\' at byte {offset} is refused: some upstreams treat it as '/'")]
    Backslash {
        /// Offset of the backslash.
        offset: usize,
    },
    /// A raw or percent-encoded control character (0x00–0x1F, 0x7F).
    #[error("control character 0x{byte:02X} at byte {offset} is refused")]
    ControlCharacter {
        /// Offset of the character (or of the `%` when encoded).
        offset: usize,
        /// The (decoded) byte.
        byte: u8,
    },
    /// A `.` or `..` segment with `;` parameters, e.g. `/..;/admin`.
    #[error(
        "dot segment with ';' parameters at byte {offset} is refused: some upstreams resolve it as '..'"
    )]
    DotSegmentWithParameters {
        /// Offset of the segment.
        offset: usize,
    },
}

/// A request path in meshwork's one normal form (see the [module docs](self) for the rules).
///
/// Always starts with `/`, has no empty, `.` or `..` segments, no trailing slash (except the
/// root `/`), no query or fragment, and only canonical percent-escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NormalizedPath(String);

impl NormalizedPath {
    /// Normalises a raw origin-form request target; the query and fragment are ignored.
    pub fn parse(raw: &str) -> Result<NormalizedPath, PathError> {
        Self::parse_request_target(raw).map(|(path, _query)| path)
    }

    /// Normalises a raw origin-form request target and returns the raw query (without the
    /// `?`, not normalised) alongside, for callers that forward it. The fragment is dropped.
    pub fn parse_request_target(raw: &str) -> Result<(NormalizedPath, Option<&str>), PathError> {
        let (path, query) = split_query(raw);
        if path.is_empty() {
            return Err(if raw.is_empty() {
                PathError::Empty
            } else {
                PathError::NotAbsolute
            });
        }
        if !path.starts_with('/') {
            return Err(PathError::NotAbsolute);
        }
        let mut out = String::with_capacity(path.len());
        let mut offset = 1; // past the leading '/'
        for raw_segment in path[1..].split('/') {
            push_segment(raw_segment, offset, &mut out)?;
            offset += raw_segment.len() + 1;
        }
        if out.is_empty() {
            out.push('/');
        }
        Ok((NormalizedPath(out), query))
    }

    /// The root path `/`.
    pub fn root() -> NormalizedPath {
        NormalizedPath("/".to_owned())
    }

    /// The normalised path, e.g. `/customers/42/charges`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the root `/`.
    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }

    /// The segments without separators; empty for the root.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        let rest = if self.is_root() {
            None
        } else {
            Some(&self.0[1..])
        };
        rest.into_iter().flat_map(|r| r.split('/'))
    }

    /// Segment-wise prefix test: `/charges` is a prefix of `/charges` and `/charges/1`, not
    /// of `/chargesX`. The root is a prefix of every path.
    pub fn starts_with(&self, prefix: &NormalizedPath) -> bool {
        prefix.is_root()
            || (self.0.starts_with(&prefix.0)
                && matches!(self.0.as_bytes().get(prefix.0.len()), None | Some(b'/')))
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NormalizedPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NormalizedPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for NormalizedPath {
    type Error = PathError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

/// Splits `raw` at the first `?` or `#`; returns the path and the query (if any).
fn split_query(raw: &str) -> (&str, Option<&str>) {
    match raw.find(['?', '#']) {
        None => (raw, None),
        Some(i) => {
            let query = if raw.as_bytes()[i] == b'?' {
                let rest = &raw[i + 1..];
                Some(rest.find('#').map_or(rest, |j| &rest[..j]))
            } else {
                None
            };
            (&raw[..i], query)
        }
    }
}

/// Appends `/segment` in normal form to `out`, applying the dot-segment and empty-segment rules.
fn push_segment(raw: &str, offset: usize, out: &mut String) -> Result<(), PathError> {
    let start = out.len();
    out.push('/');
    push_normalized_segment(raw, offset, out)?;
    let segment = &out[start + 1..];
    match segment {
        "" | "." => out.truncate(start),
        ".." => {
            out.truncate(start);
            let parent = out.rfind('/').unwrap_or(0);
            out.truncate(parent);
        }
        s if s.starts_with(".;") || s.starts_with("..;") => {
            return Err(PathError::DotSegmentWithParameters { offset });
        }
        _ => {}
    }
    Ok(())
}

/// Appends the normal form of one raw segment (which contains no `/`) to `out`: decodes
/// unreserved escapes, upper-cases the others, encodes characters not allowed raw, and
/// rejects what the module docs say is rejected. `offset` locates `raw` in the original input.
/// Shared with [`crate::route`] so that template literals use exactly the same rules.
pub(crate) fn push_normalized_segment(
    raw: &str,
    offset: usize,
    out: &mut String,
) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let at = offset + i;
        let b = bytes[i];
        if b == b'%' {
            let decoded = bytes
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex_value(h[0])? << 4 | hex_value(h[1])?))
                .ok_or(PathError::InvalidPercentEncoding { offset: at })?;
            match decoded {
                b'/' => return Err(PathError::EncodedSlash { offset: at }),
                b'\\' => return Err(PathError::EncodedBackslash { offset: at }),
                c if is_control(c) => {
                    return Err(PathError::ControlCharacter {
                        offset: at,
                        byte: c,
                    });
                }
                c if is_unreserved(c) => out.push(char::from(c)),
                c => push_escape(c, out),
            }
            i += 3;
            continue;
        }
        match b {
            b'\\' => return Err(PathError::Backslash { offset: at }),
            c if is_control(c) => {
                return Err(PathError::ControlCharacter {
                    offset: at,
                    byte: c,
                });
            }
            c if is_path_char(c) => out.push(char::from(c)),
            c => push_escape(c, out),
        }
        i += 1;
    }
    Ok(())
}

fn push_escape(byte: u8, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xF)]));
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7F
}

/// RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~".
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 pchar minus pct-encoded: unreserved / sub-delims / ":" / "@".
fn is_path_char(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(s: &str) -> String {
        match NormalizedPath::parse(s) {
            Ok(p) => p.0,
            Err(e) => panic!("{s:?} was refused: {e}"),
        }
    }

    #[test]
    fn spelling_variants_of_charges_are_one_path() {
        for raw in [
            "/charges",
            "/charges/",
            "//charges",
            "/%63harges",
            "/x/../charges",
            "/./charges",
            "/%2e/charges",
            "/%2E%2E/charges",
            "/charges?x=1",
            "/charges#frag",
            "/a/b/../../charges//",
        ] {
            assert_eq!(norm(raw), "/charges", "{raw}");
        }
    }

    #[test]
    fn root_forms() {
        for raw in ["/", "//", "/.", "/..", "/../..", "/?q", "/a/.."] {
            assert_eq!(norm(raw), "/", "{raw}");
        }
        assert!(NormalizedPath::parse("/").is_ok_and(|p| p.is_root()));
    }

    #[test]
    fn escapes_are_canonicalised() {
        assert_eq!(norm("/a%3fb"), "/a%3Fb");
        assert_eq!(norm("/%7e%41"), "/~A");
        assert_eq!(norm("/100%25"), "/100%25");
        assert_eq!(norm("/%2525"), "/%2525");
        assert_eq!(norm("/a b"), "/a%20b");
        assert_eq!(norm("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(norm("/a;b=c:d@e"), "/a;b=c:d@e");
        assert_eq!(norm("/{id}"), "/%7Bid%7D");
    }

    #[test]
    fn refusals_name_the_problem_and_offset() {
        let cases = [
            ("", PathError::Empty),
            ("charges", PathError::NotAbsolute),
            ("http://x/y", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("?q", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSlash { offset: 2 }),
            ("/a%2fb", PathError::EncodedSlash { offset: 2 }),
            ("/a%5cb", PathError::EncodedBackslash { offset: 2 }),
            ("/a\\b", PathError::Backslash { offset: 2 }),
            ("/a%00", PathError::ControlCharacter { offset: 2, byte: 0 }),
            (
                "/a\nb",
                PathError::ControlCharacter {
                    offset: 2,
                    byte: b'\n',
                },
            ),
            (
                "/a%7F",
                PathError::ControlCharacter {
                    offset: 2,
                    byte: 0x7F,
                },
            ),
            ("/x/%", PathError::InvalidPercentEncoding { offset: 3 }),
            ("/x/%4", PathError::InvalidPercentEncoding { offset: 3 }),
            ("/x/%zz", PathError::InvalidPercentEncoding { offset: 3 }),
            (
                "/ok/..;/admin",
                PathError::DotSegmentWithParameters { offset: 4 },
            ),
            (
                "/.;x/admin",
                PathError::DotSegmentWithParameters { offset: 1 },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(NormalizedPath::parse(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn query_is_returned_raw_and_fragment_dropped() {
        let (p, q) = NormalizedPath::parse_request_target("/a/./b?x=%2F#f")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.as_str(), q), ("/a/b", Some("x=%2F")));
        let (_, q) =
            NormalizedPath::parse_request_target("/a#f?x").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q, None);
        // A refused character after '?' does not matter: the query is not a path.
        assert!(NormalizedPath::parse("/a?%2F").is_ok());
    }

    #[test]
    fn segments_and_prefixes() {
        let p = NormalizedPath::parse("/customers/42/charges").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.segments().collect::<Vec<_>>(),
            ["customers", "42", "charges"]
        );
        assert_eq!(NormalizedPath::root().segments().count(), 0);
        let prefix = |s: &str| NormalizedPath::parse(s).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.starts_with(&prefix("/customers")));
        assert!(p.starts_with(&prefix("/customers/42/charges")));
        assert!(p.starts_with(&prefix("/")));
        assert!(!p.starts_with(&prefix("/cust")));
        assert!(!prefix("/customersX").starts_with(&prefix("/customers")));
    }

    /// Paths built from pieces that exercise every rule.
    fn raw_paths() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/"),
            Just("//"),
            Just("."),
            Just(".."),
            Just("%2e"),
            Just("%2E%2e"),
            Just("%63"),
            Just("%7e"),
            Just("%3f"),
            Just("%3F"),
            Just("%25"),
            Just("%2F"),
            Just("%"),
            Just("%zz"),
            Just("a"),
            Just("B"),
            Just("~"),
            Just(";"),
            Just(" "),
            Just("\u{e9}"),
            Just("?"),
            Just("#"),
            Just("{"),
            Just("\\"),
            Just("%00"),
            Just("@:"),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(raw in raw_paths()) {
            if let Ok(once) = NormalizedPath::parse(&raw) {
                let twice = NormalizedPath::parse(once.as_str());
                prop_assert_eq!(twice.as_ref(), Ok(&once));
            }
        }

        #[test]
        fn normal_form_invariants(raw in raw_paths()) {
            if let Ok(p) = NormalizedPath::parse(&raw) {
                let s = p.as_str();
                prop_assert!(s.starts_with('/'));
                prop_assert!(s == "/" || !s.ends_with('/'));
                prop_assert!(!s.contains("//"));
                prop_assert!(p.segments().all(|seg| seg != "." && seg != ".." && !seg.is_empty()));
                prop_assert!(!s.contains(['?', '#', '\\']));
            }
        }

        #[test]
        fn dot_and_slash_noise_does_not_change_the_path(raw in raw_paths()) {
            if let Ok(p) = NormalizedPath::parse(&raw) {
                let noisy = format!("/./x/..//{}/", p.as_str());
                prop_assert_eq!(NormalizedPath::parse(&noisy), Ok(p));
            }
        }

        #[test]
        fn arbitrary_input_never_panics(raw in any::<String>()) {
            let _ = NormalizedPath::parse(&raw);
        }
    }
}
