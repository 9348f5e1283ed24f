//! Route template parsing never panics; matching agrees with capturing. Input: the template,
//! a NUL byte, then a request path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use policy::{NormalizedPath, RouteTemplate};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (template, raw_path) = input.split_once('\0').unwrap_or((input, "/"));
    let Ok(template) = template.parse::<RouteTemplate>() else {
        return;
    };
    assert_eq!(
        template.as_str().parse::<RouteTemplate>().as_ref(),
        Ok(&template)
    );
    let Ok(path) = NormalizedPath::parse(raw_path) else {
        return;
    };
    let captures = template.captures(&path);
    assert_eq!(template.matches(&path), captures.is_some());
    if let Some(captures) = captures {
        for (_, value) in captures.iter() {
            assert!(path.as_str().contains(value));
        }
    }
});
