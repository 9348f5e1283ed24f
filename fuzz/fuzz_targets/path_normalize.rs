//! The path normaliser never panics, and its output is a fixed point with the documented
//! shape (leading '/', no empty/dot segments, no trailing slash but the root, no query).
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::NormalizedPath;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((path, query)) = NormalizedPath::parse_request_target(raw) else {
        return;
    };
    let s = path.as_str();
    assert!(s.starts_with('/'));
    assert!(s == "/" || !s.ends_with('/'), "{s:?}");
    assert!(!s.contains("//") && !s.contains(['?', '#', '\\']), "{s:?}");
    assert!(
        path.segments()
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".."),
        "{s:?}"
    );
    if let Some(q) = query {
        assert!(raw.contains(q));
    }
    let again = NormalizedPath::parse(s);
    assert_eq!(again.as_ref(), Ok(&path), "not idempotent for {raw:?}");
});
